"""Study presets: how much data, training and timing one run spends (smoke < quick < full).

`quick` is sized so that `rbench suite` (every study) finishes in under 15 minutes on a 2-core
CPU; `smoke` runs end to end in seconds for CI; `standard` trains longer on more images, sized so
that the two training-recipe studies (recipe, optimizer) take about 45 minutes together on a 2-core
CPU; `full` is for a GPU.

The `ladder_*` fields size the precision-ladder study (`bench.scenarios.ladder.run_ladder` per net): its
test images, calibration images, timed runs and throughput batch. Its cost is timing and
evaluation only: its nets are the depth study's, trained once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.errors import UsageProblem


@dataclass(frozen=True)
class Preset:
    """One preset. Sizes are image counts; None means the whole split."""

    name: str
    train_size: int | None  # training images (a stratified subset of the train split)
    test_size: int | None  # test images used for every accuracy figure
    epochs: int
    batch_size: int
    lr: float | None  # None: the optimizer's default (bench.train.loop.DEFAULT_LR)
    optimizer: str  # adam for the short presets: it gets far in few steps; sgd (the papers') for full
    input_size: int  # images are resized to input_size x input_size
    warmup: int  # untimed latency iterations
    iters: int  # timed latency iterations (batch 1)
    throughput_batch: int
    throughput_iters: int
    depths: tuple[int, ...]  # CIFAR ResNet / plain depths of the depth study
    kernels: tuple[int, ...]  # K of the dynamic-conv ablation
    channel_subsets: tuple[str, ...]  # subsets the dynamic study evaluates
    subset_nets: tuple[str, ...]  # subsets that also get a net trained with matching in_chans
    dynamic_max_batches: int | None = None  # training batches per epoch in the dynamic study (None: all)
    dynamic_vgg: bool = True  # include the VGG-form pair in the dynamic study
    family_roles: tuple[str, ...] = ("template", "rrdb")  # zoo roles the family study adds to VGG and ResNets
    subset_test_size: int | None = None  # test images for each channel-subset figure (None: test_size)
    exporter: str = "auto"  # ONNX exporter: auto (dynamo, TorchScript fallback) or torchscript (faster)
    models: dict[str, str] = field(default_factory=dict)  # role -> model name (default: plans.ROLE_MODELS)
    model_kwargs: dict[str, dict] = field(default_factory=dict)  # role -> extra builder kwargs
    # The precision ladder: which nets (CIFAR ResNets trained as the depth study trains them) and its budget.
    ladder_models: tuple[str, ...] = ("resnet20", "resnet56")
    ladder_rungs: tuple[str, ...] | None = None  # 'engine:precision' rungs (None: every rung of bench.scenarios.ladder.RUNGS)
    ladder_test_limit: int | None = 1000  # test images each rung is evaluated on (stratified; None: all)
    ladder_calibration: int = 512  # int8 calibration images (from the training split)
    ladder_warmup: int = 5  # untimed runs per rung before its first timed round
    ladder_iters: int = 30  # timed runs per rung (batch 1, then again at the throughput batch)
    ladder_rounds: int = 5  # interleaved rounds (each visits every rung in a new random order)
    ladder_throughput_batch: int | None = 32  # batch of the images/s timing (None: skip it)
    # The training-recipe studies (accuracy only: torch top-1 on the test images, nothing timed). Each unit trains
    # `*_epochs` epochs of at most `*_max_batches` batches (None: the whole training split) per seed.
    recipe_rungs: int = 5  # how many rungs of the 001 ladder (plans.RECIPE_RUNGS) run, from the first
    recipe_test_size: int | None = None  # test images each recipe/optimizer unit is scored on (None: test_size)
    recipe_seeds: int = 2
    recipe_epochs: int = 10
    recipe_max_batches: int | None = None
    recipe_patience: tuple[int, int] = (10, 5)  # (early stopping, reduce-on-plateau) patience in epochs: the seed's
    sweeps: tuple[str, ...] = ("lr", "optimizer", "augment", "no_bn")  # the 004 sweeps that run (plans.SWEEPS)
    sweep_roles: tuple[str, ...] = ("sweep_vgg", "sweep_resnet")  # the nets every sweep trains
    sweep_seeds: int = 2
    sweep_epochs: int = 10
    sweep_max_batches: int | None = None
    # A second (third) training seed for the accuracy figures of the timed studies (depth, dynamic, activation,
    # family): every extra seed trains the unit again and scores it by torch top-1 only (`accuracy_only`: not
    # exported, not timed), and the report gives the mean and min-max over the seeds. The run's seed comes first.
    accuracy_seeds: int = 1  # seeds per unit (1: one training run, and the report says so)
    accuracy_seed_units: tuple[str, ...] | None = None  # 'study:label' units that get them (None: every unit)


ALL_SUBSETS = ("RGB", "RG", "GB", "R", "G", "B")
#: VGG's CIFAR head (global pool + one linear) instead of the 120M-parameter ImageNet head.
_SMALL_VGG = {"vgg": {"small_input": True}, "dy_vgg": {"small_input": True}, "sweep_vgg": {"small_input": True},
              "sweep_vgg_nobn": {"small_input": True}}
#: The small nets of the 004 sweeps on a CPU: VGG-11 (with and without BN) and ResNet-20 instead of VGG-19 and ResNet-50.
_CPU_SWEEP_NETS = {"sweep_vgg": "vgg11_bn", "sweep_vgg_nobn": "vgg11", "sweep_resnet": "resnet20"}

PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        name="smoke", train_size=256, test_size=128, epochs=1, batch_size=64, lr=None, optimizer="adam", input_size=16,
        warmup=2, iters=5, throughput_batch=8, throughput_iters=2,
        depths=(20,), kernels=(3, 4), channel_subsets=("RGB", "R"), subset_nets=("R",),
        dynamic_max_batches=1, dynamic_vgg=False, exporter="torchscript",
        models={"vgg": "vgg11_bn", "dy_vgg": "dy_vgg11", "resnet_deep": "resnet20", **_CPU_SWEEP_NETS},
        model_kwargs=_SMALL_VGG,
        # One net, three rungs, a handful of runs: the ladder's whole path in seconds.
        ladder_models=("resnet20",), ladder_rungs=("ort:fp32", "ort:int8"), ladder_test_limit=100,
        ladder_calibration=32, ladder_warmup=1, ladder_iters=4, ladder_rounds=2, ladder_throughput_batch=4,
        # Every rung, and the optimizer sweep on ResNet-20 plus the VGG without BN, one batch an epoch: both recipe
        # studies' whole path in seconds.
        recipe_rungs=5, recipe_seeds=2, recipe_epochs=2, recipe_max_batches=1, recipe_patience=(1, 1),
        sweeps=("optimizer", "no_bn"), sweep_roles=("sweep_resnet",), sweep_seeds=2, sweep_epochs=1,
        sweep_max_batches=1,
        # The seed spread's whole path on the cheapest pair the report compares (resnet20 vs plain20).
        accuracy_seeds=2, accuracy_seed_units=("depth:resnet20", "depth:plain20"),
    ),
    "quick": Preset(
        name="quick", train_size=3000, test_size=1000, epochs=3, batch_size=64, lr=None, optimizer="adam",
        input_size=28,
        warmup=20, iters=200, throughput_batch=32, throughput_iters=10,
        depths=(20, 56), kernels=(3, 4, 5, 6), channel_subsets=ALL_SUBSETS, subset_nets=("R",),
        # 15 of the 42 training batches an epoch: one more batch costs the 11 nets of the dynamic study about 11.7 s
        # over 3 epochs (64 images / each net's train img/s in results/suite-quick-amd-epyc-2c/records.jsonl, summed:
        # dy_vgg11 alone is nearly half), so 5 more than the 10 before add about 59 s to the 12.9-minute suite.
        dynamic_max_batches=15, subset_test_size=500, exporter="torchscript",
        models={"vgg": "vgg11_bn", "dy_vgg": "dy_vgg11", "resnet_deep": "resnet34", **_CPU_SWEEP_NETS},
        model_kwargs=_SMALL_VGG,
        # resnet20 and resnet56 on every rung: the preset's 1000 test images, 30 runs per rung in 5 rounds, images/s
        # at the preset's batch 32. Both ladders take about a minute on a quiet 2-core EPYC (resnet56 two thirds);
        # their nets are the depth study's, so the ladder trains nothing more.
        ladder_models=("resnet20", "resnet56"), ladder_test_limit=1000, ladder_calibration=512,
        ladder_warmup=5, ladder_iters=30, ladder_rounds=5, ladder_throughput_batch=32,
        # The recipe studies get what is left of the 15 minutes (about half a minute): the first two rungs of the 001
        # ladder and the 004 optimizer sweep on ResNet-20 only, two seeds, three batches of training. They show the
        # path works, not an answer: `--preset standard` is the size that separates the rungs.
        recipe_rungs=2, recipe_seeds=2, recipe_epochs=1, recipe_max_batches=3, recipe_patience=(1, 1),
        recipe_test_size=500,
        sweeps=("optimizer",), sweep_roles=("sweep_resnet",), sweep_seeds=2, sweep_epochs=1, sweep_max_batches=3,
        # A second seed only for the depth study's 20-layer pair: its residual-vs-plain accuracy gap is the finding the
        # report leans on most, and the pair fits what is left of the 15 minutes (about 45 s). Estimate: the pair's
        # whole units took 18.7 s and 14.9 s in results/suite-quick-amd-epyc-2c/run.json (unit_seconds), of which
        # training is the bulk; an accuracy-only unit skips FLOPs, export and the onnxruntime evaluation: resnet20's took
        # 0.82x its full unit back to back on the same 2-core EPYC (23.8 s vs 29.2 s, load average 1.5-2, measure_unit
        # on each), so the pair adds about 0.82 x (18.7 + 14.9) = 28 s. Every other timed net stays one training run,
        # and the report says so.
        accuracy_seeds=2, accuracy_seed_units=("depth:resnet20", "depth:plain20"),
    ),
    "standard": Preset(
        name="standard", train_size=5000, test_size=1000, epochs=6, batch_size=64, lr=None, optimizer="adam",
        input_size=28,
        warmup=20, iters=200, throughput_batch=32, throughput_iters=10,
        depths=(20, 56), kernels=(3, 4, 5, 6), channel_subsets=ALL_SUBSETS, subset_nets=("R",),
        dynamic_max_batches=20, subset_test_size=1000, exporter="torchscript",
        models={"vgg": "vgg11_bn", "dy_vgg": "dy_vgg11", "resnet_deep": "resnet34", **_CPU_SWEEP_NETS},
        model_kwargs=_SMALL_VGG,
        ladder_models=("resnet20", "resnet56"), ladder_test_limit=1000, ladder_calibration=512,
        ladder_warmup=5, ladder_iters=30, ladder_rounds=5, ladder_throughput_batch=32,
        # At most about 45 minutes on a 2-core CPU for `rbench study recipe` and `rbench study optimizer` together
        # (estimated from each net's measured training speed and one timed unit, see the README): every rung and
        # every sweep, two seeds, 8 epochs of 20 batches (1280 of the 4500 training images, a new shuffle each
        # epoch). The seed's patience (10 early stopping, 5 plateau, over a much longer run) is scaled to 4 and 2
        # so that both can act in 8 epochs.
        recipe_rungs=5, recipe_seeds=2, recipe_epochs=8, recipe_max_batches=20, recipe_patience=(4, 2),
        sweeps=("lr", "optimizer", "augment", "no_bn"), sweep_seeds=2, sweep_epochs=8, sweep_max_batches=20,
        accuracy_seeds=2,  # every timed net trained twice: each accuracy figure of the timed studies gets a spread
    ),
    "full": Preset(
        name="full", train_size=None, test_size=None, epochs=30, batch_size=128, lr=0.1, optimizer="sgd", input_size=32,
        warmup=50, iters=300, throughput_batch=128, throughput_iters=20,
        depths=(20, 56, 110), kernels=(3, 4, 5, 6), channel_subsets=ALL_SUBSETS,
        subset_nets=("RG", "GB", "R", "G", "B"),
        family_roles=("template", "rrdb", "keras_resnet"),
        models={"vgg": "vgg19_bn", "dy_vgg": "dy_vgg19", "resnet_deep": "resnet34"},
        model_kwargs={**_SMALL_VGG, "sweep_resnet": {"small_input": True}},  # ResNet-50 with the CIFAR stem
        ladder_models=("resnet20", "resnet56"), ladder_test_limit=None, ladder_calibration=512,
        ladder_warmup=10, ladder_iters=100, ladder_rounds=10, ladder_throughput_batch=128,
        # The seed reports' nets (VGG-19 with and without BN, ResNet-50) and their 50 epochs; three seeds.
        recipe_rungs=5, recipe_seeds=3, recipe_epochs=50, recipe_patience=(10, 5),
        sweep_seeds=3, sweep_epochs=50,
        accuracy_seeds=3,  # every timed net trained three times
    ),
}


def get_preset(name: str) -> Preset:
    """The preset called `name`; an unknown name is a one-line usage error."""
    try:
        return PRESETS[name]
    except KeyError:
        raise UsageProblem(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
