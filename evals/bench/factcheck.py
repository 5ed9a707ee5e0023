"""The fact-check benchmark: how many planted errors the check catches, and how many true claims it flags.

Each claim of ``evals/data/claims.jsonl`` (see ``factcheck_claims.py``) is checked twice in the same process,
with the same model:

- **before**: the fact-check as it was at commit ed2d3da, reproduced here: its own system message holding
  the instruction, the passages and the answer in one user message, and the model splitting the answer into
  claims (``{"claims": [{"claim", "supported", "evidence"}]}``);
- **after**: the turn's own check, ``agent.core.steps.fact_check.check_draft``, on the draft's conversation
  built by ``draft_messages`` (the code path a turn takes).

A claim counts as flagged when any of its verdicts is unsupported (what makes a turn revise or mark it).
Detection is the share of planted errors flagged, false alarms the share of supported claims flagged; a reply
that does not fit the schema leaves the answer unchecked, as in a turn, so it counts as not flagged.

Before each check the draft's conversation is sent once (one token back), as the draft call of a turn would
have been: the check then finds in llama.cpp's cache what it would find in a turn, and its seconds compare.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel, Field

from agent.core import prompts
from agent.core.config import Settings
from agent.core.context import Limits, Switches, TurnContext
from agent.core.state import Passage, TurnState
from agent.core.steps.common import numbered
from agent.core.steps.draft import draft_messages
from agent.core.steps.fact_check import check_draft
from agent.models.calls import MalformedReply, ModelCaller
from agent.models.endpoint import ChatEndpoint, open_chat_endpoint
from evals.bench.factcheck_claims import CLAIMS_FILE
from knowledge.base import KnowledgeBase

SPLITS = ("tune", "test", "all")
# after: the turn's check; before: ed2d3da's; model: the turn's check with its guards off (the model alone);
# quoted: the turn's check with each sentence shown beside the closest passage sentence in full
CONFIGS = ("after", "before", "model", "quoted")
DEFAULT_CONFIGS = ("after", "before")
GOAL_DETECTED = 0.8
GOAL_FALSE_ALARMS = 0.1

# -- the check as it was at ed2d3da (agent/core/prompts.py and agent/core/steps/fact_check.py) -------------

BEFORE_FACT_CHECK = (
    "Split the answer into its factual claims. For each claim decide whether the passages support "
    "it, and list the numbers of the passages that do. Reply with JSON: "
    '{"claims": [{"claim": "...", "supported": true, "evidence": [1]}]}.'
)


class BeforeJudged(BaseModel):
    claim: str
    supported: bool
    evidence: list[int] = Field(default_factory=list)


class BeforeFactCheck(BaseModel):
    claims: list[BeforeJudged] = Field(default_factory=list)


def check_before(caller: ModelCaller, passages: list[Passage], draft: str) -> list[bool]:
    """ed2d3da's check: its own system message, the passages and the answer in one user message."""
    messages = [
        {"role": "system", "content": f"{prompts.system('')}\n\n{BEFORE_FACT_CHECK}"},
        {"role": "user", "content": f"{numbered(passages)}\n\nAnswer to check:\n{draft}"},
    ]
    checked = caller.json("fact_check", messages, BeforeFactCheck, max_tokens=600)
    return [bool(j.supported) for j in checked.claims if j.claim.strip()]


# -- the claims --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    id: str
    split: str
    source: str
    question: str
    passages: list[dict[str, str]]
    answer: str
    label: str  # supported | error
    kind: str  # supported, or the planted error's kind
    edit: str

    @property
    def group(self) -> str:
        """What the figures are broken down by: the error's kind, or how a supported claim was written."""
        if self.label == "error":
            return self.kind
        return {"verbatim": "supported:verbatim", "hand-written": "supported:hand"}.get(self.edit, "supported:edited")

    def as_passages(self) -> list[Passage]:
        return [
            Passage(chunk_id=n, doc_id=p["title"], title=p["title"], heading="", source="", text=p["text"], score=1.0)
            for n, p in enumerate(self.passages, start=1)
        ]


def load_claims(path: Path = CLAIMS_FILE) -> list[Claim]:
    """The benchmark's claims, in file order."""
    with path.open(encoding="utf-8") as handle:
        return [Claim(**json.loads(line)) for line in handle if line.strip()]


