"""One run of `hey`, the compiled HTTP load generator (Go, from Debian): its command, its summary parsed, and
the CPU the server, hey and everything else on the machine used meanwhile."""

from __future__ import annotations

import re
import resource
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass
class LoadResult:
    """One hey run: what the clients saw, and the CPU seconds the server and hey spent."""
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    statuses: dict[int, int]
    errors: int  # connection-level failures (no HTTP answer)
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    others_cores: float = 0.0  # CPU the rest of the machine used meanwhile (other engineers' jobs), in cores
    load_average: float = 0.0

    @property
    def answers(self) -> int:
        return sum(self.statuses.values())

    @property
    def not_ok(self) -> int:
        return self.errors + sum(count for status, count in self.statuses.items() if not 200 <= status < 300)


def hey_command(url: str, jpeg_path: Path, concurrency: int, seconds: float) -> list[str]:
    return ["hey", "-z", f"{seconds:g}s", "-c", str(concurrency), "-m", "POST", "-T", "image/jpeg",
            "-D", str(jpeg_path), f"{url}/predict"]


def run_hey(url: str, jpeg_path: Path, concurrency: int, seconds: float, server_pid: int) -> LoadResult:
    """One hey run; the CPU seconds of the server, of hey, and of everything else on the machine during it."""
    server = psutil.Process(server_pid)
    server_before, client_before, busy_before = _cpu_s(server), _children_cpu_s(), machine_busy_s()
    started = time.perf_counter()
    output = subprocess.run(hey_command(url, jpeg_path, concurrency, seconds), capture_output=True, text=True,
                            check=True, timeout=seconds + 60).stdout
    result = parse_hey(output)
    result.server_cpu_s = _cpu_s(server) - server_before
    result.client_cpu_s = _children_cpu_s() - client_before
    others = machine_busy_s() - busy_before - result.server_cpu_s - result.client_cpu_s
    result.others_cores = max(others, 0.0) / (time.perf_counter() - started)
    return result


def _cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def machine_busy_s() -> float:
    times = psutil.cpu_times()
    return times.user + times.nice + times.system + getattr(times, "irq", 0.0) + getattr(times, "softirq", 0.0)


def parse_hey(output: str) -> LoadResult:
    """hey's summary: requests/s, latency percentiles (of every HTTP answer), status codes and errors."""
    def percentile(q: int) -> float:
        found = re.search(rf"^\s*{q}% in ([\d.]+) secs", output, re.M)
        return 1000 * float(found.group(1)) if found else float("nan")

    statuses = {int(code): int(count) for code, count in re.findall(r"\[(\d{3})\]\s+(\d+) responses", output)}
    error_block = output.split("Error distribution:")[1] if "Error distribution:" in output else ""
    errors = sum(int(count) for count in re.findall(r"^\s*\[(\d+)\]", error_block, re.M))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    return LoadResult(rps, percentile(50), percentile(95), percentile(99), statuses, errors)
