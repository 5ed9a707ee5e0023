"""A login flood for `ladder bench load --flood`: wrong passwords posted to the chat server's login
route at a steady rate, from a few loopback addresses, while the load runs.

The flood runs in a child process (``python -m evals.bench.flood``), as an attacker is another
machine: its own work then does not take the server's interpreter lock, which would slow the
server's users for a reason that is not the server's. Every attempt uses a wrong password, for a
name taken in turn from the names given (`bench load` gives its own users, an attacker guessing real
accounts, and as many made-up names). Each address is its own loopback source address (127.a.b.N:
all of 127/8 is the loopback interface), so the server sees that many peers. Bounded: at most
``rate * max_seconds`` attempts, at most FLOOD_IN_FLIGHT unanswered at once.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import httpx

MAX_RATE = 500.0  # attempts a second
MAX_ADDRESSES = 250
FLOOD_IN_FLIGHT = 256  # unanswered attempts at once; past it an attempt is counted as not sent
START_TIMEOUT_S = 60.0
STARTED = "flooding"


def flood_sources(count: int) -> list[str]:
    """``count`` loopback addresses of one random 127.a.b.0/24 (not 127.0.0.1, where the users are)."""
    a, b = random.randint(1, 254), random.randint(1, 254)
    return [f"127.{a}.{b}.{n}" for n in range(1, count + 1)]


class LoginFlood:
    """``with LoginFlood(...) as flood:`` floods while the block runs; ``flood.figures`` afterwards."""

    def __init__(
        self, url: str, *, rate: float, addresses: Sequence[str], names: Sequence[str], max_seconds: float
    ) -> None:
        if not 0 < rate <= MAX_RATE or not 1 <= len(addresses) <= MAX_ADDRESSES or max_seconds <= 0:
            raise ValueError(f"the flood needs a rate of 0..{MAX_RATE}/s and 1..{MAX_ADDRESSES} addresses")
        self.plan = {
            "url": url,
            "rate": rate,
            "addresses": list(addresses),
            "names": list(names) or ["nobody"],
            "max_seconds": max_seconds,
        }
        self.figures: dict[str, Any] = {}
        self._child: subprocess.Popen[str] | None = None

    def __enter__(self) -> LoginFlood:
        self._child = subprocess.Popen(
            [sys.executable, "-m", "evals.bench.flood"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self._child.stdin is not None and self._child.stdout is not None
        self._child.stdin.write(json.dumps(self.plan) + "\n")
        self._child.stdin.flush()
        line = _read_line(self._child, START_TIMEOUT_S)
        if line.strip() != STARTED:
            self._stop()
            raise RuntimeError(f"the login flood did not start: {line.strip() or self._stderr()}")
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop()

    def _stop(self) -> None:
        """Close the child's stdin (its signal to stop), read its figures, and make sure it is gone."""
        child = self._child
        if child is None:
            return
        try:  # communicate() closes stdin first
            out, err = child.communicate(timeout=float(self.plan["max_seconds"]) + 60)
        except subprocess.TimeoutExpired:
            child.kill()
            out, err = child.communicate()
        try:
            self.figures = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
        except json.JSONDecodeError:
            self.figures = {}
        if not self.figures:
            self.figures = {"error": f"the flood exited with {child.returncode}: {err.strip()[-300:]}"}
        self._child = None

    def _stderr(self) -> str:
        child = self._child
        return child.stderr.read()[-300:] if child and child.stderr and child.poll() is not None else ""


def _read_line(child: subprocess.Popen[str], timeout_s: float) -> str:
    """One line of the child's stdout, or '' when none comes within the timeout."""
    found: list[str] = []
    reader = threading.Thread(target=lambda: found.append(child.stdout.readline() if child.stdout else ""))
    reader.daemon = True
    reader.start()
    reader.join(timeout_s)
    return found[0] if found else ""


class _Flood:
    """The child's side: the attempts, paced, until stdin closes or the plan's time is up."""

    def __init__(self, plan: dict[str, Any]) -> None:
        self.url, self.rate, self.max_seconds = plan["url"], float(plan["rate"]), float(plan["max_seconds"])
        self.addresses, self.names = list(plan["addresses"]), list(plan["names"])
        self.outcomes: Counter[str] = Counter()
        self.started = self.ended = 0.0
        self.stop = threading.Event()

    async def run(self) -> None:
        clients = [
            httpx.AsyncClient(base_url=self.url, transport=httpx.AsyncHTTPTransport(local_address=a), timeout=30)
            for a in self.addresses
        ]
        waiting: set[asyncio.Task[None]] = set()
        try:
            self.started = time.perf_counter()
            print(STARTED, flush=True)
            for k in range(int(self.rate * self.max_seconds)):
                pause = self.started + k / self.rate - time.perf_counter()
                if pause > 0:
                    await asyncio.sleep(pause)
                if self.stop.is_set():
                    break
                if len(waiting) >= FLOOD_IN_FLIGHT:
                    self.outcomes["not sent: too many unanswered"] += 1
                    continue
                task = asyncio.create_task(self._attempt(clients[k % len(clients)], self.names[k % len(self.names)], k))
                waiting.add(task)
                task.add_done_callback(waiting.discard)
            self.ended = time.perf_counter()
            if waiting:
                await asyncio.wait(waiting, timeout=30)
        finally:
            self.ended = self.ended or time.perf_counter()
            for client in clients:
                await client.aclose()

    async def _attempt(self, client: httpx.AsyncClient, name: str, k: int) -> None:
        try:
            reply = await client.post("login", data={"username": name, "password": f"wrong password {k}"})
            self.outcomes[str(reply.status_code)] += 1
        except httpx.HTTPError as exc:  # counted, never hidden
            self.outcomes[type(exc).__name__] += 1

    def figures(self) -> dict[str, Any]:
        """What was sent and what came back: 400 (checked, wrong), 429 (refused by the limits, no hash
        computed), 503 (refused: too many checks waiting), and any failure by its name."""
        seconds = max(self.ended - self.started, 1e-9)
        sent = sum(v for k, v in self.outcomes.items() if not k.startswith("not sent"))
        return {
            "rate_asked_per_s": self.rate,
            "addresses": len(self.addresses),
            "attempts_sent": sent,
            "rate_sent_per_s": round(sent / seconds, 1),
            "seconds": round(seconds, 2),
            "flood_cpu_s": round(time.process_time(), 2),  # the attacker's own CPU, on the same machine here
            "outcomes": dict(sorted(self.outcomes.items())),
        }


def main() -> None:
    """The child: a JSON plan on the first line of stdin; floods until stdin closes; prints its figures."""
    flood = _Flood(json.loads(sys.stdin.readline()))

    def watch() -> None:
        sys.stdin.read()  # returns at EOF: the parent is done
        flood.stop.set()

    threading.Thread(target=watch, daemon=True).start()
    asyncio.run(flood.run())
    print(json.dumps(flood.figures()), flush=True)


if __name__ == "__main__":
    main()
