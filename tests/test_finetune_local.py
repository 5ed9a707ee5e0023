"""ladder finetune local: the loss masks, the training loop and its checkpoints, the GGUF adapter, the
checks before an adapter is served, and the +finetune rung.

Training runs on a tiny Qwen2 model (random weights, a byte-level tokenizer with the embedded model's
own chat template, read from its GGUF) so the loop, the resume and the files are tested in seconds;
the slow test serves an adapter shaped for the real 0.5B on the real llama.cpp server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.core.config import Settings
from agent.models.adapters import AdapterError, list_adapters, resolve_adapter
from agent.models.local_server import KNOWN_MODELS, assemble
from evals.finetune.local import FinetuneError, LocalRun, finetune_local
from evals.finetune.local_data import IGNORED, ExampleError, Tokenized, tokenize
from evals.finetune.local_gguf import write_adapter
from evals.finetune.local_train import LoraSettings, train
from evals.ladder.run import ADAPTER, EvalRunError, climb

SMALL = "qwen2.5-coder-0.5b-instruct"


@pytest.fixture(scope="module")
def qwen_template() -> str:
    from gguf import GGUFReader

    field = GGUFReader(assemble(KNOWN_MODELS[SMALL])).get_field("tokenizer.chat_template")
    assert field is not None
    return str(field.contents())


@pytest.fixture(scope="module")
def tokenizer(qwen_template: str) -> Any:
    """Byte-level BPE without merges (a token per byte) and Qwen's special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {char: i for i, char in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(["<|im_start|>", "<|im_end|>", "<|endoftext|>"])
    fast = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = qwen_template
    return fast


def tiny_model(vocab: int = 260) -> Any:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    return Qwen2ForCausalLM(config)


def chat(question: str, answer: str) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": "You are Ladder."},
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
    }


def learned_text(tokenizer: Any, example: Tokenized) -> str:
    return tokenizer.decode([t for t in example.labels if t != IGNORED])


