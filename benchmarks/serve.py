"""`imgcls serve` under load, against 127.0.0.1 only: a bounded sweep of concurrency, dynamic batching on vs off.

    python benchmarks/serve.py [--requests 400] [--soak 5000] [--out docs/benchmarks.md]

For a small CNN (multilayer_cnn on Fashion-MNIST), each server setting is started in its own process; each
concurrency level (1, 4, 16, 64) sends a fixed number of requests (real Fashion-MNIST PNGs) and stops by
itself. Per level: throughput, p50/p95/p99 latency and errors. Then a soak of `--soak` requests at
concurrency 16 with the server's RSS before and after. The client (httpx, asyncio) runs on the same 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from results_file import replace_section  # noqa: E402

MARKER = "## Serve: throughput and latency under load"
LEVELS = (1, 4, 16, 64)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(model: Path, *flags: str) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "imgcls", "serve", str(model), "--host", "127.0.0.1",
                                "--port", str(port), *flags], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            if process.poll() is not None:  # it failed to start: say why at once
                break
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"server did not start: {process.stderr.read()[-2000:]}")


async def load(url: str, images: list[bytes], requests: int, concurrency: int) -> dict:
    """`requests` POST /predict at `concurrency` in flight; latencies, throughput and errors."""
    import httpx

    latencies, errors, sent = [], 0, [0]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        async def worker():
            nonlocal errors
            while sent[0] < requests:
                image = images[sent[0] % len(images)]
                sent[0] += 1
                started = time.perf_counter()
                try:
                    answer = await client.post("/predict", content=image, headers={"content-type": "image/png"})
                    ok = answer.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - started)
                errors += not ok

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
    return {"rps": len(latencies) / elapsed, "p50": pick(0.50), "p95": pick(0.95), "p99": pick(0.99),
            "errors": errors, "count": len(latencies)}


def server_latency(url: str) -> tuple[float, float]:
    """(sum of seconds, count) of POST /predict as the server measured them (its Prometheus histogram)."""
    import httpx

    values = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        for key in ("sum", "count"):
            if line.startswith(f'imgcls_request_latency_seconds_{key}{{endpoint="/predict"}}'):
                values[key] = float(line.split()[-1])
    return values.get("sum", 0.0), values.get("count", 0.0)


def rss_mib(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per concurrency level")
    parser.add_argument("--soak", type=int, default=5000)
    parser.add_argument("--out", default=str(Path(__file__).parents[1] / "docs" / "benchmarks.md"))
    args = parser.parse_args()
    import imgcls
    from imgcls.data.builtin import load_builtin
    from imgcls.environment import cpu_name

    work = Path(tempfile.mkdtemp(prefix="imgcls-serve-bench-"))
    run = imgcls.train("fashion-mnist", model="multilayer_cnn", epochs=1, max_per_class=100, workers=0,
                       runs_dir=str(work / "runs"), name="served").run_dir
    from PIL import Image

    images = []
    for array in load_builtin("fashion-mnist", work / "datasets", train=False)[0][:64]:
        path = work / f"{len(images)}.png"
        Image.fromarray(array[0]).save(path)
        images.append(path.read_bytes())
    rows, soak = [], None
    for label, flags in (("batching on (--max-batch 32 --max-wait-ms 5)", ["--max-batch", "32", "--max-wait-ms", "5"]),
                         ("batching off (--max-batch 1)", ["--max-batch", "1"])):
        process, url = start(run, *flags)
        try:
            for level in LEVELS:
                seconds_before, count_before = server_latency(url)
                result = asyncio.run(load(url, images, args.requests, level))
                seconds_after, count_after = server_latency(url)
                result["server_ms"] = 1000 * (seconds_after - seconds_before) / max(count_after - count_before, 1)
                rows.append((label, level, result))
                print(label, level, result, flush=True)
            if soak is None:
                asyncio.run(load(url, images, 200, 16))  # warm: allocator and caches settle
                before = rss_mib(process.pid)
                result = asyncio.run(load(url, images, args.soak, 16))
                soak = (before, rss_mib(process.pid), result)
        finally:
            process.terminate()
            process.wait(timeout=30)
    lines = [MARKER, "", f"`python benchmarks/serve.py --requests {args.requests} --soak {args.soak}` on "
             f"{cpu_name()}, {os.cpu_count()} cores ({time.strftime('%Y-%m-%d')}). Model: multilayer_cnn "
             f"(8,490 parameters), 28 px Fashion-MNIST PNGs sent as raw bytes to POST /predict; server and client "
             f"share the machine. Each level sends {args.requests} requests and stops.", "",
             "| server | concurrency | requests/s | p50 ms | p95 ms | p99 ms | mean ms inside the server | errors |",
             "|---|---|---|---|---|---|---|---|"]
    for label, level, r in rows:
        lines.append(f"| {label} | {level} | {r['rps']:.0f} | {r['p50']:.1f} | {r['p95']:.1f} | {r['p99']:.1f} | "
                     f"{r['server_ms']:.1f} | {r['errors']} of {r['count']} |")
    before, after, result = soak
    lines += ["", f"Soak (batching on): {result['count']} requests at concurrency 16, {result['rps']:.0f} requests/s, "
              f"{result['errors']} errors; server RSS {before:.0f} MiB before, {after:.0f} MiB after "
              f"({after - before:+.0f} MiB)."]
    text = "\n".join(lines) + "\n"
    print(text)
    replace_section(Path(args.out), MARKER, text)


if __name__ == "__main__":
    main()
