"""``so8t serve``: an OpenAI-compatible HTTP server over llama.cpp, behind the SO8T safety head's guard.

Endpoints (FastAPI, served by uvicorn): ``GET /v1/models``; ``POST /v1/chat/completions`` (``stream`` too,
as server-sent events ending with ``data: [DONE]``). One llama.cpp context serves every request, one at a
time (a lock; llama.cpp contexts are not thread-safe): concurrent clients queue.

The guard is the one of ``so8t run`` (so8t/llama/runner.py): a trained head decides from the same prefill before
the first token. A refused request is a normal completion whose ``finish_reason`` is ``"content_filter"``
(as OpenAI marks a response its content policy stopped), with no generated token (``usage.
completion_tokens`` 0) and the configured refusal text as content. Every response carries the extra field
``so8t``: ``{"guard": status, "label", "probabilities", "refused"}`` with ``status`` one of
``so8t.llama.runner.SAFETY_STATUSES`` (``"verdict"`` when the head decided; otherwise why it did not, e.g.
``"untrained"``; ``"image"``: messages with image parts go through llama.cpp's multimodal handler and the
mmproj, unguarded, and say so). Streaming sends it in the last chunk.

Errors are OpenAI-shaped, ``{"error": {"message", "type", "code"}}``: malformed JSON or a bad field 400,
an unknown model 404, a prompt longer than the context 400 (``context_length_exceeded``).
"""


import json
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from so8t.llama.runner import DEFAULT_REFUSAL, head_guard, resolve_sidecar, safety_status

DEFAULT_MAX_TOKENS = 64


@dataclass
class ServeConfig:
    model: Path
    sidecar: str | Path | None = "auto"
    mmproj: Path | None = None
    n_ctx: int = 2048
    n_threads: int | None = None
    model_name: str | None = None  # the id clients ask for; default: the file's stem
    guard: bool = True
    on_escalate: str = "answer"
    refusal: str = DEFAULT_REFUSAL


class RequestError(Exception):
    def __init__(self, status: int, message: str, code: str):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class Engine:
    """The loaded model, its guard status and the lock every generation holds."""

    def __init__(self, config: "ServeConfig"):
        from so8t.llama.runtime import LlamaRuntime

        self.config = config
        self.name = config.model_name or Path(config.model).stem
        side = resolve_sidecar(config.model, config.sidecar)
        self.runtime = LlamaRuntime(config.model, sidecar=side, mmproj=config.mmproj, n_ctx=config.n_ctx,
                                    n_threads=config.n_threads)
        self.status = safety_status(side) if config.guard else "off"
        self.lock = threading.Lock()

    def prepare(self, body: dict) -> tuple[list[int] | None, list, int]:
        """(prompt ids, or None for an image conversation; the messages; max tokens) of a request body."""
        from so8t.llama.chat import chatml

        if body.get("model") != self.name:
            raise RequestError(404, f"model {body.get('model')!r} not found; this server has {self.name!r}",
                               "model_not_found")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestError(400, "'messages' must be a non-empty list", "invalid_messages")
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens")) or DEFAULT_MAX_TOKENS
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise RequestError(400, "'max_tokens' must be a positive integer", "invalid_max_tokens")
        if any(isinstance(m, dict) and isinstance(m.get("content"), list) and
               any(p.get("type") == "image_url" for p in m["content"] if isinstance(p, dict)) for m in messages):
            if self.runtime.mmproj is None:
                raise RequestError(400, "an image needs a server started with --mmproj", "no_mmproj")
            return None, messages, max_tokens
        try:
            text = chatml([{"role": m.get("role"), "content": _text_of(m.get("content"))} for m in messages])
        except (AttributeError, ValueError) as err:
            raise RequestError(400, str(err), "invalid_messages") from None
        ids = self.runtime.tokenize(text)
        if len(ids) >= self.runtime.n_ctx:
            raise RequestError(400, f"the prompt has {len(ids)} tokens; the context holds {self.runtime.n_ctx}",
                               "context_length_exceeded")
        return ids, messages, min(max_tokens, self.runtime.n_ctx - len(ids))

    def guard(self, seen: dict):
        """The guard callable of ``so8t run`` for ``LlamaRuntime.stream`` (None when the head does not decide)."""
        return head_guard(self.runtime, self.config.on_escalate, seen) if self.status == "verdict" else None

    def safety_field(self, seen: dict, refused: bool, status: str | None = None) -> dict:
        verdict = seen.get("verdict")
        return {"guard": status or self.status, "label": verdict.label if verdict else None,
                "probabilities": verdict.probabilities if verdict else None, "refused": refused}


