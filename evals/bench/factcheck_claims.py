"""The fact-check benchmark's claims, written from the shared corpora by ``python -m evals.bench.factcheck_claims``.

Each item is a question, two or three passages, a one-sentence answer claim citing the source passage, a label
(``supported`` or ``error``) and a kind. Sources come in pairs that share their question and passages: one
supported claim (a sentence of the source passage, verbatim or lightly edited) and one planted error:

- ``negation``: a "not" inserted or removed, or "cannot" for "can";
- ``number``: a number changed to one that is in none of the passages;
- ``entity``: a term (a MeSH heading found in the text, an acronym, a name or a code span) replaced by a term
  from another document of the same corpus that none of the passages contains;
- ``swapped``: two numbers of the sentence swapped, or a term replaced by another term of the given passages
  (nothing new appears: only the passages' meaning can tell);
- ``other_passage``: a sentence from another document of the corpus, not among the passages, with the citation;
- ``restated``: hand-written, an answer that only restates the question (issue 15's "The server doesn't have
  pgvector [2]." for "And what if that server doesn't have pgvector?");
- ``reworded``: hand-written, an error in an answer that copies no passage (roles swapped, an opposite, a
  negation in other words), beside a supported answer that is reworded too.

PubMedQA (MIT) gives abstracts: a question, its contexts (sections) and MeSH headings. Ladder's ``docs/`` gives
paragraphs under headings. Everything is chosen deterministically (sorted ids, CRC32 of names), so running the
script again on the same corpora writes the same file; ``docs/`` changes as Ladder does, so the committed file
is the set, and this script is how it was made. A pair's two items share its ``split`` (tune or test): tuning
on one half and reporting on the other never puts a source's twin on both sides.
"""

from __future__ import annotations

import json
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sentencex import segment

from evals.datasets import read_pubmedqa

CLAIMS_FILE = Path(__file__).resolve().parents[1] / "data" / "claims.jsonl"
DOCS = Path(__file__).resolve().parents[2] / "docs"
DOC_FILES = ("overview.md", "database.md", "ingesting.md", "searching.md", "agent.md")
PUBMED_PAIRS = 40
DOCS_PAIRS = 16
# The order error kinds are planted in, one per pair; a source that cannot take a kind is tried with the next.
KINDS = (
    *("negation", "number", "entity", "other_passage", "swapped", "negation", "entity"),
    *("other_passage", "number", "negation", "entity", "other_passage", "number", "swapped"),
)
# MeSH check tags and broad headings: words like "Female" or "Prognosis" are not the entity a claim is about.
MESH_SKIP = 12  # headings on more than this many abstracts are too general to swap

_NUMBER = re.compile(r"(?<![\w.\-])\d+(?:\.\d+)?(?![\w])")
_ACRONYM = re.compile(r"\b[A-Z][A-Z0-9]{1,5}s?\b")
_DEFINED = re.compile(r"\(([A-Z][A-Za-z0-9]{0,2}[A-Z][A-Za-z0-9]{0,3})\)")  # "normal sinus rhythm (NSR)"
_CODE = re.compile(r"`[^`\n]{2,40}`")
_NAME = re.compile(r"(?<=[a-z,;:] )[A-Z][a-zA-Z]{2,}\b")
_LEADS = re.compile(
    r"^(?:however|furthermore|moreover|in addition|additionally|thus|therefore|overall|in conclusion|"
    r"finally|also|in summary|importantly|conversely|similarly|in contrast|consequently),\s+",
    re.I,
)
_FOUND_THAT = re.compile(
    r"^(?:we|the authors|this study|our (?:study|results|data|findings)|the results|these results)\s+"
    r"(?:found|find|show|showed|shows|demonstrated|demonstrate|suggest|suggested|observed|indicate|indicated)\s+"
    r"that\s+",
    re.I,
)
_SYNONYMS = (
    (" compared with ", " compared to "),
    (" approximately ", " about "),
    (" in order to ", " to "),
    (" demonstrated ", " showed "),
    (" revealed ", " showed "),
    (" utilized ", " used "),
    (" was observed", " was seen"),
    (" were observed", " were seen"),
    (" a total of ", " "),
    (" subjects ", " participants "),
)
# (pattern, replacement): the first that matches the sentence plants the negation.
_NEGATIONS = (
    (r"\b(did|does|do|was|were|is|are|could|would|has|have|had|should|will|may) not\b", r"\1"),
    (r"\bcannot\b", "can"),
    (r"\bno significant\b", "a significant"),
    (r"^No ", "Some "),
    (r"\bnot\s+(?!only\b)(?=\w)", ""),
    (r"\b(was|were|is|are)\b", r"\1 not"),
    (r"\bcan\b", "cannot"),
    (r"\b(may|might|should|could|would|will|must)\b", r"\1 not"),
    (r"\b(has|have|had) been\b", r"\1 not been"),
    (r"\bsignificantly\b", "not significantly"),
)


