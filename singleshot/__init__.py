"""singleshot: SSD object detectors (MLPerf SSD300-ResNet-34, NVIDIA SSD300 v1.1, SSD320 v1.2) in PyTorch."""

from singleshot._lazy import lazy_exports

# Names are imported on first use (PEP 562) so that `singleshot --help` and the config tools start without
# loading torch; `from singleshot import X` imports X's module then.
_LAZY = {
    "BoxCoder": "singleshot.box",
    "FocalLoss": "singleshot.box",
    "MultiBoxLoss": "singleshot.box",
    "PostProcessor": "singleshot.box",
    "TargetEncoder": "singleshot.box",
    "default_boxes": "singleshot.box",
    "build_loss": "singleshot.box.factory",
    "build_postprocessor": "singleshot.box.factory",
    "Detector": "singleshot.inference",
    "InferenceCore": "singleshot.inference.core",
    "load_model": "singleshot.inference.loading",
    "build_model": "singleshot.interop.weights",
    "DetectorSpec": "singleshot.models",
    "get_spec": "singleshot.models",
    "list_models": "singleshot.models",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())


__version__ = "0.1.0"

__all__ = [
    "BoxCoder",
    "Detector",
    "DetectorSpec",
    "FocalLoss",
    "InferenceCore",
    "MultiBoxLoss",
    "PostProcessor",
    "TargetEncoder",
    "build_loss",
    "build_model",
    "build_postprocessor",
    "default_boxes",
    "get_spec",
    "list_models",
    "load_model",
]
