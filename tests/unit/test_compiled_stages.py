"""The mypyc bench compiles modules that exist, runs tests that exist, and sums its runs right."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import compiled_stages  # noqa: E402


def test_every_listed_module_and_test_file_exists() -> None:
    for path in (*compiled_stages.MODULES, *compiled_stages.KNOWN_UNCOMPILABLE, *compiled_stages.TESTS):
        assert (ROOT / path).is_file(), path
    assert not set(compiled_stages.MODULES) & set(compiled_stages.KNOWN_UNCOMPILABLE)
    assert compiled_stages.module_name("agents/checks/pii.py") == "agents.checks.pii"


def run(build: str, total: float, part: float) -> dict[str, Any]:
    return {
        "build": build,
        "per_request_us": dict.fromkeys(compiled_stages.PARTS, part),
        "total_us": {"median": total, "min": total - 1},
    }


def test_the_summary_is_the_mean_of_each_build_and_the_change_against_plain() -> None:
    runs = [run("plain", 400, 10), run("compiled", 360, 9), run("plain", 420, 12), run("compiled", 370, 9)]
    summary = compiled_stages.summarise(runs)
    assert summary["total_us_plain"] == 410
    assert summary["total_us_compiled"] == 365
    assert summary["change_pct"] == -11.0  # (365 - 410) / 410
    assert summary["parts"]["sanitize"] == {"plain_us": 11.0, "compiled_us": 9.0, "change_pct": -18.2}


def test_only_listed_modules_count_as_rejected_by_mypyc() -> None:
    output = (
        "agents/checks/pii.py:1: warning: Treating generator comprehension as list\n"
        "agents/infer.py:210: error: break inside try/finally block is unimplemented\n"
        "agents/route.py:3: error: first\n"
        "agents/route.py:9: error: second\n"
    )
    found = compiled_stages.rejected(output, ["agents/route.py", "agents/checks/pii.py"])
    assert found == {"agents/route.py": "agents/route.py:3: error: first"}


def test_the_license_rewrite_turns_the_string_into_a_table() -> None:
    text = '[project]\nname = "x"\nlicense = "Apache-2.0"\n'
    rewritten = compiled_stages.LICENSE_LINE.sub(compiled_stages.license_table, text, count=1)
    assert rewritten == '[project]\nname = "x"\nlicense = {text = "Apache-2.0"}\n'


def test_failing_tests_are_named_by_node_id_from_the_short_summary() -> None:
    log = "..F.\nFAILED tests/unit/test_review.py::test_a - TypeError: s...\nERROR tests/x.py::b\n1 failed"
    assert compiled_stages.FAILED_LINE.findall(log) == ["tests/unit/test_review.py::test_a", "tests/x.py::b"]
