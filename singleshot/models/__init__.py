"""Detector models (raw outputs only) and the preset registry."""

from singleshot.models.registry import SPECS, build_model, list_models
from singleshot.models.spec import DetectorSpec

__all__ = ["SPECS", "DetectorSpec", "build_model", "list_models"]
