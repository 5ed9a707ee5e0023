"""The ONNX runtime of the local model gives sentence-transformers' vectors, and its export is checked and cached."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from knowledge import onnx_embedder
from knowledge.bundled_model import local_model_path
from knowledge.chunking import ChunkingConfig, chunk_document
from knowledge.embeddings import SMALL_CALL, EmbeddingConfig, EmbeddingError, LocalEmbedder
from knowledge.ingest import embedding_text
from knowledge.loaders import load_file
from knowledge.onnx_embedder import OnnxEncoder, OnnxExport, OnnxExportError, ensure_export, export_folder

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = local_model_path("all-MiniLM-L6-v2")


def real_texts() -> list[str]:
    """Chunks of Ladder's own docs and README, as ingestion makes them (headings, code, tables, lists),
    and each file's first pages whole: past the model's 256-token limit, so truncation is part of the match."""
    texts: list[str] = []
    for path in sorted([*(ROOT / "docs").glob("*.md"), ROOT / "README.md"]):
        document = load_file(path, 10_000_000)
        chunks = chunk_document(document, ChunkingConfig(chunk_tokens=256, overlap=0))
        texts += [embedding_text(document.title, c.heading, c.text) for c in chunks[::3]]
        texts.append("\n\n".join(section.text for section in document.sections)[:6000])
    return texts[:120]  # from every file, a bounded number of forward passes on torch


@pytest.fixture(scope="module")
def onnx() -> LocalEmbedder:
    return LocalEmbedder(EmbeddingConfig(runtime="onnx"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, OnnxExport]:
    """A copy of the bundled model, exported into a cache of its own: (model folder, cache, export)."""
    root = tmp_path_factory.mktemp("onnx")
    model, cache = root / "model", root / "cache"
    shutil.copytree(BUNDLED, model)
    return model, cache, ensure_export(model, cache)


@pytest.mark.slow
def test_onnx_vectors_match_the_torch_runtime_on_real_texts(onnx: LocalEmbedder) -> None:
    """Within cosine 0.999 of sentence-transformers' vectors, fp32 and bf16 (the default where the CPU has
    it), on real chunks; same name and dimension, so collections embedded before keep working."""
    texts = real_texts()
    assert len(texts) >= 40 and max(map(len, texts)) > 2000
    fast = onnx.embed(texts)
    for bf16 in ("off", "on"):
        reference = LocalEmbedder(EmbeddingConfig(runtime="torch", bf16=bf16))
        assert (
            (reference.model_name, reference.dimension)
            == (onnx.model_name, onnx.dimension)
            == ("all-MiniLM-L6-v2", 384)
        )
        cosines = (fast * reference.embed(texts)).sum(axis=1)
        assert cosines.min() >= 0.999, (bf16, float(cosines.min()))
    assert (onnx.model_name, onnx.dimension) == ("all-MiniLM-L6-v2", 384)
    assert np.allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)
    # A batch is padded to its longest text: a text's vector does not depend on its neighbours.
    assert np.allclose(onnx.embed(texts[:1])[0], fast[0], atol=1e-5)


def test_auto_embeds_small_calls_on_onnx_and_bulk_where_fastest(onnx: LocalEmbedder) -> None:
    auto_bf16 = LocalEmbedder(EmbeddingConfig(runtime="auto", bf16="on"))
    auto_fp32 = LocalEmbedder(EmbeddingConfig(runtime="auto", bf16="off"))
    assert auto_bf16.runtime_for(1) == auto_bf16.runtime_for(SMALL_CALL) == "onnx"
    assert auto_bf16.runtime_for(SMALL_CALL + 1) == "torch"  # torch's bf16 kernels beat fp32 ONNX on bulk
    assert auto_fp32.runtime_for(1000) == "onnx" and onnx.runtime_for(1000) == "onnx"
    assert LocalEmbedder(EmbeddingConfig(runtime="torch")).runtime_for(1) == "torch"
    assert auto_bf16._torch_model is None  # nothing has loaded torch's model yet: only a bulk call does


@pytest.mark.slow
def test_an_export_is_reused_and_a_changed_model_gets_a_new_one(exported, monkeypatch) -> None:
    model, cache, made = exported
    assert made.folder == export_folder(model, cache) and made.min_cosine >= onnx_embedder.CHECK_MIN_COSINE
    assert json.loads((made.folder / "meta.json").read_text())["inputs"] == list(made.inputs)

    def no_export(*args: object) -> OnnxExport:
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx_embedder, "_export", no_export)
    assert ensure_export(model, cache) == made  # found, not made again
    config = model / "config.json"
    os.utime(config, ns=(config.stat().st_atime_ns, config.stat().st_mtime_ns + 10**9))  # the model saved again
    assert export_folder(model, cache) != made.folder
    with pytest.raises(AssertionError, match="exported again"):
        ensure_export(model, cache)


@pytest.mark.slow
def test_an_export_with_another_tokenizer_setting_is_refused(exported, tmp_path: Path) -> None:
    """The check compares tokens, not only vectors: a truncation that differs from the model's is caught."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(BUNDLED), device="cpu", local_files_only=True)
    made = OnnxExport.read(shutil.copytree(exported[2].folder, tmp_path / "export"))
    assert made is not None
    features = {k: v for k, v in model.preprocess(list(onnx_embedder.PROBE_TEXTS)).items() if k in made.inputs}
    assert onnx_embedder._check(model, features, made) >= onnx_embedder.CHECK_MIN_COSINE
    meta = json.loads((made.folder / "meta.json").read_text())
    (made.folder / "meta.json").write_text(json.dumps({**meta, "max_seq_length": 64}))
    with pytest.raises(OnnxExportError, match="tokenizer gives other input_ids"):
        onnx_embedder._check(model, features, OnnxExport.read(made.folder))
    assert OnnxEncoder(OnnxExport.read(made.folder)).encode([]).shape == (0, 384)


