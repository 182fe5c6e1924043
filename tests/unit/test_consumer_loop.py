"""Where the worker's Kafka consumer runs (SLUICE_CONSUMER_IN_LOOP): on the worker's own event
loop by default, or in the thread of its own that Faust gives it. The end-to-end scale-out test
runs both against the real broker; these pin which one a setting selects, and that the in-loop
one calls straight through instead of handing each call to another thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import faust
import pytest

from sluice.kafka_transport import InLoopConsumerThread, ShortPollConsumer, broker_url


@pytest.fixture(autouse=True)
def _restore_consumer_mode() -> Iterator[None]:
    before = ShortPollConsumer.in_loop
    yield
    ShortPollConsumer.in_loop = before


def consumer_of(in_loop: bool) -> tuple[faust.App, object]:
    app = faust.App(
        "consumer-loop-test",
        broker=broker_url("127.0.0.1:9", 10, in_loop),  # never dialled: nothing is started
        autodiscover=False,
        web_enabled=False,
    )
    return app, app.consumer._thread


def test_by_default_the_consumer_runs_on_the_worker_loop() -> None:
    app, thread = consumer_of(True)
    assert isinstance(thread, InLoopConsumerThread)
    assert thread.thread_loop is app.loop

    async def calls() -> tuple[int, int]:
        async def on_which_thread() -> int:
            return threading.get_ident()

        sync = await thread.call_thread(threading.get_ident)  # Faust hands it plain functions too
        return sync, await thread.call_thread(on_which_thread)

    assert app.loop.run_until_complete(calls()) == (threading.get_ident(), threading.get_ident())


def test_the_setting_off_keeps_fausts_consumer_thread() -> None:
    app, thread = consumer_of(False)
    assert not isinstance(thread, InLoopConsumerThread)
    assert thread.thread_loop is not app.loop  # its own loop, run by its own thread once started
    assert isinstance(thread.thread_loop, asyncio.AbstractEventLoop)


def test_a_failed_stop_still_signals_shutdown(monkeypatch: pytest.MonkeyPatch) -> None:
    """Faust waits for the consumer's shutdown signal; a stop that fails must still give it,
    or the worker sits out its whole shutdown timeout before exiting."""
    app, thread = consumer_of(True)

    async def broken() -> None:
        raise RuntimeError("the broker went away mid-stop")

    monkeypatch.setattr(thread, "on_thread_stop", broken)
    with pytest.raises(RuntimeError, match="mid-stop"):
        app.loop.run_until_complete(thread.stop())
    assert thread._shutdown.is_set()
