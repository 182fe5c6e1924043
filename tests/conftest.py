"""Shared fixtures: a real Tansu broker per test session, fresh settings per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sluice.local.broker import EmbeddedBroker, start_broker
from sluice.local.simulator import SimulatorConfig, SimulatorServer, serve
from sluice.providers.openai_http import ChatClient
from sluice.settings import Settings


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One real broker for the whole run; tests isolate themselves with a topic prefix."""
    running = start_broker(log_path=tmp_path_factory.mktemp("broker") / "tansu.log")
    yield running
    running.stop()


@pytest.fixture(scope="session")
def chdb_dsn(tmp_path_factory: pytest.TempPathFactory) -> str:
    """chdb allows one data path per process: every in-process test shares this one and
    isolates itself with its own database name."""
    return f"chdb://{tmp_path_factory.mktemp('clickhouse')}"


@pytest.fixture()
def settings(tmp_path: Path, chdb_dsn: str) -> Settings:
    """Settings that point at no broker: for pure and agent-tier tests."""
    unique = uuid.uuid4().hex[:8]
    return Settings(home=tmp_path / "home", clickhouse_dsn=chdb_dsn, clickhouse_database=f"sluice_{unique}")


@pytest.fixture()
def live_settings(broker: EmbeddedBroker, tmp_path: Path, chdb_dsn: str) -> Settings:
    """Settings on the real broker with a unique topic prefix and app id, so tests never collide."""
    unique = uuid.uuid4().hex[:8]
    return Settings(
        home=tmp_path / "home",
        kafka_bootstrap=broker.bootstrap,
        topic_prefix=f"t{unique}.",
        app_id=f"sluice-{unique}",
        sink_group=f"sink-{unique}",
        clickhouse_dsn=chdb_dsn,
        clickhouse_database=f"sluice_{unique}",
        broker_session_timeout_s=3.0,
        broker_rebalance_timeout_s=3.0,
        broker_heartbeat_interval_s=0.5,
    )


@pytest.fixture()
async def simulator() -> AsyncIterator[SimulatorServer]:
    """The model simulator over real HTTP on a free port: no latency, a fixed seed."""
    server = await serve(SimulatorConfig(latency_ms=0, latency_jitter_ms=0, seed=1), port=0)
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture()
async def client(settings: Settings, simulator: SimulatorServer) -> AsyncIterator[ChatClient]:
    """The worker's model client pointed at `simulator`; one connection shard (each httpx client
    loads the CA bundle, which dominates a short test)."""
    chat = ChatClient(settings.with_overrides(simulator_port=simulator.port, infer_max_in_flight=32))
    try:
        yield chat
    finally:
        await chat.close()
