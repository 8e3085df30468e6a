"""Batches for training and evaluation: per-sample seeding, a resumable distributed sampler, the padded collate.

Reproducibility: the sampler draws, per epoch, a permutation and one 62-bit seed per dataset index from
``(seed, epoch)``; each sample's augmentation uses a ``random.Random`` seeded with its own seed. A sample's
augmentation is therefore a function of (seed, epoch, index) only, independent of worker count, rank count,
persistent workers and resume point.

Errors: a worker never raises for a bad image. It returns a :class:`BadSample` marker; the main process then
either raises :class:`BadImageError` naming the file (``on_bad_image="raise"``) or drops the sample, counts it
and warns (``"skip"``). Any other failure in a worker comes back as a :class:`DataLoadError` whose first line names
the file.
"""

from __future__ import annotations

import functools
import math
import os
import random
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from singleshot.accelerator import capabilities, default_device, rank_and_world_size
from singleshot.data.base import DetectionDataset
from singleshot.data.errors import BadImageError, DataLoadError
from singleshot.data.photometric import IMAGENET_MEAN, IMAGENET_STD, DevicePhotometric, clamp_normalized, color_affine

Transform = Callable[[Tensor, dict[str, Any], random.Random], tuple[Tensor, dict[str, Any]]]


@dataclass(frozen=True)
class BadSample:
    """Stands in for a sample a worker could not load."""

    index: int
    path: str
    message: str
    bad_image: bool  # True: an unreadable image (subject to on_bad_image); False: any other error


class TransformedDataset(Dataset):
    """A :class:`DetectionDataset` with a transform applied, indexed by ``(index, sample_seed)`` pairs.

    ``ds[(i, seed)]`` returns the transformed ``(image, target)`` of record ``i`` augmented with
    ``random.Random(seed)``, or a :class:`BadSample`. ``ds[i]`` uses ``seed = i``.
    """

    def __init__(self, dataset: DetectionDataset, transform: Transform) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Tensor, dict[str, Any]] | BadSample:
        index, seed = key if isinstance(key, tuple) else (key, key)
        return load_sample(self.dataset, index, lambda: self.transform(*self.dataset[index], random.Random(seed)))


def load_sample(dataset: DetectionDataset, index: int, load: Callable[[], Any]) -> Any:
    """``load()`` for record ``index``, or the :class:`BadSample` that stands for it in the batch: a worker never
    raises; the main process raises or skips (see :class:`DetectionLoader`), naming the file."""
    try:
        return load()
    except BadImageError as e:
        return BadSample(index, dataset.image_path(index), str(e), True)
    except Exception as e:  # surfaced in the main process with the file named, see DetectionLoader
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__, limit=-4))
        msg = f"error loading sample {index} ({dataset.image_path(index)}): {type(e).__name__}: {e}"
        return BadSample(index, dataset.image_path(index), f"{msg}\nworker traceback:\n{tb}", False)


