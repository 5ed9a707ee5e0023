"""Ladder as an OpenAI-compatible model: ``/v1/models`` and ``/v1/chat/completions`` on the chat's server.

A front end that speaks OpenAI's chat API (Open WebUI, LibreChat, an agent framework, the ``openai``
client) points its base URL at ``http://HOST:PORT/v1`` and picks a model ``ladder/<collection>``.
Each call is one turn of the agent (face ``openai`` in the turn log): the last user message is the
question, the earlier user and assistant messages become the thread's history (so the condense step
can rewrite a follow-up), and the reply is the answer with its numbered references at the end, plus
the structured citations and the turn id in a ``ladder`` field that OpenAI clients ignore.

The API is stateless, as OpenAI's is: every call starts a new thread from the history it carries.
Bearer tokens are the MCP ones (``ladder users token NAME``; agent/chat/auth.py refuses a bad one);
with no users, the local operator asks. Every limit is an allowlist: the fields read, the roles,
the content part types, the characters. Bad input gets OpenAI's error shape
(``{"error": {"message", "type", "param", "code"}}``) with its HTTP status, before any turn starts.
The agent runs on a thread of its own, so the event loop never waits on it, and a client that goes
away mid-stream does not stop it: the turn still completes and is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from agent.chat.auth import bearer_token
from agent.core.events import TokenEvent, TurnEvent
from agent.core.results import TurnResult
from agent.core.turn import Agent, QuestionError, TurnRequest, check_question
from agent.records.access import AccessError, readable_collections
from agent.records.users import User, user_for_token
from knowledge.errors import user_errors

log = logging.getLogger(__name__)
MODEL_PREFIX = "ladder/"
MAX_BODY_BYTES = 2_000_000  # a request body; a long conversation is a few hundred KB
MAX_MESSAGES = 200
MAX_MESSAGE_CHARS = 50_000  # one earlier message (the question itself has the token limit of every face)
HISTORY_KEPT = 8  # earlier messages the thread keeps: condense reads the last 3 exchanges, smalltalk 4 messages
MAX_WAITING = 32  # calls that may wait for a free turn slot beyond LADDER_UI_CONCURRENCY; more get 429
KEEPALIVE_S = 15.0  # an SSE comment while the turn searches and checks, so proxies keep the stream open
ROLES = frozenset({"system", "developer", "user", "assistant"})
MESSAGE_FIELDS = frozenset({"role", "content", "name"})
# The request's fields: the ones Ladder reads, and sampling knobs it accepts and leaves to its own
# settings (the agent makes several calls per turn, each with its own budget). Anything else (tools,
# response_format, logprobs, audio...) is refused by name: Ladder would otherwise pretend to honour it.
READ_FIELDS = frozenset({"model", "messages", "stream", "stream_options", "n", "user"})
IGNORED_FIELDS = frozenset(
    {
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "presence_penalty",
        "frequency_penalty",
        "seed",
        "stop",
        "logit_bias",
        "metadata",
        "store",
        "reasoning_effort",
    }
)
REFERENCES = "\n\n---\nReferences:\n"  # starts the numbered references; taken off again when a client sends it back
REVISED = "\n\n[revised after fact-check]\n\n"  # in a stream whose streamed draft the fact-check rewrote
# Text is any Unicode scalar value but the C0 controls other than tab, newline and CR (NUL cannot be
# stored by PostgreSQL; a lone surrogate is not text at all).
_NOT_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")


class ApiError(Exception):
    """A refusal in OpenAI's error shape: the HTTP status, a message the caller can act on, and its param."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"Retry-After": "5"} if self.status == 429 else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def model_not_found(model: str) -> ApiError:
    """The same refusal for a model that does not exist and one the caller may not read (nothing leaks)."""
    return ApiError(
        404,
        f"the model {model!r} does not exist or you do not have access to it (GET /v1/models lists yours)",
        param="model",
        code="model_not_found",
    )


# -- the request -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Completion:
    """A checked request: the collection asked, the question and the history before it."""

    model: str
    collection: str
    question: str
    history: list[dict[str, str]] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False


