"""The one base class for errors a user can act on.

Every layer raises its own subclasses (a missing collection, a refused SQL statement, an unknown
switch...); each face catches ``LadderError`` once and shows its message as one clear line, never
a traceback. It lives in the lowest layer so that every layer can use it.
"""

from __future__ import annotations


class LadderError(Exception):
    """An error whose message tells the user what went wrong and what to do about it."""


def user_errors() -> tuple[type[Exception], ...]:
    """What a face shows as one clear message rather than a failure: Ladder's own errors, and the model
    endpoint's (``openai`` is imported only when an error is being matched, not at start-up)."""
    from openai import OpenAIError

    return (LadderError, OpenAIError)
