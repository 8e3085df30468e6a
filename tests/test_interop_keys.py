"""Checkpoint conversion on state dicts with exactly the documented keys and shapes (issue 6).

tests/data/interop/*.txt are the key lists of shared/interop: every key and shape of the MLPerf SSD300-ResNet-34
and NVIDIA SSD300 v1.1 ResNet-50 models.
"""

from __future__ import annotations

import pytest
import torch
from interop_reference import BUFFER_SUFFIXES, MLPERF_KEYS, NVIDIA_KEYS, read_key_list

import singleshot
from singleshot.checkpoint import make_checkpoint, model_from_checkpoint
from singleshot.interop import (
    COCO_CLASSES,
    COCO_LABEL_TO_CATEGORY_ID,
    InteropError,
    detect_kind,
    from_foreign,
    to_foreign,
    to_nvidia,
)

KEY_LISTS = {"mlperf": MLPERF_KEYS, "nvidia": NVIDIA_KEYS}
MODELS = {"mlperf": "ssd300_resnet34", "nvidia": "ssd300_resnet50"}
PARAMETERS = {"mlperf": 19_972_534, "nvidia": 22_894_902}

# Where each source module goes, written out here independently of singleshot.interop.keymaps.
PLACEMENT = {
    "mlperf": {
        "model.layer1.0.": "backbone.conv1.",
        "model.layer1.1.": "backbone.bn1.",
        "model.layer1.4.": "backbone.layer1.",
        "model.layer1.5.": "backbone.layer2.",
        "model.layer2.0.": "backbone.layer3.",
    },
    "nvidia": {
        "feature_extractor.feature_extractor.0.": "backbone.conv1.",
        "feature_extractor.feature_extractor.1.": "backbone.bn1.",
        "feature_extractor.feature_extractor.4.": "backbone.layer1.",
        "feature_extractor.feature_extractor.5.": "backbone.layer2.",
        "feature_extractor.feature_extractor.6.": "backbone.layer3.",
    },
}
COMMON = {"additional_blocks.": "additional_blocks.", "loc.": "head.loc.", "conf.": "head.conf."}


def expected_target(kind: str, key: str) -> str:
    for src, dst in {**PLACEMENT[kind], **COMMON}.items():
        if key.startswith(src):
            return dst + key[len(src) :]
    raise AssertionError(f"test table does not cover {key}")


