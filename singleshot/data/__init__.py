"""The data layer: dataset readers (COCO, VOC, YOLO), SSD augmentation, loaders, the synthetic set, checks.

Typical use::

    from singleshot.data import load_dataset, SSDTrainTransform, build_loader
    ds = load_dataset("/data/coco", split="train")           # or None for the built-in synthetic set
    loader = build_loader(ds, SSDTrainTransform(300), batch_size=32, shuffle=True, seed=0)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for batch in loader: ...

Knows nothing of models or the training engine.
"""

from singleshot.data.base import DetectionDataset, read_image
from singleshot.data.coco import CocoDetection
from singleshot.data.errors import BadImageError, DataError, DataLoadError, DatasetFormatError, Problem
from singleshot.data.formats import detect_format, load_dataset
from singleshot.data.loader import (
    DetectionLoader,
    ResumableSampler,
    TransformedDataset,
    build_loader,
    collate_detection,
)
from singleshot.data.photometric import IMAGENET_MEAN, IMAGENET_STD, DevicePhotometric
from singleshot.data.synth import default_dataset_path, generate
from singleshot.data.transforms import AreaCropTrainTransform, ColorJitterParams, SSDTrainTransform, SSDValTransform
from singleshot.data.voc import VOCDetection
from singleshot.data.yolo import YOLODetection

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "AreaCropTrainTransform",
    "BadImageError",
    "CocoDetection",
    "ColorJitterParams",
    "DataError",
    "DataLoadError",
    "DatasetFormatError",
    "DetectionDataset",
    "DetectionLoader",
    "DevicePhotometric",
    "Problem",
    "ResumableSampler",
    "SSDTrainTransform",
    "SSDValTransform",
    "TransformedDataset",
    "VOCDetection",
    "YOLODetection",
    "build_loader",
    "collate_detection",
    "default_dataset_path",
    "detect_format",
    "generate",
    "load_dataset",
    "read_image",
]
