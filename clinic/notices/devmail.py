"""The in-process SMTP sink `clinic dev` uses; /dev/mail lists what it received."""

from __future__ import annotations

import socket
from collections import deque
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage

from aiosmtpd.controller import Controller

# newest first; a dev sink keeps the last few hundred messages in memory
RECEIVED: deque[EmailMessage] = deque(maxlen=500)


class _Handler:
    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
        RECEIVED.appendleft(message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"


@dataclass
class DevSink:
    controller: Controller
    port: int

    def stop(self) -> None:
        self.controller.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_dev_sink() -> DevSink:
    port = free_port()
    controller = Controller(_Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    return DevSink(controller=controller, port=port)
