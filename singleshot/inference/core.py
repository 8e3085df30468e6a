"""The one way from pixels to detections: :class:`InferenceCore`.

    core = InferenceCore(model)                      # model: raw outputs, ``model.spec`` its DetectorSpec
    detections = core.detect([image_uint8_chw, ...])  # list of {"boxes" xyxy pixels, "scores", "labels"}

Every path that turns images into detections goes through a core: :class:`~singleshot.inference.Detector` (and so
``singleshot predict``), evaluation (training's and ``singleshot eval``'s), the run report's pictures, the inference
benchmarks and export's checks (its NMS graph decodes with the core's post-processor). What it holds is decided
once, when it is built:

* preprocessing: the validation transform for a batch (:func:`~singleshot.data.transforms.inference_batch`: the
  loader's square resize, so predictions match evaluation, and the normalization), in the model's input layout;
* the forward under the one precision decision (:func:`~singleshot.precision.resolve_precision`), its autocast
  context made once;
* one :class:`~singleshot.box.PostProcessor` per set of thresholds: the core's own built with it, others the first
  time a call asks for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from singleshot.accelerator import capabilities, use_channels_last
from singleshot.box.factory import build_postprocessor
from singleshot.box.postprocess import PostProcessor
from singleshot.data.transforms import inference_batch
from singleshot.precision import autocast, resolve_precision

Detections = list[dict[str, Tensor]]


class InferenceCore:
    """A raw-output model with its preprocessing, precision and post-processing.

    Args:
        model: ``images float[B, 3, S, S]`` normalized -> ``(bbox_regression [B, A, 4], cls_logits [B, A, C])``; a
            singleshot detector (plain, EMA copy, compiled) or an exported graph behind
            :class:`~singleshot.inference.loading.GraphModel`. It is used where it is: the core neither moves it nor
            changes its mode (:meth:`prepare` does that for a model loaded for inference).
        spec: its :class:`~singleshot.models.DetectorSpec` (default ``model.spec``).
        device: where inputs go (default: the device of the model's first parameter).
        precision: "auto" (fp16 on CUDA, fp32 elsewhere), "fp32", "fp16" or "bf16": the forward's autocast.
        channels_last: inputs in channels-last layout (default: the device's preference, see
            :func:`~singleshot.accelerator.use_channels_last`).
        postprocess: thresholds replacing the spec's published ones (``score_threshold``, ``nms_iou``,
            ``candidates_per_class``, ``max_detections``; None keeps the spec's) for every call; a call may replace
            them again.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        spec: Any = None,
        device: torch.device | str | None = None,
        precision: str = "auto",
        channels_last: bool | None = None,
        **postprocess: Any,
    ) -> None:
        self.model = model
        self.spec = spec if spec is not None else model.spec
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.precision = resolve_precision(precision, self.device)
        self.channels_last = use_channels_last(self.device, channels_last)
        self.pin_memory = capabilities(self.device).pin_memory
        self.autocast = autocast(self.device, self.precision)  # one context, entered once per forward
        self.defaults = {k: v for k, v in postprocess.items() if v is not None}
        self._post: dict[tuple[tuple[str, Any], ...], PostProcessor] = {}
        self.postprocessor()  # the core's own thresholds: built now, not on the first image

    @staticmethod
    def prepare(model: nn.Module, device: torch.device | str, channels_last: bool | None = None) -> nn.Module:
        """``model`` on ``device``, in eval mode, in the device's preferred memory layout (for inference only)."""
        device = torch.device(device)
        model = model.to(device).eval()
        return model.to(memory_format=torch.channels_last) if use_channels_last(device, channels_last) else model

    def postprocessor(self, **overrides: Any) -> PostProcessor:
        """The post-processor for the core's thresholds with ``overrides`` (None values ignored), built once."""
        settings = {**self.defaults, **{k: v for k, v in overrides.items() if v is not None}}
        key = tuple(sorted(settings.items()))
        post = self._post.get(key)
        if post is None:
            post = self._post[key] = build_postprocessor(self.spec, **settings)
        return post

    def preprocess(self, images: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """``B`` images ``uint8[3, H_i, W_i]`` RGB -> ``(x float32[B, 3, S, S] normalized on the device, sizes
        int64[B, 2] (H_i, W_i))``. The uint8 resize runs on the CPU; the uint8 batch moves (pinned where that helps)
        and is normalized on the device."""
        spec = self.spec
        x = inference_batch(images, spec.image_size, spec.mean, spec.std, self.device,
                            channels_last=self.channels_last, pin_memory=self.pin_memory)  # fmt: skip
        sizes = torch.tensor([[im.shape[-2], im.shape[-1]] for im in images], device=self.device)
        return x, sizes

    @torch.no_grad()
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x float[B, 3, S, S]`` normalized -> the model's ``(bbox_regression [B, A, 4], cls_logits [B, A, C])``
        in float32, the forward under the core's autocast."""
        with self.autocast:
            bbox_regression, cls_logits = self.model(x)
        return bbox_regression.float(), cls_logits.float()

    def postprocess(self, outputs: tuple[Tensor, Tensor], sizes: Tensor, **overrides: Any) -> Detections:
        """Raw outputs -> per image ``boxes [K, 4]`` xyxy in pixels of the image whose ``(H, W)`` is in ``sizes
        [B, 2]``, ``scores [K]`` descending, ``labels [K]`` int64 in 1..num_classes-1."""
        return self.postprocessor(**overrides)(outputs[0], outputs[1], sizes)

    def detect_batch(self, x: Tensor, sizes: Tensor, **overrides: Any) -> Detections:
        """A batch already preprocessed (a validation loader's ``images`` and ``orig_sizes``) -> detections."""
        return self.postprocess(self.forward(x), sizes, **overrides)

    def detect(self, images: Sequence[Tensor], **overrides: Any) -> Detections:
        """Images ``uint8[3, H_i, W_i]`` RGB (any sizes) -> detections in each image's pixels (see
        :meth:`postprocess`); ``overrides`` as :meth:`postprocessor` takes them."""
        if not images:
            return []
        return self.detect_batch(*self.preprocess(images), **overrides)
