"""Check the draft against the passages: split into claims, judge each, revise once or mark.

All claims are judged in one call (one call is seconds on a CPU, so batching matters more than
anything else here). Unsupported claims are revised away once; with no revision left, they are
listed under the answer so the reader sees what the sources do not back.
"""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from agent.core import prompts
from agent.core.context import TurnContext
from agent.core.events import VerdictEvent
from agent.core.state import TurnState, Verdict
from agent.core.steps.common import emit, numbered, step
from agent.core.steps.draft import context_passages
from agent.models.calls import MalformedReply


def fact_check(state: TurnState, runtime: Runtime[TurnContext]) -> dict[str, Any]:
    ctx = runtime.context
    draft = state.get("draft") or ""
    passages = context_passages(state, ctx)
    if not ctx.switches.fact_check or not ctx.switches.retrieval or not passages or not draft:
        return {"answer": draft, "fact_check": [], "revised": False}
    with step(runtime, "fact_check") as result:
        messages = [
            {"role": "system", "content": f"{prompts.system(state.get('domain', ''))}\n\n{prompts.FACT_CHECK}"},
            {"role": "user", "content": f"{numbered(passages)}\n\nAnswer to check:\n{draft}"},
        ]
        try:
            checked = ctx.caller.json("fact_check", messages, prompts.FactCheck, max_tokens=600)
        except MalformedReply as exc:
            result["error"] = str(exc)
            return {"answer": draft, "fact_check": [], "revised": False, "errors": [str(exc)]}
        verdicts: list[Verdict] = [
            {
                "claim": judged.claim.strip(),
                "supported": bool(judged.supported),
                "evidence": [
                    passages[n - 1]["chunk_id"] for n in dict.fromkeys(judged.evidence) if 1 <= n <= len(passages)
                ],
            }
            for judged in checked.claims
            if judged.claim.strip()
        ]
        for verdict in verdicts:
            emit(runtime, VerdictEvent(verdict["claim"], verdict["supported"], verdict["evidence"]))
        unsupported = [v["claim"] for v in verdicts if not v["supported"]]
        result["claims"] = len(verdicts)
        result["unsupported"] = len(unsupported)
    if not unsupported:
        return {"answer": draft, "fact_check": verdicts, "revised": False}
    if ctx.limits.max_revisions > 0:
        with step(runtime, "revise"):
            listed = "\n".join(f"- {claim}" for claim in unsupported)
            revised = ctx.caller.text(
                "revise",
                [
                    {
                        "role": "system",
                        "content": f"{prompts.system(state.get('domain', ''))}\n\n{prompts.REVISE}\n{listed}",
                    },
                    {"role": "user", "content": f"{numbered(passages)}\n\nAnswer:\n{draft}"},
                ],
                max_tokens=ctx.limits.answer_max_tokens,
            ).strip()
        if revised:
            return {"answer": revised, "fact_check": verdicts, "revised": True}
    marked = draft + "\n\nNot supported by the retrieved passages:\n" + "\n".join(f"- {c}" for c in unsupported)
    return {"answer": marked, "fact_check": verdicts, "revised": False}
