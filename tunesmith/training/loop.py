"""fit(): the one training loop. Read it top to bottom; every feature is a visible branch."""

from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from .. import distributed
from ..data.batching import pad_waste, row_lengths, train_batches
from ..errors import ConfigError, Interrupted
from ..precision import accelerate_mixed_precision
from ..strategies.base import count_params
from . import sharding
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state, usable_checkpoint
from .dropout import use_cheap_dropout
from .optim import build_optimizer, refresh_param_groups, warmup_linear_decay


@dataclass
class FitState:
    """Everything the loop needs to continue exactly after a crash; saved in every checkpoint."""

    epoch: int = 0  # epochs finished
    batch_in_epoch: int = 0  # batches of the current epoch already trained
    step: int = 0  # optimizer steps taken
    best: dict[str, Any] | None = None  # the evaluation whose weights are kept
    evals_since_best: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    train_seconds: float = 0.0
    samples: int = 0
    tokens: int = 0  # non-pad tokens seen by the backbone
    loss_window: list[float] = field(default_factory=list)  # training losses since the last evaluation
    processes: int = 1  # the processes that trained it: a resumed run needs as many
    sharded: bool = False  # trained sharded (train.distributed fsdp): a resumed run must be too

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> FitState:
        saved = dict(saved)
        if "best_eval" in saved:  # checkpoints written before FitState named it "best_eval"
            saved["best"] = saved.pop("best_eval")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in known})


@dataclass
class FitResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None  # the evaluation whose weights were kept
    stopped_early: bool = False
    steps: int = 0
    train_seconds: float = 0.0
    samples: int = 0
    tokens: int = 0  # non-pad tokens seen by the backbone
    pad_waste: float = 0.0
    resumed_from_step: int | None = None
    solver: dict[str, Any] | None = None  # a head solved instead of trained (training/solve.py): how
    model: Any = None  # trained sharded (fsdp): the whole trained model, on the main process (None elsewhere)


