"""The environment variables imgcls reads, each in one place: the default cache folder, what --precision auto is
pinned to, the collective and data-loading worker timeouts, the launcher's rank variables (torchrun / accelerate launch) and MLflow's
tracking address."""

from __future__ import annotations

import os
from pathlib import Path

from imgcls.errors import ImgclsError

CACHE_DIR_ENV = "IMGCLS_CACHE_DIR"  # another default cache folder (shared machines, test sessions)
AUTO_PRECISION_ENV = "IMGCLS_AUTO_PRECISION"  # pins what --precision auto means: fp32 or bf16 (CI, clusters)


def default_cache_dir() -> Path:
    """Where imgcls caches decoded images, linear-probe features and precision timings without --cache-dir:
    $IMGCLS_CACHE_DIR, else ~/.cache/imgcls."""
    configured = os.environ.get(CACHE_DIR_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "imgcls"


def default_data_root() -> Path:
    """Where built-in datasets live when --data-root is not given: <cache folder>/datasets."""
    return default_cache_dir() / "datasets"


COLLECTIVE_TIMEOUT_ENV = "IMGCLS_COLLECTIVE_TIMEOUT_S"  # how long a rank waits for the others in a collective
DEFAULT_COLLECTIVE_TIMEOUT_S = 900


def collective_timeout_s() -> float:
    """Seconds a process of a distributed job waits in a collective before failing (default 900)."""
    value = os.environ.get(COLLECTIVE_TIMEOUT_ENV, "").strip()
    try:
        return float(value) if value else DEFAULT_COLLECTIVE_TIMEOUT_S
    except ValueError:
        raise ImgclsError(f"{COLLECTIVE_TIMEOUT_ENV}={value} is not a number of seconds; set it to e.g. 600") \
            from None


WORKER_TIMEOUT_ENV = "IMGCLS_WORKER_TIMEOUT_S"  # how long the training loop waits for a data-loading worker's batch
DEFAULT_WORKER_TIMEOUT_S = 600


def worker_timeout_s() -> float:
    """Seconds to wait for one batch from a data-loading worker before failing (default 600): a worker that hangs
    ends the run with a message instead of hanging it."""
    value = os.environ.get(WORKER_TIMEOUT_ENV, "").strip()
    try:
        return float(value) if value else DEFAULT_WORKER_TIMEOUT_S
    except ValueError:
        raise ImgclsError(f"{WORKER_TIMEOUT_ENV}={value} is not a number of seconds; set it to e.g. 600") from None


LAUNCHER_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR",
                      "MASTER_PORT")  # set by torchrun / accelerate launch


def plain_process_environment() -> dict[str, str]:
    """This process's environment without the launcher's rank variables: for a child that is one plain process."""
    return {name: value for name, value in os.environ.items()
            if name not in LAUNCHER_VARIABLES and not name.startswith("TORCHELASTIC_")}


def auto_precision_override() -> str | None:
    """What `--precision auto` is pinned to by $IMGCLS_AUTO_PRECISION (fp32 or bf16), or None to decide."""
    value = os.environ.get(AUTO_PRECISION_ENV, "").strip().lower()
    if not value or value == "auto":
        return None
    if value not in ("fp32", "bf16"):
        raise ImgclsError(f"{AUTO_PRECISION_ENV}={value} is not a precision; set it to fp32 or bf16, or unset it")
    return value


MLFLOW_TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"  # MLflow's own variable: a server or store the user chose


def mlflow_tracking_uri(runs_dir: str | Path) -> str:
    """Where --track mlflow records runs: $MLFLOW_TRACKING_URI when set, else a local SQLite store in
    RUNS_DIR/mlruns/mlflow.db (no server; MLflow 3 keeps the plain-file store in maintenance mode and refuses it
    without an opt-in, docs/decisions.md)."""
    configured = os.environ.get(MLFLOW_TRACKING_URI_ENV, "").strip()
    if configured:
        return configured
    return "sqlite:///" + str((Path(runs_dir).expanduser() / "mlruns" / "mlflow.db").resolve())


def keep_mlflow_offline() -> None:
    """Turn off MLflow's usage telemetry in this process (it would send it over the network) unless the user
    set MLFLOW_DISABLE_TELEMETRY themselves: imgcls's tracking stays on this machine."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
