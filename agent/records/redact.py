"""Redaction: secrets always, obvious personal data (emails, phone numbers) when asked.

Secrets are found by Yelp's detect-secrets: the patterns of its vendor detectors (AWS, GitHub, GitLab,
Slack, Stripe, JWTs, private keys, npm, PyPI, SendGrid, Twilio, Telegram, Discord, Azure, IBM, ...)
and of its keyword detector (``password: x``, ``"api_key": "..."``). Ladder adds only the forms that
library has no detector for: Google ``AIza`` and Hugging Face ``hf_`` keys, OpenAI ``sk-`` keys in
their current format, ``Authorization: Basic|Bearer``, a password told in prose, whole PEM blocks,
passwords in URLs, and Ladder's own ``ldr_`` tokens. Its high-entropy detectors are left out: they
flag ordinary words and ids, and redacted questions are what the model sees.

Applied to questions before they are stored or sent to a model (agent.core.turn, unless
``LADDER_REDACT_QUESTIONS=off``) and to what leaves Ladder as data (exports, `ladder logs`).
Ladder's own settings keep keys as SecretStr and URLs are redacted when shown; this is the wall
for a key a user pasted.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from detect_secrets.plugins import keyword
from detect_secrets.plugins.artifactory import ArtifactoryDetector
from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.azure_storage_key import AzureStorageKeyDetector
from detect_secrets.plugins.cloudant import CloudantDetector
from detect_secrets.plugins.discord import DiscordBotTokenDetector
from detect_secrets.plugins.github_token import GitHubTokenDetector
from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
from detect_secrets.plugins.ibm_cloud_iam import IbmCloudIamDetector
from detect_secrets.plugins.ibm_cos_hmac import IbmCosHmacDetector
from detect_secrets.plugins.jwt import JwtTokenDetector
from detect_secrets.plugins.mailchimp import MailchimpDetector
from detect_secrets.plugins.npm import NpmDetector
from detect_secrets.plugins.openai import OpenAIDetector
from detect_secrets.plugins.private_key import PrivateKeyDetector
from detect_secrets.plugins.pypi_token import PypiTokenDetector
from detect_secrets.plugins.sendgrid import SendGridDetector
from detect_secrets.plugins.slack import SlackDetector
from detect_secrets.plugins.softlayer import SoftlayerDetector
from detect_secrets.plugins.square_oauth import SquareOAuthDetector
from detect_secrets.plugins.stripe import StripeDetector
from detect_secrets.plugins.telegram_token import TelegramBotTokenDetector
from detect_secrets.plugins.twilio import TwilioKeyDetector

SECRET = "[SECRET]"
_DETECTORS = (
    ArtifactoryDetector,
    AWSKeyDetector,
    AzureStorageKeyDetector,
    CloudantDetector,
    DiscordBotTokenDetector,
    GitHubTokenDetector,
    GitLabTokenDetector,
    IbmCloudIamDetector,
    IbmCosHmacDetector,
    JwtTokenDetector,
    MailchimpDetector,
    NpmDetector,
    OpenAIDetector,
    PrivateKeyDetector,
    PypiTokenDetector,
    SendGridDetector,
    SlackDetector,
    SoftlayerDetector,
    SquareOAuthDetector,
    StripeDetector,
    TelegramBotTokenDetector,
    TwilioKeyDetector,
)
# (pattern, group holding the secret): the library's vendor patterns mark the whole match; of its
# keyword patterns, those for quoted values (`"api_key": "..."`, `secret = '...'`). Its patterns for
# unquoted values are written for config files and would take the next word of any sentence that
# says "password:", so unquoted values are Ladder's rules below.
LIBRARY_PATTERNS: tuple[tuple[re.Pattern[str], int], ...] = tuple(
    (pattern, 0) for detector in _DETECTORS for pattern in detector.denylist
) + tuple(keyword.QUOTES_REQUIRED_DENYLIST_REGEX_TO_GROUP.items())
# A value that looks like a secret, not like a word of a sentence: it holds a digit or a symbol.
_SECRETLIKE = r"(?=[^\s\"'“”]*[0-9@#$%^&*+=~/\\|<>_-])"
_KEYWORDS = "|".join((*keyword.DENYLIST, "token"))  # the library's secret-sounding names, and token
_PROSE = r"(?i)\b(?:password|passphrase|passcode|passwd|pin)\s+(?:is|was)\s*:?\s*"
OWN_PATTERNS: tuple[tuple[re.Pattern[str], int], ...] = (
    (re.compile(r"\bAIza[0-9A-Za-z_-]{35}"), 0),  # Google API keys
    (re.compile(r"\bhf_[A-Za-z0-9]{30,}"), 0),  # Hugging Face tokens
    (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), 0),  # OpenAI-style API keys (sk-, sk-proj-)
    (re.compile(r"\bldr_[A-Za-z0-9_-]{20,}"), 0),  # Ladder's own API tokens
    (re.compile(r"(?i)\bAuthorization\s*:\s*[A-Za-z-]+\s+(\S+)"), 1),  # any scheme of the header
    (re.compile(r"(?i)\b(?:Bearer|Basic)\s+(" + _SECRETLIKE + r"[A-Za-z0-9._~+/=-]{8,})"), 1),
)
OWN_ASSIGNMENTS: tuple[tuple[re.Pattern[str], int], ...] = (
    # Unquoted assignments: after "=" any value; after ":" one that looks like a secret
    (re.compile(rf"(?i)\b\w*(?:{_KEYWORDS})\w*\s*=\s*([^\s,;\"'`]+)"), 1),
    (re.compile(rf"(?i)\b\w*(?:{_KEYWORDS})\w*\s*:\s*({_SECRETLIKE}[^\s,;\"'`]+)"), 1),
    # A password told in prose: "my password is hunter2", "the passphrase was: 'two words'"
    (re.compile(_PROSE + r"[\"“']([^\"”'\n]{1,200})[\"”']"), 1),
    (re.compile(_PROSE + r"(" + _SECRETLIKE + r"[^\s\"“']\S*)"), 1),
)
# The patterns of the form "<name> = <value>" (the keyword detector's, IBM's, SoftLayer's, Cloudant's
# and Ladder's) are most of the time spent; each needs one of these words: a text without any skips them.
_ASSIGNMENT_WORDS = re.compile(r"(?i)key|pw|pass|pin|token|secret|contrase")
_ASSIGNMENTS = frozenset(
    pattern
    for pattern, group in LIBRARY_PATTERNS
    if group > 0 or pattern.pattern.startswith("(?:(?<=\\W)|(?<=^))")  # build_assignment_regex's opening
) | frozenset(pattern for pattern, _ in OWN_ASSIGNMENTS)
PATTERNS = LIBRARY_PATTERNS + OWN_PATTERNS + OWN_ASSIGNMENTS
# A whole PEM private key, from its header to its footer (or to the end of the text when cut off).
PEM_BLOCK = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\Z)", re.S
)
URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@]+):[^\s@/]+@")
# A token never ends inside a run of these: a match the library's pattern stops early on (a JWT's
# signature, a GitLab token after its prefix) is carried on to the token's end.
_TOKEN_TAIL = re.compile(r"[A-Za-z0-9_\-+/=]*")
_EDGES = " \t\r\n\"'`"
_TRAILING = ",.;:?)]}"  # punctuation after an unquoted word is the sentence's, not the secret's
# The patterns are searched in windows of this size: one of the library's (npm's) takes time
# quadratic in the length of a line, and a token is far shorter than the overlap.
WINDOW, OVERLAP = 2048, 256
EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
# Phone numbers: an optional +country code, then 9-15 digits in groups; dates and plain ids do not match.
PHONE = re.compile(r"(?<![\w.])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]\d{2,4}){1,4}(?![\w.])")


def _windows(text: str) -> Iterator[tuple[int, str]]:
    """(offset, piece) covering ``text`` in overlapping windows (the patterns stop at line ends anyway)."""
    for start in range(0, max(len(text) - OVERLAP, 1), WINDOW - OVERLAP):
        yield start, text[start : start + WINDOW]


def _spans(text: str) -> list[tuple[int, int]]:
    """Where the secrets are in ``text``: merged, sorted (start, end) spans."""
    found: list[tuple[int, int]] = []
    for offset, piece in _windows(text):
        assignments = _ASSIGNMENT_WORDS.search(piece) is not None
        for pattern, group in PATTERNS:
            if pattern in _ASSIGNMENTS and not assignments:
                continue
            for match in pattern.finditer(piece):
                start, end = match.span(group)
                if start < 0:
                    continue
                start, end = offset + start, offset + end
                quoted = group > 0 and start > 0 and text[start - 1] in "\"'`"
                if group > 0 and not quoted:  # an unquoted value in prose is one word, not the rest of the line
                    end = start + len(text[start:end].split(maxsplit=1)[0]) if text[start:end].strip() else end
                    while end > start + 1 and text[end - 1] in _TRAILING:
                        end -= 1
                else:
                    end = _TOKEN_TAIL.match(text, end).end()  # type: ignore[union-attr]
                while start < end and text[start] in _EDGES + "=:":
                    start += 1
                while end > start and text[end - 1] in _EDGES:
                    end -= 1
                if start < end:
                    found.append((start, end))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(found):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def redact_secrets(text: str) -> str:
    """``text`` with every secret found replaced by ``[SECRET]`` (passwords in URLs by ``***``)."""
    text = PEM_BLOCK.sub(SECRET, text)
    text = URL_PASSWORD.sub(r"\1:***@", text)
    spans = _spans(text)
    if not spans:
        return text
    pieces, last = [], 0
    for start, end in spans:
        pieces += [text[last:start], SECRET]
        last = end
    return "".join([*pieces, text[last:]])


def redact_personal(text: str) -> str:
    text = EMAIL.sub("[EMAIL]", text)
    return PHONE.sub(lambda m: "[PHONE]" if sum(c.isdigit() for c in m.group()) >= 9 else m.group(), text)


def redact(value: Any, *, personal: bool = True) -> Any:
    """``value`` with every string redacted (secrets always; emails and phones when ``personal``)."""
    if isinstance(value, str):
        text = redact_secrets(value)
        return redact_personal(text) if personal else text
    if isinstance(value, dict):
        return {k: redact(v, personal=personal) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, personal=personal) for v in value]
    return value
