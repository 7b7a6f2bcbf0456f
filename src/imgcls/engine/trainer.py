"""The training loop on HF Accelerate. Reads top to bottom: setup, the epoch loop, the end; helpers below.

Runs unchanged on one CPU, one GPU or many processes under `accelerate launch` / `torchrun`: Accelerate
shards the loaders and wraps the model in DDP, evaluation gathers with `gather_for_metrics`, and only the
main process writes files.
"""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from imgcls.atomic import write_text_atomic
from imgcls.config import Config, resolved_lr
from imgcls.console import get_console
from imgcls.engine.checkpoint import load_training_state, load_weights_into, save_training_state, save_weights
from imgcls.engine.evaluate import collect_logits, make_accelerator
from imgcls.engine.optim import build_optimizer, build_scheduler
from imgcls.errors import ImgclsError
from imgcls.metrics import compute_metrics, is_better


@dataclass
class FitResult:
    history: list[dict]
    best_epoch: int | None
    best_metric: float | None
    final_metrics: dict[str, dict]
    stopped_early: bool
    wall_time_s: float
    precision: str
    precision_reason: str = ""
    channels_last: bool = False
    compiled: bool = False
    num_processes: int = 1
    device: str = "cpu"
    predictions: dict = field(default_factory=dict)  # split -> (probabilities, labels) of the best weights


def fit(model, loaders: dict, config: Config, run_dir: Path, weights_metadata: dict, class_names: list[str],
        param_groups: list[dict], frozen_params: list | None = None, freeze_epochs: int = 0,
        resume: bool = False, shuffle_generator=None, weights_name: str = "best.safetensors",
        positive_class: int = 1, channels_last: bool = False, precision_cache: Path | None = None) -> FitResult:
    """Train `model` on loaders["train"], select the best epoch on loaders["val"], evaluate it on every
    non-train loader, and keep run_dir's weights file, last/ and history.csv up to date every epoch.

    `frozen_params` get no updates during the first `freeze_epochs` epochs (the head trains alone).
    loaders["train_eval"], when given, is the training set without augmentation: the final metrics
    include it as "train" (with val/test), as the tutorials report. `channels_last`: the model is already
    in channels_last memory (the loaders deliver NHWC batches); `precision_cache` remembers what
    `--precision auto` measured.
    """
    # --- setup ---
    train_cfg, optim_cfg = config.train, config.optim
    input_shape = (min(train_cfg.batch_size, 32), *loaders["train"].dataset.image_shape)
    precision, precision_reason = _agreed_precision(train_cfg.precision, model, input_shape, precision_cache,
                                                    channels_last)
    accelerator = make_accelerator(precision, find_unused_parameters=bool(frozen_params and freeze_epochs),
                                   compile_model=train_cfg.compile)
    console = get_console()
    if accelerator.is_main_process:
        layout = ", channels_last" if channels_last else ""
        console.print(f"precision: {precision} ({precision_reason}){layout}"
                      f"{', torch.compile' if train_cfg.compile else ''}")
    lr = resolved_lr(optim_cfg, train_cfg.batch_size)
    steps_per_epoch = len(loaders["train"])
    optimizer = build_optimizer(param_groups, optim_cfg, lr)
    scheduler = build_scheduler(optimizer, optim_cfg, steps_per_epoch, train_cfg.epochs, lr)
    model, optimizer, scheduler, train_loader = accelerator.prepare(model, optimizer, scheduler, loaders["train"])
    eval_loaders = {name: accelerator.prepare(loader) for name, loader in loaders.items() if name != "train"}
    criterion = _cross_entropy(optim_cfg.label_smoothing)
    state = {"epoch": 0, "best_metric": None, "best_epoch": None, "bad_epochs": 0, "history": [],
             "wall_time_s": 0.0, "stopped_early": False}
    if resume:
        state = load_training_state(accelerator, run_dir / "last")
        if accelerator.is_main_process:
            console.print(f"resuming {run_dir} after epoch {state['epoch']}")
    monitor = train_cfg.monitor if "val" in eval_loaders else None

    # --- the epoch loop ---
    for epoch in range(state["epoch"], train_cfg.epochs):
        if state["stopped_early"]:
            break
        started = time.perf_counter()
        if shuffle_generator is not None:  # worker augmentation seeds depend on the epoch only: exact resume
            shuffle_generator.manual_seed(train_cfg.seed * 100_003 + epoch)
        train_loader.set_epoch(epoch)
        for parameter in frozen_params or []:
            parameter.requires_grad_(epoch >= freeze_epochs)
        train_loss, train_acc, timing = train_one_epoch(accelerator, model, train_loader, criterion, optimizer,
                                                        scheduler, epoch, train_cfg.epochs)
        if not math.isfinite(train_loss):
            raise ImgclsError(f"training diverged at epoch {epoch + 1} (the loss is {train_loss}); "
                              f"lower the learning rate with --lr")
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], "train_loss": train_loss,
               "train_accuracy": train_acc, **timing}
        improved = True
        if monitor is not None:
            # per-epoch selection needs no intervals or test-time augmentation; both are applied once, to the
            # best epoch's final metrics
            val_metrics = compute_metrics(*collect_logits(accelerator, model, eval_loaders["val"]), class_names,
                                          positive_class, resamples=0)
            row.update(val_loss=val_metrics["loss"]["value"], val_accuracy=val_metrics["accuracy"]["value"])
            row[f"val_{monitor}"] = val_metrics[monitor]["value"]
            improved = is_better(monitor, val_metrics[monitor]["value"], state["best_metric"])
        row["epoch_time_s"] = time.perf_counter() - started
        state["wall_time_s"] += row["epoch_time_s"]
        if improved:
            state.update(best_metric=row.get(f"val_{monitor}"), best_epoch=epoch + 1, bad_epochs=0)
            if accelerator.is_main_process:
                save_weights(accelerator.unwrap_model(model), run_dir / weights_name, weights_metadata)
        else:
            state["bad_epochs"] += 1
        state["history"].append(row)
        state["epoch"] = epoch + 1
        state["stopped_early"] = bool(train_cfg.patience and state["bad_epochs"] >= train_cfg.patience)
        if accelerator.is_main_process:
            write_text_atomic(run_dir / "history.csv", history_csv(state["history"]))
            console.print(_epoch_line(row, train_cfg.epochs, monitor, improved), soft_wrap=True)
        save_training_state(accelerator, run_dir / "last", state)
        if state["stopped_early"] and accelerator.is_main_process:
            console.print(f"early stopping: no improvement of val {monitor} for {train_cfg.patience} epochs")

    # --- the end: evaluate the best weights on every held-out split ---
    accelerator.wait_for_everyone()
    load_weights_into(accelerator.unwrap_model(model), run_dir / weights_name)
    final, predictions = {}, {}
    for name in ("train_eval", "val", "test"):
        if name in eval_loaders:
            split = name.removesuffix("_eval")
            # test-time augmentation is for predictions on new images; the training split is measured as fit
            logits, labels = collect_logits(accelerator, model, eval_loaders[name], train_cfg.tta and split != "train")
            # Intervals are for held-out data: the model was fit to the training images, so a bootstrap over
            # them estimates nothing about new data (and costs ~10 s on 50,000 images).
            final[split] = compute_metrics(logits, labels, class_names, positive_class, seed=train_cfg.seed,
                                           resamples=0 if split == "train" else 1000)
            predictions[split] = (logits.softmax(dim=1), labels)
    return FitResult(
        history=state["history"], best_epoch=state["best_epoch"], best_metric=state["best_metric"],
        final_metrics=final, stopped_early=state["stopped_early"], wall_time_s=state["wall_time_s"],
        precision=precision, precision_reason=precision_reason, channels_last=channels_last,
        compiled=train_cfg.compile, num_processes=accelerator.num_processes, device=str(accelerator.device),
        predictions=predictions,
    )


