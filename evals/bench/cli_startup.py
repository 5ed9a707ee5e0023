"""`ladder bench cli`: how long the ``ladder`` command takes as a process, start to exit.

Times ``ladder --help``, ``ladder collections`` and ``ladder search QUERY -c COLLECTION`` as
subprocesses, several runs each, taking turns (A B C A B C ...) so a machine that slows down part
way slows every command alike. In the same run it times two baselines: the interpreter alone
(``python -c pass``, the floor no command goes below) and the same search on the torch runtime
(``LADDER_EMBEDDING_RUNTIME=torch``: sentence-transformers, the embedding path before ONNX). Each
command's median is printed as a ratio to the floor (and the search's to the torch search's too),
beside the absolute goals (``--help`` within 0.5 s, a search within 1.5 s on a warm machine).

Without ``--collection`` it works in a data folder of its own, made for the run and removed after:
Ladder's docs/ ingested into a collection ``bench-cli`` (one ``ladder ingest`` before any timing).
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import agent

ROOT = Path(agent.__file__).resolve().parents[1]
DOCS = ROOT / "docs"
COLLECTION = "bench-cli"
QUERY = "How do I point Ladder at my own PostgreSQL server?"
GOALS_S = {"help": 0.5, "search": 1.5}
MAX_RUNS = 100
RUN_TIMEOUT_S = 300.0  # one command; the torch search takes about 10 s on a busy 2-core machine


@dataclass(frozen=True)
class Command:
    """One command to time: its name in the report, its arguments and extra environment."""

    name: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()


def ladder(*args: str) -> tuple[str, ...]:
    """``ladder ARGS`` as this interpreter runs this checkout's CLI (what the console script does)."""
    return (sys.executable, "-m", "agent.cli", *args)


def commands(collection: str, query: str, *, torch: bool) -> list[Command]:
    """The commands of one round. The two that need no database stand between ``collections`` and
    ``search``: the last user of the embedded server leaves it shutting down (a fraction of a second),
    and a search started that moment waits for the end, which is a cost of the command before it."""
    found = [
        Command("collections", ladder("collections")),
        Command("python -c pass", (sys.executable, "-c", "pass")),
        Command("help", ladder("--help")),
        Command("search", ladder("search", query, "-c", collection)),
    ]
    if torch:
        env = (("LADDER_EMBEDDING_RUNTIME", "torch"),)
        found.append(Command("search (torch runtime)", ladder("search", query, "-c", collection), env))
    return found


def time_once(command: Command, base_env: dict[str, str]) -> tuple[float, float, int, str]:
    """Wall seconds, CPU seconds (user + system, the process and its children), exit status, stderr's tail."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    try:
        done = subprocess.run(
            command.argv,
            env={**base_env, **dict(command.env)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=RUN_TIMEOUT_S,
            cwd=ROOT,
        )
        status, tail = done.returncode, done.stderr[-500:]
    except subprocess.TimeoutExpired:
        status, tail = -1, f"did not finish within {RUN_TIMEOUT_S:g} s"
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, status, tail


def summary(walls: list[float], cpus: list[float]) -> dict[str, float]:
    """Median, p90, min and max wall seconds, and the median CPU seconds."""
    ordered = sorted(walls)
    p90 = statistics.quantiles(ordered, n=10, method="inclusive")[8] if len(ordered) > 1 else ordered[0]
    return {
        "median_s": round(statistics.median(ordered), 3),
        "p90_s": round(p90, 3),
        "min_s": round(ordered[0], 3),
        "max_s": round(ordered[-1], 3),
        "cpu_median_s": round(statistics.median(cpus), 3),
    }


def time_commands(cmds: list[Command], runs: int, env: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    """Each command once to warm up (not counted), then ``runs`` rounds taking turns; figures and problems."""
    walls: dict[str, list[float]] = {c.name: [] for c in cmds}
    cpus: dict[str, list[float]] = {c.name: [] for c in cmds}
    problems: list[str] = []
    for round_number in range(runs + 1):
        for command in cmds:
            wall, cpu, status, tail = time_once(command, env)
            if status != 0:
                problems.append(f"{command.name}: exit status {status}: {tail.strip()}")
                continue
            if round_number:  # round 0 warms the page cache (and prepares the ONNX export if none is there)
                walls[command.name].append(wall)
                cpus[command.name].append(cpu)
    figures = {name: summary(walls[name], cpus[name]) for name in walls if walls[name]}
    return figures, problems


def ratios(figures: dict[str, Any]) -> dict[str, float]:
    """Each command's median as a multiple of the floor's, and the search's of the torch search's."""
    out: dict[str, float] = {}
    floor = figures.get("python -c pass", {}).get("median_s")
    for name in ("help", "collections", "search"):
        if floor and name in figures:
            out[f"{name} / python -c pass"] = round(figures[name]["median_s"] / floor, 2)
    if "search" in figures and "search (torch runtime)" in figures:
        out["search / search (torch runtime)"] = round(
            figures["search"]["median_s"] / figures["search (torch runtime)"]["median_s"], 3
        )
    return out


@contextmanager
def own_data_dir(env: dict[str, str]) -> Iterator[dict[str, str]]:
    """A data folder for the run (one the embedded server's user can enter as root) with docs/ ingested."""
    folder = Path(tempfile.mkdtemp(prefix="ladder-bench-cli-", dir="/tmp"))
    folder.chmod(0o711)
    env = {k: v for k, v in env.items() if k != "DATABASE_URL"} | {"LADDER_DATA_DIR": str(folder)}
    try:
        ingest = Command("ingest", ladder("ingest", str(DOCS), "-c", COLLECTION, "--no-progress"))
        _, _, status, tail = time_once(ingest, env)
        if status != 0:
            raise RuntimeError(f"could not ingest {DOCS} for the benchmark: {tail.strip()}")
        yield env
    finally:
        time_once(Command("db stop", ladder("db", "stop")), env)
        shutil.rmtree(folder, ignore_errors=True)


def run_cli_benchmark(
    *, runs: int = 5, collection: str | None = None, query: str = QUERY, torch: bool = True
) -> dict[str, Any]:
    """Time the commands (see the module's docstring); the report with figures, ratios, goals and problems."""
    runs = max(1, min(runs, MAX_RUNS))
    # As a user runs it: with Python's bytecode cache (an environment that turns it off would time the
    # compilation of Ladder's own modules on every run; the warm-up run writes the cache).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    if collection is None:
        with own_data_dir(env) as own_env:
            figures, problems = time_commands(commands(COLLECTION, query, torch=torch), runs, own_env)
    else:
        figures, problems = time_commands(commands(collection, query, torch=torch), runs, env)
    goals = {
        f"{name} median ≤ {limit:g} s": figures[name]["median_s"] <= limit
        for name, limit in GOALS_S.items()
        if name in figures
    }
    return {
        "runs": runs,
        "collection": collection or f"{COLLECTION} (Ladder's docs/, in a data folder of the run's own)",
        "figures": figures,
        "ratios": ratios(figures),
        "goals": goals,
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "problems": problems,
    }
