"""Detector models (raw outputs only) and the preset registry (read through its functions)."""

from singleshot.models.registry import build_model, get_spec, list_models
from singleshot.models.spec import DetectorSpec

__all__ = ["DetectorSpec", "build_model", "get_spec", "list_models"]
