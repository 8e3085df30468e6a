"""Follow one image through ``singleshot predict`` and print the package files it enters, in order.

    python scripts/trace_predict.py --checkpoint runs/cpu_tiny/checkpoints/best.pt [IMAGE]

A file is *entered* when a function in it is called from a function in another singleshot file (calls that pass
through torch, e.g. ``nn.Module.__call__``, count as made by the singleshot frame below them; a generator resumed is
the same entry). Opening the model (``Detector.from_checkpoint`` and what it calls) and importing modules are not the
image's path and are left out, as is building the command-line parser. Two counts: the files the command and the
inference package enter (the model's forward and the box math each appear as the one file the core calls), and every
file entered, inside the model and the box math too.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "singleshot"
# Opening the model (Detector.from_checkpoint -> load_model) and importing modules are not the image's path.
SKIP_FUNCTIONS = {"from_checkpoint", "<module>", "register"}  # "register": building the command line


def _ours(frame: FrameType | None) -> str | None:
    if frame is None:
        return None
    path = Path(frame.f_code.co_filename)
    try:
        return path.resolve().relative_to(PACKAGE).as_posix()
    except ValueError:
        return None


def trace(argv: list[str]) -> list[tuple[str, str]]:
    """Run ``singleshot predict argv`` under a profiler; return ``(caller file, entered file)`` in order."""
    from singleshot.cli import main

    entries: list[tuple[str, str]] = []
    skipping: list[FrameType] = []
    started: set[int] = set()  # frames already running: a generator resumed is not entered again

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event != "call":
            if event == "return" and skipping and frame is skipping[-1]:
                skipping.pop()
            return
        callee = _ours(frame)
        if callee is None:
            return
        if frame.f_code.co_name in SKIP_FUNCTIONS:
            skipping.append(frame)
        if skipping or id(frame) in started:
            return
        if frame.f_code.co_flags & 0x20:  # CO_GENERATOR: its later resumptions are the same entry
            started.add(id(frame))
        caller = frame.f_back
        while caller is not None and _ours(caller) is None:  # through torch and the standard library
            caller = caller.f_back
        where = _ours(caller)
        if where is not None and where != callee:
            entries.append((where, callee))

    sys.setprofile(profile)
    try:
        code = main(["predict", *argv])
    finally:
        sys.setprofile(None)
    if code != 0:
        raise SystemExit(f"singleshot predict exited with {code}")
    return entries


def _report(title: str, entries: list[str]) -> None:
    counts = Counter(entries)
    print(f"{title}: {len(counts)} files; entered more than once: "
          f"{ {k: v for k, v in counts.items() if v > 1} or 'none'}")
    print("  " + " -> ".join(entries))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("image", nargs="?", default=None, help="default: the first image of the built-in synthetic set")
    args = p.parse_args(argv)
    image = args.image
    if image is None:
        from singleshot.data.formats import load_dataset

        image = str(load_dataset("synth", split="val").image_path(0))
    with tempfile.TemporaryDirectory() as out:
        entries = trace(["--checkpoint", args.checkpoint, image, "--out", out, "--device", "cpu"])
    orchestration = [callee for caller, callee in entries if caller.startswith(("cli/", "inference/"))]
    _report("entered by the command and the inference package (the model and the box math each as the one file "
            "the core calls)", orchestration)
    _report("every file entered (inside the model's forward and the box math too)", [c for _, c in entries])
    return 0


if __name__ == "__main__":
    sys.exit(main())
