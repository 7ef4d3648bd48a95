"""Prepare real conversations for chat fine-tuning: the Chit Chat Challenge dataset (human-human
chit-chat between two people, 7,168 conversations; MIT licence) from the pip package
`chitchat-dataset`, read from its installed folder (never imported).

A conversation there is a list of turns, each a list of one speaker's consecutive messages. Here a
turn's messages are joined with a space; the speaker who opens the conversation is the user, the
other one the assistant. Long conversations are cut into windows of `--turns` turns, each starting
with a user turn and ending with an assistant turn. Splits are by conversation (a conversation's
windows all go to one split), deterministic under --seed. Empty turns are dropped and counted.

    python examples/prepare_chat.py --out data/chat --train 300 --val 40 --test 40 [--turns 6]

Output: OUT/{train,val,test}.jsonl, one {"messages": [{"role", "content"}, ...]} per line.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
from collections import Counter
from pathlib import Path


def corpus_path() -> Path:
    spec = importlib.util.find_spec("chitchat_dataset")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("the chitchat-dataset package is not installed: pip install chitchat-dataset")
    return Path(list(spec.submodule_search_locations)[0]) / "dataset.json"


def windows(conv: dict, turns: int, dropped: Counter) -> list[list[dict]]:
    """One conversation -> windows of alternating user / assistant messages."""
    said = []
    for turn in conv["messages"]:
        text = " ".join(" ".join(u["text"].split()) for u in turn if u.get("text", "").strip())
        if not text:
            dropped["empty turn"] += 1
            continue
        sender = turn[0]["sender"]
        if said and said[-1][0] == sender:  # the same speaker again (an empty turn between): one turn
            said[-1] = (sender, said[-1][1] + " " + text)
        else:
            said.append((sender, text))
    if len(said) < 2:
        dropped["conversation under two turns"] += 1
        return []
    msgs = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, (_, t) in enumerate(said)]
    out = []
    step = turns - turns % 2  # windows start on a user turn
    for start in range(0, len(msgs) - 1, step):
        w = msgs[start : start + step]
        if len(w) % 2:
            w = w[:-1]  # end on the assistant's reply
        if len(w) >= 2:
            out.append(w)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--train", type=int, default=300, help="training windows")
    ap.add_argument("--val", type=int, default=40, help="validation windows")
    ap.add_argument("--test", type=int, default=40, help="held-out test windows")
    ap.add_argument("--turns", type=int, default=6, help="turns per window (an even number: user, assistant, ...)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    data = json.loads(corpus_path().read_text(encoding="utf-8"))
    ids = sorted(data)
    random.Random(args.seed).shuffle(ids)
    dropped: Counter = Counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    it = iter(ids)
    for split, n in (("test", args.test), ("val", args.val), ("train", args.train)):
        rows: list[list[dict]] = []
        while len(rows) < n:
            conv_id = next(it, None)
            if conv_id is None:
                sys.exit(f"not enough conversations for {split}: {len(rows)} of {n}")
            rows += windows(data[conv_id], args.turns, dropped)
        rows = rows[:n]
        with open(out / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for w in rows:
                f.write(json.dumps({"messages": w}, ensure_ascii=False) + "\n")
        print(f"{split}: {len(rows)} conversations -> {out / f'{split}.jsonl'}")
    if dropped:
        print("dropped: " + ", ".join(f"{v} {k}" for k, v in sorted(dropped.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
