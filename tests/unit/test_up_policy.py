"""`sluice up` restarts a crashed child, but not one in a crash loop."""

from __future__ import annotations

from collections import deque

from sluice.local.up import RestartPolicy


def test_restarts_until_the_limit_within_the_window() -> None:
    policy = RestartPolicy(limit=3, window_s=60.0)
    history: deque[float] = deque()
    for now in (0.0, 1.0, 2.0):
        assert policy.allows(history, now)
        history.append(now)
    assert not policy.allows(history, 3.0), "4th crash within a minute: stop everything"


def test_old_crashes_leave_the_window() -> None:
    policy = RestartPolicy(limit=2, window_s=10.0)
    history: deque[float] = deque([0.0, 5.0])
    assert not policy.allows(history, 9.0)
    assert policy.allows(history, 12.0), "the crash at 0 s is older than the window"
    assert list(history) == [5.0]
