"""An NVIDIA DALI input pipeline (``data.backend=dali``): the same records and batches as :mod:`.loader`, with
decoding and augmentation run by DALI (nvJPEG on a GPU, libjpeg-turbo on the CPU backend).

Install with ``pip install "singleshot[dali]"`` (``nvidia-dali-cuda130``; on drivers older than CUDA 13 install
``nvidia-dali-cuda120`` instead). The CPU backend (``device_id=None``) needs no GPU and no CUDA libraries: that is
how it is tested here.

The parsed dataset records feed DALI through an external source (file bytes, boxes normalized xyxy, labels), in the
order of :class:`~singleshot.data.loader.ResumableSampler`, so sharding by rank, epoch order and the resume position
are those of the built-in loader. What DALI runs per recipe:

* ``ssd``: ``random_bbox_crop`` with the MLPerf reference's choices (no crop, minimum IoU 0 / 0.1 / 0.3 / 0.5 / 0.7 /
  0.9; window sides 0.3-1 of the image's, relative aspect 0.5-2, ``data.crop_attempts`` attempts per choice, boxes
  kept when their centre is inside), the crop fused into the decoder (``decoders.image_slice``), horizontal flip
  (``bb_flip`` + the mirror of ``crop_mirror_normalize``), resize, colour jitter with the recipe's ranges (hue
  +-18 degrees = 0.05 turn, saturation 0.5-1.5, brightness 0.875-1.125, contrast 0.5-1.5; DALI's ops in a fixed
  order, contrast about mid-grey), normalization;
* ``area_crop``: ``random_crop_generator`` (75-100% of the area, aspect 0.75-3, 100 attempts), boxes clipped to the
  window (here, on the host: DALI has no op for it), flip, resize, normalization;
* ``val``: resize + normalization.

Augmentation draws come from DALI's generators (seeded per (seed, epoch, rank)), not the per-sample generators of
the built-in loader: same distributions and order, different draws. Exact mid-epoch resume uses DALI's own
checkpoint of those generators, stored in :meth:`DaliLoader.state_dict`.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from singleshot.data.base import DetectionDataset, read_image
from singleshot.data.errors import BadImageError, DataLoadError
from singleshot.data.loader import LoaderPosition, ResumableSampler
from singleshot.data.photometric import IMAGENET_MEAN, IMAGENET_STD
from singleshot.data.transforms import crop_boxes, hflip_boxes

MODES = ("ssd", "area_crop", "val")
# The MLPerf reference's minimum-IoU choices; its "no IoU constraint" choice is threshold 0 here, and "no crop" is
# DALI's allow_no_crop (one more choice drawn with the same probability).
SSD_THRESHOLDS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)


def dali_missing_reason() -> str | None:
    """None when NVIDIA DALI can be imported, else why not (one line, with the install command)."""
    if importlib.util.find_spec("nvidia") is None or importlib.util.find_spec("nvidia.dali") is None:
        return ("NVIDIA DALI is not installed: pip install 'singleshot[dali]' (nvidia-dali-cuda130; "
                "nvidia-dali-cuda120 for CUDA 12 drivers)")
    try:
        import nvidia.dali  # noqa: F401
    except Exception as exc:  # a broken install: say why instead of failing later in the pipeline
        return f"NVIDIA DALI is installed but cannot be imported: {type(exc).__name__}: {exc}"
    return None


def _normalized_record(dataset: DetectionDataset, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Record ``index``'s ``(boxes float32[n, 4] xyxy normalized to [0, 1], labels int32[n])``."""
    boxes, labels = dataset.annotation(index)
    if not dataset.normalized_boxes:
        h, w = dataset.image_size(index)
        if h <= 0 or w <= 0:  # size not in the annotations: read the image header only
            from PIL import Image

            with Image.open(dataset.image_path(index)) as im:
                w, h = im.size
        boxes = boxes / np.array([w, h, w, h], dtype=np.float32)
    boxes = np.clip(boxes, 0.0, 1.0).astype(np.float32)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return np.ascontiguousarray(boxes[keep]), labels[keep].astype(np.int32)


