"""Rows T9-T19 of the fault matrix (shared/reliability.md, "Bad inputs"): unreadable, junk, empty, oddly laid out,
oddly named, oddly encoded, rotated, huge and tiny image files, and a dataset folder that imgcls must never change.

One tiny run (3 classes of real photo crops, multilayer_cnn, 1 epoch at 16 px) trains on a folder salted with every
kind of broken and junk file; the rows read what it did. The other rows build their own tiny folders.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import unicodedata
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import imgcls
from imgcls.config import DataConfig
from imgcls.data import build_dataset
from imgcls.data.images import decode_files
from imgcls.run_files import RunFolder
from tests.helpers import cli, make_class_folders, run_cli, user_error

TINY = ("--model", "multilayer_cnn", "--epochs", "1", "--img-size", "16", "--workers", "0", "--batch-size", "8",
        "--no-report")


# --- files as broken as users' ---

def _png(width: int, height: int, color_type: int, bit_depth: int, rows: bytes) -> bytes:
    """A PNG written chunk by chunk, for what Pillow will not write: a header that lies about the size (a
    decompression bomb) and 16-bit RGB (RGB48). `rows` are the raw scanlines, each led by its filter byte."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")


def _bomb() -> bytes:
    """A few KB that declare 30000 x 30000 pixels (900 MB decoded): only its first rows are there."""
    return _png(30000, 30000, 0, 8, b"\x00" * 30001 * 16)


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _salt(root: Path) -> dict[str, Path]:
    """Broken, disguised, huge-declared and tiny files in the class folders, junk beside them; returns the files
    by what they are."""
    files = {"truncated_jpeg": root / "cat" / "1.jpg", "truncated_png": root / "coffee" / "0.png",
             "zero_bytes": root / "rocket" / "zero.jpg", "html": root / "rocket" / "page.jpg",
             "bomb": root / "coffee" / "bomb.png", "png_named_jpg": root / "cat" / "really-a-png.jpg",
             "one_pixel": root / "rocket" / "one-pixel.png", "five": root / "rocket" / "five.png",
             "strip": root / "rocket" / "strip.png", "column": root / "cat" / "column.png"}
    _truncated(files["truncated_jpeg"])
    _truncated(files["truncated_png"])
    files["zero_bytes"].write_bytes(b"")
    files["html"].write_text("<!DOCTYPE html><html><body>Access denied</body></html>")
    files["bomb"].write_bytes(_bomb())
    Image.open(root / "cat" / "0.png").save(files["png_named_jpg"], format="PNG")
    Image.new("RGB", (1, 1), (200, 30, 90)).save(files["one_pixel"])
    Image.fromarray(np.kron(np.eye(5, dtype=np.uint8) * 255, np.ones((1, 1), np.uint8))).save(files["five"])
    strip = np.zeros((1, 8000, 3), np.uint8)
    strip[0, :, 1] = np.linspace(0, 255, 8000).astype(np.uint8)  # green ramp; its middle pixel is about 127
    Image.fromarray(strip).save(files["strip"])
    Image.fromarray(np.full((8000, 1, 3), (10, 20, 250), np.uint8)).save(files["column"])
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (root / "README.txt").write_text("photos from the team drive")
    (root / ".ipynb_checkpoints").mkdir()
    Image.new("RGB", (8, 8)).save(root / ".ipynb_checkpoints" / "x-checkpoint.png")
    (root / "__MACOSX" / "cat").mkdir(parents=True)
    (root / "__MACOSX" / "cat" / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    Image.new("RGB", (8, 8)).save(root / "__MACOSX" / "stray.png")  # an image: junk all the same, not a class
    (root / "loop").symlink_to(".")  # the dataset inside itself
    (root / "cat" / "up").symlink_to("..")  # a class folder leading back to the root
    (root / "rocket" / "self").symlink_to("self")  # a link to itself
    return files


def _digests(root: Path) -> dict[str, str]:
    """sha256 of every file below `root` (links by their target, not followed)."""
    digests = {}
    for current, dirs, names in os.walk(root):
        for name in dirs + names:
            path = Path(current) / name
            key = str(path.relative_to(root))
            if path.is_symlink():
                digests[key] = "link -> " + os.readlink(path)
            elif path.is_file():
                digests[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


@pytest.fixture(scope="module")
def salted(tmp_path_factory):
    """A salted folder, its digests before anything read it, and `imgcls train` on it (in this process)."""
    base = tmp_path_factory.mktemp("salted")
    root = make_class_folders(base / "photos", per_class=6, size=24)
    files = _salt(root)
    before = _digests(root)
    result = cli("train", str(root), *TINY, "--runs-dir", str(base / "runs"), "--name", "salted")
    assert result.returncode == 0, result.stderr
    return {"root": root, "files": files, "before": before, "result": result, "run": base / "runs" / "salted"}


def _skipped(run: Path) -> dict[str, str]:
    lines = RunFolder(run).skipped_file.read_text().splitlines()
    return dict(line.split("\t", 1) for line in lines)


# --- T9, T10: unreadable files ---

def test_t09_truncated_files_are_left_out_listed_and_counted(salted):
    skipped, files = _skipped(salted["run"]), salted["files"]
    for kind in ("truncated_jpeg", "truncated_png"):
        assert str(files[kind]) in skipped, kind
        assert skipped[str(files[kind])].startswith(("OSError", "SyntaxError", "ValueError")), skipped[str(files[kind])]
    assert len(skipped) == 5  # two truncated, zero bytes, HTML, the bomb: nothing else
    warning = next(line for line in salted["result"].stderr.splitlines() if "unreadable" in line)
    assert "skipped 5 unreadable image(s)" in warning and str(RunFolder(salted["run"]).skipped_file) in warning
    summary = RunFolder(salted["run"]).read_summary()  # written at the end: the run trained through
    assert summary["epochs_run"] == 1
    assert sum(sum(counts) for counts in summary["class_counts"].values()) == 18 - 2 + 5  # photos - truncated + odd


def test_t09_strict_makes_unreadable_files_one_line_naming_them(salted, tmp_path):
    result = cli("train", str(salted["root"]), *TINY, "--strict", "--runs-dir", str(tmp_path / "runs"))
    line = user_error(result)
    assert "--strict: 5 unreadable image(s)" in line
    for kind in ("truncated_jpeg", "truncated_png", "zero_bytes", "html", "bomb"):
        assert str(salted["files"][kind]) in line, kind
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # no half-made run folder


def test_t09_a_strict_run_evaluates_strictly(tmp_path):
    """eval reads the data with the run's settings: a run trained with --strict refuses a file broken since."""
    root = make_class_folders(tmp_path / "photos", per_class=4, size=16)
    assert cli("train", str(root), *TINY, "--strict", "--runs-dir", str(tmp_path / "runs"), "--name", "strict"
               ).returncode == 0
    _truncated(root / "coffee" / "1.jpg")
    line = user_error(cli("eval", str(tmp_path / "runs" / "strict")))
    assert "--strict" in line and str(root / "coffee" / "1.jpg") in line


def test_t10_empty_and_html_files_are_skipped_and_content_decides_the_format(salted):
    skipped, files = _skipped(salted["run"]), salted["files"]
    assert "cannot identify image file" in skipped[str(files["zero_bytes"])]
    assert "cannot identify image file" in skipped[str(files["html"])]
    assert str(files["png_named_jpg"]) not in skipped
    bundle = build_dataset(DataConfig(source=str(salted["root"]), img_size=16), 0, 16, whole=True)
    paths = bundle.splits["all"].paths
    row = paths.index(str(files["png_named_jpg"]))
    twin = paths.index(str(salted["root"] / "cat" / "0.png"))  # the same pixels under their own extension
    assert np.array_equal(bundle.splits["all"].images[row].numpy(), bundle.splits["all"].images[twin].numpy())


# --- T11: junk ---

def test_t11_junk_is_ignored_in_one_warning_and_the_walk_ends(salted):
    root = salted["root"]
    assert RunFolder(salted["run"]).read_classes() == ["cat", "coffee", "rocket"]
    warnings_ = [line for line in salted["result"].stderr.splitlines() if "ignored" in line]
    assert len(warnings_) == 1, warnings_
    for junk in (".DS_Store", "Thumbs.db", "README.txt", ".ipynb_checkpoints/", "__MACOSX/", "loop (link loop)",
                 "cat/up (link loop)", "rocket/self (broken or looping link)"):
        assert junk in warnings_[0], junk
    bundle = build_dataset(DataConfig(source=str(root), img_size=16), 0, 16, whole=True)
    paths = bundle.splits["all"].paths
    assert len(paths) == len(set(map(os.path.realpath, paths)))  # no image read twice through a link
    assert all(Path(path).relative_to(root).parts[0] in ("cat", "coffee", "rocket") and "up" not in Path(path).parts
               for path in paths)


# --- T12, T14: classes without images, one class, a held-out split missing a class ---

def _classes(root: Path, names: dict[str, int], size: int = 12) -> Path:
    """Class folders with `names[name]` small flat-colour images each, every class its own colour."""
    for index, (name, count) in enumerate(names.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = np.full((size, size, 3), (40 * index % 256, 255 - 30 * index % 256, 17 * i % 256), np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_t12_empty_or_unreadable_class_folder_is_one_line_naming_it(tmp_path):
    root = _classes(tmp_path / "data", {"ant": 4, "bee": 4, "cow": 0})
    line = user_error(cli("train", str(root), *TINY, "--runs-dir", str(tmp_path / "runs")))
    assert str(root / "cow") in line and "no image files" in line and "--allow-empty" in line
    (root / "cow" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (root / "cow" / "1.jpg").write_bytes(b"")
    line = user_error(cli("train", str(root), *TINY, "--runs-dir", str(tmp_path / "runs")))
    assert str(root / "cow") in line and "every file is unreadable" in line and "--allow-empty" in line


def test_t12_allow_empty_leaves_them_out_in_sorted_order_and_records_them(tmp_path):
    root = _classes(tmp_path / "data", {"ant": 5, "bee": 0, "cow": 5, "dog": 3, "emu": 5})
    for index in range(3):
        (root / "dog" / f"{index}.png").write_bytes(b"")  # every file of dog unreadable
    run = tmp_path / "runs" / "allow"
    result = cli("train", str(root), *TINY, "--allow-empty", "--runs-dir", str(run.parent), "--name", "allow")
    assert result.returncode == 0, result.stderr
    assert RunFolder(run).read_classes() == ["ant", "cow", "emu"]
    assert imgcls.load(run).class_names == ["ant", "cow", "emu"]  # the weights say the same
    skipped = _skipped(run)
    left_out = sorted(path for path, reason in skipped.items() if "--allow-empty" in reason)
    assert left_out == [str(root / "bee"), str(root / "dog")]
    notes = [line for line in result.stderr.splitlines() if "--allow-empty: left out" in line]
    assert len(notes) == 2 and str(root / "bee") in notes[0] and str(root / "dog") in notes[1]
    assert "skipped 3 unreadable image(s)" in result.stderr  # dog's files, not the folders
    predictions = imgcls.predict(run, [root / "cow" / "0.png"])
    assert {entry["class"] for entry in predictions[0]["predictions"]} == {"ant", "cow", "emu"}


def test_t14_one_class_is_one_line_asking_for_two(tmp_path):
    root = _classes(tmp_path / "data", {"only": 4})
    line = user_error(cli("train", str(root), *TINY, "--runs-dir", str(tmp_path / "runs")))
    assert "only one class (only)" in line and "at least 2 classes" in line
    _classes(root, {"gone": 0})  # one class left once the empty one is left out
    line = user_error(cli("train", str(root), *TINY, "--allow-empty", "--runs-dir", str(tmp_path / "runs")))
    assert "at least 2 classes" in line


def test_t14_a_val_split_missing_a_class_is_reported(tmp_path):
    _classes(tmp_path / "data" / "train", {"ant": 4, "bee": 4, "cow": 4})
    _classes(tmp_path / "data" / "val", {"ant": 2, "bee": 2})
    result = cli("train", str(tmp_path / "data"), *TINY, "--runs-dir", str(tmp_path / "runs"))
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stderr.splitlines() if "no images of class" in line)
    assert "the val split has no images of class(es) cow" in line


# --- T13: not a dataset ---

@pytest.mark.parametrize("case", ["missing", "no subfolders", "flat images"])
def test_t13_wrong_layout_is_one_line_showing_the_expected_one(tmp_path, case):
    root = tmp_path / "data"
    if case != "missing":
        root.mkdir()
    if case == "flat images":
        for index in range(3):
            Image.new("RGB", (8, 8)).save(root / f"{index}.jpg")
    line = user_error(cli("train", str(root), *TINY, "--runs-dir", str(tmp_path / "runs")))
    assert str(root) in line and f"expected {root}/<class>/<image>" in line
    assert ".jpg" in line and ".png" in line and ".webp" in line  # the extensions it takes
    assert {"missing": "does not exist", "no subfolders": "no class subfolders",
            "flat images": "holds images but no class subfolders"}[case] in line


@pytest.mark.slow
def test_t13_a_real_process_exits_2_with_one_line_and_no_traceback(tmp_path):
    result = run_cli("train", str(tmp_path / "no-such-folder"), *TINY, timeout=120)
    assert result.returncode == 2
    assert user_error(result).startswith("imgcls train: error: dataset folder")


# --- T15: Unicode class names ---

UNICODE_NAMES = [unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café"), "猫", "🐱 cat",
                 "two words", "قطة", "長" * 80]  # the last: 240 bytes, near the 255-byte limit of a file name


@pytest.fixture(scope="module")
def unicode_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("unicode")
    root = _classes(base / "données", dict.fromkeys(UNICODE_NAMES, 3))
    result = cli("train", str(root), *TINY, "--val-split", "0.3", "--runs-dir", str(base / "runs"), "--name", "u")
    assert result.returncode == 0, result.stderr
    return root, base / "runs" / "u", result


def test_t15_unicode_class_names_round_trip_byte_exact(unicode_run):
    root, run, _ = unicode_run
    expected = sorted(UNICODE_NAMES)  # by code point: the same on every machine
    assert [name.encode() for name in RunFolder(run).read_classes()] == [name.encode() for name in expected]
    assert [name.encode() for name in imgcls.load(run).class_names] == [name.encode() for name in expected]
    image = root / "猫" / "0.png"
    answer = json.loads(cli("predict", str(run), str(image), "--format", "json").stdout)
    assert {entry["class"].encode() for entry in answer[0]["predictions"]} <= {name.encode() for name in expected}
    assert answer[0]["path"].encode() == str(image).encode()


def test_t15_names_equal_but_for_normalization_are_warned(unicode_run):
    lines = [line for line in unicode_run[2].stderr.splitlines() if "Unicode normalizations" in line]
    assert len(lines) == 1
    assert "'caf\\xe9' (NFC)" in lines[0] and "'cafe\\u0301' (NFD)" in lines[0] and "2 classes" in lines[0]


@pytest.mark.slow
def test_t15_unicode_class_names_in_the_onnx_metadata(unicode_run):
    onnx = pytest.importorskip("onnx")
    path = imgcls.export(unicode_run[1])
    metadata = {entry.key: entry.value for entry in onnx.load(str(path)).metadata_props}
    assert [name.encode() for name in json.loads(metadata["class_names"])] == \
        [name.encode() for name in sorted(UNICODE_NAMES)]


# --- T16: modes ---

def _cmyk_reference(cmyk: np.ndarray) -> np.ndarray:
    """CMYK -> RGB without a colour profile (what Pillow, browsers without a profile and ImageMagick do)."""
    ink = cmyk.astype(np.float64) / 255
    return ((1 - ink[..., :3]) * (1 - ink[..., 3:]) * 255).transpose(2, 0, 1)


def _ycck_jpeg(cmyk: np.ndarray) -> bytes:
    """A YCCK JPEG (Adobe transform 2, as Photoshop writes CMYK) of `cmyk`. Pillow writes CMYK (transform 0)
    only, inverted as Adobe stores it: so write the YCC of the inverted inks, then mark the file YCCK."""
    ycc = np.asarray(Image.fromarray(cmyk[..., :3], "RGB").convert("YCbCr"))
    components = np.concatenate([ycc, 255 - cmyk[..., 3:]], axis=-1)
    out = io.BytesIO()
    Image.fromarray((255 - components).astype(np.uint8), "CMYK").save(out, "JPEG", quality=100, subsampling=0)
    data = bytearray(out.getvalue())
    adobe = data.find(b"\xff\xee")  # APP14: marker, length, "Adobe", version, flags0, flags1, transform
    assert data[adobe + 4:adobe + 9] == b"Adobe" and data[adobe + 15] == 0
    data[adobe + 15] = 2
    return bytes(data)


def _write_modes(folder: Path) -> dict[str, np.ndarray]:
    """One image per mode of the row, and the (3, 32, 32) picture a viewer shows of each."""
    folder.mkdir(parents=True)
    ramp = np.linspace(0, 1, 32)
    y, x = np.meshgrid(ramp, ramp, indexing="ij")
    cmyk = np.stack([x, y, 1 - x, x * y * 0.7], -1)
    cmyk = np.rint(cmyk * 255).astype(np.uint8)
    expected = {}
    Image.fromarray(cmyk, "CMYK").save(folder / "cmyk.jpg", quality=100, subsampling=0)
    Image.fromarray(cmyk, "CMYK").save(folder / "cmyk.tif")
    (folder / "ycck.jpg").write_bytes(_ycck_jpeg(cmyk))
    expected.update({"cmyk.jpg": _cmyk_reference(cmyk), "cmyk.tif": _cmyk_reference(cmyk),
                     "ycck.jpg": _cmyk_reference(cmyk)})
    deep = np.rint(1000 + x * 59000).astype(np.uint16)  # 16-bit data above 255: a clipping converter sees white
    Image.fromarray(deep).save(folder / "deep16.png")
    expected["deep16.png"] = np.repeat((deep / 257.0)[None], 3, 0)
    rgb48 = np.stack([deep, deep[::-1], np.full_like(deep, 40000)], -1)
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in rgb48)
    (folder / "rgb48.png").write_bytes(_png(32, 32, 2, 16, rows))
    expected["rgb48.png"] = rgb48.transpose(2, 0, 1) / 257.0
    gray = np.rint(x * 255).astype(np.uint8)
    Image.fromarray(gray, "L").save(folder / "gray.png")
    expected["gray.png"] = np.repeat(gray[None], 3, 0).astype(float)
    Image.fromarray(np.stack([np.zeros_like(gray), np.full_like(gray, 102)], -1), "LA").save(folder / "la.png")
    expected["la.png"] = np.full((3, 32, 32), 255 * (1 - 102 / 255))  # black at 40% over white
    Image.fromarray(x > 0.5).save(folder / "bilevel.png")
    expected["bilevel.png"] = np.repeat(((x > 0.5) * 255.0)[None], 3, 0)
    palette = Image.fromarray((x * 2.99).astype(np.uint8), "P")
    palette.putpalette([255, 0, 0, 0, 0, 255, 0, 0, 0] + [0] * 759)
    palette.save(folder / "palette-trns.png", transparency=bytes([0, 128, 255]))  # clear, half, opaque
    index = (x * 2.99).astype(int)
    half = 255 * (1 - 128 / 255)  # blue at alpha 128 over white
    colours = np.array([[255.0, 255.0, 255.0], [half, half, 255.0], [0.0, 0.0, 0.0]])
    expected["palette-trns.png"] = colours[index].transpose(2, 0, 1)
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, np.rint(y * 255).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    alpha = np.rint(y * 255) / 255
    expected["rgba.png"] = np.stack([np.full((32, 32), 255.0), 255 * (1 - alpha), 255 * (1 - alpha)])
    frames = [Image.new("RGB", (32, 32), colour) for colour in ((250, 0, 0), (0, 250, 0), (0, 0, 250))]
    for name in ("frames.gif", "frames.tif"):
        frames[0].save(folder / name, save_all=True, append_images=frames[1:])
        expected[name] = np.array([250.0, 0, 0])[:, None, None] * np.ones((3, 32, 32))  # the first frame
    return expected


def test_t16_every_mode_becomes_three_channels_as_a_viewer_shows_it_without_warnings(tmp_path):
    expected = _write_modes(tmp_path / "data" / "modes")
    _classes(tmp_path / "data", {"plain": 2})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bundle = build_dataset(DataConfig(source=str(tmp_path / "data"), img_size=32), 0, 32, whole=True)
    # (a ResourceWarning can come from any earlier test's garbage, collected meanwhile)
    assert [str(w.message) for w in caught if not issubclass(w.category, ResourceWarning)] == []
    assert bundle.skipped == [] and bundle.channels == 3
    assert Image.open(tmp_path / "data" / "modes" / "ycck.jpg").info["adobe_transform"] == 2
    assert Image.open(tmp_path / "data" / "modes" / "deep16.png").mode.startswith("I")
    assert Image.open(tmp_path / "data" / "modes" / "deep16.png").convert("L").getextrema() == (255, 255)
    split = bundle.splits["all"]
    lossy = {"cmyk.jpg", "ycck.jpg"}  # JPEG at quality 100: (mean, largest) error; else rounding only
    for name, picture in expected.items():
        decoded = split.images[split.paths.index(str(tmp_path / "data" / "modes" / name))].numpy()
        assert decoded.shape == (3, 32, 32) and decoded.dtype == np.uint8
        error = np.abs(decoded.astype(float) - picture)
        mean_limit, max_limit = (1.5, 6) if name in lossy else (0.5, 1)
        assert error.mean() <= mean_limit and error.max() <= max_limit, (name, error.mean(), error.max())
    deep = split.images[split.paths.index(str(tmp_path / "data" / "modes" / "deep16.png"))].numpy()
    assert deep.min() < 10 and deep.max() > 225  # the whole range, not white


# --- T17: EXIF orientation ---

# The picture shown for each orientation tag (EXIF 2.32, tag 0x0112), of an image stored as `a` (rows, columns).
SHOWN = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
         5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1), 7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
         8: lambda a: np.rot90(a, 1)}


def _oriented(folder: Path, photo: np.ndarray, extension: str, **options) -> list[tuple[Path, Path]]:
    """For each tag 2-8: the photo stored with that tag, and a copy already turned as it is shown, without one."""
    pairs = []
    for tag, shown in SHOWN.items():
        image = Image.fromarray(photo)
        exif = image.getexif()
        exif[0x0112] = tag
        tagged, turned = folder / "tagged" / f"{tag}.{extension}", folder / "turned" / f"{tag}.{extension}"
        for path in (tagged, turned):
            path.parent.mkdir(parents=True, exist_ok=True)
        image.save(tagged, exif=exif, **options)
        Image.fromarray(np.ascontiguousarray(shown(photo))).save(turned, **options)
        pairs.append((tagged, turned))
    return pairs


@pytest.fixture(scope="module")
def chelsea_crop() -> np.ndarray:
    from skimage import data

    return data.chelsea()[40:88, 100:180]  # 48 x 80: turning it changes the picture


@pytest.mark.parametrize("extension, options, tolerance",
                         [("png", {}, 0), ("jpg", {"quality": 100, "subsampling": 0}, 3)])
def test_t17_each_orientation_decodes_as_the_turned_copy_in_train_eval_and_predict(tmp_path, chelsea_crop,
                                                                                   extension, options, tolerance):
    pairs = _oriented(tmp_path / "data", chelsea_crop, extension, **options)
    config = DataConfig(source=str(tmp_path / "data"), img_size=24)
    trained = build_dataset(config, 0, 24, whole=True).splits["all"]  # as `imgcls train` reads it
    evaluated = build_dataset(config, 0, 24, class_names=["tagged", "turned"], channels=3,
                              whole=True).splits["all"]  # as `imgcls eval` reads it: the model's classes
    predicted, _, errors = decode_files([path for pair in pairs for path in pair], 24, 3)  # as `imgcls predict`
    assert errors == {}
    stored = decode_files([pairs[0][0]], 24, 3)[0][0]
    for number, (tagged, turned) in enumerate(pairs):
        rows = [trained.paths.index(str(tagged)), trained.paths.index(str(turned))]
        train_pair = trained.images[rows].numpy().astype(int)
        assert np.array_equal(evaluated.images[rows].numpy(), train_pair)
        assert np.array_equal(predicted[2 * number:2 * number + 2], train_pair)
        assert np.abs(train_pair[0] - train_pair[1]).max() <= tolerance, tagged.name
    turned_wrong = np.abs(predicted[2 * 2].astype(int) - stored.astype(int)).mean()  # tag 4 read without its tag
    assert turned_wrong > 20


def test_t17_the_prediction_for_a_tagged_file_is_the_turned_copy_s(salted, tmp_path, chelsea_crop):
    pairs = _oriented(tmp_path, chelsea_crop, "png")
    answers = imgcls.predict(salted["run"], [path for pair in pairs for path in pair], topk=3)
    for tagged, turned in zip(answers[::2], answers[1::2]):
        assert tagged["predictions"] == turned["predictions"], tagged["path"]


# --- T18: a decompression bomb; tiny and thin images ---

def test_t18_a_bomb_is_skipped_in_training_before_it_is_decoded(salted):
    assert "DecompressionBombError" in _skipped(salted["run"])[str(salted["files"]["bomb"])]
    assert salted["files"]["bomb"].stat().st_size < 10_000
    # the same decoder in a process whose memory is capped at 400 MB: the bomb would need 900 MB
    code = ("import resource, sys, time\n"
            "resource.setrlimit(resource.RLIMIT_AS, (400 << 20, 400 << 20))\n"
            "from imgcls.data.images import DECODE_ERRORS, decode_image\n"
            "started = time.perf_counter()\n"
            "try:\n    decode_image(sys.argv[1], 16, 3)\nexcept DECODE_ERRORS as error:\n"
            "    print(type(error).__name__, round(time.perf_counter() - started, 3))\n")
    result = subprocess.run([sys.executable, "-c", code, str(salted["files"]["bomb"])], capture_output=True,
                            text=True, timeout=60)
    name, seconds = result.stdout.split()
    assert name == "DecompressionBombError" and float(seconds) < 1.0, result.stderr


def test_t18_tiny_and_thin_images_are_resized_not_skipped(salted):
    files = salted["files"]
    assert not {str(files[kind]) for kind in ("one_pixel", "five", "strip", "column")} & set(_skipped(salted["run"]))
    images, _, errors = decode_files([files[kind] for kind in ("one_pixel", "five", "strip", "column")], 16, 3)
    assert errors == {} and images.shape == (4, 3, 16, 16)
    one_pixel, five, strip, column = images.astype(int)
    assert (one_pixel == np.array([200, 30, 90])[:, None, None]).all()  # one colour, everywhere
    diagonal = five[0]  # the 5 x 5 identity, grown: bright along the diagonal, black in the far corners
    assert np.diag(diagonal).min() > 100 and diagonal[0, -1] == diagonal[-1, 0] == 0
    assert np.abs(diagonal - diagonal.T).max() <= 1 and (five[0] == five[1]).all()
    assert abs(strip[1].mean() - 127.5) < 2 and np.ptp(strip[1]) <= 1  # the strip's centre pixel, everywhere
    assert (np.abs(column - np.array([10, 20, 250])[:, None, None]) <= 1).all()


# --- T19: the dataset is never changed ---

@pytest.mark.slow
def test_t19_dataset_bytes_unchanged_after_scan_train_eval_and_predict(salted, tmp_path):
    root, run = salted["root"], salted["run"]
    imgcls.check_data(str(root), quiet=True, out=str(tmp_path / "check"))
    imgcls.evaluate(run, str(root))
    imgcls.predict(run, [root])
    assert _digests(root) == salted["before"]  # every file's bytes, and no file added or removed
