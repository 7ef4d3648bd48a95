"""README.md model card: what someone who finds the folder needs to trust it and load it.

The card is honest about the format. A mean-pooled BERT saved as XLM says why and where the
pipeline refuses (batches). A folder saved in tunesmith's own layout (a pooling with no
transformers-native head, e.g. mean pooling) cannot be opened by ``transformers.pipeline``; the
card says so and names the nearest standard format, rather than letting a user discover it by a
stack trace, and rather than tunesmith quietly switching pooling to fit a format.
"""
from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any

import yaml

from ..config import RunConfig


def _cell(value: Any) -> str:
    # Labels are user data; a stray pipe or newline would break the Markdown table.
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _results(metrics: dict[str, Any]) -> list[str]:
    lines = ["| split | examples | accuracy | macro-F1 | loss |", "|---|---:|---:|---:|---:|"]
    for split in ("validation", "test"):
        m = metrics.get(split)
        if m:
            lines.append(f"| {split} | {_fmt(m.get('n'))} | {_fmt(m.get('accuracy'))} | "
                         f"{_fmt(m.get('macro_f1'))} | {_fmt(m.get('loss'))} |")
    for split in ("validation", "test"):
        m = metrics.get(split)
        if m and m.get("per_class"):
            lines += ["", f"Per class ({split}):", "",
                      "| label | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
            lines += [f"| {_cell(label)} | {_fmt(v.get('precision'))} | {_fmt(v.get('recall'))} | "
                      f"{_fmt(v.get('f1'))} | {_fmt(v.get('support'))} |" for label, v in m["per_class"].items()]
    return lines


def _how_to_load(name: str, layout: str, pooling: str, task: str = "text-classification") -> list[str]:
    example = {"text-classification": '"an example text"', "audio-classification": '"clip.wav"'}.get(task, '"image.png"')
    lines = ["```python", "import tunesmith", "",
             f"predictor = tunesmith.load({json.dumps(name)})",
             f"print(predictor.predict([{example}]))", "```", "",
             "From the command line:", "", "```bash",
             f"tunesmith predict {shlex.quote(name)} {example if task == 'text-classification' else example.strip(chr(34))}",
             "```", ""]
    if layout in ("native", "xlm-mean"):
        lines += [f"This folder is also a standard transformers {task} checkpoint:", "",
                  "```python", "from transformers import pipeline", "",
                  f'classifier = pipeline("{task}", model={json.dumps(name)})',
                  f"print(classifier({example}))", "```", ""]
    if layout == "xlm-mean":
        lines += [f"**Note:** this BERT model pools token states with `{pooling}` pooling, and transformers' "
                  "BERT classification head cannot mean-pool. The folder is therefore saved as the "
                  "equivalent `XLMForSequenceClassification` (same encoder maths, mean pooling, linear "
                  "head; scores match tunesmith to ~1e-7). XLM's mean counts padding, so the saved "
                  "tokenizer has no pad token and `pipeline(..., batch_size>1)` is refused: call the "
                  "pipeline one text at a time (its default) and do not set a pad token on it. For "
                  "batched inference use `tunesmith.load`, which masks padding correctly.", ""]
    elif layout == "lora-adapter":
        lines += ["**Note:** this folder holds LoRA adapters and the task head (a few MB); the base model "
                  "is read from its own folder, checked by fingerprint. For plain weights that load with "
                  "transformers alone (no peft), merge them; the export checks merged against unmerged "
                  "logits:", "", "```bash",
                  f"tunesmith export {shlex.quote(name)} --merge --out {shlex.quote(name + '-merged')}",
                  "```", ""]
    elif layout == "tunesmith" and task == "audio-classification":
        lines += ["**Note:** this model averages the encoder's states over the frames that hold audio only, "
                  "and no transformers class computes exactly that for this encoder: for Whisper, "
                  "`WhisperForAudioClassification` averages over the whole padded 30 s window (a 1 s clip "
                  "would be 29 parts silence), so it would predict differently, and tunesmith refuses to "
                  "silently switch pooling to fit a format. `transformers.pipeline` therefore "
                  "cannot load this folder; use `tunesmith.load` or the CLI as above. The weights are "
                  "safetensors.", "",
                  "The nearest standard format: a wav2vec2 or HuBERT encoder (`--model` a local folder). Its "
                  "runs save as `Wav2Vec2ForSequenceClassification` / `HubertForSequenceClassification`, which "
                  "`transformers.pipeline(\"audio-classification\", ...)` loads with the same scores.", ""]
    elif layout == "tunesmith" and task != "text-classification":
        lines += ["**Note:** the base model is tunesmith's own module (transformers has no class for it), so "
                  "`transformers.pipeline` cannot load this folder; use `tunesmith.load` or the CLI as above. "
                  "The weights are safetensors.", ""]
    elif layout == "tunesmith":
        lines += [f"**Note:** this model pools token states with `{pooling}` pooling, which has no "
                  "transformers-native classification head. `transformers.pipeline` therefore cannot "
                  "load this folder as-is; use `tunesmith.load` as above. tunesmith refuses to silently "
                  "switch pooling to fit a format, because pooling changes what the model predicts.", "",
                  "The nearest standard format: train with `--set model.pooling=pooler` (BERT-family "
                  "models). That saves a folder which `transformers.pipeline(\"text-classification\", ...)` "
                  "loads directly; compare its validation scores with this run's before switching.", ""]
    return lines


def _speech_results(metrics: dict[str, Any]) -> list[str]:
    """WER/CER per split, before and after fine-tuning, and the guard set's forgetting check."""
    before = metrics.get("before_finetuning") or {}
    lines = ["| split | utterances | WER before | WER after | CER after | loss |", "|---|---:|---:|---:|---:|---:|"]
    for split in ("validation", "test"):
        m = metrics.get(split)
        if m:
            lines.append(f"| {split} | {_fmt(m.get('n'))} | {_fmt((before.get(split) or {}).get('wer'))} | "
                         f"{_fmt(m.get('wer'))} | {_fmt(m.get('cer'))} | {_fmt(m.get('loss'))} |")
    g = metrics.get("guard")
    if g:
        lines.append(f"| guard | {_fmt(g['after'].get('n'))} | {_fmt(g['wer_before'])} | {_fmt(g['wer_after'])} | "
                     f"{_fmt(g['after'].get('cer'))} | {_fmt(g['after'].get('loss'))} |")
        verdict = (f"**Warning:** WER on the guard set (`{_cell(g['source'])}`, general speech the model must not "
                   f"forget) rose by {g['wer_increase']:+.4f}, more than the allowed {g['max_wer_increase']:g}: this "
                   "model has forgotten some of what it knew." if g["forgetting"] else
                   f"Guard set (`{_cell(g['source'])}`, general speech the model must not forget): WER changed by "
                   f"{g['wer_increase']:+.4f} (allowed increase {g['max_wer_increase']:g}).")
        lines += ["", verdict]
    lines += ["", "WER and CER are corpus-level (edits / reference words or characters), after the model's text "
              "normaliser (Whisper's English normaliser for English, its basic normaliser otherwise); \"before\" "
              "is the pre-trained model on the same clips."]
    return lines


def _speech_how_to_load(name: str, speech: dict[str, Any]) -> list[str]:
    return ["```python", "import tunesmith", "", f"predictor = tunesmith.load({json.dumps(name)})",
            'print(predictor.predict(["clip.wav"]))  # [{"input": "clip.wav", "text": "..."}]', "```", "",
            "From the command line:", "", "```bash", f"tunesmith predict {shlex.quote(name)} clip.wav --json", "```", "",
            "This folder is a standard transformers checkpoint (greedy decoding settings in generation_config.json, "
            "so both give the same text):", "", "```python", "from transformers import pipeline", "",
            f'asr = pipeline("automatic-speech-recognition", model={json.dumps(name)})',
            'print(asr("clip.wav")["text"])', "```", ""]


def _window_line(out: Path, cfg: RunConfig) -> list[str]:
    """Whisper hears a fixed window and refuses longer clips: say how long, and whether the run chose it."""
    try:
        pre = json.loads((out / "preprocessor_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if pre.get("feature_extractor_type") != "WhisperFeatureExtractor" or not pre.get("chunk_length"):
        return []
    chosen = cfg.model.window_seconds
    return [f"- Clips longer than {pre['chunk_length']:g} s are refused, never cut"
            + (f" (`model.window_seconds: {chosen}` shortened Whisper's window to fit short clips, for less encoder work; "
               "cut longer audio into pieces)." if chosen else ": Whisper hears that window whole.")]


def _speech_card_lines(out: Path, cfg: RunConfig, metrics: dict) -> list[str]:
    run, params, train = metrics.get("run", {}), metrics.get("params", {}), metrics.get("train", {})
    speech = run.get("speech") or {}
    strategy = run.get("strategy", cfg.strategy.name)
    front = {"library_name": "transformers", "pipeline_tag": "automatic-speech-recognition",
             "base_model": cfg.model.name, "tags": ["tunesmith", cfg.task, f"strategy-{strategy}"]}
    if speech.get("language"):
        front["language"] = [speech["language"]]
    d, t = cfg.data, cfg.train
    kind = {"seq2seq": "encoder-decoder (Whisper): text generated token by token after the prompt "
                       f"{speech.get('prompt_ids')}",
            "ctc": "encoder + CTC head over a character vocabulary built from the training transcripts "
                   "(vocab.json)"}.get(speech.get("kind"), "")
    lines = [
        "---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "",
        f"# {out.name}", "", "A speech recognition model fine-tuned with tunesmith.", "",
        "## Model description", "",
        f"- Base model: `{cfg.model.name}`", f"- Kind: {kind}",
        f"- Language: `{speech.get('language')}`", "",
        "## Training data", "",
        f"- Training file: `{d.train}` (transcripts in column `{d.text_column}`)",
        f"- Validation: `{d.validation}`" if d.validation
        else f"- Validation: a random {d.validation_split:g} split of the training file (seed {d.split_seed})",
        f"- Test file: `{d.test}`" if d.test else "- Test file: none",
        f"- Guard set: `{d.guard}`" if d.guard else "- Guard set: none (give --guard-data to check forgetting)",
        f"- Utterances processed (all epochs): {_fmt(train.get('samples'))}", "",
        "## Training procedure", "",
        f"- Strategy: `{strategy}`; trainable parameters: {_fmt(params.get('trainable'))} of "
        f"{_fmt(params.get('total'))}" + ("; LoRA adapters merged into the saved weights"
                                         if strategy == "lora" else ""),
        f"- Epochs: {t.epochs}; learning rate: {t.lr}; batch size: {t.batch_size}"
        + (f" x {t.grad_accum} accumulated" if t.grad_accum > 1 else ""),
        f"- SpecAugment: {'on' if cfg.speech.spec_augment else 'off'}; precision: {run.get('precision', t.precision)}; "
        f"seed: {run.get('seed', t.seed)}",
        f"- Optimizer steps: {_fmt(train.get('steps'))}; best model picked by validation `{t.metric}`", "",
        "## Evaluation results", "", *_speech_results(metrics), "",
        "## How to load", "", *_speech_how_to_load(out.name, speech),
        "## Limitations", "",
        "- The scores above were measured on the clips named here; speakers, accents, microphones and "
        "vocabulary unlike them may fare worse.",
        f"- Clips are transcribed whole, up to {cfg.speech.max_new_tokens} tokens ("
        + ("greedy decoding)." if cfg.speech.num_beams == 1 else f"beam search, {cfg.speech.num_beams} beams).")
        if speech.get("kind") == "seq2seq" else "- Only characters seen in the training transcripts can be written.",
        *_window_line(out, cfg),
    ]
    warnings = metrics.get("warnings") or []
    if warnings:
        lines += ["- Warnings raised while checking the data and the guard set:"] + [f"  - {_cell(w)}" for w in warnings]
    return lines


def write_model_card(out: Path, cfg: RunConfig, metrics: dict, labels: list[str], layout: str) -> Path:
    """Write out/README.md atomically, so a crashed run never leaves a card that looks complete."""
    out = Path(out)
    if cfg.task == "speech-recognition":
        return _write_card(out, _speech_card_lines(out, cfg, metrics))
    run, params, train = metrics.get("run", {}), metrics.get("params", {}), metrics.get("train", {})
    pooling = run.get("pooling") or cfg.model.pooling or "unknown"
    strategy = run.get("strategy", cfg.strategy.name)
    front = {"library_name": "tunesmith", "pipeline_tag": cfg.task, "base_model": cfg.model.name,
             "tags": ["tunesmith", cfg.task, f"strategy-{strategy}", f"pooling-{pooling}"]}
    val, test = metrics.get("validation") or {}, metrics.get("test")
    d, t = cfg.data, cfg.train
    lines = [
        "---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "",
        f"# {out.name}", "",
        f"A {cfg.task} model fine-tuned with tunesmith.", "",
        "## Model description", "",
        f"- Base model: `{cfg.model.name}`",
        f"- Pooling: `{pooling}`",
        f"- Task: {cfg.task}",
        f"- Labels ({len(labels)}): " + ", ".join(f"`{_cell(x)}`" for x in labels), "",
        "## Training data", "",
        f"- Training file: `{d.train}`",
        f"- Validation: `{d.validation}`" if d.validation
        else f"- Validation: a stratified {d.validation_split:g} split of the training file (seed {d.split_seed})",
        f"- Test file: `{d.test}`" if d.test else "- Test file: none",
        f"- Validation examples: {_fmt(val.get('n'))}" + (f"; test examples: {_fmt(test.get('n'))}" if test else ""),
        f"- Training examples processed (all epochs): {_fmt(train.get('samples'))}", "",
        "## Training procedure", "",
        f"- Strategy: `{strategy}`" + (f", chosen by `auto`: {'; '.join(run['auto']['reasons'])}"
                                        if run.get("auto") else ""),
        f"- Trainable parameters: {_fmt(params.get('trainable'))} of {_fmt(params.get('total'))} total"
        + (f" (started at {_fmt(params['trainable_at_start'])}: gradual unfreezing)"
           if params.get("trainable_at_start") not in (None, params.get("trainable")) else ""),
        f"- Epochs: {t.epochs}; learning rate: {t.lr}; batch size: {t.batch_size}"
        + (f" x {t.grad_accum} accumulated" if t.grad_accum > 1 else ""),
        f"- Precision: {run.get('precision', t.precision)}; seed: {run.get('seed', t.seed)}",
        f"- Optimizer steps: {_fmt(train.get('steps'))}; stopped early: {'yes' if metrics.get('stopped_early') else 'no'}",
        "",
        "## Evaluation results", "", *_results(metrics), "",
        "## How to load", "", *_how_to_load(out.name, layout, pooling, cfg.task),
        "## Limitations", "",
        "- The scores above were measured on the validation and test data named here; they say little "
        f"about {'text' if cfg.task.startswith('text') else 'inputs'} unlike it (other domains, sources, "
        "conditions or label distributions).",
        "- The model only ever predicts one of the labels listed above.",
        *_window_line(out, cfg),
    ]
    warnings = metrics.get("warnings") or []
    if warnings:
        lines += ["- Warnings raised while checking the data:"] + [f"  - {_cell(w)}" for w in warnings]
    return _write_card(out, lines)


def _write_card(out: Path, lines: list[str]) -> Path:
    path = out / "README.md"
    tmp = out / f".README.md.tmp{os.getpid()}"
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
