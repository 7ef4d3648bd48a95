"""POST /v1/chat/completions for runs that answer conversations (`Task.interactive`): the request and
answer shapes of OpenAI's chat completions API, so existing OpenAI clients work unchanged (base URL
http://127.0.0.1:8000/v1). `stream: true` answers as server-sent events ("data: {chunk}" lines, then
"data: [DONE]"). Greedy unless `temperature` > 0 (then sampled); `max_tokens` bounds the reply. Fields
OpenAI clients send that change nothing here (model, top_p, n = 1, user, ...) are accepted."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from fastapi import Request

from ..errors import DataError, RequestError

ACCEPTED = {
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "stream",
    "top_p",
    "n",
    "user",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "stream_options",
}
MAX_TOKENS = 4096


def _number(data: dict, key: str, lo: float, hi: float, integer: bool = False) -> Any:
    v = data.get(key)
    if v is None:
        return None
    wrong_type = isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int))
    if wrong_type or not lo <= v <= hi:
        raise RequestError(key, f"expected {'an integer' if integer else 'a number'} from {lo:g} to {hi:g}")
    return v


def parse_request(body: bytes, limits, modality) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise RequestError("body", 'not JSON; send {"messages": [...]}') from None
    if not isinstance(data, dict):
        raise RequestError("body", 'expected a JSON object {"messages": [...]}')
    unknown = sorted(set(data) - ACCEPTED)
    if unknown:
        raise RequestError(unknown[0], "unknown field")
    if "messages" not in data:
        raise RequestError("messages", "missing; send the conversation so far, ending with the user's message")
    try:
        (messages,) = modality.from_request([data["messages"]], limits)
    except RequestError as e:
        raise RequestError(e.field.replace("inputs[0]", "messages"), e.message, e.status) from None
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    _number(data, "n", 1, 1, integer=True)  # one choice per request
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError("stream", "expected true or false")
    cap = data.get("max_completion_tokens", data.get("max_tokens"))
    field = "max_completion_tokens" if "max_completion_tokens" in data else "max_tokens"
    max_tokens = _number({field: cap}, field, 1, MAX_TOKENS, integer=True)
    return {
        "messages": messages,
        "stream": stream,
        "max_tokens": max_tokens,
        "temperature": _number(data, "temperature", 0, 2),
        "model": data.get("model") if isinstance(data.get("model"), str) else None,
    }


def add_chat_completions(app, predictor, limits, model_lock, state: dict, model_name: str | None) -> None:
    from fastapi.responses import JSONResponse, StreamingResponse

    from .app import _error, busy, too_big

    task = predictor.task

    def pieces(req: dict):
        with model_lock:
            yield from task.stream(predictor.model, req["messages"], req["max_tokens"], req["temperature"])

    def finish_reason(text: str, req: dict) -> str:
        limit = req["max_tokens"] or task.generation_config.max_new_tokens
        return "length" if len(task.tokenizer(text, add_special_tokens=False)["input_ids"]) >= limit else "stop"

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        """OpenAI-compatible chat completions: {"messages": [{"role", "content"}, ...], "max_tokens"?,
        "temperature"?, "stream"?}."""
        body = await request.body()
        if len(body) > limits.max_body_bytes:
            return too_big(limits)
        try:
            req = parse_request(body, limits, predictor.modality)
        except RequestError as e:
            return _error(e.status, e.field, e.message)
        if (refused := busy(limits, state)) is not None:
            return refused
        ident, created, name = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), req["model"] or model_name
        head = {"id": ident, "created": created, "model": name}
        if req["stream"]:

            def events():
                state["waiting"] += 1
                text = ""
                try:
                    chunk = {**head, "object": "chat.completion.chunk"}
                    start = {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                    yield f"data: {json.dumps({**chunk, 'choices': [start]})}\n\n"
                    for piece in pieces(req):
                        if piece:
                            text += piece
                            delta = {"index": 0, "delta": {"content": piece}, "finish_reason": None}
                            yield f"data: {json.dumps({**chunk, 'choices': [delta]})}\n\n"
                    end = {"index": 0, "delta": {}, "finish_reason": finish_reason(text, req)}
                    yield f"data: {json.dumps({**chunk, 'choices': [end]})}\n\n"
                    yield "data: [DONE]\n\n"
                finally:
                    state["waiting"] -= 1

            return StreamingResponse(events(), media_type="text/event-stream")
        state["waiting"] += 1
        try:
            from starlette.concurrency import run_in_threadpool

            text = await run_in_threadpool(lambda: "".join(pieces(req)))
        except DataError as e:
            return _error(422, "messages", str(e))
        finally:
            state["waiting"] -= 1
        prompt = len(task._prompt_ids(req["messages"], "the conversation"))
        reply = len(task.tokenizer(text, add_special_tokens=False)["input_ids"])
        return JSONResponse(
            {
                **head,
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text.strip()},
                        "finish_reason": finish_reason(text, req),
                    }
                ],
                "usage": {"prompt_tokens": prompt, "completion_tokens": reply, "total_tokens": prompt + reply},
            }
        )
