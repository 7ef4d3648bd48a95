"""finetune / evaluate / load: the one entry point that the CLI, examples and search all call.

`finetune` reads as its named steps: read and check the data, choose the strategy, build the model,
encode the rows (and cache head-only features), score the model before training where the task
has a "before", train, evaluate the kept weights, save the run folder. Each step works through the
task, modality, backbone, strategy and run-format contracts; nothing here asks which one it holds.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import platform
import shutil
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import __version__, distributed
from .config import RunConfig, config_from_dict, load_config
from .data.preflight import Preflight
from .data.split import stratified_split
from .errors import ConfigError, DataError, ModelError
from .formats import save_run
from .modalities import MODALITIES
from .models import resolve_model, select_backbone
from .models.catalogue import catalogue_name_for
from .precision import resolve_precision
from .progress import Reporter
from .run_folder import CHECKPOINTS, CHOICE_FILE, METRICS_FILE, prepare
from .run_folder import check as check_out
from .serve.predictor import Predictor, load
from .strategies import STRATEGIES
from .strategies.base import Choice, ChoiceContext, count_params
from .strategies.feature_cache import cached_features, model_fingerprint
from .tasks import TASKS
from .tasks.base import TaskModel
from .training.loop import fit, make_accelerator
from .training.solve import solve_head


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


@dataclass
class RunData:
    """The run's examples by split ("train", "validation", optional "test" and the task's extra
    splits), read and checked before any model loads."""

    splits: dict[str, Any]
    preflight: Preflight

    @property
    def train(self):
        return self.splits["train"]


@dataclass
class Built:
    """The model a run trains, with everything that decides how."""

    cfg: RunConfig
    model_dir: Path
    task: Any
    model: TaskModel
    strategy: Any
    accelerator: Any
    precision: str
    param_counts: Any


def _coerce(config: RunConfig | dict | str | Path) -> RunConfig:
    if isinstance(config, RunConfig):
        return config
    if isinstance(config, dict):
        return config_from_dict(config)
    return load_config(config)


# -- reuse within one process: a search's trials share their data -------------------------------
class _Reuse:
    """What an open `reuse_data()` keeps: the last few data sets read and splits encoded."""

    def __init__(self, size: int):
        self.size, self.items = size, OrderedDict()

    def get(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self.items:
            self.items[key] = make()
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        self.items.move_to_end(key)
        return self.items[key]


_REUSE: _Reuse | None = None


@contextlib.contextmanager
def reuse_data(size: int = 8):
    """While open, `finetune` reads each distinct data config once and encodes (tokenises, decodes,
    featurises) each split once per model and preprocessing: the trials of a search differ in how they
    train, not in their data. Keyed by the data config with its files' sizes and modification times,
    and for encoded rows also the model folder's files and every config section but train, strategy
    and out; the `size` latest entries are kept. Outside it nothing is kept."""
    global _REUSE
    outer = _REUSE
    _REUSE = outer or _Reuse(size)
    try:
        yield
    finally:
        _REUSE = outer


def _files_stamp(paths) -> list:
    """(file, size, mtime) of each path, every file under a folder: an edited input is a new key."""
    found = []
    for p in map(Path, paths):
        for f in sorted(p.rglob("*")) if p.is_dir() else [p] if p.is_file() else []:
            if f.is_file():
                st = f.stat()
                found.append((str(f), st.st_size, st.st_mtime_ns))
    return found


def _model_stamp(model_dir: Path) -> list:
    """The model folder and its files' stamps: a key part of everything reused from a loaded model."""
    return [str(model_dir), _files_stamp([model_dir])]


def _data_key(cfg: RunConfig) -> str:
    d = cfg.data.model_dump(mode="json")
    return json.dumps([cfg.task, d, _files_stamp(v for v in d.values() if isinstance(v, str))], default=str)


# -- 1. data -------------------------------------------------------------------------------------
def read_data(cfg: RunConfig, reporter=None) -> RunData:
    """Training, validation (given, or split off training), test and the task's extra splits, checked
    before any model loads so mistakes cost seconds. Read once per data config under `reuse_data()`."""
    if _REUSE is not None:
        kept = _REUSE.get("data " + _data_key(cfg), lambda: _read_data(cfg, reporter))
        return RunData(dict(kept.splits), copy.deepcopy(kept.preflight))  # a run adds its own warnings
    return _read_data(cfg, reporter)


