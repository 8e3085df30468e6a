"""What a detector *is*, beyond its weights: the facts that loss, decoding and data need to agree on."""

from __future__ import annotations

from dataclasses import dataclass, field

from singleshot.box.anchors import AnchorSpec
from singleshot.box.classifier import SOFTMAX, Classifier, classifier_named
from singleshot.box.coder import MatchRule
from singleshot.box.postprocess import PostprocessConfig


@dataclass(frozen=True)
class DetectorSpec:
    """Static description of a detector preset.

    Attributes:
        name: registry name, e.g. "ssd300_resnet34".
        image_size: square input side in pixels the model (and its default boxes) expect.
        anchors: the default-box spec; ``default_boxes(anchors)`` has one row per predicted box.
        classifier: the head's classifier kind (:class:`~singleshot.box.classifier.Classifier`): ``SOFTMAX``
            (num_classes channels, 0 = background) or ``SIGMOID`` (num_classes - 1 channels); its name ("softmax",
            "sigmoid") is accepted and replaced by the object.
        loss: "multibox" (hard-negative-mined softmax) or "focal".
        box_loss: the multibox loss's box term: "smooth_l1" over the offsets (the published SSD300 recipes) or
            "giou" (``2 * (1 - GIoU)`` of the decoded boxes).
        box_loss_by_codesize: divide the box loss by matches x 4 (the code size) instead of by matches, as TF's
            ``normalize_loc_loss_by_codesize: true`` does (SSD320 v1.2); the class loss is divided by matches.
        match: how default boxes are matched to ground truth (:class:`~singleshot.box.coder.MatchRule`).
        postprocess: decoding/NMS defaults of the published evaluation.
        mean, std: input normalization the recipe trains with (RGB in [0, 1]).
        reference_backbone_file: the torchvision ImageNet file the published recipe starts from (its equivalent,
            for a TF recipe); training without ``model.pretrained_backbone`` warns and names it. None: the preset
            has no reference recipe.
        size_multiple: other input sizes the architecture takes (``model.image_size``): multiples of this, large
            enough for every feature map to keep at least one cell; the registered ``image_size`` always works.
    """

    name: str
    image_size: int
    anchors: AnchorSpec
    classifier: Classifier = SOFTMAX
    loss: str = "multibox"
    box_loss: str = "smooth_l1"
    box_loss_by_codesize: bool = False
    match: MatchRule = field(default_factory=MatchRule)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    reference_backbone_file: str | None = None
    size_multiple: int = 32

    def __post_init__(self) -> None:
        object.__setattr__(self, "classifier", classifier_named(self.classifier))

    def num_outputs(self, num_classes: int) -> int:
        """Classification channels for ``num_classes`` labels (background included)."""
        return self.classifier.num_outputs(num_classes)
