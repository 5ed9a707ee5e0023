"""The one base class for errors a user can act on.

Every layer raises its own subclasses (a missing collection, a refused SQL statement, an unknown
switch...); each face catches ``LadderError`` once and shows its message as one clear line, never
a traceback. It lives in the lowest layer so that every layer can use it.
"""

from __future__ import annotations


class LadderError(Exception):
    """An error whose message tells the user what went wrong and what to do about it."""
