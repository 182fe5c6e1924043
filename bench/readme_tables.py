"""The README's benchmark tables, generated from the result files in bench/results/.

    .venv/bin/python bench/readme_tables.py          # rewrite the tables in README.md
    .venv/bin/python bench/readme_tables.py --check  # exit 1 if README.md is out of date

Each table sits between `<!-- table: NAME -->` and `<!-- end: NAME -->` in README.md; everything
in between is replaced. A test runs --check, so a number in those tables is never typed by hand.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
README = ROOT / "README.md"


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _ms(value: object) -> str:
    return f"{float(value):.0f}" if isinstance(value, int | float) else "-"


def _get(data: Any, *keys: str | int) -> Any:
    for key in keys:
        if isinstance(data, dict) and isinstance(key, str):
            data = data.get(key)
        elif isinstance(data, list) and isinstance(key, int) and -len(data) <= key < len(data):
            data = data[key]
        else:
            return None
    return data


# --- the side-by-side table ---------------------------------------------------------------------

SYSTEMS = (
    ("litellm", "LiteLLM proxy, 2 workers"),
    ("sluice_http", "Sluice HTTP"),
    ("sluice_kafka", "Sluice Kafka client"),
)


def side_by_side() -> str:
    data = _load("side_by_side")
    if data is None:
        return "No result yet: run `bench/side_by_side.py`."
    header = (
        "| offered req/s | " + " | ".join(f"{label}: goodput / p50 / p99 ms" for _, label in SYSTEMS) + " |"
    )
    lines = [header, "|---" * (len(SYSTEMS) + 1) + "|"]
    for row in data["by_rate"]:
        cells = []
        for key, _ in SYSTEMS:
            step = row.get(key)
            if step is None:
                cells.append("stopped (missed the rate below)")
                continue
            latency = step["latency_ms"]
            errors = sum(step["errors"].values())
            mark = "" if step["sustained"] else " (not sustained)"
            error_note = f", {errors} errors" if errors else ""
            cells.append(
                f"{step['goodput_rps']:g} / {_ms(latency['p50'])} / {_ms(latency['p99'])}{error_note}{mark}"
            )
        lines.append(f"| {row['offered_rps']:g} | " + " | ".join(cells) + " |")
    best = data["sustained_goodput_rps"]
    ratio = data.get("ratio_sluice_http_to_litellm")
    machine = data["machine"]
    lines += [
        "",
        f"Sustained goodput (achieved >= 98% of offered, < 1% errors, p99 <= 1 s): LiteLLM "
        f"{best['litellm']:g} req/s, Sluice HTTP {best['sluice_http']:g} req/s "
        f"({ratio if ratio is not None else '-'}x), Sluice Kafka client {best['sluice_kafka']:g} req/s. "
        f"ClickHouse held {data.get('clickhouse_requests')} request rows for "
        f"{data.get('sluice_requests_sent')} requests sent to Sluice. Run {data['when']}, "
        f"{machine['cpus']} cores, load average {machine['loadavg_1_5_15_at_start']} at the start; "
        f"Sluice layout `{data['settings']['chain_breaks'] or 'one chain'}`.",
    ]
    top = _top_sustained(data["by_rate"])
    if top is not None:
        rate, cpu = top
        parts = ", ".join(f"{name} {ms:g}" for name, ms in cpu.items())
        lines += ["", f"CPU per successful request through Sluice HTTP at {rate:g} req/s (ms): {parts}."]
    return "\n".join(lines)


def _top_sustained(by_rate: list[dict[str, Any]]) -> tuple[float, dict[str, float]] | None:
    found = [row for row in by_rate if _get(row, "sluice_http", "sustained")]
    if not found:
        return None
    return found[-1]["offered_rps"], found[-1]["sluice_http"]["cpu_ms_per_ok"]


# --- one line per benchmark ---------------------------------------------------------------------


def _pipeline(data: dict[str, Any]) -> str:
    parts = []
    for case in data["cases"]:
        sustained = case["sustained"]
        goodput = sustained.get("goodput_rps")
        if goodput is None:  # results from before goodput was reported: count ok answers
            goodput = round(sustained["statuses"].get("ok", 0) / sustained["duration_s"], 1)
        parts.append(
            f"{case['model_latency_ms']:g} ms model: goodput {goodput:g} req/s at {data['offered_rate']:g} "
            f"offered; p99 overhead at 100 req/s {_ms(_get(case, 'at_100_rps', 'overhead_ms', 'p99'))} ms"
        )
    return "; ".join(parts)


def _worker_cpu(data: dict[str, Any]) -> str:
    per = data["cpu_ms_per_request_by_process"]
    parts = ", ".join(f"{name} {ms:g} ms" for name, ms in per.items())
    return f"at {data['rate']:g} req/s, CPU per request: {parts}"


def _front_door(data: dict[str, Any]) -> str:
    rows = []
    for case in data["by_rate"]:
        kafka, http = case["kafka_client_ms"], case["http_gateway_ms"]
        rows.append(
            f"at {case['rate']:g} req/s: Kafka client p50 {_ms(kafka['p50'])} ms, "
            f"HTTP p50 {_ms(http['p50'])} ms, "
            f"p99 {_ms(kafka['p99'])} / {_ms(http['p99'])} ms"
        )
    return "; ".join(rows)


def _faust_floor(data: dict[str, Any]) -> str:
    floor = data["sluice_request_floor"]
    return (
        f"{_get(data, 'runs', 0, 'worker_cpu_us_per_hop')} us of CPU per bare hop; "
        f"{floor['hops']} hops cap one core at ~{floor['max_rps_one_core']:g} req/s"
    )


def _faust_chain(data: dict[str, Any]) -> str:
    rows = []
    for run in data["runs"]:
        latency = run["end_to_end_ms"]
        rows.append(
            f"{run['offered_rps']:g} req/s: p50 {_ms(latency.get('p50'))} / p99 {_ms(latency.get('p99'))} ms"
        )
    return "; ".join(rows)


def _broker_fetch(data: dict[str, Any]) -> str:
    rows = []
    for run in data["runs"]:
        latency = run["hop_latency_ms"]
        rows.append(
            f"wait {run['fetch_wait_ms']} ms ({run['topics_fetched']} topics): "
            f"hop p50 {latency.get('p50')} ms, "
            f"broker {run['broker_cpu_share_of_a_core']:.0%} of a core"
        )
    return "; ".join(rows[:4])


def _broker_growth(data: dict[str, Any]) -> str:
    parts = []
    for partitions, phases in data["by_partitions"].items():
        first, last = phases[0], phases[-1]
        parts.append(
            f"{partitions} partitions: {first['broker_cpu_ms_per_record']:g} ms per record at "
            f"{first['stored_batches_per_partition_at_end']:,} stored batches per partition, "
            f"{last['broker_cpu_ms_per_record']:g} ms at {last['stored_batches_per_partition_at_end']:,}"
        )
    return "; ".join(parts)


def _resilience(data: dict[str, Any]) -> str:
    failover = data["failover"]
    return (
        f"{failover['ok']}/{failover['requests']} ok at {failover['rate']:g} req/s with the primary down; "
        f"breaker open {failover['breaker_open_after_fault_s']:.1f} s after the fault, closed "
        f"{failover['breaker_closed_after_recovery_s']:.1f} s after recovery; cache hit rate "
        f"{_get(data, 'cache', 'hit_rate')}"
    )


def _routing(data: dict[str, Any]) -> str:
    test = data["test"]
    return (
        f"held-out split: {test['cost']['cost_reduction']:.1%} cheaper than always "
        f"{test['cost']['largest_model']}; "
        f"{test['quality']['complex_to_capable_tier']:.1%} of complex prompts on a capable tier"
    )


def _fuzz(data: dict[str, Any]) -> str:
    http, kafka = data["http"], data["kafka"]
    return (
        f"{data['inputs']} inputs ({http['sent']} HTTP, {kafka['sent']} Kafka): "
        f"{data['process_crashes']} process crashes, {data['lost']} without exactly one answer; "
        f"Kafka: {kafka['answered']} answered, {kafka['dead_lettered']} dead-lettered"
    )


def _sink_priority(data: dict[str, Any]) -> str:
    rate, pairs = data["settings"]["rate_rps"], data["settings"]["pairs"]
    parts = [
        f"{name}: p50 {summary['p50_ms_median']} / p99 {summary['p99_ms_median']} ms "
        f"({summary['ok']}/{summary['sent']} answered)"
        for name, summary in data["summary"].items()
    ]
    return f"{rate:g} req/s over HTTP, medians of {pairs} alternating runs each: " + "; ".join(parts)


def _sink_profile(data: dict[str, Any]) -> str:
    engine = data["engine_median"]
    sizes = sorted({int(key.split("@")[1]) for key in engine})
    parts = [
        f"{engine[f'all@{size}']['cpu_us_per_record']} µs at {size:,} records per insert"
        for size in sizes
        if f"all@{size}" in engine
    ]
    return (
        f"CPU per record: schema check {data['check_us_per_record']} µs; engine with every view on "
        + ", ".join(parts)
        + f" (medians of {data['settings']['rounds']} rounds; split by view in the analytics section)"
    )


def _model_transport(data: dict[str, Any]) -> str:
    by_flight = data["cpu_ms_per_call_median"]
    parts = [
        f"{flight} in flight: {row['httpx_ms']:.2f} ms with httpx's own transport, "
        f"{row['pooled_ms']:.2f} ms through aiohttp's pool"
        for flight, row in by_flight.items()
    ]
    text = f"CPU per model call (medians of {data['settings']['rounds']} rounds): " + "; ".join(parts)
    ab = _load("model_transport_ab")
    if ab is not None:  # Sluice end to end, runs alternating between the two transports
        cells = []
        for name, run in ab["runs"].items():
            for row in run["by_rate"]:
                http = row["sluice_http"]
                cells.append(
                    (
                        row["offered_rps"],
                        name.split("_")[0],
                        http["cpu_ms_per_ok"]["worker"],
                        http["sustained"],
                    )
                )
        for rate in sorted({cell[0] for cell in cells}):
            pooled = [f"{c[2]}" for c in cells if c[0] == rate and c[1] == "pooled"]
            own = [f"{c[2]}" for c in cells if c[0] == rate and c[1] == "httpx"]
            held = [c[3] for c in cells if c[0] == rate and c[1] == "pooled"]
            held_before = [c[3] for c in cells if c[0] == rate and c[1] == "httpx"]
            text += (
                f"; end to end at {rate:g} req/s, worker CPU per answer {' and '.join(pooled)} ms "
                f"(sustained in {sum(held)} of {len(held)} runs) against {' and '.join(own)} ms "
                f"with httpx's own transport (sustained in {sum(held_before)} of {len(held_before)})"
            )
    return text


def _stack_floor(data: dict[str, Any]) -> str:
    best, ratio = data["sustained_goodput_rps"], data["ratio_to_litellm"]
    text = (
        f"sustained goodput: LiteLLM {best['litellm']:g} req/s, the floor pipeline {best['floor']:g} "
        f"({ratio['floor']}x), Sluice HTTP {best['sluice_http']:g} ({ratio['sluice_http']}x)"
    )
    sluice_top = [row for row in data["by_rate"] if _get(row, "sluice_http", "sustained")]
    floor_top = [row for row in data["by_rate"] if _get(row, "floor", "sustained")]
    shown = [(sluice_top[-1], "sluice_http", "Sluice")] if sluice_top else []
    if sluice_top and "floor" in sluice_top[-1]:
        shown.append((sluice_top[-1], "floor", "the floor"))  # the same rate, side by side
    if floor_top:
        shown.append((floor_top[-1], "floor", "the floor"))
    for row, system, label in shown:
        parts = ", ".join(f"{name} {ms:g}" for name, ms in row[system]["cpu_ms_per_ok"].items())
        text += f"; CPU per answer of {label} at {row['offered_rps']:g} req/s (ms): {parts}"
    return text


def _consumer_loop(data: dict[str, Any]) -> str:
    parts = []
    for rate in data["settings"]["rates"]:
        for mode, label in (("in_loop", "on the worker's loop"), ("thread", "in Faust's thread")):
            steps = [s for s in data["steps"] if s["rate"] == rate and s["mode"] == mode]
            if not steps:
                continue
            worker = " and ".join(f"{s['cpu_ms_per_ok']['worker']:g}" for s in steps)
            latency = " and ".join(
                f"{_ms(s['latency_ms']['p50'])}/{_ms(s['latency_ms']['p99'])}" for s in steps
            )
            held = sum(1 for s in steps if s["sustained"])
            parts.append(
                f"{rate:g} req/s {label}: worker CPU {worker} ms per answer, p50/p99 {latency} ms, "
                f"sustained in {held} of {len(steps)}"
            )
    return "; ".join(parts)


def _stage_cpu(data: dict[str, Any]) -> str:
    parts = ", ".join(f"{part} {us:g}" for part, us in data["per_request_us"].items())
    return f"{data['total_us']['median']:g} µs of CPU per request in all ({parts})"


def _compiled_stages(data: dict[str, Any]) -> str:
    summary, tests = data["summary"], data["tests"]
    parts = ", ".join(
        f"{part} {numbers['plain_us']:g} to {numbers['compiled_us']:g}"
        for part, numbers in summary["parts"].items()
    )
    return (
        f"{len(data['settings']['modules_compiled'])} modules compiled: {summary['total_us_plain']:g} to "
        f"{summary['total_us_compiled']:g} µs per request ({summary['change_pct']:+g}%; {parts}); "
        f"{tests['failed']} of {tests['passed'] + tests['failed']} unit tests of those modules fail compiled"
    )


# The held-out injection corpora, each with the channel its attacks come through.
HELD_OUT_CHANNELS = (("spikee", "direct"), ("agentdojo", "indirect"), ("raginject", "indirect"))


def _packaged_detectors(data: dict[str, Any]) -> str:
    parts = []
    for name, package in data["packages"].items():
        cells = []
        for corpus, channel in HELD_OUT_CHANNELS:
            m = _get(package, "corpora", corpus, channel) or {}
            cells.append(f"{corpus} {_cell(m.get('recall'))} / {_cell(m.get('fpr'))}")
        p99 = _get(package, "latency_ms", "p99")
        cells.append(f"2 KB prompt CPU p99 {p99:.1f} ms")
        parts.append(f"{name} {package.get('version', '')}: " + ", ".join(cells))
    return (
        "third-party detectors that ship their model or rules in a registry package, each at its own "
        "default, recall / FPR: " + "; ".join(parts) + f"; {len(data.get('skipped', {}))} packages skipped "
        "(their models are downloaded at run time)"
    )


def _stream_mode(run: dict[str, Any]) -> str:
    if run.get("stream_checks", "windowed") == "asynchronous":
        return "asynchronous (nothing held back)"
    window = run["stream_window_sentences"]
    return f"windowed, {window} sentence(s) held back" if window else "windowed, unfinished word held back"


def _streaming(data: dict[str, Any]) -> str:
    cfg = data["settings"]
    runs = "; ".join(
        f"{_stream_mode(run)}: first chunk p50 {_ms(run['first_chunk_ms']['p50'])} / "
        f"p99 {_ms(run['first_chunk_ms']['p99'])} ms, goodput {run['goodput_per_s']:g}/s, "
        f"streamed text = whole text {run['chunks_text_equals_whole_text']}"
        for run in data["runs"]
    )
    return (
        f"at {cfg['rate_per_s']:g} req/s, model {cfg['simulator_first_token_ms']:g} ms to the first token + "
        f"{cfg['simulator_token_ms']:g} ms per token (target: first chunk p50 <= "
        f"{cfg['target_first_chunk_p50_ms']:g} ms): {runs}; load average "
        f"{data['machine']['loadavg_1_5_15_at_start'][0]:g} at the start"
    )


def _sanitize(data: dict[str, Any]) -> str:
    test = data["injection"]["by_category"]["test"]
    latency = data["latency"]
    return (
        f"own test split: recall {test['direct']['recall']:.2f} direct, {test['obfuscated']['recall']:.2f} "
        f"obfuscated, {test['indirect']['recall']:.2f} indirect, false positives "
        f"{test['benign_hard']['false_positive_rate']:.2f}; PII recall {data['pii']['recall']:.3f}; "
        f"2 KB prompt CPU p99 {latency['p99_us'] / 1000:.2f} ms; "
        'public corpora: see "Detectors on public data"'
    )


def _hallucination(data: dict[str, Any]) -> str:
    test = data["test"]["overall"]
    return (
        f"own test split ({test['n']} answers): accuracy {test['accuracy']:.3f}, AUC {test['auc']:.3f}; "
        f"1 KB answer CPU p99 {data['latency']['cpu_p99_ms']:.1f} ms; public corpora: see "
        f'"Detectors on public data"'
    )


def _embed_detectors(data: dict[str, Any]) -> str:
    inj = data["injection"]["heldout"]
    fib = data["grounding"]["heldout"]["grounding_fib"]
    cells = ", ".join(
        f"{corpus} {channel} {inj[f'injection_{corpus}']['minilm'][channel]['recall']:.2f} / "
        f"{inj[f'injection_{corpus}']['minilm'][channel]['false_positive_rate']:.2f}"
        for corpus, channel in HELD_OUT_CHANNELS
    )
    lat = data["latency"]
    return (
        f"experiment, not shipped: MiniLM + logistic regression, injection recall / FPR {cells}; "
        f"summarisation AUC (best embedding signal) xsum {fib['xsum']['emb min-sentence']['auc']:.2f}, "
        f"cnn_dm {fib['cnn_dm']['emb min-sentence']['auc']:.2f}; 2 KB prompt CPU p99 "
        f"{lat['minilm (full forward, numpy)']['p99_ms']:.0f} ms ({data['date']})"
    )


def _injection_loo(data: dict[str, Any]) -> str:
    cells = []
    for corpus, run in data["corpora"].items():
        for channel, detectors in run["channels"].items():
            both = detectors["rules + n-gram, leave-one-out"]
            if channel != "all" and both.get("recall") is not None:
                cells.append(
                    f"{corpus.removeprefix('injection_')} {channel} {both['recall']:.2f} / "
                    f"{both['false_positive_rate']:.2f}"
                )
    return (
        "rules + n-gram model, each corpus scored by a model fitted and thresholded without it, "
        f'recall / FPR: {", ".join(cells)} ({data["date"][:10]}); see "Detectors on public data"'
    )


def _injection_mil(data: dict[str, Any]) -> str:
    def cells(protocol: str, recipe: str) -> str:
        out = []
        for corpus, run in data["protocols"][protocol][recipe].items():
            for channel, detectors in run["channels"].items():
                stage = detectors.get("stage: rules + model") or {}
                if corpus != "injection_eval" and channel != "all" and stage.get("recall") is not None:
                    out.append(
                        f"{corpus.removeprefix('injection_')} {channel} {stage['recall']:.2f} / "
                        f"{stage['false_positive_rate']:.2f}"
                    )
        return ", ".join(out)

    shipped = next(p for p in data["protocols"] if p.startswith("shipped file") and "noisy-OR" not in p)
    best = "window 256, mil, augmented, random folds"
    return (
        "rules + n-gram model in the stage, recall / FPR on public corpora the model never saw: shipped "
        f"file {cells(shipped, 'window 1024, random folds (shipped recipe)')}; candidate recipe ({best}) "
        f"{cells('training corpora only', best)}, not shipped ({data['date'][:10]}); see "
        '"Detectors on public data"'
    )


def _grounding_pairs(data: dict[str, Any]) -> str:
    fib, qa = data["public_corpora"]["grounding_fib"], data["public_corpora"]["grounding_cpkc"]["qa"]
    signal = "pairs (present words)"
    return (
        f"experiment, not shipped: does a claim's pair of words share a context sentence; AUC xsum "
        f"{fib['xsum'][signal]['auc']:.2f}, cnn_dm {fib['cnn_dm'][signal]['auc']:.2f}, QA "
        f"{qa[signal]['auc']:.2f} (counting absent words too: {fib['xsum']['pairs (all words)']['auc']:.2f}"
        f" / {fib['cnn_dm']['pairs (all words)']['auc']:.2f} / {qa['pairs (all words)']['auc']:.2f}); "
        f"nothing fitted ({data['date'][:10]})"
    )


def _analytics(data: dict[str, Any]) -> str:
    size = max((key for key in data["runs"] if key.isdigit()), key=int)  # the 7-day runs
    run = data["runs"][size]
    slowest = {
        window: max(q["median_s"] for name, q in run["queries"].items() if name.endswith(f"@{window}"))
        for window in ("1h", "7d")
    }
    return (
        f"{int(size):,} requests: slowest named query {slowest['1h'] * 1000:.0f} ms at 1 hour, "
        f"{slowest['7d'] * 1000:.0f} ms at 7 days; web dashboard {run['web_dashboard']['7d_median_s']:.2f} s "
        f"for 7 days; insert {run['load']['insert_rows_per_s']:,} rows/s with every view on"
        + (
            f" through the sink's path (peak memory of the bench process {run['peak_rss_mb']:,} MB,"
            f" {run['load'].get('generated_mb_held', 0):,} MB of it generated records)"
            if "insert_records_per_s" in run["load"]
            else " (typed column insert)"
        )
    )


SUMMARIES: dict[str, tuple[str, Callable[[dict[str, Any]], str]]] = {
    "analytics": ("dashboard queries and inserts at production volume", _analytics),
    "sanitize": ("prompt-injection and PII detection on labelled prompts; latency", _sanitize),
    "hallucination": ("groundedness scoring on labelled answers; latency", _hallucination),
    "injection_loo": (
        "prompt-injection n-gram model, leave one public corpus out (fit and threshold without it)",
        _injection_loo,
    ),
    "injection_mil": (
        "prompt-injection model training recipes (window size, which window is the attack), held out",
        _injection_mil,
    ),
    "grounding_pairs": (
        "claim-level alignment signals for groundedness on the held-out corpora",
        _grounding_pairs,
    ),
    "packaged_detectors": (
        "prompt-injection detectors shipped in registry packages, on the held-out corpora",
        _packaged_detectors,
    ),
    "embed_detectors": (
        "a sentence-embedding model (all-MiniLM-L6-v2) + light classifier on the held-out corpora",
        _embed_detectors,
    ),
    "sizing": ("the inputs of the sizing guide", lambda _data: "see `docs/scaling.md`, generated from it"),
    "pipeline": ("goodput of one worker (Kafka client path) and overhead over the model call", _pipeline),
    "worker_cpu": ("CPU per request of each process, optional py-spy profile", _worker_cpu),
    "front_door": ("HTTP front door latency over the Kafka client path", _front_door),
    "faust_floor": ("CPU of one bare Faust hop (no Sluice code)", _faust_floor),
    "faust_chain": (
        "five bare Faust hops along the stage topics (the old topology, no Sluice code)",
        _faust_chain,
    ),
    "broker_fetch": ("one hop's latency and the embedded broker's CPU against the fetch wait", _broker_fetch),
    "broker_growth": (
        "the embedded broker's CPU per record as its stored batches grow (it never deletes any)",
        _broker_growth,
    ),
    "resilience": ("failover with the primary model down mid-load; cache hit rate", _resilience),
    "routing": ("`model: auto` cost and quality on labelled prompts", _routing),
    "streaming": (
        "time to the first streamed chunk through the HTTP gateway (OpenAI SSE), open loop",
        _streaming,
    ),
    "fuzz": ("random and mutated inputs through the HTTP front door and onto sluice.requests", _fuzz),
    "sink_priority": (
        "the answers' latency with the ClickHouse sink's batch interval and CPU priority, A/B",
        _sink_priority,
    ),
    "sink_profile": (
        "where the sink's CPU goes per record: the schema check and the engine, by view",
        _sink_profile,
    ),
    "model_transport": (
        "the worker's CPU per model call by HTTP transport, and Sluice end to end with each",
        _model_transport,
    ),
    "consumer_loop": (
        "Sluice end to end with the worker's Kafka consumer on its own loop or in Faust's thread, A/B",
        _consumer_loop,
    ),
    "stack_floor": (
        "the least this stack spends per answer: the same parts carrying requests with no checks, "
        "beside the LiteLLM proxy and Sluice in one run",
        _stack_floor,
    ),
    "stage_cpu": (
        "the CPU per request of the stages' own work (validate to validate_response, encoding the "
        "response and events), with no Kafka, Faust or HTTP",
        _stage_cpu,
    ),
    "compiled_stages": (
        "the same stages' CPU per request with their modules compiled by mypyc, alternating with "
        "the plain modules",
        _compiled_stages,
    ),
}


def benchmarks() -> str:
    lines = ["| bench | measures | last result |", "|---|---|---|"]
    lines.append(
        "| `bench/side_by_side.py` | Sluice (HTTP and Kafka client) beside the LiteLLM proxy on one mock "
        "upstream, one run | see the table below |"
    )
    for name, (measures, summarise) in SUMMARIES.items():
        data = _load(name)
        if data is None:
            continue
        try:
            result = summarise(data)
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            result = f"see `bench/results/{name}.json` (not summarised: {type(exc).__name__})"
        when = data.get("when")
        lines.append(f"| `bench/{name}.py` | {measures} | {result}{f' ({when[:10]})' if when else ''} |")
    others = sorted(
        path.stem
        for path in RESULTS.glob("*.json")
        if path.stem not in SUMMARIES
        and not path.stem.startswith("side_by_side")
        and (ROOT / "bench" / f"{path.stem}.py").exists()
    )
    lines += [f"| `bench/{name}.py` | see its section | `bench/results/{name}.json` |" for name in others]
    return "\n".join(lines)


# --- detectors on public data -------------------------------------------------------------------


def _cell(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "-"


def heldout() -> str:
    """Per-corpus detector figures from the last bench/sanitize.py and bench/hallucination.py runs."""
    sanitize, halluc = _load("sanitize"), _load("hallucination")
    if sanitize is None or halluc is None:
        return "No result yet: run `bench/sanitize.py` and `bench/hallucination.py`."
    present = next(iter(sanitize["public_corpora"].values()))
    detectors = [d for d in ("rules (shipped)", "n-gram model", "either") if d in present]
    lines = [
        "| corpus | channel | attacks / benign | "
        + " | ".join(f"{d}: recall / FPR" for d in detectors)
        + " | shipped n-gram model trained on this corpus? |",
        "|---|---|---|" + "---|" * len(detectors) + "---|",
    ]
    for corpus, table in sanitize["public_corpora"].items():
        seen = "yes (training figure)" if table.get("trained_on_this_corpus") else "no"
        for channel in ("direct", "obfuscated", "indirect", "benign_hard"):
            cells = [table[d].get(channel) for d in detectors]
            if not cells[0]:
                continue
            counts = f"{cells[0].get('n_attack', 0)} / {cells[0].get('n_benign', 0)}"
            pairs = [f"{_cell(c.get('recall'))} / {_cell(c.get('false_positive_rate'))}" for c in cells if c]
            lines.append(f"| {corpus} | {channel} | {counts} | " + " | ".join(pairs) + f" | {seen} |")
    lines += [
        "",
        f"| held-out corpus | subset | n | lexical (shipped): AUC / accuracy at {halluc['threshold']} "
        "| learned model: AUC / accuracy |",
        "|---|---|---|---|---|",
    ]
    for corpus, table in halluc["public_corpora"].items():
        for subset, m in table.items():
            lex, learned = m["lexical (shipped)"], m["learned model"]
            lines.append(
                f"| {corpus} | {subset} | {m['n']} | {_cell(lex['auc'])} / {_cell(lex['accuracy'])} | "
                f"{_cell(learned['auc'])} / {_cell(learned['accuracy'])} |"
            )
    lat = sanitize["latency"]
    lines += [
        "",
        f"Latency (CPU time, p99): sanitize a 2 KB prompt {lat['p99_us'] / 1000:.2f} ms with the rules; "
        f"the n-gram model adds {sanitize['learned_model_latency']['p99_ms']:.2f} ms. Groundedness of a "
        f"~1 KB answer: lexical {halluc['latency']['cpu_p99_ms']:.2f} ms against 5.5 KB; learned model "
        f"(lexical score included) {halluc['learned_model_latency']['p99_ms']:.2f} ms against 4 KB.",
    ]
    return "\n".join(lines)


def injection_loo() -> str:
    """Leave-one-corpus-out figures of the n-gram recipe and its variants (bench/injection_loo.py)."""
    data = _load("injection_loo")
    if data is None:
        return "No result yet: run `bench/injection_loo.py`."
    names = ("rules (shipped default)", "n-gram, leave-one-out", "rules + n-gram, leave-one-out")
    lines = [
        "| recipe | held-out corpus | channel | attacks / benign | rules alone: recall / FPR "
        "| n-gram alone: recall / FPR (AUC) | rules + n-gram: recall / FPR "
        "| model fitted and threshold set on |",
        "|---|---|---|---|---|---|---|---|",
    ]
    variants = data.get("variants", {}).items()
    runs = [("1,024-character windows", data)]
    runs += [(f"{name.removeprefix('window ')}-character windows", run) for name, run in variants]
    for recipe, run_data in runs:
        for corpus, run in run_data["corpora"].items():
            public = [s.removeprefix("injection_") for s in run["trained_on"] if s.startswith("injection_")]
            sources = ["training corpora", *(s for s in public if "/" not in s)]
            for channel, cells in run["channels"].items():
                if channel == "all" and len(run["channels"]) == 2:
                    continue  # one channel only: "all" repeats it
                rules, model, both = (cells.get(n, {}) for n in names)
                counts = f"{rules.get('n_attack', 0)} / {rules.get('n_benign', 0)}"
                lines.append(
                    f"| {recipe} | "
                    f"{corpus} | {channel} | {counts} | {_cell(rules.get('recall'))} / "
                    f"{_cell(rules.get('false_positive_rate'))} | {_cell(model.get('recall'))} / "
                    f"{_cell(model.get('false_positive_rate'))} ({_cell(model.get('auc'))}) | "
                    f"{_cell(both.get('recall'))} / {_cell(both.get('false_positive_rate'))} | "
                    f"{' + '.join(sources)} ({run['training_rows']} rows) |"
                )
    lines.append("")
    for recipe, run_data in runs:
        lines.append(
            f"- {recipe}: {run_data['settings']['features']}; {run_data['settings']['fit']}; threshold at "
            f"{run_data['settings']['threshold']}. Run {run_data['date'][:10]}, load average "
            f"{run_data['load_average_before'][0]:.2f} at the start."
        )
    return "\n".join(lines)


def _corpus_name(corpus: str) -> str:
    return (
        "own regression set, test split" if corpus == "injection_eval" else corpus.removeprefix("injection_")
    )


def injection_mil() -> str:
    """The injection model's training recipes on public corpora they never saw (bench/injection_mil.py)."""
    data = _load("injection_mil")
    if data is None:
        return "No result yet: run `bench/injection_mil.py`."
    lines = [
        "| protocol | recipe | held-out corpus | channel | attacks / benign | model alone: recall / FPR "
        "(AUC) | rules alone | rules + model in the stage | rules or model |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for protocol, variants in data["protocols"].items():
        for recipe, corpora in variants.items():
            for corpus, run in corpora.items():
                for channel, cells in run["channels"].items():
                    if channel == "all" and len(run["channels"]) == 2:
                        continue  # one channel only: "all" repeats it
                    model, rules = cells["model"], cells["rules (shipped default)"]
                    stage = cells.get("stage: rules + model") or cells["stage: rules + model (noisy-OR)"]
                    combined = "" if "stage: rules + model" in cells else " (noisy-OR)"
                    either = cells["either: rules or model"]
                    lines.append(
                        f"| {protocol} | {recipe} | {_corpus_name(corpus)} | {channel} | "
                        f"{model.get('n_attack', 0)} / {model.get('n_benign', 0)} | "
                        f"{_cell(model.get('recall'))} / {_cell(model.get('false_positive_rate'))} "
                        f"({_cell(model.get('auc'))}) | {_cell(rules.get('recall'))} / "
                        f"{_cell(rules.get('false_positive_rate'))} | {_cell(stage.get('recall'))} / "
                        f"{_cell(stage.get('false_positive_rate'))}{combined} | "
                        f"{_cell(either.get('recall'))} / {_cell(either.get('false_positive_rate'))} |"
                    )
    settings = data["settings"]
    lines += [
        "",
        f"Protocols: {'; '.join(f'*{k}*: {v}' for k, v in settings['protocols'].items())}. Features: "
        f"{settings['features']}; fit: {settings['fit']}; threshold at {settings['threshold']}. "
        f"Last run {data['date'][:10]}, load average {data['load_average_before'][0]:.2f} "
        "at the start.",
    ]
    return "\n".join(lines)


# --- where the sink's CPU goes ----------------------------------------------------------------

SINK_PARTS = (  # label, then the variant taken away from (or the total) and the one subtracted
    ("the engine parsing the JSON", "parse_only", None),
    ("the two views converting it into events and requests rows", "no_dedup", "parse_only"),
    ("duplicate lookups and the raw tables' new parts", "no_rollups", "no_dedup"),
    ("the per-minute and hourly rollups", "all", "no_rollups"),
    ("the engine in all (its background merges included)", "all", None),
)


def sink_profile() -> str:
    """The per-record CPU split of bench/sink_profile.py: each part is the difference between two
    variants (the views a variant keeps), the engine's total is the variant with every view."""
    data = _load("sink_profile")
    if data is None:
        return "No result yet: run `bench/sink_profile.py`."
    sizes = sorted({int(key.split("@")[1]) for key in data["engine_median"]})
    cpu = {key: value["cpu_us_per_record"] for key, value in data["engine_median"].items()}
    lines = [
        "| part | " + " | ".join(f"at {size // 1000}k records per insert" for size in sizes) + " |",
        "|---" * (len(sizes) + 1) + "|",
        "| the schema check in Python (`Sink.add`) | "
        + " | ".join(f"{data['check_us_per_record']:.1f} µs" for _ in sizes)
        + " |",
    ]
    for label, variant, less in SINK_PARTS:
        cells = [cpu[f"{variant}@{size}"] - (cpu[f"{less}@{size}"] if less else 0.0) for size in sizes]
        lines.append(f"| {label} | " + " | ".join(f"{cell:.2f} µs" for cell in cells) + " |")
    lines.append(
        f"\nMedians of {data['settings']['rounds']} rounds on {data['settings']['requests']:,} requests,"
        f" {data['date'][:10]}, load average {data['loadavg'][0]:.1f}."
    )
    return "\n".join(lines)


# --- what 4x the proxy would take ----------------------------------------------------------------


def four_times() -> str:
    """Each rate the floor pipeline held, with the stages' own CPU per request added (and nothing
    else of Sluice's: no events, no tables, no ClickHouse): does it still fit in the box's cores?"""
    floor, stages = _load("stack_floor"), _load("stage_cpu")
    if floor is None or stages is None:
        return "No result yet: run `bench/stack_floor.py` and `bench/stage_cpu.py`."
    cpus = int(_get(floor, "machine", "cpus") or 2)
    proxy = float(floor["sustained_goodput_rps"]["litellm"])
    stage_ms = float(stages["total_us"]["median"]) / 1000
    lines = [
        "| offered req/s | times the proxy | floor CPU per answer | + the stages' own work | "
        f"CPU per answer the {cpus} cores can give | fits |",
        "|---|---|---|---|---|---|",
    ]
    fits: list[float] = []
    for row in floor["by_rate"]:
        if not _get(row, "floor", "sustained") or row["offered_rps"] < 2 * proxy:
            continue
        rate = float(row["offered_rps"])
        floor_ms = sum(row["floor"]["cpu_ms_per_ok"].values())
        room_ms = cpus * 1000 / rate
        fit = floor_ms + stage_ms <= room_ms
        if fit:
            fits.append(rate)
        lines.append(
            f"| {rate:g} | {rate / proxy:.1f}x | {floor_ms:.2f} ms | {floor_ms + stage_ms:.2f} ms | "
            f"{room_ms:.2f} ms | {'yes' if fit else 'no'} |"
        )
    top = max(fits) if fits else 0.0
    lines.append(
        f"\nThe proxy sustained {proxy:g} req/s in the floor run ({floor['when'][:10]}); the stages' own "
        f"work is the median of `bench/stage_cpu.py` ({stages['when'][:10]}), "
        f"{stage_ms * 1000:.0f} µs per request. The highest rate that fits is {top:g} req/s, "
        f"{top / proxy:.1f}x the proxy, with every core fully busy and nothing else of Sluice's counted."
    )
    return "\n".join(lines)


TABLES: dict[str, Callable[[], str]] = {
    "side_by_side": side_by_side,
    "four_times": four_times,
    "sink_profile": sink_profile,
    "benchmarks": benchmarks,
    "heldout": heldout,
    "injection_loo": injection_loo,
    "injection_mil": injection_mil,
}


def render(readme: str) -> str:
    for name, build in TABLES.items():
        pattern = re.compile(rf"(<!-- table: {name} -->\n)(?:.*?\n)?(<!-- end: {name} -->)", re.S)
        readme = pattern.sub(
            lambda match, body=build(): match.group(1) + body + "\n" + match.group(2), readme
        )
    return readme


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="only check that README.md is up to date")
    args = parser.parse_args()
    current = README.read_text()
    wanted = render(current)
    if args.check:
        if wanted != current:
            print("README.md benchmark tables are out of date: run bench/readme_tables.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
