"""Guards for the fact-check: what a sentence's words alone show about it, before the model is asked.

Each guard is precise rather than thorough: it marks a sentence unsupported only where its words show that
the passages cannot back it, and says why; the model judges everything else. A number or a name that none of
the passages (or the question) contains; an answer to a "what/how/which..." question whose words all come from
the question (it only restates it: "The server doesn't have pgvector." for "And what if that server doesn't
have pgvector?"); a near copy of a passage sentence that gained or lost a negation, or has another number or
name in it.
"""

from __future__ import annotations

import re
from typing import Any

from rapidfuzz.distance import Indel, Levenshtein
from sentencex import segment

from agent.core.state import Passage

_CITATIONS = re.compile(r"\s*(?:\[\d{1,3}\])+")


def claim_text(sentence: str) -> str:
    """A sentence as a claim to show: without its citation markers."""
    return _CITATIONS.sub("", sentence).strip()


_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_LIST_MARKER = re.compile(r"^\s*(?:\d{1,2}[.)]|[-*•])\s+")
# "passage 2", "passages 1 and 3", "number 4", "step 2": numbers that point at something, not quantities
_REFERENCE = re.compile(
    r"\b(?:passages?|sources?|documents?|number|no\.|steps?|items?)\s+\d+(?:\s*(?:,|and|or)\s*\d+)*", re.I
)


def _listed(text: str) -> list[str]:
    """A word list written as prose: closed classes of English read better that way than as literals."""
    return text.split()


_NUMBER_WORDS = dict(
    zip(
        _listed(
            "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"
            " seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred"
        ),
        [*range(21), 30, 40, 50, 60, 70, 80, 90, 100],
        strict=True,
    )
)
_WORD = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?(?:-[a-z0-9]+)*")
# Names and identifiers: a code span, a word with two capitals or a capital and a digit (HIV, PostgreSQL, IL-6),
# or a capitalised word inside the sentence (Rotterdam). A capital at the start of a sentence says nothing.
_NAME = re.compile(
    r"`[^`\n]+`|\b[A-Za-z]*[A-Z][a-z]*[A-Z0-9][\w-]*|(?<=[\w,;)] )[A-Z][a-z]{2,}(?:-[A-Za-z]+)*(?:['’]s)?\b"
)
_META_WORDS = frozenset({"passage", "passages", "document", "documents", "source", "sources", "answer", "question"})
# Function words: what is left of a sentence without them is what it says. A closed class of English, written
# out here because the libraries at hand either ship a tiny list (bm25s: 33 words, no wh-words or auxiliaries)
# or a large one with content words in it (scikit-learn's "system", "fire", "bill").
_FUNCTION_WORDS = frozenset(
    _listed(
        """a an the and or but nor if then else so as of to in on at by for with from into onto about over under
    between through during before after since until than that this these those there here it its it's they them
    their theirs he she him his her we us our you your i me my what which who whom whose when where why how
    whether is are was were be been being am do does did doing done has have had having can could will would
    shall should may might must not no yes don't doesn't didn't isn't aren't wasn't weren't can't cannot won't
    wouldn't shouldn't hasn't haven't hadn't also just only even still any some several many various different
    much more most few all each every both either neither other another such same own very too quite rather
    thing things way ways kind one ones something anything nothing what's that's there's"""
    )
)
_POLAR_STARTS = frozenset(
    _listed("is are was were am do does did can could will would should shall has have had may might must")
)
_LEADING_JOINERS = frozenset({"and", "but", "so", "then", "also", "ok", "okay", "now"})
_STEMMER: Any = None


def _stem(words: list[str]) -> set[str]:
    global _STEMMER
    if _STEMMER is None:  # PyStemmer (Snowball): "takes" and "take", "killed" and "kill" are one word
        import Stemmer

        _STEMMER = Stemmer.Stemmer("english")
    return set(_STEMMER.stemWords(words))


