"""Image folders built to mislead: symbolic-link loops, links to another class, empty classes, oversized images.

Each is refused (or skipped, when asked) with one line that names the file or folder at fault.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from bench.data import EvalBatches, load_eval_folder, scan_eval_folder
from bench.data.imagefolder import _scan_tree
from bench.errors import DataProblem

CLASSES = ("a", "b", "c")


def _images(folder: Path, count: int = 2, size: int = 8) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(folder)))
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def _tree(root: Path, splits=("val",), classes=CLASSES) -> Path:
    for split in splits:
        for cls in classes:
            _images(root / split / cls)
    return root


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- symbolic links


def test_a_link_back_up_the_tree_is_refused_not_followed(tmp_path):
    root = _tree(tmp_path / "data")
    os.symlink("..", root / "val" / "a" / "loop")  # val/a/loop -> val: every class again, labelled a
    with pytest.raises(DataProblem) as info:
        scan_eval_folder(root)
    message = _one_line(info)
    assert str(root / "val" / "a" / "loop") in message and "loop" in message


def test_a_link_to_another_class_is_refused(tmp_path):
    root = _tree(tmp_path / "data")
    os.symlink(root / "val" / "c", root / "val" / "a" / "more")  # c's images counted again, as a
    with pytest.raises(DataProblem) as info:
        scan_eval_folder(root)
    message = _one_line(info)
    assert str(root / "val" / "a" / "more") in message and "twice" in message


def test_the_training_loader_walks_the_same_way(tmp_path):
    root = _tree(tmp_path / "data", splits=("train", "val"))
    os.symlink("..", root / "train" / "b" / "loop")
    with pytest.raises(DataProblem, match="loop"):
        _scan_tree(root)


def test_links_that_lead_out_of_the_tree_are_followed(tmp_path):
    """An ImageNet subset is often a tree of links to the full copy: those stay readable."""
    store = tmp_path / "store"
    _images(store / "b", count=3)
    _images(store / "extra", count=1)
    root = _tree(tmp_path / "data", classes=("a", "c"))
    os.symlink(store / "b", root / "val" / "b")
    os.symlink(store / "extra", root / "val" / "a" / "extra")
    os.symlink(store / "b" / "0.png", root / "val" / "c" / "linked.png")
    scan = scan_eval_folder(root)
    assert scan["classes"] == ["a", "b", "c"]
    counts = np.bincount([label for _, label in scan["test"]])
    assert counts.tolist() == [3, 3, 3]


# --------------------------------------------------------------------------- empty class folders


def test_an_empty_class_folder_is_named(tmp_path):
    root = _tree(tmp_path / "data")
    (root / "val" / "b2").mkdir()
    (root / "val" / "b2" / "notes.txt").write_text("no images here")
    with pytest.raises(DataProblem) as info:
        scan_eval_folder(root)
    message = _one_line(info)
    assert str(root / "val" / "b2") in message and "no images" in message


def test_an_empty_class_folder_is_fine_when_a_class_index_lists_it(tmp_path):
    """With a class index the labels come from the index: a class without test images shifts nothing."""
    import json

    root = _tree(tmp_path / "data")
    (root / "val" / "b2").mkdir()
    index = tmp_path / "index.json"
    index.write_text(json.dumps(["a", "b", "b2", "c"]))
    scan = scan_eval_folder(root, index)
    assert scan["classes"] == ["a", "b", "b2", "c"] and len(scan["test"]) == 6


def test_an_empty_class_folder_in_a_training_tree_is_named(tmp_path):
    root = _tree(tmp_path / "data", splits=("train", "val"))
    (root / "train" / "d").mkdir()
    (root / "val" / "d").mkdir()
    with pytest.raises(DataProblem, match=str(root / "train" / "d")):
        _scan_tree(root)


# --------------------------------------------------------------------------- oversized images


def _png_claiming(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims `width` x `height` pixels (its pixel data is one empty block): a
    decompression bomb's header, without the memory one would take."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) +
                     chunk(b"IEND", b""))


@pytest.mark.parametrize("transform", [None, "imagenet:16:8"])
def test_a_huge_image_is_one_line_and_skippable(tmp_path, transform):
    from bench.data.transforms import parse_eval_transform

    root = _tree(tmp_path / "data")
    bomb = root / "val" / "b" / "huge.png"
    _png_claiming(bomb, 20000, 20000)
    with pytest.raises(DataProblem) as info:  # at loading (statistics of a sample) or at evaluating
        bundle = load_eval_folder(root, transform=parse_eval_transform(transform), input_size=None if transform else 8)
        list(EvalBatches(bundle.test, 4, bundle.mean, bundle.std))
    message = _one_line(info)
    assert str(bomb) in message and "pixels" in message and "--skip-bad-images" in message
    skipping = load_eval_folder(root, transform=parse_eval_transform(transform), input_size=None if transform else 8,
                                skip_bad_images=True)
    batches = EvalBatches(skipping.test, 4, skipping.mean, skipping.std)
    assert sum(len(y) for _, y in batches) == 6 and batches.skipped == [str(bomb)]


def test_a_huge_image_in_a_training_tree_is_one_line(tmp_path):
    from bench.data.imagefolder import FolderImages

    _images(tmp_path / "a")
    bomb = tmp_path / "a" / "huge.png"
    _png_claiming(bomb, 20000, 20000)
    with pytest.raises(DataProblem, match="huge.png"):
        FolderImages([(str(bomb), 0)], 8)[0]
