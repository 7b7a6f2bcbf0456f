"""`imgcls eval`: a trained run's metrics, predictions, figures and report on its own data or any other."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from imgcls.config import DataConfig, auto_precision_override, collective_timeout_s
from imgcls.data import DataBundle, ImageSplit, build_dataset
from imgcls.data.builtin import builtin_name
from imgcls.data.loader import TensorImageDataset, make_loader
from imgcls.data.problems import warn_about_data
from imgcls.engine.accelerator import make_accelerator, process_state
from imgcls.engine.inference import collect_logits, inference_precision
from imgcls.engine.inference_setting import InferenceSetting
from imgcls.errors import ImgclsError
from imgcls.metrics import positive_index
from imgcls.engine.decisions import Decisions, calibrated, split_metrics
from imgcls.reporting.run_report import write_figures_and_report
from imgcls.run_files import RunFolder, default_run_name
from imgcls.run_files.summary import evaluation_summary
from imgcls.workflows.looked_at import explain_held_out, say_if_untrusted
from imgcls.workflows.predict import LoadedModel, load


def evaluate(run: str | Path, data: str | None = None, split: str | None = None, batch_size: int = 128,
             workers: int = 1, data_root: str | None = None, precision: str = "auto",
             positive_class: str | None = None) -> dict[str, Any]:
    """Metrics of a trained model on a split of any dataset; written to RUN/eval/<data>-<split>/.

    With no `data`, the run's own dataset is used (test split if it has one, else val). A class-per-folder
    dataset other than the training one is evaluated whole (split "all").
    """
    loaded = load(run)
    logits, labels, found = split_logits(loaded, data, split, batch_size, workers, data_root, precision)
    split, data_cfg, bundle, seed = found.split, found.data, found.bundle, found.seed
    chosen_positive = positive_class if positive_class is not None else loaded.positive_class
    decisions = _decisions_of(loaded, positive_index(loaded.class_names, chosen_positive))
    probs = logits.softmax(dim=1)  # before calibration: the metrics say what the run's temperature changed
    metrics = split_metrics(probs, labels, decisions, loaded.class_names, split, seed)
    if loaded.run is not None and found.is_main:
        folder = loaded.run.evaluation(default_run_name(data_cfg.source, split))
        _write_evaluation(folder, loaded, bundle, data_cfg.source, metrics,
                          {split: (calibrated(probs, decisions.temperature), labels)}, seed)
        metrics["written_to"] = str(folder.path)
    metrics["split"] = split
    return metrics


@dataclass
class EvaluatedSplit:
    split: str
    data: DataConfig
    bundle: DataBundle
    seed: int
    is_main: bool


def split_logits(loaded: LoadedModel, data: str | None = None, split: str | None = None, batch_size: int = 128,
                 workers: int = 1, data_root: str | None = None,
                 precision: str = "auto", prefer: tuple[str, ...] = ("test", "val", "all"),
                 ) -> tuple[torch.Tensor, torch.Tensor, EvaluatedSplit]:
    """The model's logits (before calibration) and the labels of one split of DATA (default the run's own data;
    another class-per-folder dataset whole), with what was read; without `split`, the first of `prefer` there."""
    state = process_state(collective_timeout_s())  # under torchrun: each process evaluates its share
    data_cfg, seed, same_data = _data_config(loaded, data, data_root)
    with state.main_process_first():  # it decodes; the others then map the one memory-mapped copy
        bundle = _load_split_data(loaded, data_cfg, seed, not same_data or split == "all", state.num_processes)
    split = _chosen_split(bundle, split, data_cfg.source, prefer)
    logits, labels, is_main = _infer(loaded, bundle.splits[split], batch_size, workers, seed, precision)
    return logits, labels, EvaluatedSplit(split, data_cfg, bundle, seed, is_main)


def _decisions_of(loaded: LoadedModel, positive: int) -> Decisions:
    """The run's temperature, and its threshold when the metrics are of the class it was chosen for."""
    same_positive = positive == loaded.positive_index
    return Decisions(loaded.temperature, loaded.threshold if same_positive else None, loaded.threshold_rule, positive)