def test_only_the_assistant_turns_are_learned(tokenizer: Any) -> None:
    plain = tokenize(tokenizer, chat("Is the sky blue?", "Yes. Light scatters [1]."), 4096)
    assert learned_text(tokenizer, plain) == "Yes. Light scatters [1].<|im_end|>\n"
    assert tokenizer.decode(plain.input_ids).startswith("<|im_start|>system\nYou are Ladder.")

    tool_call = {
        "messages": [
            {"role": "user", "content": "Refunds?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "search_knowledge", "arguments": '{"query": "refunds"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "Refunds take 14 days."},
            {"role": "assistant", "content": "14 days [1]."},
        ]
    }
    learned = learned_text(tokenizer, tokenize(tokenizer, tool_call, 4096))
    assert '"name": "search_knowledge"' in learned and learned.endswith("14 days [1].<|im_end|>\n")
    assert "Refunds take 14 days." not in learned  # the tool's result is read, not learned

    with pytest.raises(ExampleError, match="no assistant turn"):
        tokenize(tokenizer, {"messages": [{"role": "user", "content": "hi"}]}, 4096)
    with pytest.raises(ExampleError, match="over the limit of 20"):
        tokenize(tokenizer, chat("Is the sky blue?", "Yes."), 20)


def _examples(tokenizer: Any, n: int) -> list[Tokenized]:
    return [tokenize(tokenizer, chat(f"Code {i}?", f"Answer {i % 3}: yes."), 512) for i in range(n)]


def test_training_lowers_the_heldout_loss_and_a_killed_run_resumes(tokenizer: Any, tmp_path: Path) -> None:
    settings = LoraSettings(epochs=3, lr=2e-2, rank=4, alpha=8, accumulate=2, bf16=False, targets=("q_proj", "v_proj"))
    examples = _examples(tokenizer, 8)
    train_set, heldout = examples[:6], examples[6:]

    _, whole = train(tiny_model(), train_set, heldout, settings, tmp_path / "whole", checkpoint_every_s=0)
    assert whole.epoch == 3 and whole.step == 9 and len(whole.heldout_losses) == 4
    assert whole.heldout_losses[-1][1] < whole.heldout_losses[0][1]  # learned on what it never saw

    class Killed(Exception):
        pass

    def kill_after_seven(state: Any, total: int, loss: float | None) -> None:
        if state.epoch * 6 + state.position == 7:
            raise Killed

    folder = tmp_path / "killed"
    with pytest.raises(Killed):
        train(tiny_model(), train_set, heldout, settings, folder, progress=kill_after_seven, checkpoint_every_s=0)
    seen: list[int] = []
    _, resumed = train(
        tiny_model(),
        train_set,
        heldout,
        settings,
        folder,
        progress=lambda s, t, loss: seen.append(s.epoch * 6 + s.position),
        checkpoint_every_s=0,
    )
    assert seen[0] == 7  # went on after the last checkpoint (6 examples of epoch 1 and one step of epoch 2)
    assert (resumed.epoch, resumed.step) == (3, 9)
    assert [round(v, 4) for _, v in resumed.heldout_losses] == [round(v, 4) for _, v in whole.heldout_losses]


def _peft_state(model: Any, rank: int = 4) -> dict[str, Any]:
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    return get_peft_model_state_dict(get_peft_model(model, config))


def test_the_adapter_is_written_as_llama_cpp_reads_it(tmp_path: Path) -> None:
    from gguf import GGUFReader

    path = tmp_path / "adapter.gguf"
    written = write_adapter(
        _peft_state(tiny_model()), path, architecture="qwen2", layers=2, alpha=8, metadata={"base_sha256": "ab"}
    )
    assert written == 8
    reader = GGUFReader(path)
    assert reader.get_field("general.type").contents() == "adapter"  # type: ignore[union-attr]
    assert reader.get_field("adapter.type").contents() == "lora"  # type: ignore[union-attr]
    assert reader.get_field("adapter.lora.alpha").contents() == 8.0  # type: ignore[union-attr]
    shapes = {t.name: tuple(int(d) for d in t.shape) for t in reader.tensors}  # GGUF order: inputs first
    assert shapes["blk.1.attn_q.weight.lora_a"] == (32, 4)  # A: rank x inputs
    assert shapes["blk.1.attn_k.weight.lora_b"] == (4, 16)  # B: outputs (2 kv heads x 8) x rank
    assert len(shapes) == 16 and not list(tmp_path.glob(".*partial"))


def _small_adapter(data_dir: Path, name: str, *, base: str = SMALL, sha256: str | None = None) -> Path:
    """An adapter shaped for the real 0.5B (896 wide, 2 key-value heads of 64, 24 blocks), B non-zero."""
    import torch

    state = {}
    for i in range(24):
        for module, out in (("q_proj", 896), ("k_proj", 128), ("v_proj", 128), ("o_proj", 896)):
            prefix = f"base_model.model.model.layers.{i}.self_attn.{module}"
            state[f"{prefix}.lora_A.weight"] = torch.randn(4, 896) * 0.01
            state[f"{prefix}.lora_B.weight"] = torch.randn(out, 4) * 0.01
    folder = data_dir / "adapters" / name
    folder.mkdir(parents=True)
    write_adapter(state, folder / "adapter.gguf", architecture="qwen2", layers=24, alpha=8, metadata={})
    card = {"name": name, "base_model": base, "base_sha256": sha256 or KNOWN_MODELS[SMALL].sha256}
    (folder / "card.json").write_text(json.dumps(card))
    return folder


def test_an_adapter_is_checked_before_it_is_served(tmp_path: Path) -> None:
    model_file = assemble(KNOWN_MODELS[SMALL])
    sha = KNOWN_MODELS[SMALL].sha256

    def resolve(name: str) -> Any:
        return resolve_adapter(tmp_path, name, base_model=SMALL, base_sha256=sha, model_file=model_file)

    _small_adapter(tmp_path, "good")
    assert resolve("good").path.name == "adapter.gguf"
    assert [a.name for a in list_adapters(tmp_path)] == ["good"]
    with pytest.raises(AdapterError, match=r"no adapter named 'missing'.*adapters: good"):
        resolve("missing")
    with pytest.raises(AdapterError, match="not allowed"):
        resolve("../good")
    _small_adapter(tmp_path, "other-base", base="qwen2.5-coder-1.5b-instruct", sha256="f" * 64)
    with pytest.raises(AdapterError, match=r"trained for qwen2\.5-coder-1\.5b-instruct .*LADDER_LOCAL_MODEL"):
        resolve("other-base")
    broken = _small_adapter(tmp_path, "broken")
    (broken / "adapter.gguf").write_bytes(b"this is not a model file at all")
    with pytest.raises(AdapterError, match="is not a GGUF file"):
        resolve("broken")
    model_as_adapter = _small_adapter(tmp_path, "a-model")
    (model_as_adapter / "adapter.gguf").unlink()
    (model_as_adapter / "adapter.gguf").symlink_to(model_file)
    with pytest.raises(AdapterError, match="not a LoRA adapter"):
        resolve("a-model")


@pytest.mark.slow
def test_the_embedded_server_answers_with_an_adapter_and_names_it(tmp_path: Path) -> None:
    from agent.models.endpoint import ModelConfigError, open_chat_endpoint

    _small_adapter(tmp_path, "tuned")
    settings = Settings(
        local_model=SMALL, chat_adapter="tuned", data_dir=tmp_path, llm_threads=1, llm_context_tokens=1024
    )
    with open_chat_endpoint(settings) as endpoint:
        assert endpoint.model == f"{SMALL}+tuned"
        reply = endpoint.client.chat.completions.create(
            model=endpoint.model, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0
        )
    assert reply.model == f"{SMALL}+tuned" and (reply.choices[0].message.content or "").strip()
    unknown = settings.model_copy(update={"chat_adapter": "nope"})
    with (
        pytest.raises(ModelConfigError, match="LADDER_CHAT_ADAPTER: no adapter named 'nope'"),
        open_chat_endpoint(unknown),
    ):
        pass


def _tiny_base(tokenizer: Any, data_dir: Path, model_file: Path) -> None:
    """The tiny model where finetune_local keeps a de-quantized base, keyed by the file's sha256."""
    import hashlib

    sha = hashlib.sha256(model_file.read_bytes()).hexdigest()
    cache = data_dir / "adapters" / ".base" / sha[:16]
    tiny_model(len(tokenizer)).save_pretrained(cache)
    tokenizer.save_pretrained(cache)
    (cache / "done").write_text("tiny")


def _jsonl(path: Path, examples: list[Any]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in examples))
    return path


