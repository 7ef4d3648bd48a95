"""`--strategy auto`: decide on the user's own data, by measuring.

A budgeted race (successive halving through Optuna, the engine `tunesmith search` uses) over the
strategies that apply to the task and fit in memory: head-only (its head solved, seconds), then
full at two learning rates, partial and lora, each an ordinary run on the training split scored on
validation after every epoch. A candidate that falls out of the top third at a rung (3, 9, 27
epochs: FIRST_RUNG) stops there; the rest run to their end (early stopping included), and one whose
rung is its last epoch completes (run_trial never cuts a run's final evaluation). A candidate whose
remaining epochs would cost under a quarter of the first full-length trained candidate's run (CHEAP_SHARE)
is spared the cut and finishes: cutting it saves little, and a rung compares a few epochs' scores that on a
small validation split differ by a handful of examples. The winner is the best
validation score (never the test split); the run then resumes from the winner's own last
checkpoint, so "finishing" it costs nothing and gives exactly the model the race scored.

The study table (bench/strategy_study.py -> auto_table.json, docs/strategy-choice.md) no longer
decides: its pick only goes first among the trained candidates (successive halving always lets
the first one finish). Memory still rules candidates out: full-weight strategies need about 16
bytes per parameter (weights, gradients, two AdamW moments) plus activations.

The budget (`strategy.auto_budget`): a time ("90s", "10m", "1h") or a multiple of the head-only
candidate's time ("20x"); by default the head-only candidate plus 3 times the first full-length
trained candidate. No candidate
starts once it is spent, and a running one stops at its next evaluation. Decisions depend on
time only when the budget cuts the race; otherwise the race is deterministic under train.seed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

from torch import nn

from . import STRATEGIES
from .base import Choice, ChoiceContext, ParamCounts, StrategyDefaults, require_pooled_features

TABLE = Path(__file__).with_name("auto_table.json")
# Optimizer-state bytes per parameter of the whole model for each strategy (fp32 AdamW: weights,
# grads, 2 moments = 16 for full; frozen weights alone = 4), before activations.
BYTES_PER_PARAM = {"full": 16, "partial": 8, "gradual": 16, "bitfit": 4.5, "lora": 4.5, "head-only": 4}
MEMORY_HEADROOM = 0.6  # use at most this share of the memory available
ACTIVATION_BYTES = 2 << 30  # rough allowance for activations at batch 32


def available_memory() -> int | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def param_count(model_dir: Path) -> int:
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


def choose(labels: list[str], model_params: int, memory: int | None, modality: str = "text") -> Choice:
    """The study's pick for this many labelled examples (and memory); `modality` other than text says
    that the study behind it is a text one (no image or audio study exists yet)."""
    table = json.loads(TABLE.read_text(encoding="utf-8"))
    counts = Counter(labels)
    smallest_label, smallest = min(counts.items(), key=lambda kv: (kv[1], kv[0]))
    rows = sorted((r for r in table["rules"] if r["per_class"] is not None), key=lambda r: r["per_class"])
    all_row = next((r for r in table["rules"] if r["per_class"] is None), None)
    row = rows[0]
    for r in rows:
        if smallest >= r["per_class"]:
            row = r
    if all_row is not None and len(labels) >= all_row["n_train"]:
        row = all_row
    where = "all studied examples" if row["per_class"] is None else f"{row['per_class']} per class"
    reasons = [
        f"smallest class {smallest_label!r} has {smallest} labelled examples ({len(labels)} in all)",
        f"in our study ({table['source']}) {row['strategy']} was the pick at {where}: {row['why']}, "
        f"test accuracy {row['accuracy_mean']:.3f} ± {row['accuracy_std']:.3f}",
    ]
    if modality != "text":
        reasons.append(
            f"that study is of text classification (MiniLM on tweets); for {modality} it is a guess "
            "until a study of its own exists: compare with --strategy head-only / partial / full"
        )
    strategy = row["strategy"]
    if memory is not None:
        for fallback in ("lora", "head-only"):
            need = model_params * BYTES_PER_PARAM[strategy] + ACTIVATION_BYTES
            if need <= memory * MEMORY_HEADROOM:
                break
            reasons.append(
                f"{strategy} needs ~{need / 2**30:.1f} GiB for a {model_params / 1e6:.0f}M-parameter "
                f"model, more than {MEMORY_HEADROOM:.0%} of the {memory / 2**30:.1f} GiB available: "
                f"stepping down to {fallback}"
            )
            strategy = fallback
    return Choice(strategy, reasons, asked="auto")


BUDGET_FORMAT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|x)\s*$")
DEFAULT_BUDGET_FULL_RUNS = 3.0  # the default budget: this many times the first full-length trained candidate
LR_STEPS = (1.0, 3.0)  # full fine-tuning raced at the default learning rate and 3x it
REDUCTION = 3  # successive halving: the top third at each rung goes on
# Successive halving's first rung, in evaluations (epochs): 3, then 9, 27. Not 1: after one epoch a
# candidate is still in its learning-rate warmup (10% of a 10-15 epoch schedule) and the strategies
# differ most in how they start (lora and partial rise later than full), so a first-epoch cut
# compares warmups, not candidates; and early stopping itself gives a run 3 evaluations to improve.
FIRST_RUNG = 3
# A candidate cut at a rung finishes anyway when its remaining epochs would cost at most this share of
# the first full-length trained candidate's run (its time per epoch so far, set-up included, times the
# epochs left): on tuxpaint-stamps (39 validation images) partial was cut at epoch 3 by 0.832 against
# full's 0.838, with 12 epochs (about 28 s) to go against full's 168 s; run to its end it scored 0.946.
CHEAP_SHARE = 0.25
# A refit this small a share of the budget runs even where the race spent all of it (a solved head's, about
# 1 s): it moves the bound by at most this much (newsgroups-fewshot: the race left 1 s of 314 s, and the
# head refit on 80 more posts would have taken 1 s).
SMALL_REFIT_SHARE = 0.05
SETTINGS = ("train.lr",)  # the config keys a candidate sets besides its strategy


def parse_budget(text: str | None) -> tuple[str, float] | None:
    """ "10m" -> ("seconds", 600); "20x" -> ("x", 20): a multiple of the head-only candidate's time."""
    if text is None:
        return None
    m = BUDGET_FORMAT.match(str(text))
    if not m:
        raise ValueError(
            f"strategy.auto_budget {text!r}: give a time (90s, 10m, 1.5h) or a multiple of one head-only run (20x)"
        )
    value, unit = float(m.group(1)), m.group(2)
    if unit == "x":
        if value < 1:
            raise ValueError(
                f"strategy.auto_budget {text!r} is too small for one candidate: the cheapest, head-only, costs 1x"
            )
        return "x", value
    seconds = value * {"s": 1, "m": 60, "h": 3600}[unit]
    if seconds < 10:
        raise ValueError(f"strategy.auto_budget {text!r} is too small for one candidate: give at least 10s")
    return "seconds", seconds


