"""Audio classification end to end on tiny random Whisper and wav2vec2 encoders: features, pooling,
layer groups, training that learns tones vs noise, exact reload, pipeline parity, CLI."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
from conftest import make_tiny_wav2vec2

import tunesmith
from tunesmith.data.audio import audio_examples, load_audio


def _config(model, train, val, out, strategy="full", **train_cfg):
    # one thread: tiny models gain nothing from two, and a shared 2-core machine makes them spin
    t = {"epochs": 4, "batch_size": 8, "lr": 3e-3, "precision": "fp32", "seed": 0, "threads": 1, **train_cfg}
    if strategy == "head-only":  # its head is solved: no epochs or learning rate
        t = {k: v for k, v in t.items() if k not in ("epochs", "lr")}
    return {
        "task": "audio-classification",
        "out": str(out),
        "model": {"name": str(model)},
        "data": {"train": str(train), "validation": str(val)},
        "strategy": {"name": strategy},
        "train": t,
    }


def _model(folder, labels=("high", "low", "noise")):
    from types import SimpleNamespace

    from tunesmith.testing import task_and_model

    task, model = task_and_model(
        "audio-classification", folder, SimpleNamespace(labels=list(labels)), train={"dropout": 0.0}
    )
    return None, task.preprocessor, task, model.eval()


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from a second thread, and on a shared 2-core machine two threads spin."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_wav2vec2_layer(tmp_path_factory):
    return make_tiny_wav2vec2(tmp_path_factory.mktemp("models") / "w2v-layer", feat_extract_norm="layer")


@pytest.fixture(scope="module")
def tiny_hubert(tmp_path_factory):
    """The tiny wav2vec2's shape as a random HubertModel, with the same feature extractor."""
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    folder = tmp_path_factory.mktemp("models") / "tiny-hubert"
    torch.manual_seed(0)
    cfg = HubertConfig(
        vocab_size=16,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16, 16),
        conv_stride=(5, 4, 4),
        conv_kernel=(10, 4, 4),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        layerdrop=0.0,
        mask_time_length=4,
    )
    HubertModel(cfg).save_pretrained(folder, safe_serialization=True)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, do_normalize=True, return_attention_mask=False
    ).save_pretrained(folder)
    return folder


def test_whisper_mel_rows_rebuild_the_extractor_output_exactly(tiny_whisper, audio_folders):
    inputs, fe, task, _ = _model(tiny_whisper)
    ex = audio_examples(str(audio_folders[0])).subset(range(0, 36, 5))
    rows = task.encode(ex)
    batch = task.collate(rows)
    for i, (item, name) in enumerate(zip(ex.items, ex.names)):
        audio = load_audio(item, name, 16000)
        full = torch.from_numpy(fe(audio, sampling_rate=16000, return_tensors="np")["input_features"][0])
        assert torch.equal(batch["input_features"][i], full)  # the stored prefix + constant fill is exact
        assert rows[i]["mel"].shape[1] < full.shape[1]  # and smaller than the window
        assert int(batch["frames"][i]) == math.ceil(math.ceil(len(audio) / 160) / 2)


def test_whisper_pools_over_the_audio_frames_only(tiny_whisper, audio_folders):
    inputs, fe, task, model = _model(tiny_whisper)
    ex = audio_examples(str(audio_folders[0])).subset([0, 1])
    batch = task.collate(task.encode(ex))
    with torch.no_grad():
        hidden = model.backbone.encoder(input_features=batch["input_features"]).last_hidden_state
        feats = model.backbone.forward_features(batch)
    for i in range(2):
        n = int(batch["frames"][i])
        assert 0 < n < hidden.shape[1]
        torch.testing.assert_close(feats[i], hidden[i, :n].mean(0))
        assert not torch.allclose(feats[i], hidden[i].mean(0), atol=1e-4)  # the padded-window mean differs


@pytest.mark.parametrize("which", ["whisper", "wav2vec2", "wav2vec2-layer"])
def test_features_do_not_depend_on_the_batch(which, tiny_whisper, tiny_wav2vec2, tiny_wav2vec2_layer, audio_folders):
    folder = {"whisper": tiny_whisper, "wav2vec2": tiny_wav2vec2, "wav2vec2-layer": tiny_wav2vec2_layer}[which]
    inputs, fe, task, model = _model(folder)
    ex = audio_examples(str(audio_folders[0])).subset(range(0, 36, 4))
    rows = task.encode(ex)
    assert len({tuple(r["input_values"].shape) for r in rows}) > 1 if "input_values" in rows[0] else True
    with torch.no_grad():
        together = model(task.collate(rows))
        alone = torch.cat([model(task.collate([r])) for r in rows])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("which", ["whisper", "wav2vec2", "wav2vec2-layer"])
