"""Pure logic of the model simulator: token counting, fault choice, content generation."""

from __future__ import annotations

import random
import re

import orjson
import pytest
from pydantic import ValidationError

from sluice.local.simulator import (
    DEFAULT_MODELS,
    Fault,
    ModelProfile,
    ModelStats,
    Plan,
    SimulatorConfig,
    build_reply,
    count_tokens,
    generate_json,
    generate_text,
    invent_facts,
    malformed_body,
    message_text,
    plan_call,
    stream_chunks,
    wants_json,
)
from sluice.settings import Settings

USER = [{"role": "user", "content": "Summarise the quarterly report for the board please"}]


def _body(**extra: object) -> dict[str, object]:
    return {"model": "sim-small", "messages": USER, **extra}


# --- tokens ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "tokens"), [("", 0), ("a", 1), ("abcd", 1), ("abcde", 2), ("x" * 40, 10)])
def test_count_tokens_is_ceil_chars_over_four(text: str, tokens: int) -> None:
    assert count_tokens(text) == tokens


def test_prompt_tokens_sum_messages_with_at_least_one_each() -> None:
    messages = [
        {"role": "system", "content": ""},  # empty still counts 1
        {"role": "user", "content": "abcdefghi"},  # 9 chars -> 3
        {"role": "user", "content": [{"type": "text", "text": "abcd"}, {"type": "image_url"}]},  # -> 1
    ]
    reply = build_reply("sim-small", {"model": "sim-small", "messages": messages}, tokens=64)
    assert reply["usage"]["prompt_tokens"] == 1 + 3 + 1


