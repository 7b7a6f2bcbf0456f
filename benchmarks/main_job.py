"""The README's main job, `imgcls train fashion-mnist`, run by one or more source trees side by side.

    python benchmarks/main_job.py [--tree before=/path/to/old/checkout] [--tree after=.] [--rounds 2]
        [--extra "--precision fp32"] [--variant "fp32=--precision fp32" --variant "seed 1=--seed 1"]
        [--title "..."] [--out docs/benchmarks.md]

Each run is a new process (`PYTHONPATH=<tree>/src python -m imgcls train fashion-mnist ...`), the trees (and
within a tree the variants: more flags each) alternating round by round so that a drifting machine affects
them alike. Per run: process start to the
final metrics (metrics.json written, the table printed), to the finished report.html, to the process's end
(the run's ONNX export done too), the tail (end of the
last epoch to the metrics), training time, and test accuracy with its 95% interval. The header gives the
machine's matmul peaks before and after the runs (benchmarks/host.py), to compare sessions by.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from host import describe, host_speed  # noqa: E402
from results_file import replace_section  # noqa: E402


def one_run(tree: Path, work: Path, name: str, extra: list[str], data_root: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree / "src"), IMGCLS_CACHE_DIR=str(work / "cache"))
    started = time.time()
    result = subprocess.run([sys.executable, "-m", "imgcls", "train", "fashion-mnist", "--data-root", str(data_root),
                             "--runs-dir", str(work / "runs"), "--name", name, *extra],
                            capture_output=True, text=True, env=env)
    finished = time.time()
    if result.returncode != 0:
        raise SystemExit(f"{name} failed:\n{result.stderr[-3000:]}")
    run = work / "runs" / name
    metrics = json.loads((run / "metrics.json").read_text())["test"]
    summary = json.loads((run / "run.json").read_text())
    metrics_at = (run / "metrics.json").stat().st_mtime
    return {"to_metrics": metrics_at - started, "to_report": (run / "report.html").stat().st_mtime - started,
            "process": finished - started, "tail": metrics_at - (run / "history.csv").stat().st_mtime,
            "training": summary["training_time_s"], "accuracy": metrics["accuracy"]["value"],
            "ci95": metrics["accuracy"]["ci95"], "precision": summary["precision"], "ece": metrics["ece"]["value"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", default=[], metavar="LABEL=PATH",
                        help="a source tree to run (default: this checkout as 'this tree')")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--extra", default="", help="more `imgcls train` flags for every run")
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL=FLAGS",
                        help="run every tree once more per variant, with these flags added")
    parser.add_argument("--title", default="README main job: `imgcls train fashion-mnist`")
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "docs" / "benchmarks.md")
    args = parser.parse_args()
    trees = [item.split("=", 1) for item in args.tree] or [["this tree", str(Path(__file__).parents[1])]]
    variants = [item.split("=", 1) for item in args.variant] or [["", ""]]
    runs = [(" / ".join(filter(None, [label if len(trees) > 1 or not variant else "", variant])), path, flags)
            for label, path in trees for variant, flags in variants]
    from imgcls.environment import cpu_name

    work = Path(tempfile.mkdtemp(prefix="imgcls-main-job-"))
    data_root = work / "datasets"
    rows = []
    speed_before = host_speed()
    for round_index in range(args.rounds):
        for index, (label, path, flags) in enumerate(runs):
            result = one_run(Path(path).resolve(), work, f"run{index + 1}-{round_index + 1}",
                             shlex.split(args.extra) + shlex.split(flags), data_root)
            rows.append((label, result))
            print(label, {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}, flush=True)
    speed = describe(speed_before, host_speed())
    command = " ".join(["python benchmarks/main_job.py", *(f"--tree {item}" for item in args.tree),
                        f"--rounds {args.rounds}", *([f'--extra "{args.extra}"'] if args.extra else []),
                        *(f'--variant "{item}"' for item in args.variant)])
    lines = [f"## {args.title}", "", f"`{command}` on {cpu_name()}, {os.cpu_count()} cores "
             f"({time.strftime('%Y-%m-%d')}). Each run is a new process; the runs alternate round by round. {speed}", "",
             "| run | round | start to metrics | start to report.html | start to process end | tail (last epoch end "
             "to metrics) | training | precision | test accuracy [95% CI] | test ECE |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for index, (label, r) in enumerate(rows):
        lines.append(f"| {label} | {index // len(runs) + 1} | {r['to_metrics']:.0f} s | {r['to_report']:.0f} s | "
                     f"{r['process']:.0f} s | {r['tail']:.1f} s | {r['training']:.0f} s | {r['precision']} | {r['accuracy']:.4f} "
                     f"[{r['ci95'][0]:.4f}, {r['ci95'][1]:.4f}] | {r['ece']:.4f} |")
    if args.rounds > 1:
        for label, _, _ in runs:
            mine = [r for name, r in rows if name == label]
            lines.append(f"| {label}: median | | {statistics.median(r['to_metrics'] for r in mine):.0f} s | "
                         f"{statistics.median(r['to_report'] for r in mine):.0f} s | "
                         f"{statistics.median(r['process'] for r in mine):.0f} s | "
                         f"{statistics.median(r['tail'] for r in mine):.1f} s | | | | |")
    replace_section(args.out, f"## {args.title}", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
