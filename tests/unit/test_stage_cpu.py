"""The stage CPU bench runs every stage on every request it sends (a request a stage did not pass
on would make its figures the cost of a shortcut), and counts CPU in each part."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import stage_cpu  # noqa: E402

from sluice.providers.catalog import load_catalog  # noqa: E402
from sluice.settings import Settings  # noqa: E402


def test_each_part_of_the_path_is_timed_for_every_request() -> None:
    settings = Settings()
    clock = asyncio.run(
        stage_cpu.one_round(settings, load_catalog(settings), stage_cpu.raw_requests(40, "t"))
    )
    assert set(clock) == set(stage_cpu.PARTS)
    assert all(seconds > 0 for seconds in clock.values()), clock


def test_the_requests_are_distinct_so_no_dedupe_or_cache_shortcut_applies() -> None:
    requests = stage_cpu.raw_requests(50, "t")
    assert len(set(requests)) == 50
