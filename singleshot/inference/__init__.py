"""Inference and deployment: the one core from pixels to detections (:mod:`.core`), opening any model file
(:mod:`.loading`), the :class:`Detector` API, drawing, export and benchmarks."""

from singleshot.inference.core import InferenceCore
from singleshot.inference.detector import Detector
from singleshot.inference.draw import draw_detections, save_image
from singleshot.inference.loading import LoadedModel, load_model

__all__ = ["Detector", "InferenceCore", "LoadedModel", "draw_detections", "load_model", "save_image"]
