"""`tunesmith serve`: the HTTP API over a finished run (FastAPI's TestClient; no socket). Answers equal
`predict`'s, every bad request is a 4xx JSON error naming its field, the limits hold, and no request
reads a file on the server."""

import base64
import json
from pathlib import Path

import pytest
from conftest import base_config

import tunesmith
from tunesmith.serve.app import Limits, create_app


@pytest.fixture(scope="module")
def text_run(tiny_bert_mean, sentiment_csv, tmp_path_factory):
    out = tmp_path_factory.mktemp("serve") / "text"
    tunesmith.finetune(base_config(tiny_bert_mean, sentiment_csv, out, epochs=1), quiet=True)
    return out


@pytest.fixture(scope="module")
def image_run(tiny_resnet, image_folders, tmp_path_factory):
    out = tmp_path_factory.mktemp("serve") / "image"
    train, val = image_folders
    cfg = {
        "task": "image-classification",
        "out": str(out),
        "model": {"name": str(tiny_resnet)},
        "data": {"train": str(train), "validation": str(val)},
        "train": {"epochs": 1, "batch_size": 8, "precision": "fp32", "seed": 0},
    }
    tunesmith.finetune(cfg, quiet=True)
    return out


def _client(run, **limits):
    from fastapi.testclient import TestClient

    return TestClient(create_app(tunesmith.load(run), Limits(**limits)))


def test_text_predictions_equal_predict_and_the_service_describes_itself(text_run):
    client = _client(text_run)
    texts = ["loved it", "dull and slow"]
    r = client.post("/v1/predict", json={"inputs": texts})
    assert r.status_code == 200
    assert r.json()["predictions"] == json.loads(json.dumps(tunesmith.load(text_run).predict(texts)))
    assert client.post("/v1/predict", json={"inputs": "loved it"}).json()["predictions"][0]["input"] == "loved it"
    info = client.get("/v1/info").json()
    assert info["input"] == "string" and sorted(info["labels"]) == sorted(r.json()["predictions"][0]["scores"])
    assert info["scores"]["validation"] and "tunesmith" in info["card"]
    assert client.get("/healthz").json() == {"status": "ok"} and client.get("/readyz").json()["ready"]
    page = client.get("/")
    assert page.status_code == 200 and "<textarea" in page.text
    assert "cdn" not in page.text.lower() and 'src="http' not in page.text  # works offline: nothing fetched
    assert 'split("\\n\\n")' in page.text  # the script's escapes reach the browser as written (PAGE is raw)
    assert client.get("/docs").status_code == 200 and "/v1/predict" in client.get("/openapi.json").text
    metrics = client.get("/metrics").text
    assert 'tunesmith_requests_total{endpoint="/v1/predict",status="200"} 2.0' in metrics
    assert "tunesmith_batch_inputs_bucket" in metrics and "tunesmith_request_seconds_bucket" in metrics


@pytest.mark.parametrize(
    "body, status, field",
    [
        (b"not json", 422, "body"),
        (b"[1, 2]", 422, "body"),
        (b"{}", 422, "inputs"),
        (b'{"inputs": []}', 422, "inputs"),
        (b'{"inputs": ["ok"], "extra": 1}', 422, "extra"),
        (b'{"inputs": [""]}', 422, "inputs[0]"),
        (b'{"inputs": ["ok", 3]}', 422, "inputs[1]"),
        (b'{"inputs": ["ok"], "pairs": ["a", "b"]}', 422, "pairs"),
        (json.dumps({"inputs": ["x" * 101]}).encode(), 413, "inputs[0]"),
        (json.dumps({"inputs": ["a"] * 5}).encode(), 413, "inputs"),
    ],
)
def test_a_bad_request_is_a_4xx_naming_its_field(text_run, body, status, field):
    client = _client(text_run, max_inputs=4, max_text_chars=100)
    r = client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert r.json()["error"]["field"] == field and r.json()["error"]["message"]


