"""Rows S1-S3 of ../shared/reliability.md: no loading path runs code from a file; the dependency floors and a
static check that nothing unpickles user input; safetensors headers fuzzed."""

from __future__ import annotations

import ast
import json
import re
import struct
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import imgcls
from imgcls.engine.checkpoint import MANIFEST, _file_digests
from tests.helpers import cli, make_class_folders, user_error

ROOT = Path(__file__).resolve().parents[2]


class _Evil:
    """Unpickling it creates `marker`: the proof that a loader ran code from a file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def _evil_file(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {"weight": torch.zeros(2)}, "payload": _Evil(marker)}, str(path))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished run with the --ema average (its last/ holds every pickled kind: optimizer, schedule, RNG, EMA)."""
    root = tmp_path_factory.mktemp("security")
    folders = make_class_folders(root / "photos", per_class=12, size=32)
    outcome = imgcls.train(str(folders), model="fastcnn", img_size=32, epochs=1, batch_size=8, workers=0,
                           runs_dir=str(root / "runs"), name="run", report=False, precision="fp32", ema=0.9)
    image = root / "one.png"
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(image)
    return outcome.run_dir, image


def _copy_run(run: Path, tmp_path: Path) -> Path:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


@pytest.mark.parametrize("victim", ["optimizer.bin", "scheduler.bin", "random_states_0.pkl",
                                    "custom_checkpoint_0.pkl"])
def test_s1_resume_refuses_a_pickled_payload_in_every_file_of_last(trained, tmp_path, victim):
    """An attacker who rewrites the manifest too: the hashes pass, the unpickling must still refuse."""
    run = _copy_run(trained[0], tmp_path)
    marker = tmp_path / "pwned"
    assert (run / "last" / victim).is_file()
    _evil_file(run / "last" / victim, marker)
    digests = _file_digests(run / "last")
    (run / "last" / MANIFEST).write_text(json.dumps({"files": digests}))
    with pytest.raises(imgcls.ImgclsError, match=f"refused to load .*{victim}: it is not plain tensors"):
        imgcls.train(resume=run)
    assert not marker.exists()


def test_s1_every_other_loading_path_refuses_a_pickle_in_place_of_the_weights(trained, tmp_path):
    run, image = _copy_run(trained[0], tmp_path), trained[1]
    marker = tmp_path / "pwned"
    _evil_file(run / "best.safetensors", marker)
    for model in (run / "model.onnx",):
        model.unlink(missing_ok=True)  # so that nothing answers from the export instead
    attempts = {
        "predict": lambda: imgcls.predict(run, [image]),
        "evaluate": lambda: imgcls.evaluate(run),
        "export": lambda: imgcls.export(run, out=tmp_path / "m.onnx"),
        "explain": lambda: imgcls.explain(run, [image], out=tmp_path / "maps"),
        "serve's loader": lambda: __import__("imgcls.workflows.predict", fromlist=["x"]).classifier_for(run),
    }
    for name, attempt in attempts.items():
        with pytest.raises(imgcls.ImgclsError, match="not a complete imgcls checkpoint") as refused:
            attempt()
        assert str(run / "best.safetensors") in str(refused.value), name
    evil = _evil_file(tmp_path / "evil.pth", marker)
    with pytest.raises(imgcls.ImgclsError, match="never pickled code"):
        imgcls.train(str(trained[0].parent.parent / "photos"), model="fastcnn", img_size=32, epochs=1,
                     weights=str(evil), runs_dir=str(tmp_path / "runs"), report=False)
    assert not marker.exists()


@pytest.mark.slow
def test_s1_the_cli_says_it_in_one_line_and_has_no_unsafe_switch(trained, tmp_path):
    marker = tmp_path / "pwned"
    evil = _evil_file(tmp_path / "evil.pth", marker)
    result = cli("predict", "--model", "resnet18", "--weights", str(evil), str(trained[1]))
    assert result.returncode == 2 and "never pickled code" in user_error(result)
    assert not marker.exists()


# --- S2: the floors and a static check of every load ---

def test_s2_dependency_floors_close_the_known_loader_cves():
    requirements = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    floors = {re.split(r"[<>=!~ \[]", line)[0].lower(): line for line in requirements}

    def floor(name):
        found = re.search(r">=\s*([\d.]+)", floors[name])
        return tuple(int(part) for part in found.group(1).split("."))

    assert floor("torch") >= (2, 6)  # CVE-2025-32434: torch.load(weights_only=True) could still run code
    assert floor("pillow") >= (12, 2)  # CVE-2026-40192


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield ast.unparse(node.func), {kw.arg: ast.unparse(kw.value) for kw in node.keywords}, node


