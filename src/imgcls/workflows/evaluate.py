"""`imgcls eval`: a trained run's metrics, predictions, figures and report on its own data or any other."""

from __future__ import annotations

import copy
from pathlib import Path

from imgcls.config import DataConfig
from imgcls.console import warn
from imgcls.errors import ImgclsError


def evaluate(run: str | Path, data: str | None = None, split: str | None = None, batch_size: int = 128,
             workers: int = 1, data_root: str | None = None, precision: str = "auto",
             positive_class: str | None = None) -> dict:
    """Metrics of a trained model on a split of any dataset; written to RUN/eval/<data>-<split>/.

    With no `data`, the run's own dataset is used (test split if it has one, else val). A class-per-folder
    dataset other than the training one is evaluated whole (split "all").
    """
    from imgcls.config import collective_timeout_s
    from imgcls.engine.accelerator import process_state
    from imgcls.workflows.predict import load

    state = process_state(collective_timeout_s())  # under torchrun: each process evaluates its share
    loaded = load(run)
    data_cfg, seed, same_data = _data_config(loaded, data, data_root)
    with state.main_process_first():  # it decodes; the others then map the one memory-mapped copy
        bundle = _load_split_data(loaded, data_cfg, seed, not same_data or split == "all", state.num_processes)
    split = _chosen_split(bundle, split, data_cfg.source)
    logits, labels, is_main = _infer(loaded, bundle.splits[split], batch_size, workers, seed, precision)
    from imgcls.metrics import compute_metrics, positive_index

    chosen_positive = positive_class if positive_class is not None else loaded.positive_class
    metrics = compute_metrics(logits, labels, loaded.class_names, positive_index(loaded.class_names, chosen_positive),
                              seed=seed)
    if loaded.run is not None and is_main:
        from imgcls.run_files import default_run_name

        folder = loaded.run.evaluation(default_run_name(data_cfg.source, split))
        _write_evaluation(folder, loaded, bundle, split, metrics, logits.softmax(dim=1), labels, data_cfg.source, seed)
        metrics["written_to"] = str(folder.path)
    metrics["split"] = split
    return metrics


def _data_config(loaded, data: str | None, data_root: str | None) -> tuple[DataConfig, int, bool]:
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


def _load_split_data(loaded, data_cfg: DataConfig, seed: int, whole: bool, processes: int):
    from imgcls.data import build_dataset

    bundle = build_dataset(data_cfg, seed, loaded.img_size, class_names=loaded.class_names,
                           channels=loaded.in_chans, interpolation=loaded.interpolation, whole=whole,
                           processes=processes)
    for message in bundle.warnings:
        warn(message)
    if bundle.skipped:
        warn(f"skipped {len(bundle.skipped)} unreadable image(s), e.g. {bundle.skipped[0][0]}")
    return bundle


def _chosen_split(bundle, split: str | None, source: str) -> str:
    available = list(bundle.splits)
    if split is None:
        split = next((name for name in ("test", "val", "all") if name in bundle.splits), available[0])
    if split not in bundle.splits:
        raise ImgclsError(f"{source} has no '{split}' split; choose one of {', '.join(available)}")
    return split


def _infer(loaded, image_split, batch_size: int, workers: int, seed: int, precision: str):
    """Logits and labels of every image of the split, gathered from every process, each counted once."""
    from imgcls.config import auto_precision_override
    from imgcls.data.loader import TensorImageDataset, make_loader
    from imgcls.engine.accelerator import make_accelerator
    from imgcls.engine.inference import collect_logits, inference_precision

    dataset = TensorImageDataset(image_split, loaded.mean, loaded.std)
    accelerator = make_accelerator(inference_precision(precision, auto_precision_override()))
    loader = accelerator.prepare(make_loader(dataset, batch_size, shuffle=False, workers=workers, seed=seed))
    model = accelerator.prepare(loaded.model)
    logits, labels = collect_logits(accelerator, model, loader, tta=loaded.tta)
    return logits, labels, accelerator.is_main_process


def _write_evaluation(folder, loaded, bundle, split: str, metrics: dict, probs, labels, source: str,
                      seed: int) -> None:
    """metrics, run summary, predictions, figures and report.html of one evaluation."""
    import datetime

    from imgcls.environment import hardware, versions
    from imgcls.report import write_figures_and_report

    folder.write_metrics({split: metrics})
    folder.write_summary({
        "kind": "evaluation", "data": source, "split": split, "model": loaded.name, "img_size": loaded.img_size,
        "in_chans": loaded.in_chans, "parameters": sum(p.numel() for p in loaded.model.parameters()),
        "evaluated_run": str(loaded.run.path), "hardware": hardware(), "versions": versions(),
        "finished": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    })
    from imgcls.workflows.training_steps import explain_held_out

    title = f"{loaded.run.name}: evaluation on {Path(source).name or source} ({split})"
    looked = explain_held_out(loaded, bundle, {split: (probs, labels)})
    write_figures_and_report(folder, bundle, {split: (probs, labels)}, loaded.class_names, seed=seed, title=title,
                             looked_at=looked)


def _same_source(a: str, b: str) -> bool:
    from imgcls.data.builtin import builtin_name

    if not b:
        return False
    path_a, path_b = Path(a).expanduser(), Path(b).expanduser()
    if path_a.exists() and path_b.exists():
        return path_a.resolve() == path_b.resolve()
    return builtin_name(a) is not None and builtin_name(a) == builtin_name(b)