def test_finetune_local_writes_the_adapter_card_and_curve(tokenizer: Any, tmp_path: Path) -> None:
    model_file = tmp_path / "tiny.gguf"
    model_file.write_bytes(b"stands for a base model")
    _tiny_base(tokenizer, tmp_path, model_file)
    data = _jsonl(tmp_path / "train.jsonl", [chat(f"Code {i}?", f"Answer {i % 3}: yes.") for i in range(12)])
    lora = LoraSettings(epochs=2, lr=2e-2, rank=4, alpha=8, accumulate=2, bf16=False, targets=("q_proj", "v_proj"))
    said: list[str] = []
    card = finetune_local(
        tmp_path, LocalRun(data, "tiny-run", settings=lora), say=said.append, progress=lambda *a: None,
        model_file=model_file,
    )  # fmt: skip
    folder = tmp_path / "adapters" / "tiny-run"
    assert {p.name for p in folder.iterdir()} >= {"adapter.gguf", "card.json", "loss.png", "run.json", "peft"}
    assert not (folder / "checkpoint").exists()
    assert card["examples"] == {"train": 11, "heldout": 1} and card["adapted_weights"] == 4
    assert card["data_sha256"] and card["base_sha256"] and card["hyperparameters"]["rank"] == 4
    assert len(card["losses"]["heldout"]) == 3 and card["trained_tokens"] > 0
    assert any("tokens/s" in line and "min for 2 epochs" in line for line in said)
    with pytest.raises(FinetuneError, match="an adapter named 'tiny-run' exists"):
        finetune_local(tmp_path, LocalRun(data, "tiny-run", settings=lora), say=said.append, progress=print)


def test_finetune_local_refuses_bad_input_before_loading_a_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_answers = _jsonl(tmp_path / "q.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}] * 3)
    with pytest.raises(FinetuneError, match=r"nothing to train on: .*missing_assistant"):
        finetune_local(tmp_path, LocalRun(no_answers, "x"), say=print, progress=print)
    with pytest.raises(AdapterError, match="not allowed"):
        finetune_local(tmp_path, LocalRun(no_answers, "Bad Name"), say=print, progress=print)
    data = _jsonl(tmp_path / "ok.jsonl", [chat("q", "a")] * 4)
    import shutil as real_shutil

    monkeypatch.setattr(
        "evals.finetune.local.shutil.disk_usage", lambda path: real_shutil._ntuple_diskusage(10**9, 10**9 - 1, 1)
    )
    with pytest.raises(FinetuneError, match="under 500 MB free"):
        finetune_local(tmp_path, LocalRun(data, "full-disk"), say=print, progress=print)
    monkeypatch.undo()
    (tmp_path / "adapters" / "other").mkdir(parents=True)
    (tmp_path / "adapters" / "other" / "run.json").write_text(json.dumps({"data_sha256": "0"}))
    with pytest.raises(FinetuneError, match="unfinished run with other inputs"):
        finetune_local(tmp_path, LocalRun(data, "other"), say=print, progress=print)


def test_the_finetune_rung_serves_the_adapter_without_the_example() -> None:
    rungs = climb(["baseline", "+fewshot", "+retrieval", "+finetune"])
    top = rungs[-1]
    assert top.switches["retrieval"] and not top.switches["fewshot"]
    assert top.settings["chat_adapter"] == ADAPTER
    assert "chat_adapter" not in rungs[2].settings and rungs[2].switches["fewshot"]
    from evals.ladder.run import run_ladder

    with pytest.raises(EvalRunError, match="name it with --adapter"):
        run_ladder(Settings(), None, None, rungs=["baseline", "+finetune"])  # type: ignore[arg-type]