def test_message_text_handles_string_parts_and_missing_content() -> None:
    assert message_text({"content": "hi"}) == "hi"
    assert message_text({"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}) == "a b"
    assert message_text({"role": "assistant", "tool_calls": []}) == ""


def test_completion_tokens_are_the_configured_reply_size_with_stop() -> None:
    reply = build_reply("sim-small", _body(), tokens=64)
    usage = reply["usage"]
    assert (usage["completion_tokens"], reply["choices"][0]["finish_reason"]) == (64, "stop")
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert count_tokens(reply["choices"][0]["message"]["content"]) == 64


@pytest.mark.parametrize("key", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_below_reply_size_cuts_with_length(key: str) -> None:
    reply = build_reply("sim-small", _body(**{key: 5}), tokens=64)
    assert reply["usage"]["completion_tokens"] == 5
    assert reply["choices"][0]["finish_reason"] == "length"
    assert count_tokens(reply["choices"][0]["message"]["content"]) == 5


def test_max_tokens_above_reply_size_changes_nothing() -> None:
    reply = build_reply("sim-small", _body(max_tokens=500), tokens=64)
    assert (reply["usage"]["completion_tokens"], reply["choices"][0]["finish_reason"]) == (64, "stop")


def test_reply_has_the_openai_shape() -> None:
    reply = build_reply("sim-large", _body(), tokens=8)
    assert reply["id"].startswith("simcmpl-")
    assert reply["object"] == "chat.completion"
    assert isinstance(reply["created"], int)
    assert reply["model"] == "sim-large"
    assert reply["choices"][0]["message"]["role"] == "assistant"


# --- content ---------------------------------------------------------------------------------------------


def test_text_is_deterministic_in_model_and_prompt_and_says_it_is_simulated() -> None:
    text = generate_text("sim-small", USER, 64)
    assert text == generate_text("sim-small", USER, 64)
    assert text.startswith("[simulated sim-small] Reply to: Summarise the quarterly report")
    assert text != generate_text("sim-medium", USER, 64)
    assert text != generate_text("sim-small", [{"role": "user", "content": "another prompt"}], 64)


@pytest.mark.parametrize("tokens", [1, 2, 7, 10, 64, 300])
def test_text_is_exactly_the_token_count(tokens: int) -> None:
    assert count_tokens(generate_text("sim-small", USER, tokens)) == tokens


def test_text_quotes_the_last_user_message() -> None:
    messages = [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": "follow up question"},
    ]
    assert "Reply to: follow up question" in generate_text("sim-small", messages, 64)


@pytest.mark.parametrize("kind", ["json_object", "json_schema"])
def test_json_mode_content_is_a_valid_object(kind: str) -> None:
    body = _body(response_format={"type": kind})
    assert wants_json(body)
    content = orjson.loads(build_reply("sim-medium", body, tokens=40)["choices"][0]["message"]["content"])
    assert content["model"] == "sim-medium"
    assert content["answer"].startswith("[simulated sim-medium]")


def test_json_content_stays_valid_even_when_tiny() -> None:
    assert orjson.loads(generate_json("sim-small", USER, 1))["model"] == "sim-small"


def test_plain_text_is_not_json_mode() -> None:
    assert not wants_json(_body())
    assert not wants_json(_body(response_format={"type": "text"}))


def test_hallucinated_numbers_are_absent_from_the_prompt() -> None:
    prompt = "Revenue was 1200 in 2021 and 3400 in 2022."
    facts = invent_facts(prompt, random.Random(3))
    numbers = re.findall(r"\d+", facts)
    assert len(numbers) == 3
    assert all(n not in prompt for n in numbers)


def test_hallucination_terminates_when_the_prompt_holds_every_short_number() -> None:
    prompt = " ".join(str(n) for n in range(1000, 10000))
    numbers = re.findall(r"\d+", invent_facts(prompt, random.Random(1)))
    assert all(n not in prompt for n in numbers)
    assert all(len(n) > 4 for n in numbers)


def test_hallucinating_text_states_facts_the_honest_text_does_not() -> None:
    honest = generate_text("sim-small", USER, 64)
    wild = generate_text("sim-small", USER, 64, hallucinate=True)
    assert "According to the" in wild
    assert not re.search(r"\d", honest)
    assert re.search(r"\d{4}", wild)


# --- malformed bodies and streaming ------------------------------------------------------------------------


def test_malformed_invalid_json_does_not_parse() -> None:
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(malformed_body(build_reply("sim-small", _body(), 16), "invalid_json"))


def test_malformed_missing_choices_parses_without_choices() -> None:
    parsed = orjson.loads(malformed_body(build_reply("sim-small", _body(), 16), "missing_choices"))
    assert "choices" not in parsed
    assert parsed["object"] == "chat.completion"


def test_malformed_bad_content_has_unparseable_json_content() -> None:
    reply = build_reply("sim-small", _body(response_format={"type": "json_object"}), 16)
    parsed = orjson.loads(malformed_body(reply, "bad_content"))
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(parsed["choices"][0]["message"]["content"])


def test_stream_chunks_rebuild_the_reply() -> None:
    reply = build_reply("sim-small", _body(max_tokens=10), 64)
    chunks = [orjson.loads(c) for c in stream_chunks(reply, include_usage=True)]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == reply["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == reply["choices"][0]["message"]["content"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"] == reply["usage"] and chunks[-1]["choices"] == []
    assert "usage" not in orjson.loads(stream_chunks(reply)[-1])


# --- plans: latency and fault choice -----------------------------------------------------------------------


def _plans(
    config: SimulatorConfig, fault: Fault, n: int, seed: int = 1, json_mode: bool = False
) -> list[Plan]:
    rng = random.Random(seed)
    return [plan_call(config, fault, rng, json_mode) for _ in range(n)]


def test_latency_is_mean_plus_uniform_jitter() -> None:
    plans = _plans(SimulatorConfig(latency_ms=200, latency_jitter_ms=100), Fault(), 500)
    latencies = [p.latency_s for p in plans]
    assert all(0.1 <= s <= 0.3 for s in latencies)
    assert min(latencies) < 0.12 and max(latencies) > 0.28
    assert all(p.outcome == "ok" for p in plans)


def test_latency_never_goes_negative() -> None:
    assert all(
        p.latency_s >= 0 for p in _plans(SimulatorConfig(latency_ms=10, latency_jitter_ms=100), Fault(), 200)
    )


def test_same_seed_same_sequence() -> None:
    config = SimulatorConfig(error_rate=0.3, timeout_rate=0.1, malformed_rate=0.2)
    assert _plans(config, Fault(), 200, seed=42) == _plans(config, Fault(), 200, seed=42)
    assert _plans(config, Fault(), 200, seed=42) != _plans(config, Fault(), 200, seed=43)


def test_rates_split_outcomes_roughly_as_configured() -> None:
    config = SimulatorConfig(error_rate=0.2, timeout_rate=0.1, malformed_rate=0.3)
    outcomes: list[str] = [p.outcome for p in _plans(config, Fault(), 4000)]
    for outcome, share in [("error", 0.2), ("timeout", 0.1), ("malformed", 0.3), ("ok", 0.4)]:
        assert abs(outcomes.count(outcome) / 4000 - share) < 0.04, outcome


def test_errors_are_500_or_503() -> None:
    statuses = {p.status for p in _plans(SimulatorConfig(error_rate=1.0), Fault(), 100)}
    assert statuses == {500, 503}


def test_down_fault_answers_at_once_and_draws_nothing() -> None:
    rng = random.Random(5)
    plan = plan_call(SimulatorConfig(), Fault(mode="down"), rng)
    assert (plan.outcome, plan.status, plan.latency_s) == ("down", 503, 0.0)
    assert rng.random() == random.Random(5).random()


def test_rate_limited_fault_answers_429_for_its_rate() -> None:
    assert {p.outcome for p in _plans(SimulatorConfig(), Fault(mode="rate_limited"), 50)} == {"rate_limited"}
    half = [p.outcome for p in _plans(SimulatorConfig(), Fault(mode="rate_limited", rate=0.5), 2000)]
    assert 0.45 < half.count("rate_limited") / 2000 < 0.55


def test_slow_fault_multiplies_latency() -> None:
    config = SimulatorConfig(latency_ms=100, latency_jitter_ms=50)
    normal = _plans(config, Fault(), 20)
    slow = _plans(config, Fault(mode="slow", factor=10), 20)
    assert [round(s.latency_s, 9) for s in slow] == [round(n.latency_s * 10, 9) for n in normal]


def test_flaky_fault_defaults_to_half_errors() -> None:
    outcomes = [p.outcome for p in _plans(SimulatorConfig(), Fault(mode="flaky"), 2000)]
    assert 0.45 < outcomes.count("error") / 2000 < 0.55


def test_timeout_fault_hangs_every_call() -> None:
    assert {p.outcome for p in _plans(SimulatorConfig(), Fault(mode="timeout"), 50)} == {"timeout"}


def test_hallucinate_fault_marks_successful_calls() -> None:
    plans = _plans(SimulatorConfig(), Fault(mode="hallucinate"), 20)
    assert all(p.outcome == "ok" and p.hallucinate for p in plans)


def test_malformed_fault_kinds() -> None:
    config = SimulatorConfig()
    plain = {p.malformed_kind for p in _plans(config, Fault(mode="malformed"), 200)}
    assert plain == {"invalid_json", "missing_choices"}  # bad content is invisible without JSON mode
    as_json = {p.malformed_kind for p in _plans(config, Fault(mode="malformed"), 200, json_mode=True)}
    assert as_json == {"invalid_json", "missing_choices", "bad_content"}
    fixed = {p.malformed_kind for p in _plans(config, Fault(mode="malformed", kind="missing_choices"), 50)}
    assert fixed == {"missing_choices"}


# --- configuration -----------------------------------------------------------------------------------------


def test_config_defaults() -> None:
    config = SimulatorConfig()
    assert (config.latency_ms, config.latency_jitter_ms, config.tokens_per_reply) == (200.0, 100.0, 64)
    assert (config.error_rate, config.timeout_rate, config.malformed_rate, config.seed) == (0, 0, 0, None)
    assert tuple(config.models) == DEFAULT_MODELS == ("sim-small", "sim-medium", "sim-large")


def test_model_profile_overrides_only_what_it_sets() -> None:
    config = SimulatorConfig(latency_ms=100, models={"m": ModelProfile(tokens_per_reply=8, error_rate=0.5)})
    resolved = config.resolve("m")
    assert (resolved.tokens_per_reply, resolved.error_rate, resolved.latency_ms) == (8, 0.5, 100)
    assert config.tokens_per_reply == 64  # the global default is untouched


def test_from_settings_reads_the_simulator_fields() -> None:
    settings = Settings(
        simulator_latency_ms=5,
        simulator_latency_jitter_ms=1,
        simulator_error_rate=0.1,
        simulator_timeout_rate=0.2,
        simulator_malformed_rate=0.3,
        simulator_seed=9,
    )
    config = SimulatorConfig.from_settings(settings)
    assert (config.latency_ms, config.latency_jitter_ms, config.seed) == (5, 1, 9)
    assert (config.error_rate, config.timeout_rate, config.malformed_rate) == (0.1, 0.2, 0.3)


@pytest.mark.parametrize(
    "params",
    [
        {"mode": "bogus"},
        {"mode": "flaky", "rate": 1.5},
        {"mode": "slow", "factor": -1},
        {"mode": "down", "x": 1},
    ],
)
def test_fault_rejects_bad_params(params: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Fault(**params)  # type: ignore[arg-type]


def test_fault_rate_defaults() -> None:
    assert Fault(mode="flaky").effective_rate == 0.5
    assert Fault(mode="malformed").effective_rate == 1.0
    assert Fault(mode="flaky", rate=0.2).effective_rate == 0.2


def test_stats_clear_keeps_in_flight() -> None:
    stats = ModelStats(calls=5, ok=3, errors=2, in_flight=2, peak_in_flight=4)
    stats.clear()
    assert stats == ModelStats(in_flight=2, peak_in_flight=2)
