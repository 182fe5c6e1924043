"""`sluice up` as a new user runs it: everything starts, /healthz turns 200, `sluice send` gets an
ok answer, `sluice dashboard` shows it, a killed child is restarted, and SIGTERM stops every
child process."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sluice.local.broker import free_port

pytestmark = pytest.mark.e2e


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_up_send_dashboard_and_clean_stop(tmp_path: Path) -> None:
    http_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env.update(
        SLUICE_HOME=str(tmp_path / "home"),
        SLUICE_HTTP_PORT=str(http_port),
        SLUICE_EMBEDDED_BROKER_PORT=str(free_port()),
        SLUICE_SIMULATOR_PORT=str(free_port()),
        SLUICE_SIMULATOR_LATENCY_MS="20",
        SLUICE_BROKER_SESSION_TIMEOUT_S="3",
        SLUICE_BROKER_REBALANCE_TIMEOUT_S="3",
        SLUICE_BROKER_HEARTBEAT_INTERVAL_S="0.5",
    )
    up = subprocess.Popen(
        [sys.executable, "-m", "sluice", "up"],
        cwd=tmp_path,
        env=env,
        stdout=(tmp_path / "up.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        ready = False
        while time.monotonic() < deadline and not ready:
            assert up.poll() is None, (tmp_path / "up.log").read_text()
            with contextlib.suppress(httpx.HTTPError):  # not listening yet
                ready = httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=2).status_code == 200
            time.sleep(0.3)
        assert ready, (tmp_path / "up.log").read_text()

        sent = subprocess.run(
            [sys.executable, "-m", "sluice", "send", "hello"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert sent.returncode == 0, sent.stderr.decode()
        answer = json.loads(sent.stdout)
        assert answer["status"] == "ok" and answer["model"] and answer["usage"]["total_tokens"] > 0
        assert answer["cost_usd"] > 0 and answer["latency_ms"] > 0

        deadline = time.monotonic() + 30
        shown = ""
        while time.monotonic() < deadline and answer["model"] not in shown:
            board = subprocess.run(
                [sys.executable, "-m", "sluice", "dashboard", "--minutes", "10"],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                timeout=60,
                check=False,
                text=True,
            )
            shown = board.stdout
            time.sleep(0.5)
        assert answer["model"] in shown, shown
        assert "requests / min" in shown, "the sparklines"

        base = f"http://127.0.0.1:{http_port}"
        page = httpx.get(f"{base}/dashboard", timeout=10)
        assert page.status_code == 200 and "<svg" in page.text
        data = httpx.get(f"{base}/dashboard/data", params={"minutes": 10}, timeout=30).json()
        assert answer["model"] in {row["model"] for row in data["tables"]["models"]}
        families = {
            f.name for f in text_string_to_metric_families(httpx.get(f"{base}/metrics", timeout=10).text)
        }
        assert {"sluice_http_requests", "process_cpu_seconds"} <= families

        children = children_of(up.pid)
        assert len(children) >= 3, "simulator, sink and worker run as children"

        # A crashed child is restarted, and requests flow again.
        worker = next(pid for pid in children if b"worker" in Path(f"/proc/{pid}/cmdline").read_bytes())
        os.kill(worker, signal.SIGKILL)
        deadline = time.monotonic() + 90
        restarted = False
        while time.monotonic() < deadline and not restarted:
            assert up.poll() is None, (tmp_path / "up.log").read_text()
            fresh = [pid for pid in children_of(up.pid) if pid not in children]
            with contextlib.suppress(httpx.HTTPError):
                healthy = httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=2).status_code == 200
                restarted = bool(fresh) and healthy
            time.sleep(0.3)
        assert restarted, (tmp_path / "up.log").read_text()
        assert "worker exited with code -9; restarting" in (tmp_path / "up.log").read_text()
        again = subprocess.run(
            [sys.executable, "-m", "sluice", "send", "hello again"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            timeout=90,
            check=False,
        )
        assert again.returncode == 0, again.stderr.decode()
        children = children_of(up.pid)
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(60)
    assert up.returncode == 0, (tmp_path / "up.log").read_text()
    time.sleep(0.5)
    assert not [pid for pid in children if alive(pid)], "no orphan survives sluice up"
    assert "stopped" in (tmp_path / "up.log").read_text()
