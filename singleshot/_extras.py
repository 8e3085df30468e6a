"""Optional dependencies: the import of one, or an error that names the pip extra to install.

The required install trains and evaluates. Export (ONNX, INT8, safetensors) and MLPerf logging each come with an
extra (``pip install 'singleshot[export]'``, ``'singleshot[mlperf]'``; ``'singleshot[all]'`` for everything), so a
command that needs a missing one says which.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""


def require(module: str, extra: str, needed_for: str) -> ModuleType:
    """``importlib.import_module(module)``, or :class:`MissingExtraError` saying ``needed_for`` needs ``extra``."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = module.split(".")[0]
        if exc.name is not None and exc.name.split(".")[0] != top:
            raise  # the package is there but something it imports is not: not ours to rephrase
        raise MissingExtraError(
            f"{needed_for} needs the optional package '{top}', which is not installed: "
            f"pip install 'singleshot[{extra}]'"
        ) from exc
