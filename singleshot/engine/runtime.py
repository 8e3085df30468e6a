"""Device, precision, determinism and signal handling for a training process."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from types import FrameType
from typing import Any

import numpy as np
import torch

from singleshot.accelerator import capabilities, synchronize


def seed_everything(seed: int, deterministic: bool, device: torch.device) -> None:
    """Seed Python, NumPy and torch; in deterministic mode, force deterministic kernels (and no cuDNN autotuning)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif capabilities(device).cudnn:
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


class StopRequest:
    """Turns SIGTERM/SIGINT into a flag the loop polls after each step (save a checkpoint, then exit).

    A second Ctrl-C raises ``KeyboardInterrupt`` at once, for a user who does not want to wait.
    Handlers are only installed from the main thread (Python's rule); elsewhere the flag just stays 0.
    """

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum


class SectionTimer:
    """Wall time per named section of the training step (for the overhead benchmark); a no-op unless enabled.

    When enabled on an accelerator it synchronizes at each boundary so that time lands in the section that spent it.
    """

    def __init__(self, enabled: bool = False, device: torch.device | None = None, skip_steps: int = 0) -> None:
        self.enabled = enabled
        self.skip_steps = skip_steps  # warm-up steps not recorded
        self.device = device
        self.sync = enabled and device is not None and device.type != "cpu"
        self.totals: dict[str, float] = defaultdict(float)
        self.steps = 0

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if not self.enabled or self.steps < self.skip_steps:
            yield
            return
        if self.sync:
            synchronize(self.device)
        t0 = time.perf_counter()
        yield
        if self.sync:
            synchronize(self.device)
        self.totals[name] += time.perf_counter() - t0

    @property
    def recorded_steps(self) -> int:
        return max(0, self.steps - self.skip_steps)
