"""The training loop: one class that turns a :class:`TrainConfig` into a run folder.

Single process::

    singleshot train                                   # the CPU preset on the synthetic set
    singleshot train --config mlperf_ssd300_resnet34 data.train=/data/coco data.val=/data/coco

One node, 8 GPUs / several nodes (torchrun or SLURM srun set the environment; see distributed.py)::

    torchrun --standalone --nproc_per_node=8 -m singleshot train --config nvidia_ssd300_resnet50 ...
    srun --ntasks-per-node=8 --gpus-per-task=1 python -m singleshot train --config ...

Per step: the batch is finished on the device (photometric work, channels-last), box targets are encoded there
with :class:`~singleshot.box.TargetEncoder`, forward runs under autocast, the loss is checked for NaN/Inf (one small
all-reduce carries that flag, the stop flag and the loss to every rank so all ranks skip or stop together), then
backward and the SGD step through the gradient scaler. A run folder re-used by the same command resumes from
``checkpoints/last.pt`` exactly where it stopped.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from singleshot.accelerator import resolve_device
from singleshot.engine import distributed as D
from singleshot.engine.build import build_training
from singleshot.engine.checkpointing import (
    PREVIOUS_LAST,
    resume_point,
    save_training_checkpoint,
    set_rng_state,
)
from singleshot.engine.config import RESUME_MUTABLE, ConfigError, TrainConfig
from singleshot.engine.hooks import HookList, TrainHook
from singleshot.engine.mlperf import MLPerfHook
from singleshot.engine.monitor import Monitor
from singleshot.engine.runfolder import RunLock, remove_stale_temporaries, trim_metrics, write_text_atomic
from singleshot.engine.runtime import SectionTimer, StopRequest, seed_everything
from singleshot.evaluation import STAT_NAMES, evaluate
from singleshot.precision import resolve_precision


class TrainingDiverged(RuntimeError):
    """Too many non-finite losses in a row."""


class EvaluationInterrupted(Exception):
    """A signal arrived during an evaluation in a single-process run."""


class _Interruptible:
    """Iterates a loader but raises :class:`EvaluationInterrupted` at the first batch after a signal."""

    def __init__(self, loader: Any, stop: StopRequest) -> None:
        self.loader, self.stop = loader, stop  # ``.loader``: evaluate() finds the dataset through it

    def __iter__(self) -> Any:
        for batch in self.loader:
            if self.stop.signum:
                raise EvaluationInterrupted
            yield batch


@dataclass
class TrainResult:
    run_dir: Path
    status: str  # "finished" | "target_reached" | "interrupted" | "already_finished"
    step: int
    epoch: int
    best_map: float | None
    final_stats: list[float] | None
    wall_time: float
    signum: int = 0
    main: bool = True  # rank 0 (the process that prints and writes)


@dataclass
class RunState:
    """What a run knows about itself across resumes (saved as the checkpoint's ``train_state``)."""

    best_map: float | None = None  # best COCO mAP@[.5:.95] of the evaluations so far
    last_eval_step: int = -1  # step of the last evaluation
    bad_steps_total: int = 0  # steps skipped for a non-finite loss
    elapsed: float = 0.0  # training wall seconds before this process started
    finished: bool = False
    status: str = "running"  # "running" | "finished" | "target_reached"
    final_stats: list[float] | None = None  # the 12 COCO numbers of the last evaluation
    eval_pending: bool = False  # a signal interrupted an evaluation: run it first on resume

    @classmethod
    def from_checkpoint(cls, saved: dict[str, Any]) -> RunState:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in known})


