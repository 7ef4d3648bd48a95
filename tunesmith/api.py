"""finetune / evaluate / load: the one entry point that the CLI, examples and search all call."""
from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .config import RunConfig, config_from_dict, load_config
from .data.preflight import Preflight, check_train_validation
from .data.split import stratified_split
from .errors import ConfigError, DataError
from .models import resolve_model
from .models.catalogue import catalogue_name_for
from .models.run_format import save_model
from .modalities import inputs_for
from .progress import Reporter
from .run_folder import CHECKPOINTS, METRICS_FILE, prepare
from .serve.predictor import Predictor, load
from .strategies import STRATEGIES
from .strategies.base import count_params
from .strategies.feature_cache import cached_features
from .tasks import TASKS
from .tasks.base import TaskModel
from .training.loop import evaluate_rows, fit, make_accelerator
from .training.precision import resolve_precision


@dataclass
class RunResult:
    out: Path
    metrics: dict[str, Any]  # validation metrics of the kept (best) model
    test_metrics: dict[str, Any] | None
    history: list[dict[str, Any]]
    params: dict[str, int]
    timings: dict[str, float]
    files: dict[str, Path] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _coerce(config: RunConfig | dict | str | Path) -> RunConfig:
    if isinstance(config, RunConfig):
        return config
    if isinstance(config, dict):
        return config_from_dict(config)
    return load_config(config)


def load_splits(cfg: RunConfig, pre: Preflight, inputs, reporter=None) -> tuple[Any, Any, Any | None]:
    """Training, validation (given, or a stratified split of training) and optional test examples."""
    d = cfg.data
    if not d.train:
        raise ConfigError("no training data: give --data FILE (or data.train in the config)")
    speech = inputs.modality == "speech"  # transcripts, not class labels: no class checks apply
    train = inputs.read(d.train, d, "training data", reporter=reporter)
    if d.validation:
        val = inputs.read(d.validation, d, "validation data", reporter=reporter)
    else:
        split_on = train.labels if not speech else [""] * len(train)  # speech: a plain random split
        tr_idx, va_idx, warns = stratified_split(split_on, d.validation_split, d.split_seed)
        pre.warnings.extend(warns)
        if not va_idx:
            raise DataError(f"{d.train}: too few rows to hold out a validation split; give --validation-data")
        val = train.subset(va_idx, f"{d.train} (validation split {d.validation_split:g})")
        train = train.subset(tr_idx)
    if speech:
        from .tasks.speech_recognition import check_speech_splits

        check_speech_splits(train, val, pre)
    else:
        check_train_validation(train, val, pre)
    test = inputs.read(d.test, d, "test data", reporter=reporter) if d.test else None
    if test is not None and not speech:
        unseen = sorted(set(test.labels) - set(train.labels))
        if unseen:
            raise DataError(f"{d.test}: test labels {unseen} never appear in the training data")
    for ex in (train, val, test):  # a split keeps its source's list: count each input once
        for item in getattr(ex, "skipped", None) or []:
            if tuple(item) not in pre.skipped:
                pre.skipped.append(tuple(item))
    if pre.skipped:
        shown = ", ".join(n for n, _ in pre.skipped[:3]) + (" ..." if len(pre.skipped) > 3 else "")
        pre.warnings.append(f"skipped {len(pre.skipped)} unreadable input(s) as asked ({shown}); all are listed "
                            "in report.html")
    return train, val, test


def _param_count(model_dir: Path) -> int:
    """Parameters in a model folder, read from safetensors headers without loading weights."""
    from safetensors import safe_open

    total = 0
    for f in model_dir.glob("*.safetensors"):
        with safe_open(str(f), "pt") as st:
            for k in st.keys():
                n = 1
                for d in st.get_slice(k).get_shape():
                    n *= d
                total += n
    return total


def _builtin_name(model_dir: Path) -> str | None:
    """The tunesmith module a catalogue folder names (models without a transformers class)."""
    try:
        return json.loads((model_dir / "config.json").read_text(encoding="utf-8")).get("tunesmith_builtin")
    except (OSError, json.JSONDecodeError):
        return None


