"""Serving under load (T30): `imgcls serve` against a compiled load generator, beside the model's offline limit.

    python benchmarks/serve_load.py [--seconds 10] [--levels 1,4,16,64] [--out docs/benchmarks.md]

Two trained runs, each served from its ONNX export (`imgcls serve RUN/model.onnx`, 127.0.0.1 only): the tiny
multilayer_cnn (Fashion-MNIST, 1 epoch) and resnet18 at 224 px (1 epoch on 16 synthetic JPEGs, random init:
speed does not depend on the weights); then the resnet18 run served through PyTorch (its folder without the
export: the precision and layout its training measured). `hey` (Go, from Debian) posts one 320-px JPEG to POST
/predict for `--seconds` per concurrency level, with dynamic batching on (the defaults) and off (`--max-batch 1`).
The limit is the same model's best offline images/s at batch 1 and 32 as the server loads it, on that JPEG
decoded as the server decodes it (decoding is timed apart, not in the limit), measured right before and right
after the model's sweeps (the mean: these machines drift by several per cent within minutes). Then 2x overload: a server
admitting --max-batch + --max-queue images, hit by twice as many concurrent clients.

Other people's jobs share this machine: each model's block first waits (up to 10 minutes) until the 1-minute
load average is below 0.6, or until the machine used under 0.1 core over 10 s while this benchmark was idle
(the load average stays up for a minute after our own runs); each row records the CPU other jobs used.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from host import describe, host_speed  # noqa: E402
from load_generator import LoadResult, hey_command, machine_busy_s, parse_hey, run_hey  # noqa: E402
from results_file import command_line, replace_section  # noqa: E402
from serve import rss_mib, start  # noqa: E402

MARKER = "## Serving under load (T30)"
OVERLOAD_QUEUE = 16  # --max-queue of the overload server; it admits 32 (batch) + 16 images, hey sends twice that
QUIET_LOAD = 0.6
QUIET_CORES = 0.1


@dataclass
class Served:
    """A model (RUN/model.onnx, or a run folder for PyTorch), its offline limit and its rows under load."""
    name: str
    model: Path
    backend: str = ""
    offline: list[dict[str, float]] = field(default_factory=list)  # measured before and after its sweeps
    rows: list[tuple[str, int, LoadResult]] = field(default_factory=list)
    rss: dict[str, tuple[float, float]] = field(default_factory=dict)
    quiet_at: float = 0.0  # the load average its block started at

    def mean(self, key: str) -> float:
        return sum(measured[key] for measured in self.offline) / len(self.offline)

    @property
    def best_batch(self) -> str:
        return max(("batch 1", "batch 32"), key=self.mean)

    @property
    def limit(self) -> float:
        return self.mean(self.best_batch)

    @property
    def model_cpu_ms(self) -> float:
        """Core-ms the model spent per image offline at its limit (all its threads)."""
        return self.mean(f"{self.best_batch} cpu ms")

    @property
    def limit_with_decoding(self) -> float:
        """Images/s if every image is also decoded on the same cores: the cores over the model's core-ms per
        image at its limit plus one decode's (never above the limit itself)."""
        cores = os.cpu_count() or 1
        return min(self.limit, 1000 * cores / (self.model_cpu_ms + 1000 / self.mean("decode")))


def wait_for_quiet(poll_s: float = 10, give_up_s: float = 600) -> float:
    """Wait until the machine is quiet (see the module's docstring); returns the load average then."""
    started = time.monotonic()
    while os.getloadavg()[0] >= QUIET_LOAD and time.monotonic() - started < give_up_s:
        busy = machine_busy_s()
        time.sleep(poll_s)
        if (machine_busy_s() - busy) / poll_s < QUIET_CORES:
            break
    return os.getloadavg()[0]


