"""``ladder llm``: the chat model on its own (a configured endpoint or the embedded server)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from agent.cli.common import load_settings, run


def llm_prompt(
    text: Annotated[str, typer.Argument(help="The prompt.")],
    system: Annotated[str | None, typer.Option(help="A system message.")] = None,
    model: Annotated[str | None, typer.Option(help="Model name (default: the chat model).")] = None,
    max_tokens: Annotated[int, typer.Option(min=1, max=8192)] = 256,
    as_json: Annotated[bool, typer.Option("--json", help="Print {model, text, usage} as JSON.")] = False,
) -> None:
    """Send one prompt to the chat model and stream the reply (temperature 0)."""
    if not text.strip():
        raise typer.BadParameter("the prompt is empty", param_hint="TEXT")

    def body() -> None:
        from agent.models.endpoint import open_chat_endpoint

        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
        with open_chat_endpoint(load_settings(), model) as endpoint:
            stream = endpoint.client.chat.completions.create(
                model=endpoint.model,
                messages=messages,  # type: ignore[arg-type]
                temperature=0,
                max_tokens=max_tokens,
                stream=True,
                stream_options={"include_usage": True},
            )
            parts: list[str] = []
            usage = None
            for chunk in stream:
                if chunk.usage is not None:
                    usage = chunk.usage.model_dump()
                for choice in chunk.choices:
                    piece = choice.delta.content or ""
                    parts.append(piece)
                    if not as_json:
                        print(piece, end="", flush=True)
        reply = "".join(parts)
        if usage is None:  # llama.cpp's server does not report usage when streaming: count with tiktoken
            from knowledge.tokens import count_tokens

            prompt_tokens = sum(count_tokens(m["content"]) for m in messages)
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": count_tokens(reply), "estimated": True}
        if as_json:
            print(json.dumps({"model": endpoint.model, "text": reply, "usage": usage}))
        else:
            print()

    run(body)
