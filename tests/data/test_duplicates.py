"""Duplicates and leakage: exact copies whatever the file name or lossless format, near copies (re-encoded,
resized, cropped, brightened, mirrored) found with each pair's own score, flat images flagged but never
paired; recall per kind of copy and precision measured on real Fashion-MNIST images salted with planted
copies across splits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import imgcls
from benchmarks.planted_copies import KINDS, plant_copies
from imgcls.data.builtin import load_builtin
from imgcls.data.perceptual_hash import close_pairs, phash

# What the issue asks of each kind of copy (recall among planted pairs), at >= 99 % precision.
RECALL_TARGET = {"exact": 1.0, "renamed": 1.0, "png_to_bmp": 1.0, "jpeg_q60": 0.95, "resize": 0.95, "crop": 0.90,
                 "brightness": 0.90, "hflip": 0.90}


def test_phash_bits_are_imagehashs():
    imagehash = pytest.importorskip("imagehash")
    rng = np.random.default_rng(0)
    thumbs = rng.integers(0, 256, (40, 32, 32), dtype=np.uint8)
    thumbs[:20] = np.clip(thumbs[:20] // 4 + np.linspace(0, 180, 32, dtype=np.uint8)[None, None, :], 0, 255)
    hashes, mirrored = phash(thumbs)
    for thumb, ours, ours_mirrored in zip(thumbs, hashes, mirrored):
        assert int(str(imagehash.phash(Image.fromarray(thumb))), 16) == int(ours)
        assert int(str(imagehash.phash(Image.fromarray(thumb[:, ::-1].copy()))), 16) == int(ours_mirrored)


def test_close_hashes_are_found_without_comparing_all_pairs():
    rng = np.random.default_rng(1)
    hashes = rng.integers(0, 2**63, 500, dtype=np.uint64)
    near = hashes.copy()
    near[:50] ^= np.uint64(0b1011)  # 3 bits off
    both = np.concatenate([hashes, near[:50]])
    found = close_pairs(both, both ^ np.uint64(2**64 - 1), radius=4, eligible=np.ones(len(both), bool))
    assert {(i, 500 + i) for i in range(50)} <= set(found)
    assert all(not mirrored for mirrored in found.values())


def _photo_folder(root: Path) -> Path:
    from skimage import data

    (root / "a").mkdir(parents=True)
    (root / "b").mkdir(parents=True)
    chelsea = Image.fromarray(data.chelsea()).resize((96, 64))
    chelsea.save(root / "a" / "cat.png")
    chelsea.save(root / "b" / "same_pixels_other_format.bmp")  # exact, and a conflict: another label
    chelsea.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(root / "a" / "mirrored.png")
    Image.fromarray(data.astronaut()).resize((64, 64)).save(root / "a" / "astronaut.jpg")
    Image.fromarray(data.coffee()).resize((80, 60)).save(root / "b" / "coffee.png")
    Image.fromarray(data.rocket()).resize((60, 80)).save(root / "b" / "rocket.png")
    for name in ("gray1.png", "gray2.png"):  # flat images collide under every hash
        Image.new("L", (64, 64), 128).save(root / "b" / name)
    Image.fromarray(np.tile(np.linspace(0, 255, 300, dtype=np.uint8), (20, 1))).save(root / "a" / "banner.png")
    Image.fromarray(np.tile(np.linspace(0, 255, 6, dtype=np.uint8), (6, 1))).save(root / "a" / "tiny.png")
    turned = Image.Exif()
    turned[0x0112] = 6  # EXIF orientation: rotate 90 degrees to display
    Image.fromarray(data.camera()).resize((64, 48)).save(root / "b" / "camera.jpg", exif=turned)
    return root


def test_exact_copies_conflicts_flat_images_and_odd_shapes(tmp_path):
    root = _photo_folder(tmp_path / "photos")
    record = imgcls.check_data(str(root), out=tmp_path / "check", quiet=True)
    pairs = {(Path(p["first"]).name, Path(p["second"]).name): p for p in record["pairs"]}
    exact = pairs[("cat.png", "same_pixels_other_format.bmp")]
    assert exact["kind"] == "exact" and exact["similarity"] == 1.0 and exact["conflict"] and not exact["leak"]
    mirrored = pairs[("cat.png", "mirrored.png")]
    assert mirrored["kind"] == "near" and mirrored["mirrored"]
    assert not any("gray" in first or "gray" in second for first, second in pairs)  # flagged, never paired
    assert sorted(Path(p).name for p in record["near_constant"]) == ["gray1.png", "gray2.png"]
    assert [Path(p).name for p in record["extreme_aspect"]] == ["banner.png"]
    assert [Path(p).name for p in record["tiny"]] == ["tiny.png"]
    assert [Path(p).name for p in record["exif_rotated"]] == ["camera.jpg"]
    assert all(p["similarity"] >= record["near_duplicate_threshold"] for p in record["pairs"])
    saved = json.loads((tmp_path / "check" / "data_check.json").read_text())
    assert saved["summary"] == record["summary"] and saved["schema"] == 1
    page = (tmp_path / "check" / "data_check.html").read_text()
    assert "same_pixels_other_format.bmp" in page and page.count("data:image/png;base64,") >= 4
    assert sorted(p.name for p in (root / "b").iterdir()) == sorted(  # nothing the user owns moved
        ["same_pixels_other_format.bmp", "coffee.png", "rocket.png", "gray1.png", "gray2.png", "camera.jpg"])


def test_bad_options_are_one_line_errors(tmp_path):
    root = _photo_folder(tmp_path / "photos")
    with pytest.raises(imgcls.ImgclsError, match="outside"):
        imgcls.check_data(str(root), out=tmp_path / "check", threshold=1.5)
    with pytest.raises(imgcls.ImgclsError, match="--search"):
        imgcls.check_data(str(root), out=tmp_path / "check", search="everything")
    (tmp_path / "mine.json").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "data_check.json").write_text("my own notes")
    with pytest.raises(imgcls.ImgclsError, match="not written by imgcls"):
        imgcls.check_data(str(root), out=tmp_path / "notes")


@pytest.mark.slow
def test_planted_copies_across_splits_are_found_per_kind(tmp_path, fmnist_root):
    train_images, train_labels, class_names = load_builtin("fashion-mnist", fmnist_root, train=True)
    test_images, test_labels, _ = load_builtin("fashion-mnist", fmnist_root, train=False)
    rng = np.random.default_rng(7)
    a, b = rng.choice(len(train_images), 1500, replace=False), rng.choice(len(test_images), 500, replace=False)
    planted = plant_copies(tmp_path / "data", (train_images[a], train_labels[a]), (test_images[b], test_labels[b]),
                           class_names, per_kind=40, seed=7)
    record = imgcls.check_data(str(tmp_path / "data"), out=tmp_path / "check", quiet=True)
    reported = {frozenset((p["first"], p["second"])) for p in record["pairs"]}
    key = {frozenset((p.original, p.copy)): p.kind for p in planted}
    recall = {kind: np.mean([pair in reported for pair, k in key.items() if k == kind]) for kind in KINDS}
    false = [pair for pair in reported if pair not in key]  # untouched look-alikes, or a copy and a look-alike
    precision = 1 - len(false) / len(reported)
    print(f"recall per kind {recall}; precision {precision:.4f}; false pairs {len(false)}")
    assert precision >= 0.99
    for kind, target in RECALL_TARGET.items():
        assert recall[kind] >= target, (kind, recall[kind])
    assert all(p["leak"] for p in record["pairs"] if frozenset((p["first"], p["second"])) in key)


@pytest.mark.slow
def test_data_check_cli_with_a_run_ranks_label_errors(class_folders, tmp_path):
    from tests.helpers import cli, run_cli, user_error

    trained = cli("train", str(class_folders), "--model", "fastcnn", "--img-size", "32", "--epochs", "2",
                  "--class-weights", "auto", "--sampler", "balanced", "--runs-dir", str(tmp_path / "runs"),
                  "--name", "photos", "--no-report", "--workers", "0")
    assert trained.returncode == 0, trained.stderr
    plan = json.loads((tmp_path / "runs" / "photos" / "plan.json").read_text())
    assert plan["sampler"] == "balanced" and len(plan["class_weights"]) == 3
    result = run_cli("data", "check", str(class_folders), "--run", str(tmp_path / "runs" / "photos"),
                     "--out", str(tmp_path / "check"))
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "check" / "data_check.json").read_text())
    validation = sum(1 for _ in (tmp_path / "runs" / "photos").glob("predictions/val.npz"))
    assert validation == 1 and record["label_issues_checked"] == 15  # 20 % of 3 x 24 images held out
    assert all(issue["label"] != issue["suggested"] for issue in record["label_issues"])
    assert "data_check.html" in result.stdout
    page = (tmp_path / "check" / "data_check.html").read_text()
    assert "Likely label errors" in page
    wrong = run_cli("data", "check", str(class_folders), "--run", str(tmp_path / "nothing"))
    assert wrong.returncode == 2 and len(user_error(wrong).splitlines()) == 1
