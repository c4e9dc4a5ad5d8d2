"""`rbench train` and `rbench accuracy`: brief training on real data, and accuracy through every engine."""

from __future__ import annotations

from pathlib import Path

import click

from bench.commands._options import THREADS, Number, count

DATASET_HELP = "fashion-mnist | digits | cifar10 | imagefolder:PATH"


def _data_options(f):
    f = click.option("--download", is_flag=True, help="Allow torchvision to download fashion-mnist / cifar10.")(f)
    f = click.option("--channel-mode", type=click.Choice(["select", "average", "replicate", "zero"]), default=None,
                     help="How a channel subset reaches the net: select (in_chans = subset size), or 3 channels "
                          "by average / replicate / zero (the naive way).")(f)
    f = click.option("--channels", default=None, metavar="RGB|RG|GB|R|G|B",
                     help="Channel subset of the RGB image (grey data is copied to RGB first).")(f)
    f = click.option("--input-size", type=count(4), default=None,
                     help="Resize images to this square size (default: the data set's own; digits 32).")(f)
    f = click.option("--subset", type=count(2), default=None,
                     help="Keep N train+val images (and at most N test images) for a quick run; training needs "
                          "at least 2 per class.")(f)
    f = click.option("--data-root", type=click.Path(file_okay=False), default=None,
                     help="Folder with the data files (default: $RBENCH_DATA, then the data set's usual place).")(f)
    return f


@click.command("train")
@click.argument("model")
@click.option("--dataset", default="fashion-mnist", show_default=True, help=DATASET_HELP)
@_data_options
@click.option("--epochs", type=count(1), default=1, show_default=True)
@click.option("--batch-size", type=count(1), default=128, show_default=True)
@click.option("--optimizer", type=click.Choice(["sgd", "adam", "adamw", "nadam", "adagrad"]), default="sgd",
              show_default=True)
@click.option("--lr", type=Number(), default=None, help="Learning rate (default: 0.1 sgd, 1e-3 adam/adamw, ...).")
@click.option("--schedule", type=click.Choice(["cosine", "step", "onecycle", "plateau", "constant"]), default="cosine",
              show_default=True)
@click.option("--weight-decay", type=Number(), default=5e-4, show_default=True)
@click.option("--augment", default="", metavar="crop,flip,vflip,rotate[:DEG],rotate90,translate[:F],scale[:F],erase",
              help="Training augmentations, comma-separated: rotate by up to +-DEG degrees (15), rotate90 by a random "
                   "multiple of 90, translate by up to F of the size (0.1), scale (zoom) by 1 +- F (0.1).")
@click.option("--early-stop", type=count(1), default=None, metavar="PATIENCE",
              help="Stop after PATIENCE epochs without a better validation accuracy.")
@click.option("--restore-best/--keep-last", default=True, show_default=True,
              help="End with the best validation epoch's weights in the model (as best.pt), or the last epoch's; "
                   "the train record says which (train_config.restore_best).")
@click.option("--plateau-factor", type=Number(), default=None, metavar="F",
              help="--schedule plateau: multiply the learning rate by F (0 < F < 1) when validation accuracy "
                   "stops improving. [default: 0.1]")
@click.option("--plateau-patience", type=count(0), default=None, metavar="EPOCHS",
              help="--schedule plateau: epochs without a better validation accuracy before the rate drops. [default: 2]")
@click.option("--drop-rate", type=Number(), default=None, metavar="P",
              help="Dropout probability before the classifier of a ResNet (0 <= P < 1; timm's drop_rate). [default: 0]")
@click.option("--act", type=click.Choice(["relu", "leaky_relu", "silu"]), default="relu", show_default=True)
@click.option("--in-chans", "in_chans", default=None, metavar="any",
              help="'any': build the net with a channel-agnostic stem, one model for any channel subset "
                   "(VGGs, ResNets, plain nets and their dy_ twins). [default: the data's channel count]")
@click.option("--channel-dropout", type=Number(), default=0.0, show_default=True, metavar="P",
              help="With --in-chans any: drop each input channel with probability P per sample (0 <= P < 1; "
                   "at least one is kept), so the net learns to work with fewer.")