def random_state_dict(kind: str, seed: int = 0, num_classes: int = 81) -> dict[str, torch.Tensor]:
    """Exactly the documented keys and shapes, every tensor distinct random values (so a misplaced tensor shows)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in read_key_list(KEY_LISTS[kind]).items():
        if key.startswith("conf."):
            shape = (shape[0] // 81 * num_classes, *shape[1:])
        if key.endswith("num_batches_tracked"):
            out[key] = torch.randint(0, 10**6, shape, generator=gen)
        else:
            out[key] = torch.randn(shape, generator=gen)
    return out


@pytest.fixture(scope="module", params=["mlperf", "nvidia"])
def source(request: pytest.FixtureRequest) -> tuple[str, dict[str, torch.Tensor]]:
    return request.param, random_state_dict(request.param, seed=len(request.param))


@pytest.mark.parametrize("kind", ["mlperf", "nvidia"])
def test_key_lists_have_the_reference_parameter_counts(kind: str) -> None:
    keys = read_key_list(KEY_LISTS[kind])
    params = sum(torch.Size(s).numel() for k, s in keys.items() if not k.endswith(BUFFER_SUFFIXES))
    assert params == PARAMETERS[kind]
    model = singleshot.build_model(MODELS[kind])
    assert sum(p.numel() for p in model.parameters()) == params
    assert len(model.state_dict()) == len(keys)


def test_every_source_tensor_lands_in_its_place(source) -> None:
    kind, state = source
    ckpt = from_foreign({"model": state}, kind)
    converted = ckpt["state_dict"]
    assert ckpt["model"] == {"name": MODELS[kind], "num_classes": 81}
    model = singleshot.build_model(MODELS[kind])
    assert list(converted) == list(model.state_dict())  # every target filled, in the model's order
    assert len(converted) == len(state)  # ...by as many tensors as the source has
    for key, value in state.items():
        # Identity, not just equality: no copy, no permutation, no dtype change. Heads included: both references
        # and singleshot lay channels out as (value, box type) and anchors type-major (see test_interop_parity).
        assert converted[expected_target(kind, key)] is value, key
    model.load_state_dict(converted, strict=True)


def test_round_trip_gives_back_the_documented_keys_and_values(source) -> None:
    kind, state = source
    back = to_foreign(from_foreign(state, kind), kind)
    assert list(back["model"]) == list(read_key_list(KEY_LISTS[kind]))  # exact keys, documented order
    assert all(torch.equal(back["model"][k], v) for k, v in state.items())
    assert back["label_map"][0] == "background" and back["label_map"][80] == "toothbrush"


def test_singleshot_model_to_nvidia_has_exactly_their_keys_and_shapes() -> None:
    model = singleshot.build_model("ssd300_resnet50")
    out = to_nvidia(make_checkpoint(model, COCO_CLASSES, COCO_LABEL_TO_CATEGORY_ID))
    assert set(out) == {"model", "label_map"}
    documented = read_key_list(NVIDIA_KEYS)
    assert {k: tuple(v.shape) for k, v in out["model"].items()} == documented
    assert out["label_map"] == {0: "background", **dict(enumerate(COCO_CLASSES, 1))}
    # Back again: the same weights in singleshot's model.
    again = model_from_checkpoint(from_foreign(out, "nvidia"))
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("wrap", ["bare", "model", "ddp", "ddp_model", "compiled"])
def test_accepts_bare_wrapped_and_ddp_state_dicts(source, wrap: str) -> None:
    kind, state = source
    prefix = {"ddp": "module.", "ddp_model": "module.", "compiled": "_orig_mod."}.get(wrap, "")
    sd = {prefix + k: v for k, v in state.items()}
    obj = {"model": sd, "epoch": 12, "iteration": 999, "optimizer": {}, "scheduler": {}} if "model" in wrap else sd
    assert detect_kind(obj) == kind
    ckpt = from_foreign(obj, kind)
    assert ckpt["state_dict"]["backbone.conv1.weight"] is state[next(iter(PLACEMENT[kind])) + "weight"]
    assert ckpt["source"]["epoch"] == (12 if "model" in wrap else None)


def test_coco_class_mapping() -> None:
    ckpt = from_foreign(random_state_dict("mlperf"), "mlperf")
    assert ckpt["classes"] == COCO_CLASSES and len(COCO_CLASSES) == 80
    ids = ckpt["label_to_category_id"]
    assert list(ids) == list(range(1, 81))
    assert list(ids.values()) == sorted(ids.values()) and ids[1] == 1 and ids[80] == 90
    assert set(range(1, 91)) - set(ids.values()) == {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}
    assert ids[12] == 13 and ckpt["classes"][11] == "stop sign"


def test_other_class_counts_and_label_map_names() -> None:
    state = random_state_dict("nvidia", num_classes=4)
    names = {0: "background", 1: "cat", 2: "dog", 3: "bird"}
    ckpt = from_foreign({"model": state, "label_map": names}, "nvidia")
    assert ckpt["model"]["num_classes"] == 4 and ckpt["classes"] == ["cat", "dog", "bird"]
    assert ckpt["label_to_category_id"] == {1: 1, 2: 2, 3: 3}
    model_from_checkpoint(ckpt)  # loads strictly
    assert to_nvidia(ckpt)["label_map"] == names


def _message(excinfo: pytest.ExceptionInfo) -> str:
    return str(excinfo.value)


def test_extra_missing_and_misshaped_tensors_are_errors_listing_the_keys(source) -> None:
    kind, state = source
    extra = dict(state, **{"loc.6.weight": torch.zeros(1), "model.fc.weight": torch.zeros(1)})
    with pytest.raises(InteropError) as exc:
        from_foreign(extra, kind, source="ckpt.pt")
    assert "ckpt.pt" in _message(exc) and "loc.6.weight -> head.loc.6.weight" in _message(exc)
    assert "model.fc.weight" in _message(exc) or kind == "nvidia"

    missing = {k: v for k, v in state.items() if not k.startswith("additional_blocks.4.")}
    with pytest.raises(InteropError, match=r"target keys left unfilled \(\d+\)") as exc:
        from_foreign(missing, kind)
    assert "additional_blocks.4.0.weight" in _message(exc)

    bad = dict(state)
    bad["loc.2.bias"] = torch.zeros(23)
    with pytest.raises(InteropError, match=r"loc\.2\.bias \(23,\) -> head\.loc\.2\.bias expects \(24,\)"):
        from_foreign(bad, kind)


def test_wrong_kind_and_unknown_checkpoints_are_errors(source) -> None:
    kind, state = source
    other = "nvidia" if kind == "mlperf" else "mlperf"
    with pytest.raises(InteropError, match="source keys no rule maps"):
        from_foreign(state, other)
    assert detect_kind({"weight": torch.zeros(1)}) == "unknown"
    with pytest.raises(InteropError, match="not tensors"):
        from_foreign({"model": {"a": 1}}, kind)
    with pytest.raises(InteropError, match="unknown checkpoint kind"):
        from_foreign(state, "caffe")


def test_to_foreign_checks_the_architecture() -> None:
    tiny = make_checkpoint(singleshot.build_model("ssd_tiny", num_classes=3), ["a", "b"])
    with pytest.raises(InteropError, match=r"'ssd_tiny' model; the NVIDIA SSD300 v1\.1 ResNet-50 format needs"):
        to_nvidia(tiny)
    r34 = from_foreign(random_state_dict("mlperf"), "mlperf")
    with pytest.raises(InteropError, match="needs 'ssd300_resnet50'"):
        to_nvidia(r34)
    del r34["state_dict"]["head.conf.5.bias"]
    with pytest.raises(InteropError, match=r"head\.conf\.5\.bias"):
        to_foreign(r34, "mlperf")
