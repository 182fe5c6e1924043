"""README's benchmark tables are generated from bench/results/, never typed by hand."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_benchmark_tables_match_the_result_files() -> None:
    check = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "readme_tables.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr


def test_every_generated_table_has_its_markers_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in ("benchmarks", "side_by_side", "heldout", "injection_loo"):
        assert f"<!-- table: {name} -->" in readme and f"<!-- end: {name} -->" in readme
