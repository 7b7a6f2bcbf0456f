"""The training loop on HF Accelerate. Reads top to bottom: setup, the epoch loop, the end; helpers below.

Runs unchanged on one CPU, one GPU or many processes under `accelerate launch` / `torchrun`: Accelerate
shards the loaders and wraps the model in DDP, evaluation gathers with `gather_for_metrics`, and only the
main process writes files.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from timm.utils import ModelEmaV3
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader

from imgcls.console import get_console
from imgcls.engine.accelerator import deterministic_algorithms, make_accelerator
from imgcls.data.loader import order_generator
from imgcls.engine.checkpoint import (
    BestWeights,
    LoopState,
    load_training_state,
    load_weights_into,
    save_best_weights,
    save_training_state,
)
from imgcls.engine.failures import diverged, runtime_failure
from imgcls.engine.inference import collect_logits
from imgcls.engine.interrupt import EpochProgress, interrupted, stop_requested, stopping_on_signals
from imgcls.engine.optim import build_optimizer, build_scheduler
from imgcls.engine.tracking import EXPERIMENT, curves, hyperparameters, make_trackers
from imgcls.errors import ImgclsError
from imgcls.metrics import RESAMPLES, is_better
from imgcls.metrics.classification import compute_metrics
from imgcls.models.transfer import norm_statistics_layers
from imgcls.plan import TrainPlan
from imgcls.run_files import RunFolder

Predictions = dict[str, tuple[torch.Tensor, torch.Tensor]]  # split -> (probabilities (N, K), labels (N,))
Outputs = tuple[torch.Tensor, torch.Tensor]  # split -> (logits (N, K), labels (N,))


@dataclass
class FitResult:
    history: list[dict[str, Any]]
    best_epoch: int | None
    best_metric: float | None
    final_metrics: dict[str, dict[str, Any]]
    stopped_early: bool
    wall_time_s: float
    num_processes: int = 1
    device: str = "cpu"
    predictions: Predictions = field(default_factory=dict)  # split -> (probabilities, labels) of the best weights


def fit(model: nn.Module, loaders: dict[str, DataLoader], plan: TrainPlan, run: RunFolder, best: BestWeights,
        param_groups: list[dict[str, Any]], frozen_params: list[nn.Parameter] | None = None,
        resume: bool = False) -> FitResult:
    """Train `model` on loaders["train"] as `plan` says, select the best epoch on loaders["val"], evaluate it
    on every non-train loader, and keep the `best` weights file, last/ and history.csv up to date every epoch.

    `frozen_params` get no updates during the first `plan.freeze_epochs` epochs (the head trains alone); the
    batch-norm layers keep the running statistics they came with meanwhile (in train mode they would drift
    towards the new images although their weights are frozen).
    loaders["train_eval"], when given, is the training set without augmentation: the final metrics include
    it as "train" (with val/test), as the tutorials report.
    """
    accelerator = make_accelerator(plan.precision, find_unused_parameters=bool(frozen_params and plan.freeze_epochs),
                                   compile_model=plan.compile, log_with=make_trackers(plan, run))
    try:
        with deterministic_algorithms(plan.deterministic):
            return _fit(accelerator, model, loaders, plan, run, best, param_groups, frozen_params, resume)
    except RuntimeError as error:  # torch.OutOfMemoryError is one; so are a data-loading worker's death and timeout
        message = runtime_failure(error, plan)
        if message is None:
            raise
        raise ImgclsError(message) from None
    finally:
        for tracker in accelerator.trackers:  # not end_training(): it would also end a torchrun job's process group
            tracker.finish()


def _fit(accelerator: Accelerator, model: nn.Module, loaders: dict[str, DataLoader], plan: TrainPlan, run: RunFolder,
         best: BestWeights, param_groups: list[dict[str, Any]], frozen_params: list[nn.Parameter] | None,
         resume: bool) -> FitResult:
    """fit's work, on an Accelerator whose trackers (if any) are started here and finished by fit."""
    if accelerator.log_with:
        accelerator.init_trackers(EXPERIMENT, config=hyperparameters(plan, run.read_config()))
    # --- setup ---
    if accelerator.is_main_process:
        get_console().print(f"precision: {plan.precision} ({plan.precision_reason})"
                            f"{', channels_last' if plan.channels_last else ''}{', torch.compile' if plan.compile else ''}")
    shuffle_generator = order_generator(loaders["train"])
    optimizer = build_optimizer(param_groups, plan)
    scheduler = build_scheduler(optimizer, plan, len(loaders["train"]))
    model, optimizer, scheduler, train_loader = accelerator.prepare(model, optimizer, scheduler, loaders["train"])
    eval_loaders = {name: accelerator.prepare(loader) for name, loader in loaders.items() if name != "train"}
    weights = torch.tensor(plan.class_weights, device=accelerator.device) if plan.class_weights else None
    criterion = nn.CrossEntropyLoss(weight=weights, label_smoothing=plan.label_smoothing)
    ema = _weights_average(accelerator, model, plan)
    state = _starting_state(accelerator, run, resume)
    monitor = plan.monitor if "val" in eval_loaders else None
    kept_val: Outputs | None = None  # the val logits of the weights kept so far (this session's epochs only)

    # --- the epoch loop (a signal stops it after a step, saved: engine/interrupt) ---
    with stopping_on_signals():
        for epoch in range(state.epoch, plan.epochs):
            if state.stopped_early:
                break
            if stop_requested(accelerator):  # during the last validation: last/ holds that epoch
                raise interrupted(epoch, 0, run.path)
            started = time.perf_counter()
            progress, batches = _epoch_start(accelerator, train_loader, shuffle_generator, state, plan.seed, epoch)
            frozen = bool(frozen_params) and epoch < plan.freeze_epochs
            for parameter in frozen_params or []:
                parameter.requires_grad_(not frozen)
            train_one_epoch(accelerator, model, batches, criterion,
                            Updates(optimizer, scheduler, ema, len(train_loader)), progress, plan, frozen)
            if progress.stopped:
                state.partial = dataclasses.asdict(progress)
                save_training_state(accelerator, run, state)
                raise interrupted(epoch, progress.steps, run.path)
            row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], **_epoch_totals(accelerator, progress)}
            improved, candidate, val_outputs = _validate(accelerator, model, ema, eval_loaders.get("val"), plan,
                                                         monitor, row, state)
            row["epoch_time_s"] = time.perf_counter() - started
            if improved:
                save_best_weights(accelerator, candidate, best.file, {**best.metadata, "epoch": row["epoch"]})
                kept_val = val_outputs
            _end_epoch(accelerator, run, plan, monitor, state, row, improved)

    # --- the end: evaluate the best weights on every held-out split ---
    accelerator.wait_for_everyone()
    load_weights_into(accelerator.unwrap_model(model), best.file)
    # the kept epoch's validation logits are the best weights' (TTA aside): not computed again
    final, predictions = final_evaluation(accelerator, model, eval_loaders, plan,
                                          {"val": kept_val} if kept_val is not None and not plan.tta else {})
    return FitResult(
        history=state.history, best_epoch=state.best_epoch, best_metric=state.best_metric,
        final_metrics=final, stopped_early=state.stopped_early, wall_time_s=state.wall_time_s,
        num_processes=accelerator.num_processes, device=str(accelerator.device), predictions=predictions,
    )