def jpeg_320px(seed: int = 0) -> bytes:
    """A 320x320 RGB JPEG with photo-like detail (about 29 KB at quality 90)."""
    noise = np.random.default_rng(seed).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).resize((320, 320), Image.Resampling.BILINEAR).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def train_runs(work: Path) -> list[Served]:
    """The two runs, trained for one epoch and exported to ONNX as a user would; resnet18 also without it."""
    import imgcls

    folder = work / "folder"
    for index in range(16):
        (folder / f"class{index % 2}").mkdir(parents=True, exist_ok=True)
        (folder / f"class{index % 2}" / f"{index}.jpg").write_bytes(jpeg_320px(index))
    common = {"epochs": 1, "workers": 0, "runs_dir": str(work / "runs"), "report": False}
    tiny = imgcls.train("fashion-mnist", model="multilayer_cnn", max_per_class=100, name="tiny", **common).run_dir
    resnet = imgcls.train(str(folder), model="resnet18", img_size=224, name="resnet18", **common).run_dir
    without_export = shutil.copytree(resnet, work / "runs" / "resnet18-torch")  # before the export: no model.onnx
    return [Served("multilayer_cnn, 28 px", imgcls.export(tiny)), Served("resnet18, 224 px", imgcls.export(resnet)),
            Served("resnet18, 224 px", without_export)]


def rate(call, images: int, seconds: float) -> tuple[float, float]:
    """Images/s of `call` (`images` per call) over about `seconds`, and the CPU ms (all threads) per image."""
    call()  # warm-up
    count, started, cpu_started = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        call()
        count += images
    return count / (time.perf_counter() - started), 1000 * (time.process_time() - cpu_started) / count


def offline_limit(served: Served, jpeg: bytes, seconds: float) -> None:
    """The model as `imgcls serve` loads it: its images/s at batch 1 and 32 on the decoded JPEG and the
    decodes/s of the JPEG on one thread (the server's decode, as the server calls it), added to
    `served.offline`; its backend and precision."""
    from imgcls.serving.app import ServeSettings, decode_upload
    from imgcls.workflows.predict import classifier_for

    classifier, pixels = classifier_for(served.model, "auto"), ServeSettings().max_pixels
    image = decode_upload(jpeg, classifier, pixels)
    measured = {}
    for size in (1, 32):
        batch = np.stack([image] * size)
        measured[f"batch {size}"], measured[f"batch {size} cpu ms"] = rate(lambda: classifier.probabilities(batch),
                                                                           size, seconds)
    measured["decode"] = rate(lambda: decode_upload(jpeg, classifier, pixels), 1, seconds / 2)[0]
    served.offline.append(measured)
    served.backend = f"{classifier.backend} {classifier.precision}"


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def sweep(served: Served, jpeg_path: Path, label: str, flags: list[str], levels: list[int], seconds: float) -> None:
    """Every concurrency level against one server; its RSS after a warm-up and after the sweep."""
    process, url = start(served.model, *flags)
    try:
        # warm-up at the top level: the allocators and onnxruntime's arena grow to the largest batch once
        run_hey(url, jpeg_path, max(levels), 3, process.pid)
        before = rss_mib(process.pid)
        for level in levels:
            load_average = os.getloadavg()[0]
            result = run_hey(url, jpeg_path, level, seconds, process.pid)
            result.load_average = load_average
            served.rows.append((label, level, result))
            print(served.name, served.backend, label, level, result, flush=True)
        served.rss[label] = (before, rss_mib(process.pid))
    finally:
        stop_server(process)


def overload(served: Served, jpeg_path: Path, jpeg: bytes, seconds: float) -> tuple[LoadResult, str, int]:
    """hey at twice the images the server admits (--max-batch 32 + --max-queue OVERLOAD_QUEUE); returns the
    result, the Retry-After of a 503 caught meanwhile, and the concurrency."""
    admitted = 32 + OVERLOAD_QUEUE
    process, url = start(served.model, "--max-queue", str(OVERLOAD_QUEUE))
    try:
        load_average = os.getloadavg()[0]
        client = subprocess.Popen(hey_command(url, jpeg_path, 2 * admitted, seconds), stdout=subprocess.PIPE,
                                  text=True)
        retry_after = _catch_retry_after(url, jpeg, seconds)
        result = parse_hey(client.communicate(timeout=seconds + 60)[0])
        result.load_average = load_average
    finally:
        stop_server(process)
    return result, retry_after, 2 * admitted


