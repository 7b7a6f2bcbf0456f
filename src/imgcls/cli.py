"""The command line: parse arguments, call the Python API, print. Imports nothing heavy at start-up."""

from __future__ import annotations

import argparse
import os
import sys

from imgcls.errors import ImgclsError


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line naming the problem and where to read more."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _model_option(text: str) -> tuple[str, object]:
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got '{text}'")
    return key.strip(), yaml.safe_load(value)


def _add_train(commands) -> None:
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
    g = p.add_argument_group("model")
    g.add_argument("--model", help="built-in or timm model name (see 'imgcls models'); default resnet18")
    g.add_argument("--pretrained", action="store_const", const=True, help="start from timm hub weights (online)")
    g.add_argument("--weights", metavar="FILE", help="start from local .safetensors/.pth weights")
    g.add_argument("--weights-map", help="match --weights names: auto (default), strip-prefix, positional")
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
    g = p.add_argument_group("data")
    g.add_argument("--img-size", type=int, help="input size in pixels (default: native for built-ins, else 224)")
    g.add_argument("--channels", type=int, choices=(1, 3), help="input channels (default: 1 if all images are gray)")
    g.add_argument("--val-split", type=float, help="fraction held out for validation (default 0.2)")
    g.add_argument("--test-split", type=float, help="fraction held out for testing (default 0)")
    g.add_argument("--augment", help="none | light | standard | strong (default light)")
    g.add_argument("--crop-padding", type=int, help="light augmentation: random shift of up to N pixels "
                   "(default img-size // 8)")
    g.add_argument("--no-hflip", dest="hflip", action="store_const", const=False, help="no horizontal flips")
    g.add_argument("--max-per-class", type=int, help="use at most N images per class in each split")
    g.add_argument("--data-root", help="where built-in datasets are stored (default ~/.cache/imgcls/datasets)")
    g.add_argument("--workers", type=int, help="data loader worker processes (default 2)")
    g.add_argument("--cache", help="where decoded images live: ram, disk (memory-mapped file reused by later "
                   "runs), none (decode every epoch); default auto: ram if they fit in a quarter of free memory")
    g.add_argument("--cache-dir", help="where decoded images, linear-probe features and precision timings are "
                   "cached (default ~/.cache/imgcls)")
    g = p.add_argument_group("optimization")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int, help="per process (default 64)")
    g.add_argument("--lr", type=float, help="peak learning rate (default 1e-3 for Adam(W), 0.1*bs/256 for SGD)")
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--optimizer", help="adamw | adam | sgd (default adamw)")
    g.add_argument("--scheduler", help="cosine | step | onecycle | constant (default cosine)")
    g.add_argument("--warmup-epochs", type=float, help="linear warmup length, at most a quarter of the run (default 1)")
    g.add_argument("--step-epochs", type=int, help="step scheduler: decay every N epochs")
    g.add_argument("--label-smoothing", type=float)
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int)
    g.add_argument("--precision", help="auto | fp32 | bf16 | fp16; auto: bf16 (fp16 without bf16) on GPUs, on CPUs "
                   "bf16 only where a timed step shows it faster (default auto)")
    g.add_argument("--no-channels-last", dest="channels_last", action="store_const", const=False,
                   help="keep NCHW memory for convolutional nets (channels_last is the default)")
    g.add_argument("--tta", action="store_const", const=True, help="test-time augmentation: evaluate and predict on "
                   "each image and its mirror, averaging the probabilities")
    g.add_argument("--compile", action="store_const", const=True, help="torch.compile the model (slow first "
                   "steps, faster after)")
    g.add_argument("--monitor", help="val metric that picks the best epoch: accuracy | loss | balanced_accuracy "
                   "| f1_macro | mcc | roc_auc")
    g.add_argument("--patience", type=int, help="stop after N epochs without improvement (0 = off)")
    g.add_argument("--positive-class", help="two-class data: class (name or index) whose sensitivity, specificity, "
                   "precision, F1 and AUC are reported (default: the second class)")
    g.add_argument("--runs-dir", help="parent folder of run folders (default runs)")
    g.add_argument("--name", help="run folder name (default <data>-<model>, numbered if taken)")
    p.set_defaults(handler=_run_train)


_NOT_OVERRIDES = {"command", "handler", "config", "resume", "data", "recipe"}


def _run_train(args) -> int:
    from imgcls import api
    from imgcls.config import build_config, default_recipe, flat_to_sections

    overrides = {key: value for key, value in vars(args).items() if key not in _NOT_OVERRIDES and value is not None}
    if "options" in overrides:
        overrides["options"] = dict(overrides["options"])
    if args.resume:
        if args.data or args.config or args.recipe or overrides:
            raise ImgclsError("--resume continues a run with its saved settings; pass only --resume RUN")
        api.train(resume=args.resume)
        return 0
    if args.data is not None:
        overrides["source"] = args.data
    recipe = args.recipe
    if recipe is None and args.config is None:
        recipe = default_recipe(args.data)
        if recipe is not None:
            print(f"recipe: {recipe} (the default for {args.data}; --recipe none for plain defaults)")
    config = build_config(args.config, flat_to_sections(overrides), None if recipe == "none" else recipe)
    api.train(config)
    return 0


