"""Where the worker's Kafka consumer runs, A/B, end to end (run by hand).

    .venv/bin/python bench/consumer_loop.py [--rates 300 400] [--rounds 2] [--duration 15]

Faust runs its Kafka consumer in a thread with an event loop of its own, and hands every fetch,
commit and seek across to it. `SLUICE_CONSUMER_IN_LOOP=true` (the default) runs the same consumer
on the worker's own loop instead. This drives Sluice's HTTP front door with the open-loop
generator of bench/side_by_side.py, on a fresh stack per step, alternating the two settings
round by round at each rate, and reports goodput, latency and each process's CPU per answer.
Results: bench/results/consumer_loop.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from harness import machine, start_process, stop_processes, wait_until, zero_latency_settings
from side_by_side import SUSTAINED, sluice_step

RESULTS = Path(__file__).resolve().parent / "results"
SETTING = "SLUICE_CONSUMER_IN_LOOP"
MODES = {"in_loop": "true", "thread": "false"}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", type=float, nargs="+", default=[300, 400])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per step")
    args = parser.parse_args()
    load_start = os.getloadavg()
    home = Path(f"/tmp/sluice-consumer-loop-{uuid.uuid4().hex[:6]}")
    base = zero_latency_settings(home, "127.0.0.1:9")
    mock = start_process(base, home / "logs", "simulator")
    wait_until(
        lambda: httpx.get(base.simulator_url.removesuffix("/v1") + "/healthz").status_code == 200, "mock"
    )
    steps: list[dict[str, Any]] = []
    saved = os.environ.get(SETTING)
    try:
        for round_number in range(args.rounds):
            order = list(MODES) if round_number % 2 == 0 else list(reversed(MODES))
            for rate in args.rates:
                for mode in order:
                    os.environ[SETTING] = MODES[mode]  # read by each step's fresh Settings
                    step, sent, stored = sluice_step(base, mock.pid, "sluice_http", rate, args.duration)
                    steps.append(
                        {"round": round_number, "mode": mode, "rate": rate, "clickhouse_requests": stored}
                        | {"requests_sent": sent}
                        | step
                    )
                    print(f"round {round_number} {rate:g} req/s {mode:8s} {step}", flush=True)
    finally:
        if saved is None:
            os.environ.pop(SETTING, None)
        else:
            os.environ[SETTING] = saved
        stop_processes([mock])
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(load_start),
        "settings": {
            "setting": SETTING,
            "modes": MODES,
            "rates": args.rates,
            "rounds": args.rounds,
            "duration_s_per_step": args.duration,
            "sustained_means": SUSTAINED,
            "stack": "fresh embedded broker, sink, worker and gateway per step; one shared zero-latency mock",
        },
        "steps": steps,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "consumer_loop.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
