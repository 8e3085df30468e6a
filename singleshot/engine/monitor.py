"""What the user sees during training: a progress bar (or log lines), a JSONL metrics file, TensorBoard scalars.

Only rank 0 creates a :class:`Monitor` with outputs; other ranks get a silent one.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm


def _wait_to_sort_last(log_dir: Path) -> None:
    """Sleep until a new event file in ``log_dir`` sorts after every file already there: up to a second, or two when a
    file is stamped a second ahead (clock skew); a file stamped further ahead is left alone (no long sleep).

    TensorBoard reads a folder's event files in name order, and a name starts with the creating second
    (``events.out.tfevents.<int seconds>.<host>.<pid>``): a run resumed within the second its killed predecessor
    started would be read first, so the predecessor's events past the checkpoint would not be purged and its steps
    would come after the resumed run's."""
    stamps = []
    for f in log_dir.glob("events.out.tfevents.*"):
        part = f.name.split(".")[3]
        if part.isdigit():
            stamps.append(int(part))
    if stamps:
        wait = max(stamps) + 1 - time.time()
        if 0 < wait <= 2:
            time.sleep(wait)


class Monitor:
    """Progress display + ``metrics.jsonl`` + TensorBoard for one run (rank 0); inert when ``run_dir`` is None.

    Args:
        run_dir: where ``metrics.jsonl`` and ``tensorboard/`` go; None for a silent monitor (ranks > 0).
        total_steps: the run's length for the bar and the ETA.
        mode: "bar" (tqdm), "log" (a line every ``log_every`` steps), "none", or "auto" (bar on a terminal).
        tensorboard: write TensorBoard scalars.
    """

    def __init__(
        self,
        run_dir: Path | None,
        total_steps: int,
        initial_step: int = 0,
        mode: str = "auto",
        tensorboard: bool = True,
        log_every: int = 10,
    ) -> None:
        self.active = run_dir is not None
        self.total_steps = total_steps
        self.log_every = max(1, log_every)
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "log"
        self.mode = mode if self.active else "none"
        self._jsonl = open(run_dir / "metrics.jsonl", "a") if self.active else None  # noqa: SIM115
        self._tb: Any = None
        if self.active and tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # imported lazily: it pulls in tensorboard

            # On resume, events a killed run wrote after its checkpoint (steps > initial_step) are hidden, as
            # trim_metrics does for metrics.jsonl; the resumed run writes those steps again.
            purge = initial_step + 1 if initial_step > 0 else None
            _wait_to_sort_last(run_dir / "tensorboard")
            self._tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=purge)
        self._bar = None
        if self.mode == "bar":
            self._bar = tqdm(total=total_steps, initial=initial_step, unit="step", dynamic_ncols=True, smoothing=0.1)
        self._t0 = time.perf_counter()
        self._step0 = initial_step

    @property
    def tensorboard(self) -> Any:
        """The TensorBoard ``SummaryWriter`` (None when off), for pictures next to the scalars."""
        return self._tb

    def write(self, record: dict[str, Any]) -> None:
        """Append one JSON line (``kind`` says what it is) and mirror its numbers to TensorBoard."""
        if not self.active:
            return
        record = {"time": round(time.time(), 3), **record}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        if self._tb is not None and "step" in record:
            prefix = record.get("kind", "train")
            for k, v in record.items():
                if k not in ("time", "step", "kind", "epoch") and isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(f"{prefix}/{k}", v, record["step"])
            self._tb.flush()  # on disk as soon as metrics.jsonl: a killed run loses neither

    def step(self, step: int, epoch: int, loss: float, lr: float, img_per_s: float) -> None:
        """Called after every optimizer step with the latest numbers (``loss`` may lag by a few steps)."""
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            text = f"ep {epoch + 1} loss {loss:.3f} lr {lr:.2e} {img_per_s:.0f} img/s"
            self._bar.set_postfix_str(text, refresh=False)
        elif self.mode == "log" and (step % self.log_every == 0 or step == self.total_steps):
            elapsed = time.perf_counter() - self._t0
            rate = (step - self._step0) / max(elapsed, 1e-9)
            eta = (self.total_steps - step) / max(rate, 1e-9)
            print(
                f"step {step}/{self.total_steps} epoch {epoch + 1} loss {loss:.4f} lr {lr:.3e} "
                f"{img_per_s:.1f} img/s eta {_hms(eta)}",
                flush=True,
            )

    def print(self, text: str) -> None:
        """A message that does not break the progress bar."""
        if not self.active:
            return
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None


def _hms(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
