"""`imgcls train`: its flags (the config tree's, flat) and its handler (one workflow call)."""

from __future__ import annotations

import argparse

from imgcls.errors import ImgclsError


def _model_option(text: str) -> tuple[str, object]:
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got '{text}'")
    return key.strip(), yaml.safe_load(value)


def add_train(commands) -> None:
    p = commands.add_parser("train", help="train a classifier on a folder or a built-in dataset",
                            description="Train a classifier. DATA is a folder with one subfolder per class, a "
                            "folder with train/ val/ [test/], or a built-in name: mnist, fashion-mnist, cifar10, "
                            "cifar100. Settings come from defaults, then --recipe, then --config, then flags. "
                            "'imgcls train "
                            "fashion-mnist' uses the fashion-mnist recipe unless --recipe or --config is given.")
    p.add_argument("data", nargs="?", metavar="DATA", help="dataset folder or built-in name")
    p.add_argument("--recipe", metavar="NAME", help="a named, documented setting shipped with imgcls (list them with "
                   "'imgcls recipes'); 'none' for plain defaults")
    p.add_argument("--config", metavar="FILE.yaml", help="YAML config (sections data/model/optim/train)")
    p.add_argument("--resume", metavar="RUN", help="continue an interrupted run from its last saved epoch")
    _add_model_flags(p.add_argument_group("model"))
    _add_data_flags(p.add_argument_group("data"))
    _add_optimization_flags(p.add_argument_group("optimization"))
    _add_run_flags(p.add_argument_group("run"))
    _add_decision_flags(p.add_argument_group("decisions and cross-validation"))
    p.set_defaults(handler=_run_train)


def _add_model_flags(g) -> None:
    g.add_argument("--model", help="built-in or timm model name (see 'imgcls models'); default resnet18")
    g.add_argument("--pretrained", action="store_const", const=True, help="start from timm hub weights (online)")
    g.add_argument("--weights", metavar="FILE", help="start from local .safetensors/.pth weights")
    g.add_argument("--weights-map", help="match --weights names: auto (default), strip-prefix, torchvision-vgg, "
                   "positional")
    g.add_argument("--model-option", dest="options", action="append", type=_model_option, metavar="KEY=VALUE",
                   help="architecture option, repeatable: e.g. --model-option patch_size=4 --model-option "
                   "pool=cls --model-option head_hidden=[512] for vit")
    g.add_argument("--drop-rate", type=float, help="dropout before the classifier")
    g.add_argument("--drop-path-rate", type=float, help="stochastic depth rate (timm models that support it)")
    g.add_argument("--freeze-backbone", action="store_const", const=True, help="train the classifier head only")
    g.add_argument("--freeze-epochs", type=int, help="train the head only for N epochs, then the whole network")
    g.add_argument("--backbone-lr-scale", type=float, help="backbone lr = lr * this once it trains (e.g. 0.1)")
    g.add_argument("--linear-probe", action="store_const", const=True,
                   help="compute frozen-backbone features once (cached on disk), train a linear head on them")