def _text_of(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    raise ValueError("a message's content must be a string or a list of parts")


def _completion(engine: Engine, ids, messages, max_tokens: int) -> dict:
    seen: dict = {}
    with engine.lock:
        if ids is None:
            text = engine.runtime.multimodal_chat(messages, max_tokens)
            usage, finish, safety = (0, 0), "stop", engine.safety_field(seen, False, "image")
        else:
            stream = engine.runtime.stream(ids, max_tokens, True, engine.guard(seen))
            tokens = list(stream)
            text = engine.config.refusal if stream.guarded else engine.runtime.detokenize(tokens)
            finish = "content_filter" if stream.guarded else ("stop" if stream.stopped_at_eos else "length")
            usage, safety = (len(ids), len(tokens)), engine.safety_field(seen, stream.guarded)
    return {**_envelope(engine, "chat.completion"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)},
            "so8t": safety}


def _envelope(engine: Engine, kind: str) -> dict:
    return {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": kind, "created": int(time.time()),
            "model": engine.name}


def _chunks(engine: Engine, ids: list[int], max_tokens: int):
    """Server-sent events of a streamed completion: the role, content deltas as UTF-8 completes, and a last
    chunk with ``finish_reason`` and the ``so8t`` field. The lock is held while it runs and released when the
    client goes away (the generator is closed)."""
    head = _envelope(engine, "chat.completion.chunk")

    def event(delta: dict, finish=None, **extra) -> str:
        chunk = {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

    seen: dict = {}
    with engine.lock:
        yield event({"role": "assistant"})
        stream = engine.runtime.stream(ids, max_tokens, True, engine.guard(seen))
        sent = ""
        for _ in stream:
            text = engine.runtime.detokenize(stream.tokens)
            if not text.endswith("\ufffd"):  # a character still incomplete waits for its next bytes
                yield event({"content": text[len(sent):]})
                sent = text
        if stream.guarded:
            yield event({"content": engine.config.refusal})
        finish = "content_filter" if stream.guarded else ("stop" if stream.stopped_at_eos else "length")
        yield event({}, finish, so8t=engine.safety_field(seen, stream.guarded))
    yield "data: [DONE]\n\n"


async def _released(events):
    """``events`` (a generator that holds the model's lock) run one step at a time on a worker thread, and
    closed, so its lock is released, whenever the response ends: also when the client goes away mid-stream
    (Starlette cancels the response; anyio lets the running step finish first, so closing is safe)."""
    from anyio import to_thread

    done = object()
    try:
        while (event := await to_thread.run_sync(next, events, done)) is not done:
            yield event
    finally:
        events.close()


def create_app(config: ServeConfig):
    """The FastAPI application of ``config`` (the model is loaded here)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse

    engine = Engine(config)
    app = FastAPI(title="so8t serve")
    app.state.engine = engine

    @app.exception_handler(RequestError)
    def request_error(request, err: RequestError):
        kind = "not_found_error" if err.status == 404 else "invalid_request_error"
        return JSONResponse({"error": {"message": err.message, "type": kind, "code": err.code}}, err.status)

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": engine.name, "object": "model", "created": 0, "owned_by": "so8t"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        from starlette.concurrency import run_in_threadpool

        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError) as err:
            raise RequestError(400, f"the request body is not valid JSON: {err}", "invalid_json") from None
        if not isinstance(body, dict):
            raise RequestError(400, "the request body must be a JSON object", "invalid_json")
        ids, messages, max_tokens = await run_in_threadpool(engine.prepare, body)
        if body.get("stream") and ids is None:
            raise RequestError(400, "messages with images are answered whole; send them without 'stream'",
                               "stream_not_supported")
        if body.get("stream"):
            return StreamingResponse(_released(_chunks(engine, ids, max_tokens)), media_type="text/event-stream")
        return await run_in_threadpool(_completion, engine, ids, messages, max_tokens)

    return app


def serve(config: ServeConfig, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Load the model and serve until interrupted."""
    import uvicorn

    uvicorn.run(create_app(config), host=host, port=port, log_level="warning")
