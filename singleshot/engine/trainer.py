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

:meth:`Trainer.run` sets the run up and tears it down; :meth:`Trainer._loop` is the whole loop, epochs and their
steps, top to bottom. The methods after it are what the loop calls: the device's loss counts and their records,
the evaluation, the checkpoints, the run's last lines and the report.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from singleshot.accelerator import resolve_device
from singleshot.engine import distributed as D
from singleshot.engine.build import TrainingParts, build_training
from singleshot.engine.checkpointing import (
    PREVIOUS_LAST,
    resume_point,
    save_training_checkpoint,
    set_rng_state,
)
from singleshot.engine.config import RESUME_MUTABLE, ConfigError, TrainConfig
from singleshot.engine.failures import (
    DEVICE_OOM,
    LoaderWorkerDied,
    OutOfMemory,
    PeerLost,
    checkpoint_note,
    out_of_memory_message,
    worker_died_message,
)
from singleshot.engine.hooks import HookList, TrainHook
from singleshot.engine.loop_state import (
    EvaluationInterrupted,
    LossWindow,
    RunState,
    TrainingDiverged,
    TrainResult,
    auto_eval_every,
)
from singleshot.engine.mlperf import MLPerfHook
from singleshot.engine.monitor import Monitor
from singleshot.engine.runfolder import (
    RunLock,
    choose_run_dir,
    clear_run_state,
    remove_stale_temporaries,
    trim_metrics,
    write_text_atomic,
)
from singleshot.engine.runtime import SectionTimer, StopRequest, seed_everything
from singleshot.evaluation import STAT_NAMES, evaluate
from singleshot.precision import resolve_precision

__all__ = [
    "EvaluationInterrupted", "LoaderWorkerDied", "OutOfMemory", "PeerLost", "RunState", "TrainResult", "Trainer",
    "TrainingDiverged", "train",
]  # fmt: skip


