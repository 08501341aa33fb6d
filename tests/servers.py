"""The app under uvicorn in a thread of this process: real sockets, its own event loop and pools, logs in this process."""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn


class ThreadedServer:
    def __init__(self, app: Any, port: int, *, access_log: bool = True, start_timeout: float = 30) -> None:
        self.port = port
        self.start_timeout = start_timeout
        self.config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on",
                                     access_log=access_log, timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ThreadedServer":
        self.thread.start()
        end = time.monotonic() + self.start_timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > end:
                raise RuntimeError("the app did not start under uvicorn")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
