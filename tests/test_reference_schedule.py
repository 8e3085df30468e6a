"""The MLPerf and NVIDIA presets count epochs, warmup and milestones as their reference code does.

The reference's numbers are produced here the way its code produces them (``mlcommons/training``
``retired_benchmarks/ssd-v1/ssd/train.py``, ``DeepLearningExamples/PyTorch/Detection/SSD/ssd/train.py``): its
epoch is ``len()`` of a torch ``DataLoader`` over a ``DistributedSampler`` (``drop_last`` off), its warmup length
``int(warmup * images / (ranks * batch))``, and its lr is set by the warmup on each iteration below that length
and by the decay at the start of a decay epoch, nothing else (so the warmup's last value stays until a decay).
Our schedule is built from the preset exactly as the trainer builds it, and compared step by step.

NVIDIA's epoch is its DALI iterator's (``ssd/coco_pipeline.py`` ``DALICOCOIterator``, built with a size of
118287 / ranks, the image count of COCO's train annotation file): :class:`DaliIterator` below replays that
iterator's counting, event by event, as ``main.py`` drives it (iterate to StopIteration, ``reset()``)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from singleshot.data.loader import build_loader
from singleshot.data.transforms import SSDValTransform
from singleshot.engine.config import load_config
from singleshot.engine.data import epoch_lengths
from singleshot.engine.schedule import build_schedule, epoch_steps, scaled_lr

SIZES = [(270, 1, 32), (270, 2, 16), (1000, 8, 8), (117266, 8, 32), (100, 3, 10), (50, 1, 64)]


def reference_steps_per_epoch(images: int, ranks: int, batch: int) -> int:
    sampler = DistributedSampler(range(images), num_replicas=ranks, rank=0, shuffle=False)
    return len(DataLoader(range(images), batch_size=batch, sampler=sampler))


class DaliIterator:
    """The epoch counting of NVIDIA's ``DALICOCOIterator`` (its data left out): the constructor fetches the first
    batch; ``__next__`` hands that one out first, then stops once the counter exceeds the size, else counts a
    batch; ``reset()`` after an epoch keeps the counter's overshoot."""

    def __init__(self, size: float, batch: int) -> None:
        self.size, self.batch, self.counter = size, batch, 0
        self.first = self.next()

    def next(self) -> str:
        self.counter += self.batch
        return "batch"

    def __iter__(self) -> DaliIterator:
        return self

    def __next__(self) -> str:
        if self.first is not None:
            batch, self.first = self.first, None
            return batch
        if self.counter > self.size:
            raise StopIteration
        return self.next()

    def reset(self) -> None:
        if self.counter > self.size:
            self.counter = self.counter % self.size


def ours(preset: str, images: int, ranks: int, batch: int, skipped_empty: int = 0):
    cfg = load_config(preset, [f"data.batch_size={batch}"])
    sc, global_batch = cfg.schedule, batch * ranks
    epochs = epoch_lengths(cfg.data, images, skipped_empty, ranks)
    varying = epochs if epochs.kind != "constant" else None
    spe = epochs.steps(0)
    base = scaled_lr(cfg.optim.lr, global_batch, cfg.optim.reference_batch, cfg.optim.scale_lr)
    schedule = build_schedule(
        kind=sc.name, peak_lr=base, steps_per_epoch=spe, total_steps=epochs.to_steps(cfg.train.epochs),
        warmup_steps=sc.warmup_steps, warmup_epochs=sc.warmup_epochs, warmup_start_factor=sc.warmup_start_factor,
        milestones_epochs=sc.milestones, gamma=sc.gamma, train_size=images, global_batch=global_batch,
        after_warmup=sc.after_warmup, epochs=varying,
    )  # fmt: skip
    return cfg, spe, base, schedule, epochs


