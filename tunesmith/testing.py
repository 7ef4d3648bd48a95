"""Tiny models and synthetic data for tests: random 2-layer models saved as Hugging Face folders
(safetensors) and data a tiny model learns in a few steps, all offline and deterministic.

Shipped with the package (like accelerate's test_utils) because every registered task builds its own
tiny example from these (`Task.tiny_example`), so the contract tests pick up a new task unchanged.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np

POS = ["good", "great", "love", "fine", "happy", "superb"]


NEG = ["bad", "awful", "hate", "poor", "sad", "boring"]


FILL = ["the", "movie", "was", "plot", "it", "really", "a", "very", "story", "actors", "and", "so", "this"]


VOCAB = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + POS + NEG + FILL + ["neutral", "meh"]


def make_tiny_bert(folder: Path, pooling: str | None = None, seed: int = 0, dropout: float = 0.1) -> Path:
    """A 2-layer random BERT with a real WordPiece tokenizer, saved as a HF folder (safetensors);
    `dropout`: its hidden and attention dropout (0: a model whose output does not depend on the batch)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(VOCAB)}, do_lower_case=True)
    tok.save_pretrained(folder)
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=64,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    BertModel(cfg).save_pretrained(folder)
    if pooling:
        (folder / "1_Pooling").mkdir(exist_ok=True)
        (folder / "1_Pooling" / "config.json").write_text(
            json.dumps(
                {
                    "word_embedding_dimension": 32,
                    "pooling_mode_cls_token": pooling == "cls",
                    "pooling_mode_mean_tokens": pooling == "mean",
                }
            ),
            encoding="utf-8",
        )
    return folder


def sentiment_rows(n: int, seed: int = 0, classes: int = 2) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        k = i % classes
        words = rng.sample(FILL, rng.randint(2, 8))
        if k == 0:
            words.insert(rng.randrange(len(words) + 1), rng.choice(POS))
            label = "positive"
        elif k == 1:
            words.insert(rng.randrange(len(words) + 1), rng.choice(NEG))
            label = "negative"
        else:
            words.insert(rng.randrange(len(words) + 1), rng.choice(["neutral", "meh"]))
            label = "neutral"
        rows.append({"text": " ".join(words), "label": label})
    return rows


def write_csv(path: Path, rows: list[dict], fields=("text", "label")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (50, 60, 200)}


