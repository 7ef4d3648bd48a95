"""speech-recognition with Whisper: labels and prompt, loss masking, training, evaluation by
generation, save / reload / predict and `transformers.pipeline` parity, on a tiny random Whisper
with a real Whisper tokenizer and synthetic speech (speech_helpers.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from speech_helpers import SENTENCES, make_asr_whisper, say, speech_config, write_speech_table

import tunesmith
from tunesmith.config import config_from_dict
from tunesmith.errors import ConfigError, DataError
from tunesmith.tasks.base import TaskModel


@pytest.fixture(scope="module")
def whisper_en(tmp_path_factory) -> Path:
    return make_asr_whisper(tmp_path_factory.mktemp("models") / "whisper-en")


@pytest.fixture(scope="module")
def whisper_multi(tmp_path_factory) -> Path:
    return make_asr_whisper(tmp_path_factory.mktemp("models") / "whisper-multi", multilingual=True)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("speech")
    return write_speech_table(d, SENTENCES * 2, "train.csv"), write_speech_table(d, SENTENCES[:4], "val.csv", seed=50)


def _task(folder: Path, **speech):
    from types import SimpleNamespace

    from tunesmith.modalities.speech import SpeechModality
    from tunesmith.testing import task_and_model

    task, model = task_and_model(
        "speech-recognition",
        folder,
        SimpleNamespace(labels=None, texts=[], seconds=None),
        speech={"max_new_tokens": 8, **speech},
        train={"dropout": 0.0},
    )
    return task, model, SpeechModality()


def _rows(task, inputs, table: Path):
    from tunesmith.config import DataConfig

    ex = inputs.read(str(table), DataConfig(text_column="transcript"), "data")
    return ex, task.encode(ex)


def test_english_only_labels_have_no_language_tokens_and_one_start_token(whisper_en, clips):
    task, _, inputs = _task(whisper_en)
    tok = task.tokenizer
    sot, eot, nots = tok.convert_tokens_to_ids(["<|startoftranscript|>", "<|endoftext|>", "<|notimestamps|>"])
    assert task.prompt_ids == [sot, nots]
    _, rows = _rows(task, inputs, clips[1])
    text_ids = tok(" Yes go.", add_special_tokens=False).input_ids
    assert rows[0]["labels"] == text_ids + [eot]
    batch = task.collate(rows[:2])
    dec, labels = batch["decoder_input_ids"][0].tolist(), batch["labels"][0].tolist()
    n = len(text_ids)
    # decoder reads <|startoftranscript|> <|notimestamps|> text; predicts text <|endoftext|> (prompt masked)
    assert dec[: 2 + n] == [sot, nots] + text_ids and dec.count(sot) == 1
    assert labels[: 1 + n + 1] == [-100] + text_ids + [eot]
    assert all(x == -100 for x in labels[2 + n :])  # padding of the shorter row never counts
    assert batch["input_features"].shape == (2, 16, 100)
    with pytest.raises(ConfigError, match="English-only"):
        _task(whisper_en, language="de")


def test_multilingual_prompt_comes_from_the_config_or_defaults_to_english(whisper_multi):
    task, _, _ = _task(whisper_multi, language="german")
    ids = task.tokenizer.convert_tokens_to_ids(
        ["<|startoftranscript|>", "<|de|>", "<|transcribe|>", "<|notimestamps|>"]
    )
    assert task.prompt_ids == ids and task.generation_config.language == "de"
    assert task.normaliser == "basic"
    default, _, _ = _task(whisper_multi)
    assert default.prompt_ids[1] == task.tokenizer.convert_tokens_to_ids("<|en|>") and default.normaliser == "english"
    with pytest.raises(ConfigError, match="no language token"):
        _task(whisper_multi, language="fr")


def test_generate_uses_the_prompt_the_labels_were_built_with(whisper_multi, clips):
    task, model, inputs = _task(whisper_multi, language="de")
    _, rows = _rows(task, inputs, clips[1])
    batch = task.collate(rows[:2])
    out = model.backbone.encoder.generate(
        input_features=batch["input_features"], attention_mask=batch["frame_mask"], return_dict_in_generate=True
    )
    # transformers keeps the forced prompt at the start of the sequences it returns
    seq = out.sequences if hasattr(out, "sequences") else out
    assert seq[0, :4].tolist() == task.prompt_ids


def test_loss_is_the_mean_over_real_tokens_only(whisper_en, clips):
    """Each row's loss computed alone, token-weighted, equals the padded batch loss."""
    task, model, inputs = _task(whisper_en)
    model.eval()
    _, rows = _rows(task, inputs, clips[0])
    pick = [rows[0], rows[6]]  # two and three words: different label lengths
    assert len(pick[0]["labels"]) != len(pick[1]["labels"])
    with torch.no_grad():
        batch_loss = float(task.compute_loss(model, task.collate(pick))["loss"])
        sums, count = 0.0, 0
        for r in pick:
            n = len(r["labels"])
            sums += float(task.compute_loss(model, task.collate([r]))["loss"]) * n
            count += n
    assert batch_loss == pytest.approx(sums / count, rel=1e-5)


