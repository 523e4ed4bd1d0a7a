"""Shared fixtures: a real broker on a free loopback port, real central and agent processes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from biblioedge.launch import AgentProcess, CentralProcess, agent_config
from biblioedge.provisioning.broker import BrokerProcess


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from pg import postgres_cluster

    with postgres_cluster(tmp_path_factory.mktemp("pg")) as url:
        yield url


@pytest.fixture(scope="session")
def pcsc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    from pcsc import pcscd_with_vpcd

    with pcscd_with_vpcd(tmp_path_factory.mktemp("pcsc")):
        yield


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