def _add_recipes(commands) -> None:
    p = commands.add_parser("recipes", help="list the named training recipes shipped with imgcls",
                            description="List the recipes for --recipe NAME: what each trains and what it reaches.")
    p.set_defaults(handler=_run_recipes)


def _run_recipes(args) -> int:
    from imgcls.config import list_recipes

    for name, recipe in list_recipes().items():
        print(f"{name}\n  {recipe['description']}\n  expected: {recipe['expected']}\n  file: {recipe['file']}")
    return 0


def _add_eval(commands) -> None:
    p = commands.add_parser("eval", help="metrics of a trained run on any dataset",
                            description="Evaluate a run on its own data or on any DATA with the same classes.")
    p.add_argument("run", metavar="RUN", help="run folder (or its best.safetensors)")
    p.add_argument("data", nargs="?", metavar="DATA", help="dataset (default: the run's own)")
    p.add_argument("--split", help="val | test | all (default: test if present, else val; 'all' for new data)")
    p.add_argument("--batch-size", type=_positive_int, default=128)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--data-root")
    p.add_argument("--positive-class", help="two-class data: the positive class (default: the run's)")
    p.set_defaults(handler=_run_eval)


def _run_eval(args) -> int:
    from imgcls import api
    from imgcls.console import get_console
    from imgcls.report.tables import print_metrics

    metrics = api.evaluate(args.run, args.data, split=args.split, batch_size=args.batch_size,
                           workers=args.workers, data_root=args.data_root, positive_class=args.positive_class)
    split = metrics["split"]
    print_metrics({split: metrics}, title=f"metrics on {args.data or 'the run data'}, split {split}")
    if "written_to" in metrics:
        get_console().print(f"metrics, predictions, plots and report.html written to {metrics['written_to']}")
    return 0


def _add_report(commands) -> None:
    p = commands.add_parser("report", help="(re)build the self-contained HTML report of a run",
                            description="Redraw the plots that a run's files allow (curves, confusion matrices, "
                            "ROC/PR, reliability) and write RUN/report.html.")
    p.add_argument("run", metavar="RUN", help="run folder (or one of its eval/<name> folders)")
    p.set_defaults(handler=_run_report)


def _run_report(args) -> int:
    from pathlib import Path

    from imgcls.console import get_console
    from imgcls.report.html import rebuild_report

    get_console().print(f"report: {rebuild_report(Path(args.run).expanduser())}")
    return 0