@pytest.mark.parametrize(("images", "ranks", "batch"), SIZES)
def test_mlperf_preset_counts_as_the_reference(images: int, ranks: int, batch: int) -> None:
    _, spe, base, schedule, _ = ours("mlperf_ssd300_resnet34", images, ranks, batch)
    ref_spe = reference_steps_per_epoch(images, ranks, batch)
    assert spe == ref_spe
    wb = int(2.619685 * images / (ranks * batch))  # train.py: int(args.warmup * nonempty_imgs / (N_gpu*batch))
    assert schedule.warmup_steps == wb
    # The reference's loop: lr_decay_schedule checked at each epoch start, lr_warmup on each iteration < wb.
    lr, current_lr, it, expected = base, base, 0, []
    for epoch in range(60):
        if epoch in (40, 50):
            current_lr *= 0.1
            lr = current_lr
        for _ in range(ref_spe):
            if it < wb:
                lr = current_lr - (wb - it) * current_lr / wb  # warmup_factor 0
            expected.append(lr)
            it += 1
    got = [schedule.lr(step) for step in range(len(expected))]
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-18)
    assert schedule.milestones == (40 * ref_spe, 50 * ref_spe)


@pytest.mark.parametrize(("images", "ranks", "batch"), SIZES)
def test_nvidia_preset_epochs_and_lr_follow_the_reference(images: int, ranks: int, batch: int) -> None:
    skipped = images // 100  # images of the annotation file without a box: the iterator's size counts them
    cfg, _, base, schedule, epochs = ours("nvidia_ssd300_resnet50", images, ranks, batch, skipped)
    warmup = cfg.schedule.warmup_steps  # --warmup 300 (iterations)
    # main.py: for each epoch, iterate the DALI iterator to its end (ssd/train.py: warmup() sets base / warmup *
    # iteration below `warmup`), step MultiStepLR([43, 54]) (which scales the lr the optimizer holds), reset().
    loader = DaliIterator((images + skipped) / ranks, batch)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[43, 54], gamma=0.1)
    opt.step()  # (no gradient: nothing changes; keeps torch's scheduler-before-optimizer warning quiet)
    it, expected, lengths = 0, [], []
    for _ in range(65):
        start = it
        for _batch in loader:
            if it < warmup:
                for group in opt.param_groups:
                    group["lr"] = 1.0 * base / warmup * it
            expected.append(opt.param_groups[0]["lr"])
            it += 1
        lengths.append(it - start)
        sched.step()
        loader.reset()
    assert [epochs.steps(e) for e in range(65)] == lengths
    assert schedule.total_steps == it and schedule.milestones == (sum(lengths[:43]), sum(lengths[:54]))
    if sum(lengths[:43]) < warmup:
        pytest.skip("a decay inside the warmup: the reference's warmup overwrites it (not modelled)")
    got = [schedule.lr(step) for step in range(len(expected))]
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-18)


def test_nvidia_epochs_on_coco_at_8_x_32() -> None:
    """COCO 2017 train: 117266 images with boxes, 118287 in the annotation file; 8 processes x 32."""
    epochs = epoch_lengths(load_config("nvidia_ssd300_resnet50", []).data, 117266, 1021, 8)
    assert [epochs.steps(e) for e in range(18)] == [463] + [462] * 16 + [463]
    assert epochs.start(43) == 19869 and epochs.to_steps(65) == 30034  # ours by passes: 458 per epoch


@pytest.mark.parametrize(("images", "batch"), [(18, 4), (16, 4), (3, 4)])
def test_the_padded_last_batch_gives_the_reference_count_of_full_batches(images: int, batch: int, tmp_path) -> None:
    from singleshot.data.formats import load_dataset
    from singleshot.data.synth import generate

    generate(tmp_path / "d", num_train=images, num_val=1, image_size=(48, 40), max_objects=2, seed=1)
    train = load_dataset(str(tmp_path / "d"), split="train")
    loader = build_loader(train, SSDValTransform(32), batch_size=batch, shuffle=True, num_workers=0,
                          pad_last_batch=True)  # fmt: skip
    batches = [[int(i) for i in b["image_ids"]] for b in loader]
    assert len(batches) == reference_steps_per_epoch(len(train), 1, batch) == epoch_steps(len(train), batch, "pad")
    assert all(len(ids) == batch for ids in batches)  # full: the last one wraps around to the epoch's start
    seen = [i for ids in batches for i in ids]
    assert set(seen) == set(seen[: len(train)]) and len(set(seen)) == len(train)