def candidates(context: ChoiceContext, seed_pick: str, memory_ok) -> tuple[list[dict], list[str]]:
    """The race's entrants, in the order they run: head-only first (cheap, and the bar the others
    must clear), then the study table's pick, then the rest. -> (candidates, why some were left out)."""
    cfg, left_out = context.cfg, []
    user_lr = cfg.train.lr is not None
    entrants: list[dict] = []
    for name, cls in STRATEGIES.items():
        if not cls.defaults or name in ("gradual", "bitfit"):  # choosers; and two the race leaves to search
            continue
        try:
            cls.check_task(context.task)
        except ValueError:
            continue
        if not memory_ok(name):
            left_out.append(f"{name} does not fit in memory")
            continue
        if name == "full" and not user_lr:
            lr = context.resolve(_with(cfg, {"strategy.name": name})).train.lr
            entrants += [{"strategy": name, "train.lr": lr * k} for k in LR_STEPS]
        else:
            entrants.append({"strategy": name})
    first = [e for e in entrants if STRATEGIES.get(e["strategy"]).uses_feature_cache]
    picked = [e for e in entrants if e["strategy"] == seed_pick and e not in first][:1]
    rest = [e for e in entrants if e not in first and e not in picked]
    return first + picked + rest, left_out


def _with(cfg, settings: dict[str, Any]):
    """A candidate's config: the user's (search's `with_params`, which adapts it to the strategy),
    without auto's own budget, with the candidate's strategy and settings."""
    from ..config import config_from_dict
    from ..search.space import with_params

    base = cfg.model_copy(deep=True)
    base.strategy.auto_budget = base.strategy.auto_refit = None  # auto's own options: no candidate takes them
    values = {"strategy.name": settings.get("strategy", settings.get("strategy.name", cfg.strategy.name))}
    values.update({k: v for k, v in settings.items() if k not in ("strategy", "strategy.name")})
    return config_from_dict(with_params(base, values), "auto candidate")


def describe_candidate(c: dict) -> str:
    extra = ", ".join(f"{k.split('.')[-1]} {v:.2g}" for k, v in c.items() if k in SETTINGS)
    return c["strategy"] + (f" ({extra})" if extra else "")


