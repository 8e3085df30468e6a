"""Every export format behind one call (:func:`export`), its metadata, and its format told from a file name; files
are opened again by :mod:`singleshot.inference.loading`.

=============  ==========================================================  =========================================
format         file                                                        metadata (:mod:`.metadata`)
=============  ==========================================================  =========================================
onnx           ONNX graph, dynamic batch (:mod:`.export`), raw or NMS       ``metadata_props``, one JSON value per key
onnx --int8    the same, statically quantized (:mod:`.quantize`)           the same, plus ``int8``
torchscript    ``torch.jit.trace``; the batch size stays free               extra file ``singleshot.json``
pt2            ``torch.export`` ExportedProgram, dynamic batch Dim          extra file ``singleshot.json``
safetensors    weights only (:mod:`singleshot.safetensors_io`)             the safetensors header
=============  ==========================================================  =========================================

Graph formats take ``uint8_input`` (normalization inside) and ``with_nms`` (decoding + NMS inside; the
``singleshot::grouped_nms`` op then needs ``import singleshot`` before loading a TorchScript or pt2 file).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from singleshot.inference.export import example_input, export_module, export_onnx, output_names, read_onnx_metadata
from singleshot.inference.metadata import export_metadata

FORMATS = ("onnx", "torchscript", "pt2", "safetensors")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "pt2": ".pt2", "safetensors": ".safetensors"}
EXTRA_FILE = "singleshot.json"


def export(
    model: nn.Module,
    path: str | os.PathLike[str],
    fmt: str,
    *,
    classes: Sequence[str],
    label_to_category_id: Mapping[int, int] | None = None,
    with_nms: bool = False,
    uint8_input: bool = False,
    **postprocess_overrides: float,
) -> Path:
    """Write ``model`` as ``fmt`` (one of :data:`FORMATS`) with its metadata; returns the path written."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    if fmt == "safetensors" and (with_nms or uint8_input):
        raise ValueError("safetensors holds weights only: --with-nms and --uint8-input apply to graph formats")
    meta = export_metadata(model, classes, label_to_category_id, with_nms=with_nms, uint8_input=uint8_input,
                           outputs=output_names(with_nms), **postprocess_overrides)
    meta["export_format"] = fmt
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "onnx":
        return export_onnx(model, path, with_nms=with_nms, uint8_input=uint8_input, metadata=meta,
                           **postprocess_overrides)
    if fmt == "safetensors":
        from singleshot.safetensors_io import save_safetensors

        return save_safetensors(model.state_dict(), path, meta)
    module = export_module(model, with_nms=with_nms, uint8_input=uint8_input, **postprocess_overrides)
    example = example_input(model, 2, uint8_input)
    extra = {EXTRA_FILE: json.dumps(meta)}
    with torch.no_grad():
        if fmt == "torchscript":
            with warnings.catch_warnings():  # the tracer warns about shape-derived Python ints it records
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                traced = torch.jit.trace(module, (example,), check_trace=False)
            torch.jit.save(traced, os.fspath(path), _extra_files=extra)
        else:
            batch = torch.export.Dim("batch", min=1, max=4096)
            program = torch.export.export(module, (example,), dynamic_shapes={"images": {0: batch}})
            torch.export.save(program, os.fspath(path), extra_files=extra)
    return path


def read_metadata(path: str | os.PathLike[str], fmt: str | None = None) -> dict[str, Any]:
    """The metadata dict stored in an exported file of any format (``fmt`` guessed from the name when None)."""
    fmt = fmt or guess_format(path)
    if fmt == "onnx":
        return read_onnx_metadata(path)
    if fmt == "safetensors":
        from singleshot.safetensors_io import read_safetensors_metadata

        return read_safetensors_metadata(path)
    extra = {EXTRA_FILE: ""}
    if fmt == "torchscript":
        torch.jit.load(os.fspath(path), map_location="cpu", _extra_files=extra)
    else:
        torch.export.load(os.fspath(path), extra_files=extra)
    return json.loads(extra[EXTRA_FILE])


def guess_format(path: str | os.PathLike[str]) -> str:
    name = os.fspath(path).lower()
    for fmt in ("onnx", "pt2", "safetensors"):
        if name.endswith(SUFFIXES[fmt]):
            return fmt
    if name.endswith((".torchscript", ".torchscript.pt", ".jit", ".ts")):
        return "torchscript"
    raise ValueError(f"{path}: cannot tell the export format from the name; pass the format explicitly")


def graph_format(path: str | os.PathLike[str]) -> str | None:
    """The export format of a graph file that :func:`load_runner` opens (onnx, torchscript, pt2), by its name;
    None for anything else (a checkpoint, safetensors weights)."""
    try:
        fmt = guess_format(path)
    except ValueError:
        return None
    return fmt if fmt in ("onnx", "torchscript", "pt2") else None