def select_claims(claims: list[Claim], split: str = "all", limit: int | None = None) -> list[Claim]:
    """The claims of ``split``; with ``limit``, that many spread evenly over the set, whole pairs at a time."""
    chosen = [c for c in claims if split == "all" or c.split == split]
    if limit is None or limit >= len(chosen):
        return chosen
    pairs: dict[str, list[Claim]] = {}
    for claim in chosen:
        pairs.setdefault(claim.id.split("-", 1)[0], []).append(claim)
    keys = list(pairs)
    wanted = max(1, math.ceil(limit / 2))
    last = len(keys) - 1
    picked = list(dict.fromkeys(keys[round(i * last / max(wanted - 1, 1))] for i in range(wanted)))
    return [c for key in picked for c in pairs[key]][:limit]


# -- running the checks --------------------------------------------------------------------------------


@dataclass
class Outcome:
    claim: Claim
    flagged: bool
    seconds: float
    malformed: bool = False
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    model_calls: int = 0  # made by the check itself (0 when the guards judged every sentence)


def _context(caller: ModelCaller, settings: Settings) -> TurnContext:
    """What ``draft_messages`` reads of a turn: the switches (the check never touches the knowledge base)."""
    return TurnContext(
        caller=caller,
        kb=cast(KnowledgeBase, None),
        collection="bench-factcheck",
        switches=Switches.from_settings(settings),
        limits=Limits.from_settings(settings, embedded=True),
    )


def _run_one(caller: ModelCaller, config: str, claim: Claim, conversation: list[dict[str, Any]]) -> Outcome:
    """One check of one claim. The turn's check follows the draft's call (its prefix then is in llama.cpp's
    cache, as in a turn); ed2d3da's shares nothing with the draft past the system prompt's start, so it
    needs no draft call before it."""
    passages = claim.as_passages()
    if config != "before":
        caller.text("draft", conversation, max_tokens=1)
    calls = caller.stats.calls
    started = time.perf_counter()
    try:
        if config == "before":
            verdicts: list[dict[str, Any]] = [{"supported": s} for s in check_before(caller, passages, claim.answer)]
        else:
            found = check_draft(
                caller, conversation, claim.question, claim.answer, passages,
                guards=config != "model", quote=config == "quoted",
            )  # fmt: skip
            verdicts = [dict(v) for v in found]
    except MalformedReply:
        return Outcome(claim, False, time.perf_counter() - started, True, model_calls=caller.stats.calls - calls)
    flagged = any(not v["supported"] for v in verdicts)
    return Outcome(claim, flagged, time.perf_counter() - started, False, verdicts, caller.stats.calls - calls)


def run_checks(
    endpoint: ChatEndpoint,
    settings: Settings,
    claims: Iterable[Claim],
    configs: tuple[str, ...] = DEFAULT_CONFIGS,
    progress: Callable[[str], None] | None = None,
) -> dict[str, list[Outcome]]:
    """Every claim through every config, one claim at a time, in the order given."""
    outcomes: dict[str, list[Outcome]] = {c: [] for c in configs}
    for n, claim in enumerate(claims, start=1):
        for config in configs:
            caller = ModelCaller(endpoint.client, endpoint.model, max_calls=10, json_mode=endpoint.json_mode)  # type: ignore[arg-type]
            conversation = draft_messages(
                TurnState(question=claim.question), _context(caller, settings), claim.as_passages()
            )
            outcome = _run_one(caller, config, claim, conversation)
            outcomes[config].append(outcome)
            if progress is not None:
                mark = "flagged" if outcome.flagged else "passed"
                progress(f"{n} {config} {claim.id} {claim.group}: {mark} ({outcome.seconds:.1f} s)")
    return outcomes


# -- figures -------------------------------------------------------------------------------------------


def _rate(outcomes: list[Outcome]) -> float | None:
    return round(sum(o.flagged for o in outcomes) / len(outcomes), 3) if outcomes else None


