"""RAG metrics as Ragas defines them, each with an LLM-judged and a judge-free variant.

The LLM variants follow Ragas' metric code and docs (faithfulness, response relevancy, context
precision/recall); the non-LLM ones follow Ragas' ``NonLLM*`` and ``IDBased*`` metrics, plus two
metrics of Ladder's own (marked "not Ragas") so a run without a judge model still gives numbers.
Every metric returns a float in [0, 1], or ``nan`` where it is undefined; a judge reply that does
not fit its schema (``ValueError``) gives ``nan`` rather than an exception.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol, TypeVar

import numpy as np
from pydantic import BaseModel, Field
from rapidfuzz.distance import Levenshtein

M = TypeVar("M", bound=BaseModel)
NAN = float("nan")


class Judge(Protocol):
    """The repo's ``agent.models.calls.ModelCaller.json``: a reply parsed into ``model``, else ValueError."""

    def json(
        self, step: str, messages: list[dict[str, Any]], model: type[M], *, max_tokens: int | None = None
    ) -> M: ...


class Embedder(Protocol):
    def embed(self, texts: list[str]) -> np.ndarray:
        """One unit vector (row) per text."""
        ...


class Statements(BaseModel):
    statements: list[str]


class Verdict(BaseModel):
    statement: str
    reason: str = ""
    verdict: int = Field(ge=0, le=1)


class Verdicts(BaseModel):
    verdicts: list[Verdict]


class GeneratedQuestion(BaseModel):
    question: str
    noncommittal: int = Field(ge=0, le=1)


class Usefulness(BaseModel):
    reason: str = ""
    verdict: int = Field(ge=0, le=1)


class Attributed(BaseModel):
    statement: str
    reason: str = ""
    attributed: int = Field(ge=0, le=1)


class Attribution(BaseModel):
    classifications: list[Attributed]


def _fields(inputs: dict[str, Any]) -> str:
    return "\n\n".join(f"{k}: {v if isinstance(v, str) else json.dumps(v)}" for k, v in inputs.items())


def _ask(
    judge: Judge, step: str, instruction: str, example: tuple[dict[str, Any], BaseModel], inputs: dict, model: type[M]
) -> M:
    """One judge call: the instruction and one worked example as the system message, the inputs as the user's."""
    shot = f"Example input:\n{_fields(example[0])}\n\nExample output:\n{example[1].model_dump_json()}"
    system = f"{instruction} Reply with JSON only, in the example's format.\n\n{shot}"
    messages = [{"role": "system", "content": system}, {"role": "user", "content": _fields(inputs)}]
    return judge.json(step, messages, model)


def _average_precision(verdicts: Sequence[int]) -> float:
    """Ragas' context precision: sum_k(precision@k * v_k) / (relevant in top K); nan for K=0, 0 if none relevant."""
    if not verdicts:
        return NAN
    hits, total = 0, 0.0
    for k, v in enumerate(verdicts, start=1):
        if v:
            hits += 1
            total += hits / k
    return total / hits if hits else 0.0


# --- LLM-judged (Ragas) -----------------------------------------------------------------------

_STATEMENTS = "Break the answer to the question into standalone statements, each understandable without pronouns."
_STATEMENTS_EX = (
    {"question": "Who was Einstein?", "answer": "He was a German-born physicist, best known for relativity."},
    Statements(statements=["Einstein was a German-born physicist.", "Einstein is best known for relativity."]),
)
_NLI = "For each statement give verdict 1 if it can be inferred from the context, else 0, with a short reason."
_NLI_EX = (
    {"context": "John studies computer science.", "statements": ["John studies computer science.", "John has a job."]},
    Verdicts(
        verdicts=[
            Verdict(statement="John studies computer science.", reason="Stated in the context.", verdict=1),
            Verdict(statement="John has a job.", reason="The context says nothing about a job.", verdict=0),
        ]
    ),
)


def faithfulness(judge: Judge, question: str, answer: str, contexts: Sequence[str]) -> float:
    """Ragas Faithfulness: statements of the answer inferable from the contexts / statements judged.

    The judge splits the answer into statements, then gives a 0/1 verdict per statement against the joined
    contexts. Like Ragas, the denominator is the number of verdicts returned. nan when the answer or the
    contexts are empty, when there are no statements (e.g. a refusal), or when a reply does not fit.
    """
    if not answer.strip() or not contexts:
        return NAN
    try:
        inputs = {"question": question, "answer": answer}
        found = _ask(judge, "faithfulness.statements", _STATEMENTS, _STATEMENTS_EX, inputs, Statements)
        statements = [s for s in found.statements if s.strip()]
        if not statements:
            return NAN
        inputs = {"context": "\n".join(contexts), "statements": statements}
        verdicts = _ask(judge, "faithfulness.verdicts", _NLI, _NLI_EX, inputs, Verdicts).verdicts
    except ValueError:
        return NAN
    return sum(v.verdict for v in verdicts) / len(verdicts) if verdicts else NAN