def test_s2_no_source_line_can_unpickle_user_input():
    offenders = []
    for path in sorted((ROOT / "src" / "imgcls").rglob("*.py")):
        for name, keywords, node in _calls(ast.parse(path.read_text())):
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if keywords.get("weights_only") == "False":  # no fallback to unsafe loading, not even behind a flag
                offenders.append(f"{where} weights_only=False")
            if name.endswith("torch.load") and keywords.get("weights_only") != "True":
                offenders.append(f"{where} torch.load without weights_only=True")
            if name in ("pickle.load", "pickle.loads", "cPickle.load", "dill.load", "joblib.load"):
                offenders.append(f"{where} {name}")
            if name.endswith("yaml.load") or name.endswith("yaml.unsafe_load"):
                offenders.append(f"{where} {name} (use yaml.safe_load)")
            if name.endswith("np.load") and keywords.get("allow_pickle") != "False":
                offenders.append(f"{where} np.load without allow_pickle=False")
    assert offenders == []


def test_s2_a_run_saves_only_plain_types(trained):
    from imgcls.engine.checkpoint import read_metadata, refuse_pickled_code

    run = trained[0]
    refuse_pickled_code(run / "last")  # every pickle there loads with weights_only=True
    assert isinstance(read_metadata(run / "best.safetensors"), dict)  # the config as JSON, not a Namespace
    assert not list(run.rglob("*.pt")) and not list(run.rglob("*.pth"))


# --- S3: safetensors header fuzzing ---

def _safetensors(header: bytes | dict, data: bytes = b"", length: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


GOOD = {"__metadata__": {"imgcls": "{}"}, "w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}
HEADERS = {
    "header length over 100 MB": _safetensors(GOOD, bytes(16), length=200 << 20),
    "header length past the file": _safetensors(GOOD, bytes(16), length=10_000),
    "header not JSON": _safetensors(b"\x80\x04not json at all" + b" " * 8, bytes(16)),
    "header not an object": _safetensors(b'["w"]', bytes(16)),
    "offsets past the data": _safetensors({**GOOD, "w": {**GOOD["w"], "data_offsets": [0, 1 << 40]}}, bytes(16)),
    "overlapping offsets": _safetensors({**GOOD, "v": {"dtype": "F32", "shape": [2, 2], "data_offsets": [8, 24]}},
                                        bytes(24)),
    "shape and bytes disagree": _safetensors({**GOOD, "w": {**GOOD["w"], "shape": [1000, 1000]}}, bytes(16)),
    "unknown dtype": _safetensors({**GOOD, "w": {**GOOD["w"], "dtype": "F99"}}, bytes(16)),
    "negative shape": _safetensors({**GOOD, "w": {**GOOD["w"], "shape": [-2, -2]}}, bytes(16)),
    "empty file": b"",
    "eight bytes only": struct.pack("<Q", 2),
}


@pytest.mark.parametrize("case", sorted(HEADERS))
def test_s3_a_damaged_safetensors_header_is_one_clean_error(tmp_path, case):
    import resource

    from imgcls.engine.checkpoint import read_metadata
    from imgcls.models.weights import read_state_dict

    path = tmp_path / "w.safetensors"
    path.write_bytes(HEADERS[case])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for load in (read_metadata, read_state_dict):
        with pytest.raises(imgcls.ImgclsError, match=re.escape(str(path))):
            load(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KB: nothing near the claim


def test_s3_bit_flips_truncations_and_random_bytes_never_escape_as_a_raw_error(trained, tmp_path):
    from imgcls.engine.checkpoint import load_weights_into, read_metadata
    from imgcls.models import create_model

    original = (trained[0] / "best.safetensors").read_bytes()
    meta = read_metadata(trained[0] / "best.safetensors")
    header_end = 8 + struct.unpack("<Q", original[:8])[0]
    rng = np.random.default_rng(0)
    path = tmp_path / "flipped.safetensors"
    outcomes = {"refused": 0, "loaded": 0}
    damaged = []
    for _ in range(60):
        data = bytearray(original)
        spot = int(rng.integers(0, header_end))  # the header: where parsing can go wrong
        data[spot] ^= 1 << int(rng.integers(0, 8))
        damaged.append(bytes(data))
    damaged += [original[: int(cut)] for cut in rng.integers(0, len(original), 20)]  # truncated anywhere
    damaged += [rng.bytes(int(size)) for size in rng.integers(0, 4096, 10)]  # not a weights file at all
    for data in damaged:
        path.write_bytes(data)
        try:
            read_metadata(path)
            load_weights_into(create_model(meta["model"], num_classes=meta["num_classes"], in_chans=meta["in_chans"],
                                           img_size=meta["img_size"], **meta.get("options", {})), path)
            outcomes["loaded"] += 1  # a flip inside a string that keeps the JSON valid and the names matching
        except imgcls.ImgclsError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 60, outcomes  # every truncation and random file, most header flips