def _new_tensor(shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """An uninitialized tensor; inside a loader worker it is allocated straight in shared memory (as torch's
    default_collate does) so that sending the batch to the main process does not copy it again."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    elem = torch.empty(0, dtype=dtype)
    storage = elem._typed_storage()._new_shared(math.prod(shape), device=elem.device)
    return elem.new(storage).resize_(shape)


def collate_detection(
    samples: Sequence[tuple[Tensor, dict[str, Any]] | BadSample],
    *,
    photometric_on_device: bool = False,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> dict[str, Any]:
    """Stack transformed samples into the batch dict of docs/ARCHITECTURE.md.

    Samples carrying a colour draw (uint8 images + ``target["photometric"]``, what the transforms give) are finished
    here, straight into the batch tensor (colour affine + normalization per image, cache-hot), unless
    ``photometric_on_device``: then the batch keeps uint8 images and carries ``photometric`` for the loader's
    :class:`DevicePhotometric`. Samples without a draw (float images from another transform) are stacked as they are.

    Returns:
        ``images: Tensor[B, 3, S, S]`` (float32 normalized, or uint8 when deferred), ``boxes: Tensor[B, M, 4]``
        xyxy normalized to [0, 1], zero-padded, ``labels: Tensor[B, M] int64`` padded with -1 (a box is real iff
        label > 0), ``image_ids: Tensor[B] int64``, ``orig_sizes: Tensor[B, 2] int64`` (H, W) pixels;
        ``photometric: Tensor[B, 11]`` when deferred; ``bad: list[BadSample]`` when any sample failed (those are
        left out of B). M = max boxes per image, at least 1 so downstream shapes never have a zero dim.
    """
    good = [s for s in samples if not isinstance(s, BadSample)]
    bad = [s for s in samples if isinstance(s, BadSample)]
    batch = collate_targets([t for _, t in good], bad)
    batch["images"] = _stack_images([img for img, _ in good], [t.get("photometric") for _, t in good],
                                    not photometric_on_device, mean, std)  # fmt: skip
    if good and good[0][1].get("photometric") is not None and photometric_on_device:
        batch["photometric"] = torch.stack([t["photometric"] for _, t in good])
    return batch


def collate_targets(targets: Sequence[dict[str, Any]], bad: Sequence[BadSample] = ()) -> dict[str, Any]:
    """The target part of a batch (see :func:`collate_detection`): ``boxes [B, M, 4]``, ``labels [B, M]``,
    ``image_ids [B]``, ``orig_sizes [B, 2]``, and ``bad`` when any sample failed."""
    m = max([1] + [len(t["labels"]) for t in targets])
    b = len(targets)
    boxes = torch.zeros(b, m, 4, dtype=torch.float32)
    labels = torch.full((b, m), -1, dtype=torch.int64)
    for i, t in enumerate(targets):
        n = len(t["labels"])
        boxes[i, :n] = t["boxes"]
        labels[i, :n] = t["labels"]
    batch: dict[str, Any] = {
        "boxes": boxes,
        "labels": labels,
        "image_ids": torch.tensor([t["image_id"] for t in targets], dtype=torch.int64),
        "orig_sizes": torch.tensor([t["orig_size"] for t in targets], dtype=torch.int64).reshape(b, 2),
    }
    if bad:
        batch["bad"] = list(bad)
    return batch


def _stack_images(
    images: list[Tensor], params: list[Tensor | None], finish: bool, mean: Sequence[float], std: Sequence[float]
) -> Tensor:
    """``B x [3, S, S]`` -> ``[B, 3, S, S]``, applying deferred photometric work per image when ``finish``."""
    if not images:
        return torch.zeros(0, 3, 1, 1)
    deferred = params[0] is not None
    dtype = torch.float32 if (finish or not deferred) else images[0].dtype
    out = _new_tensor((len(images), *images[0].shape), dtype)
    if not (deferred and finish):
        for i, img in enumerate(images):
            out[i].copy_(img)
        return out
    affine = color_affine(torch.stack(params), mean, std)  # (B, 3, 4)
    tmp = torch.empty(images[0].shape, dtype=torch.float32)
    for i, img in enumerate(images):
        tmp.copy_(img)  # uint8 channels-last -> float NCHW in one pass
        torch.addmm(affine[i, :, 3:], affine[i, :, :3], tmp.view(3, -1), out=out[i].view(3, -1))
        clamp_normalized(out[i], mean, std)
    return out


class ResumableSampler(Sampler[tuple[int, int]]):
    """Shuffling, DDP-aware sampler yielding ``(index, sample_seed)``, whose position can be saved and restored.

    Each epoch: a permutation of the dataset (or ``range`` if not shuffling) and a seed per index, both drawn from
    ``(seed, epoch)``; padded by wrapping around to a multiple of ``num_replicas`` (or truncated with ``drop_last``)
    and strided by ``rank``, as ``DistributedSampler``; ``pad_to``: each rank's count further padded (wrapping
    around) to a multiple of it (the batch size: the last batch is filled, not dropped). ``num_replicas``/``rank``
    default to the initialized process group, else 1/0.

    Resume: ``state_dict()`` / ``load_state_dict()`` carry ``epoch`` and ``start``, the number of this rank's samples
    already consumed in that epoch; the next iteration skips them and later ones start at 0.
    """

    def __init__(
        self,
        length: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
        pad_to: int = 1,
        epoch_samples: Callable[[int], int] | None = None,
    ) -> None:
        group_rank, group_size = rank_and_world_size()
        num_replicas = group_size if num_replicas is None else num_replicas
        rank = group_rank if rank is None else rank
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.length, self.shuffle, self.seed = length, shuffle, seed
        self.num_replicas, self.rank, self.drop_last = num_replicas, rank, drop_last
        self.epoch, self.start = 0, 0
        if drop_last:
            self.num_samples = length // num_replicas
        else:  # padded by wrapping around: to a multiple of num_replicas, then of pad_to per rank
            self.num_samples = -(-length // num_replicas)
            self.num_samples = -(-self.num_samples // pad_to) * pad_to
        # A stream: epochs of epoch_samples(epoch) samples cut from one pass after another (each pass ordered as an
        # epoch is without it), the rest of a pass running on into the next epoch.
        self.epoch_samples, self.pass_samples = epoch_samples, self.num_samples
        if epoch_samples is not None:
            self.num_samples = epoch_samples(0)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (reshuffles); a restored mid-epoch position is kept only if ``epoch`` is unchanged."""
        if epoch != self.epoch:
            self.start = 0
        self.epoch = epoch
        if self.epoch_samples is not None:
            self.num_samples = self.epoch_samples(epoch)

    def epoch_order(self) -> tuple[list[int], list[int]]:
        """This rank's ``(indices, sample_seeds)`` for the current epoch, from position 0."""
        if self.epoch_samples is None:
            return self._pass_order(self.epoch)
        first = sum(self.epoch_samples(e) for e in range(self.epoch))  # position in the stream of passes
        want, indices, seeds = self.epoch_samples(self.epoch), [], []
        pass_num, offset = divmod(first, self.pass_samples)
        while len(indices) < want:
            order, pass_seeds = self._pass_order(pass_num)
            take = want - len(indices)
            indices += order[offset : offset + take]
            seeds += pass_seeds[offset : offset + take]
            pass_num, offset = pass_num + 1, 0
        return indices, seeds

    def _pass_order(self, epoch: int) -> tuple[list[int], list[int]]:
        """This rank's ``(indices, sample_seeds)`` of one pass over the dataset, drawn from ``(seed, epoch)``."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.length, generator=g) if self.shuffle else torch.arange(self.length)
        seeds = torch.randint(0, 2**62, (self.length,), generator=g)
        total = self.pass_samples * self.num_replicas
        if total > self.length:  # wrap around so every rank gets the same count
            order = order.repeat(-(-total // max(self.length, 1)))
        order = order[:total][self.rank :: self.num_replicas]
        return order.tolist(), seeds[order].tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices, seeds = self.epoch_order()
        start, self.start = self.start, 0
        return iter(list(zip(indices[start:], seeds[start:])))

    def __len__(self) -> int:
        return self.num_samples - self.start

    def state_dict(self, consumed: int | None = None) -> dict[str, int]:
        """``{"epoch", "start", "seed", "length", "num_replicas"}``; ``start`` = ``consumed`` samples of this rank."""
        return {
            "epoch": self.epoch,
            "start": self.start if consumed is None else consumed,
            "seed": self.seed,
            "length": self.length,
            "num_replicas": self.num_replicas,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore a position saved by :meth:`state_dict`; the dataset length must match."""
        if state["length"] != self.length:
            raise ValueError(f"sampler state is for a dataset of {state['length']} images, this one has {self.length}")
        self.seed, self.epoch, self.start = state["seed"], state["epoch"], state["start"]
        if self.epoch_samples is not None:
            self.num_samples = self.epoch_samples(self.epoch)


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: one thread per worker; Python/NumPy RNGs seeded from torch's per-worker seed."""
    torch.set_num_threads(1)
    worker_seed = torch.initial_seed() % 2**32
    random.seed(worker_seed)
    np.random.seed(worker_seed)


