"""Redaction: secrets always, obvious personal data (emails, phone numbers) when asked.

Applied to what leaves Ladder as data (exports, `ladder logs`). Secrets should never reach the
log in the first place (settings keep keys as SecretStr, URLs are redacted when shown); this is
the second wall for a key a user pasted into a question.
"""

from __future__ import annotations

import re
from typing import Any

SECRET_PATTERNS = (
    (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), "[SECRET]"),  # OpenAI-style API keys
    (re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"), "[SECRET]"),  # AWS access key ids
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"), "[SECRET]"),  # GitHub tokens
    (re.compile(r"\bldr_[A-Za-z0-9_-]{20,}"), "[SECRET]"),  # Ladder's own API tokens
    (re.compile(r"(?i)\bBearer\s+[A-Za-z0-9._~+/=-]{16,}"), "Bearer [SECRET]"),
    (re.compile(r"(?i)\b(api[_-]?key|secret|password|passwd|token)\s*[=:]\s*[^\s,;\"']+"), r"\1=[SECRET]"),
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@]+):[^\s@/]+@"), r"\1:***@"),  # URLs with passwords
)
EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
# Phone numbers: an optional +country code, then 9-15 digits in groups; dates and plain ids do not match.
PHONE = re.compile(r"(?<![\w.])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]\d{2,4}){1,4}(?![\w.])")


def redact_secrets(text: str) -> str:
    for pattern, replacement in SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


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