def test_layer_groups_cover_every_parameter_bottom_to_top(which, tiny_whisper, tiny_wav2vec2, tiny_wav2vec2_layer):
    from tunesmith.strategies.lora import default_targets

    folder = {"whisper": tiny_whisper, "wav2vec2": tiny_wav2vec2, "wav2vec2-layer": tiny_wav2vec2_layer}[which]
    _, _, _, model = _model(folder)
    groups = model.backbone.layer_groups()
    names = [n for _, ns in groups for n in ns]
    assert sorted(names) == sorted(n for n, _ in model.backbone.named_parameters())  # each exactly once
    order = [g for g, _ in groups]
    assert order[0] == "stem" and order[-2 if order[-1] == "top" else -1] == "layer.1"
    stem = dict(groups)["stem"]
    if which == "whisper":
        assert order == ["stem", "layer.0", "layer.1", "top"]
        assert all(".conv" in n for n in stem) and dict(groups)["top"] == [
            "encoder.layer_norm.weight",
            "encoder.layer_norm.bias",
        ]
        # sinusoidal positions stay fixed under every strategy: a buffer, not a parameter
        assert "encoder.embed_positions.weight" in dict(model.backbone.named_buffers())
    else:
        assert all(n.startswith("encoder.feature_extractor.") for n in stem)
        assert ("top" in order) == (which == "wav2vec2-layer")  # stable layer norm: the final norm is on top
    assert default_targets(model.backbone.encoder) == ["q_proj", "v_proj"]


@pytest.mark.parametrize("strategy", ["full", "head-only", "lora"])
def test_whisper_learns_tones_and_reloads_identically(strategy, tiny_whisper, audio_folders, tmp_path):
    train, val = audio_folders
    extra = {
        "head-only": {},
        "full": {"epochs": 6, "lr": 3e-3},
        "lora": {"epochs": 10, "lr": 1e-2},
    }[strategy]
    res = tunesmith.finetune(_config(tiny_whisper, train, val, tmp_path / "run", strategy, **extra), quiet=True)
    assert res.metrics["accuracy"] >= 0.85, res.history
    meta = json.loads((res.out / "tunesmith.json").read_text())
    assert meta["layout"] == ("lora-adapter" if strategy == "lora" else "tunesmith") and meta["pooling"] == "mean"
    assert (res.out / "preprocessor_config.json").is_file()
    again = tunesmith.evaluate(res.out, val)
    assert again["accuracy"] == res.metrics["accuracy"] and again["confusion_matrix"] == res.metrics["confusion_matrix"]
    clips = sorted(str(p) for p in val.rglob("*.*"))[::4]
    a, b = tunesmith.load(res.out).predict(clips), tunesmith.load(res.out).predict(clips)
    assert a == b and set(a[0]) == {"input", "label", "score", "scores"} and a[0]["input"] == clips[0]
    if strategy != "lora":
        from transformers import AutoConfig

        with pytest.raises(ValueError):  # transformers refuses the folder rather than loading another model
            AutoConfig.from_pretrained(res.out)
        card = (res.out / "README.md").read_text()  # says why pipeline() cannot load it, and what can
        assert "tunesmith.load" in card and "WhisperForAudioClassification" in card and "clip.wav" in card
        assert "Wav2Vec2ForSequenceClassification" in card


def test_head_only_reuses_cached_encoder_features(tiny_whisper, audio_folders, tmp_path):
    train, val = audio_folders
    cfg = _config(tiny_whisper, train, val, tmp_path / "a", "head-only", epochs=2, lr=0.05)
    first = tunesmith.finetune(cfg, quiet=True)
    second = tunesmith.finetune({**cfg, "out": str(tmp_path / "b")}, quiet=True)
    assert first.timings["feature_cache_hit"] == 0.0 and second.timings["feature_cache_hit"] == 1.0
    assert second.metrics == first.metrics


@pytest.mark.parametrize("arch", ["wav2vec2", "hubert"])
def test_wav2vec2_saves_a_folder_pipeline_loads_with_the_same_scores(
    arch, tiny_wav2vec2, tiny_hubert, audio_folders, tmp_path
):
    from transformers import AutoModelForAudioClassification, pipeline

    train, val = audio_folders
    folder = tiny_wav2vec2 if arch == "wav2vec2" else tiny_hubert
    res = tunesmith.finetune(_config(folder, train, val, tmp_path / "run", "full", epochs=6), quiet=True)
    if arch == "wav2vec2":
        assert res.metrics["accuracy"] >= 0.85, res.history
    assert json.loads((res.out / "tunesmith.json").read_text())["layout"] == "native"
    model = AutoModelForAudioClassification.from_pretrained(res.out)
    assert (
        type(model).__name__
        == {"wav2vec2": "Wav2Vec2ForSequenceClassification", "hubert": "HubertForSequenceClassification"}[arch]
    )
    clips = sorted(str(p) for p in val.rglob("*.*"))[::2]
    ours = tunesmith.load(res.out).predict(clips)
    pipe = pipeline("audio-classification", model=str(res.out), top_k=None)
    for clip, mine in zip(clips, ours):
        theirs = pipe({"raw": load_audio(clip, clip, 16000), "sampling_rate": 16000})
        assert theirs[0]["label"] == mine["label"]  # real label names, not LABEL_0
        for t in theirs:
            assert abs(t["score"] - mine["scores"][t["label"]]) <= 1e-5
    again = tunesmith.evaluate(res.out, val)
    assert again["confusion_matrix"] == res.metrics["confusion_matrix"]
    assert 'pipeline("audio-classification"' in (res.out / "README.md").read_text()


