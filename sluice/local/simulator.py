"""OpenAI-compatible model *simulator*: a local stand-in for real model servers, reached over real HTTP.
It also speaks Anthropic's messages API (``POST /v1/messages``, see simulator_anthropic).

Not a model: replies are canned text derived from the prompt and start "[simulated <model>]", so tests,
demos and benchmarks exercise the real client path (latency, usage, errors, timeouts, broken replies).

* Latency: ``max(0, latency_ms + uniform(-jitter_ms, +jitter_ms))`` ms (times ``factor`` under ``slow``),
  slept with ``asyncio.sleep`` so thousands of calls can be in flight in one process.
* Tokens: ``ceil(len(text) / 4)``, at least 1 per message. Completion tokens are ``min(max_tokens,
  tokens_per_reply)``, finish_reason ``"length"`` if max_tokens is smaller; plain text is exactly that long.
* Outcome: one uniform draw picks timeout (hangs ``timeout_s``, released at once on shutdown), error
  (500/503), malformed (200 with a broken body) or success, by the configured rates.
* Streaming (``stream: true``, both faces) and tool calls: see simulator_stream. ``latency_ms`` is the
  delay to the first token, ``token_ms`` the delay between tokens (a non-streamed reply waits for all).
* Determinism: with ``seed``, each model draws from its own ``random.Random(f"{seed}:{model}")``, so its
  sequence ignores other models' traffic. Content is a pure function of (model, messages).

Faults, ``POST /admin/faults`` ``{"model": name | "*", "mode": ..., **params}``: ``none``; ``down`` (503;
``close: true`` drops the connection); ``slow`` (latency times ``factor``, default 10); ``flaky`` (500/503
for ``rate`` of calls); ``rate_limited`` (429, Retry-After ``retry_after`` s); ``hallucinate`` (states
numbers and facts absent from the prompt); ``malformed`` (``kind``: invalid_json | missing_choices |
bad_content | any); ``timeout`` (hang); ``scripted`` (answers ``content`` verbatim, for tests of
response checks). ``rate`` defaults to 1.0, 0.5 for flaky. ``"*"`` sets every model
and clears per-model faults; a later per-model fault (even none) wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import random
import resource
import signal
import time
import uuid
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Annotated, Any, Literal

import orjson
from aiohttp import web
from pydantic import ConfigDict, Field, ValidationError
from pydantic.dataclasses import dataclass as validated_dataclass

from sluice.local import simulator_anthropic, simulator_stream
from sluice.observability.prom import metrics_handler
from sluice.settings import Settings

FaultMode = Literal[
    "none", "down", "slow", "flaky", "rate_limited", "hallucinate", "malformed", "timeout", "scripted"
]
MalformedKind = Literal["any", "invalid_json", "missing_choices", "bad_content"]
Outcome = Literal["ok", "down", "rate_limited", "timeout", "error", "malformed"]
DEFAULT_MODELS = ("sim-small", "sim-medium", "sim-large")
Messages = list[dict[str, Any]]
_BROKEN_KINDS: tuple[MalformedKind, ...] = ("invalid_json", "missing_choices", "bad_content")

_COUNTERS = {"down": "errors", "error": "errors", "timeout": "timeouts"}  # outcome -> ModelStats field
_FAILURES = {  # outcome -> (code, type, message) of the OpenAI error body
    "down": ("model_unavailable", "server_error", "{model} is down (simulated fault)"),
    "rate_limited": ("rate_limit_exceeded", "requests", "rate limit reached for {model} (simulated)"),
    "timeout": ("timeout", "server_error", "{model} timed out (simulated)"),
    "error": ("server_error", "server_error", "{model} failed (simulated {status})"),
}
_FILLER = "the pipeline routes each request through checks so this simulated answer only fills its budget"
_ORGS = ("Halvorsen Institute", "Marrow & Pike", "the Ostrava Bureau", "Keldane Labs", "the Tiber Council")
_THINGS = ("revenue", "patient outcomes", "median latency", "crop yield", "user retention")


@dataclass
class ModelProfile:
    """Per-model overrides of the global defaults; ``None`` inherits the global value."""

    latency_ms: float | None = None
    latency_jitter_ms: float | None = None
    tokens_per_reply: int | None = None
    error_rate: float | None = None
    timeout_rate: float | None = None
    malformed_rate: float | None = None
    token_ms: float | None = None


@dataclass
class SimulatorConfig:
    """Global defaults, the simulated models (name -> overrides) and the seed for reproducible runs."""

    latency_ms: float = 200.0
    latency_jitter_ms: float = 100.0
    tokens_per_reply: int = 64
    error_rate: float = 0.0
    timeout_rate: float = 0.0
    malformed_rate: float = 0.0
    token_ms: float = 0.0  # delay between two tokens; latency_ms is the delay to the first
    timeout_s: float = 600.0
    seed: int | None = None
    models: dict[str, ModelProfile] = field(
        default_factory=lambda: {m: ModelProfile() for m in DEFAULT_MODELS}
    )

    @classmethod
    def from_settings(cls, settings: Settings) -> SimulatorConfig:
        names: tuple[str, ...] = ("latency_ms", "latency_jitter_ms", "error_rate", "timeout_rate")
        names += ("malformed_rate", "seed", "token_ms")
        return cls(**{name: getattr(settings, f"simulator_{name}") for name in names})

    def resolve(self, model: str) -> SimulatorConfig:
        """The config as one model sees it: its profile's overrides applied over the global defaults."""
        profile = self.models[model]
        overrides = {f.name: getattr(profile, f.name) for f in fields(ModelProfile)}
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


