"""Does compiling the stages' pure Python with mypyc cut their CPU enough to matter? (run by hand)

`bench/stage_cpu.py` measures the CPU each request costs in the stages' own functions (validate,
sanitize, route, infer, validate_response, encode), with no Kafka or HTTP. That is the part of the
worker's CPU no batching removes, so the one way left to shrink it without rewriting the code is
to compile it. This script repeats, from scratch, the experiment of compiling those modules with
mypyc and timing the same bench on the compiled and the plain code:

1. clones the repository's committed HEAD twice into a temporary directory ("plain" and
   "compiled") and copies the working tree's `bench/stage_cpu.py` and `bench/harness.py` into
   both (they may not be committed yet);
2. in the compiled copy only, rewrites `license = "..."` in pyproject.toml to the table form if
   the installed setuptools rejects the string form (mypyc builds through setuptools), then runs
   mypyc on `MODULES`. A module mypyc rejects, or whose compiled form does not import, is dropped
   and the build retried; the reasons are recorded. `KNOWN_UNCOMPILABLE` lists the modules left
   out from the start, and why;
3. checks in a fresh interpreter that every compiled module imports as an extension (.so) from
   the compiled copy;
4. runs `stage_cpu.py` alternately in the plain and the compiled copy (plain, compiled, plain,
   ...), each in a subprocess whose imports resolve to that copy (checked: the project is also
   installed editable from the main tree, and a run that imports from there fails loudly);
5. runs the unit tests of the compiled modules against the compiled copy, since compiled code
   behaves differently in places (it checks argument types at the call, and monkeypatching a
   module function does not reach compiled callers).

    .venv/bin/python bench/compiled_stages.py [--pairs 3] [--requests 2000] [--rounds 5] [--keep]

It keeps a core busy for several minutes; on a shared machine run it when nothing else heavy runs
(both builds see the same load, since their runs alternate).
Writes bench/results/compiled_stages.json.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from harness import machine
from stage_cpu import PARTS

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
COPIED = ("bench/stage_cpu.py", "bench/harness.py")  # from the working tree into both copies

# What stage_cpu.py runs, and what it calls, minus the modules mypyc cannot take.
MODULES = (
    "agents/checks/grounding.py",
    "agents/checks/grounding_model.py",
    "agents/checks/injection_model.py",
    "agents/checks/literals.py",
    "agents/checks/output_policy.py",
    "agents/checks/pii.py",
    "agents/checks/review.py",
    "agents/checks/sanitizer.py",
    "agents/checks/schema_check.py",
    "agents/checks/text_views.py",
    "agents/sanitize.py",
    "agents/validate.py",
    "agents/route.py",
    "agents/validate_response.py",
    "agents/compiled.py",
    "agents/routing/advice.py",
    "agents/routing/features.py",
    "agents/routing/feed.py",
    "agents/routing/router.py",
    "sluice/outcome.py",
    "sluice/request_ids.py",
    "sluice/codec.py",
)
KNOWN_UNCOMPILABLE = {
    "agents/checks/abuse.py": "mypyc rejects lone-surrogate string literals",
    "agents/checks/normalize.py": "mypyc rejects lone-surrogate string literals",
    "agents/infer.py": "mypyc: break inside try/finally and async generators are unimplemented",
    "agents/checks/injection.py": "compiled, its import fails: @runtime_checkable Detector Protocol",
}
TESTS = (
    "tests/unit/test_stages.py",
    "tests/unit/test_review.py",
    "tests/unit/test_pii.py",
    "tests/unit/test_validate.py",
    "tests/unit/test_output_policy.py",
    "tests/unit/test_grounding.py",
    "tests/unit/test_routing.py",
)
MAX_BUILDS = 6
ERROR_LINE = re.compile(r"^(?P<path>[\w/.]+\.py):\d+: error: (?P<message>.*)$", re.MULTILINE)
FAILED_LINE = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.MULTILINE)
LICENSE_LINE = re.compile(r'^license = "(?P<spdx>[^"]+)"$', re.MULTILINE)

# Run in the copy (cwd and PYTHONPATH set to it): fail unless the project's packages come from
# the copy and each listed module is (compiled) or is not (plain) an extension, then run the script.
RUN_IN_COPY = """
import importlib, json, runpy, sys
from pathlib import Path
import agents, sluice
copy, compiled, script = Path(sys.argv[1]).resolve(), sys.argv[2] == "compiled", sys.argv[3]
modules = json.loads(sys.argv[4])
for package in (agents, sluice):
    if not Path(package.__file__).resolve().is_relative_to(copy):
        sys.exit(f"{package.__name__} imported from {package.__file__}, not from the copy {copy}")