def test_lora_run_exports_merged_weights_pipeline_loads(tiny_wav2vec2, audio_folders, tmp_path):
    from tunesmith.export.merge import export_merged

    train, val = audio_folders
    res = tunesmith.finetune(
        _config(tiny_wav2vec2, train, val, tmp_path / "run", "lora", epochs=2, lr=1e-2), quiet=True
    )
    r = export_merged(res.out, tmp_path / "merged")
    assert r["layout"] == "native" and r["probes"] == 32
    assert (
        max(r["max_abs_logit_diff"].values()) <= 1e-4
        and "transformers.pipeline (merged folder, no peft)" in r["max_abs_logit_diff"]
    )
    clips = sorted(str(p) for p in val.rglob("*.*"))[:4]
    assert [x["label"] for x in tunesmith.load(tmp_path / "merged").predict(clips)] == [
        x["label"] for x in tunesmith.load(res.out).predict(clips)
    ]


def test_cli_train_table_and_predict_json(tiny_whisper, audio_folders, tmp_path, capsys):
    """The CLI in-process (test_audio_data.py runs `python -m tunesmith` itself): train from a table,
    predict --json, evaluate --json with the run's own columns."""
    import csv

    from tunesmith.cli import main

    train, val = audio_folders
    table = tmp_path / "train.csv"
    with open(table, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "kind"])
        for p in sorted(train.rglob("*.*")):
            w.writerow([os.path.relpath(p, tmp_path), p.parent.name])  # read from the table folder
    out = tmp_path / "cli-run"
    assert (
        main(
            [
                "train",
                "--task",
                "audio-classification",
                "--data",
                str(table),
                "--audio-column",
                "path",
                "--label-column",
                "kind",
                "--model",
                str(tiny_whisper),
                "--out",
                str(out),
                "--strategy",
                "head-only",
                "--precision",
                "fp32",
                "--set",
                "train.threads=1",
                "--quiet",
            ]
        )
        == 0
    )
    capsys.readouterr()
    clips = [str(p) for p in sorted(val.rglob("*.*"))[:3]]
    assert main(["predict", str(out), *clips, "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["input"] for x in lines] == clips
    assert all(
        set(x) == {"input", "label", "score", "scores"} and x["label"] in {"high", "low", "noise"} for x in lines
    )
    assert lines == tunesmith.load(out).predict(clips)
    assert main(["evaluate", str(out), "--data", str(table), "--json"]) == 0  # columns path/kind: the run's
    assert json.loads(capsys.readouterr().out)["n"] == 36
    assert main(["predict", str(out), str(tmp_path / "missing.wav")]) == 2
    assert "input 1: audio file not found" in capsys.readouterr().err


def test_catalogue_whisper_entries_never_convert_to_compare(tmp_path, tiny_whisper):
    from tunesmith.models.catalogue import CATALOGUE, CatalogueEntry, catalogue_name_for

    assert {"whisper-tiny.en", "whisper-base"} <= set(CATALOGUE)
    assert catalogue_name_for(tiny_whisper) is None
    for name in ("whisper-tiny.en", "whisper-base"):  # in the conftest cache: nothing was converted
        assert not (tmp_path / "cache" / "models" / name).exists()
    split = CatalogueEntry(
        "x", "a b", "tunesmith", "models", "audio", "1M", "", "MIT", extra_modules=("no_such_module_part2",)
    )
    assert not split.installed()  # a model split across packages needs every part


def test_encoders_load_from_other_checkpoint_classes(tmp_path, tiny_whisper, tiny_wav2vec2):
    """A CTC (speech recognition) wav2vec2 folder and a bare WhisperModel folder give the same encoder
    weights as the folders they were made from; their heads/decoders are dropped."""
    from transformers import Wav2Vec2ForCTC, WhisperModel

    from tunesmith.models.audio_backbone import load_audio_backbone

    Wav2Vec2ForCTC.from_pretrained(tiny_wav2vec2).save_pretrained(tmp_path / "ctc", safe_serialization=True)
    WhisperModel.from_pretrained(tiny_whisper).save_pretrained(tmp_path / "wm", safe_serialization=True)
    for src, copy in ((tiny_wav2vec2, tmp_path / "ctc"), (tiny_whisper, tmp_path / "wm")):
        a, b = load_audio_backbone(src).state_dict(), load_audio_backbone(copy).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_model_folder_mistakes(tmp_path, tiny_whisper):
    import shutil

    from tunesmith.errors import ModelError
    from tunesmith.models.audio_backbone import load_audio_backbone, load_feature_extractor

    bare = tmp_path / "bare"
    shutil.copytree(tiny_whisper, bare)
    (bare / "preprocessor_config.json").unlink()
    with pytest.raises(ModelError, match="no preprocessor_config.json.*WhisperFeatureExtractor"):
        load_feature_extractor(bare)
    from safetensors.torch import load_file, save_file

    w = load_file(str(bare / "model.safetensors"))
    save_file({k: v for k, v in w.items() if ".encoder.layers.1." not in k}, str(bare / "model.safetensors"))
    with pytest.raises(ModelError, match=r"Whisper encoder weights are incomplete .*missing layers\.1\."):
        load_audio_backbone(bare)
    from conftest import make_tiny_bert

    with pytest.raises(ModelError, match="model type 'bert' is not an audio encoder"):
        load_audio_backbone(make_tiny_bert(tmp_path / "bert"))


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_whisper_classifier_at_a_shorter_window_saves_and_reloads_it(strategy, audio_folders, tmp_path, monkeypatch):
    """model.window_seconds on the Whisper encoder: training and every later use hear 1 s of a 2 s
    model; the folder keeps it (a LoRA run re-applies it to the base model it reloads)."""
    from conftest import make_tiny_whisper

    from tunesmith.models.audio_backbone import AudioBackbone

    whisper_2s = make_tiny_whisper(tmp_path / "w2s", window=2)
    seen = []
    forward = AudioBackbone.forward_features

    def spy(self, batch):
        seen.append(batch["input_features"].shape[-1])
        return forward(self, batch)

    monkeypatch.setattr(AudioBackbone, "forward_features", spy)
    train, val = audio_folders
    cfg = _config(
        whisper_2s,
        train,
        val,
        tmp_path / "run",
        strategy,
        epochs=6 if strategy == "full" else 10,
        lr=3e-3 if strategy == "full" else 1e-2,
    )
    cfg["model"]["window_seconds"] = 1
    res = tunesmith.finetune(cfg, quiet=True)
    assert set(seen) == {100}
    assert res.metrics["accuracy"] >= 0.85, res.history
    pre = json.loads((res.out / "preprocessor_config.json").read_text())
    assert pre["chunk_length"] == 1 and pre["n_samples"] == 16000
    assert "Clips longer than 1 s are refused, never cut (`model.window_seconds: 1`" in " ".join(
        (res.out / "README.md").read_text().split()
    )
    if strategy == "full":
        assert json.loads((res.out / "encoder_config.json").read_text())["max_source_positions"] == 50
    n = len(seen)
    again = tunesmith.evaluate(res.out, val)
    assert again["accuracy"] == res.metrics["accuracy"] and again["confusion_matrix"] == res.metrics["confusion_matrix"]
    predictor = tunesmith.load(res.out)
    assert set(seen[n:]) == {100} and predictor.model.backbone.encoder.embed_positions.weight.shape[0] == 50


def test_window_is_refused_where_it_does_not_apply(tiny_wav2vec2, audio_folders, tmp_path):
    from tunesmith.config import config_from_dict
    from tunesmith.errors import ConfigError

    train, val = audio_folders
    cfg = _config(tiny_wav2vec2, train, val, tmp_path / "run")
    cfg["model"]["window_seconds"] = 1
    with pytest.raises(ConfigError, match="window_seconds applies to Whisper encoders"):
        tunesmith.finetune(cfg, quiet=True)
    with pytest.raises(
        ConfigError,
        match="model.window_seconds applies to audio-classification / speech-recognition, not 'text-classification'",
    ):
        config_from_dict({"model": {"window_seconds": 10}})  # text classification


def test_a_whisper_run_on_clips_far_shorter_than_its_window_says_so(audio_folders, tmp_path, capsys):
    from conftest import make_tiny_whisper

    train, val = audio_folders  # clips of 0.3-0.9 s against a 4 s window
    cfg = _config(make_tiny_whisper(tmp_path / "w4s", window=4), train, val, tmp_path / "run", "head-only", epochs=1)
    tunesmith.finetune(cfg, quiet=False)
    err = " ".join(capsys.readouterr().err.split())
    assert "model.window_seconds: 2 would make its encoder's work about 2x smaller" in err