def _data_config(loaded: LoadedModel, data: str | None, data_root: str | None) -> tuple[DataConfig, int, bool]:
    """The data settings of the evaluation: the run's own unless DATA is given."""
    train_data = loaded.config.data if loaded.config is not None else DataConfig()
    data_cfg = copy.deepcopy(train_data)
    data_cfg.source = data or train_data.source
    if not data_cfg.source:
        raise ImgclsError("this checkpoint has no run folder to take the dataset from; pass DATA")
    if data_root is not None:
        data_cfg.data_root = data_root
    data_cfg.max_per_class = None if data else train_data.max_per_class
    seed = loaded.config.train.seed if loaded.config is not None else 0
    return data_cfg, seed, _same_source(data_cfg.source, train_data.source)


def _load_split_data(loaded: LoadedModel, data_cfg: DataConfig, seed: int, whole: bool,
                     processes: int) -> DataBundle:
    bundle = build_dataset(data_cfg, seed, loaded.img_size, class_names=loaded.class_names,
                           channels=loaded.in_chans, interpolation=loaded.interpolation, whole=whole,
                           processes=processes)
    warn_about_data(bundle)
    return bundle


def _chosen_split(bundle: DataBundle, split: str | None, source: str, prefer: tuple[str, ...]) -> str:
    available = list(bundle.splits)
    if split is None:
        split = next((name for name in prefer if name in bundle.splits), available[0])
    if split not in bundle.splits:
        raise ImgclsError(f"{source} has no '{split}' split; choose one of {', '.join(available)}")
    return split


def _infer(loaded: LoadedModel, image_split: ImageSplit, batch_size: int, workers: int, seed: int,
           precision: str) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Logits and labels of every image of the split, gathered from every process, each counted once. The model
    is left as it was loaded (fp32, no autocast wrapper), whatever precision it inferred in: what follows
    (Grad-CAM) reads its activations as float32."""
    dataset = TensorImageDataset(image_split, loaded.mean, loaded.std)
    decided = InferenceSetting.of_plan(loaded.plan)
    accelerator = make_accelerator(inference_precision(precision, auto_precision_override(),
                                                       decided.precision if decided else ""))
    loader = accelerator.prepare(make_loader(dataset, batch_size, shuffle=False, workers=workers, seed=seed))
    if decided is not None and decided.channels_last and precision == "auto":
        loaded.model.to(memory_format=torch.channels_last)  # as measured faster for this model here
    model = accelerator.prepare(loaded.model)
    logits, labels = collect_logits(accelerator, model, loader, tta=loaded.tta)
    accelerator.unwrap_model(model, keep_fp32_wrapper=False)  # takes off the autocast wrapper it put on
    loaded.model.to(memory_format=torch.contiguous_format)
    return logits, labels, accelerator.is_main_process


def _write_evaluation(folder: RunFolder, loaded: LoadedModel, bundle: DataBundle, source: str,
                      metrics: dict[str, Any], predictions: dict[str, tuple[torch.Tensor, torch.Tensor]],
                      seed: int) -> None:
    """metrics, run summary, predictions, figures and report.html of one evaluation (of one split)."""
    split = next(iter(predictions))
    folder.write_metrics({split: metrics})
    parameters = sum(p.numel() for p in loaded.model.parameters())
    evaluated = str(loaded.run.path) if loaded.run is not None else ""
    folder.write_summary(evaluation_summary(source, split, loaded.name, (loaded.in_chans, loaded.img_size),
                                            parameters, evaluated))
    title = f"{Path(evaluated).name}: evaluation on {Path(source).name or source} ({split})"
    looked = explain_held_out(loaded, bundle, predictions)
    write_figures_and_report(folder, bundle, predictions, loaded.class_names, seed=seed, title=title,
                             looked_at=looked)
    say_if_untrusted(looked)


def _same_source(a: str, b: str) -> bool:
    if not b:
        return False
    path_a, path_b = Path(a).expanduser(), Path(b).expanduser()
    if path_a.exists() and path_b.exists():
        return path_a.resolve() == path_b.resolve()
    return builtin_name(a) is not None and builtin_name(a) == builtin_name(b)
