"""What every ``ladder`` command shares: the consoles, the settings, and clear errors instead of tracebacks."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console

if TYPE_CHECKING:  # the settings pull in pydantic and the database driver: loaded when a command runs
    from agent.core.config import Settings

# Text is printed as it is: a name, a path or a passage with [brackets] is not markup (pass markup=True to style).
out = Console(markup=False)
err = Console(stderr=True, markup=False)
T = TypeVar("T")


def run(action: Callable[[], T]) -> T:
    """Run a command body; known failures become one clear line on stderr and exit status 1."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from knowledge.errors import user_errors

    try:
        return action()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        err.print(f"error: invalid settings: {problems}", style="red", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except SettingsError as exc:  # a value pydantic-settings cannot parse (a dict that is not JSON), or .env
        err.print(f"error: invalid settings: {exc}", style="red", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except user_errors() as exc:
        err.print(f"error: {exc}", style="red", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except OSError as exc:  # a file or folder the user named: missing, a folder, not writable, a name too long
        err.print(f"error: {exc}", style="red", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except UnicodeEncodeError as exc:  # an argument with bytes that are not UTF-8 (Python keeps them as surrogates)
        text = f"error: text that is not UTF-8: {exc.object[max(0, exc.start - 30) : exc.end + 30]!r}"
        err.print(text, style="red", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1) from None


def output_file(path: Path | None) -> Path | None:
    """An ``--out`` option's check: a file to write, not a folder."""
    if path is not None and (not path.name or os.path.isdir(path)):
        raise typer.BadParameter(f"{str(path)!r} is a folder: give a file name")
    return path


def load_settings(**overrides: Any) -> Settings:
    from agent.core.config import Settings, get_settings

    base = get_settings()
    if not overrides:
        return base
    return Settings.model_validate({**base.model_dump(), **{k: v for k, v in overrides.items() if v is not None}})
