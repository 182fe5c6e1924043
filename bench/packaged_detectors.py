"""Evaluate one third-party prompt-injection detector that ships its model inside a PyPI package.

Measures, for the package named on the command line:
  * metadata: version, licence, installed size of the distribution's own files and of the whole
    venv site-packages, size of the model (or rule) files it ships, and whether the model ships in
    the package (adapters exist only for packages that need no model-hub download at run time);
  * detection on the three held-out corpora in tests/data (injection_spikee, injection_agentdojo,
    injection_raginject): per channel (direct, indirect, all) the attack/benign counts, recall
    (share of attacks flagged), false-positive rate (share of benign flagged), both with the
    package's own default decision, and ROC AUC when the package exposes a score.  No threshold is
    tuned.  A row is scored as its text, plus a newline and its context documents when it has
    any (the context carries the indirect injection); rows with nothing to score are skipped
    and counted (none since 2026-12-04: bench/build_corpora.py now refuses an empty text);
  * CPU time per call (time.process_time) on a ~2 KB benign English prompt: 200 calls after a
    warm-up, p50 and p99 in ms, with the package pinned to one thread where it allows.

It imports only the standard library and the candidate package, so run it with the package's own
venv (one per package, outside the project's .venv; INSTALL below gives the pip arguments), e.g.:

    python3 -m venv /tmp/pkgdet/venv-metatronnanoguard
    /tmp/pkgdet/venv-metatronnanoguard/bin/pip install torch==2.13.0 metatronnanoguard==0.1.0
    /tmp/pkgdet/venv-metatronnanoguard/bin/python bench/packaged_detectors.py metatronnanoguard

Results are merged into bench/results/packaged_detectors.json under "packages"[NAME]; the
packages looked at and skipped are listed under "skipped" with the reason.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata as md
import json
import os
import statistics
import sys
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
OUT = ROOT / "bench" / "results" / "packaged_detectors.json"
CORPORA = ("injection_spikee", "injection_agentdojo", "injection_raginject")
MODEL_EXT = (".pt", ".pth", ".onnx", ".bin", ".safetensors", ".pkl", ".joblib", ".npz", ".npy", ".gguf")
PARAGRAPH = (
    "Our team met on Tuesday to review the quarterly roadmap. We agreed to move the billing "
    "migration to the next sprint, because the database upgrade needs another week of testing. "
    "Please summarise the main decisions below and list any open questions for the product owner. "
)

Verdict = tuple[bool, float | None]  # (flagged by the package's default decision, score or None)
Detector = Callable[[str], Verdict]

# What each package's docs say it was trained on (quoted or closely paraphrased from its README/METADATA).
TRAINED_ON: dict[str, str] = {
    "metatronnanoguard": "README: 'Trained on 21,804 examples from 11 public datasets. Evaluated on a "
    "held-out test set of 2,181 examples.' The datasets are not named.",
    "prompt-guardrail": "README: TF-IDF (word 1-4 grams) + logistic regression on ~61,000 examples: "
    "Mindgard/evaded-prompt-injection-and-jailbreak-samples (~11,300 injection) and "
    "OpenAssistant/oasst2 prompter turns (~49,900 safe).",
    "nukon-pi-detect": "Not trained: ~60 hand-curated patterns in five families (classic injection, "
    "jailbreaks, delimiter escapes, Unicode smuggling, indirect injection); README says they target "
    "attacks 'that appear in every jailbreak dataset, every red-team repo, every Lakera Gandalf writeup'.",
    "prompt-lint-py": "Rules not trained (hand-written, checked against a bundled 'compact regression "
    "corpus', regression-v0.2.json). Optional L3 (not used here): 'a MiniLM fine-tuned on (system "
    "prompt, message) pairs', data not named.",
    "aicordon": "Rule base selected on half A of 'Quadrat-IPI v1.0.1 (dataset 3ee970d160449aae)' (ipi "
    "core; 16.4% recall / 0.098% FPR measured on that corpus) and, for the dpi group, "
    "'TrustAIRLab/in-the-wild-jailbreak-prompts against allenai/WildChat-1M user turns'; the package "
    "does not list Quadrat-IPI's sources.",
    "aicordon-dpi": "as aicordon",
    "promptocyte": "README: 'a locally trained DistilBERT model' (not shipped; training data not "
    "named); the shipped part is hand-written regexes.",
}


def adapter_metatronnanoguard() -> Detector:
    import torch
    from nanoguard import NanoGuard

    torch.set_num_threads(1)
    ng = NanoGuard(device="cpu")

    def run(text: str) -> Verdict:
        r = ng.scan(text)
        return bool(r.is_injection), float(r.injection_score)

    return run


def adapter_prompt_guardrail() -> Detector:
    from guardify import LogisticRegressionGuardrail

    gr = LogisticRegressionGuardrail()  # its "score" is max(proba); take P(injection) for the AUC
    col = list(gr._clf.classes_).index(1)

    def run(text: str) -> Verdict:
        flagged = gr.predict(text)["label"] == "injection"
        return flagged, float(gr._clf.predict_proba(gr._vectorizer.transform([text]))[0, col])

    return run


def adapter_nukon_pi_detect() -> Detector:
    from nukon_pi_detect import DECISION_CLEAN, scan

    def run(text: str) -> Verdict:  # CLI fails (non-zero exit) on SUSPICIOUS or MALICIOUS
        r = scan(text)
        return r.decision != DECISION_CLEAN, float(r.score)

    return run


def adapter_prompt_lint_py() -> Detector:
    from promptlint import Firewall  # rules only: the optional MiniLM layer downloads from GitHub
    from promptlint.types import DECISION_SEVERITY, Decision

    fw = Firewall(mode="block")  # as the package's own `evaluate`, which acts at DISABLE_TOOL_CALLS
    act = DECISION_SEVERITY[Decision.DISABLE_TOOL_CALLS]

    def run(text: str) -> Verdict:
        r = fw.scan(text)
        return DECISION_SEVERITY.get(r.l4_decision, 0) >= act, float(r.risk_score)

    return run


def adapter_aicordon(mode: str = "ipi") -> Detector:
    from aicordon import picket  # the local Picket rule only; Intent needs an API key

    det = picket.load(mode=mode)  # default ipi (fetched data); dpi adds rules for typed user turns

    def run(text: str) -> Verdict:
        return bool(det.check(text).flagged), None  # a rule: no continuous score

    return run


def adapter_promptocyte() -> Detector:
    from promptocyte import SecurityGuard

    guard = SecurityGuard()  # no model ships: its DistilBERT path is absent, so regex + fixed "benign 0.55"

    def run(text: str) -> Verdict:
        r = guard.analyze(text)
        return not r["safe"], float(r["risk_score"])  # WARN or BLOCK counts as flagged

    return run


ADAPTERS: dict[str, Callable[[], Detector]] = {
    "metatronnanoguard": adapter_metatronnanoguard,
    "prompt-guardrail": adapter_prompt_guardrail,
    "nukon-pi-detect": adapter_nukon_pi_detect,
    "prompt-lint-py": adapter_prompt_lint_py,
    "aicordon": adapter_aicordon,
    "aicordon-dpi": lambda: adapter_aicordon("dpi"),
    "promptocyte": adapter_promptocyte,
}
NO_MODEL_SHIPPED = {"promptocyte"}  # evaluated on what does ship (rules); the learned part is absent
DIST_NAME: dict[str, str] = {"aicordon-dpi": "aicordon"}  # adapter name -> PyPI distribution name
INSTALL: dict[str, str] = {  # pip arguments for the package's venv, in order
    "metatronnanoguard": "torch==2.13.0 (CPU wheel first, else pip pulls CUDA torch), "
    "then metatronnanoguard==0.1.0",
    "prompt-guardrail": "prompt-guardrail==1.0.1 scikit-learn==1.7.2 (its pickles were made with 1.7.2)",
    "nukon-pi-detect": "nukon-pi-detect==0.1.0",
    "prompt-lint-py": "prompt-lint-py==0.5.1 (without the [ml] extra)",
    "aicordon": "aicordon==1.4.0",
    "aicordon-dpi": "aicordon==1.4.0",
    "promptocyte": "promptocyte==0.1.0 (without the [ml] extra)",
}
SKIPPED: dict[str, str] = {
    "jailguard": "0.1.2: the MLP classifier is embedded, but the 90 MB MiniLM ONNX embedder is "
    "downloaded from Hugging Face on first use; detect() panics offline ('Failed to download ONNX model')",
    "prismguard": "0.1.10: wheel ships tokenizer only; the 739 MB model.onnx is fetched from GitHub releases",
    "cyberjev": "0.1.0: 'The package holds only the code'; weights (~115 MB, CC-BY-NC-4.0) from Hugging Face",
    "prompt-protect": "0.1: model loaded with from_pretrained from Hugging Face; also pins torch==2.2.2",
    "toolwall-guard": "0.4.0: judge (DeBERTa-v3) from Hugging Face; only rules ship",
    "xyran-lpd": "1.0.0rc1 (only version): 21 KB wheel, without the Prompt Guard 2 ONNX that its "
    "README says is bundled",
}
KIND: dict[str, str] = {
    "metatronnanoguard": "4-layer transformer (16.8M params), torch",
    "prompt-guardrail": "TF-IDF + logistic regression, scikit-learn pickles",
    "nukon-pi-detect": "~60 regex/codepoint rules, no learned weights",
    "promptocyte": "19 regexes after normalisation; its DistilBERT layer is not shipped (user supplies "
    "./models/security-classifier), so it falls back to 'benign 0.55'",
    "aicordon": "Picket signature rule base (380 rules, 386 KB .bin), default mode ipi",
    "aicordon-dpi": "Picket signature rule base, mode dpi (adds rules for user-typed turns)",
    "prompt-lint-py": "24 re2 rules + heuristic scorer + policy layer (optional MiniLM layer not used: "
    "its ONNX is downloaded from GitHub on first use)",
}
MODEL_FILES: dict[str, tuple[str, ...]] = {  # rule packages: the files that hold the rules
    "nukon-pi-detect": ("nukon_pi_detect/patterns.py",),
    "prompt-lint-py": ("promptlint/rules.yaml",),
}


def row_text(row: dict[str, Any]) -> str:
    ctx = row.get("context") or []
    docs = [c["text"] if isinstance(c, dict) else str(c) for c in (ctx if isinstance(ctx, list) else [ctx])]
    return "\n".join(part for part in [row["text"], *docs] if part.strip())


def auc(pos: list[float], neg: list[float]) -> float | None:
    """ROC AUC as the Mann-Whitney probability P(score_attack > score_benign), ties count 1/2."""
    if not pos or not neg:
        return None
    ranked = sorted([(s, 1) for s in pos] + [(s, 0) for s in neg])
    rank_sum, i = 0.0, 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        mid = (i + j + 1) / 2  # average 1-based rank of the tie block
        rank_sum += mid * sum(1 for k in range(i, j) if ranked[k][1] == 1)
        i = j
    return round((rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)), 4)


def summarise(rows: list[tuple[str, str, Verdict]]) -> dict[str, Any]:
    """rows: (label, channel, verdict) -> metrics per channel."""
    out: dict[str, Any] = {}
    for ch in ("direct", "indirect", "all"):
        sel = [(lab, v) for lab, c, v in rows if ch == "all" or c == ch]
        att = [v for lab, v in sel if lab == "attack"]
        ben = [v for lab, v in sel if lab == "benign"]
        if not sel:
            continue
        scored = all(v[1] is not None for _, v in sel)
        out[ch] = {
            "attacks": len(att),
            "benign": len(ben),
            "recall": round(sum(f for f, _ in att) / len(att), 4) if att else None,
            "fpr": round(sum(f for f, _ in ben) / len(ben), 4) if ben else None,
            "auc": auc([s for _, s in att], [s for _, s in ben]) if scored else None,  # type: ignore[misc]
        }
    return out


def evaluate(det: Detector) -> dict[str, Any]:
    """Rows with nothing to score (empty text, no context) are left out and counted."""
    res = {}
    for name in CORPORA:
        lines = (DATA / f"{name}.jsonl").read_text().splitlines()
        rows = [json.loads(line) for line in lines if line.strip()]
        kept = [r for r in rows if row_text(r)]
        res[name.removeprefix("injection_")] = {
            **summarise([(r["label"], r["channel"], det(row_text(r))) for r in kept]),
            "empty_rows_skipped": len(rows) - len(kept),
        }
    return res


def latency(det: Detector, n: int = 200, warmup: int = 10) -> dict[str, Any]:
    prompt = (PARAGRAPH * (2048 // len(PARAGRAPH) + 1))[:2048]
    for _ in range(warmup):
        det(prompt)
    ms = []
    for _ in range(n):
        t0 = time.process_time()
        det(prompt)
        ms.append((time.process_time() - t0) * 1000)
    ms.sort()
    return {
        "calls": n,
        "prompt_chars": len(prompt),
        "p50": round(statistics.median(ms), 3),
        "p99": round(ms[min(n - 1, int(0.99 * n))], 3),
        "mean": round(statistics.fmean(ms), 3),
    }


def package_facts(name: str) -> dict[str, Any]:
    dist = md.distribution(DIST_NAME.get(name, name))
    meta = dist.metadata.json  # the METADATA fields, lower-cased; the README is under "description"
    lic = str(meta.get("license_expression") or meta.get("license") or "").strip()
    classifiers = [c.split("::")[-1].strip() for c in meta.get("classifier", []) if c.startswith("License")]
    files = [Path(str(f.locate())) for f in dist.files or []]
    rels = [str(f) for f in dist.files or []]
    sizes = {rel: p.stat().st_size for rel, p in zip(rels, files, strict=True) if p.is_file()}
    wanted = MODEL_FILES.get(name, ())
    models = {k: v for k, v in sizes.items() if k.lower().endswith(MODEL_EXT) or k in wanted}
    site = Path(sysconfig.get_paths()["purelib"])
    site_size = sum(p.stat().st_size for p in site.rglob("*") if p.is_file())
    doc = str(meta.get("description", "")).lower()
    return {
        "version": dist.version,
        "licence": "; ".join(x for x in [lic, *classifiers] if x) or "unknown",
        "installed_mb": round(sum(sizes.values()) / 1e6, 2),
        "venv_site_packages_mb": round(site_size / 1e6, 1),
        "model_files_mb": {k: round(v / 1e6, 2) for k, v in models.items()},
        "model_mb": round(sum(models.values()) / 1e6, 2),
        "docs_mention_eval_corpora": sorted(w for w in ("spikee", "agentdojo", "raginject") if w in doc),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("package", choices=sorted(ADAPTERS))
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS"):
        os.environ.setdefault(var, "1")  # one thread; adapters import their package only after this
    facts = package_facts(args.package)
    t0 = time.perf_counter()
    det = ADAPTERS[args.package]()
    entry = {
        **facts,
        "model_in_package": args.package not in NO_MODEL_SHIPPED,
        "kind": KIND.get(args.package, ""),
        "install": INSTALL.get(args.package, args.package),
        "load_s": round(time.perf_counter() - t0, 2),
        "trained_on": TRAINED_ON.get(args.package, "not stated"),
        "corpora": evaluate(det),
        "latency_ms": latency(det),
        "python": sys.version.split()[0],
    }
    doc = json.loads(args.out.read_text()) if args.out.exists() else {"packages": {}}
    doc["when"] = dt.date.today().isoformat()
    doc.setdefault("packages", {})[args.package] = entry
    doc["skipped"] = SKIPPED
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    print(json.dumps({args.package: entry}, indent=2))


if __name__ == "__main__":
    main()