def crc(*parts: object) -> int:
    """A stable hash (Python's hash() is salted per process)."""
    return zlib.crc32("|".join(map(str, parts)).encode())


def sentences(text: str) -> list[str]:
    return [s.strip() for s in segment("en", text) if s.strip()]


def words(text: str) -> int:
    return len(text.split())


def with_citation(sentence: str, number: int) -> str:
    """The sentence as an answer writes it: the citation before the final full stop."""
    body = sentence.rstrip().rstrip(".;:")
    return f"{body} [{number}]."


def capitalised(text: str) -> str:
    return text[:1].upper() + text[1:] if text else text


@dataclass
class Source:
    """A passage a claim is drawn from, the corpus it belongs to, and what it offers to swap."""

    key: str  # pubmedqa:PMID#context or docs:file#paragraph
    question: str
    title: str
    text: str
    companions: list[dict[str, str]]  # the other passages given with it
    terms: list[str] = field(default_factory=list)  # entities of the source's document


@dataclass
class Corpus:
    """Sources, a pool of terms per document for swapping, and sentences of other documents."""

    name: str
    sources: list[Source]
    terms_by_doc: dict[str, list[str]]
    sentences_by_doc: dict[str, list[str]]
    related: Callable[[Source], list[str]]  # other documents, most similar first


def doc_of(key: str) -> str:
    return key.split("#", 1)[0]


def all_text(source: Source) -> str:
    return "\n".join([source.text, *(p["text"] for p in source.companions)])


def contains(text: str, term: str) -> bool:
    """``term`` as a whole word (or code span) in ``text``: case-insensitively for a lowercase term, else exactly."""
    flags = 0 if term != term.lower() else re.I
    return re.search(rf"(?<![\w-]){re.escape(term)}(?![\w-])", text, flags) is not None


# -- PubMedQA ----------------------------------------------------------------------------------------


def _mesh_terms(item: dict[str, Any], counts: Counter[str]) -> list[str]:
    """MeSH headings of the abstract that its text uses as words (lowercased), specific ones only."""
    text = item["ABSTRACT"].lower()
    terms = []
    for mesh in item["MESHES"]:
        term = mesh.lower()
        if "," in term or counts[mesh] > MESH_SKIP or len(term) < 4:
            continue
        if contains(text, term):
            terms.append(term)
    terms += sorted(set(_DEFINED.findall(item["ABSTRACT"])))  # abbreviations the abstract defines
    return terms