def race(context: ChoiceContext, order_hint: Choice, budget_text: str | None, reporter) -> Choice:
    """Run the candidates through successive halving; the best on validation wins."""
    import optuna

    from ..search.trial import run_trial
    from ..tasks import TASKS

    cfg = context.cfg
    budget = parse_budget(budget_text)
    task_cls = TASKS.get(cfg.task)
    metric = cfg.train.metric or task_cls.default_metric
    lower = metric in task_cls.lower_is_better
    memory, params = available_memory(), param_count(context.model_dir)

    def memory_ok(name: str) -> bool:
        return memory is None or params * BYTES_PER_PARAM.get(name, 16) + ACTIVATION_BYTES <= memory * MEMORY_HEADROOM

    entrants, left_out = candidates(context, order_hint.strategy, memory_ok)
    if not entrants:
        raise ValueError("strategy auto: no strategy applies to this task and fits in memory: " + "; ".join(left_out))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Candidates that train the backbone race through successive halving; one on cached features
    # (head-only: seconds, and its first evaluation is already its final score) stays out of the
    # rungs, which would otherwise compare its finished score with the others' first epoch.
    unraced = optuna.create_study(direction="minimize" if lower else "maximize")
    study = optuna.create_study(
        direction="minimize" if lower else "maximize",
        sampler=optuna.samplers.RandomSampler(seed=cfg.train.seed),  # samples nothing: every trial is a candidate
        pruner=(
            pruner := SparingCheapFinishes(
                optuna.pruners.SuccessiveHalvingPruner(min_resource=FIRST_RUNG, reduction_factor=REDUCTION)
            )
        ),
    )
    workdir = Path(context.workdir)
    if workdir.exists():
        shutil.rmtree(workdir)
    t_start, unit_seconds, full_seconds, table = time.perf_counter(), None, None, []

    def spent() -> float:
        return time.perf_counter() - t_start

    def limit() -> float | None:
        if budget is not None:
            kind, value = budget
            if kind == "seconds":
                return value
            return None if unit_seconds is None else value * unit_seconds
        return None if full_seconds is None else (unit_seconds or 0.0) + DEFAULT_BUDGET_FULL_RUNS * full_seconds

    def over_budget() -> str | None:
        cap = limit()
        return f"budget spent ({spent():.0f}s of {cap:.0f}s)" if cap is not None and spent() > cap else None

    reporter.info(
        f"auto: racing {len(entrants)} candidates on validation {metric} ("
        + ", ".join(describe_candidate(c) for c in entrants)
        + ")"
    )
    for i, cand in enumerate(entrants):
        cap = limit()
        if cap is not None and spent() >= cap:
            table.append({**cand, "state": "not run", "why": f"budget spent ({spent():.0f}s of {cap:.0f}s)"})
            continue
        trial_cfg = _with(cfg, {**cand, "train.keep_checkpoints": True})
        is_measured = not STRATEGIES.get(cand["strategy"]).uses_feature_cache
        target = study if is_measured else unraced
        trial = target.ask()
        t0 = time.perf_counter()
        row = dict(cand)
        try:
            if is_measured:
                allowance = None if full_seconds is None else CHEAP_SHARE * full_seconds
                pruner.watch(context.resolve(trial_cfg).train.epochs, allowance)
            value = run_trial(trial, trial_cfg, workdir / f"{i:02d}", stop=over_budget)
            target.tell(trial, value)
            row.update(state="complete", value=value)
        except optuna.TrialPruned as e:
            target.tell(trial, state=optuna.trial.TrialState.PRUNED)
            row.update(state="pruned", why=str(e) or "successive halving: not in the top third at its rung")
        except Exception as e:  # a candidate that fails is reported; the race goes on
            target.tell(trial, state=optuna.trial.TrialState.FAIL)
            row.update(state="failed", why=f"{type(e).__name__}: {e}")
        row["seconds"] = time.perf_counter() - t0
        if is_measured and pruner.spared:
            row["spared"] = (
                f"cut by successive halving at epoch {pruner.spared[0]}, finished: its remaining epochs cost under "
                f"{CHEAP_SHARE:.0%} of the first full-length run"
            )
        row.update(
            {
                k: trial.user_attrs[k]
                for k in ("epochs_run", "best_epoch", "best_train_loss", "best_validation_loss", "train_seconds")
                if k in trial.user_attrs
            }
        )
        row["run"] = str(workdir / f"{i:02d}")
        table.append(row)
        if not is_measured and unit_seconds is None and row["state"] == "complete":
            unit_seconds = row["seconds"]
        if is_measured and full_seconds is None and row["state"] == "complete":
            full_seconds = row["seconds"]
        shown = f"{metric} {row['value']:.4f}" if "value" in row else f"{row['state']}: {row.get('why', '')}"
        reporter.info(
            f"  auto candidate {i + 1}/{len(entrants)} {describe_candidate(cand)}: {shown} ({row['seconds']:.0f}s)"
        )
    done = [r for r in table if r["state"] == "complete"]
    if not done:
        raise RuntimeError(
            "strategy auto: no candidate finished: "
            + "; ".join(f"{describe_candidate(r)}: {r.get('why')}" for r in table)
        )
    ranked = rank_candidates(done, lower)
    best, runner_up = ranked[0], ranked[1:2]
    best["winner"] = True
    tied = bool(runner_up) and runner_up[0]["value"] == best["value"]
    reasons = [
        f"best validation {metric} {best['value']:.4f} of {len(done)} finished candidates"
        + (f" (next: {describe_candidate(runner_up[0])} {runner_up[0]['value']:.4f})" if runner_up else "")
        + (
            f"; tied on {metric}, so the lower validation loss decided ({best['best_validation_loss']:.4f} against "
            f"{runner_up[0]['best_validation_loss']:.4f})"
            if tied
            and best.get("best_validation_loss") is not None
            and runner_up[0].get("best_validation_loss") is not None
            else ""
        ),
        f"race: {len(table)} candidates, {sum(r['state'] == 'pruned' for r in table)} stopped by successive "
        f"halving, {spent():.0f}s" + (f", budget {limit():.0f}s" if limit() is not None else ""),
        *left_out,
    ]
    refit, why_not = plan_refit(cfg, context, best, limit(), spent())
    reasons.insert(1, why_not or describe_refit(best, refit, metric))
    # Keep only the winner's checkpoints (the run resumes from them, unless it trains again on
    # training + validation); the candidates' folders go.
    ckpt, kept = Path(best["run"]) / "checkpoints", None
    if ckpt.is_dir() and refit is None:
        kept = workdir.with_name(workdir.name + ".winner")
        shutil.rmtree(kept, ignore_errors=True)
        kept.mkdir(parents=True)
        shutil.move(str(ckpt), str(kept / "checkpoints"))
        kept = kept / "checkpoints"
    shutil.rmtree(workdir, ignore_errors=True)
    settings = {k: v for k, v in best.items() if k in SETTINGS}
    for r in table:
        r.pop("run", None)
    return Choice(
        best["strategy"],
        reasons,
        asked="auto",
        settings={**settings, **(refit["settings"] if refit else {})},
        candidates=table,
        checkpoints=kept,
        refit=refit is not None,
        refit_train_loss=refit.get("race_train_loss") if refit and refit.get("epochs") else None,
        record={
            "metric": metric,
            "race_seconds": spent(),
            "budget_seconds": limit(),
            "table_pick": order_hint.strategy,
            "refit": {k: v for k, v in refit.items() if k != "settings"} if refit else None,
        },
    )


