"""What a folder dataset may train on, decided before any training: unreadable files are left out and listed
(`--strict`: an error naming them); a class folder without one readable image is an error naming it
(`--allow-empty`: the class is left out, the remaining classes keep their sorted order and the left-out folders
are listed beside the unreadable files, in the run's skipped.txt); a held-out split missing a class is said."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from imgcls.errors import ImgclsError

NAMED_FILES = 5  # unreadable files named in a --strict error; the rest are counted
LEFT_OUT_CLASS = "class folder left out by --allow-empty: no readable image"


def refuse_unreadable(source: str, skipped: list[tuple[str, str]]) -> ImgclsError:
    """--strict: the unreadable files, named (the first few) and counted, in one line."""
    named = "; ".join(f"{path} ({reason})" for path, reason in sorted(skipped)[:NAMED_FILES])
    more = f" and {len(skipped) - NAMED_FILES} more ('imgcls data check {source}' lists them all)" \
        if len(skipped) > NAMED_FILES else ""
    return ImgclsError(f"--strict: {len(skipped)} unreadable image(s) in {source}: {named}{more}; fix or remove "
                       f"them, or train without --strict to leave them out (listed in the run's skipped.txt)")


def classes_without_images(folders: list[Path], why: str) -> ImgclsError:
    """The error for class folders with nothing to learn from, naming them and both ways out."""
    return ImgclsError(f"class folder(s) {', '.join(str(folder) for folder in folders)} {why}; add readable images "
                       f"or remove the folder(s), or pass --allow-empty to train on the other classes")


def unreadable_only(folders: list[Path], skipped: list[tuple[str, str]]) -> ImgclsError:
    """The error for class folders whose every image is unreadable, quoting one reason."""
    inside = [(path, reason) for path, reason in sorted(skipped)
              if any(Path(path).is_relative_to(folder) for folder in folders)]
    example = f" (e.g. {inside[0][0]}: {inside[0][1]})" if inside else ""
    return classes_without_images(folders, f"have no readable training image, every file is unreadable{example}")


def left_out_warning(folders: list[Path], held_out_images: int) -> str:
    also = f", and their {held_out_images} held-out image(s)" if held_out_images else ""
    return (f"--allow-empty: left out class folder(s) {', '.join(str(folder) for folder in folders)} (no readable "
            f"image{also}); the other classes keep their sorted order (classes.json)")


def kept_labels(counts: list[int]) -> np.ndarray:
    """Old label -> new label, -1 for classes without an image: the remaining classes keep their order."""
    mapping = np.full(len(counts), -1, dtype=np.int64)
    kept = [label for label, count in enumerate(counts) if count]
    mapping[kept] = np.arange(len(kept))
    return mapping


def missing_classes(split: str, class_names: list[str], counts: list[int]) -> list[str]:
    """A warning when a held-out split has no image of some classes: its metrics say nothing about them."""
    missing = [name for name, count in zip(class_names, counts) if count == 0]
    if not missing:
        return []
    return [f"the {split} split has no images of class(es) {', '.join(missing)}: its metrics say nothing about "
            f"them; add {split} images of them (or raise --val-split / --test-split)"]