_QUESTION = (
    "Write the question this answer answers, and say whether the answer is noncommittal (evasive, vague or "
    'ambiguous, e.g. "I don\'t know"): noncommittal 1, else 0.'
)
_QUESTION_EX = (
    {"answer": "Albert Einstein was born in Germany."},
    GeneratedQuestion(question="Where was Albert Einstein born?", noncommittal=0),
)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.atleast_2d(np.asarray(x, dtype=float))
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def answer_relevancy(judge: Judge, embedder: Embedder, question: str, answer: str, n: int = 3) -> float:
    """Ragas ResponseRelevancy (AnswerRelevancy): mean cosine(embed(generated question_i), embed(question)).

    ``n`` questions are generated from the answer (Ragas' ``strictness``, n samples of one prompt; with a greedy
    judge use n=1). If any generation flags the answer noncommittal the score is 0 (Ragas' rule). Clipped at 0
    (Ragas leaves negative cosines). nan for an empty answer, all-empty questions, or a reply that does not fit.
    """
    if not answer.strip():
        return NAN
    try:
        gens = [
            _ask(judge, "answer_relevancy.question", _QUESTION, _QUESTION_EX, {"answer": answer}, GeneratedQuestion)
            for _ in range(n)
        ]
    except ValueError:
        return NAN
    if not gens or all(not g.question.strip() for g in gens):
        return NAN
    if any(g.noncommittal for g in gens):
        return 0.0
    vecs = _unit(embedder.embed([question] + [g.question for g in gens]))
    return float(np.clip(np.mean(vecs[1:] @ vecs[0]), 0.0, 1.0))


_USEFUL = (
    "Say whether the context was useful in arriving at the given answer: verdict 1 if useful, 0 if not, with a reason."
)
_USEFUL_EX = (
    {
        "question": "Who won the 2020 T20 World Cup?",
        "context": "The 2022 T20 World Cup, postponed from 2020, was won by England.",
        "answer": "England",
    },
    Usefulness(reason="The context names England as the winner of the postponed tournament.", verdict=1),
)


def context_precision(judge: Judge, question: str, reference: str, contexts: Sequence[str]) -> float:
    """Ragas LLMContextPrecisionWithReference: average precision of the ranked contexts.

    v_k = judge's verdict that context k is useful for arriving at the reference answer;
    score = sum_k(precision@k * v_k) / (useful contexts in the top K). 0 if none useful; nan with no contexts,
    no reference, or a reply that does not fit.
    """
    if not contexts or not reference.strip():
        return NAN
    try:
        asks = [{"question": question, "context": c, "answer": reference} for c in contexts]
        verdicts = [
            _ask(judge, "context_precision.usefulness", _USEFUL, _USEFUL_EX, x, Usefulness).verdict for x in asks
        ]
    except ValueError:
        return NAN
    return _average_precision(verdicts)


_ATTRIB = (
    "Analyse each sentence of the answer and classify whether it can be attributed to the context: "
    "attributed 1 or 0, with a reason."
)
_ATTRIB_EX = (
    {
        "question": "Who was Einstein?",
        "context": "Einstein (1879-1955) was a German-born physicist.",
        "answer": "Einstein was born in 1879. He published 4 papers in 1905.",
    },
    Attribution(
        classifications=[
            Attributed(statement="Einstein was born in 1879.", reason="The context gives 1879.", attributed=1),
            Attributed(statement="He published 4 papers in 1905.", reason="Not in the context.", attributed=0),
        ]
    ),
)


def context_recall(judge: Judge, question: str, reference: str, contexts: Sequence[str]) -> float:
    """Ragas LLMContextRecall: reference sentences attributable to the joined contexts / reference sentences.

    0 when nothing was retrieved (no claim can be attributed); nan with no reference, no classified sentences,
    or a reply that does not fit.
    """
    if not reference.strip():
        return NAN
    if not contexts:
        return 0.0
    try:
        inputs = {"question": question, "context": "\n".join(contexts), "answer": reference}
        rows = _ask(judge, "context_recall.attribution", _ATTRIB, _ATTRIB_EX, inputs, Attribution).classifications
    except ValueError:
        return NAN
    return sum(r.attributed for r in rows) / len(rows) if rows else NAN


# --- without a judge ----------------------------------------------------------------------------


def _similarity(a: str, b: str) -> float:
    """Ragas NonLLMStringSimilarity's default: 1 - rapidfuzz's normalized Levenshtein distance."""
    return 1.0 - Levenshtein.normalized_distance(a, b)


def answer_similarity_nonllm(answer: str, reference: str | None) -> float:
    """Ragas NonLLMStringSimilarity: 1 - normalized Levenshtein distance (edits / longer length).

    nan without a reference."""
    return _similarity(answer, reference) if reference and reference.strip() else NAN


