"""sd_notify without a dependency: READY=1, STATUS=..., STOPPING=1 over $NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket


class Notifier:
    """Does nothing when NOTIFY_SOCKET is unset (not started by systemd)."""

    def __init__(self, address: str | None = None) -> None:
        self.address = address if address is not None else os.environ.get("NOTIFY_SOCKET")

    def send(self, *lines: str) -> bool:
        if not self.address:
            return False
        addr = self.address
        if addr.startswith("@"):  # an abstract socket
            addr = "\0" + addr[1:]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(addr)
                sock.sendall("\n".join(lines).encode("utf-8"))
        except OSError:  # systemd went away or the socket is not ours: nothing to tell
            return False
        return True

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")
