"""A burst of ACL rewrite requests shares rewrites, and no caller returns before a rewrite
that read its change has finished (provisioning/coalesce.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from biblioedge.provisioning.coalesce import Coalesced


def _wait(check: Callable[[], bool], what: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_requests_made_during_a_rewrite_share_the_next_one_and_each_sees_its_change() -> None:
    changes: list[int] = []  # the "registry": committed before each request
    written: list[list[int]] = []  # what each rewrite read
    gate = threading.Event()

    def rewrite() -> None:
        seen = list(changes)
        if not written:
            gate.wait(30)  # the first rewrite is slow: the burst arrives meanwhile
        written.append(seen)

    co = Coalesced(rewrite)

    def change(n: int) -> int:
        changes.append(n)
        co.request()
        return n

    with ThreadPoolExecutor(max_workers=9) as pool:
        first = pool.submit(change, 0)
        _wait(lambda: co.pending == 1, "the first rewrite to run")
        burst: list[Future[int]] = [pool.submit(change, n) for n in range(1, 9)]
        _wait(lambda: co.pending == 9, "the burst to wait")
        assert not any(f.done() for f in burst), "nobody returns before a rewrite with it"
        gate.set()
        assert first.result(30) == 0 and [f.result(30) for f in burst] == list(range(1, 9))
    assert co.runs == 2, "the whole burst shared one rewrite after the running one"
    assert written[0] == [0] and sorted(written[1]) == list(range(9))
    assert co.pending == 0


def test_a_failed_rewrite_is_run_again_for_those_who_waited_on_it() -> None:
    attempts: list[int] = []
    gate = threading.Event()

    def rewrite() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            gate.wait(30)
            raise OSError("disk full")

    co = Coalesced(rewrite)
    with ThreadPoolExecutor(max_workers=2) as pool:
        failing = pool.submit(co.request)
        _wait(lambda: co.pending == 1, "the first rewrite to run")
        waiting = pool.submit(co.request)
        _wait(lambda: co.pending == 2, "the second request to wait")
        gate.set()
        with pytest.raises(OSError, match="disk full"):
            failing.result(30)
        assert waiting.result(30) is None
    assert len(attempts) == 2 and co.pending == 0
