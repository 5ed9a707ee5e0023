"""What every ``ladder`` command shares: the consoles, the settings, and clear errors instead of tracebacks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from agent.config import Settings, get_settings

out = Console()
err = Console(stderr=True)
T = TypeVar("T")


def user_errors() -> tuple[type[BaseException], ...]:
    from openai import OpenAIError

    from agent.llm import ModelConfigError
    from agent.local_model import LocalModelError
    from agent.turn import QuestionError
    from agent.turn_log import FeedbackError
    from evals.eval_sets import EvalSetError
    from evals.ladder_run import LadderError
    from knowledge.db import DatabaseError
    from knowledge.embeddings import EmbeddingError
    from knowledge.pgembed import EmbeddedPostgresError
    from knowledge.search import SearchError
    from knowledge.store import CollectionError
    from knowledge.tokens import TokenizerError
    from tools.sql import DataSourceError
    from tools.sql_safety import SQLRefused

    return (
        DatabaseError,
        EmbeddedPostgresError,
        CollectionError,
        SearchError,
        EmbeddingError,
        TokenizerError,
        LocalModelError,
        ModelConfigError,
        OpenAIError,
        QuestionError,
        FeedbackError,
        EvalSetError,
        LadderError,
        DataSourceError,
        SQLRefused,
    )


def run(action: Callable[[], T]) -> T:
    """Run a command body; known failures become one clear line on stderr and exit status 1."""
    try:
        return action()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        err.print(f"error: invalid settings: {problems}", style="red", highlight=False, markup=False)
        raise typer.Exit(2) from None
    except user_errors() as exc:
        err.print(f"error: {exc}", style="red", highlight=False, markup=False)
        raise typer.Exit(1) from None


def load_settings(**overrides: Any) -> Settings:
    base = get_settings()
    if not overrides:
        return base
    return Settings.model_validate({**base.model_dump(), **{k: v for k, v in overrides.items() if v is not None}})