def test_a_body_over_the_limit_is_refused_before_it_is_read(text_run):
    client = _client(text_run, max_body_bytes=1000)
    r = client.post("/v1/predict", content=json.dumps({"inputs": ["a" * 2000]}))
    assert r.status_code == 413 and r.json()["error"]["field"] == "body"


def test_images_come_as_base64_never_as_server_paths(image_run, image_folders):
    client = _client(image_run, max_file_bytes=200_000)
    train, _ = image_folders
    path = next(p for p in sorted(Path(train).rglob("*")) if p.is_file())
    encoded = base64.b64encode(path.read_bytes()).decode()
    r = client.post("/v1/predict", json={"inputs": [encoded, "data:image/png;base64," + encoded]})
    assert r.status_code == 200, r.text
    expected = tunesmith.load(image_run).predict([path.read_bytes()])[0]
    got = r.json()["predictions"]
    assert got[0]["label"] == expected["label"] and got[1]["scores"] == pytest.approx(expected["scores"])
    # a path is not base64 of an image: refused, the file is never opened
    r = client.post("/v1/predict", json={"inputs": [str(path)]})
    assert r.status_code == 422 and r.json()["error"]["field"] == "inputs[0]"
    r = client.post("/v1/predict", json={"inputs": [base64.b64encode(b"not an image").decode()]})
    assert r.status_code == 422 and r.json()["error"]["field"] == "inputs"
    r = client.post("/v1/predict", json={"inputs": [base64.b64encode(b"x" * 300_000).decode()]})
    assert r.status_code == 413
    page = client.get("/").text
    assert 'type="file"' in page and "preview" in page


def test_a_full_queue_answers_429(text_run):
    client = _client(text_run, max_waiting=0)
    r = client.post("/v1/predict", json={"inputs": ["loved it"]})
    assert r.status_code == 429 and r.json()["error"]["field"] == "server"


def test_the_cli_refuses_a_non_positive_limit(text_run, capsys):
    from tunesmith.cli import main

    assert main(["serve", str(text_run), "--max-inputs", "0"]) == 2
    assert "--max-inputs" in capsys.readouterr().err


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory):
    from tunesmith.testing import chat_rows, make_tiny_causal_lm, write_jsonl

    d = tmp_path_factory.mktemp("serve-chat")
    cfg = {
        "task": "chat",
        "out": str(d / "run"),
        "model": {"name": str(make_tiny_causal_lm(d / "lm")), "max_length": 96},
        "data": {
            "train": str(write_jsonl(d / "train.jsonl", chat_rows(16, seed=1))),
            "validation": str(write_jsonl(d / "val.jsonl", chat_rows(4, seed=2))),
        },
        "chat": {"max_new_tokens": 6, "eval_generations": 1},
        "train": {"epochs": 1, "batch_size": 8, "precision": "fp32", "seed": 0},
    }
    tunesmith.finetune(cfg, quiet=True)
    return d / "run"


