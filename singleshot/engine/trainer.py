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
import functools
import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from singleshot.accelerator import capabilities, resolve_device
from singleshot.box.factory import build_encoder, build_loss, build_postprocessor
from singleshot.engine import distributed as D
from singleshot.engine import mlperf as M
from singleshot.engine.checkpointing import (
    PREVIOUS_LAST,
    resume_point,
    save_training_checkpoint,
    set_rng_state,
)
from singleshot.engine.config import RESUME_MUTABLE, ConfigError, TrainConfig
from singleshot.engine.data import build_data
from singleshot.engine.ema import ModelEMA
from singleshot.engine.monitor import Monitor
from singleshot.engine.optim import build_optimizer
from singleshot.engine.runfolder import RunLock, remove_stale_temporaries, trim_metrics, write_text_atomic
from singleshot.engine.runtime import (
    SectionTimer,
    StopRequest,
    seed_everything,
)
from singleshot.engine.schedule import LRScheduler, build_schedule, scaled_lr
from singleshot.engine.step import TrainStep
from singleshot.evaluation import STAT_NAMES, category_ids_by_name, evaluate
from singleshot.interop.weights import load_weights
from singleshot.models import build_model, get_spec
from singleshot.models.backbones import freeze_batchnorm, load_backbone_weights
from singleshot.models.spec import DetectorSpec
from singleshot.precision import autocast, resolve_precision


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
    """Builds everything from ``cfg`` and runs (or resumes) training. ``timer`` profiles the step sections;
    ``loss_fn`` replaces the loss the model's spec and ``train.box_loss`` would build (same call contract as
    :func:`singleshot.build_loss`'s modules)."""

    def __init__(
        self, cfg: TrainConfig, timer: SectionTimer | None = None, loss_fn: torch.nn.Module | None = None
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

    # ----------------------------------------------------------------------------------------------- set-up
    def _setup(self) -> None:
        """Everything the loop needs, in an order that matters: the run folder and seeds, the data (the model's
        classes come from it), the model, the optimization objects, then the resumed state; random numbers are
        restored last."""
        self._start_run()
        spec, num_classes = self._setup_data()
        self._setup_model(spec, num_classes)
        self._setup_optimization(len(self.data.train))
        self._restore_state()
        self._setup_step()

    def _start_run(self) -> None:
        """Threads, process group, the run folder's lock, MLPerf's init_start, seeds, and the checkpoint to resume."""
        cfg, info, device = self.cfg, self.info, self.device
        if cfg.train.threads and device.type == "cpu":
            torch.set_num_threads(cfg.train.threads)
        D.init_distributed(info, device)
        if self.lock is not None:  # before anything writes into the folder (mlperf.log included)
            self.lock.acquire()  # one live run per folder; a killed run's lock went with its process
            for tmp in remove_stale_temporaries(self.ckpt_dir):
                print(f"removed {tmp}, left by a run killed while writing a checkpoint")
        self.mllog = M.MLPerfLogger(self.run_dir / "mlperf.log", cfg.run.mlperf_log and self.main)
        self.mllog.start(M.INIT_START)
        seed_everything(cfg.train.seed + info.rank, cfg.train.deterministic, device)
        self.resume, self.resume_note = resume_point(self.run_dir, cfg.to_dict(), RESUME_MUTABLE, self.main)

    def _setup_data(self) -> tuple[DetectorSpec, int]:
        """Datasets and loaders; the class list, its category ids (validation ids looked up by name) and the
        number of classes the model gets."""
        cfg, info, device = self.cfg, self.info, self.device
        spec = get_spec(cfg.model.name)  # ModelConfig checked the name
        default_layout = capabilities(device).channels_last
        self.channels_last = cfg.train.channels_last if cfg.train.channels_last is not None else default_layout
        self.data = build_data(
            cfg.data, image_size=spec.image_size, mean=spec.mean, std=spec.std, seed=cfg.train.seed,
            rank=info.rank, world_size=info.world_size, device=device, channels_last=self.channels_last,
        )  # fmt: skip
        train_set = self.data.train
        for key, ds in (("data.train", train_set), ("data.val", self.data.val)):
            note = ds.repairs_summary() if ds is not None and self.main else None
            if note:  # the training data are not what the files say: never silently
                print(f"{key}: {note}")
        num_classes = cfg.model.num_classes or train_set.num_classes
        if num_classes != train_set.num_classes:
            raise ConfigError(
                f"model.num_classes={num_classes} but the training set {train_set.root} has "
                f"{train_set.num_classes - 1} classes (+ background = {train_set.num_classes}); set "
                f"model.num_classes={train_set.num_classes}, or model.num_classes=null to take it from the data"
            )
        self.classes, self.label_to_category_id = train_set.classes, train_set.label_to_category_id
        self.val_label_to_category_id: dict[int, int] | None = None
        if self.data.val is not None:
            # The model's labels are the training set's; the validation set may list the same names in another
            # order (another source or format), so its category ids are looked up by name.
            self.val_label_to_category_id = category_ids_by_name(
                self.classes, self.data.val, f"training set {train_set.root}", "validation set"
            )
        return spec, num_classes

    def _setup_model(self, spec: DetectorSpec, num_classes: int) -> None:
        """The model (pretrained backbone or starting weights loaded, BatchNorm frozen when asked, on the device)
        and the batched box modules of its spec: target encoder, loss, post-processing."""
        cfg, info, device = self.cfg, self.info, self.device
        torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
        model = build_model(cfg.model.name, num_classes)
        if cfg.model.pretrained_backbone is not None:
            # Loaded here rather than by build_model so that only the file's errors are reported under its key.
            try:
                load_backbone_weights(model.backbone, cfg.model.pretrained_backbone, arch=model.backbone_arch)
            except (FileNotFoundError, ValueError) as exc:  # missing, unreadable or mismatched
                raise ConfigError(f"model.pretrained_backbone: {exc}") from exc
        if cfg.model.weights is not None and self.resume is None:
            # Starting weights only: a resumed run continues from its own checkpoint, training state included.
            try:
                load_weights(model, cfg.model.weights, self.classes, log=print if self.main else None)
            except (FileNotFoundError, ValueError) as exc:  # missing, unreadable, or nothing matches
                raise ConfigError(f"model.weights: {exc}") from exc
        pretrained = cfg.model.pretrained_backbone is not None or cfg.model.weights is not None
        if not pretrained and spec.reference_backbone_file and self.main:
            ref_file = spec.reference_backbone_file
            warnings.warn(
                f"model.pretrained_backbone is not set: the {cfg.model.name} backbone starts from random weights, "
                f"while the reference recipe starts from ImageNet weights; give torchvision's {ref_file} with "
                f"model.pretrained_backbone=/path/to/{ref_file}",
                stacklevel=1,
            )
        if cfg.model.frozen_backbone_bn:
            frozen = freeze_batchnorm(model.backbone)
            if self.main and not pretrained:
                warnings.warn(
                    f"model.frozen_backbone_bn froze {frozen} BatchNorm layers of a backbone that was not pretrained "
                    "(model.pretrained_backbone is null): at their initial statistics they are identities. The "
                    "recipe freezes ImageNet statistics; give the weights file, or set model.frozen_backbone_bn=false",
                    stacklevel=1,
                )
        model.to(device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        if cfg.train.sync_bn and info.enabled:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        self.encoder = build_encoder(spec)  # the preset's matching rule
        box_loss = None if cfg.train.box_loss == "preset" else cfg.train.box_loss
        try:
            self.loss_fn = self._given_loss if self._given_loss is not None else build_loss(spec, box_loss=box_loss)
        except ValueError as e:  # build_loss knows which box terms each loss has
            message = f"train.box_loss={cfg.train.box_loss}: {spec.name}: {e}; use train.box_loss=preset"
            raise ConfigError(message) from None
        post_overrides = {} if cfg.eval.score_threshold is None else {"score_threshold": cfg.eval.score_threshold}
        self.postprocess = build_postprocessor(spec, **post_overrides)
        self.autocast = functools.partial(autocast, device, self.precision)

    def _setup_optimization(self, train_size: int) -> None:
        """Run length in steps, the scaled learning rate, optimizer, schedule and gradient scaler."""
        cfg, info, model = self.cfg, self.info, self.model
        self.global_batch = cfg.data.batch_size * info.world_size
        self.steps_per_epoch = train_size // self.global_batch
        if cfg.train.max_steps is not None:
            self.total_steps = cfg.train.max_steps
        else:
            self.total_steps = math.ceil(cfg.train.epochs * self.steps_per_epoch)
        self.base_lr = scaled_lr(cfg.optim.lr, self.global_batch, cfg.optim.reference_batch, cfg.optim.scale_lr)
        self.optimizer = build_optimizer(
            model, name=cfg.optim.name, lr=self.base_lr, momentum=cfg.optim.momentum,
            weight_decay=cfg.optim.weight_decay, nesterov=cfg.optim.nesterov,
            no_decay_bn_bias=cfg.optim.no_decay_bn_bias,
        )  # fmt: skip
        sc = cfg.schedule
        self.schedule = build_schedule(
            kind=sc.name, peak_lr=self.base_lr, steps_per_epoch=self.steps_per_epoch, total_steps=self.total_steps,
            warmup_steps=sc.warmup_steps, warmup_epochs=sc.warmup_epochs, warmup_start_factor=sc.warmup_start_factor,
            milestones_epochs=sc.milestones, gamma=sc.gamma, min_factor=sc.min_factor,
            train_size=train_size, global_batch=self.global_batch,
        )  # fmt: skip
        self.scheduler = LRScheduler(self.optimizer, self.schedule)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")

    def _restore_state(self) -> None:
        """Run state, and on resume everything the checkpoint holds (weights, optimizer, schedule, scaler, sampler);
        the weight average (EMA) and the module that is evaluated and saved."""
        cfg, model = self.cfg, self.model
        self.state = RunState()
        self.epoch, self.step = 0, 0
        if self.resume is not None:
            ck = self.resume
            # With weight averaging, "state_dict" is the average and the stepped weights are kept apart.
            model.load_state_dict(ck["ema"]["trained_state_dict"] if "ema" in ck else ck["state_dict"])
            self.optimizer.load_state_dict(ck["optimizer"])
            self.scheduler.load_state_dict(ck["scheduler"])
            if ck.get("scaler") and self.scaler.is_enabled():
                self.scaler.load_state_dict(ck["scaler"])
            self.data.train_loader.load_state_dict(ck["sampler"])
            self.epoch, self.step = int(ck["epoch"]), int(ck["step"])
            self.state = RunState.from_checkpoint(ck.get("train_state", {}))

        self.ema = ModelEMA(model, cfg.train.ema_decay, cfg.train.ema_warmup_steps) if cfg.train.ema_decay else None
        if self.ema is not None and self.resume is not None and "ema" in self.resume:
            self.ema.load_state_dict({"module": self.resume["state_dict"], "updates": self.resume["ema"]["updates"]})
        # What is evaluated, saved as the checkpoint's model and deployed: the weight average when there is one.
        self.eval_model = self.ema.module if self.ema is not None else self.model

    def _setup_step(self) -> None:
        """The module that trains (compiled, DDP-wrapped), the step, random state on resume, config.yaml."""
        cfg, model, device, info = self.cfg, self.model, self.device, self.info
        if cfg.train.compile:
            model = torch.compile(model)
        self.train_model = D.wrap_model(model, device, info)
        self.train_step = TrainStep(
            model=self.train_model, params=list(self.model.parameters()), encoder=self.encoder,
            loss_fn=self.loss_fn, optimizer=self.optimizer, scheduler=self.scheduler, scaler=self.scaler,
            autocast=self.autocast, grad_clip=cfg.optim.grad_clip, timer=self.timer,
            max_bad_steps=cfg.train.max_bad_steps,
        )  # fmt: skip
        if self.resume is not None:
            set_rng_state(self.resume["rng"])  # last: nothing after this may draw random numbers before the loop
        self._log_hyperparameters()
        if self.main:  # only now: a set-up that failed leaves no config.yaml to block or mislead the next start
            write_text_atomic(self.run_dir / "config.yaml", cfg.to_yaml())
        self.mllog.end(M.INIT_STOP)

    def _log_hyperparameters(self) -> None:
        cfg = self.cfg
        self.mllog.log_hyperparameters(
            seed=cfg.train.seed, global_batch_size=self.global_batch, train_samples=len(self.data.train),
            eval_samples=len(self.data.val) if self.data.val is not None else 0, base_lr=self.base_lr,
            weight_decay=cfg.optim.weight_decay, warmup_steps=self.schedule.warmup_steps,
            warmup_factor=cfg.schedule.warmup_start_factor, decay_boundary_epochs=list(cfg.schedule.milestones),
            max_samples=cfg.data.max_samples, bn_span=cfg.data.batch_size,
        )  # fmt: skip

    # ----------------------------------------------------------------------------------------------- pieces
    def save(self, name: str = "last.pt", sampler: dict[str, int] | None = None, epoch: int | None = None) -> None:
        """Rank 0 writes ``checkpoints/<name>`` atomically (all ranks hold the same weights)."""
        if not self.main:
            return
        save_training_checkpoint(
            self.ckpt_dir / name, previous=self.ckpt_dir / PREVIOUS_LAST if name == "last.pt" else None,
            model=self.model, ema=self.ema, classes=self.classes,
            label_to_category_id=self.label_to_category_id, config=self.cfg.to_dict(), optimizer=self.optimizer,
            scheduler=self.scheduler, scaler=self.scaler, epoch=self.epoch if epoch is None else epoch,
            step=self.step, sampler=sampler or self.data.train_loader.state_dict(), state=self._state_now(),
        )  # fmt: skip

    def _state_now(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self.state), "elapsed": self.state.elapsed + time.perf_counter() - self._t_start}

    def run_eval(self, stop: StopRequest | None = None) -> list[float] | None:
        """COCO evaluation on the validation set (sharded across ranks; every rank gets the numbers).

        With ``stop`` in a single-process run, a signal interrupts it at the next batch (EvaluationInterrupted);
        several processes finish it, since every rank must leave the evaluation together.
        """
        if self.data.val_loader is None:
            return None
        val_loader: Any = self.data.val_loader
        if stop is not None and not self.info.enabled:
            val_loader = _Interruptible(val_loader, stop)
        D.average_bn_stats(self.eval_model)
        self.mllog.start(M.EVAL_START, epoch_num=self.epoch + 1)
        if self.main:
            self.monitor.print(f"evaluation after epoch {self.epoch + 1} (step {self.step}):")
        t0 = time.perf_counter()
        result = evaluate(
            self.eval_model, val_loader, self.postprocess, precision=self.precision,
            label_to_category_id=self.val_label_to_category_id, log=self.monitor.print if self.main else None,
            results_file=str(self.run_dir / "coco_results.json") if self.main and self.cfg.run.report else None,
        )  # fmt: skip
        stats = [float(result[name]) for name in STAT_NAMES]
        self.mllog.end(M.EVAL_STOP, epoch_num=self.epoch + 1)
        self.mllog.event(M.EVAL_ACCURACY, stats[0], epoch_num=self.epoch + 1)
        self.state.last_eval_step = self.step
        self.state.final_stats = stats
        if self.state.best_map is None or stats[0] > self.state.best_map:
            self.state.best_map = stats[0]
        record = {"kind": "eval", "step": self.step, "epoch": self.epoch + 1, **dict(zip(STAT_NAMES, stats))}
        self.monitor.write({**record, "eval_seconds": round(time.perf_counter() - t0, 2)})
        if self.main and self.cfg.run.report:
            from singleshot.engine.report import evaluation_report

            evaluation_report(
                self.run_dir, dataset=self.data.val, model=self.eval_model, postprocess=self.postprocess,
                device=self.device, step=self.step, classes=self.classes, num_pictures=self.cfg.eval.num_pictures,
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
                and (self.step >= self.total_steps or self.state.status == "target_reached")
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
                self.run_dir if self.main else None, self.total_steps, self.step, self.cfg.train.progress,
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
        loader = self.data.train_loader
        self._announce()
        self.mllog.start(M.RUN_START)
        self._train_mode()
        window = {"loss": 0.0, "box": 0.0, "cls": 0.0, "n": 0, "t": time.perf_counter(), "images": 0}
        status = "finished"
        sampler_state = loader.state_dict()
        pending_eval, self.state.eval_pending = self.state.eval_pending, False  # an evaluation a signal interrupted
        while self.step < self.total_steps or pending_eval:
            pending_eval = False
            epoch_num = self.epoch + 1
            loader.set_epoch(self.epoch)
            self.mllog.start(M.BLOCK_START, first_epoch_num=epoch_num, epoch_count=1)
            self.mllog.start(M.EPOCH_START, epoch_num=epoch_num)
            # The iterator lives here, not in _train_epoch: the loader's state (DALI's included) is read through
            # it after the epoch's steps, for the checkpoint and for a save on a signal.
            done = loader.start_batch  # steps of this epoch a resumed run has done
            batches = iter(loader)
            in_epoch = self._train_epoch(stop, window, batches, done)
            if in_epoch is None:
                return self._interrupted(stop)
            self._sync_steps(window)  # the epoch's last counts before its checkpoint
            complete = in_epoch >= self.steps_per_epoch
            sampler_state = loader.next_epoch_state() if complete else loader.state_dict()
            self.mllog.end(M.EPOCH_STOP, epoch_num=epoch_num)
            self.mllog.end(M.BLOCK_STOP, first_epoch_num=epoch_num)
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
        cfg = self.cfg
        if self.main:
            where = f"{self.device} x {self.info.world_size}" if self.info.enabled else str(self.device)
            print(
                f"training {cfg.model.name} on {len(self.data.train)} images ({self.steps_per_epoch} steps/epoch, "
                f"{self.total_steps} steps, global batch {self.global_batch}, lr {self.base_lr:.4g}, {where}, "
                f"{self.precision}, data {self.data.backend}); run folder: {self.run_dir}"
                + (f"\n{self.data.backend_note}" if self.data.backend_note and cfg.data.backend == "auto" else ""),
                flush=True,
            )

    def _train_epoch(
        self, stop: StopRequest, window: dict[str, Any], it: Iterator[dict[str, Any]], in_epoch: int
    ) -> int | None:
        """Steps through the rest of the current epoch's batches ``it`` (or until the run's last step), ``in_epoch``
        of its steps done before. Returns the epoch's steps done, or None when a signal stops the run (the caller
        saves and exits)."""
        cfg = self.cfg
        while self.step < self.total_steps:
            if stop.signum and not self.info.enabled:  # one process: stop before the next step, not after it
                self._sync_steps(window)
                return None
            with self.timer("data"):
                batch = next(it, None)
            if batch is None:
                break
            if self.step == 0 and self.main and cfg.run.report:  # what the model is fed, before it changes
                from singleshot.engine.report import start_report

                start_report(self.run_dir, batch=batch, train_set=self.data.train, mean=self.model.spec.mean,
                             std=self.model.spec.std, tensorboard=self.monitor.tensorboard)  # fmt: skip
            self.train_step(batch, stop.signum > 0)  # queues the work; the host does not wait for it
            if self.ema is not None:
                self.ema.update(self.model)  # after a skipped step the weights are unchanged: harmless
            self.step += 1
            in_epoch += 1
            self.timer.steps += 1
            with self.timer("logging"):
                window["images"] += len(batch["image_ids"]) * self.info.world_size
                if self._log_step(window):  # every rank read the stop flag at the same step
                    return None
            if self.step >= self.total_steps:
                break
            every = cfg.train.checkpoint_every_steps
            if every and self.step % every == 0:
                self._sync_steps(window)
                self.save()
        return in_epoch

    def _evaluate_if_due(self, stop: StopRequest, epoch_num: int, complete: bool, sampler: dict[str, int]) -> bool:
        """Evaluate at a due epoch end and at the run's last step, keeping ``best.pt``; False when a signal
        interrupted the evaluation (saved with a flag: the resumed run evaluates again first)."""
        if not ((complete and self._eval_due(epoch_num)) or self.step >= self.total_steps):
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
        # MLPerf: "success" means the quality target was reached; a run without a target succeeds by finishing.
        ok = status == "target_reached" or self.cfg.eval.target_map is None
        self.mllog.end(M.RUN_STOP, status=M.SUCCESS if ok else M.ABORTED)
        return status

    def _interrupted(self, stop: StopRequest) -> str:
        self.save()
        self.monitor.print(
            f"signal {stop.signum}: saved {self.ckpt_dir / 'last.pt'} at step {self.step}; "
            "re-run the same command to resume"
        )
        self.mllog.end(M.RUN_STOP, status=M.ABORTED)
        return "interrupted"

    def _train_mode(self) -> None:
        self.train_model.train()
        if self.cfg.train.freeze_bn:
            for module in self.model.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()

    def _sync_steps(self, window: dict[str, Any]) -> bool:
        """Read the steps since the last read from the device (one transfer; see engine/step.py): count skipped
        steps, stop on too many in a row, add the losses to ``window``. Returns True when some rank asked to stop."""
        out = self.train_step.read()
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
        due = self.step % self.cfg.train.log_every == 0 or self.step == self.total_steps
        stop = self._sync_steps(window) if due else False
        img_s = window["images"] / max(now - window["t"], 1e-9)
        loss = window["loss"] / max(window["n"], 1) if window["n"] else window.get("shown", float("nan"))
        self.monitor.step(self.step, self.epoch, loss, self.scheduler.lr(), img_s)
        if due:
            window["shown"] = loss
            self.monitor.write({
                "kind": "train", "step": self.step, "epoch": self.epoch + 1, "loss": loss,
                "box": window["box"] / max(window["n"], 1), "cls": window["cls"] / max(window["n"], 1),
                "lr": self.scheduler.lr(), "img_per_s": img_s, "skipped_total": self.state.bad_steps_total,
            })  # fmt: skip
            window.update(loss=0.0, box=0.0, cls=0.0, n=0, t=now, images=0)
        return stop

    def _report(self) -> None:
        from singleshot.engine.report import write_report

        paths = write_report(
            self.run_dir, model=self.eval_model, dataset=self.data.val, postprocess=self.postprocess,
            device=self.device, num_pictures=self.cfg.eval.num_pictures, classes=self.classes,
        )  # fmt: skip
        for p in paths:
            print(f"wrote {p}")


def train(cfg: TrainConfig) -> TrainResult:
    """Train (or resume) the run ``cfg`` describes; see :class:`Trainer`."""
    return Trainer(cfg).run()