@validated_dataclass(frozen=True, config=ConfigDict(extra="forbid", strict=True))
class Fault:
    """A fault switched on at run time for one model (or ``"*"``); params a mode doesn't use are ignored."""

    mode: FaultMode = "none"
    rate: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    factor: Annotated[float, Field(ge=0.0)] = 10.0
    retry_after: Annotated[float, Field(ge=0.0)] = 1.0
    close: bool = False
    kind: MalformedKind = "any"
    content: str | None = None

    @property
    def effective_rate(self) -> float:
        return self.rate if self.rate is not None else 0.5 if self.mode == "flaky" else 1.0


@dataclass
class ModelStats:
    """Counters per model; ``errors`` counts 5xx replies (down included), the others their own outcome."""

    calls: int = 0
    ok: int = 0
    errors: int = 0
    rate_limited: int = 0
    timeouts: int = 0
    malformed: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0

    def clear(self) -> None:
        """Zeroes the counters but keeps in_flight, which calls still running will decrement."""
        for f in fields(self):
            setattr(self, f.name, self.in_flight if f.name.endswith("in_flight") else 0)


@dataclass(frozen=True)
class Plan:
    """What one call will do, decided up front so a seed fixes the whole sequence of outcomes."""

    outcome: Outcome
    latency_s: float = 0.0
    status: int = 200
    hallucinate: bool = False
    malformed_kind: MalformedKind = "invalid_json"


def plan_call(profile: SimulatorConfig, fault: Fault, rng: random.Random, json_mode: bool = False) -> Plan:
    """Chooses a call's outcome and latency from a resolved profile, the active fault and the model's rng."""
    if fault.mode == "down":
        return Plan("down", status=503)
    if fault.mode == "rate_limited" and rng.random() < fault.effective_rate:
        return Plan("rate_limited", status=429)
    jitter = profile.latency_jitter_ms
    latency_ms = max(0.0, profile.latency_ms + rng.uniform(-jitter, jitter))
    latency_s = latency_ms * (fault.factor if fault.mode == "slow" else 1.0) / 1000.0
    timeout_rate = fault.effective_rate if fault.mode == "timeout" else profile.timeout_rate
    error_rate = fault.effective_rate if fault.mode == "flaky" else profile.error_rate
    malformed_rate = fault.effective_rate if fault.mode == "malformed" else profile.malformed_rate
    roll = rng.random()
    hallucinate = fault.mode == "hallucinate" and rng.random() < fault.effective_rate
    if roll < timeout_rate:
        return Plan("timeout", latency_s, status=504)
    if roll < timeout_rate + error_rate:
        return Plan("error", latency_s, status=rng.choice((500, 503)))
    if roll < timeout_rate + error_rate + malformed_rate:
        kinds = _BROKEN_KINDS[: 2 + json_mode]  # bad_content only shows when JSON content was asked for
        kind = fault.kind if fault.mode == "malformed" and fault.kind != "any" else rng.choice(kinds)
        return Plan("malformed", latency_s, hallucinate=hallucinate, malformed_kind=kind)
    return Plan("ok", latency_s, hallucinate=hallucinate)


