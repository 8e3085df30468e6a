"""SSD320 v1.2 as NVIDIA's TensorFlow code trains it (RECIPES.md, SSD320 section).

Each test restates the TF formula it checks in numpy/float64 (a direct transcription, small inputs) and compares.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.ops import box_convert, box_iou, nms

from singleshot import build_model
from singleshot.box import (
    MLPERF_MATCH,
    TF_ARGMAX_MATCH,
    BoxCoder,
    MultiscaleAnchorSpec,
    PostprocessConfig,
    PostProcessor,
    TargetEncoder,
    default_boxes,
)
from singleshot.box.coder import anchor_iou
from singleshot.box.factory import build_encoder, build_loss, build_postprocessor
from singleshot.engine.optim import param_groups
from singleshot.models import get_spec
from singleshot.models.ssd_fpn import TFFeaturePyramid

# ------------------------------------------------------------------------------------------------------------ loss


def tf_ssd_loss(reg, logits, t_reg, labels, codesize_norm: bool) -> tuple[float, float]:
    """``ssd_meta_arch.loss`` with WeightedSmoothL1LocalizationLoss (delta 1) and SigmoidFocalClassificationLoss
    (gamma 2, alpha 0.25), transcribed: returns (localization_loss, classification_loss)."""
    reg, logits, t_reg = (np.asarray(x, np.float64) for x in (reg, logits, t_reg))
    labels = np.asarray(labels)
    num_classes = logits.shape[-1]
    target = np.eye(num_classes + 1)[labels][..., 1:]  # one-hot, background column dropped
    # sigmoid_cross_entropy_with_logits: max(x, 0) - x * z + log(1 + exp(-|x|))
    per_entry_cross_ent = np.maximum(logits, 0) - logits * target + np.log1p(np.exp(-np.abs(logits)))
    p = 1 / (1 + np.exp(-logits))
    p_t = target * p + (1 - target) * (1 - p)
    modulating_factor = (1.0 - p_t) ** 2.0
    alpha_weight_factor = target * 0.25 + (1 - target) * (1 - 0.25)
    cls_losses = modulating_factor * alpha_weight_factor * per_entry_cross_ent
    # huber_loss(delta=1) summed over the code, weighted by the regression weights (1 on matched anchors)
    diff = np.abs(reg - t_reg)
    huber = np.where(diff <= 1.0, 0.5 * diff**2, 1.0 * (diff - 0.5 * 1.0)).sum(-1)
    location_losses = huber * (labels > 0)
    num_matches = float((labels > 0).sum())
    normalizer = max(num_matches, 1.0)
    localization_loss_normalizer = normalizer * 4 if codesize_norm else normalizer
    localization_loss = 1.0 / localization_loss_normalizer * location_losses.sum()
    classification_loss = 1.0 / normalizer * cls_losses.sum()
    return localization_loss, classification_loss


@pytest.mark.parametrize("num_pos", [0, 7])
def test_focal_loss_and_both_normalizers_match_tf(num_pos: int) -> None:
    g = torch.Generator().manual_seed(num_pos)
    b, a, c = 2, 30, 5
    reg, t_reg = torch.randn(b, a, 4, generator=g) * 2, torch.randn(b, a, 4, generator=g)
    logits = torch.randn(b, a, c, generator=g) * 3
    labels = torch.zeros(b, a, dtype=torch.long)
    labels.view(-1)[torch.randperm(b * a, generator=g)[:num_pos]] = torch.randint(1, c + 1, (num_pos,), generator=g)
    loss_fn = build_loss(get_spec("ssd320_resnet50_fpn"))
    out = loss_fn(reg, logits, t_reg, labels)
    loc, cls = tf_ssd_loss(reg, logits, t_reg, labels, codesize_norm=True)
    assert out["box"].item() == pytest.approx(loc, rel=1e-5, abs=1e-7)
    assert out["cls"].item() == pytest.approx(cls, rel=1e-5)
    assert out["loss"].item() == pytest.approx(loc + cls, rel=1e-5)
    if num_pos:
        # The box term is divided by matches x 4, the class term by matches: the 4x of issue 11.
        loc_by_matches, _ = tf_ssd_loss(reg, logits, t_reg, labels, codesize_norm=False)
        assert loc_by_matches == pytest.approx(4 * loc) and loc > 0
    else:
        assert out["box"].item() == 0.0  # no positives: normalizer 1, nothing to regress


def test_ssd300_specs_keep_the_mlperf_rules() -> None:
    for name in ("ssd300_resnet34", "ssd300_resnet50"):
        spec = get_spec(name)
        assert spec.match == MLPERF_MATCH and not spec.box_loss_by_codesize
        assert spec.postprocess.per_class_cap == "before_nms"
    fpn = get_spec("ssd320_resnet50_fpn")
    assert fpn.match == TF_ARGMAX_MATCH and fpn.box_loss_by_codesize
    assert fpn.postprocess == PostprocessConfig(1e-8, 0.6, 100, 100, "after_nms")
    assert build_encoder(fpn).rule == TF_ARGMAX_MATCH


# ------------------------------------------------------------------------------------------------------------- FPN


def test_fpn_structure_and_level_sizes() -> None:
    torch.manual_seed(0)
    model = build_model("ssd320_resnet50_fpn", num_classes=81).eval()
    fpn = model.fpn
    assert isinstance(fpn, TFFeaturePyramid)
    # Laterals: plain 1x1 convs with a bias; nothing else (no BatchNorm, no activation) in that module list.
    assert [type(m) for m in fpn.lateral] == [nn.Conv2d] * 3
    assert all(m.kernel_size == (1, 1) and m.bias is not None for m in fpn.lateral)
    # Two 3x3 smoothing convs (P3, P4: none for P5), two stride-2 convs (P6, P7); each conv + BN (no bias).
    assert len(fpn.smooth) == 2 and len(fpn.coarse) == 2
    for block, stride in [(b, 1) for b in fpn.smooth] + [(b, 2) for b in fpn.coarse]:
        assert block.conv.kernel_size == (3, 3) and block.conv.stride == (stride, stride) and block.conv.bias is None
        assert (block.bn.eps, block.bn.momentum) == (1e-3, 0.003)
    head_bns = [m for m in model.box_tower.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(head_bns) == 4 * 5 and all((m.eps, m.momentum) == (1e-3, 0.003) for m in head_bns)
    # Initialisation: FPN truncated normal 0.03 (within 2 stddev), head normal 0.01, class bias -4.6.
    for conv in [*fpn.lateral, *(b.conv for b in fpn.smooth), *(b.conv for b in fpn.coarse)]:
        assert conv.weight.abs().max() <= 0.06 and 0.02 < conv.weight.std() < 0.03
    assert 0.009 < model.box_pred.weight.std() < 0.011 and 0.009 < model.cls_tower.convs[0].weight.std() < 0.011
    assert torch.equal(model.cls_pred.bias, torch.full_like(model.cls_pred.bias, -4.6))

    # Data flow: P5 is the C5 lateral itself; P6 is computed from P5 (TF "SAME" padding: bottom/right pixel).
    c3, c4, c5 = torch.randn(1, 512, 40, 40), torch.randn(1, 1024, 20, 20), torch.randn(1, 2048, 10, 10)
    with torch.no_grad():
        p3, p4, p5, p6, _ = fpn(c3, c4, c5)
        assert torch.equal(p5, fpn.lateral[2](c5))
        x = torch.nn.functional.pad(p5, (0, 1, 0, 1))  # TF SAME for 3x3 stride 2 on 10x10
        bn = fpn.coarse[0].bn
        ref_p6 = torch.nn.functional.conv2d(x, fpn.coarse[0].conv.weight, stride=2)
        ref_p6 = torch.clamp(bn(ref_p6), 0, 6)  # ReLU6
        torch.testing.assert_close(p6, ref_p6)
        t4 = torch.nn.functional.interpolate(p5, scale_factor=2.0, mode="nearest") + fpn.lateral[1](c4)
        torch.testing.assert_close(p4, fpn.smooth[1](t4))
        assert p3.min() >= 0 and p3.max() <= 6  # ReLU6 after BN on the smoothed outputs
        images = torch.randn(1, 3, 320, 320)
        sizes = [tuple(f.shape[-2:]) for f in model.features(images)]
        reg, logits = model(images)
    assert sizes == [(40, 40), (20, 20), (10, 10), (5, 5), (3, 3)]
    assert reg.shape == (1, 12804, 4) and logits.shape == (1, 12804, 80)


def test_old_fpn_checkpoint_is_a_one_line_error() -> None:
    model = build_model("ssd320_resnet50_fpn", num_classes=3)
    state = dict(model.state_dict())
    state["fpn.inner_blocks.0.0.weight"] = torch.zeros(256, 512, 1, 1)  # the earlier torchvision-FPN layout
    with pytest.raises(ValueError, match="earlier singleshot FPN") as info:
        model.load_state_dict(state)
    assert "\n" not in str(info.value)
    model.load_state_dict(model.state_dict())  # the current layout loads


def test_weight_decay_reaches_conv_weights_only() -> None:
    model = build_model("ssd320_resnet50_fpn", num_classes=3)
    decay, no_decay = param_groups(model, 8e-4, no_decay_bn_bias=True)
    conv_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Conv2d)}
    assert {id(p) for p in decay["params"]} == conv_weights and decay["weight_decay"] == 8e-4
    assert no_decay["weight_decay"] == 0.0 and not {id(p) for p in no_decay["params"]} & conv_weights


# --------------------------------------------------------------------------------------------------------- matcher


def tf_argmax_matcher(similarity: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """``matchers/argmax_matcher.py`` (matched = unmatched threshold, force_match_for_each_row), transcribed:
    similarity [G, A] -> match [A] (gt index or -1)."""
    matches = np.argmax(similarity, 0)
    matched_vals = np.max(similarity, 0)
    below_unmatched_threshold = threshold > matched_vals
    matches = np.where(below_unmatched_threshold, -1, matches)
    force_match_column_ids = np.argmax(similarity, 1)
    force_match_column_indicators = np.eye(similarity.shape[1])[force_match_column_ids]  # one-hot [G, A]
    force_match_row_ids = np.argmax(force_match_column_indicators, 0)
    force_match_column_mask = np.max(force_match_column_indicators, 0).astype(bool)
    return np.where(force_match_column_mask, force_match_row_ids, matches)


# Dyadic anchors (image 64, stride 16, side 0.5): every IoU below is exact in float32.
_GRID = MultiscaleAnchorSpec(image_size=64, min_level=4, max_level=4, anchor_scale=2.0, aspect_ratios=(1.0,),
                             scales_per_octave=1)  # fmt: skip


def test_matcher_inclusive_threshold_and_first_listed_wins() -> None:
    # gt 0: twice as wide as anchor 0 ([-0.125, -0.125, 0.375, 0.375]): IoU exactly 0.5 with it and its neighbour.
    # gt 1 and gt 2: the same box, so the same forced best anchor; TF gives it to gt 1 (listed first).
    gt = torch.tensor([[[-0.125, -0.125, 0.875, 0.375], [0.55, 0.55, 0.95, 0.95], [0.55, 0.55, 0.95, 0.95]]])
    labels = torch.tensor([[1, 2, 3]])
    iou = anchor_iou(gt, _GRID)[0]  # (3, A)
    assert (iou == 0.5).sum() >= 2  # the crafted boundary case
    expected = tf_argmax_matcher(iou.double().numpy())
    _, tf_labels = TargetEncoder(_GRID, rule=TF_ARGMAX_MATCH)(gt, labels)
    _, ml_labels = TargetEncoder(_GRID, rule=MLPERF_MATCH)(gt, labels)
    expected_labels = np.where(expected >= 0, labels[0].numpy()[expected], 0)
    assert tf_labels[0].tolist() == expected_labels.tolist()
    forced = int(iou[1].argmax())
    assert tf_labels[0, forced] == 2 and ml_labels[0, forced] == 3  # first-listed vs later box wins
    at_half = (iou[0] == 0.5) & (iou[1:] < 0.5).all(0)
    at_half[int(iou[0].argmax())] = False  # leave gt 0's forced anchor out
    assert at_half.any() and (tf_labels[0, at_half] == 1).all() and (ml_labels[0, at_half] == 0).all()


def test_matcher_equals_tf_transcription_on_random_boxes() -> None:
    g = torch.Generator().manual_seed(5)
    spec = get_spec("ssd320_resnet50_fpn").anchors
    xy = torch.rand(3, 6, 2, generator=g) * 0.7
    gt = torch.cat([xy, xy + torch.rand(3, 6, 2, generator=g) * 0.3 + 0.02], -1)
    gt[:, 4] = gt[:, 3]  # duplicates: a shared forced anchor in every image
    labels = torch.randint(1, 81, (3, 6), generator=g)
    labels[2, 5] = -1  # padding
    _, ours = TargetEncoder(spec, rule=TF_ARGMAX_MATCH)(gt, labels)
    for i in range(3):
        real = labels[i] > 0
        match = tf_argmax_matcher(anchor_iou(gt[i : i + 1, real], spec)[0].double().numpy())
        assert ours[i].tolist() == np.where(match >= 0, labels[i, real].numpy()[match], 0).tolist()


# ------------------------------------------------------------------------------------------------ post-processing


def tf_multiclass_nms(boxes, scores, score_thresh, iou_thresh, max_size_per_class, max_total_size):
    """``core/post_processing.py`` ``multiclass_non_max_suppression`` for one image, transcribed: per class, every
    score above the threshold enters ``non_max_suppression(max_output_size=max_size_per_class)`` (greedy, the
    first kept), then all classes are sorted by score and the best ``max_total_size`` kept.
    boxes [A, 4] xyxy, scores [A, K] -> (boxes, scores, labels 1..K)."""
    out_b, out_s, out_l = [], [], []
    for k in range(scores.shape[1]):
        mask = scores[:, k] > score_thresh
        b, s = boxes[mask], scores[mask, k]
        selected: list[int] = []  # greedy: a box is kept unless a kept, higher-scored one overlaps it > iou_thresh
        for i in s.argsort(descending=True, stable=True).tolist():
            if len(selected) == max_size_per_class:
                break
            if not selected or box_iou(b[i : i + 1], b[selected]).max() <= iou_thresh:
                selected.append(i)
        out_b.append(b[selected]), out_s.append(s[selected]), out_l.append(torch.full((len(selected),), k + 1))
    b, s, lab = torch.cat(out_b), torch.cat(out_s), torch.cat(out_l)
    order = s.argsort(descending=True, stable=True)[:max_total_size]
    return b[order], s[order], lab[order]


def mlperf_decode(boxes, scores, score_thresh, iou_thresh, candidates_per_class, max_total_size):
    """The MLPerf meaning: the best ``candidates_per_class`` scores of a class enter NMS."""
    out_b, out_s, out_l = [], [], []
    for k in range(scores.shape[1]):
        s, idx = scores[:, k].topk(candidates_per_class)
        keep = s > score_thresh
        b, s = boxes[idx[keep]], s[keep]
        selected = nms(b, s, iou_thresh)
        out_b.append(b[selected]), out_s.append(s[selected]), out_l.append(torch.full((len(selected),), k + 1))
    b, s, lab = torch.cat(out_b), torch.cat(out_s), torch.cat(out_l)
    order = s.argsort(descending=True, stable=True)[:max_total_size]
    return b[order], s[order], lab[order]


def crafted_ssd320_outputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two images of SSD320 outputs. Class 1 of image 0: its best 100 candidates decode to one box (NMS keeps 1),
    the next 50 are separate small boxes. Everything else: distinct low scores (all above 1e-8) on the anchors."""
    g = torch.Generator().manual_seed(11)
    spec = get_spec("ssd320_resnet50_fpn").anchors
    anchors = default_boxes(spec)
    a = anchors.shape[0]
    logits = -8.0 + torch.randn(2, a, 3, generator=g) * 0.5
    boxes = anchors[None].repeat(2, 1, 1)  # cxcywh normalized
    dup = torch.arange(100) * 97 % a
    sep = (torch.arange(50) * 101 + 7) % a
    assert not set(dup.tolist()) & set(sep.tolist())
    boxes[0, dup] = torch.tensor([0.5, 0.5, 0.3, 0.3])
    grid = torch.stack(torch.meshgrid(torch.arange(10), torch.arange(5), indexing="ij"), -1).reshape(-1, 2)
    boxes[0, sep] = torch.cat([grid.flip(-1) * 0.09 + 0.05, torch.full((50, 2), 0.02)], 1)
    logits[0, dup, 0] = torch.linspace(3.0, 2.0, 100)
    logits[0, sep, 0] = torch.linspace(1.0, 0.5, 50)
    reg = BoxCoder().encode(boxes, anchors)
    return reg, logits, torch.tensor([[320, 320], [480, 640]])


