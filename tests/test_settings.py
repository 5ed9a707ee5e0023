"""The settings object."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.core.config import Settings, default_data_dir


def test_defaults_and_views(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.database_url is None
    assert settings.database_config().url is None
    assert settings.data_dir == default_data_dir()
    assert settings.chunking_config().chunk_tokens == settings.chunk_tokens
    assert settings.search_config().rrf_k == settings.rrf_k


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:pw@db.internal/ladder")
    monkeypatch.setenv("LADDER_CHUNK_TOKENS", "512")
    monkeypatch.setenv("LADDER_HYBRID_DENSE_WEIGHT", "2.5")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-value")
    settings = Settings()
    assert settings.database_config().url == "postgresql://u:pw@db.internal/ladder"
    assert settings.chunk_tokens == 512 and settings.search_config().dense_weight == 2.5
    assert settings.embedding_config().api_key == "sk-test-secret-value"
    shown = repr(settings) + settings.model_dump_json()
    assert "sk-test-secret-value" not in shown and ":pw@" not in shown


def test_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("LADDER_SEARCH_K=7\nLADDER_COLLECTION=notes\n")
    settings = Settings()
    assert settings.search_k == 7 and settings.collection == "notes"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LADDER_CHUNK_TOKENS", "8"),
        ("LADDER_CHUNK_OVERLAP", "999"),
        ("LADDER_SEARCH_MODE", "fuzzy"),
        ("LADDER_COLLECTION", "   "),
        ("LADDER_EMBEDDING_BF16", "maybe"),
        ("LADDER_EMBEDDING_RUNTIME", "gpu"),
        ("LADDER_DB_POOL_MAX", "0"),
    ],
)
def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, value: str) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for name, field in Settings.model_fields.items():
        choices = getattr(field.validation_alias, "choices", None)
        variable = choices[0] if choices else f"LADDER_{name.upper()}"
        assert f"`{variable}`" in readme, f"{variable} is missing from the README's settings table"
