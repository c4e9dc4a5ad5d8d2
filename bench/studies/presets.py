"""Study presets: how much data, training and timing one run spends (smoke < quick < full).

`quick` is sized so that `rbench suite` (every study) finishes in under 15 minutes on a 2-core
CPU; `smoke` runs end to end in seconds for CI; `standard` trains longer on more images, sized so
that the two training-recipe studies (recipe, optimizer) take about 45 minutes together on a 2-core
CPU; `full` is for a GPU.

The ladder study's budget (`LadderBudget`) sizes the precision-ladder study (`bench.scenarios.ladder.run_ladder` per net): its
test images, calibration images, timed runs and throughput batch. Its cost is timing and
evaluation only: its nets are the depth study's, trained once.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.errors import UsageProblem
from bench.studies.activation import ActivationBudget
from bench.studies.base import Preset
from bench.studies.depth import DepthBudget
from bench.studies.dynamic import DynamicBudget
from bench.studies.family import FamilyBudget
from bench.studies.ladder import LadderBudget
from bench.studies.optimizer import OptimizerBudget
from bench.studies.recipe import RecipeBudget
from bench.studies.serve import ServeBudget

__all__ = ["ALL_SUBSETS", "PRESETS", "Preset", "get_preset", "suite_studies"]


ALL_SUBSETS = ("RGB", "RG", "GB", "R", "G", "B")
#: VGG's CIFAR head (global pool + one linear) instead of the 120M-parameter ImageNet head.
_SMALL_VGG = {"vgg": {"small_input": True}, "dy_vgg": {"small_input": True}, "sweep_vgg": {"small_input": True},
              "sweep_vgg_nobn": {"small_input": True}}
#: The small nets of the optimizer sweeps on a CPU: VGG-11 (with and without BN) and ResNet-20 instead of VGG-19 and ResNet-50.
_CPU_SWEEP_NETS = {"sweep_vgg": "vgg11_bn", "sweep_vgg_nobn": "vgg11", "sweep_resnet": "resnet20"}

PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        name="smoke", train_size=256, test_size=128, epochs=1, batch_size=64, lr=None, optimizer="adam", input_size=16,
        timing="in-process", timing_extra_s=0.0,  # plumbing figures: no worker processes (Preset.timing)
        warmup=2, iters=5, throughput_batch=8, throughput_iters=2, exporter="torchscript",
        models={"vgg": "vgg11_bn", "dy_vgg": "dy_vgg11", "resnet_deep": "resnet20", **_CPU_SWEEP_NETS},
        model_kwargs=_SMALL_VGG,
        # The seed spread's whole path on the cheapest pair the report compares (resnet20 vs plain20).
        accuracy_seeds=2, accuracy_seed_units=("depth:resnet20", "depth:plain20"),
        studies={
            "depth": DepthBudget(depths=(20,)),
            "dynamic": DynamicBudget(kernels=(3, 4), channel_subsets=("RGB", "R"), subset_nets=("R",), max_batches=1,
                                     vgg=False),
            # One net, three rungs, a handful of runs: the ladder's whole path in seconds.
            "ladder": LadderBudget(models=("resnet20",), rungs=("ort:fp32", "ort:int8"), test_limit=100, calibration=32,
                                   warmup=1, iters=4, rounds=2, throughput_iters=2, throughput_batch=4),
            # Every rung, and the optimizer sweep on ResNet-20 plus the VGG without BN, one batch an epoch: both
            # recipe studies' whole path in seconds.
            "recipe": RecipeBudget(rungs=5, seeds=2, epochs=2, max_batches=1, patience=(1, 1)),
            "optimizer": OptimizerBudget(sweeps=("optimizer", "no_bn"), roles=("sweep_resnet",), seeds=2, epochs=1,
                                         max_batches=1),
            # One LoadGen Server run of half a second and 50 queries: the serve study's whole path in a second or two.
            "serve": ServeBudget(search_duration_s=0.5, search_steps=1, min_queries=50, samples=64),
        },
    ),
    "quick": Preset(
        name="quick", train_size=3000, test_size=1000, epochs=3, batch_size=64, lr=None, optimizer="adam",
        timing_extra_s=0.0,  # worker timing beyond the suite's 4 workers per entry (Preset.timing_extra_s)
        input_size=28,
        warmup=20, iters=200, throughput_batch=32, throughput_iters=10, subset_test_size=500, exporter="torchscript",
        models={"vgg": "vgg11_bn", "dy_vgg": "dy_vgg11", "resnet_deep": "resnet34", **_CPU_SWEEP_NETS},
        model_kwargs=_SMALL_VGG,
        recipe_test_size=500,
        # The training-recipe studies need epochs of full batches to train above chance (at the 3 batches a net that
        # fit what was left of the 15 minutes, every configuration stayed at chance): they run at standard.
        suite_leaves_out=(("recipe", "too little budget here to train above chance; `--preset standard` runs it"),
                          ("optimizer", "too little budget here to train above chance; `--preset standard` runs it")),
        # A second seed only for the depth study's 20-layer pair: its residual-vs-plain accuracy gap is the finding the
        # report leans on most, and the pair fits what is left of the 15 minutes (about 45 s). Estimate: the pair's
        # whole units took 18.7 s and 14.9 s in the EPYC quick run of 2026-11 (unit_seconds; git history of
        # results/suite-quick-amd-epyc-2c/run.json), of which
        # training is the bulk; an accuracy-only unit skips FLOPs, export and the onnxruntime evaluation: resnet20's took
        # 0.82x its full unit back to back on the same 2-core EPYC (23.8 s vs 29.2 s, load average 1.5-2, measure_unit
        # on each), so the pair adds about 0.82 x (18.7 + 14.9) = 28 s. Every other timed net stays one training run,
        # and the report says so.
        accuracy_seeds=2, accuracy_seed_units=("depth:resnet20", "depth:plain20"),
        studies={
            "depth": DepthBudget(depths=(20, 56)),
            # 15 of the 42 training batches an epoch for the ResNet-form nets, two kernel counts (K=2 and the default
            # K=4) and no VGG-form pair. With K=3 to 6 the quick suite took 15.7 minutes on the 2-core Intel Xeon VM
            # (939.2 s at b1ecb17; git history of results/suite-quick-intel-r-xeon-r-processor-2c/run.json), of which
            # K=5 and K=6 cost about a minute (an estimate): their units 18.2 s and 15.7 s, and in the dynamic phase
            # (120.9 s) 8 of its 36 timed entries and 4 of its 12 fixed-batch dynamo exports (6 to 9 s each, timed
            # alone there). K=2 in place of K=3 keeps a factor of two between the two counts; standard and full keep
            # K=3 to 6. On the 2-core EPYC the VGG pair's two units took 30 s and 124 s to prepare (dy_vgg11: 79 s of
            # training, then 38 s scoring 1000 test images on two engines and 500 on six channel subsets), and its
            # timing the largest share of the dynamic study's (dy_vgg11 is the slowest net at both batches, and its
            # fixed-batch ONNX graphs are exported again for each). The study's summary rows are the ResNet form's;
            # `rbench dynamic` still times the VGG pair, and standard and full train it.
            "dynamic": DynamicBudget(kernels=(2, 4), channel_subsets=ALL_SUBSETS, subset_nets=("R",),
                                     max_batches=15, vgg=False),
            # resnet20 on every rung: the preset's 1000 test images, 200 runs per rung at batch 1 as the other studies
            # time (30 gave rounds of 2 runs a worker, and every ratio was wider than hi/lo 1.15 on the Intel Xeon VM),
            # 30 at the preset's batch 32 for images/s. Its net is the depth study's, so the ladder trains nothing more.
            # With resnet56 as well, the quick suite took 15.5 minutes on the 2-core Intel Xeon VM (931.7 s at
            # 77b36e7), and resnet56's rungs 53.3 s of it in worker processes alone (the `worker_seconds` of its
            # records), to find what resnet20's found (openvino bf16 the fastest rung); standard and full keep it.
            "ladder": LadderBudget(models=("resnet20",), test_limit=1000, calibration=512, warmup=5,
                                   iters=200, rounds=10, throughput_iters=30, throughput_batch=32),
            # The recipe studies get what is left of the 15 minutes (about half a minute): the first two rungs of the
            # recipe ladder and the optimizer sweep on ResNet-20 only, two seeds, three batches of training. They
            # show the path works, not an answer: `--preset standard` is the size that separates the rungs.
            "recipe": RecipeBudget(rungs=2, seeds=2, epochs=1, max_batches=3, patience=(1, 1)),
            "optimizer": OptimizerBudget(sweeps=("optimizer",), roles=("sweep_resnet",), seeds=2, epochs=1,
                                         max_batches=3),
            # One Server peak search of the depth study's resnet20 on onnxruntime (trained once for both): at most 5
            # LoadGen runs of at least 3 s and 1000 queries, stopping when the INVALID step is within 25% of the
            # VALID one. About 25 s on a quiet 2-core EPYC (a few seconds of warm-up, then 5 steps of 3-4 s: resnet20
            # at 28x28 holds several hundred QPS, so 1000 queries take under 3 s near the peak), at most
            # 3 + 5 x 3 = 18 s plus the steps' overrun beyond 3 s: it took 13.0 s in the 810.1 s the quick suite
            # measured on the 2-core EPYC (results/suite-quick-amd-epyc-2c/run.json).
            "serve": ServeBudget(search_duration_s=3.0, search_steps=5, search_tolerance=0.25),
        },
    ),
    "standard": Preset(
        name="standard", train_size=5000, test_size=1000, epochs=6, batch_size=64, lr=None, optimizer="adam",
        input_size=28,
        warmup=20, iters=200, throughput_batch=32, throughput_iters=10, subset_test_size=1000, exporter="torchscript",
        # The optimizer study's VGG is the seed report's VGG-19 (with and without BN); its sweeps cost about
        # (VGG-19's MACs / VGG-11's) = 2.6x more VGG training than VGG-11's, not yet re-timed against the 45 minutes.
        models={"vgg": "vgg11_bn", "dy_vgg": "dy_vgg11", "resnet_deep": "resnet34", **_CPU_SWEEP_NETS,
                "sweep_vgg": "vgg19_bn", "sweep_vgg_nobn": "vgg19"},
        model_kwargs=_SMALL_VGG,
        accuracy_seeds=2,  # every timed net trained twice: each accuracy figure of the timed studies gets a spread
        studies={
            # The seed report's net for the activations: ResNet-50 with the CIFAR stem. It trains at about 3.8 s per
            # batch of 64 on 2 cores (45x ResNet-20), so 10 batches per epoch: 6 units (3 activations, 2 seeds) of
            # 60 batches, about 25 minutes of training on a 2-core CPU.
            "activation": ActivationBudget(model="resnet50", model_kwargs=(("small_input", True),), max_batches=10),
            "depth": DepthBudget(depths=(20, 56)),
            "dynamic": DynamicBudget(kernels=(3, 4, 5, 6), channel_subsets=ALL_SUBSETS, subset_nets=("R",),
                                     max_batches=20),
            "ladder": LadderBudget(models=("resnet20", "resnet56"), test_limit=1000, calibration=512, warmup=5,
                                   iters=30, rounds=5, throughput_batch=32),
            # At most about 45 minutes on a 2-core CPU for `rbench study recipe` and `rbench study optimizer` together
            # (estimated from each net's measured training speed and one timed unit, see the README): every rung and
            # every sweep, two seeds, 8 epochs of 20 batches (1280 of the 4500 training images, a new shuffle each
            # epoch). The seed's patience (10 early stopping, 5 plateau, over a much longer run) is scaled to 4 and 2
            # so that both can act in 8 epochs.
            "recipe": RecipeBudget(rungs=5, seeds=2, epochs=8, max_batches=20, patience=(4, 2)),
            "optimizer": OptimizerBudget(sweeps=("lr", "optimizer", "augment", "no_bn"), seeds=2, epochs=8,
                                         max_batches=20),
            # The seed report's VGG-19 with and without BN (its failure under Adam is the no_bn sweep's question)
            # for the VGG role; ResNet-20 stays the ResNet role: ResNet-50 on every sweep would not fit 45 minutes.
        },
    ),
    "full": Preset(
        name="full", train_size=None, test_size=None, epochs=30, batch_size=128, lr=0.1, optimizer="sgd", input_size=32,
        timing_extra_s=60.0,  # worker timing beyond the suite's 4 workers per entry (Preset.timing_extra_s)
        warmup=50, iters=300, throughput_batch=128, throughput_iters=20,
        models={"vgg": "vgg19_bn", "dy_vgg": "dy_vgg19", "resnet_deep": "resnet34"},
        model_kwargs={**_SMALL_VGG, "sweep_resnet": {"small_input": True}},  # ResNet-50 with the CIFAR stem
        accuracy_seeds=3,  # every timed net trained three times
        studies={
            "activation": ActivationBudget(model="resnet50", model_kwargs=(("small_input", True),)),
            "depth": DepthBudget(depths=(20, 56, 110)),
            "dynamic": DynamicBudget(kernels=(3, 4, 5, 6), channel_subsets=ALL_SUBSETS,
                                     subset_nets=("RG", "GB", "R", "G", "B")),
            "family": FamilyBudget(roles=("template", "rrdb", "keras_resnet")),
            "ladder": LadderBudget(models=("resnet20", "resnet56"), test_limit=None, calibration=512, warmup=10,
                                   iters=100, rounds=10, throughput_batch=128),
            # The seed reports' nets (VGG-19 with and without BN, ResNet-50) and their 50 epochs; three seeds.
            "recipe": RecipeBudget(rungs=5, seeds=3, epochs=50, patience=(10, 5)),
            "optimizer": OptimizerBudget(seeds=3, epochs=50),
        },
    ),
}


def get_preset(name: str) -> Preset:
    """The preset called `name`; an unknown name is a one-line usage error."""
    try:
        return PRESETS[name]
    except KeyError:
        raise UsageProblem(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


def suite_studies(preset_name: str, names: Sequence[str]) -> list[str]:
    """The studies of `names` that `rbench suite` runs at preset `preset_name`: all but those the preset leaves out
    (`Preset.suite_leaves_out`; `rbench study NAME` still runs them at any preset).

    Raises:
        UsageProblem: an unknown preset.
    """
    left_out = {name for name, _ in get_preset(preset_name).suite_leaves_out}
    return [name for name in names if name not in left_out]