def context_precision_nonllm(
    contexts: Sequence[str], reference_contexts: Sequence[str], threshold: float = 0.5
) -> float:
    """Ragas NonLLMContextPrecisionWithReference: average precision with v_k = 1 when retrieved context k is at
    least ``threshold`` similar (string similarity, max over reference contexts) to a reference context.
    nan with no retrieved or no reference contexts."""
    if not contexts or not reference_contexts:
        return NAN
    return _average_precision([int(max(_similarity(c, r) for r in reference_contexts) >= threshold) for c in contexts])


def context_recall_nonllm(contexts: Sequence[str], reference_contexts: Sequence[str], threshold: float = 0.5) -> float:
    """Ragas NonLLMContextRecall: fraction of reference contexts whose best string similarity to a retrieved
    context is strictly above ``threshold`` (Ragas uses ``>`` here but ``>=`` in precision). 0 with no
    retrieved contexts; nan with no reference contexts."""
    if not reference_contexts:
        return NAN
    if not contexts:
        return 0.0
    found = [max(_similarity(c, r) for c in contexts) > threshold for r in reference_contexts]
    return sum(found) / len(found)


def context_precision_ids(retrieved_ids: Sequence[Any], reference_ids: Sequence[Any]) -> float:
    """Ragas IDBasedContextPrecision: |retrieved ∩ reference| / |retrieved|, ids compared as strings and the
    retrieved ids deduplicated; nan with nothing retrieved or no reference ids."""
    retrieved = list(dict.fromkeys(str(i) for i in retrieved_ids))
    reference = {str(i) for i in reference_ids}
    if not retrieved or not reference:
        return NAN
    return sum(i in reference for i in retrieved) / len(retrieved)


def context_recall_ids(retrieved_ids: Sequence[Any], reference_ids: Sequence[Any]) -> float:
    """Ragas IDBasedContextRecall: |retrieved ∩ reference| / |reference| (ids as strings); nan with no reference ids."""
    reference = {str(i) for i in reference_ids}
    if not reference:
        return NAN
    return len(reference & {str(i) for i in retrieved_ids}) / len(reference)


_CITATION = re.compile(r"\[\d+(?:\s*[,\-–]\s*\d+)*\]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_STOPWORD_TEXT = (
    "a an the and or but if of to in on at by for with from as is are was were be been being it its this that these "
    "those there here which who whom what when where why how not no yes so than then also can could may might will "
    "would should do does did has have had i you he she we they them his her their our your my me us"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS}


def faithfulness_nonllm(answer: str, contexts: Sequence[str], threshold: float = 0.5) -> float:
    """NOT a Ragas metric: a lexical stand-in for faithfulness.

    The answer, citation markers like ``[1]`` or ``[2, 3]`` removed, is split into sentences at ``.!?``; a
    sentence counts as supported when at least ``threshold`` of its content words (lowercased, stopwords dropped)
    occur in the contexts. Score = supported / sentences with content words; nan with no such sentence or no contexts.
    """
    if not contexts:
        return NAN
    vocabulary = set().union(*(_content_words(c) for c in contexts))
    sentences = [w for s in _SENTENCE_END.split(_CITATION.sub(" ", answer)) if (w := _content_words(s))]
    if not sentences:
        return NAN
    return sum(len(w & vocabulary) / len(w) >= threshold for w in sentences) / len(sentences)


NONCOMMITTAL = (
    "i don't know",
    "i do not know",
    "i could not answer",
    "cannot answer",
    "can't answer",
    "no information",
    "not sure",
)


def answer_relevancy_embedding(embedder: Embedder, question: str, answer: str) -> float:
    """NOT a Ragas metric: cosine(embed(question), embed(answer)) clipped to [0, 1]; 0 for a noncommittal answer
    (one containing a phrase of ``NONCOMMITTAL``, case-insensitive); nan for an empty answer."""
    if not answer.strip():
        return NAN
    if any(p in answer.lower().replace("\u2019", "'") for p in NONCOMMITTAL):
        return 0.0
    q, a = _unit(embedder.embed([question, answer]))
    return float(np.clip(q @ a, 0.0, 1.0))


def label_from_answer(answer: str, labels: Sequence[str] = ("yes", "no", "maybe")) -> str | None:
    """The label an answer gives: the label word it starts with (case-insensitive, leading punctuation and
    markdown such as ``**`` ignored), else the earliest label found anywhere as a whole word, else None."""
    if not labels:
        return None
    by_lower = {label.lower(): label for label in labels}
    pattern = r"\b(" + "|".join(re.escape(label) for label in sorted(by_lower, key=len, reverse=True)) + r")\b"
    start = re.match(pattern, re.sub(r"^[\W_]+", "", answer), re.IGNORECASE)
    found = start or re.search(pattern, answer, re.IGNORECASE)
    return by_lower[found.group(1).lower()] if found else None