def _label_rows(task, rows: list[dict], labels: list[str]) -> list[dict]:
    for r, y in zip(rows, labels):
        r["label"] = task.label2id[y]
    return rows


def finetune(config: RunConfig | dict | str | Path, *, resume: bool = False, overwrite: bool = False,
             quiet: bool = False) -> RunResult:
    """Fine-tune a pre-trained model as the config says; returns metrics and the run folder's files."""
    cfg = _coerce(config)
    if not cfg.out:
        raise ConfigError("no output folder: give --out FOLDER (or out: in the config)")
    out = Path(cfg.out)
    reporter = Reporter(quiet)
    t_start = time.perf_counter()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)

    # 1. Data: read and check everything before loading any model, so mistakes cost seconds.
    pre = Preflight()
    inputs = inputs_for(TASKS.get(cfg.task).modality)
    train, val, test = load_splits(cfg, pre, inputs, reporter)
    speech = getattr(TASKS.get(cfg.task), "generates_text", False)  # speech recognition: transcripts out
    guard = (inputs.read(cfg.data.guard, cfg.data, "guard data", reporter=reporter)
             if speech and cfg.data.guard else None)
    model_dir = resolve_model(cfg.model.name)
    auto = None
    if cfg.strategy.name == "auto":
        from .strategies.auto import available_memory, choose

        auto = choose(train.labels, _param_count(model_dir), available_memory(), inputs.modality)
        cfg = cfg.model_copy(deep=True)
        cfg.strategy.name = auto.strategy
        reporter.info(auto.describe())
    cfg = cfg.resolved()
    resuming = prepare(out, cfg, resume, overwrite)
    for w in pre.warnings:
        reporter.warn(w)
    reporter.info(f"data: {len(train)} training, {len(val)} validation"
                  + (f", {len(test)} test" if test else "") + " examples")

    # 2. Pre-trained model + task head.
    if speech:  # a recogniser: the task comes from the model's processor (CTC: and the transcripts' characters)
        backbone, preprocessor = inputs.load(model_dir, cfg.model, cfg.speech.model_dump())
        labels = []
        # the window rides along in the task's options for its messages (the model itself carries it)
        task = TASKS.get(cfg.task).for_run(backbone, preprocessor, train.texts,
                                           {**cfg.speech.model_dump(), "window_seconds": cfg.model.window_seconds},
                                           cfg.train.dropout)
    else:
        backbone, preprocessor = inputs.load(model_dir, cfg.model)
        labels = sorted(set(train.labels))
        task = TASKS.get(cfg.task)(labels, dropout=cfg.train.dropout, **inputs.task_kwargs(preprocessor, cfg.augment))
    torch.manual_seed(cfg.train.seed)
    model = TaskModel(backbone, task.build_head(backbone))
    if speech:
        task.prepare_model(model)  # greedy decoding settings onto the model, where generate() reads them
    strategy = STRATEGIES.get(cfg.strategy.name)(**cfg.strategy.model_dump(exclude={"name"}))
    counts = strategy.prepare(model)
    if cfg.train.gradient_checkpointing:
        from .training.recompute import enable_activation_recompute

        enable_activation_recompute(backbone)
    precision = resolve_precision(cfg.train.precision)
    accelerator = make_accelerator(precision, cfg.train.grad_accum)
    pooled = f" ({backbone.pooling} pooling)" if backbone.pooling != "none" else ""  # a recogniser pools nothing
    reporter.info(f"model: {cfg.model.name}{pooled}, strategy {strategy.name}: "
                  f"{counts.describe()}; precision {precision}")

    # 3. Preprocess once (tokenize; decode and resize images).
    def enc(ex, augment: bool = False) -> list[dict]:
        encoded = inputs.encode(task, preprocessor, ex, cfg.model.max_length, augment, reporter)
        return encoded if speech else _label_rows(task, encoded, ex.labels)

    # Training rows carry augmentation only when the backbone trains: cached features are clean.
    rows = {"train": enc(train, augment=not strategy.uses_feature_cache), "validation": enc(val)}
    if test is not None:
        rows["test"] = enc(test)
    if guard is not None:
        rows["guard"] = enc(guard)
    _window_hint(preprocessor, cfg.model.window_seconds, getattr(train, "seconds", None), reporter)

    # 4. Head-only: run the frozen backbone once per split (or read the cache), train on features.
    timings: dict[str, float] = {}
    fit_rows = rows
    if strategy.uses_feature_cache:
        t0 = time.perf_counter()
        autocast = accelerator.autocast
        fit_rows, hits = {}, []
        for split, split_rows in rows.items():
            # training features in the run's precision (the bulk of the work); the splits it scores in
            # full precision, as `predict` computes them, so the scores it reports are its model's
            scored = split != "train"
            feats, hit = cached_features(backbone, model_dir, task.collate, split_rows, cfg.train.eval_batch_size,
                                         "fp32" if scored else precision,
                                         contextlib.nullcontext if scored else autocast, reporter, split)
            hits.append(hit)
            fit_rows[split] = [{"features": feats[i], "label": r["label"]} for i, r in enumerate(split_rows)]
        timings["feature_seconds"] = time.perf_counter() - t0
        timings["feature_cache_hit"] = float(all(hits))
        reporter.info(f"features: {'read from cache' if all(hits) else 'computed'} in "
                      f"{timings['feature_seconds']:.1f}s")

    # Speech: score the pre-trained model first, for "WER before vs after" (and the guard set's forgetting check).
    before: dict[str, Any] = {}
    if speech:
        model.to(accelerator.device)
        scorer = model
        if cfg.model.window_seconds is not None and task.kind == "seq2seq":
            # the model as shipped hears its own window, not the run's shorter one: score that, not a
            # shortened model nobody has trained yet
            from .models.speech_backbone import speech_base_model

            scorer = speech_base_model(model_dir, cfg.model.trust_remote_code, task).to(accelerator.device)
        for split in ("validation", "guard"):
            if split in rows:
                before[split] = evaluate_rows(scorer, task, rows[split], cfg.train.eval_batch_size,
                                              contextlib.nullcontext).metrics  # fp32, as "after" is scored
        del scorer
        reporter.info("before fine-tuning: " + ", ".join(f"{k} WER {m['wer']:.4f}" for k, m in before.items()))

    # 5. Train.
    threads = torch.get_num_threads()
    if strategy.uses_feature_cache:
        torch.set_num_threads(1)  # a linear head's matmuls are too small to share; a 2nd thread only waits
    try:
        result = fit(model, task, strategy, fit_rows["train"], fit_rows["validation"], cfg.train, accelerator,
                     out / CHECKPOINTS, reporter, resume=resuming)
    finally:
        torch.set_num_threads(threads)
    timings.update({"train_seconds": result.train_seconds,
                    "train_samples_per_second": result.samples / max(result.train_seconds, 1e-9),
                    # head-only trains on features: no tokens pass through the backbone while training;
                    # speech has audio frames, not tokens (utterances/s is the figure there)
                    "train_tokens_per_second": (result.tokens / max(result.train_seconds, 1e-9)
                                                if not strategy.uses_feature_cache and not speech else None)})

    # Strategies that grow the trainable set (gradual) report where they ended, and where they began.
    end = count_params(model)
    params = {"trainable": end.trainable, "total": end.total, "trainable_at_start": counts.trainable}

    # 6. Final evaluation with the kept weights; test scored once. In full precision, as `tunesmith
    # predict` / `evaluate` and transformers.pipeline compute from the saved folder: the scores a run
    # reports are the scores its model gives (bf16 decoding changes transcripts, and can flip a
    # borderline class). Training-time validation stays in the training precision.
    model = accelerator.unwrap_model(model, keep_fp32_wrapper=False)  # drops accelerate's autocast on forward
    autocast = contextlib.nullcontext
    val_eval = evaluate_rows(model, task, fit_rows["validation"], cfg.train.eval_batch_size, autocast)
    test_eval = (evaluate_rows(model, task, fit_rows["test"], cfg.train.eval_batch_size, autocast)
                 if "test" in fit_rows else None)
    guard_eval = (evaluate_rows(model, task, rows["guard"], cfg.train.eval_batch_size, autocast)
                  if "guard" in rows else None)
    guard_summary = None
    if guard_eval is not None:  # catastrophic forgetting: did general speech get worse?
        from .evaluation.speech_metrics import guard_check

        guard_summary, msg = guard_check(cfg.data.guard, before["guard"], guard_eval.metrics,
                                         cfg.train.guard_max_wer_increase)
        if msg:
            pre.warnings.append(msg)
            reporter.warn(msg)

    # 7. Save model, report, card; metrics.json last marks the run finished.
    model_meta = {
        "base_model": cfg.model.name, "base_model_path": str(model_dir),
        "catalogue_name": catalogue_name_for(model_dir), "max_length": cfg.model.max_length,
        "pad_token_id": getattr(task, "pad_token_id", None), "strategy": strategy.name,
        "trust_remote_code": cfg.model.trust_remote_code, "tunesmith_version": __version__,
        "builtin": _builtin_name(model_dir), "window_seconds": cfg.model.window_seconds,
    }
    if getattr(strategy, "peft_config", None) is not None:
        from .strategies.feature_cache import model_fingerprint

        model_meta.update(lora=strategy.peft_config, lora_options=strategy.lora,
                          base_model_fingerprint=model_fingerprint(model_dir))
    layout = save_model(out, model, task, preprocessor, model_meta)
    timings["total_seconds"] = time.perf_counter() - t_start
    metrics = {
        "validation": val_eval.metrics,
        "test": test_eval.metrics if test_eval else None,
        "best_evaluation": result.best,
        "history": result.history,
        "stopped_early": result.stopped_early,
        "params": params,
        "train": {"steps": result.steps, "samples": result.samples, "tokens": result.tokens,
                  "pad_waste": result.pad_waste, "resumed_from_step": result.resumed_from_step, **timings},
        "run": {"task": cfg.task, "strategy": strategy.name, "model": cfg.model.name, "pooling": backbone.pooling,
                "precision": precision, "seed": cfg.train.seed, "layout": layout,
                "torch": torch.__version__, "python": platform.python_version(), "tunesmith": __version__},
        "warnings": pre.warnings,
        "skipped_inputs": [{"input": n, "reason": r} for n, r in pre.skipped],
    }
    if auto is not None:
        metrics["run"]["auto"] = {"picked": auto.strategy, "reasons": auto.reasons}
    if speech:
        from .evaluation.speech_metrics import worst_utterances

        metrics["before_finetuning"] = before
        metrics["guard"] = guard_summary
        metrics["worst_utterances"] = {
            split: worst_utterances(ex.names, ex.texts, ev.predictions, ev.details)
            for split, ex, ev in (("validation", val, val_eval), ("test", test, test_eval), ("guard", guard, guard_eval))
            if ev is not None}
        metrics["run"]["speech"] = task.state()
    from .evaluation.report import write_report
    from .evaluation.model_card import write_model_card

    examples = {"validation": val, "test": test, "guard": guard}
    evals = {"validation": val_eval, "test": test_eval, "guard": guard_eval}
    files = {"model": out / "model.safetensors", "metrics": out / METRICS_FILE}
    files["report"] = write_report(out, cfg, metrics, examples, evals, labels)
    files["model_card"] = write_model_card(out, cfg, metrics, labels, layout)
    if not cfg.train.keep_checkpoints:
        import shutil

        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    tmp = out / f".{METRICS_FILE}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    os.replace(tmp, out / METRICS_FILE)
    if speech:
        reporter.info(f"done in {timings['total_seconds']:.1f}s: validation WER {before['validation']['wer']:.4f} -> "
                      f"{val_eval.metrics['wer']:.4f}, CER {val_eval.metrics['cer']:.4f}"
                      + (f"; test WER {test_eval.metrics['wer']:.4f}" if test_eval else "")
                      + (f"; guard WER {guard_summary['wer_before']:.4f} -> {guard_summary['wer_after']:.4f}"
                         if guard_summary else "") + f"\n  model + report in {out}/")
    else:
        reporter.info(f"done in {timings['total_seconds']:.1f}s: validation accuracy {val_eval.metrics['accuracy']:.4f}, "
                      f"macro-F1 {val_eval.metrics['macro_f1']:.4f}" + (
                          f"; test accuracy {test_eval.metrics['accuracy']:.4f}" if test_eval else "")
                      + f"\n  model + report in {out}/")
    return RunResult(out, val_eval.metrics, test_eval.metrics if test_eval else None, result.history,
                     params, timings, files, pre.warnings)


