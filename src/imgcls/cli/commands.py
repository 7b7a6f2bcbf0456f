"""The verbs besides train: each parses its flags, calls one workflow and prints the result."""

from __future__ import annotations

import argparse
from pathlib import Path

from imgcls.errors import ImgclsError


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _check_run(run: str) -> None:
    """A path that is not a trained run is said in one line before the workflow, and torch, are imported (about
    10 s cold)."""
    from imgcls.run_files import locate_weights

    locate_weights(run)


def add_recipes(commands) -> None:
    p = commands.add_parser("recipes", help="list the named training recipes shipped with imgcls",
                            description="List the recipes for --recipe NAME: what each trains, the tutorial it "
                                        "reproduces, what it fixes there and what it reaches.")
    p.add_argument("pattern", nargs="?", help="only recipes whose name contains this text, e.g. seed003")
    p.set_defaults(handler=_run_recipes)


def _run_recipes(args) -> int:
    import textwrap

    from imgcls.workflows.inspect import recipes

    found = {name: recipe for name, recipe in recipes().items() if (args.pattern or "") in name}
    if not found:
        raise ImgclsError(f"no recipe name contains '{args.pattern}'; 'imgcls recipes' lists them all")
    for name, recipe in found.items():
        print(name)
        for label, key in (("", "description"), ("reproduces: ", "tutorial"), ("fixes: ", "fixes"),
                           ("expected: ", "expected"), ("file: ", "file")):
            if recipe[key]:
                print(textwrap.fill(label + recipe[key], width=110, initial_indent="  ", subsequent_indent="    ",
                                    break_on_hyphens=False))
    return 0


def add_eval(commands) -> None:
    p = commands.add_parser("eval", help="metrics of a trained run on any dataset",
                            description="Evaluate a run on its own data or on any DATA with the same classes.")
    p.add_argument("run", metavar="RUN", help="run folder (or its best.safetensors)")
    p.add_argument("data", nargs="?", metavar="DATA", help="dataset (default: the run's own)")
    p.add_argument("--split", help="val | test | all (default: test if present, else val; 'all' for new data)")
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--data-root")
    p.add_argument("--precision", default="auto", help="auto | fp32 | bf16 | fp16 (default auto: what the run measured "
                   "at the end of training, plan.json's inference_precision; fp32 on CPUs for older runs; bf16/fp16 "
                   "on GPUs)")
    p.add_argument("--positive-class", help="two-class data: the positive class (default: the run's)")
    p.set_defaults(handler=_run_eval)


def _run_eval(args) -> int:
    from imgcls.console import get_console
    from imgcls.reporting.tables import print_metrics

    _check_run(args.run)
    from imgcls.workflows.evaluate import evaluate

    metrics = evaluate(args.run, args.data, split=args.split, batch_size=args.batch_size, workers=args.workers,
                       data_root=args.data_root, precision=args.precision, positive_class=args.positive_class)
    split = metrics["split"]
    print_metrics({split: metrics}, title=f"metrics on {args.data or 'the run data'}, split {split}")
    if "written_to" in metrics:
        get_console().print(f"metrics, predictions, plots and report.html written to {metrics['written_to']}")
    return 0


def add_report(commands) -> None:
    p = commands.add_parser("report", help="(re)build the self-contained HTML report of a run",
                            description="Redraw the plots that a run's files allow (curves, confusion matrices, "
                            "ROC/PR, reliability) and write RUN/report.html.")
    p.add_argument("run", metavar="RUN", help="run folder (or one of its eval/<name> folders)")
    p.set_defaults(handler=_run_report)


def _run_report(args) -> int:
    from imgcls.console import get_console
    from imgcls.workflows.report import report

    get_console().print(f"report: {report(args.run)}")
    return 0