def count_tokens(text: str) -> int:
    """Cheap stand-in for a tokenizer: one token per 4 characters, rounded up."""
    return math.ceil(len(text) / 4)


def message_text(message: dict[str, Any]) -> str:
    """The text of a message, whether ``content`` is a string or a list of OpenAI content parts."""
    content = message.get("content")
    if isinstance(content, list):
        return " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return content if isinstance(content, str) else ""


def wants_json(body: dict[str, Any]) -> bool:
    fmt = body.get("response_format") or {}
    return isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")


def invent_facts(prompt: str, rng: random.Random) -> str:
    """Confident claims with numbers that occur nowhere in the prompt, for grounding checks to catch."""
    numbers: list[str] = []
    tries = 0
    while len(numbers) < 3:
        tries += 1  # the range widens with the tries, so no finite prompt can hold every candidate
        number = str(rng.randint(1000, 9999 * 10 ** (tries // 20)))
        if number not in prompt and number not in numbers:
            numbers.append(number)
    org, thing = rng.choice(_ORGS), rng.choice(_THINGS)
    return f"According to the {numbers[0]} report by {org}, {thing} rose {numbers[1]}% at {numbers[2]} sites."


def generate_text(model: str, messages: Messages, tokens: int, hallucinate: bool = False) -> str:
    """A reply of exactly ``tokens`` tokens (4 characters each), deterministic in (model, messages)."""
    texts = [message_text(m) for m in messages]
    rng = random.Random(hashlib.sha256(orjson.dumps([model, texts])).digest())
    parts = [f"[simulated {model}]"]
    if hallucinate:
        parts.append(invent_facts(" ".join(texts), rng))
    users = [m for m in messages if m.get("role") in ("user", "tool")]  # else the last of any role
    parts += ["Reply to:", *message_text((users or messages)[-1]).split()[:8], "..."]
    filler, length = _FILLER.split(), len(" ".join(parts))
    while length < 4 * tokens:
        parts.append(rng.choice(filler))
        length += 1 + len(parts[-1])
    text = " ".join(parts)[: 4 * tokens]
    space = text.rfind(" ")  # end on a whole word when that still leaves more than tokens - 1 tokens
    return text[:space] if space > 4 * (tokens - 1) else text


def generate_json(model: str, messages: Messages, tokens: int, hallucinate: bool = False) -> str:
    """JSON-mode content: always a valid object; its size tracks ``tokens`` only approximately."""
    overhead = count_tokens(orjson.dumps({"answer": "", "model": model}).decode())
    answer = generate_text(model, messages, max(1, tokens - overhead), hallucinate)
    return orjson.dumps({"answer": answer, "model": model}).decode()


def build_reply(model: str, body: dict[str, Any], tokens: int, wild: bool = False) -> dict[str, Any]:
    """The ``chat.completion`` answering a valid request ``body`` (``wild``: with hallucinated facts)."""
    messages: Messages = body["messages"]
    completion = min(tokens, body.get("max_tokens", body.get("max_completion_tokens")) or tokens)
    finish = "length" if completion < tokens else "stop"
    message: dict[str, Any]
    if simulator_stream.wants_tool_call(body):
        users = [m for m in messages if m.get("role") == "user"] or messages
        calls = simulator_stream.tool_calls(body, message_text(users[-1]).split())
        message = {"role": "assistant", "content": None, "tool_calls": calls}
        completion, finish = count_tokens(calls[0]["function"]["arguments"]), "tool_calls"
    else:
        content = (generate_json if wants_json(body) else generate_text)(model, messages, completion, wild)
        message = {"role": "assistant", "content": content}
    prompt = sum(max(1, count_tokens(message_text(m))) for m in messages)
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    return {
        "id": f"simcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": usage,
    }


def malformed_body(reply: dict[str, Any], kind: MalformedKind) -> bytes:
    """A 200 body a client must reject: cut-off JSON, JSON without ``choices``, or content cut mid-JSON."""
    if kind == "missing_choices":
        return orjson.dumps({k: v for k, v in reply.items() if k != "choices"})
    if kind == "bad_content":
        message = reply["choices"][0]["message"]
        whole = orjson.dumps({"answer": message["content"]})
        message["content"] = whole[: len(whole) // 2].decode(errors="ignore")  # a strict prefix never parses
        return orjson.dumps(reply)
    whole = orjson.dumps(reply)
    return whole[: len(whole) // 2]


def _request_problem(body: Any) -> str | None:
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return "the body must be a JSON object with a string 'model'"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        return "'messages' must be a non-empty array of message objects"
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if max_tokens is not None and (type(max_tokens) is not int or max_tokens < 1):
        return "'max_tokens' must be a positive integer"
    return None


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


def _error(status: int, message: str, code: str, kind: str = "invalid_request_error") -> web.Response:
    return _json({"error": {"message": message, "type": kind, "param": None, "code": code}}, status)


class Simulator:
    """Run-time state behind the app: config, active faults, counters and per-model random sources."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.faults: dict[str, Fault] = {}
        self.stats = {name: ModelStats() for name in config.models}
        self.closing = asyncio.Event()
        self.rngs: dict[str, random.Random] = {}
        self.reset()

    def reset(self) -> None:
        """Clears faults and counters and restarts the random sequences, as if freshly started."""
        self.faults.clear()
        for stats in self.stats.values():
            stats.clear()
        seed = self.config.seed
        self.rngs = {m: random.Random(None if seed is None else f"{seed}:{m}") for m in self.config.models}

    def fault_for(self, model: str) -> Fault:
        return self.faults.get(model) or self.faults.get("*") or Fault()

    async def on_shutdown(self, _app: web.Application) -> None:
        self.closing.set()  # releases hung calls so shutdown never waits out timeout_s

    async def chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _error(400, "the request body is not valid JSON", "invalid_request")
        problem = _request_problem(body)
        if problem is not None:
            return _error(400, problem, "invalid_request")
        model: str = body["model"]
        if model not in self.config.models:
            return _error(404, f"The model '{model}' does not exist (simulator)", "model_not_found")
        return await self._counted(request, body, model, anthropic=False)

    async def messages(self, request: web.Request) -> web.StreamResponse:
        """Anthropic's messages API over the same models and faults (simulator_anthropic)."""
        problem = simulator_anthropic.header_problem(request)
        if problem is not None:
            return problem
        try:
            raw = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return simulator_anthropic.error(400, "the request body is not valid JSON")
        body = simulator_anthropic.to_chat_body(raw)
        if isinstance(body, str):
            return simulator_anthropic.error(400, body)
        if body["model"] not in self.config.models:
            return simulator_anthropic.error(404, f"model: {body['model']} (not simulated)")
        return await self._counted(request, body, body["model"], anthropic=True)

    async def _counted(
        self, request: web.Request, body: dict[str, Any], model: str, *, anthropic: bool
    ) -> web.StreamResponse:
        stats = self.stats[model]
        stats.calls += 1
        stats.in_flight += 1
        stats.peak_in_flight = max(stats.peak_in_flight, stats.in_flight)
        try:
            return await self._answer(request, body, model, stats, anthropic)
        finally:
            stats.in_flight -= 1

    async def _answer(
        self, request: web.Request, body: dict[str, Any], model: str, stats: ModelStats, anthropic: bool
    ) -> web.StreamResponse:
        fault, profile = self.fault_for(model), self.config.resolve(model)
        plan = plan_call(profile, fault, self.rngs[model], wants_json(body))
        counter = _COUNTERS.get(plan.outcome, plan.outcome)
        setattr(stats, counter, getattr(stats, counter) + 1)
        if plan.outcome == "down" and fault.close and request.transport is not None:
            request.transport.close()  # the client sees a dropped connection, not an HTTP reply
        await asyncio.sleep(plan.latency_s)
        if plan.outcome == "timeout":
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.timeout_s):
                    await self.closing.wait()
        if plan.outcome in _FAILURES:
            code, kind, message = _FAILURES[plan.outcome]
            text = message.format(model=model, status=plan.status)
            failure = (
                simulator_anthropic.error(plan.status, text)
                if anthropic
                else _error(plan.status, text, code, kind)
            )
            if plan.outcome == "rate_limited":
                failure.headers["Retry-After"] = str(math.ceil(fault.retry_after))
                failure.headers["retry-after-ms"] = str(round(fault.retry_after * 1000))
            return failure
        reply = build_reply(model, body, profile.tokens_per_reply, plan.hallucinate)
        message = reply["choices"][0]["message"]
        if fault.mode == "scripted" and fault.content is not None:
            message["content"] = fault.content
        token_s = profile.token_ms / 1000
        if plan.outcome == "malformed" or body.get("stream") is not True:  # all tokens, then the body
            await asyncio.sleep(token_s * max(0, reply["usage"]["completion_tokens"] - 1))
        if anthropic:
            answer = simulator_anthropic.to_message(reply)
            if plan.outcome == "malformed":
                return web.Response(
                    body=simulator_anthropic.malformed(answer, plan.malformed_kind),
                    content_type="application/json",
                )
            if body.get("stream") is True:
                return await _paced(request, simulator_stream.anthropic_events(answer), token_s, b"")
            return _json(answer)
        broken = malformed_body(reply, plan.malformed_kind) if plan.outcome == "malformed" else None
        if body.get("stream") is True:
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            if broken:
                return await _paced(request, [b"data: " + broken], 0.0, b"data: [DONE]")
            events = [b"data: " + e for e in stream_chunks(reply, include_usage)]
            return await _paced(request, events, token_s, b"data: [DONE]")
        return web.Response(body=broken or orjson.dumps(reply), content_type="application/json")

    async def list_models(self, _request: web.Request) -> web.Response:
        card = {"object": "model", "created": 0, "owned_by": "sluice-simulator"}
        return _json({"object": "list", "data": [{"id": m, **card} for m in self.config.models]})

    async def healthz(self, _request: web.Request) -> web.Response:
        return _json({"status": "ok", "simulator": True})

    async def admin_config(self, _request: web.Request) -> web.Response:
        faults = {m: asdict(f) for m, f in self.faults.items()}
        return _json({"config": asdict(self.config), "faults": faults})

    async def admin_faults(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _error(400, "the request body is not valid JSON", "invalid_request")
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return _error(400, "expected {'model': name or '*', 'mode': ..., ...params}", "invalid_request")
        model = body.pop("model")
        if model != "*" and model not in self.config.models:
            return _error(404, f"The model '{model}' does not exist", "model_not_found")
        try:
            fault = Fault(**body)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            return _error(400, f"invalid fault: {problems}", "invalid_request")
        if model == "*":
            self.faults.clear()  # "*" replaces every per-model fault
        self.faults[model] = fault
        return _json({"model": model, "fault": asdict(fault)})

    async def admin_reset(self, _request: web.Request) -> web.Response:
        self.reset()
        return _json({"reset": True})

    async def admin_stats(self, _request: web.Request) -> web.Response:
        models = {m: asdict(s) for m, s in self.stats.items()}
        total = {f.name: sum(s[f.name] for s in models.values()) for f in fields(ModelStats)}
        return _json({"models": models, "total": total})


stream_chunks = simulator_stream.openai_events  # the reply as OpenAI chunk payloads, one token each


async def _paced(request: web.Request, events: list[bytes], gap_s: float, last: bytes) -> web.StreamResponse:
    """Server-sent events written as they are due: the first at once (the call's latency was
    the first-token delay), each next one `gap_s` later, then `last` (OpenAI's [DONE])."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    for number, event in enumerate(events):
        if number and gap_s:
            await asyncio.sleep(gap_s)
        await response.write(event + b"\n\n")
    if last:
        await response.write(last + b"\n\n")
    await response.write_eof()
    return response


SIMULATOR_KEY = web.AppKey("simulator", Simulator)


def build_app(config: SimulatorConfig) -> web.Application:
    """The simulator as an aiohttp app; its state is at ``app[SIMULATOR_KEY]``."""
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app[SIMULATOR_KEY] = simulator = Simulator(config)
    app.on_shutdown.append(simulator.on_shutdown)
    app.router.add_post("/v1/chat/completions", simulator.chat)
    app.router.add_post("/v1/messages", simulator.messages)
    app.router.add_get("/v1/models", simulator.list_models)
    app.router.add_get("/healthz", simulator.healthz)
    app.router.add_get("/readyz", simulator.healthz)  # nothing to wait for: ready once it listens
    app.router.add_get("/metrics", metrics_handler)  # process metrics, like every Sluice process
    app.router.add_get("/admin/config", simulator.admin_config)
    app.router.add_post("/admin/faults", simulator.admin_faults)
    app.router.add_post("/admin/reset", simulator.admin_reset)
    app.router.add_get("/admin/stats", simulator.admin_stats)
    return app


@dataclass
class SimulatorServer:
    """A running simulator; ``url`` is the OpenAI base URL (ending in /v1) to hand to clients."""

    runner: web.AppRunner
    host: str
    port: int
    simulator: Simulator

    @property
    def url(self) -> str:
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}/v1"

    async def close(self) -> None:
        self.simulator.closing.set()
        await self.runner.cleanup()

    async def drain(self, timeout_s: float) -> None:
        """SIGTERM: stop listening, let calls in flight finish (up to `timeout_s`), then close."""
        for site in list(self.runner.sites):
            await site.stop()
        deadline = asyncio.get_running_loop().time() + timeout_s
        while any(s.in_flight for s in self.simulator.stats.values()):
            if asyncio.get_running_loop().time() >= deadline:
                break
            await asyncio.sleep(0.02)
        await self.close()


async def serve(config: SimulatorConfig, host: str = "127.0.0.1", port: int = 0) -> SimulatorServer:
    """Starts the simulator in the running loop (port 0 picks a free port) and returns once it listens."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # thousands of connections need as many fds
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (65536 if hard == resource.RLIM_INFINITY else hard, hard))
    app = build_app(config)
    # handler_cancellation: a client that gives up frees its slot at once; no access log at thousands of rps.
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, backlog=4096).start()
    except BaseException:
        await runner.cleanup()
        raise
    return SimulatorServer(runner, host, int(runner.addresses[0][1]), app[SIMULATOR_KEY])


def run(settings: Settings) -> None:
    """Blocking entry point of ``sluice simulator``: serves until SIGINT or SIGTERM, then stops cleanly."""

    async def serve_until_signal() -> None:
        server = await serve(
            SimulatorConfig.from_settings(settings), settings.simulator_host, settings.simulator_port
        )
        models = ", ".join(server.simulator.config.models)
        print(f"sluice simulator serving {server.url} (simulated models: {models})", flush=True)
        stop, loop, signals = asyncio.Event(), asyncio.get_running_loop(), (signal.SIGINT, signal.SIGTERM)
        for sig in signals:
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
            await server.drain(settings.drain_timeout_s)

    asyncio.run(serve_until_signal())
