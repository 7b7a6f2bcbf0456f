"""Splitting never creates leakage: groups (--group-by) and byte-identical copies stay in one split; copies a
pre-split folder has across its splits are reported, or left out of val/test with --dedupe."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgcls.config import DataConfig
from imgcls.data import build_dataset
from imgcls.data.split import grouped_stratified_split, stratified_split
from imgcls.errors import ImgclsError


def _patients(root: Path, groups: int = 200, seed: int = 0) -> dict[str, str]:
    """`groups` patients with 1-8 small scans each, in two class folders; {file path: patient}."""
    rng = np.random.default_rng(seed)
    patient_of = {}
    for patient in range(groups):
        label = "sick" if patient % 3 == 0 else "healthy"
        (root / label).mkdir(parents=True, exist_ok=True)
        for scan in range(int(rng.integers(1, 9))):
            path = root / label / f"patient{patient:03d}_scan{scan}.png"
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(path)
            patient_of[str(path)] = f"{patient:03d}"
    return patient_of


def _split_of(bundle) -> dict[str, str]:
    return {path: name for name, split in bundle.splits.items() for path in split.paths}


def test_with_group_by_no_patient_spans_two_splits(tmp_path):
    patient_of = _patients(tmp_path / "scans")
    config = DataConfig(source=str(tmp_path / "scans"), val_split=0.2, test_split=0.2, group_by=r"patient(\d+)_")
    bundle = build_dataset(config, seed=0, img_size=8)
    split_of = _split_of(bundle)
    assert len(split_of) == len(patient_of)
    splits_of_patient: dict[str, set[str]] = {}
    for path, split in split_of.items():
        splits_of_patient.setdefault(patient_of[path], set()).add(split)
    assert all(len(splits) == 1 for splits in splits_of_patient.values())
    sizes = {name: len(split) for name, split in bundle.splits.items()}
    assert 0.1 * len(patient_of) < sizes["test"] < 0.3 * len(patient_of)  # still roughly the asked shares
    for split in bundle.splits.values():  # and every class in every split
        assert set(split.labels.tolist()) == {0, 1}
    # without --group-by the same folder's patients do span splits: the test above can fail
    plain = _split_of(build_dataset(DataConfig(source=str(tmp_path / "scans"), val_split=0.2, test_split=0.2),
                                    seed=0, img_size=8))
    spans = {}
    for path, split in plain.items():
        spans.setdefault(patient_of[path], set()).add(split)
    assert any(len(splits) > 1 for splits in spans.values())


def test_group_by_a_csv_table_and_its_errors(tmp_path):
    patient_of = _patients(tmp_path / "scans", groups=60)
    table = tmp_path / "groups.csv"
    table.write_text("file,group\n" + "".join(f"{Path(p).name},{g}\n" for p, g in patient_of.items()))
    bundle = build_dataset(DataConfig(source=str(tmp_path / "scans"), val_split=0.3, group_by=str(table)), 0, 8)
    split_of = _split_of(bundle)
    where: dict[str, set[str]] = {}
    for path, split in split_of.items():
        where.setdefault(patient_of[path], set()).add(split)
    assert all(len(splits) == 1 for splits in where.values())
    with pytest.raises(ImgclsError, match="not a regular expression"):
        build_dataset(DataConfig(source=str(tmp_path / "scans"), group_by="patient(("), 0, 8)
    with pytest.raises(ImgclsError, match="gives no file a group"):
        build_dataset(DataConfig(source=str(tmp_path / "scans"), group_by="nobody_(\\d+)"), 0, 8)


def test_the_automatic_split_keeps_exact_copies_together(tmp_path):
    root = tmp_path / "photos"
    rng = np.random.default_rng(1)
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for index in range(40):
            path = root / label / f"{index}.png"
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)
            for copy in range(index % 3):  # 0, 1 or 2 renamed copies of many files
                shutil.copyfile(path, root / label / f"{index}_copy{copy}.png")
    bundle = build_dataset(DataConfig(source=str(root), val_split=0.25, test_split=0.25), seed=0, img_size=8)
    split_of = _split_of(bundle)
    original = {path: str(Path(path).with_name(Path(path).name.split("_copy")[0].removesuffix(".png") + ".png"))
                for path in split_of}
    assert all(split_of[path] == split_of[original[path]] for path in split_of)
    assert len(split_of) == 2 * (40 + sum(i % 3 for i in range(40)))


def test_a_pre_split_folder_with_copies_warns_and_dedupe_drops_them(tmp_path):
    root = tmp_path / "data"
    rng = np.random.default_rng(2)
    for split in ("train", "test"):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True)
            for index in range(10):
                pixels = rng.integers(0, 256, (8, 8), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / label / f"{index}.png")
    shutil.copyfile(root / "train" / "a" / "3.png", root / "test" / "a" / "leaked.png")
    shutil.copyfile(root / "train" / "b" / "4.png", root / "test" / "b" / "also_leaked.png")
    kept = build_dataset(DataConfig(source=str(root)), seed=0, img_size=8)
    assert any("2 file(s) in val/test are byte-identical" in w and "--dedupe" in w for w in kept.warnings)
    assert len(kept.splits["test"]) == 22 and kept.dropped_copies == []
    deduped = build_dataset(DataConfig(source=str(root), dedupe=True), seed=0, img_size=8)
    assert len(deduped.splits["test"]) == 20
    assert sorted(Path(path).name for path, _ in deduped.dropped_copies) == ["also_leaked.png", "leaked.png"]
    assert (root / "test" / "a" / "leaked.png").is_file()  # nothing the user owns is deleted


def test_grouped_split_without_groups_is_the_stratified_split():
    labels = np.repeat([0, 1, 2], [60, 30, 10])
    grouped = grouped_stratified_split(labels, np.arange(len(labels)), [0.2, 0.1], seed=5)
    plain = stratified_split(labels, [0.2, 0.1], seed=5)
    assert all((a == b).all() for a, b in zip(grouped, plain))


def test_the_balanced_sampler_draws_every_class_about_equally():
    import torch

    from imgcls.data.loader import FeatureDataset, make_loader

    labels = torch.tensor([0] * 900 + [1] * 90 + [2] * 10)
    dataset = FeatureDataset(torch.zeros(len(labels), 1), labels)
    loader = make_loader(dataset, 100, shuffle=True, workers=0, seed=0, balanced=True)
    drawn = torch.cat([batch_labels for _, batch_labels in loader])
    assert len(drawn) == len(labels)
    shares = torch.bincount(drawn, minlength=3).float() / len(drawn)
    assert ((shares - 1 / 3).abs() < 0.06).all()
    plain = torch.cat([batch_labels for _, batch_labels in make_loader(dataset, 100, True, 0, 0)])
    assert torch.bincount(plain).tolist() == [900, 90, 10]


def test_a_pre_split_folder_whose_patients_span_splits_is_named_in_one_warning(tmp_path):
    root = tmp_path / "data"
    rng = np.random.default_rng(3)
    for split, patients in (("train", range(0, 6)), ("val", range(5, 8))):  # patient 5 in both
        for patient in patients:
            for label in ("a", "b"):
                (root / split / label).mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(
                    root / split / label / f"p{patient}_{label}.png")
    bundle = build_dataset(DataConfig(source=str(root), group_by=r"p(\d+)_"), seed=0, img_size=8)
    spanning = [w for w in bundle.warnings if "--group-by" in w]
    assert len(spanning) == 1 and "1 group(s)" in spanning[0] and "(5)" in spanning[0]
