"""A local sentence-transformers model run by ONNX Runtime: the same vectors, without loading torch.

Importing sentence-transformers (torch, transformers) takes seconds, which every ``ladder search``
paid before it embedded one query; ONNX Runtime and the Rust tokenizer load the same network in a
fraction of a second. The ONNX file is exported once from the very weights sentence-transformers
loads (``scripts/install`` does it for the bundled model; a process that finds none exports it then),
kept only when its vectors match sentence-transformers' own on probe texts (tokens identical, cosine
at least ``CHECK_MIN_COSINE``), and cached under the user's cache folder, keyed by the weights' files.
Nothing is downloaded: the export reads the model folder and nothing else.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from knowledge.errors import LadderError

log = logging.getLogger(__name__)

EXPORT_FORMAT = 2  # bump when the exported graph or meta.json changes: old exports are then ignored
CHECK_MIN_COSINE = 0.9999
# The tokenizer's outputs a model may take, by input name, as the Rust tokenizer's Encoding names them.
TOKENIZER_FIELDS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
PROBE_TEXTS = (
    "How do I point Ladder at my own PostgreSQL server?",
    "  Leading and trailing spaces, tabs\tand\nnew lines  ",
    "",
    "x",
    "Ünïcödé, 日本語のテキスト, emoji 🙂 and a non\u00a0breaking space",
    "Refunds take 14 days; the warehouse ships on Mondays. " * 60,  # past the model's token limit
)


class OnnxExportError(LadderError, RuntimeError):
    """The model could not be exported to ONNX, or the export does not reproduce its vectors."""


@dataclass(frozen=True)
class OnnxExport:
    """An exported model: ``model.onnx``, the tokenizer it was checked with, and how to feed it."""

    folder: Path
    inputs: tuple[str, ...]
    max_seq_length: int
    pad_id: int
    pad_token: str
    dimension: int
    min_cosine: float

    @classmethod
    def read(cls, folder: Path) -> OnnxExport | None:
        """The export in ``folder``, or None when there is none (or one of another format)."""
        try:
            meta = json.loads((folder / "meta.json").read_text())
        except (OSError, ValueError):
            return None
        if meta.get("format") != EXPORT_FORMAT or not (folder / "model.onnx").is_file():
            return None
        fields = {k: meta[k] for k in ("max_seq_length", "pad_id", "pad_token", "dimension", "min_cosine")}
        return cls(folder=folder, inputs=tuple(meta["inputs"]), **fields)


def cache_root() -> Path:
    """Where exports live: ``$XDG_CACHE_HOME/ladder/embeddings`` (``~/.cache/ladder/embeddings``)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("ladder", appauthor=False)) / "embeddings"


def export_folder(model_dir: Path, root: Path | None = None) -> Path:
    """The cache folder of ``model_dir``'s export: named by its files' names, sizes and times, so new
    weights (a fine-tuned model saved again) get a new export. A stat of each file: no hashing of weights."""
    model_dir = model_dir.resolve()
    digest = hashlib.sha256(f"{EXPORT_FORMAT}\n{model_dir}\n".encode())
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        info = path.stat()
        digest.update(f"{path.relative_to(model_dir)}\t{info.st_size}\t{info.st_mtime_ns}\n".encode())
    return (root or cache_root()) / f"{'-'.join(model_dir.parts[-2:])}-{digest.hexdigest()[:16]}"