def test_chat_runs_answer_openai_chat_completions_whole_and_streamed(chat_run):
    client = _client(chat_run)
    messages = [{"role": "user", "content": "What colour is the sky?"}]
    expected = tunesmith.load(chat_run).predict([messages])[0]["text"]
    r = client.post("/v1/chat/completions", json={"model": "any", "messages": messages, "temperature": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["choices"][0]["message"] == {
        "role": "assistant",
        "content": expected,
    }
    assert body["choices"][0]["finish_reason"] in {"stop", "length"} and body["usage"]["prompt_tokens"] > 0
    with client.stream("POST", "/v1/chat/completions", json={"messages": messages, "stream": True}) as s:
        assert s.status_code == 200 and s.headers["content-type"].startswith("text/event-stream")
        lines = [x[len("data: ") :] for x in s.iter_lines() if x.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(x) for x in lines[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks).strip() == expected
    assert chunks[-1]["choices"][0]["finish_reason"] in {"stop", "length"}
    # /v1/predict answers chat runs too, and the page is a chat window
    assert client.post("/v1/predict", json={"inputs": [messages]}).json()["predictions"][0]["text"] == expected
    assert client.get("/v1/info").json()["input"] == "messages"
    for body, field in [
        ({}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "assistant", "content": "Hi"}]}, "messages"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
        ({"messages": messages, "max_tokens": 0}, "max_tokens"),
        ({"messages": messages, "temperature": "hot"}, "temperature"),
        ({"messages": messages, "n": 2}, "n"),
        ({"messages": messages, "stream": "yes"}, "stream"),
        ({"messages": messages, "tools": []}, "tools"),
    ]:
        r = client.post("/v1/chat/completions", json=body)
        assert r.status_code == 422 and r.json()["error"]["field"] == field, (body, r.text)


def test_runs_that_do_not_chat_have_no_chat_completions(text_run):
    assert _client(text_run).post("/v1/chat/completions", json={"messages": []}).status_code == 404


def test_every_modality_says_what_a_request_input_is_and_the_page_has_a_form_for_it():
    from tunesmith.modalities import MODALITIES
    from tunesmith.serve.app import Limits
    from tunesmith.serve.page import FORMS

    for name, cls in MODALITIES.items():
        modality = cls()
        assert modality.request_kind in FORMS, name
        with pytest.raises(Exception) as e:  # a number is never an input, whatever the modality
            modality.from_request([3], Limits())
        assert type(e.value).__name__ == "RequestError" and e.value.field.startswith("inputs[0]"), name


def test_concurrent_requests_share_a_model_call_and_get_their_own_answers(text_run, image_run, image_folders):
    from concurrent.futures import ThreadPoolExecutor

    texts = [f"text number {i} was {'great' if i % 2 else 'awful'}" for i in range(12)]
    alone = tunesmith.load(text_run).predict(texts)
    client = _client(text_run, max_batch=32, batch_wait_ms=300)
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda t: client.post("/v1/predict", json={"inputs": [t]}).json(), texts))
    for got, want in zip(answers, alone):
        assert got["predictions"][0]["label"] == want["label"]
        assert got["predictions"][0]["scores"] == pytest.approx(want["scores"], abs=1e-5)
    metrics = client.get("/metrics").text
    calls = float(next(x for x in metrics.splitlines() if x.startswith("tunesmith_batch_inputs_count")).split()[-1])
    assert calls < len(texts)  # gathered: fewer model calls than requests
    # one request's bad file fails that request only
    train, _ = image_folders
    good = base64.b64encode(next(p for p in sorted(Path(train).rglob("*")) if p.is_file()).read_bytes()).decode()
    bad = base64.b64encode(b"not an image").decode()
    client = _client(image_run, batch_wait_ms=300)
    with ThreadPoolExecutor(2) as pool:
        ok, refused = pool.map(lambda x: client.post("/v1/predict", json={"inputs": [x]}), [good, bad])
    assert ok.status_code == 200 and refused.status_code == 422


def _image_files(image_folders, n: int = 2) -> list[Path]:
    train, _ = image_folders
    return [p for p in sorted(Path(train).rglob("*.png"))][:n]


def test_multipart_uploads_answer_as_the_base64_json_form(image_run, image_folders):
    client = _client(image_run, max_file_bytes=200_000)
    paths = _image_files(image_folders)
    encoded = [base64.b64encode(p.read_bytes()).decode() for p in paths]
    as_json = client.post("/v1/predict", json={"inputs": encoded})
    # curl -F inputs=@a.png -F inputs=@b.png: one part per input, in order (the second as curl sends a type it
    # cannot name: application/octet-stream)
    files = [("inputs", (paths[0].name, paths[0].read_bytes(), "image/png"))]
    files += [("inputs", (paths[1].name, paths[1].read_bytes(), "application/octet-stream"))]
    as_form = client.post("/v1/predict", files=files)
    assert as_json.status_code == 200 and as_form.status_code == 200, as_form.text
    assert as_form.json() == as_json.json()
    assert [p["label"] for p in as_form.json()["predictions"]] == [
        p["label"] for p in tunesmith.load(image_run).predict([p.read_bytes() for p in paths])
    ]
    # a text field holds what the JSON string would: base64 (or a data: URL)
    r = client.post("/v1/predict", files=[("inputs", (None, encoded[0]))])
    alone, first = r.json()["predictions"][0], as_json.json()["predictions"][0]
    assert alone["label"] == first["label"] and alone["scores"] == pytest.approx(first["scores"])  # a batch of one
    assert client.get("/v1/info").json()["media_types"] == ["image/*", "application/dicom", "application/octet-stream"]