def content_words(text: str) -> set[str]:
    """The stems of what a text says: its words without function words, numbers or citations."""
    words = _WORD.findall(_CITATIONS.sub(" ", text).lower().replace("’", "'"))
    return _stem([w for w in words if w not in _FUNCTION_WORDS and not w.isdigit()])


def _norm_number(token: str) -> str:
    whole, _, decimals = token.partition(".")
    decimals = decimals.rstrip("0")
    whole = whole.lstrip("0") or "0"
    return f"{whole}.{decimals}" if decimals else whole


def numbers_in(text: str) -> set[str]:
    """Numbers a text states, normalised (1,099 and 1099; 0.50 and 0.5; "three" and 3)."""
    text = _THOUSANDS.sub("", text)
    found = {_norm_number(n) for n in _NUMBER.findall(text)}
    lowered = text.lower()
    found |= {str(v) for word, v in _NUMBER_WORDS.items() if re.search(rf"\b{word}\b", lowered)}
    return found


def names_in(text: str) -> list[str]:
    return list(dict.fromkeys(m.group(0) for m in _NAME.finditer(text)))


def _named(name: str, haystack: str) -> bool:
    """``name`` (a plural or possessive too) in the lowercased ``haystack``."""
    bare = name.strip("`").lower()
    forms = {bare, re.sub(r"(?:['’]s|s)$", "", bare)}
    return any(re.search(rf"(?<!\w){re.escape(f)}(?!\w)", haystack) for f in forms if f)


def is_polar(question: str) -> bool:
    """A yes/no question ("Does it...?"): stating its words is an answer. Not for "What if...?"."""
    words = _WORD.findall(question.lower())
    while words and words[0] in _LEADING_JOINERS:
        words = words[1:]
    return bool(words) and words[0] in _POLAR_STARTS


# A near copy of a passage sentence that differs from it by a negation, a number or a name says something else.
NEAR_COPY = 0.85  # rapidfuzz's normalised Indel similarity of the two sentences' words
NEAR_COPY_SPOTS = 2  # ... or this many changed spots of at most two words each, in a sentence of 4 kept words
_TOKEN = re.compile(r"\d+(?:\.\d+)?|[a-z]+(?:['’][a-z]+)?")
_NEGATORS = frozenset(
    _listed(
        """not no never none nor neither cannot without don't doesn't didn't isn't aren't wasn't weren't can't won't
        couldn't wouldn't shouldn't hasn't haven't hadn't fail fails failed unable lack lacks lacked lacking absent
        absence nothing nobody"""
    )
)


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(_CITATIONS.sub(" ", text).lower().replace("’", "'"))


_CLAUSE_BREAK = re.compile(r"\s*[:;]\s+|,\s+(?=(?:but|whereas|while|although|so)\s)")


def _pieces(text: str) -> list[str]:
    """A passage's sentences, and the clauses of a sentence that has several (drafts copy clauses too)."""
    out = []
    for sentence in segment("en", text):
        sentence = sentence.strip()
        clauses = [c for c in _CLAUSE_BREAK.split(sentence) if c.strip()]
        out += [sentence, *clauses] if len(clauses) > 1 else [sentence]
    return out


def closest_sentence(claim: str, passages: list[Passage]) -> tuple[int, str, float]:
    """The passage sentence (or clause) most like ``claim``: (passage number, it, similarity of their words)."""
    mine = _tokens(claim)
    best: tuple[int, str, float] = (0, "", 0.0)
    for n, passage in enumerate(passages, start=1):
        for piece in _pieces(passage["text"]):
            similarity = Indel.normalized_similarity(mine, _tokens(piece))
            if similarity > best[2]:
                best = (n, piece, similarity)
    return best


def is_near_copy(claim: str, source: str) -> bool:
    """The claim repeats the source's words but for a few: what differs then decides what it says."""
    mine, theirs = _tokens(claim), _tokens(source)
    if Indel.normalized_similarity(mine, theirs) >= NEAR_COPY:
        return True
    changed = [op for op in Levenshtein.opcodes(theirs, mine) if op.tag != "equal"]
    kept = sum(op.src_end - op.src_start for op in Levenshtein.opcodes(theirs, mine) if op.tag == "equal")
    small = all(op.src_end - op.src_start <= 2 and op.dest_end - op.dest_start <= 2 for op in changed)
    return len(changed) <= NEAR_COPY_SPOTS and small and kept >= 4