def pubmed_corpus() -> Corpus:
    """Abstracts as sources: a results-like context, one more context of the abstract, one of another."""
    items = read_pubmedqa()
    counts: Counter[str] = Counter(m for item in items.values() for m in item["MESHES"])
    ids = sorted(items)
    terms = {pmid: _mesh_terms(items[pmid], counts) for pmid in ids}
    sents = {pmid: [s for c in items[pmid]["CONTEXTS"] for s in sentences(c)] for pmid in ids}
    meshes = {pmid: set(items[pmid]["MESHES"]) for pmid in ids}

    def related(source: Source) -> list[str]:
        pmid = doc_of(source.key).split(":", 1)[1]
        others = [p for p in ids if p != pmid]
        ranked = sorted(others, key=lambda p: (-len(meshes[p] & meshes[pmid]), crc(pmid, p)))
        return [f"pubmedqa:{p}" for p in ranked]

    sources = []
    for pmid in sorted(ids, key=lambda p: crc("pubmed", p)):
        item = items[pmid]
        contexts = item["CONTEXTS"]
        usable = [i for i, c in enumerate(contexts) if 25 <= words(c) <= 110]
        if len(usable) < 2:
            continue
        main = max(usable, key=lambda i: (item["LABELS"][i] in {"RESULTS", "CONCLUSIONS"}, i))
        other = next(i for i in reversed(usable) if i != main)
        companions = [{"title": f"PubMed {pmid}", "text": contexts[other]}]
        if crc(pmid, "third") % 2:  # every other source also gets a passage from an unrelated abstract
            stranger = ids[crc(pmid, "stranger") % len(ids)]
            far = [c for c in items[stranger]["CONTEXTS"] if 20 <= words(c) <= 70]
            if stranger != pmid and far:
                companions.append({"title": f"PubMed {stranger}", "text": far[0]})
        sources.append(
            Source(f"pubmedqa:{pmid}#{main}", item["QUESTION"], f"PubMed {pmid}", contexts[main], companions)
        )
    return Corpus("pubmedqa", sources, {f"pubmedqa:{p}": terms[p] for p in ids},
                  {f"pubmedqa:{p}": sents[p] for p in ids}, related)  # fmt: skip


# -- docs/ -------------------------------------------------------------------------------------------


def _doc_paragraphs(name: str) -> Iterator[tuple[str, str]]:
    """(heading, paragraph) of a Markdown page: prose and list paragraphs, no code blocks or headings."""
    heading = ""
    for block in re.split(r"\n\s*\n", (DOCS / name).read_text(encoding="utf-8")):
        lines = [line for line in block.splitlines() if line.strip()]
        if not lines:
            continue
        if lines[0].startswith("#"):
            heading = lines[0].lstrip("# ").strip()
            lines = lines[1:]
        if not lines or lines[0].startswith(("    ", "```", "|")):
            continue
        yield heading, " ".join(line.strip() for line in lines)


def _doc_terms(text: str) -> list[str]:
    return sorted(set(_CODE.findall(text)) | set(_NAME.findall(text)) | set(_ACRONYM.findall(text)))


def docs_corpus() -> Corpus:
    """Paragraphs of Ladder's docs as sources, with a neighbouring paragraph and one of another page."""
    pages = {name: list(_doc_paragraphs(name)) for name in DOC_FILES}
    terms = {f"docs:{n}": _doc_terms(" ".join(p for _, p in paras)) for n, paras in pages.items()}
    sents = {f"docs:{n}": [s for _, p in paras for s in sentences(p)] for n, paras in pages.items()}
    sources = []
    for name, paras in pages.items():
        for i, (heading, text) in enumerate(paras):
            if not 30 <= words(text) <= 130 or not heading:
                continue
            neighbour = paras[i - 1] if i else paras[i + 1]
            companions = [{"title": f"{name}: {neighbour[0]}", "text": neighbour[1]}]
            far_page = DOC_FILES[(DOC_FILES.index(name) + 1 + crc(name, i) % 4) % len(DOC_FILES)]
            far = [p for p in pages[far_page] if 20 <= words(p[1]) <= 90]
            if crc(name, i, "third") % 2 and far:
                heading_far, text_far = far[crc(name, i) % len(far)]
                companions.append({"title": f"{far_page}: {heading_far}", "text": text_far})
            question = f"What does Ladder's documentation say about {heading[:1].lower() + heading[1:]}?"
            sources.append(Source(f"docs:{name}#{i}", question, f"{name}: {heading}", text, companions))
    sources.sort(key=lambda s: crc("docs", s.key))

    def related(source: Source) -> list[str]:
        name = doc_of(source.key)
        return sorted((k for k in sents if k != name), key=lambda k: crc(name, k))

    return Corpus("docs", sources, terms, sents, related)


# -- edits -------------------------------------------------------------------------------------------