def saved_data_config(run: Path, **overrides):
    """The run's own data settings (columns), with the given non-None overrides."""
    import yaml

    from .config import DataConfig

    saved = run / "run_config.yaml"
    d = (yaml.safe_load(saved.read_text(encoding="utf-8")) or {}).get("data", {}) if saved.is_file() else {}
    d.update({k: v for k, v in overrides.items() if v is not None})
    return DataConfig.model_validate({k: v for k, v in d.items() if k in DataConfig.model_fields})


def evaluate(run: str | Path, data: str | Path, text_column: str | None = None, label_column: str | None = None,
             text_pair_column: str | None = None, image_column: str | None = None, audio_column: str | None = None,
             compare_base: bool = True) -> dict[str, Any]:
    """Score a finished run on labelled data; columns default to the ones the run trained on.
    Speech recognition: WER/CER, the worst utterances and (compare_base) the pre-trained model's WER
    on the same clips, "before vs after"."""
    run = Path(run)
    predictor = load(run)
    dcfg = saved_data_config(run, text_column=text_column, label_column=label_column,
                             text_pair_column=text_pair_column, image_column=image_column, audio_column=audio_column)
    ex = predictor.inputs.read(str(data), dcfg, "evaluation data")
    if getattr(predictor.task, "generates_text", False):
        return _evaluate_speech(predictor, ex, compare_base)
    unseen = sorted(set(ex.labels) - set(predictor.labels))
    if unseen:
        raise DataError(f"{data}: labels {unseen} are not among the model's labels {predictor.labels}")
    logits = predictor.logits_for(ex)
    preds = logits.argmax(-1).tolist()
    refs = [predictor.task.label2id[y] for y in ex.labels]
    return predictor.task.metrics(preds, refs)