def label_format(answer: str, labels: Sequence[str] = ("yes", "no", "maybe")) -> float:
    """1.0 when the answer is in the asked form: a label word first (markdown and punctuation before it
    ignored), then the reasoning (at least three more words); else 0.0."""
    if not labels:
        return 0.0
    pattern = r"(" + "|".join(re.escape(label) for label in sorted(labels, key=len, reverse=True)) + r")\b"
    text = re.sub(r"^[\W_]+", "", answer)
    first = re.match(pattern, text, re.IGNORECASE)
    return float(bool(first) and len(text[first.end() :].split()) >= 3)  # type: ignore[union-attr]


# --- registry and summary -------------------------------------------------------------------------


class MetricInfo(NamedTuple):
    variant: str  # "llm" | "non-llm" | "id-based" | "embedding"
    ragas_name: str | None  # the Ragas class it follows; None for Ladder's own
    description: str


METRICS: dict[str, MetricInfo] = {
    "faithfulness": MetricInfo("llm", "Faithfulness", "answer statements inferable from the contexts / statements"),
    "answer_relevancy": MetricInfo("llm", "ResponseRelevancy", "mean cosine(generated questions, question)"),
    "context_precision": MetricInfo("llm", "LLMContextPrecisionWithReference", "AP of contexts judged useful"),
    "context_recall": MetricInfo("llm", "LLMContextRecall", "reference sentences attributable to the contexts"),
    "context_precision_nonllm": MetricInfo("non-llm", "NonLLMContextPrecisionWithReference", "AP, Levenshtein match"),
    "context_recall_nonllm": MetricInfo("non-llm", "NonLLMContextRecall", "reference contexts matched (Levenshtein)"),
    "context_precision_ids": MetricInfo("id-based", "IDBasedContextPrecision", "|retrieved ∩ reference| / |retrieved|"),
    "context_recall_ids": MetricInfo("id-based", "IDBasedContextRecall", "|retrieved ∩ reference| / |reference|"),
    "answer_similarity_nonllm": MetricInfo("non-llm", "NonLLMStringSimilarity", "1 - normalized Levenshtein distance"),
    "faithfulness_nonllm": MetricInfo("non-llm", None, "answer sentences whose content words the contexts cover"),
    "answer_relevancy_embedding": MetricInfo("embedding", None, "cosine(question, answer); 0 if noncommittal"),
}


def bootstrap_ci(
    values: Sequence[float], confidence: float = 0.95, n_resamples: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, low, high): a percentile bootstrap interval of the mean (scipy.stats.bootstrap), NaNs ignored.

    (nan, nan, nan) with no values; (mean, mean, mean) with one value or all values equal.
    """
    from scipy.stats import bootstrap

    data = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if data.size == 0:
        return NAN, NAN, NAN
    if data.size < 2 or np.all(data == data[0]):
        return float(data[0]), float(data[0]), float(data[0])
    mean = float(data.mean())
    res = bootstrap(
        (data,), np.mean, n_resamples=n_resamples, confidence_level=confidence, method="percentile", rng=seed
    )
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return mean, low, high


# --- citations ---------------------------------------------------------------------------------


def cited_sentences(verdicts: Sequence[dict[str, Any]], passages: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """(claim, the passage sentences highlighted for it) for each claim the fact-check cited evidence for."""
    texts = {p["chunk_id"]: p["text"] for p in passages}
    out = []
    for verdict in verdicts:
        spans = [s for s in verdict.get("support") or [] if s.get("chunk_id") in texts]
        if spans:
            out.append((verdict["claim"], " ".join(texts[s["chunk_id"]][s["start"] : s["end"]] for s in spans)))
    return out


def citation_quality(
    verdicts: Sequence[dict[str, Any]], passages: Sequence[dict[str, Any]], judge: Judge | None = None,
    threshold: float = 0.5,
) -> float:  # fmt: skip
    """Share of cited claims whose highlighted sentence supports them: judged by the judge model (one NLI call
    per claim) when there is one, else by overlap (at least ``threshold`` of the claim's content words are in
    the sentence). nan when no claim was cited."""
    pairs = cited_sentences(verdicts, passages)
    if not pairs:
        return NAN
    good = 0
    for claim, sentence in pairs:
        if judge is None:
            words = _content_words(claim)
            good += bool(words) and len(words & _content_words(sentence)) / len(words) >= threshold
            continue
        try:
            inputs = {"context": sentence, "statements": [claim]}
            found = _ask(judge, "citation_quality", _NLI, _NLI_EX, inputs, Verdicts).verdicts
        except ValueError:
            return NAN
        good += bool(found) and found[0].verdict == 1
    return good / len(pairs)