def score(outcomes: list[Outcome]) -> dict[str, Any]:
    """Detection, false alarms, flagged share per group, restated claims passed, seconds per check."""
    errors = [o for o in outcomes if o.claim.label == "error"]
    supported = [o for o in outcomes if o.claim.label == "supported"]
    groups = sorted({o.claim.group for o in outcomes})
    seconds = [o.seconds for o in outcomes]
    asked = [o.seconds for o in outcomes if o.model_calls]
    return {
        "claims": len(outcomes),
        "detected": _rate(errors),
        "false_alarms": _rate(supported),
        "flagged_by_group": {g: _rate([o for o in outcomes if o.claim.group == g]) for g in groups},
        "restated_passed": sum(1 for o in errors if o.claim.kind == "restated" and not o.flagged),
        "malformed": sum(o.malformed for o in outcomes),
        "seconds_per_check": round(statistics.mean(seconds), 3) if seconds else None,
        "seconds_p50": round(statistics.median(seconds), 3) if seconds else None,
        "checks_with_a_model_call": len(asked),
        "seconds_per_model_check": round(statistics.mean(asked), 3) if asked else None,
    }


def meets_goal(figures: dict[str, Any]) -> bool:
    return (
        (figures["detected"] or 0) >= GOAL_DETECTED
        and (figures["false_alarms"] or 0) <= GOAL_FALSE_ALARMS
        and figures["restated_passed"] == 0
    )


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def report(outcomes: dict[str, list[Outcome]], model: str) -> dict[str, Any]:
    """Figures per config and split, the goal, and after's seconds as a ratio of before's."""
    figures: dict[str, Any] = {"model": model, "goal": {"detected": GOAL_DETECTED, "false_alarms": GOAL_FALSE_ALARMS}}
    for config, found in outcomes.items():
        figures[config] = {split: score([o for o in found if split == "all" or o.claim.split == split])
                           for split in SPLITS}  # fmt: skip
        figures[config]["meets_goal"] = meets_goal(figures[config]["all"])
    if "before" in outcomes and "after" in outcomes:
        before, after = figures["before"]["all"], figures["after"]["all"]
        figures["seconds_ratio_after_to_before"] = _ratio(after["seconds_per_check"], before["seconds_per_check"])
        # the checks where after called the model at all: what a turn whose sentences pass the guards pays
        figures["seconds_ratio_after_model_checks_to_before"] = _ratio(
            after["seconds_per_model_check"], before["seconds_per_check"]
        )
    figures["misses"] = {
        config: [o.claim.id for o in found if o.flagged != (o.claim.label == "error")]
        for config, found in outcomes.items()
    }
    return figures


def run_factcheck_benchmark(
    settings: Settings,
    *,
    split: str = "all",
    limit: int | None = None,
    configs: tuple[str, ...] = DEFAULT_CONFIGS,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Check the selected claims with the configured model (the embedded one by default); return the figures."""
    claims = select_claims(load_claims(), split, limit)
    with open_chat_endpoint(settings) as endpoint:
        outcomes = run_checks(endpoint, settings, claims, configs, progress)
        return report(outcomes, endpoint.model)


def format_report(figures: dict[str, Any]) -> str:
    """The figures as a few lines of text: per config and split, then flagged shares per group."""
    lines = [f"model: {figures['model']}  (goal: detected >= {GOAL_DETECTED}, false alarms <= {GOAL_FALSE_ALARMS})"]
    configs = [c for c in CONFIGS if c in figures]
    for config in configs:
        for split in SPLITS:
            f = figures[config][split]
            if not f["claims"]:
                continue
            lines.append(
                f"{config:6} {split:4}  claims {f['claims']:3}  detected {f['detected']}"
                f"  false alarms {f['false_alarms']}  restated passed {f['restated_passed']}"
                f"  malformed {f['malformed']}  s/check {f['seconds_per_check']}"
            )
        lines.append(f"{config:6} meets the goal: {figures[config]['meets_goal']}")
    groups = sorted({g for c in configs for g in figures[c]["all"]["flagged_by_group"]})
    lines.append("flagged share per group (all): " + ", ".join(configs))
    for group in groups:
        shares = "  ".join(str(figures[c]["all"]["flagged_by_group"].get(group)) for c in configs)
        lines.append(f"  {group:20} {shares}")
    if "seconds_ratio_after_to_before" in figures:
        lines.append(
            f"seconds per check, after / before: {figures['seconds_ratio_after_to_before']}"
            f" (after's checks that called the model: {figures['seconds_ratio_after_model_checks_to_before']})"
        )
    return "\n".join(lines)