@click.option("--amp", is_flag=True, help="Mixed precision (bf16 on CPU, fp16 on CUDA).")
@click.option("--device", default="cpu", show_default=True, help="cpu | cuda | cuda:N (a CUDA GPU torch sees).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the weights, splits, shuffling, augmentation.")
@click.option("--val-fraction", type=Number(0, 1, min_open=True, max_open=True), default=0.1,
              show_default=True)
@click.option("--workers", type=count(0), default=0, help="DataLoader workers (lazy ImageFolder only).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Run folder for best.pt, last.pt, curves.png (default: runs/MODEL-DATASET-sSEED).")
@click.option("--results", "results_dir", type=click.Path(file_okay=False), default="results", show_default=True,
              help="Where the train record is appended.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last.pt.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or per-epoch lines.")
@click.option("--threads", type=THREADS, default=None, help="torch intra-op threads, at most the usable cores.")
@click.option("--nproc", type=count(1), default=None,
              help="Train data-parallel in N processes on this host (torchrun, DDP; gloo on CPU, nccl on GPUs). "
                   "--batch-size stays the global batch and --lr is unchanged; --threads is per process "
                   "[default: cores / N]. Under torchrun leave it out: `torchrun ... -m bench train ...`.")
@click.option("--sync-bn", is_flag=True, help="Distributed on GPUs: SyncBatchNorm, batch statistics over every process.")
def train_command(model, dataset, data_root, subset, input_size, channels, channel_mode, download, epochs, batch_size,
                  optimizer, lr, schedule, weight_decay, augment, early_stop, restore_best, plateau_factor,
                  plateau_patience, drop_rate, act, in_chans, channel_dropout, amp,
                  device, seed, val_fraction, workers, out_dir, results_dir, resume, quiet, threads, nproc, sync_bn):
    """Train MODEL briefly on real data; keep the best validation checkpoint.

    \b
    Writes into --out: best.pt (weights-only loadable: torch.load(p, weights_only=True)),
    best.json (model config, normalization, data set), last.pt (to --resume), history.json and
    curves.png; appends a "train" record with the learning curves to --results/train.jsonl.
    A nan loss stops the run with an error.

    \b
    Examples:
      rbench train resnet20 --dataset fashion-mnist --epochs 3 --augment crop,flip
      rbench train resnet20 --dataset digits --optimizer adam --subset 1000 -q
      rbench train dy_resnet20 --dataset cifar10 --in-chans any --channel-dropout 0.5   # one net, any subset
    """
    import torch

    import nets
    from bench.commands.measure import check_out_folder
    from bench.data import load_dataset
    from bench.errors import UsageProblem
    from bench.records.builders import train_record
    from bench.records.io import append_record
    from bench.train.loop import (
        TrainConfig,
        check_drop_rate,
        check_splits,
        parse_in_chans,
        plateau_settings,
        train_model,
        training_device,
    )

    if threads:
        torch.set_num_threads(threads)
    nets.model_entry(model)  # an unknown name fails before the data loads
    # A run folder or results folder that cannot be written: one line now, not a traceback after the data loads.
    check_out_folder(Path(out_dir) if out_dir else Path("runs"), ("best.pt", "last.pt"), fix="choose another --out")
    check_out_folder(Path(results_dir), ("train.jsonl",), what="--results", fix="choose another --results")
    in_chans = parse_in_chans(in_chans)
    if in_chans is not None:
        nets.check_in_chans(model, in_chans)  # 'any' on a net without a channel-agnostic stem: one line, now
    config = TrainConfig(epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr, schedule=schedule,
                         weight_decay=weight_decay, augment=augment, early_stop=early_stop, amp=amp, device=device,
                         seed=seed, workers=workers, channel_dropout=channel_dropout, restore_best=restore_best,
                         sync_bn=sync_bn,
                         **plateau_settings(schedule, plateau_factor, plateau_patience))
    for line in config.advice():
        click.echo(f"rbench: warning: {line}", err=True)
    model_kwargs = {} if drop_rate is None else {"drop_rate": check_drop_rate(drop_rate)}
    if config.channel_dropout and in_chans != "any":
        raise UsageProblem("--channel-dropout needs --in-chans any (a net that takes any number of channels)")
    training_device(config.device)  # tpu, mps, a missing GPU: one line before the data loads
    from bench.records.io import current_command
    from bench.train import distributed

    if nproc is not None and nproc > 1:  # this process only launches: torchrun starts N that each train
        distributed.check_launch(nproc, batch_size, config.device, sync_bn)
        ctx = click.get_current_context()
        per_process = threads or max(1, distributed.available_cores() // nproc)
        distributed.launch(nproc, distributed.command_argv(ctx.command, ctx.params, drop=("nproc",),
                                                           threads=per_process),
                           per_process, command=current_command())
        return
    if distributed.launched_by_torchrun() and distributed.active() is None:
        with distributed.session(config.device) as dist_ctx:
            if dist_ctx is not None:  # one rank of several: run this same command inside the process group
                return train_command.callback(**click.get_current_context().params)
    if distributed.active() is not None and not distributed.active().is_main:
        quiet = True  # rank 0 alone reports

    def load():
        bundle = load_dataset(dataset, root=data_root, subset=subset, seed=seed, val_fraction=val_fraction,
                              input_size=input_size, channels=channels, channel_mode=channel_mode or "select",
                              download=download)
        check_splits(bundle)  # a --subset that leaves a split empty, before the model is built
        return bundle

    bundle = distributed.together(load)  # distributed: a data set missing everywhere is said once, by rank 0
    torch.manual_seed(seed)
    net = nets.create_model(model, num_classes=bundle.num_classes, in_chans=in_chans or bundle.in_chans, act=act,
                            **model_kwargs)
    short = bundle.name.split(":", 1)[0] if not bundle.name.startswith("imagefolder:") else \
        "imagefolder-" + Path(bundle.name.split(":", 1)[1]).name
    out = Path(out_dir) if out_dir else Path("runs") / f"{model}-{short}-s{seed}"
    if not quiet:
        click.echo(f"training {model} ({sum(p.numel() for p in net.parameters()):,} params) on {bundle.name} "
                   f"from {bundle.source}: {len(bundle.train)} train / {len(bundle.val)} val / {len(bundle.test)} test, "
                   f"input {bundle.input_shape}, {config.epochs} epochs {config.optimizer} lr {config.learning_rate:g}",
                   err=True)
    result = train_model(net, bundle, config, out, progress=not quiet, resume=resume)
    if distributed.active() is not None and not distributed.active().is_main:
        return  # rank 0 writes the record
    record = train_record(result, model=model, model_config=dict(net.config), dataset=bundle.describe(),
                          train_config=config.to_dict(), params=sum(p.numel() for p in net.parameters()),
                          train_images_per_epoch=len(bundle.train), resumed=resume)
    path = append_record(record, results_dir)
    click.echo(f"best val acc {result.best_val_acc:.4f} at epoch {result.best_epoch}; "
               f"{result.train_img_s:.0f} img/s; checkpoint {result.best_checkpoint}; curves {result.curves_png}; "
               f"record {path}")


@click.command("accuracy")
@click.argument("model")
@click.option("--checkpoint", "checkpoint_path", required=True, type=click.Path(dir_okay=False),
              help="A best.pt / last.pt from `rbench train`, or a torchvision state dict (resnet50-11ad3fa6.pth).")
@click.option("--engine", "engines", default="torch,ort", show_default=True, metavar="ENGINE[:PRECISION],...",
              help="Engines to run, comma-separated (torch, ort, trt, openvino; trt:fp16 names a precision); "
                   "the first is the reference: put torch first for MLPerf's torch fp32 reference.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]), default="fp32", show_default=True,
              help="Precision of every engine that names none.")
@click.option("--device", default="cpu", show_default=True, help="cpu | cuda")
@click.option("--dataset", default=None, help=f"{DATASET_HELP} (default: the checkpoint's own). An image folder may "
                                              "hold only val/ (or only class folders): accuracy only evaluates.")
@_data_options
@click.option("--eval-transform", default=None, metavar="imagenet|imagenet:RESIZE:CROP|none",
              help="torchvision's evaluation preprocessing for an image folder: resize the shorter side (bilinear, "
                   "antialiased), centre-crop, ImageNet mean/std; imagenet = 256/224, imagenet:232:224 for ResNet-50 "
                   "IMAGENET1K_V2. [default: the checkpoint's own; a recognised torchvision file carries its weights' "
                   "preset]")
@click.option("--class-index", type=click.Path(dir_okay=False, exists=False), default=None,
              help="JSON giving the label order of the folder's classes, e.g. ImageNet's imagenet_class_index.json "
                   "({\"0\": [\"n01440764\", \"tench\"], ...}). [default: sorted folder names, as torchvision]")
@click.option("--skip-bad-images", is_flag=True,
              help="Skip unreadable image files (counted and reported) instead of stopping at the first.")
@click.option("--threshold", type=Number(0, 1, min_open=True), default=0.99, show_default=True,
              help="Pass when an engine keeps this share of the reference's top-1 (MLPerf: 99%).")
@click.option("--workers", type=count(0), default=None,
              help="DataLoader processes decoding an image folder. [default: min(8, CPU cores) for a lazy folder]")
@click.option("--batch-size", type=count(1), default=256, show_default=True)
@click.option("--normalization", type=click.Choice(["checkpoint", "data"]), default="checkpoint", show_default=True,
              help="Normalize with the statistics the model was trained with, or the data's own.")
@click.option("--threads", type=THREADS, default=None, help="torch intra-op threads, at most the usable cores.")
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON lines instead of a table.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--out", "results_dir", type=click.Path(file_okay=False), default="results", show_default=True,
              help="Where the accuracy records are appended.")