def test_spec_augment_masks_training_inputs_only(whisper_en, clips):
    task, model, inputs = _task(whisper_en)
    _, rows = _rows(task, inputs, clips[1])
    batch = task.collate(rows[:2])
    from tunesmith.models.speech_backbone import load_speech_backbone

    masked = load_speech_backbone(
        whisper_en,
        options={
            "spec_augment": True,
            "mask_time_prob": 0.5,
            "mask_time_length": 5,
            "mask_feature_prob": 0.0,
            "mask_feature_length": 4,
        },
    )
    assert masked.encoder.config.apply_spec_augment and masked.encoder.config.mask_time_prob == 0.5
    enc = masked.encoder.model.encoder
    torch.manual_seed(0)
    masked.encoder.model.train()
    feats = batch["input_features"]
    train_view = masked.encoder.model._mask_input_features(feats.clone(), attention_mask=batch["frame_mask"])
    assert (train_view == 0).any() and not torch.equal(train_view, feats)
    masked.encoder.model.eval()
    assert torch.equal(masked.encoder.model._mask_input_features(feats.clone()), feats)
    assert enc is masked.encoder.model.encoder


def test_train_evaluate_save_reload_predict_and_pipeline_agree(whisper_en, clips, tmp_path):
    from transformers import pipeline

    train, val = clips
    cfg = speech_config(whisper_en, train, tmp_path / "run", val, epochs=3)
    res = tunesmith.finetune(cfg, quiet=True)
    m = json.loads((res.out / "metrics.json").read_text())
    # trained: the validation loss fell from the pre-trained model's; WER/CER computed by generation
    assert m["validation"]["loss"] < m["before_finetuning"]["validation"]["loss"]
    assert {"wer", "cer", "n", "words"} <= set(m["validation"]) and m["validation"]["n"] == 4
    assert [h["wer"] for h in m["history"]] and m["run"]["layout"] == "native"
    assert m["best_evaluation"]["wer"] == min(h["wer"] for h in m["history"])
    # reload: same scores on the same clips; the base model's before-score comes along
    again = tunesmith.evaluate(res.out, val, text_column="transcript")
    assert again["wer"] == res.metrics["wer"] and again["cer"] == res.metrics["cer"]
    assert again["base_model"]["wer"] == m["before_finetuning"]["validation"]["wer"]
    # predict == transformers.pipeline on the saved folder (greedy, fixed max_new_tokens from generation_config)
    wavs = sorted(val.parent.glob("val-*.wav"))
    predicted = tunesmith.load(res.out).predict([str(p) for p in wavs])
    asr = pipeline("automatic-speech-recognition", model=str(res.out), device="cpu")
    from tunesmith.data.audio import load_audio

    raw = [asr(load_audio(str(p), p.name, 16000))["text"] for p in wavs]
    assert all(raw)  # text was generated (a tiny model's garbage, maybe only spaces): the comparison is not vacuous
    for text, r in zip(raw, predicted):
        assert set(r) == {"input", "text"} and text.strip() == r["text"]
    report = (res.out / "report.html").read_text()
    assert "WER before" in report and "Worst validation utterances" in report
    card = (res.out / "README.md").read_text()
    assert "automatic-speech-recognition" in card and "WER before" in card
    assert (res.out / "preprocessor_config.json").is_file() and (res.out / "generation_config.json").is_file()


def test_multilingual_run_saves_its_language_for_pipeline(whisper_multi, clips, tmp_path):
    train, val = clips
    cfg = speech_config(whisper_multi, train, tmp_path / "de", val, epochs=1)
    cfg["speech"]["language"] = "de"
    res = tunesmith.finetune(cfg, quiet=True)
    gen = json.loads((res.out / "generation_config.json").read_text())
    assert gen["language"] == "de" and gen["task"] == "transcribe" and gen["max_new_tokens"] == 12
    assert gen.get("num_beams", 1) == 1 and not gen.get("do_sample", False)
    from transformers import pipeline

    wav = sorted(val.parent.glob("val-*.wav"))[0]
    from tunesmith.data.audio import load_audio

    text = pipeline("automatic-speech-recognition", model=str(res.out))(load_audio(str(wav), "w", 16000))["text"]
    assert text.strip() == tunesmith.load(res.out).predict(str(wav))[0]["text"]


