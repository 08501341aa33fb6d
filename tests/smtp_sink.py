"""A real SMTP server (aiosmtpd) on a free local port that keeps what it receives."""

from __future__ import annotations

import asyncio
import socket
from email import message_from_bytes, policy
from email.message import EmailMessage

from aiosmtpd.controller import Controller


class SmtpSink:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.refuse_with: tuple[int, str] | None = None  # e.g. (451, "try later")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        if self.refuse_with:
            code, text = self.refuse_with
            return f"{code} {text}"
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[EmailMessage]:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while len(self.messages) < count and loop.time() < end:
            await asyncio.sleep(0.05)
        return self.messages
