"""Model presets: parameter counts, output contracts, learning, and torchvision backbone weights by path."""

import pytest
import torch
from torchvision.models import resnet18

import singleshot
from singleshot.box import default_boxes


def num_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("name", "expected"), [("ssd300_resnet34", 19_972_534), ("ssd300_resnet50", 22_894_902)])
def test_reference_parameter_counts(name, expected):
    assert num_params(singleshot.build_model(name, num_classes=81)) == expected


def test_tiny_preset_is_small():
    assert num_params(singleshot.build_model("ssd_tiny", num_classes=81)) < 4_000_000  # a few million at COCO size
    assert num_params(singleshot.build_model("ssd_tiny", num_classes=7)) < 1_500_000


@pytest.mark.parametrize("name", singleshot.list_models())
def test_forward_shapes_match_default_boxes(name):
    model = singleshot.build_model(name, num_classes=5).eval()
    s = model.spec.image_size
    with torch.no_grad():
        reg, logits = model(torch.randn(1, 3, s, s))
    a = default_boxes(model.spec.anchors).shape[0]
    assert reg.shape == (1, a, 4)
    assert logits.shape == (1, a, model.spec.num_outputs(5))


def test_mlperf_extra_blocks_have_bias_and_no_bn_nvidia_has_bn():
    r34 = singleshot.build_model("ssd300_resnet34")
    r50 = singleshot.build_model("ssd300_resnet50")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in r34.additional_blocks.modules())
    assert all(m.bias is not None for m in r34.additional_blocks.modules() if isinstance(m, torch.nn.Conv2d))
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in r50.additional_blocks.modules())
    # conv4_x at stride 1: a 300 px input gives a 38x38 first level for both.
    with torch.no_grad():
        for m in (r34.eval(), r50.eval()):
            assert m.features(torch.randn(1, 3, 300, 300))[0].shape[-1] == 38


def test_fpn_class_bias_prior():
    model = singleshot.build_model("ssd320_resnet50_fpn", num_classes=81)
    assert torch.equal(model.cls_pred.bias, torch.full_like(model.cls_pred.bias, -4.6))  # the TF config's value


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown model 'ssd512'.*ssd300_resnet34"):
        singleshot.build_model("ssd512")


def test_tiny_overfits_one_batch():
    torch.manual_seed(0)
    model = singleshot.build_model("ssd_tiny", num_classes=4)
    encode = singleshot.TargetEncoder(model.spec.anchors)
    loss_fn = singleshot.build_loss(model.spec)
    images = torch.randn(4, 3, 160, 160)
    boxes = torch.tensor([[[0.1, 0.1, 0.6, 0.7], [0.5, 0.5, 0.9, 0.95]]]).repeat(4, 1, 1)
    labels = torch.tensor([[1, 2], [2, 3], [3, -1], [1, 1]])
    offsets, targets = encode(boxes, labels)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(40):
        loss = loss_fn(*model(images), offsets, targets)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], losses


def test_pretrained_backbone_loads_torchvision_file(tmp_path):
    net = resnet18()
    path = tmp_path / "resnet18-test.pth"
    torch.save(net.state_dict(), path)
    model = singleshot.build_model("ssd_tiny", num_classes=3, pretrained_backbone=path)
    assert torch.equal(model.backbone.conv1.weight, net.conv1.weight)
    assert torch.equal(model.backbone.layer2[0].bn2.running_var, net.layer2[0].bn2.running_var)
    assert torch.equal(model.backbone.layer1[0].conv2.weight, net.layer1[0].conv2.weight)
    assert len(model.backbone.layer1) == len(model.backbone.layer2) == 1  # ssd_tiny keeps each layer's first block


def test_pretrained_backbone_rejects_wrong_file(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(resnet18().state_dict(), path)
    expected = r"resnet18\.pth does not match the resnet34 backbone:\n.*missing keys.*layer1\.2"
    with pytest.raises(ValueError, match=expected) as err:
        singleshot.build_model("ssd300_resnet34", pretrained_backbone=path)
    assert "missing keys (" in str(err.value)
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        singleshot.build_model("ssd_tiny", pretrained_backbone=tmp_path / "nope.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"cannot read pretrained backbone file .*garbage\.pth"):
        singleshot.build_model("ssd_tiny", pretrained_backbone=garbage)


def test_pretrained_backbone_file_without_bn_counters_loads(tmp_path):
    """torchvision's original ImageNet files (resnet34-333f7ec4.pth) predate BatchNorm's num_batches_tracked."""
    net = resnet18()
    path = tmp_path / "resnet18-old.pth"
    torch.save({k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}, path)
    model = singleshot.build_model("ssd_tiny", num_classes=3, pretrained_backbone=path)
    assert torch.equal(model.backbone.layer2[0].bn2.running_mean, net.layer2[0].bn2.running_mean)


def test_freeze_batchnorm_keeps_eval_outputs_and_state_dict_keys():
    from singleshot.models.backbones import FrozenBatchNorm2d, freeze_batchnorm

    torch.manual_seed(0)
    model = singleshot.build_model("ssd_tiny", num_classes=3)
    for m in model.backbone.modules():  # non-trivial statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    keys = sorted(model.state_dict())
    x = torch.rand(2, 3, 160, 160)
    model.eval()
    expected = model.backbone(x)
    n = freeze_batchnorm(model.backbone)
    assert n == sum(isinstance(m, FrozenBatchNorm2d) for m in model.backbone.modules()) > 0
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.backbone.modules())
    model.train()  # frozen BN ignores the mode: the backbone computes what it computed in eval mode
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    torch.testing.assert_close(model.backbone(x), expected, rtol=1e-5, atol=1e-5)
    model(x)[1].sum().backward()
    assert all(torch.equal(before[k], v) for k, v in model.backbone.state_dict().items())
    assert not any(p.ndim == 1 for p in model.backbone.parameters())  # BN weight/bias are buffers now
    assert all(p.grad is not None for p in model.backbone.parameters())  # the convs still train
    # The same keys as the unfrozen model: checkpoints load both ways.
    assert sorted(model.state_dict()) == keys
    plain = singleshot.build_model("ssd_tiny", num_classes=3)
    plain.load_state_dict(model.state_dict())
    model.load_state_dict(plain.state_dict())
    plain.eval()
    torch.testing.assert_close(plain.backbone(x), model.eval().backbone(x), rtol=1e-5, atol=1e-5)