def _add_compare(commands) -> None:
    p = commands.add_parser("compare", help="metrics of several runs side by side, with overlaid val curves",
                            description="Compare runs: a terminal table of their metrics (with 95%% intervals) "
                            "and an HTML page with the table and overlaid validation curves.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="two or more run folders")
    p.add_argument("--split", help="split to compare (default: test if every run has it, else val)")
    p.add_argument("--out", metavar="FILE.html", help="HTML page to write (default: next to the first run)")
    p.set_defaults(handler=_run_compare)


def _run_compare(args) -> int:
    from imgcls.console import get_console
    from imgcls.report.compare import compare

    get_console().print(f"comparison page: {compare(args.runs, args.split, args.out)}")
    return 0


def _add_data(commands) -> None:
    p = commands.add_parser("data", help="look at a dataset: sample grid per class",
                            description="Tools for a dataset before training.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser, required=True)
    show = actions.add_parser("show", help="write a PNG grid of random images of every class",
                              description="Write a grid of random images per class of DATA (a folder or a built-in "
                              "dataset) to a PNG file.")
    show.add_argument("data", metavar="DATA", help="dataset folder or built-in name")
    show.add_argument("--out", metavar="FILE.png", help="where to write (default <data>-samples.png here)")
    show.add_argument("--split", default="train", help="train | val | test (default train)")
    show.add_argument("--per-class", type=_positive_int, default=8, help="images per class (default 8)")
    show.add_argument("--img-size", type=_positive_int, help="decode size (default: native, 160 px for folders)")
    show.add_argument("--data-root", help="where built-in datasets are stored")
    show.add_argument("--seed", type=int, default=0)
    show.set_defaults(handler=_run_data_show)


def _run_data_show(args) -> int:
    from imgcls import api
    from imgcls.console import get_console

    path = api.show_data(args.data, args.out, args.split, args.per_class, args.img_size, args.data_root, args.seed)
    get_console().print(f"sample grid: {path}")
    return 0


def _add_predict(commands) -> None:
    p = commands.add_parser("predict", help="classify image files or folders",
                            description="Top-k classes for each image; folders are searched recursively. "
                            "'imgcls predict RUN IMAGE...' uses a trained run; 'imgcls predict --model NAME "
                            "--weights FILE IMAGE...' uses an ImageNet-pretrained model as is.")
    p.add_argument("items", nargs="+", metavar="[RUN] IMAGE|DIR", help="a run folder (unless --model), then images")
    p.add_argument("--model", help="an ImageNet-pretrained model instead of a run (zero-shot)")
    p.add_argument("--weights", metavar="FILE", help="with --model: local ImageNet weights")
    p.add_argument("--pretrained", action="store_true", help="with --model: timm hub weights (online)")
    p.add_argument("--topk", type=_positive_int, default=5)
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument("--batch-size", type=_positive_int, default=64)
    p.set_defaults(handler=_run_predict)


def _run_predict(args) -> int:
    from imgcls import api
    from imgcls.report.predictions import print_predictions

    if args.model:
        run, inputs = api.load_pretrained(args.model, args.weights, args.pretrained), args.items
    else:
        if args.weights or args.pretrained:
            raise ImgclsError("--weights/--pretrained go with --model NAME; a run folder carries its own weights")
        if len(args.items) < 2:
            raise ImgclsError("pass a run folder and at least one image or folder: imgcls predict RUN IMAGE...")
        run, inputs = args.items[0], args.items[1:]
    results = api.predict(run, inputs, topk=args.topk, batch_size=args.batch_size)
    print_predictions(results, args.format)
    return 1 if all("error" in result for result in results) else 0


def _add_models(commands) -> None:
    p = commands.add_parser("models", help="list built-in and timm model names",
                            description="List model names; PATTERN is a shell wildcard such as 'vit_*'.")
    p.add_argument("pattern", nargs="?", metavar="PATTERN")
    p.add_argument("--pretrained", action="store_true", help="only timm models with hub weights")
    p.set_defaults(handler=_run_models)


def _run_models(args) -> int:
    from imgcls.models import builtin_names, list_models
    from imgcls.models.registry import name_pattern

    import timm

    names = list_models(args.pattern, pretrained=args.pretrained)
    builtins = set(builtin_names())
    with_weights = {tagged.split(".")[0] for tagged in timm.list_models(name_pattern(args.pattern), pretrained=True)}
    if not names:
        raise ImgclsError(f"no model matches '{args.pattern}'; try a shorter word or a wider pattern "
                          f"('imgcls models' lists them all)")
    for name in names:
        if name in builtins:
            print(f"{name}\tbuilt-in")
        else:
            print(f"{name}\tpretrained" if name.split(".")[0] in with_weights else name)
    return 0


def _add_summary(commands) -> None:
    p = commands.add_parser("summary", help="layer table, parameters and MACs of a model (torchinfo)",
                            description="Print a model's layers, output shapes, parameters and multiply-adds.")
    p.add_argument("model", metavar="MODEL", help="built-in or timm model name")
    p.add_argument("--img-size", type=_positive_int, help="input size (default: the model's, else 224)")
    p.add_argument("--in-chans", type=int, choices=(1, 3), default=3)
    p.add_argument("--num-classes", type=_positive_int, default=1000)
    p.add_argument("--depth", type=_positive_int, default=3, help="how many levels of nested layers to show")
    p.set_defaults(handler=_run_summary)


def _run_summary(args) -> int:
    from imgcls.models.summary import summarize

    print(summarize(args.model, args.num_classes, args.in_chans, args.img_size, args.depth))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The imgcls argument parser with every subcommand."""
    parser = _Parser(prog="imgcls", description="Train, evaluate and use image classifiers (CNNs and ViTs).")
    parser.add_argument("--version", action="version", version="imgcls 0.1.0")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_train(commands)
    _add_eval(commands)
    _add_predict(commands)
    _add_models(commands)
    _add_summary(commands)
    _add_recipes(commands)
    _add_report(commands)
    _add_compare(commands)
    _add_data(commands)
    return parser


def _one_line(error: ImgclsError) -> str:
    """The message; for an error re-raised from a DataLoader worker, the original message without the trace."""
    text = str(error).strip()
    if "Original Traceback" in text:
        text = text.splitlines()[-1].split("ImgclsError: ", 1)[-1]
    return text


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `imgcls` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.handler(args)
    except ImgclsError as error:
        print(f"imgcls {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader closed the pipe (`imgcls models | head`): stop quietly, as Python's documentation advises
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        hint = " (continue with 'imgcls train --resume RUN')" if args.command == "train" else ""
        print(f"imgcls {args.command}: interrupted{hint}", file=sys.stderr)
        return 130
