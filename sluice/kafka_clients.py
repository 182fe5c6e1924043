"""Every aiokafka client Sluice makes is built here, so the Kafka security settings (TLS, SASL
PLAIN / SCRAM-SHA-256 / SCRAM-SHA-512) reach all of them: the client and gateway, the sink and
its monitors, the route-advice follower, topic administration and the CLI. The Faust app gets
the same settings through `sluice.kafka_transport.broker_credentials`."""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from sluice.settings import Settings


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for SSL / SASL_SSL (None for the plaintext protocols)."""
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    cafile = str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    context.check_hostname = settings.kafka_ssl_check_hostname
    if settings.kafka_ssl_certfile is not None:
        password = settings.kafka_ssl_key_password
        context.load_cert_chain(
            str(settings.kafka_ssl_certfile),
            str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
            password.get_secret_value() if password is not None else None,
        )
    return context


def security_options(settings: Settings) -> dict[str, Any]:
    """aiokafka's keyword arguments for the configured protocol; refuses SASL without a user."""
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {"security_protocol": protocol}
    if (context := ssl_context(settings)) is not None:
        options["ssl_context"] = context
    if protocol.startswith("SASL_"):
        if not settings.kafka_sasl_username or settings.kafka_sasl_password is None:
            raise ValueError(f"{protocol} needs SLUICE_KAFKA_SASL_USERNAME and SLUICE_KAFKA_SASL_PASSWORD")
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return options


def producer(settings: Settings, *, bootstrap: str | None = None, **options: Any) -> AIOKafkaProducer:
    servers = bootstrap or settings.bootstrap
    return AIOKafkaProducer(bootstrap_servers=servers, **security_options(settings), **options)


def consumer(
    settings: Settings, *topics: str, bootstrap: str | None = None, **options: Any
) -> AIOKafkaConsumer:
    servers = bootstrap or settings.bootstrap
    return AIOKafkaConsumer(*topics, bootstrap_servers=servers, **security_options(settings), **options)


def admin(settings: Settings, **options: Any) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, **security_options(settings), **options)