def _read_data(cfg: RunConfig, reporter) -> RunData:
    task_cls = TASKS.get(cfg.task)
    modality = MODALITIES.get(task_cls.modality)()
    d, pre = cfg.data, Preflight()
    if not d.train:
        raise ConfigError("no training data: give --data FILE (or data.train in the config)")
    if d.streaming and not modality.streams:
        raise ConfigError(
            f"data.streaming: the {task_cls.modality} inputs of task {cfg.task} are not streamed yet; drop "
            "data.streaming (the data is then read into memory), or give a smaller file"
        )
    train = modality.read(d.train, d, "training data", reporter=reporter)
    if d.validation:
        val = modality.read(d.validation, d, "validation data", reporter=reporter)
    else:
        key = task_cls.split_key(train)  # classes to stratify on; None: a plain random split
        tr_idx, va_idx, warns = stratified_split(
            key if key is not None else [""] * len(train), d.validation_split, d.split_seed
        )
        pre.warnings.extend(warns)
        if not va_idx:
            raise DataError(f"{d.train}: too few rows to hold out a validation split; give --validation-data")
        val = train.subset(va_idx, f"{d.train} (validation split {d.validation_split:g})")
        train = train.subset(tr_idx)
    test = modality.read(d.test, d, "test data", reporter=reporter) if d.test else None
    task_cls.check_splits(train, val, test, pre)
    splits = {"train": train, "validation": val, "test": test}
    for name in task_cls.extra_splits:  # e.g. a guard set: data.guard
        path = getattr(d, name)
        splits[name] = modality.read(path, d, f"{name} data", reporter=reporter) if path else None
    for ex in splits.values():  # a split keeps its source's list: count each input once
        for item in ex.skipped if ex is not None else []:
            if tuple(item) not in pre.skipped:
                pre.skipped.append(tuple(item))
    if pre.skipped:
        shown = ", ".join(n for n, _ in pre.skipped[:3]) + (" ..." if len(pre.skipped) > 3 else "")
        pre.warnings.append(
            f"skipped {len(pre.skipped)} unreadable input(s) as asked ({shown}); all are listed in report.html"
        )
    return RunData({k: v for k, v in splits.items() if v is not None}, pre)


# -- 2. strategy ---------------------------------------------------------------------------------
def choose_strategy(
    cfg: RunConfig, data: RunData, model_dir: Path, reporter, out: Path, resume: bool
) -> tuple[RunConfig, Any]:
    """The strategy the run trains with (a strategy that chooses, auto, names another and may set a
    few train.* keys with it), then every strategy-dependent default filled in so the saved config
    says exactly what ran. A resumed run keeps the choice it made before (CHOICE_FILE)."""
    task_cls = TASKS.get(cfg.task)
    backbone_cls = select_backbone(task_cls.modality, model_dir)  # reads config.json only
    saved = out / CHOICE_FILE
    if resume and saved.is_file() and not STRATEGIES.get(cfg.strategy.name).defaults:
        choice = Choice(**json.loads(saved.read_text(encoding="utf-8")))
        reporter.info(f"resuming with the strategy chosen before: {choice.strategy}")
    else:
        context = ChoiceContext(
            labels=data.train.labels,
            model_dir=model_dir,
            modality=task_cls.modality,
            task=task_cls,
            validation_size=len(data.splits["validation"]),
            cfg=cfg,
            workdir=out.parent / f".{out.name}.candidates",
            resolve=lambda c: c.resolved(backbone_cls, len(data.train)),
            reporter=reporter,
        )
        choice = STRATEGIES.get(cfg.strategy.name).pick(context)
    if choice.reasons:
        reporter.info(choice.describe())
    if choice.refit:
        data.preflight.warnings.append(
            f"{choice.asked} refits {choice.strategy} on training + validation rows together: the validation "
            "scores of this run are in-sample, not a held-out estimate (the race's out-of-sample figures are in "
            "the choice's reasons; a test split, where given, stays held out)"
        )
    if choice.asked is not None:  # the user's config as it applies to the strategy chosen (search's
        # with_params: keys it refuses go, e.g. epochs for a solved head), with the choice's settings
        # (e.g. the learning rate the winner raced with), less the chooser's own options
        from .search.space import with_params

        tree = with_params(cfg, {"strategy.name": choice.strategy, **choice.settings})
        for option in STRATEGIES.get(cfg.strategy.name).options:
            if option not in STRATEGIES.get(choice.strategy).options:
                tree["strategy"].pop(option, None)
        cfg = config_from_dict(tree, f"the config {choice.asked} chose")
    return cfg.resolved(backbone_cls, len(data.train)), choice