def _catch_retry_after(url: str, jpeg: bytes, seconds: float) -> str:
    """The Retry-After header of one 503 answer during the overload (a handful of requests at most)."""
    deadline = time.monotonic() + seconds / 2
    time.sleep(1)
    while time.monotonic() < deadline:
        request = urllib.request.Request(f"{url}/predict", data=jpeg, headers={"content-type": "image/jpeg"})
        try:
            urllib.request.urlopen(request, timeout=10).read()
        except urllib.error.HTTPError as answer:
            if answer.code == 503:
                return answer.headers.get("retry-after", "(none)")
        time.sleep(0.1)
    return "(no 503 seen)"


def render(models: list[Served], overloaded: tuple[LoadResult, str, int], speeds: tuple[dict, dict],
           seconds: float) -> str:
    """The results section: machine, offline limits, the sweep, RSS and the overload."""
    import onnxruntime
    import torch

    from imgcls.environment import cpu_name

    lines = [MARKER, "", f"`{command_line()}` on {cpu_name()}, {os.cpu_count()} cores, onnxruntime "
             f"{onnxruntime.__version__}, torch {torch.__version__} ({time.strftime('%Y-%m-%d')}). {describe(*speeds)} "
             f"Load generator: `hey -z {seconds:g}s -c C -m POST -T image/jpeg -D one_320px.jpg "
             f"http://127.0.0.1:PORT/predict` (Go, compiled), on the same cores as the server. Server: `imgcls serve "
             f"RUN/model.onnx` (onnxruntime) or `imgcls serve RUN` without an export (PyTorch, in the precision the "
             f"run measured), defaults (--max-batch 32 --max-wait-ms 5 --max-queue 256) or `--max-batch 1`.", "",
             "Offline limit: the model as the server loads it, images/s on the JPEG decoded as the server decodes it; "
             "decoding (one thread) is timed apart and not in the limit. \"With decoding\": the limit if each image's "
             "decode shares the same cores: the cores over the model's core-ms per image at its limit (measured) plus one "
             "decode's.", "",
             "| model | backend | images/s at batch 1, before / after | at batch 32, before / after | limit (best "
             "mean) | decodes/s, one thread | limit with decoding | load average at start |",
             "|---|---|---|---|---|---|---|---|"]
    for served in models:
        pairs = {key: " / ".join(f"{measured[key]:.1f}" for measured in served.offline) for key in ("batch 1", "batch 32")}
        lines.append(f"| {served.name} | {served.backend} | {pairs['batch 1']} | {pairs['batch 32']} | "
                     f"{served.limit:.1f} | {served.mean('decode'):.0f} | {served.limit_with_decoding:.1f} | "
                     f"{served.quiet_at:.2f} |")
    lines += ["", "| model | backend | server | concurrency | requests/s | of the limit (with decoding) | p50 ms | "
              "p95 ms | p99 ms | non-2xx + errors | CPU ms per answer: server / hey | other jobs, cores | load "
              "average |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for served in models:
        for label, level, r in served.rows:
            per_answer = 1000 / max(r.answers, 1)
            lines.append(f"| {served.name} | {served.backend} | {label} | {level} | {r.rps:.1f} | "
                         f"{100 * r.rps / served.limit:.0f} % ({100 * r.rps / served.limit_with_decoding:.0f} %) | "
                         f"{_ms(r.p50_ms)} | {_ms(r.p95_ms)} | {_ms(r.p99_ms)} | {r.not_ok} of {r.answers + r.errors} | "
                         f"{r.server_cpu_s * per_answer:.2f} / {r.client_cpu_s * per_answer:.2f} | "
                         f"{r.others_cores:.2f} | {r.load_average:.2f} |")
    lines += ["", "Server RSS after a 3 s warm-up at the top concurrency / after its sweep: " + "; ".join(
        f"{served.name} {served.backend} {label}: {before:.0f} / {after:.0f} MiB ({after - before:+.0f})"
        for served in models for label, (before, after) in served.rss.items()) + "."]
    return "\n".join(lines + ["", _cpu_split(models), "", _overload_line(overloaded, models[1], seconds)]) + "\n"


def _ms(value: float) -> str:
    return "–" if value != value else f"{value:.1f}"  # hey leaves out a percentile it has too few answers for


def _cpu_split(models: list[Served]) -> str:
    """Where the CPU went per answer at the top concurrency with batching on, against the model's own cost."""
    cores, parts = os.cpu_count() or 1, []
    for served in models:
        label, level, result = [row for row in served.rows if row[0] == "batching on"][-1]
        server_ms, model_ms = 1000 * result.server_cpu_s / max(result.answers, 1), served.model_cpu_ms
        decode_ms = 1000 / served.mean("decode")
        parts.append(f"{served.name} {served.backend}: server {server_ms:.2f} = model {model_ms:.2f} at its limit + "
                     f"decode {decode_ms:.2f} + the rest {server_ms - model_ms - decode_ms:.2f} (HTTP, batching, "
                     f"threads waiting on each other), hey {1000 * result.client_cpu_s / max(result.answers, 1):.2f}")
    return (f"CPU per answer at concurrency {level}, batching on, in core-ms (the {cores} cores are shared by hey, the "
            f"server's event loop, its decode threads and the model's threads): " + "; ".join(parts) + ".")


def _overload_line(overloaded: tuple[LoadResult, str, int], served: Served, seconds: float) -> str:
    result, retry_after, concurrency = overloaded
    statuses = ", ".join(f"{count} x {status}" for status, count in sorted(result.statuses.items()))
    return (f"2x overload ({served.name}, {served.backend}, `--max-queue {OVERLOAD_QUEUE}`: 32 + {OVERLOAD_QUEUE} "
            f"images admitted, hey -c {concurrency} for {seconds:g} s, load average {result.load_average:.2f}): "
            f"{statuses}, {result.errors} connection errors; Retry-After of a 503: {retry_after}; "
            f"{result.statuses.get(200, 0) / seconds:.1f} answers 200/s, {result.rps:.1f} answers/s in all, p50 "
            f"{result.p50_ms:.0f} ms, p95 {result.p95_ms:.0f} ms, p99 {result.p99_ms:.0f} ms (over every answer, "
            f"503s included). hey sends its next request at once, ignoring Retry-After: every refusal still costs "
            f"an HTTP exchange on these cores.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per concurrency level")
    parser.add_argument("--levels", default="1,4,16,64", help="concurrency levels, comma-separated")
    parser.add_argument("--out", default=str(Path(__file__).parents[1] / "docs" / "benchmarks.md"))
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the `finally`s: no server outlives us
    if shutil.which("hey") is None:
        raise SystemExit("hey is not installed (Debian: apt-get install hey)")
    levels = [int(level) for level in args.levels.split(",")]
    work = Path(tempfile.mkdtemp(prefix="imgcls-serve-load-"))
    jpeg = jpeg_320px()
    jpeg_path = work / "one_320px.jpg"
    jpeg_path.write_bytes(jpeg)
    models = train_runs(work)
    before = host_speed()
    for served in models:
        served.quiet_at = wait_for_quiet()
        offline_limit(served, jpeg, args.seconds / 3)
        for label, flags in (("batching on", []), ("--max-batch 1", ["--max-batch", "1"])):
            sweep(served, jpeg_path, label, flags, levels, args.seconds)
        offline_limit(served, jpeg, args.seconds / 3)
        print(served.name, served.backend, served.offline, flush=True)
    overloaded = overload(models[1], jpeg_path, jpeg, args.seconds)
    text = render(models, overloaded, (before, host_speed()), args.seconds)
    print(text)
    replace_section(Path(args.out), MARKER, text)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
