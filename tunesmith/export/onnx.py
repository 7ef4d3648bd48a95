"""`tunesmith export RUN --onnx --out DIR [--quantize int8]`: the run as ONNX graphs for onnxruntime.

The task says which graphs compute its model (`Task.onnx_graphs`: one for a classifier, encoder and
decoder for Whisper); each is exported with `torch.onnx.export` (the dynamo exporter) with every axis
dynamic that the model lets be (batch, sequence, frames). The export is checked, never assumed: the
run's own validation rows go through the PyTorch model and through onnxruntime, with the run's own
preprocessing and decoding (`Task.onnx_parity`), and an fp32 export whose logits differ by more than
1e-4 or whose predictions differ anywhere is refused with nothing written. `--quantize int8` then
applies onnxruntime's dynamic quantisation to MatMul/Gemm weights (its Conv int8 kernels are missing on
CPU) and reports the metrics' change on the same rows. The folder holds the graphs, the run's
preprocessing files, label map and scores, tunesmith.json (layout "onnx": `tunesmith.load`, predict,
evaluate and serve run it), parity.json and a README.
"""

from __future__ import annotations

import contextlib
import logging
import random
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from ..errors import ExportError
from ..formats import META_FILE, atomic_write_json, read_meta
from ..serve.predictor import load
from . import check_out, publish

PARITY_TOLERANCE = 1e-4
MAX_ROWS = 2000  # validation rows compared (the first ones); more only costs time
CALIBRATION_ROWS = 128  # training rows whose activation ranges calibrate int8 convolutions
CALIBRATION_BATCHES = 64  # feeds kept per graph while they run
INT8_CONV_TOLERANCE = 0.01  # how much worse (task metric) int8 convolutions may score and still be kept
INT8_CONV_SPEEDUP = 0.95  # ... and the share of the time without them they must run in (timing noise is not a gain)
QUANTIZE = ("int8",)
_COMPARED = ("agreement", "max_abs_logit_diff", "onnx", "metric_change", "seconds")  # int8 with / without convolutions
# run files that describe the model, not its weights: the export keeps them (preprocessing, labels, scores)
_NOT_COPIED = {META_FILE, "README.md"}
# what tunesmith.json of an export does not carry over from the run's (weights and their layout)
_NOT_KEPT = ("lora", "lora_options", "base_model_fingerprint", "layout", "format_note", "lora_merged", "task_state")


@contextlib.contextmanager
def _quiet_exporter():
    """The dynamo exporter logs a line per op set it skips (torchvision's, which tunesmith never uses) and
    warns about its own internals, the quantiser asks for the pre-processing we run; none of that is the
    user's business. Errors still raise."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "")]  # "": onnxruntime's quantiser logs at root
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


@contextlib.contextmanager
def _eager_attention(module: torch.nn.Module):
    """Trace transformers models with their plain ("eager") attention, put back afterwards. The exporter
    decomposes scaled_dot_product_attention with guards for fully masked rows (IsNaN, Where) and extra
    transposes that onnxruntime then runs on every call: on MiniLM the eager graph runs ~20% more
    inputs/s (bench/results/inference.md). The parity check still compares against the model as it runs
    in PyTorch."""
    models = [
        m
        for m in module.modules()
        if hasattr(m, "set_attn_implementation") and getattr(getattr(m, "config", None), "_attn_implementation", None)
    ]
    models = [m for m in models if not any(m is not o and m in set(o.modules()) for o in models)]  # outermost only
    before = [m.config._attn_implementation for m in models]
    try:
        for m in models:
            if m.config._attn_implementation != "eager":
                m.set_attn_implementation("eager")
        yield
    finally:
        for m, impl in zip(models, before):
            if m.config._attn_implementation != impl:
                m.set_attn_implementation(impl)


def export_graph(graph, path: Path) -> None:
    """One OnnxGraph -> path, every axis dynamic where the model allows (torch.export's Dim.AUTO) except
    those the graph declares static; transformers models traced with eager attention (_eager_attention)."""
    auto = torch.export.Dim.AUTO
    shapes = {
        "tensors": tuple(
            {i: auto for i in range(t.dim()) if i not in graph.static_axes.get(name, ())}
            for name, t in graph.inputs.items()
        )
    }
    big = sum(p.numel() * p.element_size() for p in graph.module.parameters()) > 1.5 * 2**30  # protobuf's 2 GB
    with _quiet_exporter(), torch.no_grad(), _eager_attention(graph.module):
        torch.onnx.export(
            graph.module.eval(),
            tuple(graph.inputs.values()),
            str(path),
            input_names=list(graph.inputs),
            output_names=list(graph.outputs),
            dynamo=True,
            dynamic_shapes=shapes,
            external_data=big,
            verbose=False,
        )


def _op_types(path: Path) -> set[str]:
    import onnx

    return {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}


def quantize_int8(src: Path, dst: Path, calibration: list[dict] | None = None) -> None:
    """int8 weights, after onnxruntime's own pre-processing (shape inference, graph optimisation), as its docs
    ask. MatMul/Gemm: dynamic quantisation (int8 weights per output channel, activations quantised per call).
    Conv: onnxruntime has no dynamic int8 convolution on CPU (ConvInteger), so a graph with convolutions gets
    static quantisation of them (QDQ: activation ranges calibrated by running `calibration`, the graph's feeds,
    through it; onnxruntime runs them as QLinearConv), then the dynamic pass for its MatMul/Gemm."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = src.with_name(f"{src.stem}.prepared.onnx")
    convs = src.with_name(f"{src.stem}.conv-int8.onnx")
    with _quiet_exporter():
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)  # onnx's own shape inference still runs
        ops = _op_types(prepared)
        if "Conv" in ops and calibration:
            feeds = iter(calibration)

            class Feeds(CalibrationDataReader):
                def get_next(self):
                    return next(feeds, None)

            quantize_static(
                str(prepared),
                str(convs),
                Feeds(),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["Conv"],
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
            )
            prepared.unlink()
            convs.rename(prepared)
        if ops & {"MatMul", "Gemm"}:
            quantize_dynamic(
                str(prepared),
                str(dst),
                op_types_to_quantize=["MatMul", "Gemm"],
                weight_type=QuantType.QInt8,
                per_channel=True,
            )
        else:
            shutil.copy2(prepared, dst)
    prepared.unlink()