def candidate_sentences(source: Source) -> list[str]:
    """Sentences of the source passage that make a claim of a sensible length, in a stable order."""
    found = [re.sub(r"^[-*] ", "", s) for s in sentences(source.text)]
    found = [s for s in found if 8 <= words(s) <= 40 and s.endswith((".", ")")) and s.count("`") % 2 == 0]
    return sorted(found, key=lambda s: crc(source.key, s))


def light_edit(sentence: str, key: str) -> tuple[str, str]:
    """A supported claim: the sentence without a leading connective or "we found that", a plain synonym or two."""
    text, edits = sentence, []
    for pattern, name in ((_LEADS, "dropped the connective"), (_FOUND_THAT, "dropped 'found that'")):
        if pattern.search(text):
            text, edits = capitalised(pattern.sub("", text)), [*edits, name]
    if crc(key, "synonym") % 2:
        for old, new in _SYNONYMS:
            if old in text:
                text, edits = text.replace(old, new, 1), [*edits, f"{old.strip()} -> {new.strip()}"]
                break
    if crc(key, "parenthesis") % 3 == 0 and re.search(r" \([^()]{2,60}\)", text):
        text, edits = re.sub(r" \([^()]{2,60}\)", "", text, count=1), [*edits, "dropped a parenthesis"]
    return text, "; ".join(edits) or "verbatim"


def plant_negation(sentence: str, source: Source, corpus: Corpus) -> tuple[str, str] | None:
    for pattern, replacement in _NEGATIONS:
        match = re.search(pattern, sentence)
        if match:
            changed = sentence[: match.start()] + match.expand(replacement) + sentence[match.end() :]
            changed = re.sub(r"\s{2,}", " ", changed)
            return changed, f"{match.group(0)!r} -> {match.expand(replacement)!r}"
    return None


def _new_number(value: str, taken: str, seed: int) -> str:
    """A different number of the same shape that the passages do not contain."""
    if "." in value:
        decimals = value.split(".")[1]
        step = 10 ** -len(decimals)
        for k in range(2, 40):
            candidate = f"{float(value) + k * step * (1 + seed % 3):.{len(decimals)}f}"
            if not contains(taken, candidate):
                return candidate
    number = int(value)
    if 1900 <= number <= 2030:
        deltas = [3, -4, 5, -6, 7]
    else:
        deltas = [max(1, round(number * f)) for f in (0.3, 0.45, 0.6, 0.8)] + [1, 2, 3]
    for delta in deltas[seed % 2 :]:
        candidate = str(number + delta)
        if not contains(taken, candidate):
            return candidate
    return str(number * 10 + 7)


def plant_number(sentence: str, source: Source, corpus: Corpus) -> tuple[str, str] | None:
    numbers = [m for m in _NUMBER.finditer(sentence) if len(m.group(0).replace(".", "")) >= 2]
    if not numbers:
        return None
    match = numbers[crc(source.key, "number") % len(numbers)]
    new = _new_number(match.group(0), all_text(source), crc(source.key))
    return sentence[: match.start()] + new + sentence[match.end() :], f"{match.group(0)} -> {new}"


def _terms_in(sentence: str, terms: list[str]) -> list[str]:
    return [t for t in terms if contains(sentence, t)]


def _replace_term(sentence: str, old: str, new: str) -> str:
    match = re.search(rf"(?<![\w-]){re.escape(old)}(?![\w-])", sentence, flags=re.I)
    assert match is not None
    found = match.group(0)
    if found[:1].isupper() and not new[:1].isupper():
        new = capitalised(new)
    return sentence[: match.start()] + new + sentence[match.end() :]


def _term_kind(term: str) -> str:
    if term.startswith("`"):
        return "code"
    return "acronym" if term.isupper() else "name" if term[:1].isupper() else "term"


def _same_shape(old: str, new: str) -> bool:
    """Swap like for like: an acronym for an acronym, code for code, a lowercase term for one."""
    return _term_kind(old) == _term_kind(new) and old.lower() != new.lower()