def add_compare(commands) -> None:
    p = commands.add_parser("compare", help="metrics of several runs side by side, with overlaid val curves",
                            description="Compare runs: a terminal table of their metrics (with 95%% intervals) "
                            "and an HTML page with the table and overlaid validation curves.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="two or more run folders")
    p.add_argument("--split", help="split to compare (default: test if every run has it, else val)")
    p.add_argument("--out", metavar="FILE.html", help="HTML page to write (default: next to the first run)")
    p.set_defaults(handler=_run_compare)


def _run_compare(args) -> int:
    from imgcls.console import get_console
    from imgcls.workflows.report import compare

    get_console().print(f"comparison page: {compare(args.runs, args.split, args.out)}")
    return 0


def add_data(commands, parser_class) -> None:
    p = commands.add_parser("data", help="look at a dataset: duplicates, leakage, label errors; sample grid",
                            description="Tools for a dataset before training.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=parser_class, required=True)
    show = actions.add_parser("show", help="write a PNG grid of random images of every class",
                              description="Write a grid of random images per class of DATA (a folder or a built-in "
                              "dataset) to a PNG file.")
    show.add_argument("data", metavar="DATA", help="dataset folder or built-in name")
    show.add_argument("--out", metavar="FILE.png", help="where to write (default <data>-samples.png here)")
    show.add_argument("--split", default="train", help="train | val | test (default train)")
    show.add_argument("--per-class", type=positive_int, default=8, help="images per class (default 8)")
    show.add_argument("--img-size", type=positive_int, help="decode size (default: native, 224 px for folders)")
    show.add_argument("--data-root", help="where built-in datasets are stored")
    show.add_argument("--seed", type=int, default=0)
    show.set_defaults(handler=_run_data_show)
    check = actions.add_parser(
        "check", help="find leakage, duplicates, label errors, imbalance and odd images (moves nothing)",
        description="Read every image of DATA once and report: images per class and split, imbalance, unreadable, "
        "tiny, oddly shaped, EXIF-rotated and near-constant images, exact and near-duplicate pairs within and across "
        "splits (leakage) and with different labels (conflicts); with --run, likely label errors. Writes "
        "data_check.json and a self-contained data_check.html. Nothing is moved, renamed or deleted.")
    check.add_argument("data", metavar="DATA",
                       help="dataset folder (class folders, or train/val/test) or built-in name")
    check.add_argument("--run", dest="runs", action="append", default=[], metavar="RUN",
                       help="a run trained on DATA: its held-out predictions rank likely label errors (repeatable: "
                       "runs that held out different images cover more of them)")
    check.add_argument("--out", metavar="DIR", help="where to write (default ./<data>-data-check/)")
    check.add_argument("--threshold", type=float, default=None,
                       help="aligned similarity from which two images are near-duplicates (default 0.999)")
    check.add_argument("--search", choices=("auto", "hash", "neighbours"), default="auto",
                       help="near-duplicate candidates: perceptual hashes (fast; misses crops), nearest neighbours too "
                       "(finds crops; quadratic), or auto: neighbours up to 20,000 images")
    check.add_argument("--group-by", metavar="REGEX|CSV", help="report groups (patients) found in several splits")
    check.add_argument("--data-root", help="where built-in datasets are stored")
    check.set_defaults(handler=_run_data_check)


def _run_data_show(args) -> int:
    from imgcls.console import get_console
    from imgcls.workflows.inspect import show_data

    path = show_data(args.data, args.out, args.split, args.per_class, args.img_size, args.data_root, args.seed)
    get_console().print(f"sample grid: {path}")
    return 0


def _run_data_check(args) -> int:
    from imgcls.workflows.check_data import check_data

    check_data(args.data, args.runs, args.out, args.threshold, args.search, args.group_by, args.data_root)
    return 0


def add_calibrate(commands) -> None:
    p = commands.add_parser("calibrate", help="refit a run's temperature on other held-out data",
                            description="Fit the temperature that calibrates a run's probabilities on DATA (a folder "
                            "with one subfolder per class, used whole) or, without DATA, on the run's validation "
                            "split. The weights, decisions.json, saved predictions and ONNX export take it; a chosen "
                            "threshold moves with it (the same operating point).")
    p.add_argument("run", metavar="RUN", help="run folder")
    p.add_argument("data", nargs="?", metavar="DATA", help="labelled held-out images (default: the run's val split)")
    p.add_argument("--split", help="with the run's own data: val | test (default val)")
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--data-root")
    p.set_defaults(handler=_run_calibrate)


def _run_calibrate(args) -> int:
    _check_run(args.run)
    from imgcls.workflows.calibrate import calibrate

    calibrate(args.run, args.data, split=args.split, batch_size=args.batch_size, data_root=args.data_root)
    return 0


def add_predict(commands) -> None:
    p = commands.add_parser("predict", help="classify image files or folders",
                            description="Top-k classes for each image; folders are searched recursively. "
                            "'imgcls predict RUN IMAGE...' uses a trained run; 'imgcls predict --model NAME "
                            "--weights FILE IMAGE...' uses an ImageNet-pretrained model as is.")
    p.add_argument("items", nargs="+", metavar="[RUN] IMAGE|DIR",
                   help="a run folder or an exported MODEL.onnx (unless --model), then images")
    p.add_argument("--model", help="an ImageNet-pretrained model instead of a run (zero-shot)")
    p.add_argument("--weights", metavar="FILE", help="with --model: local ImageNet weights")
    p.add_argument("--pretrained", action="store_true", help="with --model: timm hub weights (online)")
    p.add_argument("--topk", type=positive_int, default=5)
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--backend", default="auto", help="auto (the run's ONNX export when current, else PyTorch) | "
                   "torch | onnx")
    p.add_argument("--precision", default="auto", help="auto | fp32 | bf16 | fp16 (bf16/fp16 run the PyTorch model; "
                   "default auto: the ONNX export in fp32 when current, else what the run measured at the end of "
                   "training)")
    _add_decision_options(p)
    p.set_defaults(handler=_run_predict)


def _add_decision_options(p) -> None:
    p.add_argument("--threshold", metavar="RULE", help="two classes: argmax, a probability of the positive class, or "
                   "a rule chosen on the run's validation predictions (youden, sensitivity=0.95, specificity=0.9); "
                   "default: the run's own (chosen at training with --threshold), else argmax")
    p.add_argument("--abstain-below", metavar="P|auto", help="answer 'uncertain' when the top probability is below P; "
                   "auto (or accuracy=0.98): the confidence at which the run's validation predictions reach accuracy "
                   "0.99 (0.98)")


def _run_predict(args) -> int:
    from imgcls.reporting.tables import print_predictions
    from imgcls.workflows.predict import load_pretrained, predict

    if args.model:
        run, inputs = load_pretrained(args.model, args.weights, args.pretrained), args.items
    else:
        if args.weights or args.pretrained:
            raise ImgclsError("--weights/--pretrained go with --model NAME; a run folder carries its own weights")
        if len(args.items) < 2:
            raise ImgclsError("pass a run folder and at least one image or folder: imgcls predict RUN IMAGE...")
        run, inputs = args.items[0], args.items[1:]
    results = predict(run, inputs, topk=args.topk, batch_size=args.batch_size, precision=args.precision,
                      backend=args.backend, threshold=args.threshold, abstain_below=args.abstain_below)
    print_predictions(results, args.format)
    return 1 if all("error" in result for result in results) else 0


def add_models(commands) -> None:
    p = commands.add_parser("models", help="list built-in and timm model names",
                            description="List model names; PATTERN is a word found anywhere in the name ('vit') "
                            "or a shell wildcard ('vit_*').")
    p.add_argument("pattern", nargs="?", metavar="PATTERN")
    p.add_argument("--pretrained", action="store_true", help="only timm models with hub weights")
    p.set_defaults(handler=_run_models)


def _run_models(args) -> int:
    from imgcls.workflows.inspect import list_models

    for name, mark in list_models(args.pattern, pretrained=args.pretrained):
        print(f"{name}\t{mark}" if mark else name)
    return 0


def add_summary(commands) -> None:
    p = commands.add_parser("summary", help="layer table, parameters and MACs of a model (torchinfo)",
                            description="Print a model's layers, output shapes, parameters and multiply-adds.")
    p.add_argument("model", metavar="MODEL", help="built-in or timm model name")
    p.add_argument("--img-size", type=positive_int, help="input size (default: the model's own)")
    p.add_argument("--in-chans", type=int, choices=(1, 3), default=3)
    p.add_argument("--num-classes", type=positive_int, default=1000)
    p.add_argument("--depth", type=positive_int, default=3, help="how many levels of nested layers to show")
    p.set_defaults(handler=_run_summary)


def _run_summary(args) -> int:
    from imgcls.workflows.inspect import summary

    print(summary(args.model, args.num_classes, args.in_chans, args.img_size, args.depth))
    return 0


def add_export(commands) -> None:
    p = commands.add_parser("export", help="write a run's model as ONNX or TorchScript",
                            description="Export the run's best model with its preprocessing and softmax: input "
                            "a batch of resized images (uint8 by default), output class probabilities; the file's "
                            "metadata names the classes, input size, channels and mean/std.")
    p.add_argument("run", metavar="RUN", help="run folder (or its best.safetensors)")
    p.add_argument("--format", default="onnx", help="onnx | torchscript (default onnx)")
    p.add_argument("--out", metavar="FILE", help="where to write (default RUN/model.onnx or RUN/model.torchscript.pt)")
    p.add_argument("--dynamic-batch", action=argparse.BooleanOptionalAction, default=True,
                   help="a batch axis of any size (default; --no-dynamic-batch fixes it at 2)")
    p.add_argument("--opset", type=positive_int, help="ONNX opset version (default: the exporter's)")
    p.add_argument("--input-type", default="uint8", help="uint8 (0-255, normalised inside; default) | float "
                   "(already normalised with the run's mean/std)")
    p.set_defaults(handler=_run_export)


def _run_export(args) -> int:
    from imgcls.console import get_console

    _check_run(args.run)
    from imgcls.workflows.export import export

    path = export(args.run, args.format, args.out, args.dynamic_batch, args.opset, args.input_type)
    get_console().print(f"exported {args.format}: {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0


def add_explain(commands) -> None:
    p = commands.add_parser("explain", help="what the model looked at: a heat map over each image",
                            description="Grad-CAM (and Grad-CAM++, EigenCAM) for CNNs and ViTs, attention rollout "
                            "for ViTs: one overlay PNG per image and a grid of all of them.")
    p.add_argument("run", metavar="RUN", help="run folder (or its best.safetensors)")
    p.add_argument("images", nargs="+", metavar="IMAGE|DIR")
    p.add_argument("--method", default="auto", help="auto | gradcam | gradcam++ | hirescam | eigencam | layercam | "
                   "rollout (ViTs); auto: rollout for ViTs; for CNNs the one of Grad-CAM, HiResCAM and LayerCAM "
                   "measured most faithful for the model (the run's report's choice, else measured on the first "
                   "images)")
    p.add_argument("--layer", metavar="NAME", help="module a CAM is taken at, e.g. layer3 (default: the deepest "
                   "whose map is at least 7x7; a ViT's last block)")
    p.add_argument("--target", metavar="CLASS", help="class (name or index) to explain (default: the predicted one)")
    p.add_argument("--out", metavar="DIR", help="where to write the figures (default RUN/explain/<method>/)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="images explained per pass (default 16)")
    p.set_defaults(handler=_run_explain)


def _run_explain(args) -> int:
    from rich.markup import escape

    from imgcls.console import get_console

    _check_run(args.run)
    from imgcls.workflows.explain import explain

    results = explain(args.run, args.images, args.method, args.target, args.out, args.batch_size, args.layer)
    console = get_console()
    for result in results:
        if "error" in result:
            console.print(f"{escape(result['path'])}: [red]unreadable[/red] ({escape(result['error'])})")
        else:
            console.print(f"{escape(result['path'])}: {escape(result['predicted'])} {result['probability']:.3f}, "
                          f"faithfulness {result['faithfulness']:.2f} -> {escape(result['figure'])}")
    explained = [result for result in results if "figure" in result]
    if explained:
        first = explained[0]
        if first["chosen_because"]:
            console.print(f"method {escape(first['chosen_because'])}")
        console.print(f"maps: {escape(first['source'])}; faithfulness is the "
                      f"deletion/insertion score (about 0 for a random map, near 1 at best); figures and grid.png in "
                      f"{Path(first['figure']).parent}")
        if first["warning"]:
            console.print(f"[yellow]warning:[/yellow] do not read these maps as evidence: {escape(first['warning'])}")
    return 1 if all("error" in result for result in results) else 0


def add_serve(commands) -> None:
    p = commands.add_parser("serve", help="an HTTP API and upload page for a run or an exported ONNX model",
                            description="Serve a model: POST /predict, POST /predict/batch, GET /health, /metadata, "
                            "/metrics (Prometheus), /docs (OpenAPI) and an upload page at /. Concurrent requests "
                            "share forward passes (dynamic batching).")
    p.add_argument("model", metavar="RUN|MODEL.onnx")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=positive_int, default=8000)
    p.add_argument("--token", help="require 'Authorization: Bearer TOKEN' (needed to bind another address)")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback --host without a token")
    p.add_argument("--max-batch", type=positive_int, default=32, help="images per forward pass at most (1: no "
                   "batching)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a request waits for others to batch with")
    p.add_argument("--max-queue", type=positive_int, default=256, help="images waiting at most; past it, 503")
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="largest request body (413 past it)")
    p.add_argument("--timeout-s", type=float, default=30.0, help="per-request limit (504 past it)")
    p.add_argument("--topk", type=positive_int, default=5, help="classes returned by default")
    _add_decision_options(p)
    p.set_defaults(handler=_run_serve)


def _run_serve(args) -> int:
    from imgcls.serving.app import ServeSettings
    from imgcls.workflows.serve import serve

    settings = ServeSettings(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
                             max_upload_mb=args.max_upload_mb, timeout_s=args.timeout_s, token=args.token,
                             topk=args.topk)
    serve(args.model, args.host, args.port, settings, args.insecure, args.threshold, args.abstain_below)
    return 0
