"""A trained PEFT LoRA written as a llama.cpp adapter (GGUF), with the ``gguf`` package's own name map.

llama.cpp reads a LoRA adapter as a GGUF file with ``general.type = adapter``, ``adapter.type = lora``,
``adapter.lora.alpha``, and for each adapted weight ``W`` (named as in the base model's GGUF) two
tensors ``W.lora_a`` (rank × inputs) and ``W.lora_b`` (outputs × rank). This is what llama.cpp's
``convert_lora_to_gguf.py`` writes; that script needs the base model as a Hugging Face folder and is
not installed (it ships only in llama.cpp's source tree), so the few lines are here, on ``gguf``'s
``TensorNameMap``, the table that script maps names with.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

_PEFT_NAME = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<part>[AB])(?:\.default)?\.weight$")


def lora_tensors(state: dict[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    """PEFT's state dict grouped by adapted module: {module: {"A": rank × in, "B": out × rank}}."""
    grouped: dict[str, dict[str, np.ndarray]] = {}
    for key, tensor in state.items():
        match = _PEFT_NAME.match(key)
        if match is None:
            raise ValueError(f"unexpected tensor {key!r} in the adapter: only LoRA A and B weights are written")
        grouped.setdefault(match["module"], {})[match["part"]] = tensor.detach().float().cpu().numpy()
    return grouped


def write_adapter(
    state: dict[str, Any], path: Path, *, architecture: str, layers: int, alpha: float, metadata: dict[str, str]
) -> int:
    """Write the LoRA weights in ``state`` to ``path`` (atomically); returns the number of adapted weights."""
    import gguf

    arch = next((a for a, name in gguf.MODEL_ARCH_NAMES.items() if name == architecture), None)
    if arch is None:
        raise ValueError(f"gguf knows no architecture {architecture!r}")
    names = gguf.get_tensor_name_map(arch, layers)
    partial = path.with_name(f".{path.name}.partial")
    writer = gguf.GGUFWriter(partial, architecture)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    for key, value in metadata.items():
        writer.add_string(f"ladder.{key}", value)
    grouped = lora_tensors(state)
    for module, parts in sorted(grouped.items()):
        target = names.get_name(f"{module}.weight", try_suffixes=(".weight",))
        if target is None or set(parts) != {"A", "B"}:
            raise ValueError(f"cannot name {module!r} in the {architecture} GGUF (or its A/B pair is incomplete)")
        writer.add_tensor(f"{target}.lora_a", parts["A"].astype(np.float32))
        writer.add_tensor(f"{target}.lora_b", parts["B"].astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(partial, path)
    return len(grouped)
