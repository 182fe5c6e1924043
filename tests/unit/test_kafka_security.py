"""Kafka security settings (TLS, SASL PLAIN / SCRAM) reach every Kafka client Sluice makes: the
one builder applies them, the Faust app gets the same as broker credentials, no module builds
an aiokafka client around it, and child processes receive the secrets."""

from __future__ import annotations

import ast
import ssl
from pathlib import Path
from typing import Any

import certifi
import faust.auth
import pytest
from pydantic import SecretStr

from sluice import kafka_clients
from sluice.kafka_transport import broker_credentials
from sluice.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SASL: dict[str, Any] = {
    "kafka_bootstrap": "kafka-1:9093",
    "kafka_security_protocol": "SASL_SSL",
    "kafka_sasl_mechanism": "SCRAM-SHA-512",
    "kafka_sasl_username": "sluice-worker",
    "kafka_sasl_password": SecretStr("s3cret-pass"),
    "kafka_ssl_cafile": Path(certifi.where()),
}


def test_plaintext_by_default() -> None:
    settings = Settings()
    assert kafka_clients.security_options(settings) == {"security_protocol": "PLAINTEXT"}
    assert broker_credentials(settings) is None


async def test_sasl_ssl_reaches_producer_consumer_and_admin() -> None:
    settings = Settings(**SASL)
    built = [
        kafka_clients.producer(settings).client,
        kafka_clients.consumer(settings, group_id=None)._client,
        kafka_clients.admin(settings)._client,
    ]
    for client in built:
        assert client._security_protocol == "SASL_SSL"
        assert client._sasl_mechanism == "SCRAM-SHA-512"
        assert client._sasl_plain_username == "sluice-worker"
        assert client._sasl_plain_password == "s3cret-pass"
        assert isinstance(client._ssl_context, ssl.SSLContext) and client._ssl_context.check_hostname


def test_the_faust_app_gets_the_same_credentials() -> None:
    sasl = broker_credentials(Settings(**SASL))
    assert isinstance(sasl, faust.auth.SASLCredentials)
    assert (sasl.username, sasl.password, sasl.mechanism.value) == (
        "sluice-worker",
        "s3cret-pass",
        "SCRAM-SHA-512",
    )
    assert sasl.protocol.value == "SASL_SSL" and isinstance(sasl.ssl_context, ssl.SSLContext)
    plain = broker_credentials(Settings(kafka_security_protocol="SASL_PLAINTEXT", **_user()))
    assert isinstance(plain, faust.auth.SASLCredentials) and plain.protocol.value == "SASL_PLAINTEXT"
    tls = broker_credentials(Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=Path(certifi.where())))
    assert isinstance(tls, faust.auth.SSLCredentials)


def _user() -> dict[str, Any]:
    return {"kafka_sasl_username": "u", "kafka_sasl_password": SecretStr("p")}


def test_sasl_without_credentials_is_refused() -> None:
    with pytest.raises(ValueError, match="SLUICE_KAFKA_SASL_PASSWORD"):
        kafka_clients.security_options(Settings(kafka_security_protocol="SASL_PLAINTEXT"))


def test_secrets_reach_child_processes_and_stay_hidden_in_reprs() -> None:
    settings = Settings(**SASL)
    env = settings.child_env({})
    assert env["SLUICE_KAFKA_SASL_PASSWORD"] == "s3cret-pass"
    assert env["SLUICE_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert "s3cret-pass" not in repr(settings) and "s3cret-pass" not in str(settings.model_dump(mode="json"))


AIOKAFKA_CLIENTS = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient"}


def test_no_module_builds_an_aiokafka_client_past_the_builder() -> None:
    """Every Kafka client of the product goes through sluice.kafka_clients (Faust: through
    sluice.kafka_transport.broker_credentials)."""
    offenders = []
    for path in [*ROOT.glob("sluice/**/*.py"), *ROOT.glob("agents/**/*.py")]:
        if path.name == "kafka_clients.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in AIOKAFKA_CLIENTS
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
