"""What a detector *is*, beyond its weights: the facts that loss, decoding and data need to agree on."""

from __future__ import annotations

from dataclasses import dataclass, field

from singleshot.box.anchors import AnchorSpec
from singleshot.box.postprocess import PostprocessConfig


@dataclass(frozen=True)
class DetectorSpec:
    """Static description of a detector preset.

    Attributes:
        name: registry name, e.g. "ssd300_resnet34".
        image_size: square input side in pixels the model (and its default boxes) expect.
        anchors: the default-box spec; ``default_boxes(anchors)`` has one row per predicted box.
        classifier: "softmax" (num_classes channels, 0 = background) or "sigmoid" (num_classes - 1 channels).
        loss: "multibox" (hard-negative-mined softmax) or "focal".
        postprocess: decoding/NMS defaults of the published evaluation.
        mean, std: input normalization the recipe trains with (RGB in [0, 1]).
    """

    name: str
    image_size: int
    anchors: AnchorSpec
    classifier: str = "softmax"
    loss: str = "multibox"
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def num_outputs(self, num_classes: int) -> int:
        """Classification channels for ``num_classes`` labels (background included)."""
        return num_classes if self.classifier == "softmax" else num_classes - 1