def accuracy_command(model, checkpoint_path, engines, precision, device, dataset, data_root, subset, input_size,
                     channels, channel_mode, download, eval_transform, class_index, skip_bad_images, threshold,
                     workers, batch_size, normalization, threads, as_json, quiet, results_dir):
    """Test-split accuracy of a MODEL checkpoint through every engine, in MLPerf's accuracy mode.

    \b
    Per engine: top-1 and top-5, the ratio of each to the reference (the first engine), pass or
    fail against --threshold (MLPerf: 99% of the fp32 reference's top-1; any fail exits 1 after
    the records are written, so the command gates CI), the images evaluated,
    the inference seconds and images/s; macro precision / recall / F1, per-class figures and the
    confusion matrix in the records; against the reference: the top-1 difference, the share of
    identical predictions and the largest logit difference. Every engine sees the same images,
    decoded once. Records go to --out/accuracy.jsonl, all or none.

    \b
    Examples:
      rbench accuracy resnet20 --checkpoint runs/resnet20-fashion-mnist-s0/best.pt --engine torch,ort
      rbench accuracy resnet50 --checkpoint resnet50-11ad3fa6.pth --dataset imagefolder:/data/imagenet \\
          --eval-transform imagenet:232:224 --engine torch,ort,trt
    """
    from bench.accuracy.evaluate import dataset_for_checkpoint, evaluate_checkpoint, load_trained_model, parse_engines
    from bench.commands._progress import image_progress
    from bench.data import EvalImages, default_workers, parse_eval_transform
    from bench.errors import UsageProblem
    from bench.records.builders import accuracy_record
    from bench.records.io import append_record, to_json

    if threads:
        import torch

        torch.set_num_threads(threads)
    parse_engines(engines, precision)  # a bad list: one line before anything loads
    if parse_eval_transform(eval_transform) is not None and input_size is not None:
        raise UsageProblem("--input-size and --eval-transform both set the input size; the transform's crop is it")
    import nets

    nets.model_entry(model)  # an unknown name is a usage error before anything loads
    ckpt = load_trained_model(checkpoint_path, model_name=model)
    if input_size is not None:
        ckpt.dataset["input_size"] = input_size
    bundle = dataset_for_checkpoint(ckpt, name=dataset, root=data_root, subset=subset, channels=channels,
                                    channel_mode=channel_mode, download=download, eval_transform=eval_transform,
                                    class_index=class_index, skip_bad_images=skip_bad_images)
    published = (ckpt.torchvision or {}).get("published")
    preset = parse_eval_transform(eval_transform)
    if published and preset is not None and preset.describe() != ckpt.eval_transform:
        carried = parse_eval_transform(ckpt.eval_transform)
        click.echo(f"note: torchvision's figures for {published['weights']} were measured with --eval-transform "
                   f"{carried.spec}, not {preset.spec}", err=True)
    lazy = isinstance(bundle.test, EvalImages)
    workers = workers if workers is not None else (default_workers() if lazy else 0)
    with image_progress(f"{model} on {len(bundle.test)} images", enabled=not quiet and not as_json) as progress:
        results = evaluate_checkpoint(ckpt, bundle, engines, precision=precision, device=device, batch_size=batch_size,
                                      normalization=normalization, threshold=threshold, workers=workers,
                                      on_progress=progress)
    described = {**bundle.describe(), **bundle.extra}
    records = [accuracy_record(r, model=model, model_config=ckpt.config, dataset=described,
                               checkpoint=str(ckpt.path), checkpoint_epoch=ckpt.epoch) for r in results]
    for record in records:  # measured everything first: an engine failure leaves no partial records
        path = append_record(record, results_dir)
    failed = [f"{r['engine']} {r['precision']}" for r in results if not r["passed"]]
    if as_json:
        for record in records:
            click.echo(to_json(record))
        _exit_on_failed(failed, threshold, results[0])
        return
    from rich.console import Console
    from rich.table import Table

    ref = results[0]
    table = Table(title=f"{model} on {bundle.name} test split ({ref['samples']} images); reference "
                        f"{ref['engine']} {ref['precision']}, pass at {threshold:.0%} of its top-1")
    for col in ("engine", "precision", "top-1", "top-5", "top-1 ratio", "pass", "Δ top-1", "agree", "macro F1",
                "max |Δ logit|", "images", "s", "img/s"):
        table.add_column(col, justify="left" if col in ("engine", "precision", "pass") else "right")
    for r in results:
        table.add_row(r["engine"], r["precision"], f"{r['top1']:.4f}", f"{r['top5']:.4f}",
                      "-" if r["top1_ratio"] is None else f"{r['top1_ratio']:.4f}",
                      "pass" if r["passed"] else "[red]FAIL[/red]", f"{r['top1_delta']:+.4f}", f"{r['agreement']:.4f}",
                      f"{r['f1_macro']:.4f}", f"{r['max_abs_logit_diff']:.2e}", str(r["samples"]),
                      f"{r['seconds']:.1f}", "-" if r["images_per_s"] is None else f"{r['images_per_s']:.0f}")
    console = Console(width=140)
    console.print(table)
    if published:
        click.echo(f"torchvision publishes top-1 {published['published_top1']}% / top-5 {published['published_top5']}% "
                   f"for these weights ({published['weights']}, {published['file']}) on the 50,000 ImageNet "
                   "validation images")
    if ref["skipped_images"]:
        files = ref["skipped_files"]
        click.echo(f"skipped {ref['skipped_images']} unreadable image(s): {', '.join(files[:5])}"
                   f"{', ...' if len(files) > 5 else ''}")
    click.echo(f"{ref['samples']} images in {ref['wall_s']:.1f} s (decoding included); records appended to {path}")
    _exit_on_failed(failed, threshold, ref)


def _exit_on_failed(failed: list[str], threshold: float, ref: dict) -> None:
    """Exit 1 when an engine kept less than `threshold` of the reference's top-1: `rbench accuracy` is a CI gate."""
    if failed:
        click.echo(f"rbench: accuracy: below {threshold:.0%} of {ref['engine']} {ref['precision']}'s top-1: "
                   f"{', '.join(failed)} (records kept; exit 1)", err=True)
        raise click.exceptions.Exit(1)