def _epoch_start(accelerator: Accelerator, train_loader: Any, shuffle_generator: torch.Generator | None,
                 state: LoopState, seed: int, epoch: int) -> tuple[EpochProgress, DataLoader]:
    """The epoch's progress (new, or where a signal stopped it: last/) and the batches it has left to run.
    `train_loader` is the one Accelerate prepared (it has set_epoch)."""
    if shuffle_generator is not None:  # the order depends on the epoch only: exact resume
        shuffle_generator.manual_seed(seed * 100_003 + epoch)
    train_loader.set_epoch(epoch)
    if not state.partial:
        return EpochProgress(epoch), train_loader
    progress = EpochProgress(**{**state.partial, "stopped": False})
    return progress, accelerator.skip_first_batches(train_loader, progress.steps)


def _starting_state(accelerator: Accelerator, run: RunFolder, resume: bool) -> LoopState:
    """The loop's bookkeeping: fresh, or as the last completed epoch left it."""
    if not resume:
        return LoopState()
    state = load_training_state(accelerator, run)
    if accelerator.is_main_process:  # a kill after history.csv's write but before last/'s leaves a row too many
        run.write_history(state.history)
        steps = f" and {state.partial['steps']} steps of epoch {state.epoch + 1}" if state.partial else ""
        get_console().print(f"resuming {run.path} after epoch {state.epoch}{steps}")
    return state