def _add_data_flags(g) -> None:
    g.add_argument("--img-size", type=int, help="input size in pixels (default: native for built-in datasets, "
                   "else the model's own, e.g. 224)")
    g.add_argument("--channels", type=int, choices=(1, 3), help="input channels (default: 1 if all images are gray)")
    g.add_argument("--val-split", type=float, help="fraction held out for validation (default 0.2)")
    g.add_argument("--test-split", type=float, help="fraction held out for testing (default 0)")
    g.add_argument("--augment", help="none | light | standard | strong (default light)")
    g.add_argument("--crop-padding", type=int, help="light augmentation: random shift of up to N pixels "
                   "(default img-size // 8)")
    g.add_argument("--erase", type=float, help="light augmentation: erase a random rectangle in this fraction "
                   "of the training images (random erasing; default 0)")
    g.add_argument("--progressive", metavar="PX:EPOCHS,...", help="progressive resizing: train the first epochs "
                   "on smaller images, e.g. 20:6,24:5 (6 epochs at 20 px, 5 at 24, the rest at the full size)")
    g.add_argument("--no-hflip", dest="hflip", action="store_const", const=False, help="no horizontal flips")
    g.add_argument("--max-per-class", type=int, help="use at most N images per class in each split")
    g.add_argument("--group-by", metavar="REGEX|CSV",
                   help="images that belong together (a patient): a pattern in the file path (its first group names "
                        "the group) or a CSV of file,group; a group never spans two splits")
    g.add_argument("--dedupe", action="store_true", default=None,
                   help="pre-split folders: leave out val/test files byte-identical to a training file (listed in "
                        "deduped.txt)")
    g.add_argument("--data-root", help="where built-in datasets are stored (default ~/.cache/imgcls/datasets)")
    g.add_argument("--workers", type=int, help="data loader worker processes (default: 0 on a CPU where decoded "
                   "images are cached and augmentation is light or none, else 2)")
    g.add_argument("--cache", help="where decoded images live: ram, disk (memory-mapped file reused by later "
                   "runs), none (decode every epoch); default auto: ram if they fit in a quarter of free memory")
    g.add_argument("--cache-dir", help="where decoded images, linear-probe features and precision timings are "
                   "cached (default ~/.cache/imgcls)")
    g.add_argument("--strict", action="store_const", const=True, help="an unreadable image is an error naming it "
                   "(default: it is left out, counted on the console and listed in RUN/skipped.txt)")
    g.add_argument("--allow-empty", action="store_const", const=True, help="leave out class folders without a "
                   "readable image, with a warning (default: an error naming them); the other classes keep their "
                   "sorted order, the left-out folders are listed in RUN/skipped.txt")


def _add_optimization_flags(g) -> None:
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int, help="per process (default 64)")
    g.add_argument("--lr", type=float, help="peak learning rate (default 1e-3 for Adam(W), 0.1 x global batch / 256 "
                   "for SGD)")
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--optimizer", help="adamw | adam | sgd (default adamw)")
    g.add_argument("--scheduler", help="cosine | step | onecycle | constant (default cosine)")
    g.add_argument("--warmup-epochs", type=float, help="linear warmup length, at most a quarter of the run (default 1)")
    g.add_argument("--step-epochs", type=int, help="step scheduler: decay every N epochs")
    g.add_argument("--label-smoothing", type=float)
    g.add_argument("--class-weights", choices=("auto", "none"),
                   help="auto: weight the loss by inverse class frequency, for imbalanced data (default none)")
    g.add_argument("--sampler", choices=("shuffle", "balanced"),
                   help="balanced: draw every class equally often in each epoch, with replacement (default shuffle)")


