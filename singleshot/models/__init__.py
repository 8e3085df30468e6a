"""Detector models (raw outputs only) and the preset registry (read through its functions)."""

from singleshot.models.registry import build_architecture, get_spec, list_models
from singleshot.models.spec import DetectorSpec

__all__ = ["DetectorSpec", "build_architecture", "get_spec", "list_models"]
