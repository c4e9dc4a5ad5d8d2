"""Walking an image tree `SPLIT/<class>/.../<image>`: every folder rbench reads images from is walked here.

    >>> classes, samples = scan_classes(Path("imagenet/val"))   # sorted class folders, (path, label) pairs

Symbolic links are followed, as torchvision's ImageFolder follows them (an ImageNet subset is often
a tree of links into the full copy), but each real folder is read once: a link to a folder the walk
is inside (`val/a/loop -> ..`, a loop) or has read or will read as part of the tree (`val/a/more ->
../c`) is refused, because following it would count the same images again under a class that is
not theirs. A class folder with no images is refused too, unless the caller's labels do not come
from the folder names: it would still take a label and shift the count of classes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from bench.errors import DataProblem

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


def class_folders(folder: Path) -> list[str]:
    """The class folder names in `folder`, sorted as torchvision sorts them; hidden folders are not classes."""
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


class _Walk:
    """One walk of a split: the real folders read so far (by real path) and the path each was read as."""

    def __init__(self, split: Path):
        self.read: dict[str, str] = {os.path.realpath(split): str(split)}
        self.split = split

    def enter(self, path: str) -> None:
        """Mark the folder `path` as read, or refuse it when its real folder is read already (a loop or a repeat)."""
        real = os.path.realpath(path)
        first = self.read.get(real)
        if first is None:
            self.read[real] = path
            return
        inside = path.startswith(first.rstrip(os.sep) + os.sep)
        if inside:
            raise DataProblem(f"{path} links back to {first}, a folder it is inside: a loop that would read the same "
                              f"images again and again; remove the link from {self.split}")
        link = path if os.path.islink(path) else first  # the later path is the link, unless a link read it first
        raise DataProblem(f"{path} and {first} are the same folder ({real}): its images would be counted twice, "
                          f"under two classes; remove the link {link}")

    def images(self, folder: Path) -> list[str]:
        """Every image file under `folder`, in sorted order, following links into folders not read before."""
        found = []
        self.enter(str(folder))
        for root, dirs, files in os.walk(folder, followlinks=True):
            dirs.sort()
            for name in dirs:
                self.enter(os.path.join(root, name))
            found += [os.path.join(root, name) for name in sorted(files) if name.lower().endswith(IMAGE_SUFFIXES)]
        return found


def scan_classes(split: Path, classes: Sequence[str] | None = None, index: Mapping[str, int] | None = None,
                 allow_empty: bool = False) -> tuple[list[str], list[tuple[str, int]]]:
    """(class folder names, [(image path, label)]) of the split folder `split`.

    `classes` are the folders to read (default: `class_folders(split)`); `index` maps a folder to its
    label (default: its position in `classes`). Raises DataProblem for a link that would read a folder
    twice, and for a class folder without images unless `allow_empty` (labels from a class index).
    """
    classes = class_folders(split) if classes is None else list(classes)
    index = {c: i for i, c in enumerate(classes)} if index is None else index
    walk = _Walk(split)
    samples: list[tuple[str, int]] = []
    empty = []
    for cls in classes:
        images = walk.images(split / cls)
        if not images:
            empty.append(str(split / cls))
        samples += [(path, index[cls]) for path in images]
    if empty and not allow_empty and len(empty) < len(classes):
        shown = ", ".join(empty[:3]) + (f" and {len(empty) - 3} more" if len(empty) > 3 else "")
        raise DataProblem(f"class folder(s) with no images ({', '.join(IMAGE_SUFFIXES)}): {shown}; a class folder "
                          "still takes a label, so the count of classes would be wrong: add images or remove the "
                          "folder (or give a class index that lists every class)")
    return classes, samples
