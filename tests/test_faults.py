"""Fault injection: damaged checkpoints, full and read-only disks, two runs on one folder, killed runs, signals,
and the bad-input cases that used to pass silently (16-bit PNG, unknown categories, empty or missing annotations).

Every command-line failure must be one line on stderr with a non-zero exit, and leave the previous checkpoint
intact. Full and read-only disks are real where this process may mount a tmpfs (root), else injected errors.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from train_helpers import tiny_overrides

import singleshot
import singleshot.checkpoint
from singleshot.checkpoint import CheckpointError, atomic_save, load_checkpoint, make_checkpoint, model_from_checkpoint
from singleshot.cli import describe_error, main
from singleshot.data import load_dataset
from singleshot.data.base import read_image
from singleshot.data.check import check_dataset
from singleshot.engine.hooks import TrainHook
from singleshot.engine.runfolder import RunLock, trim_metrics
from singleshot.engine.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]


def train_cli(run: Path, **extra: object) -> int:
    return main(["train", *tiny_overrides(run, **extra)])


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-step run: checkpoints/last.pt and last.prev.pt."""
    run = tmp_path_factory.mktemp("base") / "run"
    assert train_cli(run, **{"train.max_steps": 2}) == 0
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"last.pt", "last.prev.pt"}
    return run