class _Recording:
    """An onnxruntime session that keeps a copy of every feed it runs (calibration data for static quantisation)."""

    def __init__(self, sess, limit: int):
        self.sess, self.limit, self.feeds = sess, limit, []

    def run(self, output_names, feeds, *args, **kwargs):
        if len(self.feeds) < self.limit:
            self.feeds.append({k: v.copy() for k, v in feeds.items()})
        return self.sess.run(output_names, feeds, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.sess, name)


def _calibration_feeds(
    task, folder: Path, files: dict[str, str], wanted: set[str], rows: list[dict], batch_size: int
) -> dict:
    """Each graph in `wanted` -> the feeds it gets when the task evaluates `rows` on the fp32 export."""
    from ..models.onnx_runtime import session

    if not rows:
        return {}
    sessions = {name: session(folder / f) for name, f in files.items()}
    recording = {name: _Recording(sessions[name], CALIBRATION_BATCHES) for name in wanted}
    task.evaluate(task.onnx_model({**sessions, **recording}), rows, batch_size, contextlib.nullcontext)
    return {name: r.feeds for name, r in recording.items()}


def _calibration_rows(run: Path, task, fallback: list[dict], fallback_source: str) -> tuple[list[dict], str]:
    """Up to CALIBRATION_ROWS of the run's training rows (a fixed random draw): static quantisation's activation
    ranges come from data the export's parity rows are not; the parity rows only where training data is gone."""
    from ..api import run_examples

    try:
        examples = run_examples(run, "train")
    except Exception as e:
        return fallback[:CALIBRATION_ROWS], f"{fallback_source} (the run's training data could not be read: {e})"
    n = len(examples)
    if n > CALIBRATION_ROWS:
        examples = examples.subset(sorted(random.Random(0).sample(range(n), CALIBRATION_ROWS)))
    return task.encode(examples), f"{min(n, CALIBRATION_ROWS)} of the run's {n} training rows"


def _compared_rows(run: Path, predictor) -> tuple[list[dict], str]:
    """The run's validation rows (up to MAX_ROWS); made-up inputs only where its data is gone, said so."""
    from ..api import validation_examples
    from .merge import probe_inputs

    task = predictor.task
    try:
        examples = validation_examples(run)
    except Exception as e:  # the training data may have moved since the run: parity still needs inputs
        probes = probe_inputs(run, predictor)
        note = f"{len(probes)} probe inputs (the run's validation data could not be read again: {e})"
        return task.encode(predictor.modality.examples_from_inputs(probes)), note
    n = len(examples)
    if n > MAX_ROWS:
        examples = examples.subset(range(MAX_ROWS))
    return task.encode(examples), f"the run's validation rows ({min(n, MAX_ROWS)} of {n}: {examples.source})"


