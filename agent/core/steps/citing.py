"""Where in a passage a claim is backed: the supporting sentence, as character offsets into the passage text.

The fact-check knows which passages back a claim; a reader wants the sentence. The passage is split
with sentencex (as the fact-check splits the answer) and the sentence whose words are most like the
claim's (rapidfuzz's Indel similarity, the fact-check guards' measure) is the one recorded; its
offsets index the passage text exactly as stored, so every face can highlight ``text[start:end]``.
"""

from __future__ import annotations

import re
from typing import Any

from rapidfuzz.distance import Indel
from sentencex import segment

from agent.core.state import Passage

_WORD = re.compile(r"\w+")
MAX_PASSAGE_CHARS = 20_000  # a passage is a chunk (a few hundred tokens); longer text is searched in its head


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of ``text``, found in order so a repeated sentence gets its own place."""
    spans: list[tuple[int, int]] = []
    cursor = 0
    for piece in segment("en", text[:MAX_PASSAGE_CHARS]):
        sentence = piece.strip()
        if not sentence:
            continue
        start = text.find(sentence, cursor)
        if start < 0:  # the segmenter changed the text (it should not): leave this sentence out
            continue
        spans.append((start, start + len(sentence)))
        cursor = start + len(sentence)
    return spans


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def supporting_span(claim: str, text: str) -> tuple[int, int, float]:
    """(start, end, similarity) of the sentence of ``text`` most like ``claim``; (0, 0, 0.0) for empty text."""
    mine = _words(claim)
    best = (0, 0, 0.0)
    for start, end in sentence_spans(text):
        similarity = Indel.normalized_similarity(mine, _words(text[start:end]))
        if similarity > best[2]:
            best = (start, end, similarity)
    return best


def support(claim: str, evidence: list[int], passages: list[Passage]) -> list[dict[str, Any]]:
    """For each evidence passage (by chunk id), the sentence that supports ``claim``:
    ``{"chunk_id", "passage", "start", "end"}`` (passage: its number in the draft's prompt, from 1)."""
    numbers = {p["chunk_id"]: n for n, p in enumerate(passages, start=1)}
    out = []
    for chunk_id in evidence:
        number = numbers.get(chunk_id)
        if number is None:
            continue
        start, end, _ = supporting_span(claim, passages[number - 1]["text"])
        if end > start:
            out.append({"chunk_id": chunk_id, "passage": number, "start": start, "end": end})
    return out
