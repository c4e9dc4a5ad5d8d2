"""The training augmentations (bench.data.augment), the plateau schedule, restoring the best weights, and the
one-line errors of `rbench train` for them."""

from __future__ import annotations

import pytest
import torch

from bench.data import load_dataset, parse_augment
from bench.data.augment import augment_batch
from bench.errors import UsageProblem
from bench.train.loop import TrainConfig, load_training_checkpoint, make_scheduler, train_model


def _images(n: int = 16, size: int = 8) -> torch.Tensor:
    return torch.randint(1, 255, (n, 1, size, size), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)


def test_parse_augment_writes_amounts_out_and_refuses_unknown_names():
    assert parse_augment("rotate,translate:0.125,flip, none,flip") == ("rotate:15", "translate:0.125", "flip")
    assert parse_augment(["scale", "rotate90", "vflip"]) == ("scale:0.1", "rotate90", "vflip")
    for bad, message in (("spin", "unknown augmentation 'spin'"), ("rotate:x", "must be a number"),
                         ("flip:2", "takes no amount"), ("scale:1.5", "(0, 1)"), ("rotate:0", "(0, 180]"),
                         ("rotate:10,rotate:20", "given twice")):
        with pytest.raises(UsageProblem, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
            parse_augment(bad)


def test_right_angle_rotations_and_vertical_flips_are_exact_and_seeded():
    x = _images()
    out = augment_batch(x, ("rotate90",), torch.Generator().manual_seed(0))
    turns = []
    for a, b in zip(x, out):
        matches = [k for k in range(4) if torch.equal(torch.rot90(a, k, (-2, -1)), b)]
        assert matches, "every image is its input turned by a multiple of 90 degrees"
        turns.append(matches[0])
    assert len(set(turns)) > 1
    assert torch.equal(out, augment_batch(x, ("rotate90",), torch.Generator().manual_seed(0)))
    flipped = augment_batch(x, ("vflip",), torch.Generator().manual_seed(0))
    kinds = {0 if torch.equal(a, b) else 1 if torch.equal(a.flip(-2), b) else 2 for a, b in zip(x, flipped)}
    assert kinds == {0, 1}


def _shifted(image: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """`image` moved right by dx and down by dy, zeros where nothing moves in."""
    out = torch.zeros_like(image)
    h, w = image.shape[-2:]
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        image[..., max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def test_translate_is_a_whole_pixel_shift_within_its_limit():
    x = _images()
    out = augment_batch(x, parse_augment("translate:0.25"), torch.Generator().manual_seed(3))
    shifts = set()
    for a, b in zip(x, out):
        found = [(dx, dy) for dx in range(-2, 3) for dy in range(-2, 3) if torch.equal(_shifted(a, dx, dy), b)]
        assert found, "each image is its input shifted by at most 25% of 8 px"
        shifts.add(found[0])
    assert len(shifts) > 1


def test_rotate_and_scale_keep_shape_and_dtype_and_follow_the_seed():
    x = _images()
    names = parse_augment("rotate:30,scale:0.2,crop,flip")
    a = augment_batch(x, names, torch.Generator().manual_seed(5))
    assert a.shape == x.shape and a.dtype == torch.uint8
    assert torch.equal(a, augment_batch(x, names, torch.Generator().manual_seed(5)))
    assert not torch.equal(a, augment_batch(x, names, torch.Generator().manual_seed(6)))


def test_plateau_factor_and_patience_drop_the_rate():
    model = torch.nn.Linear(2, 2)
    config = TrainConfig(epochs=10, optimizer="sgd", lr=0.5, schedule="plateau", gamma=0.2, plateau_patience=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    scheduler, per_batch = make_scheduler(optimizer, config, steps_per_epoch=1)
    assert not per_batch
    for _ in range(2):  # the best so far, then one epoch without improvement: within patience
        scheduler.step(0.5)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5)
    scheduler.step(0.5)  # the second epoch without improvement: more than patience 1
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)


def test_useless_patience_is_advice_not_an_error():
    config = TrainConfig(epochs=3, schedule="plateau", plateau_patience=3, early_stop=5)
    advice = config.advice()
    assert len(advice) == 2 and "never drop" in advice[0] and "never stop early" in advice[1]
    assert TrainConfig(epochs=10, schedule="plateau", plateau_patience=3).advice() == []
    for bad in (dict(gamma=1.5), dict(plateau_patience=-1)):
        with pytest.raises(UsageProblem):
            TrainConfig(**bad)


@pytest.mark.parametrize("restore_best", [True, False])
def test_the_model_ends_with_the_weights_the_config_names(tmp_path, restore_best):
    import nets

    bundle = load_dataset("digits", subset=200, input_size=8)
    model = nets.create_model("resnet20", num_classes=bundle.num_classes, in_chans=1)
    # A rate that makes later epochs worse is not needed: whichever epoch is best, compare with the files.
    config = TrainConfig(epochs=3, batch_size=32, optimizer="adam", lr=0.05, restore_best=restore_best,
                         max_batches=2)
    result = train_model(model, bundle, config, tmp_path, progress=False)
    expected = load_training_checkpoint(result.best_checkpoint if restore_best else result.last_checkpoint)
    for key, value in model.state_dict().items():
        assert torch.equal(value, expected["state_dict"][key]), key
    assert result.config["restore_best"] is restore_best


def _one_line_error(code: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("rbench: error:"), err
    return lines[0]


@pytest.mark.parametrize("args, message", [
    (("--augment", "crop,spin"), "unknown augmentation 'spin'"),
    (("--drop-rate", "1.0"), "--drop-rate must be in [0, 1)"),
    (("--drop-rate", "-0.1"), "--drop-rate must be in [0, 1)"),
    (("--plateau-patience", "2"), "add --schedule plateau"),
    (("--schedule", "plateau", "--plateau-factor", "1.5"), "decay factor must be in (0, 1)"),
])
def test_bad_training_knobs_are_one_line(run_cli, tmp_path, args, message):
    code, _, err = run_cli("train", "resnet20", "--dataset", "digits", "--subset", "100", "--input-size", "8",
                           "--out", tmp_path / "run", "--results", tmp_path / "results", "-q", *args)
    assert message in _one_line_error(code, err)
    assert not (tmp_path / "run").exists()


def test_drop_rate_on_a_net_without_it_is_one_line(run_cli, tmp_path):
    code, _, err = run_cli("train", "vgg11", "--dataset", "digits", "--subset", "100", "--input-size", "8",
                           "--drop-rate", "0.5", "--out", tmp_path / "run", "--results", tmp_path / "results", "-q")
    assert "does not take that setting" in _one_line_error(code, err)


def test_train_with_the_new_knobs_records_them(run_cli, tmp_path):
    from bench.records.io import read_records

    code, _, err = run_cli("train", "resnet20", "--dataset", "digits", "--subset", "200", "--input-size", "8",
                           "--epochs", "2", "--batch-size", "64", "--optimizer", "adam",
                           "--augment", "rotate:20,translate,scale,vflip,rotate90", "--drop-rate", "0.3",
                           "--schedule", "plateau", "--plateau-factor", "0.2", "--plateau-patience", "2",
                           "--keep-last", "--out", tmp_path / "run", "--results", tmp_path / "results", "-q")
    assert code == 0, err
    assert "rbench: warning: plateau patience 2 >= 2 epoch(s)" in err
    (record,) = read_records(tmp_path / "results" / "train.jsonl")
    assert record["model_config"]["drop_rate"] == 0.3
    config = record["train_config"]
    assert config["augment"] == ["rotate:20", "translate:0.1", "scale:0.1", "vflip", "rotate90"]
    assert (config["gamma"], config["plateau_patience"], config["restore_best"]) == (0.2, 2, False)
