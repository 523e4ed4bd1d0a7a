"""Schemathesis over the live central (HTTPS, its broker, PostgreSQL-free SQLite store): every
operation in the OpenAPI document, valid and invalid input, every check schemathesis has.

The target is 0 failures: no 5xx, no response outside the documented statuses or schemas, no
invalid input accepted, no route that skips authentication.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import positive_data_acceptance
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation import GenerationMode

from biblioedge.demo.launch import CentralProcess
from biblioedge.provisioning.broker import BrokerProcess

pytestmark = pytest.mark.integration

#: Cases per operation and mode. CI runs the same 25 every time; to hunt, run with e.g.
#: BIBLIOEDGE_SCHEMATHESIS_EXAMPLES=200 BIBLIOEDGE_SCHEMATHESIS_EXPLORE=1 (fresh random cases).
EXAMPLES = int(os.environ.get("BIBLIOEDGE_SCHEMATHESIS_EXAMPLES", "25"))
EXPLORE = os.environ.get("BIBLIOEDGE_SCHEMATHESIS_EXPLORE") == "1"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CentralProcess]:
    root = tmp_path_factory.mktemp("schemathesis")
    broker = BrokerProcess(root / "broker")
    central = CentralProcess(root / "central", broker)
    broker.start()
    central.start()
    with central.client() as api:  # something for the path parameters to find
        api.post("/devices", json={"device_id": "gate-01", "site": "tv-tinh", "role": "gate"})
        api.put("/readers/P1", json={"site": "tv-tinh", "display_name": "Nguyễn Văn A"})
    yield central
    assert central.stop() == 0, central.log_tail()
    broker.stop()


def _exercise(op: Any, mode: GenerationMode, live: CentralProcess) -> None:
    """Up to 25 cases of one operation in one mode, every check on each (hypothesis shrinks
    a failure to its smallest case)."""

    @given(case=op.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=not EXPLORE,
        database=None,
    )
    def run(case: Any) -> None:
        # a valid token, except where the case leaves it out on purpose (a negative header
        # set without Authorization: the check is then that the API refuses it)
        headers = dict(case.headers or {})
        meta = case.meta.components if case.meta is not None else {}
        header = meta.get(ParameterLocation.HEADER)
        dropped = header is not None and header.mode.is_negative and "Authorization" not in headers
        if not dropped:
            headers["Authorization"] = f"Bearer {live.token}"
        case.headers = headers
        # a report's range is two dates: that "from" must not be after "to" (nor the range
        # over ten years) is a rule OpenAPI cannot state, and issue 23 asks 422 with the
        # reason for it; every other check still holds for these routes
        excluded = [positive_data_acceptance] if "/reports/" in case.path else []
        case.call_and_validate(verify=str(live.ca_file), timeout=20, excluded_checks=excluded)

    run()


def test_every_operation_holds_to_its_document(live: CentralProcess) -> None:
    # schemathesis' own pytest wiring (from_fixture) does not run under pytest 9.2, so the
    # operations are walked here: the same strategies and checks, one failure list
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json", verify=str(live.ca_file))
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        op = result.ok()
        operations += 1
        for mode in GenerationMode:
            try:
                _exercise(op, mode, live)
            except Unsatisfiable:  # no input of this operation can be invalid (no parameters)
                continue
            except Exception as exc:  # collect every operation's failure, then report them all
                failures.append(f"{op.label} [{mode.value}]: {str(exc)[:1500]}")
    assert operations >= 20
    assert not failures, "\n\n".join(failures)


def test_the_document_names_every_error_it_can_return(live: CentralProcess) -> None:
    with live.client() as api:
        doc = api.get(f"{live.url}/openapi.json").json()
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            codes = set(op["responses"])
            if op.get("security"):
                assert {"401", "403", "413"} <= codes, (method, path)
            if op.get("parameters") or op.get("requestBody"):
                assert "422" in codes, (method, path)