def plant_entity(sentence: str, source: Source, corpus: Corpus) -> tuple[str, str] | None:
    mine = _terms_in(sentence, corpus.terms_by_doc[doc_of(source.key)])
    if not mine:
        return None
    old = mine[crc(source.key, "entity") % len(mine)]
    taken = all_text(source)
    for other in corpus.related(source)[:60]:
        pool = [t for t in corpus.terms_by_doc[other] if _same_shape(old, t) and not contains(taken, t.strip("`"))]
        if pool:
            new = pool[crc(source.key, other) % len(pool)]
            return _replace_term(sentence, old, new), f"{old} -> {new} (from {other})"
    return None


def _number_shape(number: str) -> tuple[int, int]:
    whole, _, decimals = number.partition(".")
    return len(whole), len(decimals)


def _same_number_shape(a: str, b: str) -> bool:
    """Numbers a reader could confuse: the same digits before and after the point, no years."""
    years = any(1900 <= float(n) <= 2030 and "." not in n for n in (a, b))
    return _number_shape(a) == _number_shape(b) and not years


def plant_swap(sentence: str, source: Source, corpus: Corpus) -> tuple[str, str] | None:
    numbers = list(dict.fromkeys(m.group(0) for m in _NUMBER.finditer(sentence)))
    alike = [(a, b) for a in numbers for b in numbers if a < b and _same_number_shape(a, b)]
    if alike:
        a, b = alike[crc(source.key, "swap") % len(alike)]
        swapped = re.sub(rf"(?<![\w.]){re.escape(a)}(?![\w])|(?<![\w.]){re.escape(b)}(?![\w])",
                         lambda m: b if m.group(0) == a else a, sentence)  # fmt: skip
        return swapped, f"swapped {a} and {b}"
    taken = all_text(source)
    mine = _terms_in(sentence, corpus.terms_by_doc[doc_of(source.key)])
    pool = sorted({t for terms in corpus.terms_by_doc.values() for t in terms if contains(taken, t.strip("`"))})
    for old in mine:
        options = [t for t in pool if _same_shape(old, t) and not contains(sentence, t) and t != t.lower()]
        if options:
            new = options[crc(source.key, old) % len(options)]
            return _replace_term(sentence, old, new), f"{old} -> {new} (both in the passages)"
    return None


def plant_other_passage(sentence: str, source: Source, corpus: Corpus) -> tuple[str, str] | None:
    taken = all_text(source)
    for other in corpus.related(source)[:20]:
        if other == doc_of(source.key):
            continue
        options = [re.sub(r"^[-*] ", "", s) for s in corpus.sentences_by_doc[other]]
        options = [s for s in options if 10 <= words(s) <= 35 and s not in taken and s.endswith((".", ")"))]
        if options:
            return options[crc(source.key, other) % len(options)], f"a sentence of {other}"
    return None


PLANTERS = {
    "negation": plant_negation,
    "number": plant_number,
    "entity": plant_entity,
    "swapped": plant_swap,
    "other_passage": plant_other_passage,
}


def _pair(source: Source, corpus: Corpus, kind: str, split: str) -> list[dict[str, Any]] | None:
    """The supported claim and the planted error of one source, or None if no sentence takes the kind."""
    for sentence in candidate_sentences(source):
        supported, how = light_edit(sentence, source.key)
        planted = PLANTERS[kind](supported, source, corpus)  # the pair differs only by the planted error
        if planted is None or planted[0] == supported:
            continue
        passages = [{"title": source.title, "text": source.text}, *source.companions]
        order = sorted(range(len(passages)), key=lambda i: crc(source.key, "order", i))
        shuffled = [passages[i] for i in order]
        cite = order.index(0) + 1
        base = {"split": split, "source": source.key, "question": source.question, "passages": shuffled}
        return [
            {**base, "answer": with_citation(supported, cite), "label": "supported", "kind": "supported",
             "edit": how},
            {**base, "answer": with_citation(planted[0], cite), "label": "error", "kind": kind, "edit": planted[1]},
        ]  # fmt: skip
    return None