@pytest.mark.parametrize(
    "parts, status, field",
    [
        ([("inputs", ("big.png", b"x" * 3000, "image/png"))], 413, "inputs[0]"),  # over max_file_bytes
        ([("inputs", ("a.png", b"IMG", "image/png")), ("inputs", ("b.txt", b"hi", "text/plain"))], 415, "inputs[1]"),
        ([("inputs", ("clip.wav", b"RIFF", "audio/wav"))], 415, "inputs[0]"),  # not an image run's kind
        ([("inputs", (f"{i}.png", b"IMG", "image/png")) for i in range(5)], 413, "inputs"),  # over max_inputs
        ([("inputs", ("empty.png", b"", "image/png"))], 422, "inputs[0]"),
        ([("image", ("a.png", b"IMG", "image/png"))], 415, "image[0]"),  # only "inputs" parts are files
        ([("pairs", (None, "a text"))], 422, "inputs"),  # no inputs at all
        ([("inputs", (None, "not base64!"))], 422, "inputs[0]"),
        ([("inputs", ("bad.png", b"not an image", "image/png"))], 422, "inputs"),  # undecodable: the model's 422
    ],
)
def test_a_bad_multipart_upload_is_a_4xx_naming_its_field(image_run, parts, status, field):
    client = _client(image_run, max_inputs=4, max_file_bytes=2000)
    r = client.post("/v1/predict", files=parts)
    assert r.status_code == status, r.text
    assert r.json()["error"]["field"] == field and r.json()["error"]["message"]


def test_multipart_for_text_runs_takes_text_fields_and_refuses_files(text_run):
    client = _client(text_run, max_inputs=4)
    texts = ["loved it", "dull and slow"]
    r = client.post("/v1/predict", files=[("inputs", (None, t)) for t in texts])
    assert r.status_code == 200 and r.json() == client.post("/v1/predict", json={"inputs": texts}).json()
    r = client.post("/v1/predict", files=[("inputs", (None, "loved it")), ("inputs", ("a.txt", b"hi", "text/plain"))])
    assert r.status_code == 415 and r.json()["error"]["field"] == "inputs[1]"
    assert client.get("/v1/info").json()["media_types"] == []
    # a body of a type the server does not read, or a multipart body it cannot parse: 4xx, never 5xx
    r = client.post("/v1/predict", content=b"\x89PNG", headers={"content-type": "image/png"})
    assert r.status_code == 415 and r.json()["error"]["field"] == "content-type"
    r = client.post("/v1/predict", content=b"--x\r\nnonsense", headers={"content-type": "multipart/form-data"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "body"
    r = client.post(
        "/v1/predict", content=b"--x\r\nnonsense", headers={"content-type": "multipart/form-data; boundary=x"}
    )
    assert r.status_code == 422 and r.json()["error"]["field"] == "inputs"  # no part parsed: no inputs
    # curl -d sends form-urlencoded: still read as JSON, as before
    r = client.post(
        "/v1/predict",
        content=json.dumps({"inputs": texts}),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200


def test_bf16_serving_runs_under_autocast_with_scores_close_to_fp32(text_run):
    texts = ["loved it", "dull and slow", "what a film", "never again"]
    exact, fast = tunesmith.load(text_run), tunesmith.load(text_run, precision="bf16")
    a, b = exact.predict(texts), fast.predict(texts)
    diffs = [abs(x["scores"][k] - y["scores"][k]) for x, y in zip(a, b) for k in x["scores"]]
    assert 0 < max(diffs) < 0.05  # bf16 matmuls ran (scores moved), and only by rounding
    with pytest.raises(ValueError, match="choose fp32, bf16 or auto"):
        tunesmith.load(text_run, precision="fp16")
