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

from singleshot._lazy import lazy_exports

# Names are imported on first use (PEP 562) so that `singleshot --help` and the config tools start without
# loading torch; `from singleshot... import X` imports X's module at that moment.
_LAZY = {
    "DetectionDataset": "singleshot.data.base",
    "read_image": "singleshot.data.base",
    "CocoDetection": "singleshot.data.coco",
    "BadImageError": "singleshot.data.errors",
    "DataError": "singleshot.data.errors",
    "DataLoadError": "singleshot.data.errors",
    "DatasetFormatError": "singleshot.data.errors",
    "Problem": "singleshot.data.errors",
    "detect_format": "singleshot.data.formats",
    "load_dataset": "singleshot.data.formats",
    "DetectionLoader": "singleshot.data.loader",
    "ResumableSampler": "singleshot.data.loader",
    "TransformedDataset": "singleshot.data.loader",
    "build_loader": "singleshot.data.loader",
    "collate_detection": "singleshot.data.loader",
    "IMAGENET_MEAN": "singleshot.data.photometric",
    "IMAGENET_STD": "singleshot.data.photometric",
    "DevicePhotometric": "singleshot.data.photometric",
    "default_dataset_path": "singleshot.data.synth",
    "generate": "singleshot.data.synth",
    "AreaCropTrainTransform": "singleshot.data.transforms",
    "ColorJitterParams": "singleshot.data.transforms",
    "SSDTrainTransform": "singleshot.data.transforms",
    "SSDValTransform": "singleshot.data.transforms",
    "VOCDetection": "singleshot.data.voc",
    "YOLODetection": "singleshot.data.yolo",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())


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
