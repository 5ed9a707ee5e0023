"""LoRA adapters for the embedded model: where they live, their cards, and the checks before serving.

``ladder finetune local`` writes each adapter to ``<data_dir>/adapters/NAME/``: ``adapter.gguf`` (the
LoRA in llama.cpp's adapter format), ``card.json`` (the base model and its sha256, the data file's hash,
the hyperparameters, the losses, the time) and ``loss.png``. The server loads an adapter only after
its file is checked to be a GGUF LoRA adapter for the architecture of the model being served, and its
card names that same base model (by sha256): an adapter trained for another base is refused by name.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knowledge.errors import LadderError

ADAPTER_FILE = "adapter.gguf"
CARD_FILE = "card.json"
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class AdapterError(LadderError, ValueError):
    """An adapter that cannot be served (unknown, damaged, or trained for another base model)."""


@dataclass(frozen=True)
class Adapter:
    """A trained adapter ready to serve: its name, GGUF file and card."""

    name: str
    path: Path
    card: dict[str, Any]

    @property
    def base_model(self) -> str:
        return str(self.card.get("base_model", ""))


def adapters_dir(data_dir: Path) -> Path:
    return data_dir / "adapters"


def check_name(name: str) -> str:
    """An adapter name that is safe as a folder name and a model name suffix."""
    if not NAME_PATTERN.match(name):
        raise AdapterError(
            f"adapter name {name!r} is not allowed: use 1-64 lowercase letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    return name


def read_card(folder: Path) -> dict[str, Any]:
    """The card of the adapter in ``folder``; a clear error when it is missing or unreadable."""
    try:
        card = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AdapterError(f"{folder} holds no {CARD_FILE}: not an adapter that ladder finetune local wrote") from None
    except (OSError, ValueError) as exc:
        raise AdapterError(f"the card {folder / CARD_FILE} cannot be read: {exc}") from None
    if not isinstance(card, dict):
        raise AdapterError(f"the card {folder / CARD_FILE} is not a JSON object")
    return card


def list_adapters(data_dir: Path) -> list[Adapter]:
    """Every finished adapter (a card and a GGUF file), by name."""
    root = adapters_dir(data_dir)
    found = []
    for folder in sorted(root.iterdir() if root.is_dir() else []):
        if (folder / ADAPTER_FILE).is_file() and (folder / CARD_FILE).is_file():
            try:
                found.append(Adapter(folder.name, folder / ADAPTER_FILE, read_card(folder)))
            except AdapterError:
                continue  # a damaged card is reported when that adapter is asked for, not in the list
    return found


def gguf_adapter_facts(path: Path) -> dict[str, str]:
    """``general.type``, ``adapter.type`` and ``general.architecture`` of a GGUF file, or a clear error."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except Exception as exc:  # the reader raises several kinds on a file that is not GGUF
        raise AdapterError(f"{path} is not a GGUF file ({type(exc).__name__}: {exc})") from None
    facts = {}
    for key in ("general.type", "adapter.type", "general.architecture"):
        field = reader.get_field(key)
        facts[key] = field.contents() if field is not None else ""
    return facts


def _served_architecture(model_file: Path) -> str:
    return gguf_adapter_facts(model_file).get("general.architecture", "")


def resolve_adapter(
    data_dir: Path, name: str, *, base_model: str, base_sha256: str | None, model_file: Path
) -> Adapter:
    """The adapter ``name`` checked against the model it would be served with; AdapterError otherwise."""
    folder = adapters_dir(data_dir) / check_name(name)
    if not folder.is_dir():
        known = ", ".join(a.name for a in list_adapters(data_dir)) or "none yet (train one with ladder finetune local)"
        raise AdapterError(f"no adapter named {name!r} in {adapters_dir(data_dir)}; adapters: {known}")
    card = read_card(folder)
    path = folder / ADAPTER_FILE
    if not path.is_file():
        raise AdapterError(f"adapter {name!r} has no {ADAPTER_FILE}: its training did not finish")
    facts = gguf_adapter_facts(path)
    if facts["general.type"] != "adapter" or facts["adapter.type"] != "lora":
        raise AdapterError(f"{path} is not a LoRA adapter (general.type {facts['general.type']!r})")
    trained_for = card.get("base_model")
    if trained_for != base_model or (base_sha256 and card.get("base_sha256") != base_sha256):
        raise AdapterError(
            f"adapter {name!r} was trained for {trained_for} (sha256 {str(card.get('base_sha256'))[:12]}…), "
            f"not for the model being served, {base_model}"
            + (f" (sha256 {base_sha256[:12]}…)" if base_sha256 else "")
            + f": set LADDER_LOCAL_MODEL={trained_for} or train the adapter again on {base_model}"
        )
    served = _served_architecture(model_file)
    if facts["general.architecture"] != served:
        raise AdapterError(
            f"adapter {name!r} is for the {facts['general.architecture']} architecture, the model is {served}"
        )
    return Adapter(name, path, card)
