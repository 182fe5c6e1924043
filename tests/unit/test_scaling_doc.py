"""docs/scaling.md is generated from the committed benchmark results and the sizing arithmetic
holds: more load never needs fewer processes, and every process stays under its planned load."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def report_module() -> ModuleType:
    path = ROOT / "bench" / "sizing_report.py"
    spec = importlib.util.spec_from_file_location("sizing_report", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["sizing_report"] = module
    spec.loader.exec_module(module)
    return module


def test_scaling_doc_is_generated_from_the_committed_results() -> None:
    report = report_module()
    expected = report.render(report.load(ROOT / "bench" / "results"))
    assert (ROOT / "docs" / "scaling.md").read_text(encoding="utf-8") == expected, (
        "regenerate it: python bench/sizing.py --report"
    )


def test_the_plan_covers_the_load_with_headroom() -> None:
    report = report_module()
    inputs = report.inputs_from(report.load(ROOT / "bench" / "results"))
    previous = None
    for rate in (100, 1_000, 10_000):
        plan = report.plan(rate, inputs)
        assert rate * inputs["worker_ms"] / 1000 <= plan["workers"] * report.UTILISATION
        assert rate * inputs["gateway_ms"] / 1000 <= plan["gateways"] * report.UTILISATION
        assert plan["stage_partitions"] >= plan["workers"], "an idle worker is a wasted one"
        assert plan["gateways"] >= 2
        if previous is not None:
            assert all(plan[k] >= previous[k] for k in ("workers", "gateways", "sinks", "stage_partitions"))
        previous = plan