@pytest.mark.slow
def test_a_model_that_cannot_be_exported_falls_back_to_torch_once_and_onnx_says_why(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    model = tmp_path / "model"
    shutil.copytree(BUNDLED, model)
    (model / "tokenizer.json").unlink()  # sentence-transformers still loads it (from vocab.txt); ONNX cannot
    monkeypatch.setattr(onnx_embedder, "cache_root", lambda: tmp_path / "cache")
    with caplog.at_level(logging.WARNING), pytest.raises(OnnxExportError, match="no fast tokenizer"):
        ensure_export(model)
    monkeypatch.setattr(onnx_embedder, "_export", lambda *a: pytest.fail("a failed export is not tried again"))
    auto = LocalEmbedder(EmbeddingConfig(model=str(model), runtime="auto"))
    assert auto.runtime_for(1) == "torch" and "slower to start" in caplog.text and "no fast tokenizer" in caplog.text
    assert auto.embed(["refunds take 14 days"]).shape == (1, 384)
    with pytest.raises(EmbeddingError, match=r"cannot run .* with ONNX Runtime: .*no fast tokenizer"):
        LocalEmbedder(EmbeddingConfig(model=str(model), runtime="onnx"))


def test_exports_of_model_folders_that_are_gone_are_removed(tmp_path: Path) -> None:
    current = onnx_embedder.EXPORT_FORMAT
    for name, source, form in (
        ("kept", tmp_path, current),
        ("orphan", tmp_path / "gone", current),
        ("old", tmp_path, 1),
    ):
        (tmp_path / "cache" / name).mkdir(parents=True)
        (tmp_path / "cache" / name / "meta.json").write_text(json.dumps({"source": str(source), "format": form}))
    (tmp_path / "cache" / "unreadable").mkdir()
    (tmp_path / "cache" / "unreadable" / "meta.json").write_text("{not json")
    onnx_embedder._prune_orphans(tmp_path / "cache")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["kept", "unreadable"]