def sort_rows(x: torch.Tensor) -> torch.Tensor:
    for col in reversed(range(x.shape[1])):
        x = x[x[:, col].argsort(stable=True)]
    return x


@pytest.mark.parametrize("backend", ["numba", "torchvision"])
def test_postprocess_per_class_cap_meanings(monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    from singleshot.box import nms as nms_module

    monkeypatch.setattr(nms_module, "_BACKEND", backend)
    spec = get_spec("ssd320_resnet50_fpn")
    reg, logits, sizes = crafted_ssd320_outputs()
    after = build_postprocessor(spec)(reg, logits, sizes)
    before = build_postprocessor(spec, per_class_cap="before_nms")(reg, logits, sizes)
    anchors = default_boxes(spec.anchors)
    for i in range(2):
        wh = sizes[i].flip(0).repeat(2).float()
        boxes = box_convert(BoxCoder().decode(reg[i], anchors), "cxcywh", "xyxy") * wh
        scores = logits[i].sigmoid()
        for dets, ref_fn in ((after, tf_multiclass_nms), (before, mlperf_decode)):
            rb, rs, rl = ref_fn(boxes, scores, 1e-8, 0.6, 100, 100)
            rb = torch.minimum(rb.clamp(min=0), wh)
            ours = torch.cat([dets[i]["scores"][:, None], dets[i]["labels"][:, None].float(), dets[i]["boxes"]], 1)
            ref = torch.cat([rs[:, None], rl[:, None].float(), rb], 1)
            assert ours.shape == ref.shape == (100, 6)
            torch.testing.assert_close(sort_rows(ours), sort_rows(ref))
    # Image 0, class 1: TF keeps the merged box and the 50 separate ones; MLPerf's 100 candidates are all duplicates.
    assert ((after[0]["labels"] == 1) & (after[0]["scores"] > 0.5)).sum() == 51
    assert (before[0]["labels"] == 1).sum() == 1


def test_after_nms_cap_needs_a_second_round_when_clusters_are_dense() -> None:
    """A class whose best 200 candidates are duplicates of one box: the first top-k round keeps 1 < 100, so the
    group is redone with more candidates; the result still equals the TF transcription."""
    spec = get_spec("ssd320_resnet50_fpn")
    reg, logits, sizes = crafted_ssd320_outputs()
    anchors = default_boxes(spec.anchors)
    dup = torch.arange(300) * 41 % anchors.shape[0]
    target = anchors.clone()
    target[dup] = torch.tensor([0.3, 0.3, 0.2, 0.2])
    reg[1] = BoxCoder().encode(target, anchors)
    logits[1, dup, 2] = torch.linspace(4.0, 3.0, 300)
    post = PostProcessor(spec.anchors, "sigmoid", PostprocessConfig(1e-8, 0.6, 100, 100, "after_nms"))
    dets = post(reg, logits, sizes)
    wh = sizes[1].flip(0).repeat(2).float()
    boxes = box_convert(BoxCoder().decode(reg[1], anchors), "cxcywh", "xyxy") * wh
    rb, rs, rl = tf_multiclass_nms(boxes, logits[1].sigmoid(), 1e-8, 0.6, 100, 100)
    ours = torch.cat([dets[1]["scores"][:, None], dets[1]["labels"][:, None].float(), dets[1]["boxes"]], 1)
    ref = torch.cat([rs[:, None], rl[:, None].float(), torch.minimum(rb.clamp(min=0), wh)], 1)
    torch.testing.assert_close(sort_rows(ours), sort_rows(ref))


# ---------------------------------------------------------------------------------------------------- the preset


@pytest.mark.slow
def test_nvidia_ssd320_preset_trains_on_synth_and_evaluates(tmp_path) -> None:
    """The preset's short run: 20 steps at batch 4 on the synthetic set, loss falls, the 12 COCO numbers come out.

    ``train.freeze_bn=false`` here only because no ImageNet backbone file exists offline: the recipe freezes ImageNet
    statistics, and a random ResNet-50 on frozen initial statistics (mean 0, variance 1) is left unnormalized."""
    import json

    from singleshot.engine.config import load_config
    from singleshot.engine.trainer import Trainer

    run = tmp_path / "run"
    overrides = {
        "data.train": "synth", "data.val": "synth", "model.num_classes": "null", "train.max_steps": 20,
        "data.batch_size": 4,
        "data.val_batch_size": 8, "data.val_limit": 16, "data.num_workers": 0, "train.freeze_bn": "false",
        "train.log_every": 1, "train.progress": "none", "run.dir": str(run), "run.report": "false",
        "run.tensorboard": "false",
    }  # fmt: skip
    cfg = load_config("nvidia_ssd320_resnet50_fpn", [f"{k}={v}" for k, v in overrides.items()])
    with pytest.warns(UserWarning, match="resnet50-0676ba61.pth"):
        result = Trainer(cfg).run()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r.get("kind") == "train"]
    assert len(losses) == 20 and sum(losses[-5:]) < sum(losses[:5])
    assert result.final_stats is not None and len(result.final_stats) == 12
