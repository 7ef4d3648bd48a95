"""Greedy decoding settings for a chat run, scored on held-out conversations: which default to save in
the run's generation_config.json.

Every setting answers the same conversations (the last reply of each, from the conversation before
it), greedily, up to the run's max_new_tokens, in fp32 as `predict` runs, and is scored as `tunesmith
evaluate` scores replies (ChatTask.generation_scores): stop rate, reply tokens, distinct-2, chrF
against the human reply. Tune on a validation file; report on a test file nobody tuned on.

    python bench/chat_decoding.py RUN --data data/chat/val.jsonl --n 30

Results: stdout, and bench/results/chat_decoding.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

SETTINGS = {
    "plain greedy": {"repetition_penalty": 1.0},
    "no_repeat_ngram_size=3": {"no_repeat_ngram_size": 3},
    "no_repeat_ngram_size=4": {"no_repeat_ngram_size": 4},
    "repetition_penalty=1.1": {"repetition_penalty": 1.1},
    "repetition_penalty=1.2": {"repetition_penalty": 1.2},
}


def main(argv: list[str] | None = None) -> int:
    import tunesmith
    from tunesmith.modalities.conversations import read_conversations

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--data", required=True, help="conversations with replies (validation to tune, test to report)")
    ap.add_argument("--n", type=int, default=30, help="conversations answered per setting")
    ap.add_argument("--out", default=str(HERE / "results" / "chat_decoding.json"))
    args = ap.parse_args(argv)

    pred = tunesmith.load(args.run)
    task = pred.task
    examples = read_conversations(args.data, None, "data")
    rows = task.encode(examples)[: args.n]
    prompts = [r["prompt_ids"] for r in rows]
    refs = [r["reference"] for r in rows]
    base = copy.deepcopy(task.generation_config)
    results = []
    for name, change in SETTINGS.items():
        gc = copy.deepcopy(base)
        for k, v in change.items():
            setattr(gc, k, v)
        task.generation_config = gc
        t0 = time.perf_counter()
        gens = task.generate(pred.model, prompts)
        scores = task.generation_scores(gens, refs)
        scores.update(setting=name, seconds=round(time.perf_counter() - t0, 1))
        results.append(scores)
        print(
            f"{name:50} stop {scores['stop_rate']:.2f}  tokens {scores['reply_tokens']:5.1f}  "
            f"distinct-2 {scores['distinct_2'] or 0:.3f}  chrF {scores['chrf']:5.1f}  ({scores['seconds']} s)",
            flush=True,
        )
        print(f"    e.g. {gens[0][0][:150]!r}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps({"run": args.run, "data": args.data, "n": len(rows), "results": results}, indent=2),
        encoding="utf-8",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
