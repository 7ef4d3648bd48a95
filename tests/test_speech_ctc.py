"""speech-recognition with a CTC head on a wav2vec2-style encoder: a character vocabulary from the
training transcripts, loss that falls until a memorised utterance decodes exactly, and a run folder
that `transformers.pipeline` transcribes the same way tunesmith does."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import torch
from speech_helpers import SENTENCES, make_ctc_wav2vec2, speech_config, write_speech_table

import tunesmith
from tunesmith.config import DataConfig
from tunesmith.modalities.speech import SpeechModality
from tunesmith.tasks.speech_recognition import build_ctc_vocab, ctc_tokenizer
from tunesmith.testing import task_and_model


@pytest.fixture(scope="module")
def w2v(tmp_path_factory) -> Path:
    return make_ctc_wav2vec2(tmp_path_factory.mktemp("models") / "w2v")


def test_vocabulary_is_built_from_the_transcripts():
    vocab = build_ctc_vocab(["Yes go.", "no  STOP"])
    assert list(vocab)[:3] == ["<pad>", "<unk>", "|"] and vocab["<pad>"] == 0
    assert set(vocab) - {"<pad>", "<unk>", "|"} == set("yesgo.nstp")
    tok = ctc_tokenizer(vocab)
    ids = tok("yes go.").input_ids
    assert ids == [vocab[c] for c in "yes"] + [vocab["|"]] + [vocab[c] for c in "go."]
    # greedy CTC decoding: repeats merge, blanks (<pad>) drop, "|" is a space
    y, e, s, g, o, bar = (vocab[c] for c in "yesgo|")
    assert tok.decode([y, y, 0, e, s, s, bar, 0, g, 0, o, o]) == "yes go"
    assert tok.decode([vocab["<unk>"]]) == "<unk>"  # unseen characters cannot be written


def test_loss_falls_and_a_memorised_utterance_decodes_exactly(w2v, tmp_path):
    table = write_speech_table(tmp_path, ["yes go", "no stop"], "mem.csv")
    ex = SpeechModality().read(str(table), DataConfig(text_column="transcript"), "data")
    task, model = task_and_model("speech-recognition", w2v, ex, train={"dropout": 0.0})
    rows = task.encode(ex)
    batch = task.collate(rows)
    assert batch["labels"].shape[0] == 2 and (batch["labels"] == -100).any()  # padded labels are ignored
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(80):
        model.train()
        loss = task.compute_loss(model, batch)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 20
    ev = task.evaluate(model, rows, 8, contextlib.nullcontext)
    assert ev.predictions == ["yes go.", "no stop."] and ev.metrics["wer"] == 0.0 and ev.metrics["cer"] == 0.0


@pytest.mark.parametrize("norm", ["layer", "group"])
def test_ctc_run_folder_loads_with_pipeline_and_predicts_the_same(norm, w2v, tmp_path):
    """Layer-norm encoders batch with attention masks; group-norm ones (wav2vec2-base style) are
    transcribed clip by clip, so both match pipeline(), which runs each clip alone."""
    from transformers import AutoModelForCTC, Wav2Vec2Processor, pipeline

    from tunesmith.data.audio import load_audio

    if norm == "group":
        w2v = make_ctc_wav2vec2(tmp_path / "w2v-group", norm="group")

    train = write_speech_table(tmp_path / "d", SENTENCES * 2, "train.csv")
    val = write_speech_table(tmp_path / "d", SENTENCES[:3], "val.csv", seed=40)
    cfg = speech_config(w2v, train, tmp_path / "run", val, epochs=2, batch_size=8)
    res = tunesmith.finetune(cfg, quiet=True)
    out = res.out
    vocab = json.loads((out / "vocab.json").read_text())
    assert set(vocab) >= {"<pad>", "<unk>", "|", "y", "."}
    assert type(AutoModelForCTC.from_pretrained(out)).__name__ == "Wav2Vec2ForCTC"
    assert Wav2Vec2Processor.from_pretrained(out).tokenizer.get_vocab() == vocab
    meta = json.loads((out / "tunesmith.json").read_text())
    assert meta["task_state"]["kind"] == "ctc" and meta["layout"] == "native"
    again = tunesmith.evaluate(out, val, text_column="transcript")
    assert again["wer"] == res.metrics["wer"] and again["base_model"] is None
    wavs = sorted(val.parent.glob("val-*.wav"))
    predicted = tunesmith.load(out).predict([str(p) for p in wavs])
    assert any(r["text"] for r in predicted)  # not a vacuous comparison of empty strings
    asr = pipeline("automatic-speech-recognition", model=str(out))
    for p, r in zip(wavs, predicted):
        assert asr(load_audio(str(p), p.name, 16000))["text"].strip() == r["text"]


def test_a_clip_too_short_for_its_transcript_is_an_error_naming_it(w2v, tmp_path):
    import soundfile as sf
    from speech_helpers import say

    from tunesmith.errors import DataError

    sf.write(tmp_path / "short.wav", say("go")[:1600], 16000)  # 0.1 s: 19 CTC frames
    (tmp_path / "t.csv").write_text("audio,transcript\nshort.wav,this transcript is far too long for the clip\n")
    ex = SpeechModality().read(str(tmp_path / "t.csv"), DataConfig(text_column="transcript"), "data")
    task, _ = task_and_model("speech-recognition", w2v, ex)
    with pytest.raises(DataError, match="short.wav.*too short"):
        task.encode(ex)