def make_tiny_resnet(folder: Path, seed: int = 0) -> Path:
    """A 2-stage random ResNet (basic blocks, 8/16 channels) with a ConvNeXt-style image processor
    (resize to 36, centre crop 32, mean = std = 0.5), saved as a HF folder (safetensors)."""
    import torch
    from transformers import ConvNextImageProcessorPil, ResNetConfig, ResNetForImageClassification

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    cfg = ResNetConfig(
        num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", num_labels=5
    )  # an ImageNet-style checkpoint: its own 5-class classifier is dropped
    ResNetForImageClassification(cfg).save_pretrained(folder)
    ConvNextImageProcessorPil(size={"shortest_edge": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(
        folder
    )
    return folder


def make_image_folder(root: Path, per_class: int, seed: int = 0, size=(40, 48)) -> Path:
    """root/<colour>/<i>.png: noisy images whose dominant colour is the class (learnable in a few steps)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name, rgb in COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            a = np.clip(np.array(rgb)[None, None, :] + rng.normal(0, 40, (*size, 3)), 0, 255).astype("uint8")
            Image.fromarray(a).save(root / name / f"{i}.png")
    return root


TONES = {"low": 300.0, "high": 2400.0, "noise": None}  # class -> tone frequency (None: white noise)


def make_tiny_whisper(folder: Path, seed: int = 0, window: int = 1) -> Path:
    """A 2-layer random WhisperForConditionalGeneration (32 dims, 16 mel bins) whose feature extractor
    has a `window` s window (1 s: chunk_length=1 -> 100 mel frames, max_source_positions=50), safetensors.
    init_std 0.1, not 0.02: at 0.02 the random conv front end is so weak that the sinusoidal positions
    swamp every frame, pooled features then carry a clip's length rather than its sound, and a frozen
    encoder (head-only, LoRA) could not learn tones apart."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    cfg = WhisperConfig(
        vocab_size=64,
        num_mel_bins=16,
        d_model=32,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_source_positions=50 * window,
        max_target_positions=32,
        pad_token_id=1,
        bos_token_id=2,
        eos_token_id=3,
        decoder_start_token_id=2,
        init_std=0.1,
    )
    WhisperForConditionalGeneration(cfg).save_pretrained(folder, safe_serialization=True)
    WhisperFeatureExtractor(
        feature_size=16, sampling_rate=16000, hop_length=160, chunk_length=window, n_fft=400
    ).save_pretrained(folder)
    return folder


def make_tiny_wav2vec2(
    folder: Path, seed: int = 0, feat_extract_norm: str = "group", dropout: float | None = None
) -> Path:
    """A 2-layer random Wav2Vec2Model (32 dims, 3 conv layers, 80x downsampling) with its feature
    extractor (16 kHz, normalised; attention masks only for the layer-norm variant), safetensors."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    layer = feat_extract_norm == "layer"
    cfg = Wav2Vec2Config(
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
        feat_extract_norm=feat_extract_norm,
        do_stable_layer_norm=layer,
        mask_time_length=4,
        classifier_proj_size=16,
        **(
            {}
            if dropout is None
            else dict.fromkeys(
                ("hidden_dropout", "attention_dropout", "activation_dropout", "feat_proj_dropout", "final_dropout"),
                dropout,
            )
        ),
    )
    Wav2Vec2Model(cfg).save_pretrained(folder, safe_serialization=True)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=layer
    ).save_pretrained(folder)
    return folder


def tone_clip(kind: str, seconds: float, rate: int, rng, channels: int = 1):
    """A clip of class `kind`: a tone with a little noise, or noise alone; random level."""
    import numpy as np

    t = np.arange(int(seconds * rate)) / rate
    f = TONES[kind]
    x = np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3)) if f else rng.normal(0, 0.5, t.shape)
    x = x * rng.uniform(0.2, 0.8) + rng.normal(0, 0.02, t.shape)
    x = np.clip(x, -1, 1).astype("float32")
    return np.stack([x, x * 0.9], axis=1) if channels == 2 else x


def make_audio_folder(root: Path, per_class: int, seed: int = 0) -> Path:
    """root/<class>/<i>.<wav|flac|ogg>: 0.3-0.9 s clips at mixed rates (8-44.1 kHz), some stereo."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(seed)
    formats = [("wav", "PCM_16"), ("flac", "PCM_16"), ("ogg", "VORBIS")]
    rates = [16000, 8000, 22050, 44100]
    for kind in TONES:
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            ext, subtype = formats[i % len(formats)]
            rate = rates[i % len(rates)]
            x = tone_clip(kind, rng.uniform(0.3, 0.9), rate, rng, channels=2 if i % 5 == 4 else 1)
            sf.write(root / kind / f"{i}.{ext}", x, rate, subtype=subtype)
    return root


SPECIALS_EN = [
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nocaptions|>",
    "<|notimestamps|>",
]


SPECIALS_MULTI = [
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|de|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nocaptions|>",
    "<|notimestamps|>",
]


WORDS = {
    "yes": (300, 900),
    "no": (450, 1400),
    "up": (600, 1800),
    "down": (750, 2300),
    "go": (1000, 2900),
    "stop": (1200, 3400),
}


def bytes_to_unicode() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes (the byte-level BPE alphabet), byte order."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode as table

    chars = table()
    return [chars[b] for b in range(256)]


def make_asr_whisper(folder: Path, multilingual: bool = False, seed: int = 0, window: int = 1) -> Path:
    """A tiny random Whisper hearing `window` seconds (50 encoder positions a second, like real ones)."""
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    folder.mkdir(parents=True, exist_ok=True)
    chars = bytes_to_unicode()
    specials = SPECIALS_MULTI if multilingual else SPECIALS_EN
    tok = WhisperTokenizer(
        vocab={c: i for i, c in enumerate(chars)},
        merges=[],
        unk_token=specials[0],
        bos_token=specials[0],
        eos_token=specials[0],
        pad_token=specials[0],
        extra_special_tokens=specials[1:],
        model_max_length=64,
    )
    ids = {s: tok.convert_tokens_to_ids(s) for s in specials}
    assert ids["<|endoftext|>"] == 256 and len(tok) == 256 + len(specials)
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    torch.manual_seed(seed)
    cfg = WhisperConfig(
        vocab_size=len(tok),
        num_mel_bins=16,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_source_positions=50 * window,
        max_target_positions=48,
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=sot,
        begin_suppress_tokens=None,
        suppress_tokens=None,
    )
    model = WhisperForConditionalGeneration(cfg)
    gen = dict(
        decoder_start_token_id=sot,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        max_length=48,
        no_timestamps_token_id=ids["<|notimestamps|>"],
        prev_sot_token_id=ids["<|startofprev|>"],
        is_multilingual=multilingual,
        return_timestamps=False,
        suppress_tokens=[ids[t] for t in specials[1:]],  # a random model must still write text
        begin_suppress_tokens=[eot],
    )
    if multilingual:
        gen.update(
            lang_to_id={"<|en|>": ids["<|en|>"], "<|de|>": ids["<|de|>"]},
            task_to_id={"translate": ids["<|translate|>"], "transcribe": ids["<|transcribe|>"]},
            task="transcribe",
        )
    model.generation_config = GenerationConfig(**gen)
    model.save_pretrained(folder, safe_serialization=True)
    fe = WhisperFeatureExtractor(feature_size=16, sampling_rate=16000, hop_length=160, chunk_length=window, n_fft=400)
    WhisperProcessor(feature_extractor=fe, tokenizer=tok).save_pretrained(folder)
    fe.save_pretrained(folder)
    return folder


def make_ctc_wav2vec2(folder: Path, seed: int = 0, norm: str = "layer") -> Path:
    """The tiny wav2vec2 for speech recognition: no dropout (a memorised utterance must decode
    exactly); norm "layer" (takes attention masks) or "group" (wav2vec2-base style: no masks)."""
    return make_tiny_wav2vec2(folder, seed, feat_extract_norm=norm, dropout=0.0)


def say(text: str, rate: int = 16000, word_seconds: float = 0.22, gap: float = 0.04, seed: int = 0) -> np.ndarray:
    """Synthetic 'speech': each word a two-tone chord, separated by short pauses, a little noise."""
    rng = np.random.default_rng(seed)
    parts = []
    for w in text.split():
        f1, f2 = WORDS[w]
        t = np.arange(int(word_seconds * rate)) / rate
        env = np.minimum(1, np.minimum(t, t[::-1]) / 0.02)
        parts += [0.4 * env * (np.sin(2 * np.pi * f1 * t) + np.sin(2 * np.pi * f2 * t)) / 2, np.zeros(int(gap * rate))]
    x = np.concatenate(parts) + rng.normal(0, 0.005, sum(len(p) for p in parts))
    return x.astype("float32")


SENTENCES = ["yes go", "no stop", "up down", "go up", "stop no", "down yes", "yes no go", "up go stop"]


def write_speech_table(
    folder: Path, sentences: list[str], name: str = "clips.csv", seed: int = 0, rates=(16000, 22050, 8000)
) -> Path:
    """folder/name: audio path + transcript per row; clips at mixed sample rates (resampled on read)."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, s in enumerate(sentences):
        rate = rates[i % len(rates)]
        path = folder / f"{Path(name).stem}-{i}.wav"
        sf.write(path, say(s, rate, seed=seed + i), rate, subtype="PCM_16")
        rows.append({"audio": path.name, "transcript": s.capitalize() + "."})
    table = folder / name
    with open(table, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["audio", "transcript"])
        w.writeheader()
        w.writerows(rows)
    return table


def task_and_model(task_name: str, model_dir: Path, train_examples, **config):
    """(task, TaskModel) for `task_name` on the model in `model_dir`, built from `train_examples` as
    `tunesmith.finetune` builds them (no strategy applied): for tests of one task's parts. `config`:
    RunConfig sections, e.g. speech={"max_new_tokens": 8}, model={"window_seconds": 1}."""
    import torch

    from .config import config_from_dict
    from .models import select_backbone
    from .tasks import TASKS
    from .tasks.base import TaskModel

    model_cfg = {"name": str(model_dir), **config.pop("model", {})}
    cfg = config_from_dict({"task": task_name, "model": model_cfg, **config})
    task_cls = TASKS.get(task_name)
    backbone, preprocessor = select_backbone(task_cls.modality, model_dir).load(
        model_dir, cfg.model, task_cls.backbone_options(cfg)
    )
    task = task_cls.from_data(backbone, preprocessor, train_examples, cfg, None)
    torch.manual_seed(0)
    return task, TaskModel(backbone, task.build_head(backbone))


# -- chat: a tiny causal LM with a real byte-level BPE tokenizer and a chat template --------------
CHAT_SUBJECTS = ["sky", "grass", "snow", "sun", "sea", "night", "coal", "milk", "rose", "lemon"]
CHAT_COLOURS = ["blue", "green", "white", "yellow", "blue", "black", "black", "white", "red", "yellow"]


def chat_rows(n: int, seed: int = 0, ask: str = "What colour is the {}?") -> list[dict]:
    """Conversations in the OpenAI messages shape a tiny model learns in a few steps: a question
    (`ask`) about a thing's colour, answered in one short sentence; every third one has a system
    message and a second exchange."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        k = rng.randrange(len(CHAT_SUBJECTS))
        subject, colour = CHAT_SUBJECTS[k], CHAT_COLOURS[k]
        msgs = [
            {"role": "user", "content": ask.format(subject)},
            {"role": "assistant", "content": f"The {subject} is {colour}."},
        ]
        if i % 3 == 0:
            j = rng.randrange(len(CHAT_SUBJECTS))
            msgs = [{"role": "system", "content": "Answer in one sentence."}, *msgs]
            msgs += [
                {"role": "user", "content": f"And the {CHAT_SUBJECTS[j]}?"},
                {"role": "assistant", "content": f"The {CHAT_SUBJECTS[j]} is {CHAT_COLOURS[j]}."},
            ]
        rows.append({"messages": msgs})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def make_tiny_causal_lm(folder: Path, family: str = "llama", seed: int = 0, template: bool = True) -> Path:
    """A 2-layer random causal LM (Llama or GPT-2) with a byte-level BPE tokenizer trained here,
    ChatML markers as special tokens and pad == eos == <|im_end|> (as SmolLM2-Instruct declares);
    `template`: with ChatML as its chat template (False: a base model without one)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from .modalities.conversations import CHATML

    folder.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    corpus = [m["content"] for r in chat_rows(60, seed=99) for m in r["messages"]] + ["user assistant system"] * 10
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] if template else ["<|endoftext|>"]
    bpe.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=320, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    eos = "<|im_end|>" if template else "<|endoftext|>"
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token=eos, pad_token=eos)
    if template:
        tok.chat_template = CHATML
    tok.save_pretrained(folder)
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    if family == "llama":
        cfg = LlamaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            tie_word_embeddings=True,
            **ids,
        )
        model = LlamaForCausalLM(cfg)
    elif family == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=256, **ids))
    else:
        raise ValueError(f"family {family!r}: llama or gpt2")
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(folder)
    return folder
