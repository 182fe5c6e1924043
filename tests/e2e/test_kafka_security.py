"""The SASL settings reach the wire: against the embedded broker (Tansu, which runs without
authentication here and cannot be given SCRAM users in memory storage), a client configured for
SASL opens with a SaslHandshake that the broker refuses, while the same client in PLAINTEXT
works. With Apache Kafka the same settings complete the handshake (infra/kafka/README.md)."""

from __future__ import annotations

import logging

import pytest
from aiokafka.errors import KafkaConnectionError
from pydantic import SecretStr

from sluice.edge.client import SluiceClient
from sluice.local.broker import EmbeddedBroker
from sluice.settings import Settings

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_a_sasl_client_performs_the_handshake(
    broker: EmbeddedBroker, mechanism: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="aiokafka")
    settings = Settings(
        kafka_bootstrap=broker.bootstrap,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism=mechanism,  # type: ignore[arg-type]
        kafka_sasl_username="sluice",
        kafka_sasl_password=SecretStr("secret"),
    )
    client = SluiceClient(settings=settings)
    with pytest.raises(KafkaConnectionError):
        await client.start()
    await client.stop()
    assert "UnsupportedSaslMechanismError" in caplog.text  # the broker answered our SaslHandshake
    assert "secret" not in caplog.text