def ssd_crop(boxes: Any, labels: Any, attempts: int = 1) -> tuple[Any, Any, Any, Any]:
    """The MLPerf SSD crop as DALI graph nodes (see the module docstring).

    Args:
        boxes: DALI node of per-sample ``float32[N, 4]`` xyxy normalized to [0, 1]; labels: ``int32[N]``.
        attempts: window draws per chosen threshold before another threshold is drawn.

    Returns:
        ``(anchor float32[2] (x, y), shape float32[2] (w, h)`` of the window, normalized; ``boxes [K, 4]`` xyxy
        normalized to the window, those whose centre is inside it, clipped to it; ``labels [K])``.
    """
    from nvidia.dali import fn

    return fn.random_bbox_crop(
        boxes, labels, thresholds=list(SSD_THRESHOLDS), allow_no_crop=True, scaling=[0.3, 1.0],
        aspect_ratio=[0.5, 2.0], num_attempts=attempts, bbox_layout="xyXY",
    )  # fmt: skip


def area_crop_window(shape: Any) -> tuple[Any, Any]:
    """SSD320 v1.2's crop window as DALI graph nodes: 75-100% of the area, width / height 0.75-3, 100 attempts
    (DALI's draw of area and aspect, the whole image when every attempt fails).

    Args:
        shape: DALI node of per-sample ``int64[3]`` (H, W, C) image shapes.

    Returns:
        ``(anchor (y, x), shape (h, w))`` in pixels.
    """
    from nvidia.dali import fn

    return fn.random_crop_generator(shape[0:2], random_area=[0.75, 1.0], random_aspect_ratio=[0.75, 3.0],
                                    num_attempts=100)