def _weights_average(accelerator: Accelerator, model: nn.Module, plan: TrainPlan) -> ModelEmaV3 | None:
    """With --ema, timm's moving average of the weights (and buffers), its decay warmed up as 1 - (1 + step)^-3/4
    so that a short run is not dominated by the initial weights; saved and restored with last/."""
    if plan.ema is None:
        return None
    ema = ModelEmaV3(accelerator.unwrap_model(model), decay=plan.ema, use_warmup=True, warmup_power=0.75)
    accelerator.register_for_checkpointing(ema)
    return ema


def _validate(accelerator: Accelerator, model: nn.Module, ema: ModelEmaV3 | None, val_loader: DataLoader | None,
              plan: TrainPlan, monitor: str | None, row: dict[str, Any],
              state: LoopState) -> tuple[bool, nn.Module, Outputs | None]:
    """Add the epoch's validation loss, accuracy and monitored metric to `row`; whether it is the best yet, the
    weights that are (with --ema, the better of the raw and the averaged ones on val), and their val logits."""
    if monitor is None or val_loader is None:
        return True, ema.module if ema is not None else model, None  # no validation split: the latest epoch is kept
    # per-epoch selection needs no intervals or test-time augmentation; both are applied once, to the best
    # epoch's final metrics
    val_metrics, outputs = _val_metrics(accelerator, model, val_loader, plan)
    row.update(val_loss=val_metrics["loss"]["value"], val_accuracy=val_metrics["accuracy"]["value"])
    candidate = model
    compared = "accuracy" if monitor == "last" else monitor
    if ema is not None:
        ema_metrics, ema_outputs = _val_metrics(accelerator, ema.module, val_loader, plan)
        row[f"val_{compared}_ema"] = ema_metrics[compared]["value"]
        if is_better(compared, ema_metrics[compared]["value"], val_metrics[compared]["value"]):
            val_metrics, candidate, outputs = ema_metrics, ema.module, ema_outputs
        row["kept_weights"] = "ema" if candidate is not model else "raw"
    if monitor == "last":  # a schedule that ends at its best (one-cycle, cosine): no noisy pick on a small val set
        return True, candidate, outputs
    # the raw weights' val_loss / val_accuracy stay as measured; the kept candidate's value is what is compared
    row[f"val_{monitor}_kept" if ema is not None else f"val_{monitor}"] = val_metrics[monitor]["value"]
    return is_better(monitor, val_metrics[monitor]["value"], state.best_metric), candidate, outputs


def _val_metrics(accelerator: Accelerator, model: nn.Module, val_loader: DataLoader,
                 plan: TrainPlan) -> tuple[dict, Outputs]:
    logits, labels = collect_logits(accelerator, model, val_loader)
    return compute_metrics(logits, labels, list(plan.class_names), plan.positive_class, resamples=0), (logits, labels)


def _end_epoch(accelerator: Accelerator, run: RunFolder, plan: TrainPlan, monitor: str | None, state: LoopState,
               row: dict[str, Any], improved: bool) -> None:
    """Book the epoch: best-so-far, patience, history.csv, the console line and the resumable state."""
    state.wall_time_s += row["epoch_time_s"]
    if improved:
        kept = row.get(f"val_{monitor}_kept", row.get(f"val_{monitor}"))  # with --ema: the better weights'
        state.best_metric, state.best_epoch, state.bad_epochs = kept, row["epoch"], 0
    else:
        state.bad_epochs += 1
    state.history.append(row)
    state.epoch, state.partial = row["epoch"], {}
    state.stopped_early = bool(plan.patience and state.bad_epochs >= plan.patience)
    console = get_console()
    if accelerator.is_main_process:
        run.write_history(state.history)
        console.print(_epoch_line(row, plan.epochs, monitor, improved), soft_wrap=True)
    if accelerator.trackers:
        accelerator.log(curves(row), step=row["epoch"])
    save_training_state(accelerator, run, state)
    if state.stopped_early and accelerator.is_main_process:
        console.print(f"early stopping: no improvement of val {monitor} for {plan.patience} epochs")