class Trainer:
    """Runs (or resumes) the training ``cfg`` describes, in its run folder. The parts it trains with are built by
    :func:`~singleshot.engine.build.build_training` (``self.parts``); ``loss_fn`` replaces the loss the model's spec
    and ``train.box_loss`` would build (same call contract as :func:`singleshot.build_loss`'s modules); ``hooks``
    act at the run's events (:class:`~singleshot.engine.hooks.TrainHook`; MLPerf logging is one); ``timer``
    profiles the step sections."""

    def __init__(
        self,
        cfg: TrainConfig,
        timer: SectionTimer | None = None,
        loss_fn: torch.nn.Module | None = None,
        hooks: list[TrainHook] | None = None,
    ) -> None:
        self.cfg = cfg
        self._given_loss = loss_fn
        self.info = D.detect_environment()
        try:
            self.device = resolve_device(cfg.train.device, self.info.local_rank, "train.device")
            self.precision = resolve_precision(cfg.train.precision, self.device, training=True)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        self.timer = timer or SectionTimer(False)
        self.run_dir = cfg.run_dir()
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.main = self.info.is_main
        self.lock = RunLock(self.run_dir) if self.main else None
        # MLPerf's hook only when logging: every event of the loop goes through the hook list.
        mlperf = [MLPerfHook(True, cfg.eval.target_map)] if cfg.run.mlperf_log else []
        self.hooks = HookList([*mlperf, *(hooks or [])])

    # ----------------------------------------------------------------------------------------------- set-up
    def _setup(self) -> None:
        """The run folder, seeds and the checkpoint to resume; the training parts; the run's state. Random numbers
        are restored last: nothing after that may draw any before the loop."""
        cfg, info = self.cfg, self.info
        if cfg.train.threads and self.device.type == "cpu":
            torch.set_num_threads(cfg.train.threads)
        D.init_distributed(info, self.device)
        if self.lock is not None:  # before anything writes into the folder (mlperf.log included)
            self.lock.acquire()  # one live run per folder; a killed run's lock went with its process
            for tmp in remove_stale_temporaries(self.ckpt_dir):
                print(f"removed {tmp}, left by a run killed while writing a checkpoint")
        self.hooks.fire("init_start", self.run_dir, self.main)
        seed_everything(cfg.train.seed + info.rank, cfg.train.deterministic, self.device)
        self.resume, self.resume_note = resume_point(self.run_dir, cfg.to_dict(), RESUME_MUTABLE, self.main)
        self.parts = build_training(
            cfg, device=self.device, precision=self.precision, info=info, resume=self.resume,
            loss_fn=self._given_loss, timer=self.timer,
        )  # fmt: skip
        self.state, self.epoch, self.step = RunState(), 0, 0
        if self.resume is not None:
            self.epoch, self.step = int(self.resume["epoch"]), int(self.resume["step"])
            self.state = RunState.from_checkpoint(self.resume.get("train_state", {}))
            set_rng_state(self.resume["rng"])  # last: nothing after this may draw random numbers before the loop
        if self.main:  # only now: a set-up that failed leaves no config.yaml to block or mislead the next start
            write_text_atomic(self.run_dir / "config.yaml", cfg.to_yaml())
        self.hooks.fire("init_end", cfg, self.parts)

    # ----------------------------------------------------------------------------------------------- pieces
    def save(self, name: str = "last.pt", sampler: dict[str, int] | None = None, epoch: int | None = None) -> None:
        """Rank 0 writes ``checkpoints/<name>`` atomically (all ranks hold the same weights)."""
        if not self.main:
            return
        p = self.parts
        save_training_checkpoint(
            self.ckpt_dir / name, previous=self.ckpt_dir / PREVIOUS_LAST if name == "last.pt" else None,
            model=p.model, ema=p.ema, classes=p.classes, label_to_category_id=p.label_to_category_id,
            config=self.cfg.to_dict(), optimizer=p.optimizer, scheduler=p.scheduler, scaler=p.scaler,
            epoch=self.epoch if epoch is None else epoch, step=self.step,
            sampler=sampler or p.data.train_loader.state_dict(), state=self._state_now(),
        )  # fmt: skip

    def _state_now(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self.state), "elapsed": self.state.elapsed + time.perf_counter() - self._t_start}

    def run_eval(self, stop: StopRequest | None = None) -> list[float] | None:
        """COCO evaluation on the validation set (sharded across ranks; every rank gets the numbers).

        With ``stop`` in a single-process run, a signal interrupts it at the next batch (EvaluationInterrupted);
        several processes finish it, since every rank must leave the evaluation together.
        """
        p = self.parts
        if p.data.val_loader is None:
            return None
        val_loader: Any = p.data.val_loader
        if stop is not None and not self.info.enabled:
            val_loader = _Interruptible(val_loader, stop)
        D.average_bn_stats(p.eval_model)
        self.hooks.fire("eval_start", self.epoch + 1)
        if self.main:
            self.monitor.print(f"evaluation after epoch {self.epoch + 1} (step {self.step}):")
        t0 = time.perf_counter()
        result = evaluate(
            p.inference, val_loader,
            label_to_category_id=p.val_label_to_category_id, log=self.monitor.print if self.main else None,
            results_file=str(self.run_dir / "coco_results.json") if self.main and self.cfg.run.report else None,
            keep_detections=self.main and self.cfg.run.report,
        )  # fmt: skip
        named = {name: float(result[name]) for name in STAT_NAMES}
        stats = list(named.values())
        self.hooks.fire("eval_end", self.epoch + 1, named)
        self.state.last_eval_step = self.step
        self.state.final_stats = stats
        if self.state.best_map is None or stats[0] > self.state.best_map:
            self.state.best_map = stats[0]
        record = {"kind": "eval", "step": self.step, "epoch": self.epoch + 1, **named}
        self._write({**record, "eval_seconds": round(time.perf_counter() - t0, 2)})
        if self.main and self.cfg.run.report:
            from singleshot.engine.report import evaluation_report

            evaluation_report(
                self.run_dir, dataset=p.data.val, core=p.inference, evaluation=result,
                step=self.step, classes=p.classes, num_pictures=self.cfg.eval.num_pictures,
                tensorboard=self.monitor.tensorboard, log=self.monitor.print,
            )  # fmt: skip
        return stats

    def _eval_due(self, epoch_num: int) -> bool:
        ev = self.cfg.eval
        return (ev.every > 0 and epoch_num % ev.every == 0) or epoch_num in ev.at

    def _target_reached(self) -> bool:
        target = self.cfg.eval.target_map
        return target is not None and self.state.final_stats is not None and self.state.final_stats[0] >= target

    # ----------------------------------------------------------------------------------------------- the loop
    def run(self) -> TrainResult:
        self._t_start = time.perf_counter()
        try:
            self._setup()
            if (
                self.resume is not None
                and self.state.finished
                and (self.step >= self.parts.total_steps or self.state.status == "target_reached")
            ):
                if self.main:
                    print(
                        f"run {self.run_dir} already finished ({self.state.status}, step {self.step}, best mAP "
                        f"{self.state.best_map}); pick another folder with run.name=NAME to train again"
                    )
                return self._result("already_finished", 0)
            self.state.finished = False
            if self.resume is not None and self.main:
                print(f"{self.resume_note}: epoch {self.epoch + 1}, step {self.step}")
            if self.main:  # records of steps after the checkpoint would be written twice
                last_eval = self.state.last_eval_step if self.resume is not None else -1
                trim_metrics(self.run_dir / "metrics.jsonl", self.step, last_eval)
            self.monitor = Monitor(
                self.run_dir if self.main else None, self.parts.total_steps, self.step, self.cfg.train.progress,
                self.cfg.run.tensorboard, self.cfg.train.log_every,
            )  # fmt: skip
            try:
                with StopRequest() as stop:
                    status = self._loop(stop)
                if status in ("finished", "target_reached") and self.main and self.cfg.run.report:
                    self._report()
            finally:
                self.monitor.close()
            return self._result(status, stop.signum)
        finally:
            D.cleanup_distributed()
            if self.lock is not None:
                self.lock.release()

    def _result(self, status: str, signum: int) -> TrainResult:
        best, final = self.state.best_map, self.state.final_stats
        wall = time.perf_counter() - self._t_start
        return TrainResult(self.run_dir, status, self.step, self.epoch, best, final, wall, signum, self.main)

    def _loop(self, stop: StopRequest) -> str:
        """Epochs until the run's steps are done (or the target is reached, or a signal stops it): train, the
        epoch's checkpoint, evaluation when due. Returns the run's status."""
        loader = self.parts.data.train_loader
        self._announce()
        self.hooks.fire("run_start")
        self._train_mode()
        window = {"loss": 0.0, "box": 0.0, "cls": 0.0, "n": 0, "t": time.perf_counter(), "images": 0}
        status = "finished"
        sampler_state = loader.state_dict()
        pending_eval, self.state.eval_pending = self.state.eval_pending, False  # an evaluation a signal interrupted
        while self.step < self.parts.total_steps or pending_eval:
            pending_eval = False
            epoch_num = self.epoch + 1
            loader.set_epoch(self.epoch)
            self.hooks.fire("epoch_start", epoch_num)
            # The iterator lives here, not in _train_epoch: the loader's state (DALI's included) is read through
            # it after the epoch's steps, for the checkpoint and for a save on a signal.
            done = loader.start_batch  # steps of this epoch a resumed run has done
            batches = iter(loader)
            in_epoch = self._train_epoch(stop, window, batches, done)
            if in_epoch is None:
                return self._interrupted(stop)
            self._sync_steps(window)  # the epoch's last counts before its checkpoint
            complete = in_epoch >= self.parts.steps_per_epoch
            sampler_state = loader.next_epoch_state() if complete else loader.state_dict()
            self.hooks.fire("epoch_end", epoch_num)
            if not self._evaluate_if_due(stop, epoch_num, complete, sampler_state):
                return self._interrupted(stop)
            if complete:
                self.epoch += 1
            if self._target_reached():
                status = "target_reached"
                break
            self.save(sampler=sampler_state)
        return self._finish(status, sampler_state)

    def _announce(self) -> None:
        """The run's first line: model, data, steps, batch, lr, device, precision, input pipeline, run folder."""
        cfg, p = self.cfg, self.parts
        if self.main:
            where = f"{self.device} x {self.info.world_size}" if self.info.enabled else str(self.device)
            print(
                f"training {cfg.model.name} on {len(p.data.train)} images ({p.steps_per_epoch} steps/epoch, "
                f"{p.total_steps} steps, global batch {p.global_batch}, lr {p.base_lr:.4g}, {where}, "
                f"{self.precision}, data {p.data.backend}, {p.loader_workers} loader workers); run folder: "
                f"{self.run_dir}"
                + (f"\n{p.data.backend_note}" if p.data.backend_note and cfg.data.backend == "auto" else ""),
                flush=True,
            )

    def _train_epoch(
        self, stop: StopRequest, window: dict[str, Any], it: Iterator[dict[str, Any]], in_epoch: int
    ) -> int | None:
        """Steps through the rest of the current epoch's batches ``it`` (or until the run's last step), ``in_epoch``
        of its steps done before. Returns the epoch's steps done, or None when a signal stops the run (the caller
        saves and exits)."""
        cfg = self.cfg
        while self.step < self.parts.total_steps:
            if stop.signum and not self.info.enabled:  # one process: stop before the next step, not after it
                self._sync_steps(window)
                return None
            with self.timer("data"):
                batch = next(it, None)
            if batch is None:
                break
            if self.step == 0 and self.main and cfg.run.report:  # what the model is fed, before it changes
                from singleshot.engine.report import start_report

                spec = self.parts.model.spec
                start_report(self.run_dir, batch=batch, train_set=self.parts.data.train, mean=spec.mean,
                             std=spec.std, tensorboard=self.monitor.tensorboard)  # fmt: skip
            self.parts.train_step(batch, stop.signum > 0)  # queues the work; the host does not wait for it
            if self.parts.ema is not None:
                self.parts.ema.update(self.parts.model)  # after a skipped step the weights are unchanged: harmless
            self.step += 1
            in_epoch += 1
            self.timer.steps += 1
            self.hooks.fire("step_end", self.step)
            with self.timer("logging"):
                window["images"] += len(batch["image_ids"]) * self.info.world_size
                if self._log_step(window):  # every rank read the stop flag at the same step
                    return None
            if self.step >= self.parts.total_steps:
                break
            every = cfg.train.checkpoint_every_steps
            if every and self.step % every == 0:
                self._sync_steps(window)
                self.save()
        return in_epoch

    def _evaluate_if_due(self, stop: StopRequest, epoch_num: int, complete: bool, sampler: dict[str, int]) -> bool:
        """Evaluate at a due epoch end and at the run's last step, keeping ``best.pt``; False when a signal
        interrupted the evaluation (saved with a flag: the resumed run evaluates again first)."""
        if not ((complete and self._eval_due(epoch_num)) or self.step >= self.parts.total_steps):
            return True
        try:
            self.run_eval(stop)
        except EvaluationInterrupted:
            self.state.eval_pending = True
            return False
        self._train_mode()
        best = self.state.best_map
        if self.main and best is not None and self.state.final_stats[0] >= best:
            self.save("best.pt", sampler=sampler, epoch=self.epoch + int(complete))
        return True

    def _finish(self, status: str, sampler: dict[str, int]) -> str:
        """The final checkpoint (marked finished), the last line, and MLPerf's run_stop."""
        self.state.finished, self.state.status = True, status
        self.save(sampler=sampler)
        if self.main:
            self.monitor.print(
                f"done: {status} at step {self.step}; best mAP {self.state.best_map}; run folder {self.run_dir}"
            )
        self.hooks.fire("run_end", status)
        return status

    def _interrupted(self, stop: StopRequest) -> str:
        self.save()
        self.monitor.print(
            f"signal {stop.signum}: saved {self.ckpt_dir / 'last.pt'} at step {self.step}; "
            "re-run the same command to resume"
        )
        self.hooks.fire("run_end", "interrupted")
        return "interrupted"

    def _train_mode(self) -> None:
        self.parts.train_model.train()
        if self.cfg.train.freeze_bn:
            for module in self.parts.model.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()

    def _sync_steps(self, window: dict[str, Any]) -> bool:
        """Read the steps since the last read from the device (one transfer; see engine/step.py): count skipped
        steps, stop on too many in a row, add the losses to ``window``. Returns True when some rank asked to stop."""
        out = self.parts.train_step.read()
        if out.steps == 0:
            return False
        first = self.step - out.steps + 1
        if out.skipped:
            self.state.bad_steps_total += out.skipped
            where = f"step {self.step}" if out.steps == 1 else f"steps {first}-{self.step}"
            self.monitor.print(
                f"{where}: {out.skipped} non-finite loss(es), step(s) skipped "
                f"({out.bad_in_row} in a row now, {self.state.bad_steps_total} in total)"
            )
            if out.limit_step:
                raise TrainingDiverged(
                    f"{self.cfg.train.max_bad_steps} non-finite losses in a row at step {first - 1 + out.limit_step}: "
                    f"training diverged. The last checkpoint ({self.ckpt_dir / 'last.pt'}) holds the weights before "
                    "it; lower optim.lr, lengthen schedule.warmup_steps or use train.precision=fp32."
                )
        good = out.steps - out.skipped
        if good:
            for k, v in (("loss", out.loss), ("box", out.box), ("cls", out.cls)):
                window[k] += v * good
            window["n"] += good
        return out.stop

    def _log_step(self, window: dict[str, Any]) -> bool:
        """Progress after every step; every ``train.log_every`` steps (and at the end) the losses are read from the
        device and written. Returns True when the ranks agreed to stop."""
        now = time.perf_counter()
        due = self.step % self.cfg.train.log_every == 0 or self.step == self.parts.total_steps
        stop = self._sync_steps(window) if due else False
        img_s = window["images"] / max(now - window["t"], 1e-9)
        loss = window["loss"] / max(window["n"], 1) if window["n"] else window.get("shown", float("nan"))
        self.monitor.step(self.step, self.epoch, loss, self.parts.scheduler.lr(), img_s)
        if due:
            window["shown"] = loss
            self._write({
                "kind": "train", "step": self.step, "epoch": self.epoch + 1, "loss": loss,
                "box": window["box"] / max(window["n"], 1), "cls": window["cls"] / max(window["n"], 1),
                "lr": self.parts.scheduler.lr(), "img_per_s": img_s, "skipped_total": self.state.bad_steps_total,
            })  # fmt: skip
            window.update(loss=0.0, box=0.0, cls=0.0, n=0, t=now, images=0)
        return stop

    def _write(self, record: dict[str, Any]) -> None:
        """One metrics record: ``metrics.jsonl`` and TensorBoard (rank 0), and the hooks."""
        self.monitor.write(record)
        self.hooks.fire("record", record)

    def _report(self) -> None:
        from singleshot.engine.report import write_report

        paths = write_report(
            self.run_dir, core=self.parts.inference, dataset=self.parts.data.val,
            num_pictures=self.cfg.eval.num_pictures, classes=self.parts.classes,
        )  # fmt: skip
        for p in paths:
            print(f"wrote {p}")


def train(cfg: TrainConfig) -> TrainResult:
    """Train (or resume) the run ``cfg`` describes; see :class:`Trainer`."""
    return Trainer(cfg).run()
