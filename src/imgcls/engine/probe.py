"""Linear probing: run the frozen backbone once over every split, cache the features, fit a linear head."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from imgcls.atomic import write_atomic
from imgcls.config import ModelConfig
from imgcls.console import info
from imgcls.data import DataBundle
from imgcls.data.cache import images_fingerprint
from imgcls.data.loader import FeatureDataset, make_loader
from imgcls.engine.accelerator import process_state
from imgcls.engine.checkpoint import BestWeights, load_weights_into, save_weights
from imgcls.engine.inference import model_outputs
from imgcls.engine.inference_setting import InferenceSetting
from imgcls.engine.trainer import FitResult, fit
from imgcls.models.transfer import param_groups, reset_classifier
from imgcls.plan import TrainPlan
from imgcls.run_files import RunFolder


def feature_cache_key(model_cfg: ModelConfig, bundle: DataBundle, plan: TrainPlan) -> str:
    """Identifies the features: architecture, weights file (path, size, mtime), input, precision and every image."""
    digest = hashlib.sha256()
    weights = Path(model_cfg.weights).expanduser() if model_cfg.weights else None
    weights_id = [str(weights.resolve()), weights.stat().st_size, weights.stat().st_mtime_ns] if weights else None
    digest.update(json.dumps([model_cfg.name, model_cfg.pretrained, weights_id, plan.channels, plan.img_size,
                              list(plan.mean), list(plan.std), list(plan.class_names),
                              plan.inference_precision]).encode())
    for split_name in sorted(bundle.splits):
        split = bundle.splits[split_name]
        digest.update(split_name.encode())
        digest.update(images_fingerprint(split.images))
        digest.update(split.labels.numpy().tobytes())
    return digest.hexdigest()[:24]


def extract_features(model: nn.Module, bundle: DataBundle, mean: tuple[float, ...], std: tuple[float, ...],
                     setting: InferenceSetting, cache_dir: Path, key: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{split: (features (N, D) float32, labels)}: read from the cache, or computed once through the inference path
    in `setting` (the fastest precision, layout and batch measured for this backbone) and cached."""
    cache_file = cache_dir / f"{key}.safetensors"
    if cache_file.is_file():
        info(f"linear probe: using cached features {cache_file}")
        stored = load_file(str(cache_file))
        return {split: (stored[f"{split}.features"], stored[f"{split}.labels"]) for split in bundle.splits}
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    setting.prepare(model)
    started = time.perf_counter()
    features = {name: (model_outputs(model, split.images, mean, std, setting), split.labels.clone())
                for name, split in bundle.splits.items()}
    seconds = time.perf_counter() - started
    model.to(memory_format=torch.contiguous_format)  # the weights are saved as plain contiguous tensors
    tensors = {}
    for split_name, (values, labels) in features.items():
        tensors[f"{split_name}.features"] = values.contiguous()
        tensors[f"{split_name}.labels"] = labels.contiguous()
    write_atomic(cache_file, lambda tmp: save_file(tensors, str(tmp)))
    images = sum(len(split) for split in bundle.splits.values())
    info(f"linear probe: features of {images} images in {seconds:.1f} s ({images / max(seconds, 1e-9):.0f} images/s, "
         f"{setting.precision}{', channels_last' if setting.channels_last else ''}, batch {setting.batch_size}), "
         f"cached in {cache_file}")
    return features


def train_linear_probe(model: nn.Module, bundle: DataBundle, model_cfg: ModelConfig, plan: TrainPlan, run: RunFolder,
                       metadata: dict[str, Any], cache_dir: Path, resume: bool) -> FitResult:
    """Fit a linear head on cached features; write the full model (backbone + head) as the run's weights."""
    num_classes = len(plan.class_names)
    reset_classifier(model, 0)  # the model now returns the pooled features its classifier would see
    setting = InferenceSetting.of_plan(plan) or InferenceSetting()
    features = extract_features(model, bundle, plan.mean, plan.std, setting, cache_dir,
                                feature_cache_key(model_cfg, bundle, plan))
    head = nn.Linear(features["train"][0].shape[1], num_classes)
    loaders = {"train": make_loader(FeatureDataset(*features["train"]), plan.batch_size, shuffle=True, workers=0,
                                    seed=plan.seed, balanced=plan.sampler == "balanced")}
    for name, split in (("train_eval", "train"), ("val", "val"), ("test", "test")):
        if split in features:
            loaders[name] = make_loader(FeatureDataset(*features[split]), plan.batch_size * 4, shuffle=False,
                                        workers=0, seed=plan.seed)
    groups = param_groups(head, plan.lr, plan.weight_decay)
    result = fit(head, loaders, plan, run, BestWeights(run.head_weights_file, {"linear_head_of": plan.model}), groups,
                 resume=resume)
    load_weights_into(head, run.head_weights_file)
    classifier = reset_classifier(model, num_classes)
    with torch.no_grad():
        classifier.get_parameter("weight").copy_(head.weight)
        classifier.get_parameter("bias").copy_(head.bias)
    if process_state().is_main_process:
        save_weights(model.cpu(), run.weights_file, metadata)
    return result
