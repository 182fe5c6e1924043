"""The compose stack, checked without a Docker engine: the file validates against the Compose
Specification's JSON schema, it has every service the production shape needs, every Sluice
process is scraped by Prometheus on the port it serves /metrics on, and promtool accepts the
Prometheus configuration (when promtool is installed: `make test` installs it)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "tests" / "data" / "compose_spec" / "compose-spec.json"
PROMETHEUS = ROOT / "infra" / "prometheus" / "prometheus.yml"
SLUICE_COMMANDS = {"gateway", "worker", "sink", "simulator"}
# The variable that sets each process's health/metrics port.
PORT_SETTING = {
    "gateway": "SLUICE_HTTP_PORT",
    "worker": "SLUICE_WORKER_PORT",
    "sink": "SLUICE_SINK_PORT",
    "simulator": "SLUICE_SIMULATOR_PORT",
}


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def sluice_processes() -> dict[str, dict[str, Any]]:
    """Compose services that run a long-lived Sluice process, by the command they run."""
    return {
        name: service
        for name, service in compose()["services"].items()
        if service.get("command") and service["command"][0] in SLUICE_COMMANDS
    }


def test_compose_file_validates_against_the_compose_specification() -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose()), key=str)
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_the_schema_catches_a_broken_file() -> None:
    """The check can fail: a misspelt key is refused."""
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    broken = compose()
    broken["services"]["worker"]["replica"] = 2
    assert list(jsonschema.Draft7Validator(schema).iter_errors(broken))


def test_the_production_shape() -> None:
    services = compose()["services"]
    for needed in ("kafka", "clickhouse", "migrate", "gateway", "worker", "sink", "simulator"):
        assert needed in services, needed
    assert {"prometheus", "grafana"} <= set(services)
    assert services["migrate"]["command"] == ["migrate", "--topics"]
    assert services["migrate"]["restart"] == "no", "a job: runs once"
    assert services["gateway"]["deploy"]["replicas"] == 2
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["simulator"]["profiles"] == ["demo"]
    for name in ("gateway", "worker", "sink"):
        after = services[name]["depends_on"]
        assert after["migrate"] == {"condition": "service_completed_successfully"}, name
    grafana = services["grafana"]
    assert "grafana-clickhouse-datasource" in grafana["environment"]["GF_INSTALL_PLUGINS"]


def scrape_targets() -> dict[str, set[tuple[str, int]]]:
    """job -> {(service name, port)} from the Prometheus configuration."""
    config = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    jobs: dict[str, set[tuple[str, int]]] = {}
    for job in config["scrape_configs"]:
        found = jobs.setdefault(job["job_name"], set())
        for sd in job.get("dns_sd_configs", []):
            found.update((name, int(sd["port"])) for name in sd["names"])
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, _, port = target.rpartition(":")
                found.add((host, int(port)))
    return jobs


@pytest.mark.parametrize("service", sorted(sluice_processes()))
def test_every_sluice_process_is_scraped_on_its_metrics_port(service: str) -> None:
    definition = sluice_processes()[service]
    command = definition["command"][0]
    port = int(definition["environment"][PORT_SETTING[command]])
    host = definition["environment"].get(PORT_SETTING[command].replace("_PORT", "_HOST"))
    assert host == "0.0.0.0", f"{service} must listen beyond its container's loopback to be scraped"
    targets = scrape_targets()
    assert (service, port) in targets.get(f"sluice-{command}", set()), (
        f"no job sluice-{command} scrapes {service}:{port} in {PROMETHEUS}"
    )
    probe = " ".join(definition["healthcheck"]["test"])
    assert f":{port}/readyz" in probe, "the container is healthy only when the process is ready"


def test_every_process_kind_is_covered() -> None:
    assert {s["command"][0] for s in sluice_processes().values()} == SLUICE_COMMANDS


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (make test installs it)")
def test_promtool_accepts_the_prometheus_configuration() -> None:
    checked = subprocess.run(
        ["promtool", "check", "config", str(PROMETHEUS)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