def _add_run_flags(g) -> None:
    g.add_argument("--seed", type=int)
    g.add_argument("--precision", help="auto | fp32 | bf16 | fp16; auto: bf16 (fp16 without bf16) on GPUs, on CPUs "
                   "bf16 only where a timed step shows it faster (default auto)")
    g.add_argument("--no-channels-last", dest="channels_last", action="store_const", const=False,
                   help="keep NCHW memory for convolutional nets (channels_last is the default)")
    g.add_argument("--no-report", dest="report", action="store_const", const=False,
                   help="skip the figures and report.html (quick experiments; 'imgcls report RUN' draws the curves, "
                   "confusion matrices and ROC/PR later)")
    g.add_argument("--tta", action="store_const", const=True, help="test-time augmentation: evaluate and predict on "
                   "each image and its mirror, averaging the probabilities")
    g.add_argument("--compile", action="store_const", const=True, help="torch.compile the model (slow first "
                   "steps, faster after)")
    g.add_argument("--deterministic", action="store_const", const=True, help="deterministic algorithms only "
                   "(torch.use_deterministic_algorithms): bit-exact reruns on GPUs too, slower; an operation without a "
                   "deterministic version is an error (CPU runs are reproducible without it)")
    g.add_argument("--auto-batch-size", action="store_const", const=True, help="halve --batch-size until a "
                   "training step fits in the device's memory; the learning rate follows its usual rule (SGD: scaled "
                   "with the batch; Adam(W) and an asked --lr: unchanged)")
    g.add_argument("--monitor", help="val metric that picks the best epoch: accuracy | loss | balanced_accuracy "
                   "| f1_macro | mcc | roc_auc; last: keep the last epoch (val is still measured)")
    g.add_argument("--patience", type=int, help="stop after N epochs without improvement (0 = off)")
    g.add_argument("--positive-class", help="two-class data: class (name or index) whose sensitivity, specificity, "
                   "precision, F1 and AUC are reported (default: the second class)")
    g.add_argument("--track", choices=("none", "tensorboard", "mlflow", "all"),
                   help="live curves per epoch (losses, accuracies, learning rate, images/s) and the config as "
                   "hyper-parameters: tensorboard (RUN/tb; 'tensorboard --logdir runs'), mlflow (a local store in "
                   "RUNS_DIR/mlruns, or $MLFLOW_TRACKING_URI), all; optional extras: pip install "
                   "\"imgcls[tensorboard]\" / \"imgcls[mlflow]\"")
    g.add_argument("--runs-dir", help="parent folder of run folders (default runs)")
    g.add_argument("--name", help="run folder name (default <data>-<model>, numbered if taken)")


def _add_decision_flags(g) -> None:
    g.add_argument("--no-calibrate", dest="calibrate", action="store_const", const=False,
                   help="skip temperature scaling (by default one temperature is fitted on the validation split at the "
                   "end, so that probabilities mean what they say; predictions do not change)")
    g.add_argument("--threshold", metavar="RULE", help="two classes: the positive class's probability from which it "
                   "is predicted, chosen on validation: auto (= youden), youden, sensitivity=0.95, specificity=0.9, "
                   "or a number (default: argmax)")
    g.add_argument("--ema", nargs="?", type=float, const=0.999, metavar="DECAY",
                   help="also keep an exponential moving average of the weights (decay default 0.999, warmed up "
                   "over the first updates); the better of raw and averaged weights on validation is kept")
    g.add_argument("--folds", type=int, metavar="K", help="K-fold cross-validation (stratified, groups and "
                   "byte-identical files kept in one fold): one sub-run per fold, out-of-fold predictions, pooled "
                   "metrics with intervals")
    g.add_argument("--repeats", type=int, metavar="R", help="repeat the K folds R times with other assignments")
    g.add_argument("--final", action="store_const", const=True,
                   help="after the folds, train the deployable model on all the data with the folds' plan")


_NOT_OVERRIDES = {"command", "handler", "config", "resume", "data", "recipe"}


def _run_train(args) -> int:
    # The config is built and checked before the workflow is imported (torch, timm, ...: about 10 s cold), so a
    # mistake in the flags is one line in well under a second.
    from imgcls.config import build_config, flat_to_sections
    from imgcls.recipe_book import default_recipe, load_recipe

    overrides = {key: value for key, value in vars(args).items() if key not in _NOT_OVERRIDES and value is not None}
    if "options" in overrides:
        overrides["options"] = dict(overrides["options"])
    if args.resume:
        if args.data or args.config or args.recipe or overrides:
            raise ImgclsError("--resume continues a run with its saved settings; pass only --resume RUN")
        from imgcls.workflows.train import train

        train(resume=args.resume)
        return 0
    if args.data is not None:
        overrides["source"] = args.data
    recipe = args.recipe
    if recipe is None and args.config is None:
        recipe = default_recipe(args.data)
        if recipe is not None:
            print(f"recipe: {recipe} (the default for {args.data}; --recipe none for plain defaults)")
    config = build_config(args.config, flat_to_sections(overrides),
                          None if recipe in (None, "none") else load_recipe(recipe))
    from imgcls.workflows.train import train

    train(config)
    return 0