def _window_hint(preprocessor, chosen: int | None, seconds: list[float] | None, reporter) -> None:
    """Whisper pads every clip to its window (30 s): say when the training clips (`seconds`: their
    durations, from the up-front audio check) fill little of it."""
    from .modalities.audio import is_whisper_extractor, model_max_seconds

    extractor = getattr(preprocessor, "feature_extractor", preprocessor)  # speech: a processor
    if chosen is not None or not seconds or not is_whisper_extractor(extractor):
        return
    window = model_max_seconds(extractor)
    longest = max(seconds)
    suggest = int(math.ceil(longest * 1.5))
    if window and suggest <= window / 2:
        reporter.info(f"the longest training clip is {longest:.1f} s of Whisper's {window:g} s window, which every "
                      f"clip is padded to; model.window_seconds: {suggest} would make its encoder's work about "
                      f"{window / suggest:.0f}x smaller (longer clips are then refused; README: Speech recognition)")


def _evaluate_speech(predictor, ex, compare_base: bool) -> dict[str, Any]:
    """WER/CER of a speech run on transcribed clips; with compare_base, the base model's too."""
    import contextlib

    from .evaluation.speech_metrics import worst_utterances
    from .models.speech_backbone import speech_base_model

    task, bs = predictor.task, predictor.batch_size
    rows = predictor.inputs.encode(task, predictor.preprocessor, ex)
    metrics, hyps, per = task.evaluate(predictor.model, rows, bs, contextlib.nullcontext)
    metrics["worst_utterances"] = worst_utterances(ex.names, ex.texts, hyps, per)
    if compare_base and task.kind == "ctc":
        metrics["base_model"] = None  # a CTC base model has no head for this run's characters: nothing to compare
    elif compare_base:
        meta = predictor.meta
        base_dir = resolve_model(meta.get("catalogue_name") or meta["base_model_path"])
        base = speech_base_model(base_dir, bool(meta.get("trust_remote_code", False)), task)  # its own window
        metrics["base_model"], _, _ = task.evaluate(base, rows, bs, contextlib.nullcontext)
    return metrics


__all__ = ["finetune", "evaluate", "load", "Predictor", "RunResult"]
