"""Backbones built from torchvision's ResNet definitions, truncated and re-strided as the SSD recipes require.

Keeping torchvision's module names (``conv1``, ``bn1``, ``layer1`` ...) means a torchvision ImageNet checkpoint
file loads into the backbone key-for-key (:func:`load_backbone_weights`). Nothing is ever downloaded.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet
from torchvision.ops import FrozenBatchNorm2d as _TorchvisionFrozenBN

_RESNETS = {
    "resnet18": resnet.resnet18,
    "resnet34": resnet.resnet34,
    "resnet50": resnet.resnet50,
}


def resnet_trunk(arch: str, last_layer: int, stride1_last: bool, blocks_per_layer: int | None = None) -> nn.Sequential:
    """``conv1 .. layer{last_layer}`` of a torchvision ResNet as an ``nn.Sequential`` with torchvision's names.

    Args:
        arch: "resnet18", "resnet34" or "resnet50".
        last_layer: keep ``layer1 .. layer{last_layer}`` (2, 3 or 4).
        stride1_last: make the first block of the last kept layer stride 1 (its conv and downsample), the SSD300
            modification that keeps conv4_x at 38x38 for a 300 px input.
        blocks_per_layer: keep only the first N blocks of each layer (``None``: all). The kept blocks have the
            ResNet's own names, so an ImageNet file of ``arch`` still loads into them (the rest of it is ignored).
    """
    if arch not in _RESNETS:
        raise ValueError(f"unknown backbone {arch!r}; choose from {sorted(_RESNETS)}")
    net = _RESNETS[arch](weights=None)
    names = ["conv1", "bn1", "relu", "maxpool"] + [f"layer{i}" for i in range(1, last_layer + 1)]
    trunk = nn.Sequential(OrderedDict((n, getattr(net, n)) for n in names))
    if blocks_per_layer is not None:
        for i in range(1, last_layer + 1):
            setattr(trunk, f"layer{i}", getattr(trunk, f"layer{i}")[:blocks_per_layer])
    if stride1_last:
        block = getattr(trunk, f"layer{last_layer}")[0]
        for conv in (block.conv1, getattr(block, "conv2", None), block.downsample[0]):
            if conv is not None and conv.stride != (1, 1):
                conv.stride = (1, 1)
    return trunk


def resnet_out_channels(arch: str, layer: int) -> int:
    """Output channels of ``layer{layer}`` of a torchvision ResNet."""
    expansion = 4 if arch == "resnet50" else 1
    return 64 * 2 ** (layer - 1) * expansion


def load_backbone_weights(module: nn.Module, path: str | Path, arch: str = "ResNet") -> list[str]:
    """Load a torchvision ImageNet checkpoint (e.g. ``resnet34-333f7ec4.pth``) into a :func:`resnet_trunk`.

    Keys of the file that the trunk does not have (``fc``, ``layer4`` of a truncated net) are ignored and returned.
    Every tensor of the trunk must be present in the file with the same shape; otherwise a ``ValueError`` names
    the file and the missing or mismatching keys. BatchNorm's ``num_batches_tracked`` counters are the exception:
    torchvision's original ImageNet files (``resnet34-333f7ec4.pth``, ``resnet50-0676ba61.pth``) predate them, so
    a file without them keeps the model's own. Missing/unreadable files raise ``FileNotFoundError`` /
    ``ValueError`` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained backbone file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a corrupt or non-checkpoint file
        raise ValueError(f"cannot read pretrained backbone file {path}: {exc}") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"pretrained backbone file {path} does not hold a state dict of tensors")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = module.state_dict()
    for key in own:  # counters the file predates: keep the model's
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = own[key]
    missing = sorted(k for k in own if k not in state)
    mismatched = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    )
    if missing or mismatched:
        lines = [f"pretrained backbone file {path} does not match the {arch} backbone:"]
        if missing:
            lines.append(
                f"  missing keys ({len(missing)}): {', '.join(missing[:20])}{' ...' if len(missing) > 20 else ''}"
            )
        if mismatched:
            lines.append(f"  shape mismatches ({len(mismatched)}): {'; '.join(mismatched[:20])}")
        raise ValueError("\n".join(lines))
    module.load_state_dict({k: state[k] for k in own}, strict=True)
    return sorted(k for k in state if k not in own)


class FrozenBatchNorm2d(_TorchvisionFrozenBN):
    """``torchvision.ops.FrozenBatchNorm2d`` (statistics and affine fixed, no parameters) that keeps BatchNorm's
    ``num_batches_tracked`` buffer, so a frozen model's state dict has exactly the keys of the unfrozen one and
    checkpoints load into either (a frozen BN computes what an ``nn.BatchNorm2d`` in eval mode computes)."""

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__(num_features, eps)
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        state_dict.setdefault(prefix + "num_batches_tracked", self.num_batches_tracked.clone())
        nn.Module._load_from_state_dict(self, state_dict, prefix, *args, **kwargs)  # not torchvision's: keep the key


def freeze_batchnorm(module: nn.Module) -> int:
    """Replace every ``BatchNorm2d`` (SyncBatchNorm included) inside ``module`` by a :class:`FrozenBatchNorm2d` with
    its current statistics and affine; returns how many were replaced. The recipes that freeze backbone BN (SSD320
    v1.2) do it on ImageNet-pretrained weights: frozen freshly initialised BN is the identity."""
    count = 0
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and child.running_mean is not None and child.affine:
            frozen = FrozenBatchNorm2d(child.num_features, child.eps).to(child.running_mean.device)
            frozen.load_state_dict(child.state_dict())  # statistics, affine and the counter (if it has one)
            setattr(module, name, frozen)
            count += 1
        else:
            count += freeze_batchnorm(child)
    return count