class DaliLoader(LoaderPosition):
    """Iterable of collated batches from a DALI pipeline, with the interface of
    :class:`~singleshot.data.loader.DetectionLoader` (``set_epoch``, ``state_dict``/``load_state_dict``,
    ``sampler``, ``num_skipped``, ``dataset``).

    Yields the batch dict of docs/ARCHITECTURE.md: ``images: Tensor[B, 3, S, S]`` float32 normalized (on the GPU
    with ``device`` CUDA, else CPU), ``boxes: Tensor[B, M, 4]`` xyxy normalized, zero-padded, ``labels: Tensor[B, M]
    int64`` padded with -1, ``image_ids: Tensor[B]``, ``orig_sizes: Tensor[B, 2]`` (H, W) pixels as decoded.

    Args:
        dataset: parsed records (any format :func:`~singleshot.data.formats.load_dataset` reads).
        mode: "ssd" | "area_crop" | "val" (see the module docstring).
        image_size: output side S in pixels.
        batch_size: per process. shuffle, drop_last, seed, num_replicas, rank: as :class:`ResumableSampler`.
        num_threads: DALI CPU threads (``data.num_workers``; at least 1).
        device: "cpu" runs DALI's CPU backend (no GPU, no CUDA libraries); a CUDA device decodes with nvJPEG
            (``mixed``) and augments there.
        crop_attempts: SSD crop attempts per choice (``data.crop_attempts``).
        prefetch: DALI's prefetch queue depth (:attr:`prefetch_depth`).
        channels_last: yield images in channels-last memory.
    """

    def __init__(
        self,
        dataset: DetectionDataset,
        *,
        mode: str,
        image_size: int,
        batch_size: int,
        shuffle: bool,
        drop_last: bool | None = None,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        num_threads: int = 1,
        device: torch.device | str = "cpu",
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        crop_attempts: int = 1,
        prefetch: int = 2,
        channels_last: bool = False,
    ) -> None:
        reason = dali_missing_reason()
        if reason is not None:
            raise RuntimeError(f"data.backend=dali: {reason}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.dataset, self.mode, self.image_size = dataset, mode, image_size
        self.batch_size = batch_size
        self.drop_last = shuffle if drop_last is None else drop_last
        self.sampler = ResumableSampler(
            len(dataset), shuffle=shuffle, seed=seed, num_replicas=num_replicas, rank=rank, drop_last=self.drop_last
        )
        self.num_threads = max(1, num_threads)
        self.device = torch.device(device)
        self.mean, self.std = tuple(mean), tuple(std)
        self.crop_attempts, self.prefetch = crop_attempts, prefetch
        self.channels_last = channels_last
        self.on_bad_image = dataset.on_bad_image
        self.num_skipped = 0
        self._bad: set[int] = set()
        self._restore: tuple[int, int, str] | None = None  # (epoch, start, DALI checkpoint) to resume from
        self._pipe: Any = None
        self._batches_done: int | None = None  # batches of the epoch done while an iteration runs, else None
        self._fed: dict[int, list[int]] = {}  # iteration -> record indices fed for it (not yet consumed)

    # ------------------------------------------------------------------------------------------ loader interface
    def set_epoch(self, epoch: int) -> None:
        """Call at the start of every epoch (before iterating) to reshuffle."""
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def prefetch_depth(self) -> int:
        """Batches DALI can have ready before they are asked for: its prefetch queue depth (the pipeline runs that
        many iterations ahead of the one returned)."""
        return self.prefetch

    def state_dict(self) -> dict[str, Any]:
        """The sampler position after the batches yielded so far, plus DALI's checkpoint of its random generators
        (``dali``, for the epoch ``dali_epoch``) when mid-epoch, so a resume continues with the same draws."""
        done = self._batches_done
        if done is None:  # no iteration yet: the position it will start from, with the restored checkpoint
            state: dict[str, Any] = self.sampler.state_dict()
            checkpoint = self._restored_checkpoint(self.sampler.start)
            if checkpoint is not None:
                state.update(dali=checkpoint, dali_epoch=self.sampler.epoch)
            return state
        state = self.sampler.state_dict(consumed=done * self.batch_size)
        if self._pipe is not None and done > 0:
            state.update(dali=self._pipe.checkpoint(), dali_epoch=self.sampler.epoch)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a position; DALI's checkpoint is used only for the epoch and position it was taken at."""
        self.sampler.load_state_dict(state)
        if state.get("dali") is not None and state.get("dali_epoch") == state["epoch"] and state["start"] > 0:
            self._restore = (int(state["epoch"]), int(state["start"]), state["dali"])

    def _restored_checkpoint(self, start: int) -> str | None:
        """DALI's checkpoint loaded by :meth:`load_state_dict`, if it was taken at this epoch and position ``start``."""
        restore = self._restore
        return restore[2] if restore is not None and restore[:2] == (self.sampler.epoch, start) else None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        indices, _ = self.sampler.epoch_order()
        if self.drop_last:
            indices = indices[: len(indices) - len(indices) % self.batch_size]
        self._order = indices
        start, self.sampler.start = self.sampler.start, 0
        checkpoint = self._restored_checkpoint(start)
        self._restore = None
        # Without DALI's checkpoint (a fresh epoch) iteration 0 is the first batch after ``start``.
        self._offset = 0 if checkpoint is not None else start // self.batch_size
        self._batches_done = start // self.batch_size
        self._epoch_seed = (self.sampler.seed * 1_000_003 + self.sampler.epoch) * 4099 + self.sampler.rank
        self._pipe = self._build(checkpoint)
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    break
                self._batches_done += 1
                if self.channels_last:
                    batch["images"] = batch["images"].contiguous(memory_format=torch.channels_last)
                yield batch
        finally:
            self._pipe, self._fed = None, {}
            self._batches_done = None

    # ------------------------------------------------------------------------------------------ the pipeline
    def _source(self, info: Any) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """DALI's external source: batch ``info.iteration`` of the epoch as (file bytes, boxes, labels)."""
        it = info.iteration + self._offset
        lo = it * self.batch_size
        if lo >= len(self._order):
            raise StopIteration
        chosen = [i for i in self._order[lo : lo + self.batch_size] if i not in self._bad]
        if not chosen:
            raise DataLoadError(f"every image of batch {it} was unreadable and skipped; check the dataset")
        self._fed[it] = chosen
        files, boxes, labels = [], [], []
        for i in chosen:
            path = self.dataset.image_path(i)
            try:
                raw = np.fromfile(path, dtype=np.uint8)
            except OSError as e:
                raw = np.zeros(0, dtype=np.uint8)  # reported by name when the batch fails to decode
                warnings.warn(f"cannot read image {path}: {e}", stacklevel=2)
            b, lab = _normalized_record(self.dataset, i)
            files.append(raw)
            boxes.append(b)
            labels.append(lab)
        return files, boxes, labels

    def _build(self, checkpoint: str | None) -> Any:
        from nvidia.dali import fn, pipeline_def, types

        cuda = self.device.type == "cuda"
        device_id = (self.device.index if self.device.index is not None else torch.cuda.current_device()) if cuda \
            else None
        decode = "mixed" if cuda else "cpu"
        size = self.image_size
        mean = [255.0 * m for m in self.mean]
        std = [255.0 * s for s in self.std]

        @pipeline_def(
            batch_size=self.batch_size, num_threads=self.num_threads, device_id=device_id, seed=self._epoch_seed,
            prefetch_queue_depth=self.prefetch, enable_checkpointing=True, checkpoint=checkpoint,
        )  # fmt: skip
        def pipeline() -> tuple[Any, ...]:
            files, boxes, labels = fn.external_source(
                source=self._source, num_outputs=3, batch=True, batch_info=True,
                dtype=[types.UINT8, types.FLOAT, types.INT32],
            )  # fmt: skip
            shape = fn.peek_image_shape(files)  # (H, W, C) of the original image
            extra: tuple[Any, ...] = ()
            if self.mode == "ssd":
                anchor, window, boxes, labels = ssd_crop(boxes, labels, self.crop_attempts)
                images = fn.decoders.image_slice(files, anchor, window, device=decode, output_type=types.RGB)
            elif self.mode == "area_crop":
                anchor, window = area_crop_window(shape)
                images = fn.decoders.image_slice(
                    files, anchor, window, axes=[0, 1], normalized_anchor=False, normalized_shape=False,
                    device=decode, output_type=types.RGB,
                )  # fmt: skip
                extra = (anchor, window)
            else:
                images = fn.decoders.image(files, device=decode, output_type=types.RGB)
            images = fn.resize(images, resize_x=size, resize_y=size, antialias=True)
            mirror: Any = 0
            if self.mode != "val":
                mirror = fn.random.coin_flip(probability=0.5)
                if self.mode == "ssd":
                    boxes = fn.bb_flip(boxes, ltrb=True, horizontal=mirror)
                    images = fn.hsv(
                        images, hue=fn.random.uniform(range=[-18.0, 18.0]),
                        saturation=fn.random.uniform(range=[0.5, 1.5]),
                    )  # fmt: skip
                    images = fn.brightness_contrast(
                        images, brightness=fn.random.uniform(range=[0.875, 1.125]),
                        contrast=fn.random.uniform(range=[0.5, 1.5]),
                    )  # fmt: skip
                else:
                    extra = (*extra, mirror)
            images = fn.crop_mirror_normalize(
                images, mirror=mirror, mean=mean, std=std, dtype=types.FLOAT, output_layout="CHW"
            )
            return (images, boxes, labels, shape, *extra)

        pipe = pipeline()
        pipe.build()
        return pipe

    def _run(self) -> Any:
        """One batch of DALI outputs, or None at the end of the epoch; a decoding failure names the file."""
        try:
            return self._pipe.run()
        except StopIteration:
            return None
        except RuntimeError as exc:
            bad = self._find_bad()
            if not bad:
                raise DataLoadError(f"DALI pipeline failed: {str(exc).strip().splitlines()[0]}") from exc
            index, message = bad
            if self.on_bad_image == "raise":
                raise BadImageError(f"{message} (pass on_bad_image='skip' to skip unreadable images)") from None
            # DALI's pipeline is unusable after an error: rebuild it at this batch without the image (fresh draws
            # for the rest of the epoch, see the module docstring).
            self._bad.add(index)
            self.num_skipped += 1
            warnings.warn(f"skipped unreadable image: {message}", stacklevel=4)
            self._offset = min(self._fed) if self._fed else self._offset
            self._epoch_seed += 7919
            self._fed = {}
            self._pipe = self._build(None)
            return self._run()

    def _find_bad(self) -> tuple[int, str] | None:
        """The first unreadable image among the batches fed but not yet returned (checked with our decoder)."""
        for it in sorted(self._fed):
            for i in self._fed[it]:
                try:
                    read_image(self.dataset.image_path(i))
                except BadImageError as e:
                    return i, str(e)
        return None

    def _next_batch(self) -> dict[str, Any] | None:
        outputs = self._run()
        if outputs is None:
            return None
        it = min(self._fed)
        chosen = self._fed.pop(it)
        images, boxes, labels, shapes, *extra = outputs
        b = len(chosen)
        shape_np = np.stack([np.asarray(s) for s in shapes])  # (B, 3) H, W, C
        box_list = [torch.from_numpy(np.array(x, dtype=np.float32).reshape(-1, 4)) for x in boxes]
        label_list = [torch.from_numpy(np.array(x, dtype=np.int64).reshape(-1)) for x in labels]
        if self.mode == "area_crop":
            box_list, label_list = _area_crop_boxes(box_list, label_list, shape_np, extra)
        m = max([1] + [len(x) for x in label_list])
        out_boxes = torch.zeros(b, m, 4, dtype=torch.float32)
        out_labels = torch.full((b, m), -1, dtype=torch.int64)
        for j, (bx, lb) in enumerate(zip(box_list, label_list)):
            out_boxes[j, : len(lb)] = bx
            out_labels[j, : len(lb)] = lb
        return {
            "images": _to_torch(images),
            "boxes": out_boxes,
            "labels": out_labels,
            "image_ids": torch.tensor([self.dataset.image_id(i) for i in chosen], dtype=torch.int64),
            "orig_sizes": torch.from_numpy(shape_np[:, :2].astype(np.int64)),
        }


def _area_crop_boxes(
    boxes: list[Tensor], labels: list[Tensor], shapes: np.ndarray, extra: list[Any]
) -> tuple[list[Tensor], list[Tensor]]:
    """Apply the area crop windows and flips to the boxes.

    Args:
        boxes: per image ``float32[n, 4]`` xyxy normalized to the original image.
        shapes: ``int[B, 3]`` (H, W, C) of the originals; ``extra``: DALI's (anchor (y, x), window (h, w), mirror).

    Returns:
        per image ``(float32[k, 4] xyxy normalized to the crop, flipped with the image; labels int64[k])``, boxes
        with no area inside the window dropped.
    """
    anchors, windows, mirrors = extra
    out_b, out_l = [], []
    for j, (bx, lb) in enumerate(zip(boxes, labels)):
        h, w = float(shapes[j, 0]), float(shapes[j, 1])
        y0, x0 = (float(v) for v in np.asarray(anchors[j]))
        ch, cw = (float(v) for v in np.asarray(windows[j]))
        pixels = bx * torch.tensor([w, h, w, h])
        window = (math.floor(x0), math.floor(y0), math.floor(x0) + round(cw), math.floor(y0) + round(ch))
        kept, keep = crop_boxes(pixels, window)
        kept = kept / torch.tensor([window[2] - window[0], window[3] - window[1]] * 2, dtype=torch.float32)
        if int(np.asarray(mirrors[j])):
            kept = hflip_boxes(kept)
        out_b.append(kept)
        out_l.append(lb[keep])
    return out_b, out_l


def _to_torch(images: Any) -> Tensor:
    """DALI's dense ``float32[B, 3, S, S]`` output (CPU or GPU) as a torch tensor that owns its memory."""
    from nvidia.dali.tensors import TensorListGPU

    tensor = images.as_tensor()
    shape = tuple(tensor.shape())
    if isinstance(images, TensorListGPU):  # copy on the current stream into a torch CUDA tensor
        from nvidia.dali.plugin.pytorch import feed_ndarray

        out = torch.empty(shape, dtype=torch.float32, device=torch.device("cuda", torch.cuda.current_device()))
        feed_ndarray(tensor, out, cuda_stream=torch.cuda.current_stream())
        return out
    return torch.from_numpy(np.array(tensor, copy=True)).reshape(shape)