def _scores(metrics: dict[str, Any]) -> dict[str, float]:
    """The metrics that are one number (per-class tables and confusion matrices stay in metrics.json)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _metric_change(parity: dict[str, Any]) -> dict[str, float]:
    before, after = parity.get("pytorch") or {}, parity.get("onnx") or {}
    return {
        k: float(after[k]) - float(v)
        for k, v in before.items()
        if isinstance(v, (int, float))
        and not isinstance(v, bool)
        and isinstance(after.get(k), (int, float))
        and k != "n"
    }


def export_onnx(
    run: str | Path, out: str | Path, quantize: str | None = None, overwrite: bool = False, say=print
) -> dict[str, Any]:
    run, out = Path(run), Path(out)
    meta = read_meta(run)
    if meta.get("layout") == "onnx":
        raise ExportError(f"{run} is an ONNX export already; export the run folder it came from")
    if quantize is not None and quantize not in QUANTIZE:
        raise ExportError(f"--quantize {quantize!r}: choose one of {list(QUANTIZE)}")
    check_out(out, overwrite)
    predictor = load(run)  # LoRA adapters folded into the weights: the graphs compute the plain model
    task, model = predictor.task, predictor.model
    rows, source = _compared_rows(run, predictor)
    if not rows:
        raise ExportError(f"{run}: no inputs to check the export on")
    trace_rows = rows[:4] if len(rows) > 1 else rows * 2  # at least two: a batch of one fixes the batch axis
    graphs = task.onnx_graphs(model, trace_rows)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        files = {}
        for g in graphs:
            say(f"exporting {g.name} ({sum(p.numel() for p in g.module.parameters()) / 1e6:.1f}M parameters) ...")
            files[g.name] = f"{g.name}.onnx"
            export_graph(g, tmp / files[g.name])
        parity = {"fp32": _parity(task, model, tmp, files, rows, predictor.batch_size)}
        fp32 = parity["fp32"]
        say(_parity_line("fp32", fp32, len(rows)))
        if fp32["max_abs_logit_diff"] > PARITY_TOLERANCE or fp32["agreement"] < 1.0:
            raise ExportError(
                f"the ONNX graphs disagree with the PyTorch model on {source}: max |logit diff| "
                f"{fp32['max_abs_logit_diff']:.2e} (bar {PARITY_TOLERANCE:g}), predictions agree on "
                f"{fp32['agreement']:.2%} (bar 100%); nothing was written"
            )
        if quantize == "int8":
            files, parity["int8"] = _quantize(run, task, model, tmp, files, rows, source, predictor.batch_size, say)
            say(_parity_line("int8", parity["int8"], len(rows)))
        parity.update(rows=len(rows), source=source, tolerance=PARITY_TOLERANCE)
        for f in run.iterdir():
            if f.is_file() and f.name not in _NOT_COPIED and f.suffix != ".safetensors" and not f.name.startswith("."):
                shutil.copy2(f, tmp / f.name)
        export_meta = {k: v for k, v in meta.items() if k not in _NOT_KEPT}
        export_meta.update(
            layout="onnx",
            task_state=task.state(),
            exported_from=str(run.resolve()),
            onnx={"graphs": files, "precision": quantize or "fp32", "torch": torch.__version__},
        )
        atomic_write_json(tmp / "parity.json", parity)
        atomic_write_json(tmp / META_FILE, export_meta)
        (tmp / "README.md").write_text(_readme(run, out, task, files, parity, quantize), encoding="utf-8")
        publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"out": out, "graphs": files, "parity": parity}


def _parity(
    task, model, folder: Path, files: dict[str, str], rows: list[dict], batch_size: int, timed: bool = False
) -> dict[str, Any]:
    from ..models.onnx_runtime import session

    onnx_model = task.onnx_model({name: session(folder / f) for name, f in files.items()})
    p = task.onnx_parity(model, onnx_model, rows, batch_size)
    out = {**p, "pytorch": _scores(p.get("pytorch") or {}), "onnx": _scores(p.get("onnx") or {})}
    if timed:  # the graphs alone on the same rows, warm (parity ran them once)
        t0 = time.perf_counter()
        task.evaluate(onnx_model, rows, batch_size, contextlib.nullcontext)
        out["seconds"] = time.perf_counter() - t0
    return out


def _quantize(
    run: Path, task, model, tmp: Path, files: dict[str, str], rows: list[dict], source: str, batch_size: int, say
) -> tuple[dict[str, str], dict[str, Any]]:
    """int8 graphs in `tmp` (the fp32 ones removed) and their parity. MatMul/Gemm are quantised dynamically. A
    graph with convolutions is also tried with calibrated int8 convolutions (quantize_int8), which are kept only
    where they measure no worse on the task's metric (within INT8_CONV_TOLERANCE) and faster on the same rows:
    a ResNet-18's parity rows ran in 0.72 s instead of 1.28 s, while EfficientNet-lite0 lost 31 points of macro-F1
    and ran slower (depthwise convolutions)."""
    dynamic = {name: f"{name}.int8.onnx" for name in files}
    for name, f in files.items():
        quantize_int8(tmp / f, tmp / dynamic[name])
    result = _parity(task, model, tmp, dynamic, rows, batch_size, timed=True)
    result["metric_change"] = _metric_change(result)
    with_convs = {name for name, f in files.items() if "Conv" in _op_types(tmp / f)}
    if with_convs:
        calib_rows, calib_source = _calibration_rows(run, task, rows, source)
        say(f"trying int8 convolutions, calibrated on {calib_source} ...")
        calibration = _calibration_feeds(task, tmp, files, with_convs, calib_rows, batch_size)
        # graphs without convolutions (a Whisper decoder) are the same either way: their dynamic int8 file serves
        convs = {name: f"{name}.int8-conv.onnx" if name in with_convs else dynamic[name] for name in files}
        for name in with_convs:
            quantize_int8(tmp / files[name], tmp / convs[name], calibration.get(name))
        tried = _parity(task, model, tmp, convs, rows, batch_size, timed=True)
        tried["metric_change"] = _metric_change(tried)
        keep, why = _conv_verdict(task, result, tried)
        result["int8_convolutions"] = {
            "calibration": calib_source,
            "kept": keep,
            "why": why,
            "with": {k: tried[k] for k in _COMPARED},
            "without": {k: result[k] for k in _COMPARED},
        }
        say(f"int8 convolutions {'kept' if keep else 'not kept'}: {why}")
        if keep:
            result = {**tried, "int8_convolutions": result["int8_convolutions"]}
        for name in with_convs:
            if keep:
                (tmp / convs[name]).replace(tmp / dynamic[name])
            else:
                (tmp / convs[name]).unlink()
    for f in files.values():
        (tmp / f).unlink()
        for extra in tmp.glob(f"{f}.data"):
            extra.unlink()
    return dynamic, result


def _conv_verdict(task, without: dict[str, Any], with_: dict[str, Any]) -> tuple[bool, str]:
    metric = task.default_metric
    a, b = (without.get("onnx") or {}).get(metric), (with_.get("onnx") or {}).get(metric)
    speed = f"{without['seconds']:.3f} s -> {with_['seconds']:.3f} s on the parity rows"
    if a is None or b is None:
        return False, f"the rows carry no {metric} to judge them by ({speed})"
    worse = b - a if metric in task.lower_is_better else a - b
    change = f"{metric} {a:.4f} -> {b:.4f}"
    if worse > INT8_CONV_TOLERANCE:
        return False, f"{change}: worse by more than {INT8_CONV_TOLERANCE:g} ({speed})"
    if with_["seconds"] > INT8_CONV_SPEEDUP * without["seconds"]:
        return False, f"not {1 / INT8_CONV_SPEEDUP:.2f}x faster: {speed} ({change})"
    return True, f"{change}, {speed}"


def _parity_line(precision: str, p: dict[str, Any], n: int) -> str:
    line = (
        f"parity ({precision}, {n} rows): max |logit diff| {p['max_abs_logit_diff']:.2e}, "
        f"predictions agree {p['agreement']:.2%}"
    )
    change = p.get("metric_change")
    if change:
        line += "; change vs PyTorch: " + ", ".join(f"{k} {v:+.4f}" for k, v in change.items())
    return line


def _readme(run: Path, out: Path, task, files: dict[str, str], parity: dict[str, Any], quantize: str | None) -> str:
    card = (run / "README.md").read_text(encoding="utf-8") if (run / "README.md").is_file() else ""
    rows = [
        f"| {precision} | {p['max_abs_logit_diff']:.2e} | {p['agreement']:.2%} |"
        for precision, p in parity.items()
        if isinstance(p, dict) and "agreement" in p
    ]
    lines = [
        f"# ONNX export of `{run.name}`",
        "",
        f"Exported by `tunesmith export {run} --onnx{' --quantize ' + quantize if quantize else ''}`: "
        f"{', '.join(files.values())} for onnxruntime, with the run's preprocessing files beside them.",
        "",
        "```bash",
        f"tunesmith predict {out} INPUT --json    # runs on onnxruntime",
        f"tunesmith serve {out}",
        "```",
        "",
        f"Checked against the PyTorch model on {parity['source']}:",
        "",
        "| precision | max abs logit difference | predictions agreeing |",
        "|---|---:|---:|",
        *rows,
        "",
    ]
    if "int8" in parity:
        change = parity["int8"]["metric_change"]
        lines += ["int8 vs PyTorch on the same rows: " + ", ".join(f"{k} {v:+.4f}" for k, v in change.items()), ""]
        convs = parity["int8"].get("int8_convolutions")
        if convs:
            kept = "kept" if convs["kept"] else "not kept (convolutions stay fp32)"
            lines += [f"int8 convolutions (calibrated on {convs['calibration']}): {kept}: {convs['why']}.", ""]
    lines += ["parity.json holds the full figures. The run's own model card follows.", "", "---", "", card]
    return "\n".join(lines)


__all__ = ["export_onnx", "PARITY_TOLERANCE"]