def adopt_choice(choice, out: Path, resuming: bool) -> bool:
    """Keep what the choice measured: its record (a resumed run makes the same choice), and a finished
    candidate's checkpoints, which the run resumes from instead of training the same model again.
    -> whether the run now resumes."""
    if choice.asked is None:
        return resuming
    record = {k: v for k, v in asdict(choice).items() if k != "checkpoints"}
    (out / CHOICE_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")
    if choice.checkpoints is None or resuming:
        return resuming
    shutil.move(str(choice.checkpoints), str(out / CHECKPOINTS))
    shutil.rmtree(choice.checkpoints.parent, ignore_errors=True)
    return True


# -- 3. model ------------------------------------------------------------------------------------
def build_model(cfg: RunConfig, model_dir: Path, data: RunData, reporter) -> Built:
    """Pre-trained backbone + the task's head, the strategy applied, the accelerator made."""
    task_cls = TASKS.get(cfg.task)
    backbone_cls = select_backbone(task_cls.modality, model_dir)
    backbone, preprocessor = _load_backbone(cfg, task_cls, backbone_cls, model_dir)
    if cfg.model.from_scratch:  # the baseline: this architecture without its pre-trained weights
        from .models.backbone import reinitialise

        torch.manual_seed(cfg.train.seed)
        if not reinitialise(backbone):
            raise ModelError(f"model.from_scratch: no layer of {cfg.model.name} can be re-initialised")
    task = task_cls.from_data(backbone, preprocessor, data.train, cfg, reporter)
    torch.manual_seed(cfg.train.seed)
    model = TaskModel(backbone, task.build_head(backbone))
    strategy = STRATEGIES.get(cfg.strategy.name)(**cfg.strategy.model_dump(exclude={"name"}))
    counts = strategy.prepare(model)
    if cfg.train.gradient_checkpointing:
        from .training.recompute import enable_activation_recompute

        enable_activation_recompute(backbone)
    precision = resolve_precision(cfg.train.precision)
    logs = Path(cfg.out) / "logs" if cfg.out else None
    accelerator = make_accelerator(precision, cfg.train.grad_accum, cfg.train.log_to, logs)
    pooled = f" ({backbone.pooling} pooling)" if backbone.pooling != "none" else ""  # a recogniser pools nothing
    reporter.info(
        f"model: {cfg.model.name}{pooled}, strategy {strategy.name}: {counts.describe()}; precision {precision}"
    )
    return Built(cfg, model_dir, task, model, strategy, accelerator, precision, counts)


def _load_backbone(cfg: RunConfig, task_cls, backbone_cls, model_dir: Path):
    """(backbone, preprocessor) from the model folder. Under `reuse_data()`, a strategy that keeps the
    backbone frozen (its features cached) shares one loaded backbone across runs: nothing changes its
    weights, and a head-only trial would otherwise spend most of its time loading them again."""
    options = task_cls.backbone_options(cfg)
    load = lambda: backbone_cls.load(model_dir, cfg.model, options)  # noqa: E731
    if _REUSE is None or not STRATEGIES.get(cfg.strategy.name).uses_feature_cache or cfg.model.from_scratch:
        return load()  # (a from-scratch backbone is re-initialised in place: never a shared one)
    parts = [*_model_stamp(model_dir), cfg.model.model_dump(mode="json"), options]
    return _REUSE.get(f"backbone {json.dumps(parts, default=str)}", load)


# -- 4. rows -------------------------------------------------------------------------------------
def encode_rows(b: Built, data: RunData, reporter, timings: dict[str, float], refit: bool = False) -> tuple[dict, dict]:
    """Every split preprocessed once (tokenised; images decoded and resized; clips featurised).
    -> (rows, the rows fit trains and scores on: for head-only, the frozen backbone's features, computed
    once per split or read from the cache). `refit`: the validation rows train too (a choice refit on
    training + validation; they are still scored, in-sample)."""
    # Training rows carry augmentation only when the backbone trains: cached features are clean.
    augment = not b.strategy.uses_feature_cache
    key = _encoding_key(b)  # once for every split: it stats the data files and the model folder
    rows = {
        split: _encode(b, key, split, ex, augment and split == "train", reporter) for split, ex in data.splits.items()
    }
    if not b.strategy.uses_feature_cache:
        if refit:  # validation rows as training rows: augmented where training rows are
            extra = _encode(b, key, "validation", data.splits["validation"], True, reporter) if augment else None
            rows = {**rows, "train": rows["train"] + (extra or rows["validation"])}
        return rows, rows
    t0, hits, fit_rows = time.perf_counter(), [], {}
    backbone, tc = b.model.backbone, b.cfg.train
    for split, split_rows in rows.items():
        # training features in the run's precision (the bulk of the work); the splits it scores in full
        # precision, as `predict` computes them, so the scores it reports are its model's
        scored = split != "train"
        feats, hit = cached_features(
            backbone,
            b.model_dir,
            b.task.collate,
            split_rows,
            tc.eval_batch_size,
            "fp32" if scored else b.precision,
            contextlib.nullcontext if scored else b.accelerator.autocast,
            reporter,
            split,
            # a re-initialised backbone's features are its seed's, not the folder's pre-trained ones
            variant=f"from-scratch seed {b.cfg.train.seed}" if b.cfg.model.from_scratch else "",
        )
        hits.append(hit)
        fit_rows[split] = [b.task.feature_row(r, feats[i]) for i, r in enumerate(split_rows)]
    if refit:  # the features are cached per split: the validation split's train too
        fit_rows["train"] = fit_rows["train"] + fit_rows["validation"]
    timings["feature_seconds"] = time.perf_counter() - t0
    timings["feature_cache_hit"] = float(all(hits))
    reporter.info(f"features: {'read from cache' if all(hits) else 'computed'} in {timings['feature_seconds']:.1f}s")
    return rows, fit_rows


def _encoding_key(b: Built) -> str | None:
    """What an encoded split depends on under `reuse_data()` (None outside it): the data, the model
    folder's files and the config less train, strategy and out (encoding never reads those)."""
    if _REUSE is None:
        return None
    parts = [_data_key(b.cfg), *_model_stamp(b.model_dir)]
    parts.append(b.cfg.model_dump(mode="json", exclude={"out", "train", "strategy"}))
    return json.dumps(parts, default=str)


def _encode(b: Built, key: str | None, split: str, examples, augment: bool, reporter) -> list[dict]:
    """One split's rows, encoded once per data, model and preprocessing under `reuse_data()`."""
    if _REUSE is None or key is None:
        return b.task.encode(examples, augment=augment, reporter=reporter)
    return _REUSE.get(
        f"rows {json.dumps([key, split, augment])}",
        lambda: b.task.encode(examples, augment=augment, reporter=reporter),
    )


def score_before(b: Built, rows: dict, reporter) -> dict[str, Any]:
    """Where the task has a "before fine-tuning" model (a recogniser as shipped), its scores on
    validation and the extra splits, in full precision as "after" is scored."""
    scorer = b.task.before_model(b.model, b.model_dir, b.cfg.model)
    if scorer is None:
        return {}
    scorer.to(b.accelerator.device)
    before = {
        split: b.task.evaluate(scorer, rows[split], b.cfg.train.eval_batch_size, contextlib.nullcontext).metrics
        for split in ("validation", *b.task.extra_splits)
        if split in rows
    }
    metric = b.task.default_metric
    reporter.info(
        "before fine-tuning: "
        + ", ".join(f"{split} {b.task.metric_name(metric)} {m[metric]:.4f}" for split, m in before.items())
    )
    return before


# -- 5. train ------------------------------------------------------------------------------------
def start_tracking(b: Built, out: Path, on_evaluation):
    """train.log_to: the trackers get the run's config, then every evaluation's numbers at its step (through
    accelerate); -> the evaluation callback that also logs. MLflow without MLFLOW_TRACKING_URI writes a local
    SQLite store, OUT/mlflow.db, beside the run's own files."""
    if not b.cfg.train.log_to:
        return on_evaluation
    if "mlflow" in b.cfg.train.log_to:
        try:
            import mlflow
        except ImportError as e:
            raise ConfigError("train.log_to: mlflow needs the tracking extra: pip install 'tunesmith[tracking]'") from e
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            mlflow.set_tracking_uri(f"sqlite:///{(out / 'mlflow.db').resolve()}")  # its file store is deprecated
    if "tensorboard" in b.cfg.train.log_to:
        try:
            import tensorboard  # noqa: F401
        except ImportError as e:
            raise ConfigError(
                "train.log_to: tensorboard needs the tracking extra: pip install 'tunesmith[tracking]'"
            ) from e
    flat = {}
    for section, values in b.cfg.model_dump(mode="json").items():
        for k, v in values.items() if isinstance(values, dict) else [("", values)]:
            if isinstance(v, (int, float, str, bool)):
                flat[f"{section}.{k}" if k else section] = v
    b.accelerator.init_trackers(out.name, config=flat)

    def logged(record: dict) -> None:
        numbers = {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        b.accelerator.log({k: v for k, v in numbers.items() if k not in ("step", "epoch")}, step=record.get("step"))
        if on_evaluation is not None:
            on_evaluation(record)

    return logged


def train(
    b: Built,
    fit_rows: dict,
    split_key: list | None,
    out: Path,
    reporter,
    resuming: bool,
    timings: dict[str, float],
    on_evaluation=None,
):
    threads = torch.get_num_threads()
    if b.strategy.uses_feature_cache:
        torch.set_num_threads(1)  # a linear head's matmuls are too small to share; a 2nd thread only waits
    on_evaluation = start_tracking(b, out, on_evaluation)
    try:
        if b.strategy.solves_head:  # a convex head on cached features: solved, with C cross-validated
            result = distributed.on_main(  # (by the main process, which alone evaluates and saves)
                lambda: solve_head(
                    b.model,
                    b.task,
                    fit_rows["train"],
                    fit_rows["validation"],
                    b.cfg.train,
                    split_key,
                    reporter,
                    b.strategy.head_c,
                ),
                "solving the head",
            )
            if on_evaluation is not None and distributed.is_main():  # its one evaluation, as fit() reports each
                on_evaluation({**result.history[-1], "final": True})
        else:
            result = fit(
                b.model,
                b.task,
                b.strategy,
                fit_rows["train"],
                fit_rows["validation"],
                b.cfg.train,
                b.accelerator,
                out / CHECKPOINTS,
                reporter,
                resume=resuming,
                on_evaluation=on_evaluation,
            )
            if result.model is not None:  # trained sharded (fsdp): the whole model, on the main process
                b.model = result.model
    finally:
        torch.set_num_threads(threads)
        if b.cfg.train.log_to:
            b.accelerator.end_training()
    seconds = max(result.train_seconds, 1e-9)
    # tokens/s only where the backbone saw tokens (not head-only's features, images or audio frames)
    timings.update(
        train_seconds=result.train_seconds,
        train_samples_per_second=result.samples / seconds,
        train_tokens_per_second=result.tokens / seconds if result.tokens else None,
    )
    return result


def training_split_key(b: Built, data: RunData, refit: bool) -> list | None:
    """What a solved head's cross-validation folds stratify on, row for row with the training rows
    (the validation rows' after them where the run refits on both)."""
    key = b.task.split_key(data.train)
    if key is None or not refit:
        return key
    return list(key) + list(b.task.split_key(data.splits["validation"]))


# -- 6. final evaluation -------------------------------------------------------------------------
def final_evaluation(b: Built, data: RunData, rows: dict, fit_rows: dict, before: dict, reporter) -> tuple[dict, dict]:
    """The kept weights scored on every split (test once), in full precision, as `tunesmith predict` /
    `evaluate` and transformers.pipeline compute from the saved folder: the scores a run reports are
    the scores its model gives (bf16 decoding changes transcripts, and can flip a borderline class).
    -> (evaluations by split, the task's extra metrics: before/after, guard set, ...)."""
    b.model = b.accelerator.unwrap_model(b.model, keep_fp32_wrapper=False)  # drops accelerate's autocast
    calibration = None
    if b.cfg.eval.calibrate:  # before scoring: every split, the saved model and its card are the calibrated ones
        val_rows = fit_rows.get("validation", rows["validation"])
        calibration = b.task.calibrate(b.model, val_rows, b.cfg.train.eval_batch_size)
        reporter.info(
            f"calibrated: temperature {calibration['temperature']:.3f} fitted on validation, ECE "
            f"{calibration['ece_before']:.4f} -> {calibration['ece_after']:.4f}"
        )
    evals = {
        split: b.task.evaluate(
            b.model, fit_rows.get(split, rows[split]), b.cfg.train.eval_batch_size, contextlib.nullcontext
        )
        for split in data.splits
        if split != "train"
    }
    extra, warnings = b.task.summarise(data.splits, evals, before, b.cfg)
    if calibration is not None:
        extra["calibration"] = calibration
    warnings += no_better_than_trivial(b, data, evals)
    for w in warnings:  # e.g. the guard set's forgetting check
        data.preflight.warnings.append(w)
        reporter.warn(w)
    return evals, extra


def no_better_than_trivial(b: Built, data: RunData, evals: dict) -> list[str]:
    """A loud warning for each split where the model scores no better than the task's trivial
    predictor (classification: the majority class): the run learned nothing there."""
    metric, out = b.cfg.train.metric, []
    lower = metric in b.task.lower_is_better
    for split, ev in evals.items():
        trivial = b.task.trivial_score(data.train, data.splits[split], metric)
        if trivial is None or metric not in ev.metrics:
            continue
        what, score = trivial
        value = ev.metrics[metric]
        if (value >= score) if lower else (value <= score):
            out.append(
                f"NO BETTER THAN TRIVIAL: {split} {metric} {value:.4f}, against {score:.4f} from {what}; the model "
                "learned nothing usable. Try more epochs or another learning rate, --strategy auto, or more data"
            )
    return out


# a refit's final training loss above both of these says it did not train as the choice did
REFIT_LOSS_FACTOR, REFIT_LOSS_SLACK = 2.0, 0.1


def refit_warnings(choice: Choice, history: list[dict]) -> list[str]:
    """A refit (a chosen configuration trained again on training + validation rows, where no
    out-of-sample score can check it) whose training loss ended far above what the same settings
    reached at the same epoch when they were chosen says so: the refit did not train as the choice did."""
    race = choice.refit_train_loss if choice.refit else None  # None: a solved head, which cannot diverge
    last = next((h["train_loss"] for h in reversed(history) if h.get("train_loss") is not None), None)
    if race is None or last is None:
        return []
    if math.isfinite(last) and last <= max(REFIT_LOSS_FACTOR * race, race + REFIT_LOSS_SLACK):
        return []
    return [
        f"REFIT TRAINED WORSE THAN THE CHOICE: its training loss ended at {last:.4f}, against {race:.4f} for the "
        f"same settings at the same epoch when {choice.asked} chose them; the model may have diverged and its "
        f"validation scores are in-sample. Rerun with --set strategy.{choice.asked}_refit=false to keep the "
        "model as chosen"
    ]


def too_close_to_call(b: Built, choice: Choice, history: list[dict], evals: dict) -> list[str]:
    """Where the validation split is too small for its 95% interval to separate the candidates a choice
    compared on it (the evaluations early stopping chose among, the strategies auto raced), the choice is
    within noise: every candidate's score lies within the interval's half-width of every other's."""
    from .evaluation.intervals import half_width

    metric, val = b.cfg.train.metric, evals["validation"].metrics
    hw = half_width((val.get("intervals") or {}).get(metric))
    if hw is None or choice.refit:  # no interval for this metric; a refit scores in-sample
        return []
    name, n = b.task.metric_name(metric), val.get("n")
    compared = {
        "early stopping": [h[metric] for h in history if h.get(metric) is not None],
        choice.asked or "": [c["value"] for c in choice.candidates if c.get("value") is not None],
    }
    out = []
    for what, scores in compared.items():
        if what and len(scores) > 1 and max(scores) - min(scores) < hw:
            out.append(
                f"TOO CLOSE TO CALL: the {len(scores)} candidates {what} compared span validation {name} "
                f"{min(scores):.4f}-{max(scores):.4f}, inside the 95% interval of +/-{hw:.4f} that {n} validation "
                f"examples give: the validation split cannot tell them apart, so the choice is within noise. "
                "More validation data would separate them"
            )
    return out


# -- 7. save -------------------------------------------------------------------------------------
def model_meta(b: Built) -> dict[str, Any]:
    """What tunesmith.json records about the run, beyond what the task and the layout write."""
    cfg = b.cfg
    meta = {
        "base_model": cfg.model.name,
        "base_model_path": str(b.model_dir),
        "catalogue_name": catalogue_name_for(b.model_dir),
        "max_length": cfg.model.max_length,
        "model_options": cfg.model.model_dump(),
        "backbone_options": b.task.backbone_options(cfg),
        "strategy": b.strategy.name,
        "trust_remote_code": cfg.model.trust_remote_code,
        "window_seconds": cfg.model.window_seconds,
        "tunesmith_version": __version__,
    }
    adapters = b.strategy.adapter_config()
    if adapters:
        meta.update(adapters, base_model_fingerprint=model_fingerprint(b.model_dir))
    return meta


def save_run_folder(
    b: Built,
    out: Path,
    data: RunData,
    result,
    evals: dict,
    extra: dict,
    choice,
    timings: dict[str, float],
    keep_weights: Callable[[dict], str | None] | None = None,
) -> tuple[dict, dict[str, Path]]:
    """Model, report, card; metrics.json last marks the run finished. `keep_weights(validation metrics)`
    returning a reason leaves the model (and its card) unwritten: a search's trial that is not the best
    so far; its config, metrics and report still say what it did."""
    from .evaluation.fit_summary import fit_summary
    from .evaluation.model_card import write_model_card
    from .evaluation.report import write_report

    cfg, pre = b.cfg, data.preflight
    dropped = keep_weights(evals["validation"].metrics) if keep_weights is not None else None
    # A full disk or a read-only folder: an OutputError naming the path, and what this save wrote so far
    # removed (a half-written model with it); without metrics.json the run is unfinished and its checkpoints
    # are still there (removed only after metrics.json), so --resume finishes it once there is room.
    before = {p.name for p in out.iterdir()} if out.is_dir() else set()
    tmp = out / f".{METRICS_FILE}.tmp{os.getpid()}"
    try:
        layout = save_run(out, b.model, b.task, model_meta(b)) if dropped is None else None
        end = count_params(b.model)  # strategies that grow the trainable set (gradual) say where they ended
        metrics = {
            **{split: ev.metrics for split, ev in evals.items()},
            "test": evals["test"].metrics if "test" in evals else None,
            "best_evaluation": result.best,
            "history": result.history,
            "fit": fit_summary(result.history, result.best, b.task.metric_name(cfg.train.metric)),
            "stopped_early": result.stopped_early,
            "params": {"trainable": end.trainable, "total": end.total, "trainable_at_start": b.param_counts.trainable},
            "train": {
                "steps": result.steps,
                "samples": result.samples,
                "tokens": result.tokens,
                "pad_waste": result.pad_waste,
                "resumed_from_step": result.resumed_from_step,
                **({"head_solver": result.solver} if result.solver else {}),
                **timings,
            },
            "run": {
                "task": cfg.task,
                "strategy": b.strategy.name,
                "model": cfg.model.name,
                "pooling": b.model.backbone.pooling,
                "precision": b.precision,
                "seed": cfg.train.seed,
                "layout": layout,
                "task_state": b.task.state(),
                "torch": torch.__version__,
                "python": platform.python_version(),
                "tunesmith": __version__,
            },
            **extra,
            "warnings": pre.warnings,
            "skipped_inputs": [{"input": n, "reason": r} for n, r in pre.skipped],
        }
        if choice.asked:  # what the strategy that chose measured, and why it picked this one
            metrics["run"]["choice"] = {
                "by": choice.asked,
                "picked": choice.strategy,
                "settings": choice.settings,
                "reasons": choice.reasons,
                "candidates": choice.candidates,
                **choice.record,
            }
        if dropped is not None:
            metrics["run"]["weights_not_kept"] = dropped
        files = {"metrics": out / METRICS_FILE, "report": write_report(out, cfg, metrics, data.splits, evals, b.task)}
        if dropped is None:
            files.update(model=out / "model.safetensors", model_card=write_model_card(out, cfg, metrics, b.task))
        tmp.write_text(json.dumps(metrics, indent=2), encoding="utf-8")
        os.replace(tmp, out / METRICS_FILE)
    except Exception as e:
        from .errors import output_error

        err = output_error(e, out, "the run folder", "rerun with --resume: it continues from the last checkpoint")
        if err is None:
            raise
        for p in out.iterdir() if out.is_dir() else ():
            if p.name not in before:
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
        raise err from e
    if not cfg.train.keep_checkpoints:
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    return metrics, files


def finetune(
    config: RunConfig | dict | str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
    on_evaluation=None,
    keep_weights: Callable[[dict], str | None] | None = None,
    data: RunData | None = None,
) -> RunResult:
    """Fine-tune a pre-trained model as the config says; returns metrics and the run folder's files.
    `on_evaluation(record)` sees each validation evaluation during training (search's pruning);
    `keep_weights(validation metrics)` returning a reason saves the run without its model (a search's
    trials that are not the best so far). `data`: the splits already read (cross-validation's folds)."""
    cfg = _coerce(config)
    if not cfg.out:
        raise ConfigError("no output folder: give --out FOLDER (or out: in the config)")
    # N processes (torchrun, accelerate launch, --processes): the main one reads the data, prepares the
    # folder, scores and saves; every one trains its share of each batch (distributed.py)
    main = distributed.is_main()
    out, reporter, t_start = Path(cfg.out), Reporter(quiet, silent=not main), time.perf_counter()
    if distributed.world_size() > 1:
        distributed.state()  # joins the process group, or fails loudly where each process would train alone
        distributed.on_main(lambda: _one_process_strategies(cfg), "checking the strategy")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    distributed.on_main(lambda: check_out(out, resume, overwrite), "checking --out")  # before any work
    data = data or distributed.on_main(lambda: read_data(cfg, reporter), "reading the data")
    model_dir = resolve_model(cfg.model.name)
    cfg, choice = choose_strategy(cfg, data, model_dir, reporter, out, resume)
    resuming = distributed.on_main(
        lambda: adopt_choice(choice, out, prepare(out, cfg, resume, overwrite)), "preparing --out"
    )
    for w in data.preflight.warnings:
        reporter.warn(w)
    reporter.info("data: " + ", ".join(f"{len(ex)} {split}" for split, ex in data.splits.items()) + " examples")
    b = build_model(cfg, model_dir, data, reporter)
    timings: dict[str, float] = {}
    with b.accelerator.main_process_first():  # cached features: computed once, read by the other processes
        rows, fit_rows = encode_rows(b, data, reporter, timings, refit=choice.refit)
    before = score_before(b, rows, reporter) if main else {}
    result = train(
        b, fit_rows, training_split_key(b, data, choice.refit), out, reporter, resuming, timings, on_evaluation
    )
    if not main:  # the main process evaluates and writes the run
        return RunResult(out, {}, None, result.history, {}, timings)
    evals, extra = final_evaluation(b, data, rows, fit_rows, before, reporter)
    for w in refit_warnings(choice, result.history) + too_close_to_call(b, choice, result.history, evals):
        data.preflight.warnings.append(w)
        reporter.warn(w)
    timings["total_seconds"] = time.perf_counter() - t_start
    metrics, files = save_run_folder(b, out, data, result, evals, extra, choice, timings, keep_weights)
    dropped = metrics["run"].get("weights_not_kept")
    kept = "model + report" if dropped is None else f"report (model not kept: {dropped})"
    fit = f"\n  {metrics['fit']}" if metrics["fit"] else ""
    reporter.info(f"done in {timings['total_seconds']:.1f}s: {b.task.headline(metrics)}{fit}\n  {kept} in {out}/")
    return RunResult(
        out,
        evals["validation"].metrics,
        metrics["test"],
        result.history,
        metrics["params"],
        timings,
        files,
        data.preflight.warnings,
    )


def _one_process_strategies(cfg: RunConfig) -> None:
    if not STRATEGIES.get(cfg.strategy.name).defaults:
        raise ConfigError(
            f"--strategy {cfg.strategy.name} chooses among candidate runs, which train in one process: choose "
            "on one process, then train the strategy it picked with more processes"
        )


# -- evaluate a finished run ---------------------------------------------------------------------
def saved_data_config(run: Path, **overrides):
    """The run's own data settings (columns), with the given non-None overrides."""
    import yaml

    from .config import DataConfig

    saved = run / "run_config.yaml"
    d = (yaml.safe_load(saved.read_text(encoding="utf-8")) or {}).get("data", {}) if saved.is_file() else {}
    d.update({k: v for k, v in overrides.items() if v is not None})
    return DataConfig.model_validate({k: v for k, v in d.items() if k in DataConfig.model_fields})


def run_examples(run: Path, split: str):
    """One split ("train", "validation") of the run's own data, read again as training read it (the same
    files, the same split of its training data)."""
    import yaml

    from .config import config_from_dict

    tree = yaml.safe_load((Path(run) / "run_config.yaml").read_text(encoding="utf-8"))
    return read_data(config_from_dict(tree, str(Path(run) / "run_config.yaml"))).splits[split]


def validation_examples(run: Path):
    """The run's own validation examples: what export parity checks are measured on."""
    return run_examples(run, "validation")


def evaluate(
    run: str | Path,
    data: str | Path,
    text_column: str | None = None,
    label_column: str | None = None,
    text_pair_column: str | None = None,
    image_column: str | None = None,
    audio_column: str | None = None,
    compare_base: bool = True,
) -> dict[str, Any]:
    """Score a finished run on labelled data; columns default to the ones the run trained on. The
    task's own extras come along (speech recognition: the worst utterances and, with compare_base,
    the pre-trained model's scores on the same data, "before vs after")."""
    from .formats import model_options

    run = Path(run)
    predictor = load(run)
    task = predictor.task
    dcfg = saved_data_config(
        run,
        text_column=text_column,
        label_column=label_column,
        text_pair_column=text_pair_column,
        image_column=image_column,
        audio_column=audio_column,
    )
    ex = predictor.modality.read(str(data), dcfg, "evaluation data")
    task.check_evaluation_data(ex, str(data))
    rows = task.encode(ex)
    ev = task.evaluate(predictor.model, rows, predictor.batch_size, contextlib.nullcontext)
    base_metrics, compare = None, compare_base and task.compares_with_base
    if compare:
        meta = predictor.meta
        base_dir = resolve_model(meta.get("catalogue_name") or meta["base_model_path"])
        base = task.before_model(None, base_dir, model_options(meta))  # None: nothing to compare (a new head)
        if base is not None:
            base_metrics = task.evaluate(base, rows, predictor.batch_size, contextlib.nullcontext).metrics
    metrics = {**ev.metrics, **task.describe_evaluation(ex, ev, base_metrics)}
    if compare:
        metrics["base_model"] = base_metrics
    return metrics


__all__ = ["finetune", "evaluate", "load", "Predictor", "RunResult"]
