"""A kiosk's software releases side by side, the atomic ``current`` switch, and the boot guard
that rolls a failing release back.

Layout under the install prefix (``/opt/biblioedge`` on a kiosk)::

    releases/<version>/        one venv per release, built in place, ``.complete`` when whole
    current -> releases/<v>    what systemd starts (``ExecStart=<prefix>/current/bin/...``)
    state.json                 committed, previous, pending, start attempts, last outcome
    bootguard.py               this file, copied here by ``biblioedge install``

This module is standard library only and imports nothing from biblioedge, because the units
run it as ``ExecStartPre`` *before* a release's own code: a release that dies at import still
passes through here, and after ``max_attempts`` starts without being committed it is rolled
back to the committed one. The agent itself commits after its self-test and soak time
(``agent.selftest``), or rolls back at once with the reason when the self-test fails.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

STATE = "state.json"
COMPLETE = ".complete"
MAX_ATTEMPTS = 3
#: a release version is a directory name: PEP 440-ish, no path tricks
_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$")


class LayoutError(RuntimeError):
    """The prefix cannot do what was asked (unknown release, incomplete release, bad version)."""


def valid_version(version: str) -> bool:
    return bool(_VERSION.match(version)) and ".." not in version


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Layout:
    """One install prefix. Every change of state holds an exclusive lock and is written with
    a rename, so a power cut leaves either the old or the new state, never half of one."""

    def __init__(self, prefix: Path, max_attempts: int = MAX_ATTEMPTS) -> None:
        self.prefix = prefix
        self.releases = prefix / "releases"
        self.current = prefix / "current"
        self.state_file = prefix / STATE
        self.max_attempts = max_attempts

    # -- state -------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            doc = {}
        except (OSError, ValueError):
            # a state file nobody can read must not keep the kiosk down: start from what
            # ``current`` points at, which is what systemd runs anyway
            doc = {"committed": self.current_version()}
        if not isinstance(doc, dict):
            doc = {}
        doc.setdefault("committed", None)
        doc.setdefault("previous", None)
        doc.setdefault("pending", None)
        doc.setdefault("attempts", 0)
        doc.setdefault("switched_at", None)
        doc.setdefault("outcome", None)
        doc.setdefault("refused", [])
        return doc

    def _save(self, doc: dict[str, Any]) -> None:
        self.prefix.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_name(f".{STATE}.{os.getpid()}")
        with tmp.open("w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_file)
        _fsync_dir(self.prefix)

    @contextlib.contextmanager
    def locked(self) -> Iterator[dict[str, Any]]:
        """The state under an exclusive lock; saved when the block ends without an error."""
        self.prefix.mkdir(parents=True, exist_ok=True)
        with (self.prefix / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            doc = self.state()
            yield doc
            self._save(doc)

    # -- releases ----------------------------------------------------------------------------

    def release_dir(self, version: str) -> Path:
        if not valid_version(version):
            raise LayoutError(f"not a release version: {version!r}")
        return self.releases / version

    def complete(self, version: str) -> bool:
        return (self.release_dir(version) / COMPLETE).exists()

    def installed(self) -> list[str]:
        if not self.releases.is_dir():
            return []
        return sorted(
            p.name
            for p in self.releases.iterdir()
            if valid_version(p.name) and self.complete(p.name)
        )

    def current_version(self) -> str | None:
        try:
            target = os.readlink(self.current)
        except OSError:
            return None
        name = Path(target).name
        return name if valid_version(name) else None

    def mark_complete(self, version: str, info: dict[str, Any]) -> None:
        """The last step of building a release: from here on it may be switched to."""
        path = self.release_dir(version) / COMPLETE
        tmp = path.with_name(".complete.tmp")
        tmp.write_text(json.dumps(info, sort_keys=True))
        os.replace(tmp, path)
        _fsync_dir(path.parent)

    def _point(self, version: str) -> None:
        """Atomic: a new symlink renamed over ``current``."""
        tmp = self.prefix / f".current.{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(Path("releases") / version, tmp)
        os.replace(tmp, self.current)
        _fsync_dir(self.prefix)

    # -- transitions -------------------------------------------------------------------------

    def adopt(self, version: str) -> None:
        """First install: the release is committed as it is, there is nothing to go back to."""
        if not self.complete(version):
            raise LayoutError(f"release {version} is not completely installed")
        with self.locked() as doc:
            self._point(version)
            doc.update(committed=version, pending=None, attempts=0, switched_at=None)

    def switch(self, version: str) -> None:
        """Point ``current`` at a new release, on trial until it is committed."""
        if not self.complete(version):
            raise LayoutError(f"release {version} is not completely installed")
        with self.locked() as doc:
            if doc["pending"] is not None and doc["pending"] != version:
                raise LayoutError(f"release {doc['pending']} is still on trial")
            if doc["committed"] == version:
                raise LayoutError(f"release {version} is already the committed one")
            self._point(version)
            doc.update(pending=version, attempts=0, switched_at=time.time())

    def before_start(self) -> str:
        """``ExecStartPre``: count one more start of a release on trial and roll it back
        when it has had its chances. Returns what it did, for the journal."""
        with self.locked() as doc:
            pending = doc["pending"]
            if pending is None:
                return f"starting committed release {doc['committed']}"
            if self.current_version() != pending:
                # someone pointed current elsewhere by hand: believe the link
                doc.update(pending=None, attempts=0)
                return f"release {pending} is no longer current; trial ended"
            doc["attempts"] = int(doc["attempts"]) + 1
            if doc["attempts"] <= self.max_attempts:
                return f"starting release {pending} on trial, attempt {doc['attempts']}"
            reason = f"not committed after {self.max_attempts} starts (crashed or never ready)"
            self._roll_back(doc, reason)
            return f"rolled back release {pending}: {reason}"

    def roll_back(self, reason: str) -> str | None:
        """Back to the committed release; returns the version left, or None when nothing was
        on trial."""
        with self.locked() as doc:
            pending = doc["pending"]
            if pending is None:
                return None
            self._roll_back(doc, reason)
            return str(pending)

    def _roll_back(self, doc: dict[str, Any], reason: str) -> None:
        pending = doc["pending"]
        committed = doc["committed"]
        if committed is not None and self.complete(committed):
            self._point(committed)
        refused = [v for v in doc.get("refused", []) if v != pending][-31:]
        doc.update(
            refused=[*refused, pending],
            pending=None,
            attempts=0,
            switched_at=None,
            outcome={
                "version": pending,
                "result": "rolled_back",
                "reason": reason,
                "at": time.time(),
                "reported": False,
            },
        )

    def commit(self, version: str) -> bool:
        """The release on trial passed its self-test and soak: keep it, and keep the one
        before it to go back to by hand; older releases are removed."""
        with self.locked() as doc:
            if doc["pending"] != version:
                return False
            doc.update(
                previous=doc["committed"],
                committed=version,
                pending=None,
                attempts=0,
                switched_at=None,
                outcome={
                    "version": version,
                    "result": "committed",
                    "reason": "",
                    "at": time.time(),
                    "reported": False,
                },
            )
            keep = {doc["committed"], doc["previous"]}
        self.prune(keep)
        return True

    def prune(self, keep: set[str | None]) -> list[str]:
        removed: list[str] = []
        if not self.releases.is_dir():
            return removed
        for path in self.releases.iterdir():
            if path.name in keep or path.name.startswith("."):
                continue
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
        return removed

    def take_outcome(self) -> dict[str, Any] | None:
        """The last commit or rollback not yet reported to central, marked as reported."""
        with self.locked() as doc:
            outcome = doc.get("outcome")
            if not isinstance(outcome, dict) or outcome.get("reported", True):
                return None
            outcome["reported"] = True
            return {k: v for k, v in outcome.items() if k != "reported"}


def main(argv: list[str] | None = None) -> int:
    """``python3 bootguard.py PREFIX [--max-attempts N]``: what ``ExecStartPre`` runs."""
    args = list(sys.argv[1:] if argv is None else argv)
    max_attempts = MAX_ATTEMPTS
    if "--max-attempts" in args:
        i = args.index("--max-attempts")
        max_attempts = int(args[i + 1])
        del args[i : i + 2]
    if len(args) != 1:
        sys.stderr.write("usage: bootguard.py PREFIX [--max-attempts N]\n")
        return 2
    layout = Layout(Path(args[0]), max_attempts)
    sys.stdout.write(layout.before_start() + "\n")
    if layout.current_version() is None:
        sys.stderr.write(f"no release is current under {layout.prefix}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
