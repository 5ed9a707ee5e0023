"""Chat fine-tuning JSONL checks, token counts and cost estimate (OpenAI cookbook rules)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from evals.finetune import data as fd
from knowledge.tokens import get_encoding


def simple() -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": "You answer in one word."},
            {"role": "user", "content": "Capital of France?", "name": "ana"},
            {"role": "assistant", "content": "Paris"},
        ]
    }


def with_tools() -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 4}'},
            {"role": "assistant", "content": "It is 4 °C in Oslo.", "weight": 1},
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
        "parallel_tool_calls": False,
    }


def mutate(base: dict[str, Any], change: Any) -> dict[str, Any]:
    example = copy.deepcopy(base)
    change(example)
    return example


def _set_call(key: str, value: Any) -> Any:
    return lambda ex: ex["messages"][1]["tool_calls"][0]["function"].__setitem__(key, value)


CASES = [
    ("data_type", ["not", "an", "object"]),
    ("data_type", mutate(simple(), lambda ex: ex["messages"].insert(0, "hello"))),
    ("missing_messages_list", {"prompt": "x", "completion": "y"}),
    ("missing_messages_list", {"messages": []}),
    ("example_unrecognized_key", mutate(simple(), lambda ex: ex.update(metadata={"id": 1}))),
    ("bad_tools", mutate(simple(), lambda ex: ex.update(tools={"type": "function"}))),
    ("bad_tools", mutate(simple(), lambda ex: ex.update(parallel_tool_calls="yes"))),
    ("message_missing_key", mutate(simple(), lambda ex: ex["messages"][1].pop("content"))),
    ("message_missing_key", mutate(simple(), lambda ex: ex["messages"][0].pop("role"))),
    ("message_missing_key", mutate(with_tools(), lambda ex: ex["messages"][2].pop("tool_call_id"))),
    ("message_unrecognized_key", mutate(simple(), lambda ex: ex["messages"][1].update(function_call={}))),
    ("message_unrecognized_key", mutate(simple(), lambda ex: ex["messages"][1].update(weight=1))),
    ("unrecognized_role", mutate(simple(), lambda ex: ex["messages"][0].update(role="developer"))),
    ("unrecognized_role", mutate(simple(), lambda ex: ex["messages"][1].update(role="human"))),
    ("missing_content", mutate(simple(), lambda ex: ex["messages"][1].update(content=""))),
    ("missing_content", mutate(simple(), lambda ex: ex["messages"][2].update(content=None))),
    ("missing_content", mutate(simple(), lambda ex: ex["messages"][1].update(content=["text"]))),
    ("invalid_weight", mutate(with_tools(), lambda ex: ex["messages"][3].update(weight=0.5))),
    ("bad_tool_calls", mutate(with_tools(), lambda ex: ex["messages"][1].update(tool_calls=[]))),
    ("bad_tool_calls", mutate(with_tools(), lambda ex: ex["messages"][1]["tool_calls"][0].pop("id"))),
    ("bad_tool_calls", mutate(with_tools(), lambda ex: ex["messages"][1]["tool_calls"][0].update(type="code"))),
    ("bad_tool_calls", mutate(with_tools(), _set_call("name", ""))),
    ("bad_tool_calls", mutate(with_tools(), _set_call("arguments", {"city": "Oslo"}))),
    ("bad_tool_calls", mutate(with_tools(), _set_call("arguments", "{not json"))),
    ("bad_tool_calls", mutate(with_tools(), _set_call("arguments", "[1, 2]"))),
    ("unmatched_tool_call_id", mutate(with_tools(), lambda ex: ex["messages"][2].update(tool_call_id="call_9"))),
    ("unmatched_tool_call_id", mutate(with_tools(), lambda ex: ex["messages"].insert(0, ex["messages"][2]))),
    ("example_missing_assistant_message", {"messages": [{"role": "user", "content": "hi"}]}),
    ("assistant_not_last", mutate(simple(), lambda ex: ex["messages"].append({"role": "user", "content": "ok"}))),
]


@pytest.mark.parametrize(("error", "example"), CASES, ids=[f"{e}-{i}" for i, (e, _) in enumerate(CASES)])
def test_check_example_catches_each_error(error: str, example: Any) -> None:
    assert error in fd.FORMAT_ERRORS
    assert error in fd.check_example(example)


def test_every_error_key_has_a_case() -> None:
    assert {e for e, _ in CASES} | {"invalid_json"} == set(fd.FORMAT_ERRORS)


def test_valid_examples_pass() -> None:
    assert fd.check_example(simple()) == []
    assert fd.check_example(with_tools()) == []
    # An example may end on the assistant's tool call; content may then be absent.
    ends_on_call = mutate(with_tools(), lambda ex: ex["messages"][1].pop("content"))
    ends_on_call["messages"] = ends_on_call["messages"][:2]
    assert fd.check_example(ends_on_call) == []


def test_errors_are_reported_once_per_example() -> None:
    example = {"messages": [{"role": "user", "content": ""}, {"role": "user", "content": ""}]}
    errors = fd.check_example(example)
    assert errors.count("missing_content") == 1
    assert errors == ["missing_content", "example_missing_assistant_message"]


def test_token_count_matches_hand_computation() -> None:
    enc = get_encoding("cl100k_base")

    def n(text: str) -> int:
        return len(enc.encode(text))

    example = simple()
    expected = 3 * 3 + 3  # three messages, reply priming
    expected += n("system") + n("You answer in one word.")
    expected += n("user") + n("Capital of France?") + n("ana") + 1  # the name costs one more
    expected += n("assistant") + n("Paris")
    assert fd.count_tokens(example) == expected
    assert fd.assistant_tokens(example) == n("Paris")

    tool_example = with_tools()
    call = tool_example["messages"][1]["tool_calls"][0]["function"]
    call_tokens = n(call["name"]) + n(call["arguments"])
    assert fd.assistant_tokens(tool_example) == call_tokens + n("It is 4 °C in Oslo.")
    expected_tools = 4 * 3 + 3
    expected_tools += n("user") + n("Weather in Oslo?")
    expected_tools += n("assistant") + call_tokens
    expected_tools += n("tool") + n("call_1") + n('{"temp_c": 4}')
    expected_tools += n("assistant") + n("It is 4 °C in Oslo.")
    assert fd.count_tokens(tool_example) == expected_tools


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_validate_jsonl_mixed_file(tmp_path: Path) -> None:
    long_example = mutate(simple(), lambda ex: ex["messages"][2].update(content="word " * 200))
    path = write_lines(
        tmp_path / "train.jsonl",
        [
            json.dumps(simple()),  # 1 valid
            '{"messages": [',  # 2 invalid JSON
            "",  # 3 empty, skipped
            json.dumps({"messages": [{"role": "user", "content": "hi"}]}),  # 4 missing assistant
            json.dumps(long_example),  # 5 too long
            json.dumps(with_tools()),  # 6 valid
            "not json at all",  # 7 invalid JSON
            "   ",  # 8 blank, skipped
        ],
    )
    with path.open("ab") as handle:
        handle.write(b'{"messages": "\xff\xfe"}\n')  # 9 not UTF-8: invalid JSON, no crash

    kept, report = fd.validate_jsonl(path, max_tokens=100)

    assert kept == [simple(), with_tools()]
    assert report.examples == 7
    assert report.valid == 3
    assert report.kept == 2
    assert report.errors == {"invalid_json": 3, "example_missing_assistant_message": 1}
    assert report.error_lines == {"invalid_json": [2, 7, 9], "example_missing_assistant_message": [4]}
    assert report.too_long == [5]
    assert report.warnings == {"missing_system_message": 1}
    lengths = [fd.count_tokens(simple()), fd.count_tokens(with_tools())]
    assert report.billed_tokens_per_epoch == sum(lengths)
    assert report.token_stats["min"] == min(lengths)
    assert report.token_stats["max"] == max(lengths)
    assert report.token_stats["mean"] == pytest.approx(sum(lengths) / 2)
    assert min(lengths) <= report.token_stats["p5"] <= report.token_stats["p95"] <= max(lengths)
    summary = report.to_dict()
    assert json.loads(json.dumps(summary))["errors"]["invalid_json"] == 3
    assert summary["kept"] == 2


def test_error_lines_keep_only_the_first_few(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "bad.jsonl", ["{"] * (fd.MAX_ERROR_LINES + 3))
    kept, report = fd.validate_jsonl(path)
    assert kept == []
    assert report.errors["invalid_json"] == fd.MAX_ERROR_LINES + 3
    assert report.error_lines["invalid_json"] == list(range(1, fd.MAX_ERROR_LINES + 1))
    assert report.token_stats == {}
    assert report.billed_tokens_per_epoch == 0


def test_distribution_percentiles() -> None:
    stats = fd.distribution(list(range(1, 102)))  # 1..101
    assert stats == {"min": 1, "max": 101, "mean": 51.0, "median": 51, "p5": 6.0, "p95": 96.0}
    assert fd.distribution([7])["p95"] == 7


def test_cost_estimate_arithmetic() -> None:
    report = fd.ValidationReport(billed_tokens_per_epoch=250_000)
    assert report.estimate_cost(epochs=3, price_per_1m_training_tokens=8.0) == pytest.approx(250_000 * 3 * 8.0 / 1e6)
    assert report.estimate_cost(epochs=0, price_per_1m_training_tokens=25.0) == 0
    with pytest.raises(ValueError):
        report.estimate_cost(epochs=-1, price_per_1m_training_tokens=1.0)


def test_default_epochs_follow_the_cookbook() -> None:
    assert fd.default_epochs(5) == 20
    assert fd.default_epochs(1) == 25
    assert fd.default_epochs(1000) == 3
    assert fd.default_epochs(20_000) == 1


def test_dedupe_ignores_key_order() -> None:
    a = simple()
    reordered = {"messages": [dict(reversed(list(m.items()))) for m in a["messages"]]}
    unique, removed = fd.dedupe([a, with_tools(), reordered, simple()])
    assert unique == [a, with_tools()]
    assert removed == 2


def test_split_is_deterministic_and_sized() -> None:
    examples = [{"messages": [{"role": "user", "content": str(i)}]} for i in range(20)]
    train, validation = fd.split_train_validation(examples, 0.2, seed=7)
    assert (train, validation) == fd.split_train_validation(examples, 0.2, seed=7)
    assert len(train) == 16 and len(validation) == 4
    assert sorted(map(json.dumps, train + validation)) == sorted(map(json.dumps, examples))
    assert fd.split_train_validation(examples, 0.2, seed=8) != (train, validation)
    assert fd.split_train_validation(examples, 0.0) == (fd.split_train_validation(examples, 0.0)[0], [])
    assert len(fd.split_train_validation(examples, 0.0)[0]) == 20
    assert [len(part) for part in fd.split_train_validation(examples[:3], 0.01)] == [2, 1]
    assert [len(part) for part in fd.split_train_validation(examples[:1], 0.5)] == [1, 0]


@pytest.mark.parametrize("fraction", [-0.1, 0.51, 1.0, float("nan")])
def test_split_rejects_bad_fractions(fraction: float) -> None:
    with pytest.raises(ValueError, match=r"between 0 and 0\.5"):
        fd.split_train_validation([simple()], fraction)


def test_write_jsonl_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "out" / "train.jsonl"
    assert fd.write_jsonl(path, [simple(), with_tools()]) == 2
    assert path.read_text(encoding="utf-8").count("\n") == 2
    kept, report = fd.validate_jsonl(path)
    assert kept == [simple(), with_tools()]
    assert report.errors == {}