def parse_completion(body: Any) -> Completion:
    """The request checked against the allowlists; an ApiError naming the first field that is not allowed."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    for name in body:
        if name not in READ_FIELDS and name not in IGNORED_FIELDS:
            raise ApiError(400, f"unsupported parameter {name!r}", param=name, code="unsupported_parameter")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "'model' is required: a model such as 'ladder/<collection>'", param="model")
    if not model.startswith(MODEL_PREFIX) or len(model) == len(MODEL_PREFIX):
        raise model_not_found(model)
    if body.get("n", 1) != 1:
        raise ApiError(400, "only n=1 is supported: one answer per question", param="n", code="unsupported_value")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be true or false", param="stream")
    question, history = _conversation(body.get("messages"))
    return Completion(model, model[len(MODEL_PREFIX) :], question, history, stream, _include_usage(body, stream))


def _include_usage(body: dict[str, Any], stream: bool) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not stream:
        raise ApiError(400, "'stream_options' is only allowed with stream=true", param="stream_options")
    if not isinstance(options, dict) or set(options) - {"include_usage"}:
        raise ApiError(400, "'stream_options' may hold only 'include_usage'", param="stream_options")
    include = options.get("include_usage", False)
    if not isinstance(include, bool):
        raise ApiError(400, "'include_usage' must be true or false", param="stream_options.include_usage")
    return include


def _conversation(messages: Any) -> tuple[str, list[dict[str, str]]]:
    """(the question: the last message, a user's; the earlier user and assistant messages, last few kept)."""
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list of messages", param="messages")
    if len(messages) > MAX_MESSAGES:
        raise ApiError(400, f"at most {MAX_MESSAGES} messages per request", param="messages")
    checked = [_message(m, f"messages[{i}]") for i, m in enumerate(messages)]
    spoken = [(i, role, text) for i, (role, text) in enumerate(checked) if role in ("user", "assistant")]
    if not spoken or spoken[-1][1] != "user" or spoken[-1][0] != len(checked) - 1:
        raise ApiError(400, "the last message must be the user's question", param=f"messages[{len(messages) - 1}]")
    last, _, question = spoken[-1]
    if not question.strip():
        raise ApiError(400, "the question (the last user message) is empty", param=f"messages[{last}].content")
    # System and developer messages are not passed on: Ladder's own instructions (answer from the
    # passages, cite them) are what its answers are checked against.
    history = [{"role": role, "content": answer_of(text)} for _, role, text in spoken[:-1]]
    return question, [m for m in history if m["content"].strip()][-HISTORY_KEPT:]


def _message(message: Any, where: str) -> tuple[str, str]:
    """One message as (role, text), or an ApiError naming what is wrong with it."""
    if not isinstance(message, dict):
        raise ApiError(400, f"{where} must be an object with 'role' and 'content'", param=where)
    extra = sorted(set(message) - MESSAGE_FIELDS)
    if extra:
        raise ApiError(400, f"{where} has an unsupported field {extra[0]!r}", param=f"{where}.{extra[0]}")
    role = message.get("role")
    if role not in ROLES:
        allowed = ", ".join(sorted(ROLES))
        raise ApiError(400, f"{where}.role must be one of {allowed}; got {role!r}", param=f"{where}.role")
    text = _text(message.get("content"), f"{where}.content")
    if len(text) > MAX_MESSAGE_CHARS:
        raise ApiError(
            400,
            f"{where} is {len(text)} characters long; the limit is {MAX_MESSAGE_CHARS}",
            param=f"{where}.content",
            code="message_too_long",
        )
    if _NOT_TEXT.search(text):
        raise ApiError(400, f"{where} holds control characters or invalid Unicode", param=f"{where}.content")
    return role, text


def _text(content: Any, where: str) -> str:
    """A message's text: a string, or a list of ``{"type": "text", "text": ...}`` parts (no images, audio, files)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ApiError(400, f"{where} must be a string or a list of text parts", param=where)
    texts = []
    for i, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise ApiError(400, f"{where}[{i}]: only text parts are supported, not {kind!r}", param=f"{where}[{i}]")
        texts.append(part["text"])
    return "\n".join(texts)


def answer_of(text: str) -> str:
    """An assistant message as the thread keeps it: Ladder's own references and streamed draft taken off."""
    text = text.rsplit(REVISED, 1)[-1]
    return text.split(REFERENCES, 1)[0].strip()


async def read_json(request: Request, limit: int = MAX_BODY_BYTES) -> Any:
    """The request's JSON body, read no further than ``limit`` bytes."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise ApiError(413, f"the request body is over {limit} bytes", code="request_too_large")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise ApiError(413, f"the request body is over {limit} bytes", code="request_too_large")
    try:
        return json.loads(data)
    except ValueError:  # UnicodeDecodeError is a ValueError too
        raise ApiError(400, "the request body is not valid JSON") from None


# -- the reply -------------------------------------------------------------------------------------


def references(result: TurnResult) -> str:
    """The numbered references the answer cites, as a block for the end of the reply ('' when none)."""
    by_id = {p["chunk_id"]: p for p in result.passages}
    lines = []
    for position, citation in enumerate(result.citations, start=1):
        passage = by_id.get(citation.chunk_id)
        if passage is None:
            continue
        name = passage.get("title") or citation.doc_id
        source = passage.get("source") or citation.doc_id
        # a list item, so Markdown front ends keep one reference a line ("[n]:" would be a link definition)
        lines.append(f"- [{citation.number or position}] {name} — {source}")
    return REFERENCES + "\n".join(lines) if lines else ""


def citations_of(result: TurnResult) -> list[dict[str, Any]]:
    """The structured citations: each with the passage's title, source, heading and text."""
    by_id = {p["chunk_id"]: p for p in result.passages}
    out = []
    for citation in result.citations:
        passage = by_id.get(citation.chunk_id, {})
        shown = {k: passage.get(k) for k in ("title", "heading", "source", "text") if passage.get(k)}
        out.append({**citation.to_dict(), **shown})
    return out


def ladder_extra(result: TurnResult) -> dict[str, Any]:
    """What OpenAI clients ignore and Ladder's callers read: the turn id, the citations, the checks."""
    extra: dict[str, Any] = {
        "turn_id": result.turn_id,
        "thread_id": result.thread_id,
        "citations": citations_of(result),
        "fact_check": result.fact_check,
        "revised": result.revised,
    }
    if result.error is not None:
        extra["error"] = result.error
    return extra


def usage_of(result: TurnResult) -> dict[str, int]:
    """Tokens of every model call the turn made (a turn is several calls: condense, search, draft, check)."""
    prompt, completion = int(result.usage.get("prompt_tokens", 0)), int(result.usage.get("completion_tokens", 0))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion_body(call_id: str, model: str, result: TurnResult) -> dict[str, Any]:
    """A whole ``chat.completion``: the answer with its references, usage, and the ``ladder`` field."""
    return {
        "id": call_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.answer + references(result), "refusal": None},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": usage_of(result),
        "ladder": ladder_extra(result),
    }


