"""The dummy library system (``biblioedge sip serve``) as a real process on a free loopback
port, for the tests that need a library system to talk SIP2 to."""

from __future__ import annotations

import subprocess
import sys

from biblioedge.demo.launch import free_port, wait_port

CLI = [sys.executable, "-m", "biblioedge"]


class Dummy:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"sip2://kiosk:kiosk@127.0.0.1:{self.port}?institution=TVTN&timeout=2"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [*CLI, "sip", "serve", "--port", str(self.port)], stdout=subprocess.DEVNULL
        )
        wait_port("127.0.0.1", self.port, 20)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None
