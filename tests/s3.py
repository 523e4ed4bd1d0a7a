"""An S3-compatible store for the backup-copy tests: moto's standalone server (``moto[server]``
from PyPI, an implementation of the S3 API outside this project), run as its own process on
a free loopback port. Any access key is accepted by it; the tests still pass one from a
credentials file, as central reads it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from biblioedge.procs import free_port, wait_port


class S3Server:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        exe = shutil.which("moto_server", path=str(Path(sys.executable).parent))
        cmd = [exe] if exe else [sys.executable, "-m", "moto.server"]
        self.proc = subprocess.Popen(
            [*cmd, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port("127.0.0.1", self.port, 60)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


def credentials_file(path: Path) -> Path:
    path.write_text("[default]\naws_access_key_id = bibliotest\naws_secret_access_key = s3cr3t\n")
    path.chmod(0o600)
    return path