def replaced_words(claim: str, source: str) -> list[tuple[str, str]]:
    """In a near copy of ``source``, the words ``claim`` has in place of the source's: [(theirs, mine)]."""
    if not is_near_copy(claim, source):
        return []
    mine, theirs = _tokens(claim), _tokens(source)
    return [
        (" ".join(theirs[op.src_start : op.src_end]), " ".join(mine[op.dest_start : op.dest_end]))
        for op in Levenshtein.opcodes(theirs, mine)
        if op.tag == "replace"
    ]


def _differs(claim: str, source: str, names: dict[str, str]) -> str:
    """How a near copy departs from its source: a negation gained or lost, a number or name replaced."""
    mine, theirs = _tokens(claim), _tokens(source)
    for op in Levenshtein.opcodes(theirs, mine):
        if op.tag == "equal":
            continue
        old, new = theirs[op.src_start : op.src_end], mine[op.dest_start : op.dest_end]
        if any(w in _NEGATORS for w in old) != any(w in _NEGATORS for w in new):
            return "the passage says the opposite"
        old_numbers, new_numbers = [w for w in old if w[0].isdigit()], [w for w in new if w[0].isdigit()]
        if old_numbers and new_numbers and old_numbers != new_numbers:
            return f"the passage says {old_numbers[0]}, not {new_numbers[0]}"
        old_names, new_names = [w for w in old if w in names], [w for w in new if w in names]
        if old_names and new_names and old_names != new_names:
            return f"the passage says {names[old_names[0]]}, not {names[new_names[0]]}"
    return ""


COPY_KEEPS = 0.6  # a copy keeps at least this share of its source's words


def copied_from(sentence: str, passages: list[Passage]) -> int:
    """The number of the passage that ``sentence`` copies word for word (words left out, none added or
    changed, no negation left out), or 0: a copy says what its passage says, so no model need judge it."""
    mine = _tokens(claim_text(sentence))
    if len(mine) < 5:  # "Yes, it does." copies half the passages
        return 0
    for n, passage in enumerate(passages, start=1):
        for piece in _pieces(passage["text"]):
            theirs = _tokens(piece)
            ops = Levenshtein.opcodes(theirs, mine)
            if len(mine) < COPY_KEEPS * len(theirs) or any(op.tag in ("insert", "replace") for op in ops):
                continue
            left_out = [w for op in ops if op.tag == "delete" for w in theirs[op.src_start : op.src_end]]
            if not any(w in _NEGATORS for w in left_out):
                return n
    return 0


def guard(sentence: str, question: str, passages: list[Passage]) -> str:
    """Why the passages cannot support ``sentence``, from its words alone; "" when only the model can tell."""
    claim = _LIST_MARKER.sub("", claim_text(sentence))
    sources = "\n".join(f"{p['title']}\n{p['text']}" for p in passages)
    known = f"{sources}\n{question}"
    missing = sorted(numbers_in(_REFERENCE.sub(" ", claim)) - numbers_in(known), key=claim.find)
    if missing:
        return f"{missing[0]} is in none of the passages"
    lowered = known.lower()
    for name in names_in(claim):
        if name.lower() not in _META_WORDS and not _named(name, lowered):
            return f"{name.strip('`')} is in none of the passages"
    said = content_words(claim)
    asked = content_words(question)
    if said and said <= asked and not is_polar(question) and " or " not in f" {question.lower()} ":
        return "it only restates the question"
    number, source, _ = closest_sentence(claim, passages)
    if source and is_near_copy(claim, source):
        names = {t: w for name in names_in(f"{claim} {source}") for w in name.strip("`").split() for t in _tokens(w)}
        differs = _differs(claim, source, names)
        if differs:
            return f"{differs} [{number}]: {source}"
    return ""