class SparingCheapFinishes:
    """Successive halving that spares a candidate whose remaining epochs cost little (CHEAP_SHARE).
    An Optuna pruner (prune(study, trial) -> bool) wrapping another; `watch` starts each candidate."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.epochs: int | None = None
        self.allowance: float | None = None
        self.started = time.perf_counter()
        self.spared: list[int] = []  # the epochs at which the inner pruner's cut was overruled

    def watch(self, epochs: int | None, allowance: float | None) -> None:
        """A new candidate starts now, for `epochs`; it is spared where finishing costs <= `allowance` s."""
        self.epochs, self.allowance, self.started, self.spared = epochs, allowance, time.perf_counter(), []

    def prune(self, study, trial) -> bool:
        if not self.inner.prune(study, trial):
            return False
        step = trial.last_step
        if self.allowance is None or not self.epochs or not step:
            return True
        remaining = (time.perf_counter() - self.started) / step * max(self.epochs - step, 0)
        if remaining > self.allowance:
            return True
        self.spared.append(step)
        return False


def rank_candidates(done: list[dict], lower: bool) -> list[dict]:
    """Finished candidates, best first: by validation score; a tie (on a small validation split, accuracy
    or F1 ties often: a handful of examples apart) goes to the lower validation loss at the same epoch,
    which moves with every example's confidence (speech recognition breaks WER ties between epochs so);
    a candidate without one ranks last among those tied; then the order they ran in."""

    def key(r: dict) -> tuple[float, float]:
        loss = r.get("best_validation_loss")
        loss = float("inf") if loss is None else float(loss)
        return (r["value"], loss) if lower else (-r["value"], loss)

    return sorted(done, key=key)  # stable: a full tie keeps the running order


def plan_refit(cfg, context: ChoiceContext, best: dict, cap: float | None, spent: float) -> tuple[dict | None, str]:
    """Whether the winner trains again on training + validation rows, and for how long: as many
    epochs as it took to score best in the race (on 1 + n_val/n_train times the rows: the same
    passes over more data, as a model refit after cross-validation is). The race selected on
    validation; the rows it held out then add to what the kept model learns from, as the baselines'
    regressions always had them (bench/quality.py, held out: digits 0.959 refit against 0.940 for full
    on the training split, mnist-5k 0.919 against 0.897, newsgroups-fewshot's solved head 0.690 against
    0.677; on tuxpaint-stamps, 39 validation images, the refit full scored 0.743). -> (the plan:
    settings, rows, epochs, the race's validation value and the estimated seconds; or None and why not)."""
    n_train, n_val = len(context.labels or ()), context.validation_size or 0
    if cfg.strategy.auto_refit is False:
        return None, "no refit (strategy.auto_refit false): the kept model is the race's, fitted on the training split"
    if not n_train or not n_val:
        return None, "no refit: no validation rows to add"
    epochs = int(best.get("best_epoch") or best.get("epochs_run") or 1)
    run_epochs = max(int(best.get("epochs_run") or epochs), 1)
    # what the refit adds: its training (the run loads, encodes, scores and saves its model either way)
    trained = best.get("train_seconds") or best["seconds"]
    estimate = trained * min(epochs / run_epochs, 1.0) * (n_train + n_val) / n_train
    if cap is not None and spent + estimate > cap and estimate > SMALL_REFIT_SHARE * cap:
        return None, (
            f"no refit: the race left {max(cap - spent, 0):.0f}s of its {cap:.0f}s budget and refitting "
            f"{describe_candidate(best)} on training + validation would train for about {estimate:.0f}s; the kept "
            "model is the race's, fitted on the training split"
        )
    # a fixed schedule, kept at its end; a strategy that has no epochs (a solved head) drops those keys
    train = {"epochs": epochs, "early_stopping_patience": None, "keep": "last"}
    tree = {"strategy": cfg.strategy.model_dump(exclude={"name"}), "train": train}
    train = STRATEGIES.get(best["strategy"]).adapt(tree)["train"]
    return {
        "settings": {f"train.{k}": v for k, v in train.items()},
        "rows": n_train + n_val,
        "epochs": train.get("epochs"),
        "race_validation": best["value"],
        "race_train_loss": best.get("best_train_loss"),  # at that epoch (Choice.refit_train_loss)
        "estimated_seconds": estimate,
    }, ""


def describe_refit(best: dict, refit: dict, metric: str) -> str:
    how = (
        f"for {refit['epochs']} epoch(s), those at which it scored best"
        if refit["epochs"]
        else "(its regularisation cross-validated anew)"
    )
    return (
        f"refit: {describe_candidate(best)} trains again on training + validation ({refit['rows']} rows) "
        f"{how}, about {refit['estimated_seconds']:.0f}s of training; "
        f"the kept model's validation scores are therefore in-sample, its out-of-sample validation {metric} is "
        f"the race's {refit['race_validation']:.4f}"
    )


@STRATEGIES.register("auto")
class AutoStrategy(StrategyDefaults):
    """Not a way of training but a choice of one, by measurement: `pick` races the candidates and
    names the winner (and its learning rate), with every candidate's validation score and cost. It
    accepts every strategy's options (they apply to the candidates they belong to)."""

    name = "auto"
    defaults: dict[str, float] = {}  # never trains itself
    options: tuple[str, ...] = ()  # filled in by strategies/__init__ once every strategy is registered
    supports_layer_decay = True

    @classmethod
    def check_task(cls, task_cls) -> None:
        require_pooled_features(cls.name, task_cls, "its race starts from a head on pooled features")

    @classmethod
    def pick(cls, context: ChoiceContext) -> Choice:
        hint = choose(context.labels, param_count(context.model_dir), available_memory(), context.modality)
        if context.cfg is None or context.workdir is None or context.resolve is None:
            raise ValueError("strategy auto races candidate runs: it needs the run's config, a work folder and resolve")
        from ..progress import Reporter

        return race(context, hint, context.cfg.strategy.auto_budget, context.reporter or Reporter(True))

    def prepare(self, model: nn.Module) -> ParamCounts:
        raise RuntimeError("strategy auto trains nothing itself: call AutoStrategy.pick and use the strategy it names")

    def param_groups(self, model: nn.Module, train_cfg: Any) -> list[dict[str, Any]]:
        raise RuntimeError("strategy auto trains nothing itself")
