"""Inference and deployment: the :class:`Detector` API, drawing, ONNX export and benchmarks."""

from singleshot.inference.detector import Detector
from singleshot.inference.draw import draw_detections, save_image

__all__ = ["Detector", "draw_detections", "save_image"]