def ensure_export(model_dir: Path, root: Path | None = None) -> OnnxExport:
    """The checked ONNX export of ``model_dir``, made now if there is none (one process at a time)."""
    folder = export_folder(model_dir, root)
    found = OnnxExport.read(folder)
    if found is not None:
        return found
    failed = folder.with_name(folder.name + ".failed")
    if failed.is_file():  # tried before with these very weights: do not pay a failing export on every run
        reason = failed.read_text(errors="replace").strip()
        raise OnnxExportError(f"{reason} (an earlier export failed; delete {failed} to try again)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _locked(folder.parent / ".export.lock"):
        found = OnnxExport.read(folder)  # another process may have made it while this one waited
        if found is not None:
            return found
        log.warning("preparing the fast embedding runtime for %s (once; about half a minute)", model_dir)
        try:
            made = _export(model_dir, folder)
        except OnnxExportError as exc:
            failed.write_text(f"{exc}\n")
            raise
        _prune_orphans(folder.parent)
        return made


def _prune_orphans(root: Path) -> None:
    """Remove exports (90 MB each) of model folders that are gone (a checkout's .venv made anew) and
    exports of an older format, which no process reads any more."""
    for meta in root.glob("*/meta.json"):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            found = json.loads(meta.read_text())
            if found["format"] != EXPORT_FORMAT or not Path(found["source"]).is_dir():
                shutil.rmtree(meta.parent, ignore_errors=True)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _export(model_dir: Path, folder: Path) -> OnnxExport:
    """Export with torch's exporter into a scratch folder, check it, then move it into place."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import torch
        import transformers
        from sentence_transformers import SentenceTransformer

        transformers.utils.logging.disable_progress_bar()
        model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True).eval()
    except Exception as exc:
        raise OnnxExportError(f"cannot load {model_dir} to export it: {exc}") from exc
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None or not (model_dir / "tokenizer.json").is_file():
        raise OnnxExportError(f"{model_dir} has no fast tokenizer (tokenizer.json) to run without transformers")
    features = {k: v for k, v in model.preprocess(list(PROBE_TEXTS)).items() if isinstance(v, torch.Tensor)}
    unknown = set(features) - set(TOKENIZER_FIELDS)
    if unknown:
        raise OnnxExportError(f"{model_dir} takes inputs the ONNX runtime cannot make: {sorted(unknown)}")
    scratch = folder.with_name(f"{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        names = tuple(features)
        _torch_export(model, features, names, scratch / "graph.onnx")
        _weights_beside(scratch / "graph.onnx", scratch / "model.onnx")
        shutil.copyfile(model_dir / "tokenizer.json", scratch / "tokenizer.json")
        meta = {
            "format": EXPORT_FORMAT,
            "source": str(model_dir.resolve()),
            "inputs": list(names),
            "max_seq_length": int(model.max_seq_length),
            "pad_id": int(tokenizer.pad_token_id or 0),
            "pad_token": str(tokenizer.pad_token or "[PAD]"),
            "dimension": int(model.get_embedding_dimension()),
            "min_cosine": 0.0,
        }
        (scratch / "meta.json").write_text(json.dumps(meta, indent=1))
        meta["min_cosine"] = _check(model, features, OnnxExport.read(scratch))  # type: ignore[arg-type]
        (scratch / "meta.json").write_text(json.dumps(meta, indent=1))
        with contextlib.suppress(OSError):  # another process's export of the same weights won: keep it
            scratch.rename(folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    export = OnnxExport.read(folder)
    if export is None:
        raise OnnxExportError(f"the export of {model_dir} did not land in {folder}")
    return export


def _torch_export(model: Any, features: dict[str, Any], names: tuple[str, ...], target: Path) -> None:
    """The whole sentence-transformers pipeline (transformer, pooling, normalisation) as one graph."""
    import torch

    class Pipeline(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            return self.model(dict(zip(names, tensors, strict=True)))["sentence_embedding"]

    axes = {name: {0: "batch", 1: "tokens"} for name in names}
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Pipeline().eval(),
                tuple(features[name] for name in names),
                str(target),
                input_names=list(names),
                output_names=["sentence_embedding"],
                dynamic_axes={**axes, "sentence_embedding": {0: "batch"}},
                opset_version=17,
                dynamo=False,  # the TorchScript exporter: no onnxscript needed, and it handles BERT's masks
            )
    except Exception as exc:
        raise OnnxExportError(f"torch could not export the model to ONNX: {exc}") from exc


def _weights_beside(graph: Path, target: Path) -> None:
    """Rewrite ``graph`` as ``target`` with its weights in a file of their own (``model.onnx.data``), which
    ONNX Runtime maps into memory instead of parsing and copying: a third of the load's CPU time."""
    import onnx

    try:
        onnx.save_model(
            onnx.load(str(graph)),
            str(target),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=f"{target.name}.data",
            size_threshold=1024,
        )
    except Exception as exc:
        raise OnnxExportError(f"could not write the ONNX weights beside the graph: {exc}") from exc
    graph.unlink()


def _check(model: Any, features: dict[str, Any], export: OnnxExport) -> float:
    """The smallest cosine between sentence-transformers' vectors and the export's on the probe texts;
    OnnxExportError when the tokens differ or a cosine is below ``CHECK_MIN_COSINE``."""
    import torch

    encoder = OnnxEncoder(export)
    tokens = encoder.tokenize(list(PROBE_TEXTS))
    for name in export.inputs:
        if not np.array_equal(tokens[name], features[name].numpy()):
            raise OnnxExportError(f"the tokenizer gives other {name} than sentence-transformers'")
    with torch.no_grad():
        reference = model.encode(
            list(PROBE_TEXTS), convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
        )
    cosines = (encoder.encode(list(PROBE_TEXTS)) * reference).sum(axis=1)
    if float(cosines.min()) < CHECK_MIN_COSINE:
        raise OnnxExportError(f"the ONNX export's vectors differ from the model's (cosine {cosines.min():.6f})")
    return float(cosines.min())


class OnnxEncoder:
    """Texts to unit vectors with an export: the Rust tokenizer, then one ONNX Runtime session."""

    def __init__(self, export: OnnxExport, threads: int = 0) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        self.export = export
        self.dimension = export.dimension
        self._tokenizer = Tokenizer.from_file(str(export.folder / "tokenizer.json"))
        self._tokenizer.enable_truncation(export.max_seq_length)  # as sentence-transformers truncates
        self._tokenizer.enable_padding(pad_id=export.pad_id, pad_token=export.pad_token)  # to the longest
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: its warnings are about graph fusions, not results
        # Idle threads sleep instead of spinning: spinning burns the CPU that a short command (and, on a
        # 2-core machine, everything else) needs, for a throughput gain only long bulk runs would see.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
        path = str(export.folder / "model.onnx")
        self._session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def tokenize(self, texts: list[str]) -> dict[str, np.ndarray]:
        """The model's inputs for ``texts``, padded to the longest."""
        encodings = self._tokenizer.encode_batch(texts)
        return {
            name: np.array([getattr(e, TOKENIZER_FIELDS[name]) for e in encodings], dtype=np.int64)
            for name in self.export.inputs
        }

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Unit vectors of ``texts`` (float32, one row each), ``batch_size`` texts per forward pass."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        parts = [
            self._session.run(None, self.tokenize(texts[start : start + batch_size]))[0]
            for start in range(0, len(texts), batch_size)
        ]
        vectors = np.concatenate(parts).astype(np.float32, copy=False)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def main() -> None:
    """Export the bundled model (what ``scripts/install`` runs); say where it is and how close it came."""
    from knowledge.bundled_model import local_model_path

    export = ensure_export(local_model_path("all-MiniLM-L6-v2"))
    print(
        f"ONNX embedding runtime ready in {export.folder} (cosine to sentence-transformers >= {export.min_cosine:.6f})"
    )


if __name__ == "__main__":
    main()