def make_accelerator(precision: str, grad_accum: int, log_to=(), project_dir: Path | None = None) -> Accelerator:
    """One Accelerator per run. accelerate keeps its state process-wide; a previous run in this
    process (tests, search, the Python API) may have used another precision, so reset it while
    keeping the distributed (partial) state. `log_to`: accelerate's trackers (train.log_to), writing
    under `project_dir`."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    return Accelerator(
        cpu=not torch.accelerator.is_available(),  # (a group of CPU processes forms only when told: distributed.py)
        mixed_precision=accelerate_mixed_precision(precision),
        gradient_accumulation_steps=grad_accum,
        log_with=list(log_to) or None,
        project_dir=str(project_dir) if project_dir is not None and log_to else None,
    )


def record_evaluation(
    state: FitState, record: dict[str, Any], task, metric: str, patience: int | None, keep: str = "best"
) -> bool:
    """Add an evaluation to the history; True when its weights are the ones to keep so far: the best
    (keep "best"), or every latest one (keep "last": a fixed schedule, never stopped early). Early
    stopping is decided here: `patience` evaluations in a row without improvement stop the run."""
    state.history.append(record)
    improved = keep == "last" or task.improved(record, state.best, metric)
    if improved:
        state.best, state.evals_since_best = record, 0
    else:
        state.evals_since_best += 1
    if patience is not None and state.evals_since_best >= patience:
        state.stopped_early = True
    return improved


class _StopSignal:
    """SIGTERM / SIGINT during training (a preemptible machine's notice, Ctrl-C): noted, and the loop writes
    a checkpoint at its next optimizer step and stops. A second SIGINT interrupts at once."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self):
        try:
            for s in self.SIGNALS:
                self.previous[s] = signal.signal(s, self._note)
        except ValueError:  # not the main thread (e.g. a server's worker): signals stay as they were
            self.previous = {}
        return self

    def _note(self, signum, frame) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def _shard(idx: list[int], rank: int, world: int) -> tuple[list[int], float]:
    """This process's rows of a global batch, and the factor on their mean loss that makes the processes'
    averaged gradients the gradient of the whole batch's mean loss (equal to one process training the
    batch). A process left without rows (a last batch smaller than the world) trains one row at weight 0."""
    if world == 1:
        return idx, 1.0
    mine = idx[rank::world]
    if not mine:
        return idx[:1], 0.0
    return mine, len(mine) * world / len(idx)


def fit(
    model,
    task,
    strategy,
    train_rows: Sequence[dict],
    val_rows: Sequence[dict],
    train_cfg,
    accelerator: Accelerator,
    checkpoint_dir: Path,
    reporter,
    resume: bool = False,
    on_evaluation=None,
) -> FitResult:
    """Train `model` in place; at the end it holds the best weights seen on validation.

    `on_evaluation(record)` is called after each validation evaluation (the record the history
    keeps, plus `final`: true when the run ends after it, at its last step or stopped early): a
    hyperparameter search reports it to its pruner there, and may raise to stop the run.

    With N processes (distributed.py), `train.batch_size` is the global batch: each process trains on its
    share of every batch, in the same order; the main process alone evaluates (every validation row once),
    writes checkpoints and calls `on_evaluation`, and the others follow its decisions.

    With train.distributed fsdp and N > 1 processes (training/sharding.py) each process holds 1/N of the
    weights, gradients and optimizer state; `model` is sharded in place, and the main process receives the
    whole trained model as `FitResult.model`."""
    tc = train_cfg
    rank, world = accelerator.process_index, accelerator.num_processes
    sharded = sharding.wanted(tc, world)
    if sharded:
        sharding.check(strategy, tc, accelerator.mixed_precision)
    set_seed(tc.seed + rank)  # the same data order everywhere; each process its own dropout
    use_cheap_dropout(model)  # CPU dropout masks from 16-bit draws (training/dropout.py)
    result = FitResult()

    # Where to start: a resumed run re-enters its epoch, so strategies whose trainable set changes
    # by epoch or step (gradual) rebuild that set before the optimizer state is loaded into it.
    ckpt, skipped = usable_checkpoint(checkpoint_dir) if resume else (None, [])
    for w in skipped:  # a damaged newest checkpoint: the previous one, never garbage
        reporter.warn(w)
    saved = json.loads((ckpt / "state.json").read_text()) if ckpt else {"epoch": 0, "step": 0}
    if ckpt and saved.get("processes", 1) != world:
        raise ConfigError(
            f"--resume: the checkpoint in {checkpoint_dir} was written by a run of {saved.get('processes', 1)} "
            f"process(es); this one has {world}. Resume with the same number of processes (--processes "
            f"{saved.get('processes', 1)}), or use --overwrite to start over"
        )
    if ckpt and saved.get("sharded", False) != sharded:
        how = "fsdp" if saved.get("sharded", False) else "ddp"
        raise ConfigError(
            f"--resume: the checkpoint in {checkpoint_dir} was written by a run trained with train.distributed "
            f"{how}; resume it with the same setting, or use --overwrite to start over"
        )
    strategy.on_epoch_start(model, saved["epoch"])
    strategy.on_step(model, saved["step"])

    skeleton, trained = None, set()
    if sharded:  # before the optimizer, which then holds the shards: the main process keeps the model's shape
        skeleton = sharding.meta_copy(model) if accelerator.is_main_process else None
        sharding.shard(model, accelerator.device, world)
        trained = sharding.trainable_names(strategy, model)

    # Which weights train, at which learning rates.
    optimizer = build_optimizer(strategy.param_groups(model, tc), tc.lr, accelerator.device.type)
    lengths = row_lengths(train_rows)
    steps_per_epoch = math.ceil(math.ceil(len(train_rows) / tc.batch_size) / tc.grad_accum)
    scheduler = warmup_linear_decay(optimizer, steps_per_epoch * tc.epochs, tc.warmup_ratio)
    if not sharded:  # (sharded: already spread over the processes; accelerate would wrap it in DDP)
        model, optimizer = accelerator.prepare(model, optimizer)
    raw_model = model if sharded else accelerator.unwrap_model(model)

    def kept_weights() -> dict[str, torch.Tensor]:
        """The weights training changes, whole (sharded: gathered by every process onto the main one)."""
        if sharded:
            return sharding.trainable_state(model, trained, accelerator.is_main_process)
        return strategy.trainable_state(raw_model)

    state = FitState(processes=world, sharded=sharded)
    best_weights: dict[str, torch.Tensor] | None = None
    if ckpt is not None:
        loaded = load_checkpoint(ckpt)
        if sharded:  # the main process's whole weights and optimizer state, into every process's shards
            sharding.load_trainable(model, loaded["weights"])
            sharding.load_optimizer_state(model, optimizer, loaded["optimizer"])
        else:
            raw_model.load_state_dict(loaded["weights"], strict=False)
            optimizer.load_state_dict(loaded["optimizer"])
        scheduler.load_state_dict(loaded["scheduler"])
        rng = loaded["rng"]  # every process's, in rank order, where more than one trained
        set_rng_state(rng[rank] if isinstance(rng, list) else rng)
        best_weights = loaded["best"]
        state = FitState.from_dict(loaded["state"])
        if rank > 0:  # the checkpoint holds the batches' whole losses (the main process's window): counted once
            state.loss_window = [0.0] * len(state.loss_window)
        result.resumed_from_step = state.step
        reporter.info(f"resumed from {ckpt.name} (epoch {state.epoch + 1}, step {state.step})")

    def trainable_set_changed() -> None:
        """The strategy unfroze more weights: they train from now on. Weights frozen until now still
        hold their values at the best evaluation, so the best snapshot records them before they move:
        restoring it then gives the very model that evaluation scored. With N processes the wrapper that
        averages gradients is rebuilt: it averages only the weights that trained when it was made."""
        nonlocal model
        refresh_param_groups(optimizer, scheduler, strategy.param_groups(raw_model, tc))
        if world > 1:
            model = accelerator.prepare_model(raw_model)
        if best_weights is not None:
            for name, tensor in strategy.trainable_state(raw_model).items():
                best_weights.setdefault(name, tensor)

    def evaluate(epoch: int, final: bool) -> None:
        """Evaluate after `epoch` (1-based: the epoch in progress, or just finished); `final`: the
        run's last step is done. The main process scores; every process records what it found."""
        nonlocal best_weights
        window, state.loss_window = state.loss_window, []
        if world > 1:  # each process's share of every batch's loss: their sum is the batch's mean loss
            window = [float(x) for x in np.sum(distributed.gather(window), axis=0)]
        record = None
        # Sharded, a forward pass needs every process (each layer gathers its shards from all): every process
        # evaluates, and the main process's record is shared as without sharding.
        if accelerator.is_main_process or sharded:
            scored = raw_model if world > 1 and not sharded else model
            ev = task.evaluate(scored, val_rows, tc.eval_batch_size, accelerator.autocast, tracked_only=True)
            record = {
                "epoch": epoch,
                "step": state.step,
                "train_loss": float(np.mean(window)) if window else None,
                **{k: ev.metrics[k] for k in task.metrics_tracked},
            }
        record = distributed.share(record)
        if record_evaluation(state, record, task, tc.metric, tc.early_stopping_patience, tc.keep):
            best_weights = kept_weights()
        reporter.info(
            f"  step {record['step']}: "
            + "  ".join(f"val {k} {record[k]:.4f}" for k in task.metrics_tracked)
            + (f"  ({'kept' if tc.keep == 'last' else 'best'})" if state.evals_since_best == 0 else "")
        )
        if on_evaluation is not None and accelerator.is_main_process:
            on_evaluation({**record, "final": final or state.stopped_early})

    last_checkpoint = time.monotonic()

    def checkpoint() -> None:
        nonlocal last_checkpoint
        rng = distributed.gather(rng_state()) if world > 1 else None
        if world > 1:  # the losses since the last evaluation, whole, in the main process's window (it is saved)
            total = [float(x) for x in np.sum(distributed.gather(state.loss_window), axis=0)]
            state.loss_window = total if rank == 0 else [0.0] * len(total)
        if sharded:  # gathered by every process, onto the main one
            weights, optim = kept_weights(), sharding.Saved(sharding.optimizer_state(model, optimizer))
        if accelerator.is_main_process:
            save_checkpoint(
                checkpoint_dir,
                state.step,
                weights if sharded else strategy.trainable_state(raw_model),
                best_weights,
                optim if sharded else optimizer,
                scheduler,
                asdict(state),
                rng=rng,
            )
        distributed.barrier()
        last_checkpoint = time.monotonic()

    def agree(signum: int | None, due: bool, tokens: int) -> tuple[int | None, bool, int]:
        """What every process must do alike after a step: stop (the signal that reached any of them),
        checkpoint (the main process's clock says it is time), and the batch's tokens summed over processes."""
        if world == 1:
            return signum, due, tokens
        flags = torch.zeros(2 + world)  # due, tokens, then each process's signal (0: none)
        flags[0], flags[1], flags[2 + rank] = float(due and accelerator.is_main_process), float(tokens), signum or 0
        flags = accelerator.reduce(flags.to(accelerator.device), "sum").cpu()
        return next((int(x) for x in flags[2:] if x > 0), None), bool(flags[0] > 0), int(flags[1])

    pending_tokens = 0  # this process's tokens since the last optimizer step
    every_seconds = tc.checkpoint_every_minutes * 60 if tc.checkpoint_every_minutes else None
    model.train()
    with _StopSignal() as stop_signal:
        while state.epoch < tc.epochs and not state.stopped_early:
            epoch = state.epoch
            if strategy.on_epoch_start(raw_model, epoch):
                trainable_set_changed()
                reporter.info(f"epoch {epoch + 1}: {count_params(raw_model).describe()}")
            batches = train_batches(lengths, tc.batch_size, tc.seed, epoch, tc.group_size, tc.length_grouping)
            if epoch == 0:
                result.pad_waste = pad_waste([_shard(b, rank, world)[0] for b in batches], lengths)
            start_batch = state.batch_in_epoch
            with reporter.bar(f"epoch {epoch + 1}/{tc.epochs}", sum(len(b) for b in batches)) as bar:
                bar.advance(sum(len(b) for b in batches[:start_batch]))
                t0 = time.perf_counter()
                for bi in range(start_batch, len(batches)):
                    idx = batches[bi]
                    mine, weight = _shard(idx, rank, world)
                    batch = {
                        k: v.to(accelerator.device) for k, v in task.collate([train_rows[i] for i in mine]).items()
                    }
                    sync = (bi + 1) % tc.grad_accum == 0 or bi == len(batches) - 1
                    if sharded:  # gradients reduce-scattered at the step only; autocast (accelerate's wrapper's)
                        model.set_requires_gradient_sync(sync)
                        context = accelerator.autocast()
                    else:
                        context = contextlib.nullcontext() if sync else accelerator.no_sync(model)
                    with context:
                        out = task.compute_loss(model, batch)
                        # accelerate divides by gradient_accumulation_steps itself: pass the batch's mean loss
                        accelerator.backward(out["loss"] * weight if world > 1 else out["loss"])
                    state.loss_window.append(out["loss"].item() * weight / world)
                    state.samples += len(idx)
                    pending_tokens += task.tokens(batch) if weight else 0
                    if sync:
                        if tc.max_grad_norm is not None:
                            clip = torch.nn.utils.clip_grad_norm_ if sharded else accelerator.clip_grad_norm_
                            clip(model.parameters(), tc.max_grad_norm)
                        optimizer.step()
                        scheduler.step()
                        optimizer.zero_grad(set_to_none=True)
                        state.step += 1
                        if strategy.on_step(raw_model, state.step):  # gradual unfreezing by steps
                            trainable_set_changed()
                        due = every_seconds is not None and time.monotonic() - last_checkpoint >= every_seconds
                        stopping, due, tokens = agree(stop_signal.signum, due, pending_tokens)
                        state.tokens, pending_tokens = state.tokens + tokens, 0
                    state.batch_in_epoch = bi + 1
                    bar.advance(len(idx), postfix=f"loss {np.mean(state.loss_window[-20:]) * world:.4f}")
                    if sync and tc.eval_every and state.step % tc.eval_every == 0:
                        state.train_seconds += time.perf_counter() - t0
                        evaluate(epoch + 1, final=epoch + 1 == tc.epochs and bi == len(batches) - 1)
                        t0 = time.perf_counter()
                        if state.stopped_early:
                            break
                    if sync and (stopping or due or (tc.checkpoint_every and state.step % tc.checkpoint_every == 0)):
                        state.train_seconds += time.perf_counter() - t0
                        checkpoint()  # (at an epoch's last batch: a resumed run evaluates that epoch first)
                        t0 = time.perf_counter()
                        if stopping:
                            raise _interrupted(stopping, state.step, checkpoint_dir, rank)
                state.train_seconds += time.perf_counter() - t0
            if state.stopped_early:
                break
            state.epoch += 1
            state.batch_in_epoch = 0
            if not tc.eval_every:
                evaluate(state.epoch, final=state.epoch >= tc.epochs)
            if not tc.checkpoint_every:
                checkpoint()

    if tc.eval_every and (not state.history or state.history[-1]["step"] != state.step) and not state.stopped_early:
        evaluate(state.epoch, final=True)  # the last steps since the previous evaluation also compete for best
    if state.stopped_early:
        reporter.info(f"early stopping: no {tc.metric} improvement in {tc.early_stopping_patience} evaluations")
    if best_weights is not None and sharded:
        sharding.load_trainable(model, best_weights)
    elif best_weights is not None:
        raw_model.load_state_dict(best_weights, strict=False)
    if sharded:  # an ordinary model for the main process's final evaluation and run folder
        result.model = sharding.unsharded(model, skeleton, accelerator.device)
    result.history, result.best, result.stopped_early = state.history, state.best, state.stopped_early
    result.steps, result.train_seconds = state.step, state.train_seconds
    result.samples, result.tokens = state.samples, state.tokens
    return result


def _interrupted(signum: int | None, step: int, checkpoint_dir: Path, rank: int) -> Interrupted:
    name = signal.Signals(signum).name if signum else "a signal"
    error = Interrupted(
        f"stopped by {name} at step {step}; its checkpoint is in {checkpoint_dir}. Run the same command with --resume "
        "to continue exactly where it stopped",
        signum or signal.SIGTERM,
    )
    error.from_main_process = rank > 0  # every process stops; the main one says so
    return error
