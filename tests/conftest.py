"""Shared fixtures: a real broker on a free loopback port, real central and agent processes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from ils import Dummy

from biblioedge.demo.launch import AgentProcess, CentralProcess, agent_config
from biblioedge.fleet.repo import Repo
from biblioedge.provisioning.broker import BrokerProcess


@pytest.fixture(autouse=True)
def _no_processes_left_behind(tmp_path: Path) -> Iterator[None]:
    """A test that fails midway must not leave its broker, central or kiosks running (they
    would hold ports and CPU for the rest of the session): whatever still runs from this
    test's directory is killed when it ends."""
    yield
    pgrep = shutil.which("pgrep")
    if pgrep is None:
        return
    out = subprocess.run([pgrep, "-f", str(tmp_path)], capture_output=True, text=True)
    for pid in (int(p) for p in out.stdout.split()):
        if pid != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from pg import postgres_cluster

    with postgres_cluster(tmp_path_factory.mktemp("pg")) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Repo]:
    """A migrated central database on SQLite and on PostgreSQL (the session's cluster, left
    clean for the next test)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'central.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_url")
    r = Repo(url)
    r.migrate()
    yield r
    if request.param == "postgresql":
        with r.engine.begin() as conn:
            conn.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    r.close()


@pytest.fixture(scope="session")
def pcsc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The port of the session's vpcd reader, for the chip simulator to connect to."""
    from pcsc import pcscd_with_vpcd

    with pcscd_with_vpcd(tmp_path_factory.mktemp("pcsc")) as port:
        yield port


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    """Started by the ``central`` fixture, once central has written its TLS files and ACL."""
    # BIBLIOEDGE_TEST_BROKER=amqtt runs the suite as a machine without mosquitto would.
    kind = os.environ.get("BIBLIOEDGE_TEST_BROKER", "auto")
    assert kind in ("auto", "mosquitto", "amqtt"), kind
    proc = BrokerProcess(tmp_path / "broker", kind=kind)  # type: ignore[arg-type]
    yield proc
    proc.stop()


@pytest.fixture
def central(tmp_path: Path, broker: BrokerProcess) -> Iterator[CentralProcess]:
    """Central and its broker with mutual TLS and central's ACL (mosquitto)."""
    proc = CentralProcess(tmp_path / "central", broker)
    broker.start()
    proc.start()
    yield proc
    if proc.alive():
        assert proc.stop() == 0, proc.log_tail()


@pytest.fixture
def make_agent(tmp_path: Path, broker: BrokerProcess, central: CentralProcess) -> Iterator[object]:
    """Agents that enroll with ``central`` through the real path before their first start."""
    made: list[AgentProcess] = []

    def make(
        device_id: str, role: str = "gate", site: str = "tv-tinh", **sections: object
    ) -> AgentProcess:
        data = tmp_path / device_id
        agent = AgentProcess(
            data, agent_config(data, device_id, role, site, broker.url, **sections), central
        )
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.stop()


@pytest.fixture
def ils() -> Iterator[Dummy]:
    """The dummy library system, started for the test and killed after it."""
    d = Dummy()
    d.start()
    yield d
    d.stop()


@pytest.fixture(scope="session")
def built_releases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real software releases of biblioedge built from this tree (its wheel and pip: the
    dependencies would make each build minutes long and are the same in all three): 0.1.1
    and 0.1.2 work, 0.1.3 dies at import."""
    from biblioedge.provisioning.release_build import build_software, native_arch

    def broken(tree: Path) -> None:
        init = tree / "core" / "__init__.py"
        init.write_text(init.read_text() + '\nraise RuntimeError("this release is broken")\n')

    out = tmp_path_factory.mktemp("releases")
    built = {}
    for version, patch in (("0.1.1", None), ("0.1.2", None), ("0.1.3", broken)):
        build_software(
            Path(__file__).resolve().parent.parent,
            out / version,
            version=version,
            patch=patch,
            arches=(native_arch(),),
            roles=("gate", "selfcheck", "desk"),
            with_dependencies=False,
        )
        built[version] = out / version
    return built