class _Interruptible:
    """Iterates a loader but raises :class:`EvaluationInterrupted` at the first batch after a signal."""

    def __init__(self, loader: Any, stop: StopRequest) -> None:
        self.loader, self.stop = loader, stop  # ``.loader``: evaluate() finds the dataset through it

    def __iter__(self) -> Any:
        for batch in self.loader:
            if self.stop.signum:
                raise EvaluationInterrupted
            yield batch


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
        # What run() sets up: the parts, the position (epoch and step done), the state saved with them, the outputs.
        self._parts: TrainingParts | None = None
        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer steps done (skipped ones included)
        self.saved_step: int | None = None  # step of the newest last.pt (what a failure leaves intact)
        self.heartbeat: D.Heartbeat | None = None  # several processes: each rank's sign of life
        self.state = RunState()
        self.monitor = Monitor(None, 0)  # silent until run() opens the run folder's
        self.eval_every = cfg.eval.every or 0  # evaluate every N epochs (0: at the end only); auto: set by _announce
        self._t_start = 0.0  # perf_counter() when run() started: this process's share of the elapsed time

    @property
    def parts(self) -> TrainingParts:
        """What the run trains with (built by :meth:`run`)."""
        if self._parts is None:
            raise RuntimeError("Trainer.parts: the training parts are built by Trainer.run()")
        return self._parts

    # ----------------------------------------------------------------------------------------------- set-up
    def _setup(self) -> str | None:
        """The run folder, seeds and the checkpoint to resume; the training parts; the run's state. Returns how the
        run resumes (a line for the user), None when it starts afresh. Random numbers are restored last: nothing
        after that may draw any before the loop."""
        cfg, info = self.cfg, self.info
        if cfg.train.threads and self.device.type == "cpu":
            torch.set_num_threads(cfg.train.threads)
        D.init_distributed(info, self.device, cfg.train.dist_timeout)
        replace = self._choose_folder()
        if self.lock is not None:  # before anything writes into the folder (mlperf.log included)
            self.lock.acquire()  # one live run per folder; a killed run's lock went with its process
            if replace:  # run.exist_ok over another run: only now, with the folder ours
                clear_run_state(self.run_dir)
            for tmp in remove_stale_temporaries(self.ckpt_dir):
                print(f"removed {tmp}, left by a run killed while writing a checkpoint")
        self.hooks.fire("init_start", self.run_dir, self.main)
        seed_everything(cfg.train.seed + info.rank, cfg.train.deterministic, self.device)
        resume, note = resume_point(self.run_dir, cfg.to_dict(), RESUME_MUTABLE, self.main)
        self._parts = build_training(
            cfg, device=self.device, precision=self.precision, info=info, resume=resume,
            loss_fn=self._given_loss, timer=self.timer,
        )  # fmt: skip
        if resume is not None:
            self.epoch, self.step = int(resume["epoch"]), int(resume["step"])
            self.saved_step = self.step
            self.state = RunState.from_checkpoint(resume.get("train_state", {}))
            set_rng_state(resume["rng"])  # last: nothing after this may draw random numbers before the loop
        if self.main:  # only now: a set-up that failed leaves no config.yaml to block or mislead the next start
            write_text_atomic(self.run_dir / "config.yaml", cfg.to_yaml())
        self.hooks.fire("init_end", cfg, self.parts)
        return None if resume is None else note

    def _choose_folder(self) -> bool:
        """The run folder (:func:`~singleshot.engine.runfolder.choose_run_dir`: the named one, the numbered one that
        holds this configuration, or the next free number), decided by the main process and shared with every
        rank; says why when it is not the folder named. Returns whether the run there is to be replaced."""
        folder, note, replace = choose_run_dir(self.cfg.run, self.cfg.to_dict(), RESUME_MUTABLE)
        if self.info.enabled and torch.distributed.is_initialized():  # every rank takes rank 0's answer
            shared = [str(folder), note, replace]
            device = self.device if self.device.type == "cuda" else None
            torch.distributed.broadcast_object_list(shared, src=0, device=device)
            folder, note, replace = Path(shared[0]), shared[1], bool(shared[2])
        self.run_dir, self.ckpt_dir = folder, folder / "checkpoints"
        self.lock = RunLock(folder) if self.main else None
        if note and self.main:
            print(note, flush=True)
        return replace

    def run(self) -> TrainResult:
        """Sets the run up (or finds it finished), runs :meth:`_loop` with signals turned into a stop flag, writes
        the report of a run that ended; the lock and the process group are released however it ends."""
        self._t_start = time.perf_counter()
        try:
            resume_note = self._setup()
            if (
                resume_note is not None
                and self.state.finished
                and (self.step >= self.parts.total_steps or self.state.status == "target_reached")
            ):
                if self.main:
                    print(
                        f"run {self.run_dir} already finished ({self.state.status}, step {self.step}, best mAP "
                        f"{self.state.best_map}); to train again, change a setting (a new numbered folder) or give "
                        "run.resume=false"
                    )
                return self._result("already_finished", 0)
            self.state.finished = False
            if resume_note is not None and self.main:
                print(f"{resume_note}: epoch {self.epoch + 1}, step {self.step}")
            if self.main:  # records of steps after the checkpoint would be written twice
                last_eval = self.state.last_eval_step if resume_note is not None else -1
                trim_metrics(self.run_dir / "metrics.jsonl", self.step, last_eval)
            if self.info.enabled:
                self.heartbeat = D.Heartbeat(self.info.rank, self.info.world_size, lambda: self.step).start()
            self.monitor = Monitor(
                self.run_dir if self.main else None, self.parts.total_steps, self.step, self.cfg.train.progress,
                self.cfg.run.tensorboard, self.cfg.train.log_every,
            )  # fmt: skip
            try:
                with StopRequest() as stop:  # to the end: a signal during the report is still an orderly stop
                    status = self._loop_or_one_line(stop)
                    # a signal after the last step: the final checkpoint stands, the report is skipped (exit 128+N)
                    done = status in ("finished", "target_reached")
                    if done and self.main and self.cfg.run.report and not stop.signum:
                        self._report()
            finally:
                self.monitor.close()
            return self._result(status, stop.signum)
        finally:
            if self.heartbeat is not None:
                self.heartbeat.stop()
            D.cleanup_distributed()
            if self.lock is not None:
                self.lock.release()

    def _result(self, status: str, signum: int) -> TrainResult:
        """What :meth:`run` returns, as the run stands now."""
        best, final = self.state.best_map, self.state.final_stats
        wall = time.perf_counter() - self._t_start
        return TrainResult(self.run_dir, status, self.step, self.epoch, best, final, wall, signum, self.main)

    def _loop_or_one_line(self, stop: StopRequest) -> str:
        """:meth:`_loop`, with running out of memory and a dead loader worker turned into one-line errors
        (:mod:`singleshot.engine.failures`) that name the way out and the checkpoint left intact."""
        try:
            return self._loop(stop)
        except (DEVICE_OOM, MemoryError) as exc:
            note = checkpoint_note(self.ckpt_dir / "last.pt", self.saved_step)
            cfg = self.cfg
            raise OutOfMemory(out_of_memory_message(
                step=self.step, batch_size=cfg.data.batch_size, world_size=self.info.world_size,
                image_size=self.parts.model.spec.image_size, device=self.device, checkpoint=note,
            )) from exc  # fmt: skip
        except RuntimeError as exc:
            note = checkpoint_note(self.ckpt_dir / "last.pt", self.saved_step)
            line = worker_died_message(exc, step=self.step, num_workers=self.parts.loader_workers, checkpoint=note)
            if line is not None:
                raise LoaderWorkerDied(line) from exc
            if self.heartbeat is not None:  # several processes: is a rank missing?
                info = self.info
                lost = D.lost_peer_message(info.rank, info.world_size, exc, self.heartbeat.lost_peers(),
                                           self.cfg.train.dist_timeout)  # fmt: skip
                if lost is not None:
                    raise PeerLost(f"{lost}; {note}; re-run the same command to resume (torchrun --max-restarts=N "
                                   "restarts and resumes by itself)") from exc  # fmt: skip
            raise

    # ----------------------------------------------------------------------------------------------- the loop
    def _loop(self, stop: StopRequest) -> str:
        """Epochs until the run's steps are done, the target is reached or a signal stops it. An epoch: its steps
        (each queued on the device, its loss read every ``train.log_every`` steps), its last losses read, the
        evaluation when due (and at the run's last step), then ``last.pt``. Returns the run's status."""
        p, cfg, loader = self.parts, self.cfg, self.parts.data.train_loader
        self._announce()
        self.hooks.fire("run_start")
        self._train_mode()
        window = LossWindow(t=time.perf_counter())
        sampler = loader.state_dict()  # what the checkpoints save of the loader's position
        if self.state.eval_pending:  # a signal interrupted the evaluation at this checkpoint's step: it comes first
            self.state.eval_pending = False
            if not self._evaluate(stop, sampler, self.state.eval_epoch):
                return self._interrupted(stop, sampler)
            if self._target_reached():
                return self._finish("target_reached", sampler)
            self.save(sampler=sampler)
        while self.step < p.total_steps:
            epoch_num = self.epoch + 1
            loader.set_epoch(self.epoch)
            self.hooks.fire("epoch_start", epoch_num)
            in_epoch = loader.start_batch  # steps of this epoch a resumed run has done
            batches = iter(loader)  # alive until the epoch's checkpoint: the loader's state counts its batches
            while self.step < p.total_steps:
                if stop.signum and not self.info.enabled:  # one process: stop before the next step, not after it
                    self._sync_steps(window)
                    return self._interrupted(stop)
                with self.timer("data"):
                    batch = next(batches, None)
                if batch is None:
                    break
                if self.step == 0 and self.main and cfg.run.report:  # what the model is fed, before it changes
                    self._start_report(batch)
                p.train_step(batch, stop.signum > 0)  # queues the work; the host does not wait for it
                if p.ema is not None:
                    p.ema.update(p.model)  # after a skipped step the weights are unchanged: harmless
                self.step += 1
                in_epoch += 1
                self.timer.steps += 1
                self.hooks.fire("step_end", self.step)
                with self.timer("logging"):
                    window.images += len(batch["image_ids"]) * self.info.world_size
                    ranks_stop = self._log_step(window)
                if ranks_stop:  # every rank read the stop flag at the same step
                    return self._interrupted(stop)
                if self.step >= p.total_steps:
                    break
                every = cfg.train.checkpoint_every_steps
                if every and self.step % every == 0:
                    self._sync_steps(window)
                    self.save()
            self._sync_steps(window)  # the epoch's last counts before its checkpoint
            complete = in_epoch >= p.epochs.steps(self.epoch)
            sampler = loader.next_epoch_state() if complete else loader.state_dict()
            self.hooks.fire("epoch_end", epoch_num)
            ev = cfg.eval
            due = complete and ((self.eval_every > 0 and epoch_num % self.eval_every == 0) or epoch_num in ev.at)
            if complete:
                self.epoch += 1  # before the evaluation: a checkpoint it leaves is at the next epoch's start
            if (due or self.step >= p.total_steps) and not self._evaluate(stop, sampler, epoch_num):
                return self._interrupted(stop, sampler)
            if self._target_reached():
                return self._finish("target_reached", sampler)
            self.save(sampler=sampler)
        return self._finish("finished", sampler)

    def _target_reached(self) -> bool:
        final, target = self.state.final_stats, self.cfg.eval.target_map
        return target is not None and final is not None and final[0] >= target

    # ----------------------------------------------------------------------------------------------- losses
    def _sync_steps(self, window: LossWindow) -> bool:
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
        window.add(out)
        return out.stop

    def _log_step(self, window: LossWindow) -> bool:
        """Progress after every step; every ``train.log_every`` steps (and at the end) the losses are read from the
        device, written as a ``train`` record, and the window restarts. Returns True when the ranks agreed to stop."""
        now = time.perf_counter()
        due = self.step % self.cfg.train.log_every == 0 or self.step == self.parts.total_steps
        stop = self._sync_steps(window) if due else False
        img_s = window.images / max(now - window.t, 1e-9)
        loss = window.loss / max(window.n, 1) if window.n else window.shown
        self.monitor.step(self.step, self.epoch, loss, self.parts.scheduler.lr(), img_s)
        if due:
            window.shown = loss
            self._write({
                "kind": "train", "step": self.step, "epoch": self.epoch + 1, "loss": loss,
                "box": window.box / max(window.n, 1), "cls": window.cls / max(window.n, 1),
                "lr": self.parts.scheduler.lr(), "img_per_s": img_s, "skipped_total": self.state.bad_steps_total,
            })  # fmt: skip
            window.restart(now)
        return stop

    def _write(self, record: dict[str, Any]) -> None:
        """One metrics record: ``metrics.jsonl`` and TensorBoard (rank 0), and the hooks."""
        self.monitor.write(record)
        self.hooks.fire("record", record)

    # ----------------------------------------------------------------------------------------------- evaluation
    def run_eval(self, stop: StopRequest | None = None, epoch: int | None = None) -> list[float] | None:
        """COCO evaluation on the validation set (sharded across ranks; every rank gets the numbers), recorded as
        the evaluation after epoch ``epoch`` (1-based; default: the epoch under way).

        With ``stop`` in a single-process run, a signal interrupts it at the next batch (EvaluationInterrupted);
        several processes finish it, since every rank must leave the evaluation together.
        """
        p = self.parts
        if p.data.val_loader is None:
            return None
        val_loader: Any = p.data.val_loader
        if stop is not None and not self.info.enabled:
            val_loader = _Interruptible(val_loader, stop)
        epoch = self.epoch + 1 if epoch is None else epoch
        D.average_bn_stats(p.eval_model)
        self.hooks.fire("eval_start", epoch)
        if self.main:
            self.monitor.print(f"evaluation after epoch {epoch} (step {self.step}):")
        t0 = time.perf_counter()
        result = evaluate(
            p.inference, val_loader,
            label_to_category_id=p.val_label_to_category_id, log=self.monitor.print if self.main else None,
            results_file=str(self.run_dir / "coco_results.json") if self.main and self.cfg.run.report else None,
            keep_detections=self.main and self.cfg.run.report,
        )  # fmt: skip
        named = {name: float(result[name]) for name in STAT_NAMES}
        stats = list(named.values())
        self.hooks.fire("eval_end", epoch, named)
        self.state.last_eval_step = self.step
        self.state.final_stats = stats
        if self.state.best_map is None or stats[0] > self.state.best_map:
            self.state.best_map = stats[0]
        record = {"kind": "eval", "step": self.step, "epoch": epoch, **named,
                  **{k: float(result[k]) for k in ("precision50", "recall50") if k in result}}
        self._write({**record, "eval_seconds": round(time.perf_counter() - t0, 2)})
        if self.main and self.cfg.run.report:
            from singleshot.engine.report import evaluation_report

            evaluation_report(
                self.run_dir, dataset=p.data.val, core=p.inference, evaluation=result,
                step=self.step, classes=p.classes, num_pictures=self.cfg.eval.num_pictures,
                tensorboard=self.monitor.tensorboard, log=self.monitor.print,
            )  # fmt: skip
        return stats

    def _evaluate(self, stop: StopRequest, sampler: dict[str, int], epoch: int) -> bool:
        """The loop's evaluation after epoch ``epoch`` (1-based; ``sampler``: the loader's position after it), then
        training mode again and ``best.pt`` when this is the best so far. False when a signal interrupted it
        (flagged in the state, with ``epoch``: the resumed run evaluates first, at the same step)."""
        try:
            self.run_eval(stop, epoch)
        except EvaluationInterrupted:
            self.state.eval_pending, self.state.eval_epoch = True, epoch
            return False
        self._train_mode()
        best = self.state.best_map
        if self.main and best is not None and self.state.final_stats[0] >= best:
            self.save("best.pt", sampler=sampler)
        return True

    def _train_mode(self) -> None:
        """Training mode; under ``train.freeze_bn`` BatchNorm stays in eval mode (uses and keeps its statistics)."""
        self.parts.train_model.train()
        if self.cfg.train.freeze_bn:
            for module in self.parts.model.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()

    # ----------------------------------------------------------------------------------------------- checkpoints
    def save(self, name: str = "last.pt", sampler: dict[str, int] | None = None, epoch: int | None = None) -> None:
        """Rank 0 writes ``checkpoints/<name>`` atomically (all ranks hold the same weights)."""
        if not self.main:
            self.saved_step = self.step if name == "last.pt" else self.saved_step  # rank 0 writes it
            return
        p = self.parts
        save_training_checkpoint(
            self.ckpt_dir / name, previous=self.ckpt_dir / PREVIOUS_LAST if name == "last.pt" else None,
            model=p.model, ema=p.ema, classes=p.classes, label_to_category_id=p.label_to_category_id,
            config=self.cfg.to_dict(), optimizer=p.optimizer, scheduler=p.scheduler, scaler=p.scaler,
            epoch=self.epoch if epoch is None else epoch, step=self.step,
            sampler=sampler or p.data.train_loader.state_dict(), state=self._state_now(),
        )  # fmt: skip
        if name == "last.pt":
            self.saved_step = self.step

    def _state_now(self) -> dict[str, Any]:
        """The run state as a checkpoint saves it, the training time of this process added."""
        return {**dataclasses.asdict(self.state), "elapsed": self.state.elapsed + time.perf_counter() - self._t_start}

    # ----------------------------------------------------------------------------------------------- the run's ends
    def _announce(self) -> None:
        """The run's first line: model, data, steps, batch, lr, device, precision, input pipeline, run folder; then
        the evaluation cadence when it is automatic, and a warmup as long as the run."""
        cfg, p = self.cfg, self.parts
        epochs = p.epochs.epoch_of(max(0, p.total_steps - 1)) + 1  # epochs the run's steps reach into
        if cfg.eval.every is None and p.data.val is not None:
            val_images = len(p.data.val) if cfg.data.val_limit is None else min(cfg.data.val_limit, len(p.data.val))
            self.eval_every, fraction = auto_eval_every(epochs, p.steps_per_epoch * p.global_batch, val_images)
        if self.main:
            where = f"{self.device} x {self.info.world_size}" if self.info.enabled else str(self.device)
            if self.device.type == "cpu":  # the thread count decides a CPU run's speed (OMP_NUM_THREADS, train.threads)
                where += f" ({torch.get_num_threads()} threads)"
            val = f"{len(p.data.val)} validation images" if p.data.val is not None else "no validation"
            print(
                f"training {cfg.model.name} at {p.model.spec.image_size} px on {len(p.data.train)} images "
                f"({p.steps_per_epoch} steps/epoch, "
                f"{p.total_steps} steps, global batch {p.global_batch}, lr {p.base_lr:.4g}, {where}, "
                f"{self.precision}, data {p.data.backend}, {p.loader_workers} loader workers); "
                f"{val}; run folder: "
                f"{self.run_dir}"
                + (f"\n{p.data.backend_note}" if p.data.backend_note and cfg.data.backend == "auto" else ""),
                flush=True,
            )
            if cfg.eval.every is None and p.data.val is not None:
                every = self.eval_every
                at = sorted({*range(every, epochs, every), *cfg.eval.at, epochs} if every else {*cfg.eval.at, epochs})
                cost = (f"about {fraction:.0%} of the run" if len(at) > 1 or fraction <= 0.1
                        else f"only the final one: it alone costs about {fraction:.0%} of a run this short")
                print(f"evaluating after epoch{'s' if len(at) > 1 else ''} {', '.join(map(str, at))} (eval.every "
                      f"auto: {cost}; eval.every=N sets it)", flush=True)
            warmup = p.schedule.warmup_steps
            if warmup >= p.total_steps > 0:
                print(f"warning: the learning-rate warmup ({warmup} steps: schedule.warmup_steps="
                      f"{cfg.schedule.warmup_steps}, schedule.warmup_epochs={cfg.schedule.warmup_epochs:g}) is as long "
                      f"as the run ({p.total_steps} steps), which never trains at the full learning rate; set "
                      f"schedule.warmup_steps={max(1, p.total_steps // 10)} for example", flush=True)

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

    def _interrupted(self, stop: StopRequest, sampler: dict[str, int] | None = None) -> str:
        """A signal stopped the run: ``last.pt`` where it stands (``sampler``: the loader's position, when the
        epoch's iterator has ended), and how to go on."""
        self.save(sampler=sampler)
        self.monitor.print(
            f"signal {stop.signum}: saved {self.ckpt_dir / 'last.pt'} at step {self.step}; "
            "re-run the same command to resume"
        )
        self.hooks.fire("run_end", "interrupted")
        return "interrupted"

    # ----------------------------------------------------------------------------------------------- reports
    def _start_report(self, batch: dict[str, Any]) -> None:
        """The first batch as the model is fed it (``run.report``)."""
        from singleshot.engine.report import start_report

        spec = self.parts.model.spec
        start_report(self.run_dir, batch=batch, train_set=self.parts.data.train, mean=spec.mean,
                     std=spec.std, tensorboard=self.monitor.tensorboard)  # fmt: skip

    def _report(self) -> None:
        """The end-of-run report (``run.report``): curves, the pictures' predictions."""
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