def final_evaluation(accelerator: Accelerator, model: nn.Module, eval_loaders: dict[str, DataLoader],
                     plan: TrainPlan, known: dict[str, Outputs] | None = None) -> tuple[dict[str, dict[str, Any]],
                                                                                  Predictions]:
    """Metrics (with intervals on held-out splits) and probabilities of the best weights on every split; `known`
    holds splits whose logits the best weights already gave (the kept epoch's validation)."""
    final, predictions = {}, {}
    for name in ("train_eval", "val", "test"):
        if name in eval_loaders:
            split = name.removesuffix("_eval")
            # test-time augmentation is for predictions on new images; the training split is measured as fit
            logits, labels = (known or {}).get(split) or \
                collect_logits(accelerator, model, eval_loaders[name], plan.tta and split != "train")
            # Intervals are for held-out data: the model was fit to the training images, so a bootstrap over
            # them estimates nothing about new data (and costs ~10 s on 50,000 images).
            final[split] = compute_metrics(logits, labels, list(plan.class_names), plan.positive_class,
                                           seed=plan.seed, resamples=0 if split == "train" else RESAMPLES)
            predictions[split] = (logits.softmax(dim=1), labels)
    return final, predictions


@dataclass
class Updates:
    """What each step updates after the backward pass: the optimizer, the schedule and the weights' average."""

    optimizer: Optimizer
    scheduler: LRScheduler
    ema: ModelEmaV3 | None = None
    steps_per_epoch: int = 0  # the whole epoch's, also when a resumed epoch starts part-way


def train_one_epoch(accelerator: Accelerator, model: nn.Module, loader: DataLoader, criterion: nn.Module,
                    updates: Updates, progress: EpochProgress, plan: TrainPlan, frozen_backbone: bool = False) -> None:
    """The training steps of one epoch from `progress.steps` on (resized for progressive resizing, as the plan
    says), adding to `progress`; it stops early, `progress.stopped`, when a signal asks (engine/interrupt).
    `loader` yields the epoch's remaining batches. With `frozen_backbone` the batch-norm layers stay in eval mode
    (the backbone is frozen, its statistics too)."""
    model.train()
    for layer in norm_statistics_layers(model) if frozen_backbone else []:
        layer.eval()
    epoch, device = progress.epoch, accelerator.device
    loss_sum = torch.tensor(progress.loss_sum, device=device)
    correct = torch.tensor(progress.correct, device=device, dtype=torch.long)
    seen = torch.tensor(progress.seen, device=device, dtype=torch.long)
    size = _epoch_size(plan, epoch)
    check_every = 1 if device.type == "cpu" else 10  # reading the loss stalls a GPU's queue: not every step there
    started = waited_from = time.perf_counter()
    with _progress(accelerator, updates.steps_per_epoch, f"epoch {epoch + 1}/{plan.epochs}") as advance:
        for step, (images, labels) in enumerate(loader, start=progress.steps):
            got_batch = time.perf_counter()
            progress.data_time_s += got_batch - waited_from
            if size is not None and images.shape[-1] != size:
                images = resize_batch(images, size)
            logits = model(images)
            loss = criterion(logits, labels)
            if step % check_every == 0 and not torch.isfinite(loss):  # before the update: the weights stay finite
                raise ImgclsError(diverged(loss, images, epoch, step))
            accelerator.backward(loss)
            updates.optimizer.step()
            updates.scheduler.step()
            updates.optimizer.zero_grad(set_to_none=True)
            if updates.ema is not None:
                updates.ema.update(accelerator.unwrap_model(model), step=epoch * updates.steps_per_epoch + step + 1)
            loss_sum += loss.detach() * labels.shape[0]
            correct += (logits.detach().argmax(1) == labels).sum()
            seen += labels.shape[0]
            if step % 10 == 0 or step == updates.steps_per_epoch - 1:  # reading a value syncs the GPU; not every step
                advance(step + 1, float(loss_sum / seen), float(correct / seen))
            waited_from = time.perf_counter()
            progress.step_time_s += waited_from - got_batch
            progress.steps = step + 1
            asking = accelerator.num_processes == 1 or step % check_every == 0  # several: a collective
            if progress.steps < updates.steps_per_epoch and asking and stop_requested(accelerator):
                progress.stopped = True
                break
    progress.train_time_s += time.perf_counter() - started
    progress.loss_sum, progress.correct, progress.seen = float(loss_sum), int(correct), int(seen)
    if size is not None:
        progress.img_size = int(images.shape[-1])  # what the model was fed