def chunk(call_id: str, model: str, delta: dict[str, Any], **extra: Any) -> str:
    """One ``chat.completion.chunk`` as an SSE event."""
    body: dict[str, Any] = {
        "id": call_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": extra.pop("finish_reason", None), "logprobs": None}],
        **extra,
    }
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


def closing_text(streamed: str, result: TurnResult) -> str:
    """What a stream still owes after the draft's tokens: the answer again when it is not what streamed
    (the fact-check rewrote it, or the turn failed), then the references."""
    answer = result.answer
    if answer.strip() == streamed.strip():
        return references(result)
    if not streamed.strip():
        return answer + references(result)
    return REVISED + answer + references(result)


# -- a turn on its own thread -----------------------------------------------------------------------


class ApiTurn:
    """One turn on a worker thread; its answer tokens reach the event loop through an asyncio queue.

    The worker does not belong to the request: a client that disconnects stops only the reading,
    and the turn runs to its end and is logged. ``None`` in the queue says the turn has ended.
    """

    def __init__(self, agent: Agent, turn: TurnRequest, slots: threading.BoundedSemaphore) -> None:
        self.agent, self.turn, self.slots = agent, turn, slots
        self.loop = asyncio.get_running_loop()
        self.tokens: asyncio.Queue[str | None] = asyncio.Queue()
        self.result: TurnResult | None = None
        self.failure: ApiError | None = None
        self.ended = False  # the queue's None has been read
        self.on_end: Callable[[], None] | None = None

    def start(self, on_end: Callable[[], None] | None = None) -> None:
        """Run the turn on its own thread; ``on_end()`` is called there when it has ended."""
        self.on_end = on_end
        threading.Thread(target=self._run, name="ladder-openai-turn", daemon=True).start()

    def _run(self) -> None:
        try:
            with self.slots:  # at most LADDER_UI_CONCURRENCY turns of this API at once; the others wait here
                self.result = self.agent.ask(self.turn, on_event=self._event)
        except user_errors() as exc:
            self.failure = refusal_of(exc, self.turn)
        except Exception as exc:  # never a stack trace to the client; the server log keeps it
            log.exception("an OpenAI-compatible turn failed")
            self.failure = ApiError(
                500, f"the turn failed unexpectedly ({type(exc).__name__}); see the server log", kind="server_error"
            )
        finally:
            if self.on_end is not None:
                self.on_end()
            self._post(None)

    def _event(self, event: TurnEvent) -> None:
        if isinstance(event, TokenEvent):
            self._post(event.text)

    def _post(self, item: str | None) -> None:
        with contextlib.suppress(RuntimeError):  # the server's loop has closed (shutdown): nobody is reading
            self.loop.call_soon_threadsafe(self.tokens.put_nowait, item)

    async def next_token(self, timeout: float) -> str | None:
        """The next piece of the answer; None when the turn has ended; TimeoutError when none came in time."""
        if self.ended:
            return None
        piece = await asyncio.wait_for(self.tokens.get(), timeout)
        self.ended = piece is None
        return piece

    async def finished(self) -> TurnResult:
        """Wait (without blocking the loop) for the turn's end; its result, or the ApiError that stopped it."""
        while not self.ended:  # bounded by the turn's own limits (model budget, queue timeout, recursion)
            self.ended = await self.tokens.get() is None
        if self.result is None:
            raise self.failure or ApiError(500, "the turn ended without an answer", kind="server_error")
        return self.result