def corpus_pairs(corpus: Corpus, count: int, offset: int) -> list[list[dict[str, Any]]]:
    """``count`` pairs, the error kinds in KINDS order (a source that cannot take one is kept for the next)."""
    pairs: list[list[dict[str, Any]]] = []
    waiting = list(corpus.sources)
    planted: Counter[str] = Counter()
    for n in range(count):
        kind = KINDS[(n + offset) % len(KINDS)]
        split = "tune" if (planted[kind] + offset) % 2 == 0 else "test"  # each kind half in each split
        planted[kind] += 1
        for i, source in enumerate(waiting):
            made = _pair(source, corpus, kind, split)
            if made is not None:
                pairs.append(made)
                del waiting[i]
                break
        else:
            raise ValueError(f"no {corpus.name} source left takes a {kind} error")
    return pairs


# -- hand-written: answers that only restate the question, errors in reworded answers ------------------------

# (question, passages as phrases that find them, the error, a supported answer). A phrase starting with
# "pubmedqa:PMID " names a context of that abstract; any other phrase finds a paragraph of docs/.
HAND_RESTATED = (
    (
        "And what if that server doesn't have pgvector?",
        ["Ladder keeps everything in one PostgreSQL", "Set `DATABASE_URL` to point", "creates the `vector` extension"],
        "The server doesn't have pgvector [3].",
        "Then Ladder creates the vector extension itself, which needs a user with the right to do that [3].",
    ),
    (
        "What happens when an ingest is killed midway?",
        ["Killing an ingest at any point is safe", "Every document is stored with a hash"],
        "The ingest is killed midway [1].",
        "The next run finds whole documents or none and redoes only what is missing [1].",
    ),
    (
        "How are PDF files split into chunks?",
        ["Chunks are counted in tiktoken tokens", "PDF (`.pdf`)"],
        "PDF files are split into chunks [2].",
        "A PDF gets one section per page, and each section is cut into chunks of 256 tokens by default [2][1].",
    ),
    (
        "Where does the embedded database keep its data?",
        ["The first start runs initdb", "Several Ladder processes share one server"],
        "The embedded database keeps its data [1].",
        "It keeps it in LADDER_DATA_DIR, by default the user's data folder such as ~/.local/share/ladder [1].",
    ),
    (
        "Which file types can Ladder ingest?",
        ["Ladder ingests Markdown, plain text", "Zip archives (`.zip`)"],
        "Ladder can ingest several file types [1].",
        "It reads Markdown, plain text, HTML, PDF and JSONL files, and zip archives of them [1][2].",
    ),
    (
        "What does hybrid search do?",
        ["reciprocal rank fusion of the two rankings", "Words in the title of a document"],
        "That is what hybrid search does [1].",
        "It fuses the dense and the keyword rankings by reciprocal rank fusion [1].",
    ),
    (
        "Why does Ladder run PostgreSQL as the ladder-pg user when it runs as root?",
        ["PostgreSQL refuses to run as root", "Several Ladder processes share one server"],
        "When Ladder runs as root, it runs PostgreSQL as the ladder-pg user [1].",
        "Because PostgreSQL refuses to run as root [1].",
    ),
    (
        "Which groups were the women in the mammography trial randomized to?",
        ["pubmedqa:10808977 Women were randomized", "pubmedqa:10808977 Compared to usual care alone"],
        "The women in the trial were randomized to groups [1].",
        "They were assigned to usual care, tailored print communications or tailored telephone counseling [1].",
    ),
)
# Both answers reworded, neither a copy of a passage: only the meaning tells the error (roles swapped, an
# opposite, a negation in other words).
HAND_REWORDED = (
    (
        "How long does the embedded database take to start?",
        ["The first start runs initdb", "Ladder keeps everything in one PostgreSQL"],
        "Every start takes a few seconds, because each one runs initdb [1].",
        "The first start takes a few seconds for initdb; after that it starts in a fraction of a second [1].",
    ),
    (
        "Does the embedded database listen on a network port?",
        ["The first start runs initdb", "Several Ladder processes share one server"],
        "Yes, it listens on a network port as well as on a Unix socket [1].",
        "No, it only listens on a Unix socket [1].",
    ),
    (
        "What happens to a file that the ingest skips?",
        ["A skipped file or document never stops the run", "Empty files, binary files"],
        "A skipped file stops the run, and what was ingested from it before is removed [1].",
        "The run goes on, and whatever was ingested from that file earlier stays [1].",
    ),
    (
        "What does --prune do?",
        ["`--prune` removes documents that lived", "Every document is stored with a hash"],
        "It deletes the documents whose files are still under the paths given [1].",
        "It deletes the documents whose files have disappeared from the paths given [1].",
    ),
    (
        "How does keyword search weigh the words of a query?",
        ["rare words count for more than common ones", "Words in the title of a document"],
        "Frequent words weigh more than uncommon ones [1].",
        "Uncommon words weigh more than frequent ones [1].",
    ),
    (
        "Did telephone counseling do better than tailored print?",
        ["pubmedqa:10808977 Compared to usual care alone", "pubmedqa:10808977 Women were randomized"],
        "Tailored print put more women on schedule for mammograms than telephone counseling did [1].",
        "Yes: more women were on schedule with telephone counseling than with tailored print, after the first "
        "year [1].",
    ),
    (
        "With --recency, what happens to results that have no date?",
        ["Results without a date are not", "Words in the title of a document"],
        "Results without a date are ranked below every dated result [1].",
        "They keep their score: only results with a date are discounted by age [1].",
    ),
    (
        "Can two Ladder processes use the embedded database at once?",
        ["Several Ladder processes share one server", "The first start runs initdb"],
        "Yes, and the first of them to exit stops the server for all of them [1].",
        "Yes, they share one server, which stops when the last of them exits [1].",
    ),
)


