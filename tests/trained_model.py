"""A trained ssd_tiny for tests that need a model which finds objects: export parity, reports.

Trained once per machine (~120 steps on the 16 training images of :func:`train_helpers.tiny_dataset`, about a
minute on 2 CPU cores) and cached in the temp folder; ``SINGLESHOT_TEST_CHECKPOINT`` points to another one instead.
On those images it finds the shapes with high scores, which is all the parity tests need: a comparison on images
where nothing is found compares nothing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import torch
from train_helpers import tiny_config, tiny_dataset

from singleshot.engine.trainer import Trainer

STEPS = 120


def trained_checkpoint() -> Path:
    """``checkpoints/last.pt`` of the cached tiny run (trained on first use, atomic rename)."""
    if os.environ.get("SINGLESHOT_TEST_CHECKPOINT"):
        return Path(os.environ["SINGLESHOT_TEST_CHECKPOINT"])
    final = Path(tempfile.gettempdir()) / f"singleshot-test-trained-{_architecture_fingerprint()}-{STEPS}"
    if (final / ".complete").exists():
        return final / "checkpoints" / "last.pt"
    tmp = final.parent / f".{final.name}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    threads = torch.get_num_threads()
    try:
        cfg = tiny_config(tmp, **{"train.max_steps": STEPS, "data.batch_size": 8, "optim.lr": 0.1,
                                  "schedule.warmup_steps": 10, "train.deterministic": "false", "train.threads": 2})
        Trainer(cfg).run()
    finally:
        torch.set_num_threads(threads)
    (tmp / ".complete").write_text("ok\n")
    try:
        os.rename(tmp, final)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return final / "checkpoints" / "last.pt"


def _architecture_fingerprint() -> str:
    """A short hash of ssd_tiny's tensor names and shapes: a cached run of an older architecture is not reused."""
    import hashlib

    from singleshot import build_model

    state = build_model("ssd_tiny", num_classes=TINY_CLASSES).state_dict()
    text = ";".join(f"{k}:{tuple(v.shape)}" for k, v in state.items())
    return hashlib.sha256(text.encode()).hexdigest()[:10]


TINY_CLASSES = 7  # the tiny set's 6 shapes + background; the fingerprint only needs a fixed count


def images_with_objects(size: int = 160, count: int = 4) -> torch.Tensor:
    """``uint8[count, 3, size, size]``: the first training images of the tiny set, resized as the model sees them."""
    from singleshot.data.formats import load_dataset
    from singleshot.data.transforms import resize_square

    ds = load_dataset(str(tiny_dataset()), split="train")
    return torch.stack([resize_square(ds[i][0], size) for i in range(count)])