for name in modules:
    module = importlib.import_module(name)
    if module.__file__.endswith(".so") != compiled:
        sys.exit(f"{name} is {module.__file__}: expected {'a' if compiled else 'no'} compiled extension")
sys.argv = [script, *sys.argv[5:]]
runpy.run_path(script, run_name="__main__")
"""

# Import one module in the copy and say where it came from (exit 1 with the traceback if it fails).
IMPORT_ONE = """
import importlib, sys
module = importlib.import_module(sys.argv[1])
print(module.__file__)
"""


def module_name(path: str) -> str:
    """agents/checks/pii.py -> agents.checks.pii"""
    return path.removesuffix(".py").replace("/", ".")


def copy_env(copy: Path) -> dict[str, str]:
    """The environment for a subprocess whose imports should resolve to `copy`."""
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{copy}{os.pathsep}{copy / 'bench'}"
    env.pop("PYTHONHOME", None)
    return env


def run_in(copy: Path, args: Sequence[str], log: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`python <args>` with cwd and imports in `copy`; stdout and stderr combined (and logged)."""
    done = subprocess.run(
        [sys.executable, *args],
        cwd=copy,
        env=copy_env(copy),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    if log is not None:
        log.write_text(done.stdout)
    return done


def clone(target: Path) -> str:
    """A clone of the committed HEAD at `target`, with the working tree's bench files copied in."""
    subprocess.run(["git", "clone", "-q", str(ROOT), str(target)], check=True)
    for name in COPIED:
        shutil.copy2(ROOT / name, target / name)
    head = subprocess.run(["git", "-C", str(target), "rev-parse", "HEAD"], check=True, capture_output=True)
    return head.stdout.decode().strip()


def license_table(match: re.Match[str]) -> str:
    """`license = "X"` (a PEP 639 SPDX string) in the form older setuptools accepts."""
    return f'license = {{text = "{match["spdx"]}"}}'


def license_workaround(copy: Path) -> bool:
    """Rewrite pyproject's `license = "X"` as `license = {text = "X"}` if this setuptools rejects it."""
    probe = "from setuptools.config import pyprojecttoml; pyprojecttoml.read_configuration('pyproject.toml')"
    done = run_in(copy, ["-c", probe])
    if done.returncode == 0:
        return False
    pyproject = copy / "pyproject.toml"
    text = pyproject.read_text()
    if "project.license" not in done.stdout or not LICENSE_LINE.search(text):
        raise RuntimeError(f"setuptools rejects the copy's pyproject.toml:\n{done.stdout[-3000:]}")
    pyproject.write_text(LICENSE_LINE.sub(license_table, text, count=1))
    return True


def remove_build(copy: Path) -> None:
    """Remove a previous build's output, so a dropped module's old extension cannot shadow its .py."""
    shutil.rmtree(copy / "build", ignore_errors=True)
    for extension in copy.rglob("*.so"):
        extension.unlink()


def rejected(output: str, modules: Sequence[str]) -> dict[str, str]:
    """The modules mypyc reported errors in, with their first error (`path:line: error: msg`)."""
    found: dict[str, str] = {}
    for match in ERROR_LINE.finditer(output):
        if match["path"] in modules:
            found.setdefault(match["path"], match.group(0))
    return found


def import_failures(copy: Path, modules: Sequence[str]) -> dict[str, str]:
    """Modules that do not import from the copy as a compiled extension, each with its reason. A
    module that fails only because another failing module does (its traceback names that module's
    file) is not blamed, unless every failure looks like that."""
    failures: dict[str, str] = {}
    for path in modules:
        done = run_in(copy, ["-c", IMPORT_ONE, module_name(path)])
        origin = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
        if done.returncode != 0:
            failures[path] = done.stdout.strip()
        elif not (origin.endswith(".so") and Path(origin).resolve().is_relative_to(copy)):
            failures[path] = f"imports from {origin}, not as a compiled extension in the copy"
    own = {
        path: reason
        for path, reason in failures.items()
        if not any(other != path and f"{other}" in reason for other in failures)
    }
    chosen = own or failures
    return {path: "import fails: " + reason.splitlines()[-1] for path, reason in chosen.items()}


def build(copy: Path, logs: Path) -> dict[str, Any]:
    """mypyc on MODULES in `copy`, dropping modules that fail to compile or import, until it works."""
    modules = list(MODULES)
    dropped: dict[str, str] = {}
    attempts: list[dict[str, Any]] = []
    for attempt in range(1, MAX_BUILDS + 1):
        remove_build(copy)
        start = time.perf_counter()
        done = run_in(copy, ["-m", "mypyc", *modules], log=logs / f"build-{attempt}.log")
        seconds = round(time.perf_counter() - start, 1)
        if done.returncode != 0:
            failed = {path: f"mypyc: {error}" for path, error in rejected(done.stdout, modules).items()}
            if not failed:
                raise RuntimeError(f"mypyc failed, naming no module of the list:\n{done.stdout[-3000:]}")
        else:
            failed = import_failures(copy, modules)
        attempts.append({"seconds": seconds, "modules": len(modules), "dropped": sorted(failed)})
        if not failed:
            return {"modules": modules, "dropped": dropped, "build_s": seconds, "attempts": attempts}
        dropped.update(failed)
        modules = [path for path in modules if path not in failed]
        print(f"build {attempt}: dropping {sorted(failed)}; retrying with {len(modules)} modules", flush=True)
    raise RuntimeError(f"no working build after {MAX_BUILDS} attempts; dropped {dropped}")


def stage_cpu(copy: Path, kind: str, modules: Sequence[str], requests: int, rounds: int) -> dict[str, Any]:
    """One run of stage_cpu.py in `copy`: its per-part µs per request and its total."""
    result = copy / "bench" / "results" / "stage_cpu.json"
    result.unlink(missing_ok=True)
    names = json.dumps([module_name(path) for path in modules])
    script = str(copy / "bench" / "stage_cpu.py")
    args = ["--requests", str(requests), "--rounds", str(rounds)]
    done = run_in(copy, ["-c", RUN_IN_COPY, str(copy), kind, script, names, *args])
    if done.returncode != 0 or not result.exists():
        raise RuntimeError(f"stage_cpu.py in the {kind} copy failed:\n{done.stdout[-3000:]}")
    data = json.loads(result.read_text())
    return {
        "build": kind,
        "per_request_us": data["per_request_us"],
        "total_us": data["total_us"],
        "loadavg_1_5_15_at_start": data["machine"]["loadavg_1_5_15_at_start"],
    }


def summarise(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean over the runs of each build: the total (each run's median over rounds) and each part,
    and the compiled build's change against the plain one, in percent (negative: compiled is cheaper)."""

    def mean(kind: str, value: Any) -> float:
        return statistics.fmean(value(run) for run in runs if run["build"] == kind)

    def change(plain: float, compiled: float) -> float:
        return round((compiled - plain) / plain * 100, 1)

    plain_total = mean("plain", lambda run: run["total_us"]["median"])
    compiled_total = mean("compiled", lambda run: run["total_us"]["median"])
    parts: dict[str, dict[str, float]] = {}
    for part in PARTS:
        plain = mean("plain", lambda run, part=part: run["per_request_us"][part])
        compiled = mean("compiled", lambda run, part=part: run["per_request_us"][part])
        parts[part] = {
            "plain_us": round(plain, 1),
            "compiled_us": round(compiled, 1),
            "change_pct": change(plain, compiled),
        }
    return {
        "total_us_plain": round(plain_total, 1),
        "total_us_compiled": round(compiled_total, 1),
        "change_pct": change(plain_total, compiled_total),
        "parts": parts,
    }


def unit_tests(copy: Path, logs: Path) -> dict[str, Any]:
    """The compiled modules' unit tests, run against the compiled copy."""
    report = logs / "junit.xml"
    run_in(
        copy,
        ["-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", *TESTS],
        log=logs / "pytest.log",
    )
    if not report.exists():
        raise RuntimeError(f"pytest wrote no report; see {logs / 'pytest.log'}")
    passed = failed = skipped = 0
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        elif case.find("skipped") is not None:
            skipped += 1
        else:
            passed += 1
    # The node ids, from pytest's short summary (`-q` lists failures and errors there).
    failing = FAILED_LINE.findall((logs / "pytest.log").read_text())
    return {
        "files": list(TESTS),
        "passed": passed,
        "failed": failed,
        "skipped": skipped,
        "failing": failing,
    }


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    load_start = os.getloadavg()
    logs = work / "logs"
    logs.mkdir()
    plain, compiled = work / "plain", work / "compiled"
    commit = clone(plain)
    clone(compiled)
    workaround = license_workaround(compiled)
    print("building with mypyc ...", flush=True)
    built = build(compiled, logs)
    print(f"built {len(built['modules'])} modules in {built['build_s']} s", flush=True)
    runs = []
    for pair in range(args.pairs):
        for kind, copy in (("plain", plain), ("compiled", compiled)):
            runs.append(stage_cpu(copy, kind, built["modules"], args.requests, args.rounds))
            print(f"pair {pair + 1} {kind}: total {runs[-1]['total_us']}", flush=True)
    tests = unit_tests(compiled, logs)
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(load_start),
        "settings": {
            "commit": commit,
            "copied_from_working_tree": list(COPIED),
            "modules_compiled": built["modules"],
            "modules_dropped": {
                **{path: f"left out from the start: {why}" for path, why in KNOWN_UNCOMPILABLE.items()},
                **{path: f"dropped in this build: {why}" for path, why in built["dropped"].items()},
            },
            "pyproject_license_workaround": workaround,
            "pairs": args.pairs,
            "requests": args.requests,
            "rounds": args.rounds,
            "mypy": importlib.metadata.version("mypy"),
            "setuptools": importlib.metadata.version("setuptools"),
        },
        "build_s": built["build_s"],
        "build_attempts": built["attempts"],
        "runs": runs,
        "summary": summarise(runs),
        "tests": tests,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=3, help="plain/compiled run pairs, alternated")
    parser.add_argument("--requests", type=int, default=2000, help="requests per round of stage_cpu.py")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per stage_cpu.py run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copies and build logs")
    args = parser.parse_args()
    scratch: AbstractContextManager[str] = (
        nullcontext(tempfile.mkdtemp(prefix="compiled-stages-"))
        if args.keep
        else tempfile.TemporaryDirectory(prefix="compiled-stages-")
    )
    with scratch as work:
        if args.keep:
            print(f"keeping {work}", flush=True)
        result = run(args, Path(work).resolve())
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "compiled_stages.json").write_text(json.dumps(result, indent=2) + "\n")
    summary = result["summary"]
    print(
        f"total µs per request: plain {summary['total_us_plain']}, compiled {summary['total_us_compiled']}"
        f" ({summary['change_pct']:+}%); tests {result['tests']['passed']} passed,"
        f" {result['tests']['failed']} failed"
    )


if __name__ == "__main__":
    main()