def _epoch_totals(accelerator: Accelerator, progress: EpochProgress) -> dict[str, float]:
    """The epoch's mean loss and accuracy over all processes, and its timing: train_time_s, data_time_s (waiting
    for batches) and step_time_s (forward, backward, update) of this process, train_images_per_s over all."""
    sums = torch.tensor([progress.loss_sum, progress.correct, progress.seen], device=accelerator.device)
    sums = accelerator.reduce(sums, reduction="sum")
    if float(sums[2]) == 0:
        raise ImgclsError("no training batch was run: the training set is smaller than one batch per process; "
                          "lower --batch-size")
    seen = float(sums[2])
    totals = {"train_loss": float(sums[0] / sums[2]), "train_accuracy": float(sums[1] / sums[2]),
              "train_time_s": round(progress.train_time_s, 3), "data_time_s": round(progress.data_time_s, 3),
              "step_time_s": round(progress.step_time_s, 3),
              "train_images_per_s": round(seen / progress.train_time_s, 1)}
    if progress.img_size is not None:
        totals["img_size"] = progress.img_size
    return totals


# --- helpers ---

def _epoch_size(plan: TrainPlan, epoch: int) -> int | None:
    """With --progressive, the image side of this epoch's training batches; None without it."""
    if not plan.epoch_sizes:
        return None
    return plan.epoch_sizes[epoch] if epoch < len(plan.epoch_sizes) else plan.img_size


def resize_batch(images, size: int):
    """A normalized batch resized to `size` x `size` (bilinear, antialiased), in its memory layout."""
    channels_last = images.is_contiguous(memory_format=torch.channels_last)
    resized = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return resized.contiguous(memory_format=torch.channels_last) if channels_last else resized


class _progress:
    """A rich progress bar with live loss and accuracy, drawn by the main process on a terminal only."""

    def __init__(self, accelerator, total: int, description: str):
        self.enabled = accelerator.is_main_process and get_console().is_terminal
        self.total, self.description = total, description

    def __enter__(self):
        if not self.enabled:
            return lambda *args: None

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), TextColumn("{task.fields[stats]}"),
                            console=get_console(), transient=True)
        self.bar.__enter__()
        task = self.bar.add_task(self.description, total=self.total, stats="")

        def advance(completed: int, loss: float, accuracy: float) -> None:
            self.bar.update(task, completed=completed, stats=f"loss {loss:.4f}  acc {accuracy:.4f}")

        return advance

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.__exit__(*exc)
        return False


def _epoch_line(row: dict, epochs: int, monitor: str | None, improved: bool) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}", f"train loss {row['train_loss']:.4f}",
             f"acc {row['train_accuracy']:.4f}"]
    if monitor is not None:
        parts += [f"val loss {row['val_loss']:.4f}", f"acc {row['val_accuracy']:.4f}"]
        value = row.get(f"val_{monitor}_kept", row.get(f"val_{monitor}"))
        if monitor not in ("loss", "accuracy", "last"):
            parts.append(f"{monitor} {value:.4f}" if value is not None else f"{monitor} n/a")
    averaged = next((key for key in row if key.endswith("_ema")), None)
    if averaged is not None:
        name = averaged.removeprefix("val_").removesuffix("_ema")
        parts.append(f"EMA {name} {row[averaged]:.4f}" + (" (kept)" if row["kept_weights"] == "ema" else ""))
    parts += [f"lr {row['lr']:.2e}", f"{row['epoch_time_s']:.1f}s"]
    return "  ".join(parts) + ("  [green]* best[/green]" if improved and monitor != "last" else "")
