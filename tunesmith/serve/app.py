"""`tunesmith serve RUN`: a finished run behind HTTP (FastAPI + uvicorn), bound to 127.0.0.1 unless told.

    GET  /             a page to try the model (served by the app itself: no CDN, works offline)
    POST /v1/predict   {"inputs": [...], "pairs": [...]?} -> {"predictions": [what `predict --json` prints]}
    POST /v1/chat/completions   runs that answer conversations: OpenAI-compatible, streamed over SSE or whole
    GET  /v1/info      task, labels, base model, what an input is, the limits, the run's scores, the card
    GET  /healthz      the process answers;  GET /readyz  the model is loaded
    GET  /metrics      Prometheus: requests by endpoint and status, latency, inputs per model call
    GET  /docs         OpenAPI (FastAPI)

What one input is comes from the run's modality (`Modality.from_request`): text, a base64-encoded file,
or chat messages; never a path (a request reads no file on the server). /v1/predict also takes
multipart/form-data, one part named "inputs" per input (`curl -F inputs=@cat.png -F inputs=@dog.png`):
a file part is the file itself, a text field what the JSON string would be; both forms meet the same
checks (`_checked`, then the modality's `from_request`). Every request is bounded
(inputs per request, text length, file and body bytes, requests waiting for the model, seconds per
request) and every bad one is a 4xx JSON error naming the field: {"error": {"field", "message"}}.
The model is loaded once, at start-up, and called by one model call at a time; concurrent
/v1/predict requests are gathered into one call (MicroBatcher: up to `max_batch` inputs, waiting
`batch_wait_ms` for others to join).
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fastapi import Request  # module level: the endpoints' annotations are resolved by name

from ..errors import DataError, RequestError, TunesmithError


@dataclass(frozen=True)
class Limits:
    max_inputs: int = 64  # inputs per request
    max_text_chars: int = 10_000  # characters per text (or chat message)
    max_file_bytes: int = 10 * 2**20  # bytes per decoded file
    max_body_bytes: int = 32 * 2**20  # bytes per request body
    max_waiting: int = 32  # requests waiting for the model; more: 429
    timeout_seconds: float = 60.0  # a request still waiting or running after this: 503
    max_batch: int = 32  # inputs one model call may gather from concurrent requests (1: no micro-batching)
    batch_wait_ms: float = 5.0  # how long the first request of a call waits for others to join it


class MicroBatcher:
    """Dynamic micro-batching: requests that arrive together share one model call. A worker thread takes
    the first waiting request, gathers the ones arriving within `wait_ms` up to `max_batch` inputs
    (requests with text pairs and without never mix), calls `predict` once and hands each request its
    own answers, in order. Where a gathered call fails (one request's undecodable file), each request
    is answered alone, so a bad request never fails the others."""

    def __init__(self, predict, lock: threading.Lock, max_batch: int, wait_ms: float, on_call=None):
        import queue

        self.predict, self.lock, self.max_batch, self.wait = predict, lock, max_batch, wait_ms / 1000
        self.on_call = on_call
        self.queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._loop, daemon=True, name="tunesmith-batcher").start()

    def submit(self, inputs: list, pairs: list | None):
        from concurrent.futures import Future

        future: Future = Future()
        self.queue.put((inputs, pairs, future))
        return future

    def _gather(self) -> list:
        import queue

        first = self.queue.get()
        items, n = [first], len(first[0])
        deadline = time.monotonic() + self.wait
        while n < self.max_batch:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                item = self.queue.get(timeout=left)
            except queue.Empty:
                break
            if (item[1] is None) != (first[1] is None) or n + len(item[0]) > self.max_batch:
                self.queue.put(item)  # the next call takes it
                break
            items.append(item)
            n += len(item[0])
        return items

    def _call(self, inputs: list, pairs: list | None) -> list:
        with self.lock:
            if self.on_call is not None:
                self.on_call(len(inputs))
            return self.predict(inputs, pairs)

    def _loop(self) -> None:
        while True:
            items = self._gather()
            inputs = [x for it in items for x in it[0]]
            pairs = None if items[0][1] is None else [x for it in items for x in it[1]]
            try:
                results = self._call(inputs, pairs)
            except Exception:
                results = None
            if results is not None:
                at = 0
                for it_inputs, _, future in items:
                    future.set_result(results[at : at + len(it_inputs)])
                    at += len(it_inputs)
                continue
            for it_inputs, it_pairs, future in items:  # answered alone: the error is that request's own
                try:
                    future.set_result(self._call(it_inputs, it_pairs))
                except Exception as e:
                    future.set_exception(e)


def _error(status: int, field: str, message: str):
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": {"field": field, "message": message}}, status_code=status)


def too_big(limits: Limits):
    """413 for a body over limits.max_body_bytes (by its Content-Length, or as read where none was sent)."""
    return _error(413, "body", f"larger than the server allows ({limits.max_body_bytes} bytes)")


def busy(limits: Limits, state: dict):
    """429 where limits.max_waiting requests already wait for the model; else None."""
    if state["waiting"] < limits.max_waiting:
        return None
    return _error(429, "server", f"{state['waiting']} requests already wait for the model; try again shortly")


def _summary(folder: Path) -> dict[str, Any]:
    """The run's headline scores (metrics.json: validation and test, numbers only)."""
    try:
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {
        split: {k: v for k, v in metrics[split].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for split in ("validation", "test")
        if isinstance(metrics.get(split), dict)
    }


def create_app(predictor, limits: Limits | None = None):
    """The FastAPI app serving `predictor` (a loaded run: serve/predictor.py)."""
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse, PlainTextResponse
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

    limits = limits or Limits()
    task, modality = predictor.task, predictor.modality
    registry = CollectorRegistry()
    requests = Counter("tunesmith_requests", "HTTP requests", ["endpoint", "status"], registry=registry)
    latency = Histogram("tunesmith_request_seconds", "Request latency", ["endpoint"], registry=registry)
    batch = Histogram(
        "tunesmith_batch_inputs", "Inputs per model call", buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=registry
    )
    model_lock = threading.Lock()
    state = {"waiting": 0}
    card = predictor.folder / "README.md"
    info = {
        "task": task.name,
        "output": task.output,
        "labels": list(task.labels),
        "base_model": predictor.meta.get("catalogue_name") or predictor.meta.get("base_model"),
        "input": modality.request_kind,
        "example_input": modality.example_input,
        "media_types": media_types(modality),
        "limits": asdict(limits),
        "scores": _summary(predictor.folder),
        "card": card.read_text(encoding="utf-8") if card.is_file() else None,
    }

    app = FastAPI(
        title=f"tunesmith: {predictor.folder.name}",
        description=f"A fine-tuned {task.name} model ({info['base_model']}).",
    )

    app.add_middleware(Bounded, limits=limits, requests=requests, latency=latency)

    batcher = MicroBatcher(predictor.predict, model_lock, limits.max_batch, limits.batch_wait_ms, batch.observe)

    @app.post("/v1/predict")
    async def predict(request: Request):
        """{"inputs": [input, ...], "pairs": [text, ...]?} -> {"predictions": [...]}, in input order. An input
        is what GET /v1/info's "input" says: text, a base64-encoded file, or chat messages. Or
        multipart/form-data with one part named "inputs" per input: a file (of a type in GET /v1/info's
        "media_types"; else 415 naming `inputs[i]`) or a text field, as its JSON string would be."""
        body = await request.body()
        if len(body) > limits.max_body_bytes:
            return too_big(limits)
        try:
            inputs, pairs = await _parse(request, limits, modality)
        except RequestError as e:
            return _error(e.status, e.field, e.message)
        if (refused := busy(limits, state)) is not None:
            return refused
        state["waiting"] += 1
        try:
            future = asyncio.wrap_future(batcher.submit(inputs, pairs))
            results = await asyncio.wait_for(asyncio.shield(future), limits.timeout_seconds)
        except asyncio.TimeoutError:
            return _error(503, "server", f"no answer within {limits.timeout_seconds:g} s; send fewer inputs")
        except (DataError, TunesmithError) as e:
            return _error(422, "inputs", str(e))
        finally:
            state["waiting"] -= 1
        return {"predictions": results}

    if task.interactive:  # a run that answers conversations: OpenAI's chat completions, streamed or whole
        from .chat_completions import add_chat_completions

        add_chat_completions(app, predictor, limits, model_lock, state, info["base_model"])

    @app.get("/v1/info")
    async def get_info():
        return info

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        return {"ready": True, "task": task.name}  # the model loads before the app exists

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(generate_latest(registry).decode(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse)
    async def page():
        from .page import render

        return render(info)

    return app


class Bounded:
    """Pure ASGI middleware (no per-request task, as starlette's BaseHTTPMiddleware adds): refuses a body
    whose Content-Length is over the limit before it is read, and counts every request by endpoint and
    status, with its latency."""

    def __init__(self, app, limits: Limits, requests, latency):
        self.app, self.limits, self.requests, self.latency = app, limits, requests, latency

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0, status = time.perf_counter(), [500]
        size = dict(scope["headers"]).get(b"content-length")
        if size is not None and (not size.isdigit() or int(size) > self.limits.max_body_bytes):
            status[0] = 413
            await too_big(self.limits)(scope, receive, send)
        else:

            async def sending(message):
                if message["type"] == "http.response.start":
                    status[0] = message["status"]
                await send(message)

            await self.app(scope, receive, sending)
        endpoint = scope["path"] if scope["path"] in KNOWN else "other"
        self.requests.labels(endpoint, str(status[0])).inc()
        self.latency.labels(endpoint).observe(time.perf_counter() - t0)


KNOWN = {"/v1/predict", "/v1/chat/completions", "/v1/info", "/healthz", "/readyz", "/metrics", "/"}


# What /v1/predict reads as JSON. Besides application/json: no Content-Type at all, and what `curl -d` sends
# (form-urlencoded) and fetch() sends for a string body (text/plain), as the server always has.
JSON_TYPES = {"", "application/json", "application/x-www-form-urlencoded", "text/plain"}
# What a client sends when it cannot tell a file's type (curl -F for .wav, .webp, .dcm; browsers for an unknown
# extension): accepted for every file run; the modality's decoder then judges the bytes (undecodable: 422).
UNKNOWN_TYPE = "application/octet-stream"


def media_types(modality) -> list[str]:
    """The content types a file part may have: the modality's own (`Modality.media_types`), and UNKNOWN_TYPE.
    Empty for runs whose inputs are not files."""
    return [*modality.media_types, UNKNOWN_TYPE] if modality.media_types else []


def _accepted(kind: str, accepted: list[str]) -> bool:
    return kind == UNKNOWN_TYPE or kind in accepted or f"{kind.split('/')[0]}/*" in accepted


async def _parse(request: Request, limits: Limits, modality) -> tuple[list, list | None]:
    """The request's inputs (and text pairs), checked, by its Content-Type: JSON or multipart/form-data;
    anything else is a 415."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        data = await _form(request, limits, modality)
    elif kind in JSON_TYPES or kind.endswith("+json"):
        data = _json(await request.body())
    else:
        raise RequestError("content-type", f"{kind}: send application/json or multipart/form-data", 415)
    return _checked(data, limits, modality)


def _json(body: bytes) -> dict:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise RequestError("body", 'not JSON; send {"inputs": [...]}') from None
    if not isinstance(data, dict):
        raise RequestError("body", 'expected a JSON object {"inputs": [...]}')
    return data


async def _form(request: Request, limits: Limits, modality) -> dict[str, list]:
    """multipart/form-data -> the JSON object it stands for: each part appended to the list named by its field
    name. A text field is taken as it is; a file part (of an accepted type, on a run whose inputs are files)
    becomes a base64 data: URL, so the modality's `from_request` checks it exactly as a JSON input (size,
    emptiness). At most one byte over limits.max_file_bytes is ever read: enough for it to refuse the file."""
    from starlette.exceptions import HTTPException

    accepted = media_types(modality)
    try:  # the body is bounded already; the parts are counted as they are parsed
        form = await request.form(
            max_files=limits.max_inputs, max_fields=2 * limits.max_inputs, max_part_size=limits.max_body_bytes
        )
    except HTTPException as e:  # starlette's parser refuses a malformed body, or too many parts, with a 400
        if "too many" in str(e.detail).lower():
            raise RequestError(
                "inputs", f"more parts than the server allows ({limits.max_inputs} inputs)", 413
            ) from None
        raise RequestError("body", f"not valid multipart/form-data: {e.detail}") from None
    data: dict[str, list] = {}
    try:
        for name, value in form.multi_items():
            values = data.setdefault(name, [])
            if isinstance(value, str):
                values.append(value)
                continue
            field = f"{name}[{len(values)}]"
            if not accepted or name != "inputs":
                what = f"this run takes {modality.request_kind} inputs" if name == "inputs" else "only inputs are files"
                raise RequestError(field, f"a file part, but {what}: send it as a text field or as JSON", 415)
            kind = (value.content_type or UNKNOWN_TYPE).split(";")[0].strip().lower()
            if not _accepted(kind, accepted):
                raise RequestError(field, f"a file of type '{kind}'; this run takes {' or '.join(accepted)}", 415)
            content = await value.read(limits.max_file_bytes + 1)
            values.append("data:;base64," + base64.b64encode(content).decode())
    finally:
        await form.close()
    return data


def _checked(data: dict, limits: Limits, modality) -> tuple[list, list | None]:
    """A request's fields (from JSON or multipart) -> (inputs, pairs), each checked; the modality checks
    each input (`from_request`). A bad one raises RequestError naming it."""
    unknown = sorted(set(data) - {"inputs", "pairs"})
    if unknown:
        raise RequestError(unknown[0], 'unknown field; a request has "inputs" (and "pairs" for text-pair models)')
    inputs = data.get("inputs")
    if inputs is None:
        raise RequestError("inputs", "missing; send a list of inputs")
    if not isinstance(inputs, list):
        inputs = [inputs]
    if not inputs:
        raise RequestError("inputs", "empty; send at least one input")
    if len(inputs) > limits.max_inputs:
        raise RequestError("inputs", f"{len(inputs)} inputs, more than the server allows ({limits.max_inputs})", 413)
    pairs = data.get("pairs")
    if pairs is not None:
        if not isinstance(pairs, list) or len(pairs) != len(inputs):
            raise RequestError("pairs", "expected a list of texts, one per input")
        from ..modalities import request_texts

        try:
            pairs = request_texts(pairs, limits)
        except RequestError as e:
            raise RequestError(e.field.replace("inputs", "pairs"), e.message, e.status) from None
    return modality.from_request(inputs, limits), pairs


def serve(
    folder: str | Path, host: str = "127.0.0.1", port: int = 8000, limits: Limits | None = None, precision: str = "fp32"
) -> None:
    import uvicorn

    from .predictor import load

    predictor = load(folder, precision=precision)
    uvicorn.run(create_app(predictor, limits), host=host, port=port, log_level="info")