def _init_worker(extra: Callable[[int], None], worker_id: int) -> None:
    seed_worker(worker_id)
    extra(worker_id)


class LoaderPosition:
    """Where a loader stands in its epochs, for the trainer and its checkpoints (shared by the DALI loader).

    Needs ``sampler`` (a :class:`ResumableSampler`) and ``batch_size``.
    """

    sampler: ResumableSampler
    batch_size: int

    @property
    def start_batch(self) -> int:
        """Batches of the current epoch done before the next iteration starts (a resumed epoch's steps)."""
        return self.sampler.start // self.batch_size

    def next_epoch_state(self) -> dict[str, int]:
        """The position at the start of the epoch after the current one (what an epoch-end checkpoint saves)."""
        return {**self.sampler.state_dict(), "epoch": self.sampler.epoch + 1, "start": 0}


class DetectionLoader(LoaderPosition):
    """Iterable of collated batches with ``set_epoch``, ``state_dict``/``load_state_dict`` and bad-image handling.

    Attributes:
        loader: the underlying ``torch.utils.data.DataLoader``.
        sampler: its :class:`ResumableSampler`.
        num_skipped: bad images skipped so far (``on_bad_image="skip"``).
        finisher: the :class:`DevicePhotometric` moving batches to the device (None: batches stay on the CPU).
    """

    def __init__(
        self,
        loader: DataLoader,
        sampler: ResumableSampler,
        batch_size: int,
        on_bad_image: str,
        finisher: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.loader, self.sampler = loader, sampler
        self.batch_size, self.on_bad_image = batch_size, on_bad_image
        self.finisher = finisher
        self.num_skipped = 0
        self._batches_done: int | None = None  # batches of the epoch done while an iteration runs, else None

    def set_epoch(self, epoch: int) -> None:
        """Call at the start of every epoch (before iterating) to reshuffle."""
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def prefetch_depth(self) -> int:
        """Batches that can be ready before they are asked for: each worker process holds up to ``prefetch_factor``
        requested batches (``num_workers * prefetch_factor`` in all; 0 when batches are made in this process). The
        pin-memory thread only hands those same batches on, and the device finisher runs when a batch is taken, so
        neither adds to the count. What a throughput measurement must consume before its clock starts."""
        return prefetch_depth(self.loader)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self._batches_done = self.start_batch
        try:
            for batch in self.loader:
                self._batches_done += 1
                if not self._keep_good(batch):
                    continue
                if self.finisher is not None:
                    batch = self.finisher(batch)
                    if not self._keep_good(batch):  # a finisher that decodes can find bad images too
                        continue
                yield batch
        finally:
            self._batches_done = None

    def _keep_good(self, batch: dict[str, Any]) -> bool:
        """Handles the batch's bad samples (raise or count them, as ``on_bad_image`` says); False when none is left."""
        bad = batch.pop("bad", None)
        if bad:
            self._handle_bad(bad)
            return len(batch["image_ids"]) > 0
        return True

    def _handle_bad(self, bad: list[BadSample]) -> None:
        for sample in bad:
            if not sample.bad_image:
                raise DataLoadError(sample.message)
            if self.on_bad_image == "raise":
                raise BadImageError(f"{sample.message} (set data.on_bad_image=skip to skip unreadable images)")
            self.num_skipped += 1
            warnings.warn(f"skipped unreadable image: {sample.message}", stacklevel=3)

    def state_dict(self) -> dict[str, int]:
        """The sampler position after the batches yielded so far in this epoch (for exact mid-epoch resume); before
        an iteration starts, the position it will start from (a restored one included)."""
        done = self._batches_done
        return self.sampler.state_dict(consumed=None if done is None else done * self.batch_size)

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore a position; the next iteration continues the saved epoch where it stopped."""
        self.sampler.load_state_dict(state)


def prefetch_depth(loader: Any) -> int:
    """Batches ``loader`` can have ready before they are asked for: its own ``prefetch_depth``
    (:class:`DetectionLoader`, ``DaliLoader``), ``num_workers * prefetch_factor`` for a ``torch.utils.data.DataLoader``,
    else 0 (an iterable that makes each batch when asked; one that prefetches must say so with a
    ``prefetch_depth``)."""
    if isinstance(loader, DataLoader):
        return loader.num_workers * (loader.prefetch_factor or 0) if loader.num_workers > 0 else 0
    depth = getattr(loader, "prefetch_depth", None)
    return int(depth) if depth is not None else 0


def build_loader(
    dataset: DetectionDataset,
    transform: Transform,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    drop_last: bool | None = None,
    num_workers: int | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    device: torch.device | str | None = None,
    channels_last: bool = False,
    pin_memory: bool | None = None,
    persistent_workers: bool = True,
    prefetch_factor: int | None = None,
    worker_init: Callable[[int], None] | None = None,
    num_replicas: int | None = None,
    rank: int | None = None,
    decode_on_device: bool = False,
    pad_last_batch: bool = False,
    epoch_batches: Callable[[int], int] | None = None,
) -> DetectionLoader:
    """Build the loader for training (``shuffle=True``) or evaluation (``shuffle=False``).

    Args:
        dataset: a raw :class:`DetectionDataset` (its ``on_bad_image`` policy applies).
        transform: :class:`SSDTrainTransform` or :class:`SSDValTransform` (or any ``(image, target, rng)`` callable).
        batch_size: per process.
        shuffle: reshuffle every epoch (call ``set_epoch``).
        seed: base seed of the shuffle and of every sample's augmentation.
        drop_last: drop the last incomplete batch; defaults to ``shuffle``.
        num_workers: worker processes; default ``min(8, cpus - 1)`` (0 on a single core).
        mean, std: the model's input normalization (RGB in [0, 1]).
        device: if given, batches are yielded on this device. The loader owns the one decision of where colour
            jitter + normalization run: on an accelerator they run there, batched (:class:`DevicePhotometric`;
            uint8 crosses the bus, 4x less than float32); on the CPU (or with no device) the collate does them.
        channels_last: yield images in channels-last memory (what a channels-last model wants on CUDA).
        pin_memory: default True when ``device`` is CUDA (or, with no device, when CUDA is available).
        persistent_workers: keep workers alive between epochs (when ``num_workers > 0``).
        worker_init: called in each worker process after its seeding (e.g. to ignore Ctrl-C there).
        num_replicas, rank: DDP world size and rank; default from the initialized process group.
        decode_on_device: workers only read JPEG bytes and draw the augmentation (``transform.plan``); decoding and
            the pixel work run batched on ``device`` (default: the CPU), see :mod:`singleshot.data.device_decode`.
        pad_last_batch: fill each epoch's last incomplete batch with samples from the epoch's start (wrapping around,
            as ``DistributedSampler`` pads ranks) instead of dropping it: ``ceil(len / (replicas x batch))`` batches.
        epoch_batches: batches of each epoch (0-based) when epochs are not passes over the dataset: the samples
            run on from pass to pass and each epoch takes the next ``epoch_batches(e) x batch_size`` of them
            (NVIDIA v1.1's epochs, :meth:`~singleshot.engine.schedule.EpochLengths.dali_counter`).

    Returns:
        A :class:`DetectionLoader` yielding the batch dict of :func:`collate_detection`.
    """
    dev = torch.device(device) if device is not None else None
    drop_last = (shuffle if drop_last is None else drop_last) and not pad_last_batch
    if num_workers is None:
        num_workers = min(8, max(0, (os.cpu_count() or 1) - 1))
    photometric_on_device = dev is not None and dev.type != "cpu"
    if pin_memory is None:
        pin_memory = capabilities(dev if dev is not None else default_device()).pin_memory
    samples: Dataset
    collate: Callable[..., dict[str, Any]]
    finisher: Any
    if decode_on_device:
        from singleshot.data.device_decode import DeviceDecode, EncodedDataset, collate_encoded

        samples, collate = EncodedDataset(dataset, transform), collate_encoded
        finisher = DeviceDecode(dev or "cpu", mean=mean, std=std, channels_last=channels_last)
    else:
        samples = TransformedDataset(dataset, transform)
        collate = functools.partial(collate_detection, photometric_on_device=photometric_on_device, mean=mean, std=std)
        finisher = DevicePhotometric(dev, mean=mean, std=std, channels_last=channels_last) if dev is not None else None
    sampler = ResumableSampler(
        len(dataset), shuffle=shuffle, seed=seed, num_replicas=num_replicas, rank=rank, drop_last=drop_last,
        pad_to=batch_size if pad_last_batch else 1,
        epoch_samples=None if epoch_batches is None else (lambda e: epoch_batches(e) * batch_size),
    )  # fmt: skip
    extra: dict[str, Any] = {}
    if num_workers > 0:
        extra = {
            "persistent_workers": persistent_workers,
            "worker_init_fn": seed_worker if worker_init is None else functools.partial(_init_worker, worker_init),
            "prefetch_factor": prefetch_factor or 2,
        }
    loader = DataLoader(
        samples,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(seed),
        **extra,
    )
    return DetectionLoader(loader, sampler, batch_size, dataset.on_bad_image, finisher)