def test_speech_config_errors():
    base = {"task": "speech-recognition", "data": {"train": "x.csv"}}
    with pytest.raises(ConfigError, match="head-only"):
        config_from_dict({**base, "strategy": {"name": "head-only"}})
    with pytest.raises(ConfigError, match="not scored"):
        config_from_dict({**base, "train": {"metric": "accuracy"}})
    with pytest.raises(ConfigError, match="data.guard"):
        config_from_dict({"data": {"guard": "g.csv"}})
    with pytest.raises(ConfigError, match="speech"):
        config_from_dict({"speech": {"language": "de"}})
    assert config_from_dict(base).resolved().train.metric == "wer"
    assert config_from_dict({}).resolved().train.metric == "macro_f1"


def test_clip_longer_than_the_window_is_an_error_naming_it(whisper_en, tmp_path):
    import soundfile as sf

    task, _, inputs = _task(whisper_en)
    long = tmp_path / "long.wav"
    sf.write(long, np.concatenate([say("yes go"), say("no stop"), say("up down")]), 16000)
    (tmp_path / "t.csv").write_text(f"audio,transcript\n{long.name},yes go no stop up down\n")
    with pytest.raises(DataError, match="long.wav.*at most 1 s"):
        _rows(task, inputs, tmp_path / "t.csv")


def test_whisper_layer_groups_cover_the_model_bottom_to_top(whisper_en):
    from tunesmith.strategies.base import set_trainable_groups

    _, model, _ = _task(whisper_en)
    groups = model.backbone.layer_groups()
    assert [g for g, _ in groups] == [
        "encoder.stem",
        "encoder.layer.0",
        "encoder.layer.1",
        "encoder.norm",
        "decoder.embeddings",
        "decoder.layer.0",
        "decoder.layer.1",
        "top",
    ]
    names = [n for _, ns in groups for n in ns]
    params = {n for n, _ in model.backbone.named_parameters()}
    assert len(names) == len(set(names)) and set(names) == params
    assert "encoder.model.encoder.embed_positions.weight" not in params  # fixed sinusoids: a buffer
    assert {n for n, _ in model.head.named_parameters()} == {"weight", "bias"}  # the decoder's final norm
    # freezing the whole encoder: unfreeze the decoder's groups (positions, layers, top) from the top
    set_trainable_groups(model, 4)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and not any(".model.encoder." in n for n in trainable)
    assert {"head.weight", "head.bias", "backbone.encoder.model.decoder.embed_tokens.weight"} <= trainable


def test_training_runs_through_the_task_model_forward(whisper_en, clips, tmp_path, monkeypatch):
    """The loss is computed from model(batch), so what wraps the TaskModel (DDP's gradient sync,
    accelerate's autocast) sees every training step, as for every other task."""
    calls = []
    forward = TaskModel.forward

    def spy(self, batch):
        if self.training:
            calls.append(sorted(batch))
        return forward(self, batch)

    monkeypatch.setattr(TaskModel, "forward", spy)
    train, val = clips
    res = tunesmith.finetune(speech_config(whisper_en, train, tmp_path / "run", val, epochs=1), quiet=True)
    steps = res.history[-1]["step"]
    assert len(calls) == steps and all("decoder_input_ids" in keys for keys in calls)


def test_beam_search_is_saved_for_pipeline_and_decodes_the_same(whisper_en, clips, tmp_path):
    from transformers import pipeline

    from tunesmith.data.audio import load_audio

    train, val = clips
    cfg = speech_config(whisper_en, train, tmp_path / "run", val, epochs=1)
    cfg["speech"]["num_beams"] = 3
    res = tunesmith.finetune(cfg, quiet=True)
    gen = json.loads((res.out / "generation_config.json").read_text())
    assert gen["num_beams"] == 3 and not gen.get("do_sample", False)
    wavs = sorted(val.parent.glob("val-*.wav"))
    predicted = tunesmith.load(res.out).predict([str(p) for p in wavs])
    asr = pipeline("automatic-speech-recognition", model=str(res.out), device="cpu")
    raw = [asr(load_audio(str(p), p.name, 16000))["text"].strip() for p in wavs]
    assert all(raw) and raw == [r["text"] for r in predicted]
    # the run's own scores come from the same beam search
    assert tunesmith.evaluate(res.out, val, text_column="transcript", compare_base=False)["wer"] == res.metrics["wer"]


def test_beam_search_is_refused_for_ctc(tmp_path, clips):
    from speech_helpers import make_ctc_wav2vec2

    train, val = clips
    cfg = speech_config(make_ctc_wav2vec2(tmp_path / "ctc"), train, tmp_path / "run", val, epochs=1)
    cfg["speech"]["num_beams"] = 2
    with pytest.raises(ConfigError, match="num_beams 2: beam search is for Whisper"):
        tunesmith.finetune(cfg, quiet=True)