@pytest.fixture
def run(base_run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(base_run, dst)
    return dst


def _damage(path: Path, how: str) -> None:
    if how == "truncated":
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "random":
        path.write_bytes(random.Random(0).randbytes(4096))
    elif how == "foreign":  # a readable checkpoint of another program
        torch.save({"model": {"conv1.weight": torch.zeros(2, 3, 1, 1)}, "epoch": 3}, path)
    elif how == "no_state":  # a singleshot checkpoint with weights only
        atomic_save(make_checkpoint(singleshot.build_model("ssd_tiny", num_classes=3), ["a", "b"]), path)


WHY = {"truncated": "corrupt", "empty": "is empty", "random": "corrupt", "foreign": "not a singleshot checkpoint",
       "no_state": "no training state"}  # fmt: skip


@pytest.mark.parametrize("how", list(WHY))
def test_damaged_last_resumes_from_previous(run: Path, how: str, capsys: pytest.CaptureFixture[str]) -> None:
    _damage(run / "checkpoints" / "last.pt", how)
    assert train_cli(run, **{"train.max_steps": 3}) == 0
    out = capsys.readouterr().out
    note = next(line for line in out.splitlines() if line.startswith("resuming"))
    assert "from checkpoints/last.prev.pt" in note and "passed over last.pt" in note and WHY[how] in note, note
    assert "trust_pickle" not in note  # a corrupt file is called corrupt, not "holds Python objects"
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 3
    assert (run / "checkpoints" / "last.pt.unreadable").is_file()  # set aside, never kept as the fallback


def test_no_usable_checkpoint_is_one_line(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _damage(run / "checkpoints" / "last.pt", "empty")
    _damage(run / "checkpoints" / "last.prev.pt", "truncated")
    assert train_cli(run, **{"train.max_steps": 3}) != 0
    line = one_error_line(capsys)
    assert "no checkpoint can be resumed from" in line and "last.pt" in line and "last.prev.pt" in line


def test_checkpoint_read_errors_say_what_is_wrong(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    atomic_save(make_checkpoint(singleshot.build_model("ssd_tiny", num_classes=3), ["a", "b"]), good)
    for how, expected in (("empty", "is empty"), ("truncated", "corrupt"), ("random", "corrupt")):
        bad = tmp_path / f"{how}.pt"
        shutil.copy(good, bad)
        _damage(bad, how)
        with pytest.raises(CheckpointError, match=expected) as info:
            load_checkpoint(bad)
        assert "trust_pickle" not in str(info.value) and str(bad) in str(info.value)

    obj = tmp_path / "object.pt"  # a readable pickle holding an object: only then is trust_pickle mentioned
    torch.save({"thing": Foreign()}, obj)
    with pytest.raises(CheckpointError, match="trust_pickle"):
        load_checkpoint(obj)


def test_architecture_mismatch_is_a_named_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = make_checkpoint(singleshot.build_model("ssd_tiny", num_classes=3), ["a", "b"])
    ckpt["model"]["name"] = "ssd300_resnet34"  # the header names one architecture, the weights are another's
    del ckpt["model"]["image_size"]  # (at that architecture's own size)
    with pytest.raises(CheckpointError, match=r"header names ssd300_resnet34 .* weights are of another architecture"):
        model_from_checkpoint(ckpt, source="x.pt")
    path = tmp_path / "mixed.pt"
    atomic_save(ckpt, path)
    assert main(["eval", "--checkpoint", str(path), "--data", str(Path(tiny_overrides(tmp_path)[0].split("=")[1])),
                 "--out", str(tmp_path)]) != 0  # fmt: skip
    assert "another architecture" in one_error_line(capsys)


# ----------------------------------------------------------------------------------------------- disks
class Foreign:
    """A class a checkpoint may pickle; ``torch.load(weights_only=True)`` refuses it."""


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize("style", ["oserror", "runtimeerror"])
def test_injected_disk_full_keeps_previous_checkpoint(
    run: Path, style: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _files(run / "checkpoints")
    real_save = torch.save

    def full_disk(obj: object, f: object, *args: object, **kwargs: object) -> None:
        f.write(b"x" * 1000)  # type: ignore[attr-defined]
        if style == "oserror":
            raise OSError(errno.ENOSPC, "No space left on device")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from OSError(
            errno.ENOSPC, "No space left on device"
        )

    monkeypatch.setattr(singleshot.checkpoint.torch, "save", full_disk)
    assert train_cli(run, **{"train.max_steps": 3}) == 1
    line = one_error_line(capsys)
    assert "disk full" in line and "last.pt" in line, line
    assert _files(run / "checkpoints") == before  # no temporary file left, nothing overwritten
    monkeypatch.setattr(singleshot.checkpoint.torch, "save", real_save)
    assert train_cli(run, **{"train.max_steps": 3}) == 0


def test_injected_read_only_folder(
    run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _files(run / "checkpoints")

    def read_only(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(kwargs.get("dir", "")))

    monkeypatch.setattr(singleshot.checkpoint.tempfile, "mkstemp", read_only)
    assert train_cli(run, **{"train.max_steps": 3}) == 1
    assert "read-only file system" in one_error_line(capsys)
    assert _files(run / "checkpoints") == before


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 12 MiB tmpfs: room for one ssd_tiny training checkpoint (~11 MB) but not for the temporary second one."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:  # fmt: skip
        pytest.skip("cannot mount a tmpfs here (needs root); the injected-error tests cover the same paths")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_real_full_then_read_only_disk(tmpfs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmpfs / "run"
    assert train_cli(run, **{"train.max_steps": 2}) == 1  # the second checkpoint write does not fit
    line = one_error_line(capsys)
    assert "disk full" in line and "last.pt" in line, line
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 2  # the first one is intact
    assert not list((run / "checkpoints").glob(".*.tmp"))
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    assert train_cli(run, **{"train.max_steps": 3}) == 1
    assert "read-only file system" in one_error_line(capsys)
    ckpt = str(run / "checkpoints" / "last.pt")
    data = tiny_overrides(tmp_path)[0].split("=", 1)[1]
    assert main(["eval", "--checkpoint", ckpt, "--data", data]) != 0  # results would go to the read-only run folder
    line = one_error_line(capsys)
    assert "read-only file system" in line and "eval_val_results.json" in line and "--out" in line
    assert main(["eval", "--checkpoint", ckpt, "--data", data, "--out", str(tmp_path / "ev")]) == 0
    assert (tmp_path / "ev" / "eval_val_results.json").is_file()


# ----------------------------------------------------------------------------------------------- run folders
HOLDER = """
import sys, time
from pathlib import Path
from singleshot.engine.runfolder import RunLock
lock = RunLock(Path(sys.argv[1])).acquire()  # kept referenced: a collected lock is released
print("locked", flush=True)
time.sleep(120)
"""


def test_second_start_refused_and_killed_runs_lock_and_tmp_recovered(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert train_cli(run, **{"train.max_steps": 3}) == 1
        line = one_error_line(capsys)
        assert f"pid {holder.pid}" in line and "in use by a live run" in line and "run.name" in line
        assert train_cli(run, **{"train.max_steps": 3, "run.mlperf_log": "true"}) == 1
        assert not (run / "mlperf.log").exists()  # a refused start writes nothing into the live run's folder
        capsys.readouterr()
    finally:
        holder.send_signal(signal.SIGKILL)  # a killed run: its lock must not outlive it
        holder.wait()
    stale = run / "checkpoints" / f".last.pt.{uuid.uuid4().hex[:8]}.tmp"
    stale.write_bytes(b"half a checkpoint")
    assert train_cli(run, **{"train.max_steps": 3}) == 0
    assert not stale.exists() and f"removed {stale}" in capsys.readouterr().out


def test_lock_is_exclusive_within_a_process_too(tmp_path: Path) -> None:
    with RunLock(tmp_path / "r"), pytest.raises(RuntimeError, match="in use by a live run"):
        RunLock(tmp_path / "r").acquire()
    RunLock(tmp_path / "r").acquire().release()  # released: free again


def test_config_yaml_only_after_setup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert train_cli(run, **{"data.batch_size": 64}) != 0  # set-up fails: fewer images than one batch
    assert "fewer than one global batch" in one_error_line(capsys)
    assert not (run / "config.yaml").exists()
    (run / "config.yaml").parent.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text("{{ not yaml")  # garbage and no checkpoint: nothing to protect
    assert train_cli(run, **{"train.max_steps": 1}) == 0


def test_metrics_free_of_duplicates_after_kill_and_resume(tmp_path: Path) -> None:
    run = tmp_path / "run"
    data = tiny_overrides(tmp_path)[0].split("=", 1)[1]
    extra = {"train.max_steps": 24, "train.checkpoint_every_steps": 3, "data.val": data, "eval.every": 1,
             "data.val_batch_size": 8, "run.tensorboard": "true"}  # fmt: skip
    args = [sys.executable, "-m", "singleshot", "train", *tiny_overrides(run, **extra)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 600
    try:
        # kill between checkpoints, after an evaluation: records past the checkpoint exist
        while time.monotonic() < deadline:
            lines = metrics.read_text().splitlines() if metrics.exists() else []
            steps = [json.loads(x)["step"] for x in lines if '"train"' in x and x.endswith("}")]  # whole lines
            if any('"eval"' in x for x in lines) and steps and steps[-1] >= 5 and steps[-1] % 3 != 0:
                break
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    assert steps and steps[-1] % 3 != 0, "the run ended before the moment to kill it"
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] < steps[-1]  # records past the checkpoint
    assert train_cli(run, **extra) == 0
    records = [json.loads(x) for x in metrics.read_text().splitlines()]
    train_steps = [r["step"] for r in records if r["kind"] == "train"]
    eval_steps = [r["step"] for r in records if r["kind"] == "eval"]
    assert train_steps == list(range(1, 25))
    assert eval_steps == [4, 8, 12, 16, 20, 24]
    # TensorBoard too: the resumed run hides the killed run's events past the checkpoint (purge_step)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard")).Reload()
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 25))
    assert [e.step for e in events.Scalars("eval/AP")] == [4, 8, 12, 16, 20, 24]


def test_trim_metrics_rules(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    recs = [{"kind": "train", "step": s} for s in (1, 2, 3, 4)] + [{"kind": "eval", "step": 4}, {"kind": "note"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"kind": "train", "st')  # cut by the kill
    assert trim_metrics(path, step=4, last_eval_step=-1) == 2  # the eval after the checkpoint, the cut line
    kept = [json.loads(x) for x in path.read_text().splitlines()]
    assert kept == [*recs[:4], recs[5]]


# ----------------------------------------------------------------------------------------------- signals
class _SignalAt(TrainHook):
    """Sends this process SIGTERM at one event of the run (a hook: the loop is not patched)."""

    def __init__(self, event: str, step: int | None = None) -> None:
        self.event, self.step = event, step

    def _kill(self, event: str) -> None:
        if event == self.event:
            os.kill(os.getpid(), signal.SIGTERM)

    def record(self, record: dict) -> None:
        if record["kind"] == "train" and record["step"] == self.step:
            self._kill("record")

    def run_start(self) -> None:
        self._kill("run_start")

    def eval_start(self, epoch_num: int) -> None:
        self._kill("eval_start")


def test_sigterm_stops_before_the_next_step(tmp_path: Path) -> None:
    from train_helpers import tiny_config

    cfg = tiny_config(tmp_path / "run", **{"train.max_steps": 6})
    result = Trainer(cfg, hooks=[_SignalAt("record", step=2)]).run()  # arrives after step 2's record
    assert result.status == "interrupted" and result.step == 2
    saved = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert (saved["step"], saved["sampler"]["epoch"], saved["sampler"]["start"]) == (2, 0, 8)  # batch 4: 2 batches
    # A signal as soon as the resumed run starts, before its first step: the position it saves is the one it
    # resumed from (the loader has not iterated yet), not the start of the epoch.
    again = Trainer(cfg, hooks=[_SignalAt("run_start")]).run()
    assert again.status == "interrupted" and again.step == 2
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["sampler"] == saved["sampler"]
    assert Trainer(cfg).run().step == 6


def test_sigterm_during_evaluation_is_resumed(tmp_path: Path) -> None:
    from train_helpers import tiny_config

    data = str(tiny_config(tmp_path).data.train)
    cfg = tiny_config(tmp_path / "run", **{"train.max_steps": 4, "data.val": data, "data.val_batch_size": 2})
    first = Trainer(cfg, hooks=[_SignalAt("eval_start")]).run()
    assert first.status == "interrupted" and first.step == 4 and first.final_stats is None
    second = Trainer(cfg).run()  # the interrupted evaluation runs on resume
    assert second.status == "finished" and second.final_stats is not None
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "eval"] == [4]


# ----------------------------------------------------------------------------------------------- the CLI wrapper
def test_unexpected_error_is_one_line_and_debug_shows_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import singleshot.cli.data as data_cli

    def boom(args: object) -> int:
        raise KeyError("surprise")

    monkeypatch.setattr(data_cli, "run_check", boom)
    monkeypatch.delenv("SINGLESHOT_DEBUG", raising=False)
    parser_args = ["data", "check", "x"]
    assert main(parser_args) == 1
    line = one_error_line(capsys)
    assert "internal error KeyError" in line and "--debug" in line
    assert main(["--debug", *parser_args]) == 1
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("SINGLESHOT_DEBUG", "1")
    assert main(parser_args) == 1
    assert "Traceback" in capsys.readouterr().err


def test_describe_error_words() -> None:
    full = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    full.__context__ = OSError(errno.ENOSPC, "No space left on device")
    assert describe_error(full).startswith("disk full")
    assert describe_error(OSError(errno.EROFS, "Read-only file system", "/x/y")).startswith(
        "read-only file system: cannot write /x/y"
    )
    assert describe_error(PermissionError(errno.EACCES, "Permission denied", "/x")).startswith("permission denied: /x")


# ----------------------------------------------------------------------------------------------- silent cases
def _coco(root: Path, annotations: list[dict], images: int = 2, size: tuple[int, int] = (40, 30)) -> Path:
    (root / "train").mkdir(parents=True)
    (root / "annotations").mkdir()
    for i in range(images):
        Image.new("RGB", size, (100, 150, 200)).save(root / "train" / f"{i}.png")
    doc = {"images": [{"id": i, "file_name": f"{i}.png", "width": size[0], "height": size[1]} for i in range(images)],
           "annotations": annotations, "categories": [{"id": 1, "name": "box"}]}  # fmt: skip
    (root / "annotations" / "instances_train.json").write_text(json.dumps(doc))
    return root


def test_16bit_png_is_scaled_to_8bit(tmp_path: Path) -> None:
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)  # 257 * (0, 1, 128, 255)
    Image.fromarray(values).save(tmp_path / "deep.png")
    image = read_image(tmp_path / "deep.png")
    assert image.dtype == torch.uint8 and image[0].tolist() == [[0, 1, 128, 255]]
    Image.fromarray(values).save(tmp_path / "deep.tif")  # the Pillow path: 16-bit TIFF
    assert read_image(tmp_path / "deep.tif")[1].tolist() == [[0, 1, 128, 255]]


def test_palette_la_cmyk_and_32bit_images(tmp_path: Path) -> None:
    pal = Image.new("P", (4, 2))
    pal.putpalette([10, 20, 30] * 256)
    pal.save(tmp_path / "p.png")
    Image.new("LA", (4, 2), (77, 9)).save(tmp_path / "la.png")
    Image.new("CMYK", (4, 2), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    assert read_image(tmp_path / "p.png")[:, 0, 0].tolist() == [10, 20, 30]
    assert read_image(tmp_path / "la.png")[:, 0, 0].tolist() == [77, 77, 77]
    r, g, b = read_image(tmp_path / "cmyk.jpg")[:, 0, 0].tolist()
    assert r > 200 and g < 60 and b < 60  # CMYK (0, 255, 255, 0) is red
    Image.fromarray(np.zeros((2, 4), np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(Exception, match=r"float\.tif.*32-bit float"):
        read_image(tmp_path / "float.tif")


def test_training_reports_dropped_boxes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    anns = [{"id": i, "image_id": i % 8, "category_id": 1, "bbox": [2, 2, 10, 10], "iscrowd": 0} for i in range(8)]
    anns.append({"id": 50, "image_id": 0, "category_id": 7, "bbox": [1, 1, 5, 5], "iscrowd": 0})  # unknown category
    anns.append({"id": 51, "image_id": 1, "category_id": 1, "bbox": [20, 5, -6, 4], "iscrowd": 0})  # negative width
    root = _coco(tmp_path / "coco", anns, images=8)
    assert train_cli(tmp_path / "run", **{"data.train": str(root), "train.max_steps": 1}) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("data.train:"))
    assert "1 boxes with an unknown category dropped" in line and "1 boxes with no area" in line
    assert "annotations[8] (id=50)" in line and "data check" in line


def test_data_check_fails_on_empty_annotations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _coco(tmp_path / "coco", [])
    report = check_dataset(root)
    assert not report.ok and any("no usable annotations" in p.message for p in report.errors)
    assert main(["data", "check", str(root)]) == 1
    assert main(["eval", "--checkpoint", str(_tiny_ckpt(tmp_path)), "--data", str(root), "--split", "train"]) != 0
    assert "no image with annotations" in one_error_line(capsys)


def test_data_check_fails_without_train_split(tmp_path: Path) -> None:
    anns = [{"id": 1, "image_id": 0, "category_id": 1, "bbox": [2, 2, 10, 10], "iscrowd": 0}]
    root = _coco(tmp_path / "coco", anns)
    (root / "annotations" / "instances_train.json").rename(root / "annotations" / "instances_val.json")
    (root / "train").rename(root / "val")
    report = check_dataset(root)
    assert any("no 'train' split" in p.message for p in report.errors)
    assert main(["data", "check", str(root)]) == 1
    assert main(["data", "check", str(root), "--split", "val"]) == 0  # a val-only set checked as such


def test_out_of_range_numbers_are_named(tmp_path: Path) -> None:
    anns = [{"id": 1, "image_id": 2**64, "category_id": 1, "bbox": [1e80, 2, 10, 10], "iscrowd": 0}]
    root = _coco(tmp_path / "coco", anns)
    doc = json.loads((root / "annotations" / "instances_train.json").read_text())
    doc["images"][0]["height"] = 2**64
    (root / "annotations" / "instances_train.json").write_text(json.dumps(doc))
    with pytest.raises(Exception, match=r"images\[0\] \(id=0\) field 'height'"):
        load_dataset(root, "train")
    messages = [str(p) for p in check_dataset(root, decode=False).errors]
    assert any("field 'height'" in m for m in messages) and any("field 'bbox'" in m for m in messages)


def _tiny_ckpt(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.pt"
    atomic_save(make_checkpoint(singleshot.build_model("ssd_tiny", num_classes=2), ["box"]), path)
    return path


def test_resumed_event_file_sorts_after_the_killed_runs(tmp_path: Path) -> None:
    """TensorBoard reads event files in name order (the creating second first): a run resumed within the second its
    killed predecessor started waits for the next second, so its file (and its purge of orphaned steps) comes last."""
    from singleshot.engine.monitor import _wait_to_sort_last

    now = int(time.time())
    (tmp_path / f"events.out.tfevents.{now}.zzz-host.99999.0").write_bytes(b"")
    _wait_to_sort_last(tmp_path)
    assert int(time.time()) > now
    (tmp_path / f"events.out.tfevents.{now + 3600}.host.1.0").write_bytes(b"")  # a clock far ahead: no long sleep
    t0 = time.monotonic()
    _wait_to_sort_last(tmp_path)
    assert time.monotonic() - t0 < 0.5
