"""The loader throughput measurement (``engine.data.batches_per_second``, also what ``data.backend=auto`` decides
with) counts steady-state batches only: batches the loader had prefetched before they were asked for are consumed
before the clock starts, and a loader too short for that is refused rather than measured."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from singleshot.data import SSDValTransform, build_loader
from singleshot.data.base import DetectionDataset
from singleshot.engine import data as engine_data
from singleshot.engine.data import LoaderTooShortError, batches_per_second, prefetch_depth

SLOW_S = 0.02  # seconds per batch once the prefetched ones are used up: the steady-state rate is 50 batches/s


class PrefetchingLoader:
    """Its first ``depth`` batches are ready at once (made ahead by workers); every later one takes ``SLOW_S``."""

    def __init__(self, depth: int, length: int, slow_s: float = SLOW_S) -> None:
        self.prefetch_depth, self.length, self.slow_s = depth, length, slow_s

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(self.length):
            if i >= self.prefetch_depth:
                time.sleep(self.slow_s)
            yield {"index": i}


def naive_rate(loader: Any, batches: int) -> float:
    """What the replaced measurement did: time ``batches`` batches right after the first one."""
    it = iter(loader)
    next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches / (time.perf_counter() - start)


def test_measures_the_steady_rate_not_the_prefetched_batches() -> None:
    depth = 8
    rate = batches_per_second(PrefetchingLoader(depth, depth + 1 + 20), timed=20)
    steady = 1 / SLOW_S
    # sleep() overshoots (more on a loaded machine) and never undershoots: the rate lands at or under 50 batches/s
    assert 0.5 * steady <= rate <= 1.02 * steady, rate
    # the same loader fools a measurement that starts right after the first batch (the old function's way, with its
    # default of 4 batches: all prefetched here), so the bounds above discriminate
    assert naive_rate(PrefetchingLoader(depth, depth + 1 + 20), 4) > 5 * steady


def test_refuses_a_loader_too_short_to_reach_steady_state() -> None:
    with pytest.raises(LoaderTooShortError, match=r"needs 29 batches .*8 that can be prefetched.* has 28"):
        batches_per_second(PrefetchingLoader(8, 28), timed=20)
    # an iterable without a length is refused when it runs out
    with pytest.raises(ValueError, match=r"needs 7 batches .* has 5"):
        batches_per_second(iter([{"i": i} for i in range(5)]), timed=6)
    with pytest.raises(ValueError, match="at least 1"):
        batches_per_second(PrefetchingLoader(0, 10), timed=0)


def _dataset(n: int) -> DetectionDataset:
    """Records only (the loaders below are never iterated, so no image is read)."""
    return DetectionDataset(
        root="unused", paths=[f"img{i}.jpg" for i in range(n)], image_ids=list(range(n)),
        sizes=np.full((n, 2), 100), boxes=[np.array([[10, 10, 50, 50]], np.float32)] * n,
        labels=[np.array([1])] * n, classes=["thing"], label_to_category_id={1: 1},
    )  # fmt: skip


def test_prefetch_depth_of_the_builtin_loader() -> None:
    ds, tf = _dataset(8), SSDValTransform(32)
    two_workers = build_loader(ds, tf, batch_size=2, shuffle=True, num_workers=2, pin_memory=False)
    assert two_workers.prefetch_depth == 4 == prefetch_depth(two_workers)  # 2 workers x prefetch_factor 2
    deeper = build_loader(ds, tf, batch_size=2, shuffle=True, num_workers=2, prefetch_factor=5, pin_memory=False)
    assert deeper.prefetch_depth == 10
    in_process = build_loader(ds, tf, batch_size=2, shuffle=True, num_workers=0, pin_memory=False)
    assert in_process.prefetch_depth == 0
    # a plain DataLoader, and an iterable that states nothing
    assert prefetch_depth(torch.utils.data.DataLoader(range(4), num_workers=2, prefetch_factor=3)) == 6
    assert prefetch_depth([1, 2, 3]) == 0


def test_prefetch_depth_of_the_dali_loader() -> None:
    from singleshot.data.dali import DaliLoader, dali_missing_reason

    reason = dali_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    loader = DaliLoader(_dataset(8), mode="val", image_size=32, batch_size=2, shuffle=False, prefetch=3)
    assert loader.prefetch_depth == 3 == prefetch_depth(loader)


def test_auto_backend_chooses_by_steady_rate_and_falls_back_on_a_small_set() -> None:
    # builtin: fast only while its prefetched batches last; DALI: steadily faster
    builtin = lambda: PrefetchingLoader(6, 6 + 1 + 5, slow_s=0.02)  # noqa: E731
    fast_dali = lambda: PrefetchingLoader(2, 2 + 1 + 5, slow_s=0.005)  # noqa: E731
    backend, note = engine_data._choose_on_cuda({"builtin": builtin, "dali": fast_dali}, timed=5)
    assert backend == "dali" and "steady state" in note, note
    # a training set too small to measure: builtin, and the note says why (no exception)
    short = lambda: PrefetchingLoader(6, 8)  # noqa: E731
    backend, note = engine_data._choose_on_cuda({"builtin": short, "dali": fast_dali}, timed=5)
    assert backend == "builtin" and "too small" in note and "8 batches" in note and "12 needed" in note, note