def refusal_of(exc: Exception, turn: TurnRequest) -> ApiError:
    """A failure raised before the graph ran, as the error a client can act on."""
    if isinstance(exc, AccessError):
        return model_not_found(MODEL_PREFIX + turn.collection)
    if isinstance(exc, QuestionError):
        return ApiError(400, str(exc), param="messages", code="invalid_question")
    if isinstance(exc, ValueError):
        return ApiError(400, str(exc))
    return ApiError(503, str(exc), kind="server_error", code="unavailable")  # the database or model endpoint away


# -- the routes ------------------------------------------------------------------------------------


class OpenAIApi:
    """The routes, bound to the chat's agent and its login setting."""

    def __init__(self, agent: Agent, *, login: bool, max_turns: int) -> None:
        self.agent, self.login = agent, login
        self.slots = threading.BoundedSemaphore(max_turns)
        self.max_calls = max_turns + MAX_WAITING
        self._turns = 0  # turns running or waiting for a slot
        self._lock = threading.Lock()

    def routes(self) -> list[Route]:
        return [
            Route("/v1/models", self.list_models, methods=["GET"]),
            Route("/v1/models/{model:path}", self.get_model, methods=["GET"]),
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
        ]

    async def caller(self, request: Request) -> User | None:
        """The token's user; None (the local operator) when logins are off. The middleware has already
        refused a bad token; without one, a server with users refuses here too."""
        if not self.login:
            return None
        token = bearer_token(request.headers.get("authorization", ""))
        user = await to_thread.run_sync(self._user_for, token) if token else None
        if user is None:
            raise ApiError(401, "send Authorization: Bearer <token> (ladder users token NAME)", code="invalid_api_key")
        return user

    def _user_for(self, token: str) -> User | None:
        with self.agent.kb.db.connection() as conn:
            return user_for_token(conn, token)

    def _models(self, user: User | None) -> list[dict[str, Any]]:
        """The collections this user may read, as OpenAI model objects."""
        kb = self.agent.kb
        with kb.db.connection() as conn:
            readable = readable_collections(conn, user)
        return [
            {
                "id": MODEL_PREFIX + c["name"],
                "object": "model",
                "created": int(c["created_at"].timestamp()) if c.get("created_at") else 0,
                "owned_by": "ladder",
            }
            for c in kb.collections()
            if c["name"] in readable
        ]

    async def list_models(self, request: Request) -> Response:
        try:
            models = await to_thread.run_sync(self._models, await self.caller(request))
        except ApiError as exc:
            return exc.response()
        except user_errors() as exc:
            return ApiError(503, str(exc), kind="server_error").response()
        return JSONResponse({"object": "list", "data": models})

    async def get_model(self, request: Request) -> Response:
        wanted = request.path_params["model"]
        try:
            models = await to_thread.run_sync(self._models, await self.caller(request))
        except ApiError as exc:
            return exc.response()
        except user_errors() as exc:
            return ApiError(503, str(exc), kind="server_error").response()
        found = next((m for m in models if m["id"] == wanted), None)
        return JSONResponse(found) if found else model_not_found(wanted).response()

    async def chat_completions(self, request: Request) -> Response:
        """One turn: the whole completion, or an SSE stream of chunks ending in ``data: [DONE]``."""
        try:
            turn, asked = await self._prepare(request)
            self._admit()
        except ApiError as exc:
            return exc.response()
        call_id = f"chatcmpl-{uuid.uuid4().hex}"
        turn.start(on_end=self._leave)
        if asked.stream:
            return StreamingResponse(
                stream_events(turn, call_id, asked),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        try:
            return JSONResponse(completion_body(call_id, asked.model, await turn.finished()))
        except ApiError as exc:
            return exc.response()

    def _admit(self) -> None:
        """Count a turn in; refuse it when as many run or wait as the API allows (a turn counts until it
        ends, whether or not its client is still there)."""
        with self._lock:
            if self._turns >= self.max_calls:
                raise ApiError(
                    429,
                    f"{self._turns} questions are already being answered or waiting; try again shortly",
                    kind="rate_limit_error",
                    code="too_many_requests",
                )
            self._turns += 1

    def _leave(self) -> None:
        with self._lock:
            self._turns -= 1

    async def _prepare(self, request: Request) -> tuple[ApiTurn, Completion]:
        """The checked request and its turn, not yet started: every refusal happens here, before any turn."""
        asked = parse_completion(await read_json(request))
        user = await self.caller(request)
        try:
            question = check_question(asked.question, self.agent.settings)
        except QuestionError as exc:
            raise ApiError(400, str(exc), param="messages", code="invalid_question") from None
        await to_thread.run_sync(self._check_model, asked, user)
        turn = TurnRequest(question, asked.collection, face="openai", user=user, history=asked.history)
        return ApiTurn(self.agent, turn, self.slots), asked

    def _check_model(self, asked: Completion, user: User | None) -> None:
        try:
            with self.agent.kb.db.connection() as conn:
                readable = readable_collections(conn, user)
        except user_errors() as exc:
            raise ApiError(503, str(exc), kind="server_error", code="unavailable") from None
        if asked.collection not in readable:
            raise model_not_found(asked.model)


async def stream_events(turn: ApiTurn, call_id: str, asked: Completion) -> AsyncIterator[str]:
    """The turn as SSE: the role, each token of the draft as it comes (a comment while none does), then
    the rest of the answer, its references and the ``ladder`` field, the usage if asked, ``[DONE]``."""
    model = asked.model
    yield chunk(call_id, model, {"role": "assistant", "content": ""})
    streamed = []
    while True:  # ends with the turn, which its own limits bound (model budget, queue timeout, recursion)
        try:
            piece = await turn.next_token(KEEPALIVE_S)
        except TimeoutError:
            yield ": still working\n\n"
            continue
        if piece is None:
            break
        streamed.append(piece)
        yield chunk(call_id, model, {"content": piece})
    try:
        result = await turn.finished()
    except ApiError as exc:
        yield f"data: {json.dumps(exc.body())}\n\ndata: [DONE]\n\n"
        return
    rest = closing_text("".join(streamed), result)
    if rest:
        yield chunk(call_id, model, {"content": rest})
    yield chunk(call_id, model, {}, finish_reason="stop", ladder=ladder_extra(result))
    if asked.include_usage:
        body = {"id": call_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
        yield f"data: {json.dumps({**body, 'choices': [], 'usage': usage_of(result)})}\n\n"
    yield "data: [DONE]\n\n"


def openai_routes(agent: Agent, *, login: bool, max_turns: int) -> list[Route]:
    """The API's routes, for the chat server's app (``launch(..., openai_api=True)``)."""
    return OpenAIApi(agent, login=login, max_turns=max_turns).routes()


__all__ = ["ApiError", "Completion", "OpenAIApi", "answer_of", "openai_routes", "parse_completion"]