def _find_passage(phrase: str, pages: dict[str, list[tuple[str, str]]], pubmed: dict[str, Any]) -> dict[str, str]:
    if phrase.startswith("pubmedqa:"):
        pmid, _, words_ = phrase.removeprefix("pubmedqa:").partition(" ")
        text = next(c for c in pubmed[pmid]["CONTEXTS"] if c.startswith(words_))
        return {"title": f"PubMed {pmid}", "text": text}
    for name, paras in pages.items():
        for heading, text in paras:
            if phrase in text:
                return {"title": f"{name}: {heading}", "text": text}
    raise ValueError(f"no paragraph of docs/ contains {phrase!r}")


def hand_pairs() -> list[list[dict[str, Any]]]:
    """The hand-written pairs: a restating answer (an error) and a supported answer to the same question."""
    pages = {name: list(_doc_paragraphs(name)) for name in DOC_FILES}
    pubmed = read_pubmedqa()
    pairs = []
    hand = [(*item, "restated") for item in HAND_RESTATED] + [(*item, "reworded") for item in HAND_REWORDED]
    for n, (question, phrases, error, supported, kind) in enumerate(hand):
        passages = [_find_passage(p, pages, pubmed) for p in phrases]
        base = {"split": "tune" if n % 2 == 0 else "test", "source": "hand", "question": question,
                "passages": passages}  # fmt: skip
        how = "restates the question" if kind == "restated" else "hand-written"
        pairs.append(
            [
                {**base, "answer": supported, "label": "supported", "kind": "supported", "edit": "hand-written"},
                {**base, "answer": error, "label": "error", "kind": kind, "edit": how},
            ]
        )
    return pairs


def build_claims() -> list[dict[str, Any]]:
    """Every item, numbered: PubMedQA pairs, docs/ pairs, the hand-written pairs."""
    pairs = [
        *corpus_pairs(pubmed_corpus(), PUBMED_PAIRS, 0),
        *corpus_pairs(docs_corpus(), DOCS_PAIRS, 3),
        *hand_pairs(),
    ]
    items = []
    for n, pair in enumerate(pairs, start=1):
        for item in pair:
            items.append({"id": f"{n:03d}-{item['label']}", **item})
    return items


def write_claims(path: Path = CLAIMS_FILE) -> Path:
    """Write the set as JSONL, one item a line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for item in build_claims():
            handle.write(json.dumps(item, ensure_ascii=False) + "\n")
    return path


if __name__ == "__main__":
    written = write_claims()
    print(f"wrote {sum(1 for _ in written.open())} claims to {written}")