def train_one_epoch(accelerator, model, loader, criterion, optimizer, scheduler, epoch: int, epochs: int):
    """One pass over the training data; returns the mean loss and accuracy over all processes, and the
    epoch's timing: train_time_s, data_time_s (waiting for batches) and step_time_s (forward, backward,
    update) of this process, and train_images_per_s over all processes."""
    import torch

    model.train()
    loss_sum = torch.zeros((), device=accelerator.device)
    correct = torch.zeros((), device=accelerator.device, dtype=torch.long)
    seen = torch.zeros((), device=accelerator.device, dtype=torch.long)
    data_time = step_time = 0.0
    started = waited_from = time.perf_counter()
    with _progress(accelerator, len(loader), f"epoch {epoch + 1}/{epochs}") as advance:
        for step, (images, labels) in enumerate(loader):
            got_batch = time.perf_counter()
            data_time += got_batch - waited_from
            logits = model(images)
            loss = criterion(logits, labels)
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach() * labels.shape[0]
            correct += (logits.detach().argmax(1) == labels).sum()
            seen += labels.shape[0]
            if step % 10 == 0 or step == len(loader) - 1:  # reading a value syncs the GPU; not every step
                advance(step + 1, float(loss_sum / seen), float(correct / seen))
            waited_from = time.perf_counter()
            step_time += waited_from - got_batch
    train_time = time.perf_counter() - started
    totals = accelerator.reduce(torch.stack([loss_sum, correct.float(), seen.float()]), reduction="sum")
    if float(totals[2]) == 0:
        raise ImgclsError("no training batch was run: the training set is smaller than one batch per process; "
                          "lower --batch-size")
    timing = {"train_time_s": round(train_time, 3), "data_time_s": round(data_time, 3),
              "step_time_s": round(step_time, 3), "train_images_per_s": round(float(totals[2]) / train_time, 1)}
    return float(totals[0] / totals[2]), float(totals[1] / totals[2]), timing


# --- helpers ---

def _agreed_precision(requested: str, model, input_shape, cache_file, channels_last: bool) -> tuple[str, str]:
    """The main process chooses (and measures, for auto); every process uses its answer."""
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    from imgcls.config import auto_precision_override
    from imgcls.engine.precision import choose_precision

    state = PartialState()
    answer = [None]
    if state.is_main_process:
        answer = [choose_precision(requested, model, input_shape, cache_file, channels_last,
                                   auto_precision_override())]
    if state.num_processes > 1:
        broadcast_object_list(answer)
    return answer[0]


def _cross_entropy(label_smoothing: float):
    from torch import nn

    return nn.CrossEntropyLoss(label_smoothing=label_smoothing)


class _progress:
    """A rich progress bar with live loss and accuracy, drawn by the main process on a terminal only."""

    def __init__(self, accelerator, total: int, description: str):
        self.enabled = accelerator.is_main_process and get_console().is_terminal
        self.total, self.description = total, description

    def __enter__(self):
        if not self.enabled:
            return lambda *args: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

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
        value = row.get(f"val_{monitor}")
        if monitor not in ("loss", "accuracy"):
            parts.append(f"{monitor} {value:.4f}" if value is not None else f"{monitor} n/a")
    parts += [f"lr {row['lr']:.2e}", f"{row['epoch_time_s']:.1f}s"]
    return "  ".join(parts) + ("  [green]* best[/green]" if improved else "")


def history_csv(history: list[dict]) -> str:
    """history.csv: one row per epoch, columns in first-seen order."""
    columns: list[str] = []
    for row in history:
        columns.extend(key for key in row if key not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return buffer.getvalue()
