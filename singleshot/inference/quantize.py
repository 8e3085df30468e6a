"""INT8 for CPUs: ONNX Runtime static quantization of an exported graph, calibrated on images of a dataset.

    singleshot export --checkpoint best.pt --format onnx --int8 --calibration synth --out ssd_int8.onnx

The fp32 graph is exported first (:func:`singleshot.inference.export.export_onnx`), cleaned by ONNX Runtime's
``quant_pre_process`` (shape inference + graph optimization, which folds BatchNorm into the convolutions), then
quantized with ``quantize_static`` in QDQ form: per-channel int8 weights, uint8 activations whose ranges come from
running the graph on the calibration images. Only convolutions (and the ops ONNX Runtime fuses with them) are
quantized; decoding and NMS stay fp32. ``exclude`` keeps named layers fp32 as well (by default the class and box
heads' convolutions, whose outputs feed the score threshold and box decoding directly: see README for the cost).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from singleshot._extras import require
from singleshot.data.photometric import normalize
from singleshot.data.transforms import resize_square
from singleshot.inference.export import export_onnx, write_onnx_metadata

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


def calibration_batches(
    images: Iterable[Tensor], size: int, mean: Sequence[float], std: Sequence[float], *, uint8_input: bool = False,
    batch_size: int = 8,
) -> Iterator[np.ndarray]:
    """``uint8[3, H, W]`` images -> batches ``[b, 3, size, size]`` as the graph takes them (float32 normalized or
    uint8), with the validation transform's resize."""
    chunk: list[Tensor] = []
    for image in images:
        chunk.append(resize_square(image, size))
        if len(chunk) == batch_size:
            yield _finish(chunk, mean, std, uint8_input)
            chunk = []
    if chunk:
        yield _finish(chunk, mean, std, uint8_input)


def _finish(chunk: list[Tensor], mean: Sequence[float], std: Sequence[float], uint8_input: bool) -> np.ndarray:
    batch = torch.stack(chunk)  # (b, 3, S, S) uint8
    return batch.numpy() if uint8_input else normalize(batch, mean, std).numpy()


def head_nodes(onnx_path: str | os.PathLike[str]) -> list[str]:
    """Names of the Conv nodes whose weight is a head parameter (``head.*``): the last layer before the outputs."""
    onnx = require("onnx", "export", "INT8 export")

    graph = onnx.load(os.fspath(onnx_path)).graph
    return [n.name for n in graph.node if n.op_type == "Conv" and len(n.input) > 1 and "head" in n.input[1]]


def quantize_onnx(
    model: nn.Module,
    out: str | os.PathLike[str],
    calibration: Iterable[np.ndarray],
    *,
    with_nms: bool = False,
    uint8_input: bool = False,
    metadata: Mapping[str, Any] | None = None,
    exclude_head: bool = True,
    method: str = "minmax",
    **postprocess_overrides: float,
) -> Path:
    """Export ``model`` to an INT8 ONNX graph at ``out``.

    Args:
        calibration: input batches (see :func:`calibration_batches`); a few hundred images is what the ONNX
            Runtime documentation suggests, and all of them are run once through the fp32 graph.
        exclude_head: keep the head's convolutions in fp32 (see the module docstring).
        method: the activation-range estimator: "minmax", "percentile" (99.999th) or "entropy".
    Returns:
        ``out``; its metadata gains ``int8`` with the settings used.
    """
    require("onnxruntime", "export", "INT8 export")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method must be one of {CALIBRATION_METHODS}, got {method!r}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)

    class _Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.batches = iter(calibration)
            self.count = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            if batch is None:
                return None
            self.count += len(batch)
            return {"images": batch}

    with tempfile.TemporaryDirectory(prefix="singleshot-int8-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        prepared = Path(tmp) / "prepared.onnx"
        export_onnx(model, fp32, with_nms=with_nms, uint8_input=uint8_input, **postprocess_overrides)
        quant_pre_process(os.fspath(fp32), os.fspath(prepared), skip_symbolic_shape=True)
        exclude = head_nodes(prepared) if exclude_head else []
        reader = _Reader()
        quantize_static(
            os.fspath(prepared), os.fspath(out), reader,
            quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"], per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
            calibrate_method={"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                              "entropy": CalibrationMethod.Entropy}[method],
            extra_options={"CalibMovingAverage": False},
        )  # fmt: skip
    if reader.count == 0:
        out.unlink(missing_ok=True)
        raise ValueError("no calibration images: the calibration set is empty")
    meta = dict(metadata or {})
    meta["int8"] = {"calibration_images": reader.count, "method": method, "fp32_nodes": exclude,
                    "scheme": "ONNX Runtime static QDQ, per-channel int8 weights, uint8 activations, Conv only"}
    write_onnx_metadata(out, meta)
    return out
