"""Chat endpoints: a configured one through the real openai client, and the embedded llama.cpp server."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from openai import OpenAI

from agent.core.config import Settings
from agent.models.endpoint import ModelConfigError, local_threads, open_chat_endpoint, remote_model_name
from agent.models.local_server import KNOWN_MODELS, LocalModelError, LocalModelServer, ModelWeights, assemble
from evals.doubles.scripted_model import ScriptedOpenAI


def fake_weights(tmp_path: Path, parts: list[bytes]) -> tuple[ModelWeights, list[Path]]:
    paths = []
    for i, data in enumerate(parts):
        path = tmp_path / f"part{i}.bin"
        path.write_bytes(data)
        paths.append(path)
    joined = b"".join(parts)
    weights = ModelWeights("fake-model", ("unused",), len(joined), hashlib.sha256(joined).hexdigest())
    return weights, paths


def test_parts_are_joined_in_order_and_checked(tmp_path: Path) -> None:
    weights, paths = fake_weights(tmp_path, [b"GGUF" + b"a" * 100, b"b" * 50, b"c" * 7])
    target = assemble(weights, tmp_path / "models", part_paths=lambda _: paths)
    assert target.read_bytes() == b"GGUF" + b"a" * 100 + b"b" * 50 + b"c" * 7
    # A second call trusts the stamp instead of re-reading the parts.
    assert assemble(weights, tmp_path / "models", part_paths=lambda _: []) == target


def test_a_wrong_hash_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    weights, paths = fake_weights(tmp_path, [b"one", b"two"])
    paths.reverse()  # parts out of order give the same size and another hash
    with pytest.raises(LocalModelError, match="refusing fake-model"):
        assemble(weights, tmp_path / "models", part_paths=lambda _: paths)
    assert list((tmp_path / "models").iterdir()) == []


def test_a_damaged_joined_file_is_rebuilt(tmp_path: Path) -> None:
    weights, paths = fake_weights(tmp_path, [b"x" * 64, b"y" * 64])
    target = assemble(weights, tmp_path / "models", part_paths=lambda _: paths)
    target.write_bytes(b"z" * 128)  # same size, other bytes: the stamp no longer matches its mtime
    os.utime(target, ns=(1, 1))
    assert assemble(weights, tmp_path / "models", part_paths=lambda _: paths).read_bytes() == b"x" * 64 + b"y" * 64


def test_threads_default_to_one_under_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    assert local_threads(Settings(llm_threads=3)) == 3
    assert local_threads(Settings()) == 1  # pytest is running


def test_remote_model_names(monkeypatch: pytest.MonkeyPatch) -> None:
    assert remote_model_name(Settings(openai_api_key="k"), None) == "gpt-4o-mini"
    assert remote_model_name(Settings(openai_base_url="http://x/v1", chat_model="llama3"), None) == "llama3"
    with pytest.raises(ModelConfigError, match="LADDER_CHAT_MODEL"):
        remote_model_name(Settings(openai_base_url="http://x/v1"), None)


def test_configured_endpoint_through_the_cli() -> None:
    with ScriptedOpenAI() as server:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("LADDER_", "OPENAI_"))},
            "OPENAI_BASE_URL": server.base_url,
            "OPENAI_API_KEY": "sk-scripted-secret",
            "LADDER_CHAT_MODEL": "scripted-chat",
        }
        command = [sys.executable, "-m", "agent.cli", "llm", "prompt"]
        streamed = subprocess.run([*command, "what is ladder"], env=env, capture_output=True, text=True, timeout=60)
        as_json = subprocess.run(
            [*command, "hello there", "--json", "--system", "Be brief."],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert streamed.returncode == 0, streamed.stderr
    assert streamed.stdout.strip() == "You asked: what is ladder"
    result = json.loads(as_json.stdout)
    assert result["text"] == "You asked: hello there" and result["model"] == "scripted-chat"
    assert result["usage"]["completion_tokens"] == 4
    sent = server.requests[-1]["body"]
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["temperature"] == 0 and sent["stream"] is True
    assert "sk-scripted-secret" not in streamed.stdout + streamed.stderr + as_json.stdout + as_json.stderr


def test_an_unreachable_endpoint_is_a_clear_error() -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("LADDER_", "OPENAI_"))},
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
        "LADDER_CHAT_MODEL": "x",
        "LADDER_LLM_MAX_RETRIES": "0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "agent.cli", "llm", "prompt", "hi"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1 and "Connection error" in done.stderr and "Traceback" not in done.stderr


def test_a_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LocalModelError, match="not a file"), open_chat_endpoint(Settings(local_model_path=tmp_path)):
        pass


@pytest.mark.slow
def test_the_embedded_model_answers(tmp_path: Path) -> None:
    """Smoke test with the real 0.5B model: weights joined and checked, server started, one answer."""
    weights = KNOWN_MODELS["qwen2.5-coder-0.5b-instruct"]
    model_file = assemble(weights)
    assert model_file.stat().st_size == weights.size
    with LocalModelServer(model_file, alias="small", threads=1, context_tokens=1024, log_dir=tmp_path) as server:
        client = OpenAI(api_key="not-needed", base_url=server.base_url, max_retries=0)
        reply = client.chat.completions.create(
            model="small",
            messages=[{"role": "user", "content": "What is the capital of France? Answer in one word."}],
            temperature=0,
            max_tokens=8,
        )
        process = server._process
    assert "paris" in (reply.choices[0].message.content or "").lower()
    assert process is not None and process.poll() is not None  # stopped on exit


@pytest.mark.slow
def test_two_streams_at_once_both_finish(tmp_path: Path) -> None:
    """Two chat users at once: the second request waits for the first, never cuts its stream short."""
    from concurrent.futures import ThreadPoolExecutor

    model_file = assemble(KNOWN_MODELS["qwen2.5-coder-0.5b-instruct"])
    with LocalModelServer(model_file, alias="small", threads=1, context_tokens=1024, log_dir=tmp_path) as server:
        client = OpenAI(api_key="not-needed", base_url=server.base_url, max_retries=0)

        def stream(question: str) -> tuple[str | None, str]:
            finish, parts = None, []
            for chunk in client.chat.completions.create(
                model="small",
                messages=[{"role": "user", "content": question}],
                temperature=0,
                max_tokens=24,
                stream=True,
            ):
                for choice in chunk.choices:
                    parts.append(choice.delta.content or "")
                    finish = choice.finish_reason or finish
            return finish, "".join(parts)

        with ThreadPoolExecutor(max_workers=2) as pool:
            first = pool.submit(stream, "Count from one to twenty in words.")
            time.sleep(0.5)  # the first is streaming when the second arrives
            second = pool.submit(stream, "Name three colours.")
            results = [first.result(timeout=300), second.result(timeout=300)]
    for finish, text in results:
        assert finish in ("stop", "length") and text.strip()


def test_endpoints_say_how_to_constrain_json() -> None:
    with ScriptedOpenAI() as server:
        with open_chat_endpoint(Settings(openai_base_url=server.base_url, chat_model="m")) as remote:
            assert remote.json_mode == "json_schema"
        forced = Settings(openai_base_url=server.base_url, chat_model="m", llm_json_mode="json_object")
        with open_chat_endpoint(forced) as remote:
            assert remote.json_mode == "json_object"


def test_the_embedded_server_dies_with_its_parent(tmp_path: Path) -> None:
    """A parent killed with SIGKILL runs no cleanup: the model server must still go away."""
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from agent.models.local_server import KNOWN_MODELS, LocalModelServer, assemble\n"
        "server = LocalModelServer(assemble(KNOWN_MODELS['qwen2.5-coder-0.5b-instruct']), alias='s', threads=1,"
        " context_tokens=512, log_dir=Path(sys.argv[1]))\n"
        "server.start()\n"
        "print(server._process.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())  # type: ignore[union-attr]
    os.kill(child, 0)  # running
    parent.kill()
    parent.wait(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(child, os.WNOHANG)  # reap it if it became our child
        time.sleep(0.5)
    os.kill(child, 9)
    pytest.fail("the model server outlived its killed parent")
