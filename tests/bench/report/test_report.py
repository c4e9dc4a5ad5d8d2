"""bench.report.render: records in, Markdown tables and readable PNG plots out (records built here, no training)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.accuracy.metrics import encode_correct
from bench.report import format, render
from bench.studies import activation, depth, reporting
from bench.studies import ladder as ladder_study
from tests.conftest import record_of

ENGINES = ("torch", "ort")
#: Test images of every accuracy record: each net gets the first top1 x SAMPLES right, so two nets' correctness is
#: nested and a paired interval is tight.
SAMPLES = 2000
CLASSES = ["T-shirt", "Trouser", "Pullover"]


def _unit(study, label, model, group, *, train_err, test_top1, flops, params, latency, history_len=3,
          schedule="step", **extra):
    """The records one measured unit leaves (train, flops, export, latency/throughput/accuracy per engine)."""
    common = dict(command="test", study=study, label=label, group=group, unit=f"{model}-{label}", model=model,
                  act="relu", model_config={"name": model, **extra.pop("config", {})},
                  dataset={"name": "fashion-mnist"})
    history = [{"epoch": e + 1, "train_acc": 1 - train_err - 0.1 * (history_len - 1 - e),
                "val_acc": test_top1 - 0.05 * (history_len - 1 - e), "train_loss": 1.0, "val_loss": 1.0}
               for e in range(history_len)]
    out = [
        record_of("train", **common, history=history, epochs=history_len, final_train_error=train_err,
                  final_val_error=1 - test_top1, best_epoch=history_len, train_images_per_epoch=900,
                  train_config={"epochs": history_len, "optimizer": "adam", "lr": 1e-3, "schedule": schedule}),
        record_of("flops", **common, params=params, macs=flops // 2, flops=flops),
        record_of("export", **common, exporter="torchscript", parity_passed=True, parity_max_abs_err=1e-6),
    ]
    for i, engine in enumerate(ENGINES):
        out.append(record_of("latency", **common, engine=engine, latency_ms_p50=latency * (1 + i),
                             latency_ms_p99=latency * 2, latency_cv=0.05))
        out.append(record_of("throughput", **common, engine=engine, batch=32, throughput_img_s=1000.0 / latency))
        out.append(record_of("accuracy", **common, engine=engine, top1=test_top1, f1_macro=test_top1 - 0.01,
                             reference_engine="torch", agreement=1.0, samples=SAMPLES,
                             correct_bits=encode_correct(np.arange(SAMPLES) < round(test_top1 * SAMPLES)),
                             per_class=[{"class": c, "name": n, "f1": test_top1, "precision": 0.5, "recall": 0.5,
                                         "support": 10} for c, n in enumerate(CLASSES)]))
    for subset, top1 in extra.pop("subsets", {}).items():
        out.append(record_of("accuracy", **common, engine="ort", top1=top1, eval_channels=subset))
    return out


@pytest.fixture
def records():
    r = []
    # The degradation pattern: plain56 trains worse than plain20, resnet56 better than resnet20.
    r += _unit("depth", "resnet20", "resnet20", "residual", train_err=0.20, test_top1=0.78, flops=80_000_000, params=270_000, latency=1.0)
    r += _unit("depth", "plain20", "plain20", "plain", train_err=0.22, test_top1=0.76, flops=80_000_000, params=270_000, latency=0.9)
    r += _unit("depth", "resnet56", "resnet56", "residual", train_err=0.15, test_top1=0.80, flops=250_000_000, params=850_000, latency=2.5)
    r += _unit("depth", "plain56", "plain56", "plain", train_err=0.40, test_top1=0.60, flops=250_000_000, params=850_000, latency=2.3)
    subsets = {"RGB": 0.7, "R": 0.6}
    r += _unit("dynamic", "resnet20", "resnet20", "ResNet static", train_err=0.3, test_top1=0.7, flops=80_000_000,
               params=270_000, latency=1.0, subsets=subsets)
    for k in (3, 4):
        r += _unit("dynamic", f"dy_resnet20 K={k}", "dy_resnet20", "ResNet dynamic" if k == 4 else "K ablation",
                   train_err=0.3, test_top1=0.7 + k / 100, flops=90_000_000, params=270_000 * k, latency=2.0,
                   config={"kernels": k}, subsets=subsets if k == 4 else {})
    for act, top1 in (("relu", 0.78), ("leaky_relu", 0.79), ("silu", 0.77)):
        r += _unit("activation", act, "resnet20", "", train_err=0.2, test_top1=top1, flops=80_000_000, params=270_000, latency=1.0)
    r += _unit("family", "resnet34", "resnet34", "ResNet (target)", train_err=0.1, test_top1=0.80, flops=150_000_000,
               params=21_000_000, latency=3.0)
    r += _unit("family", "rrdb_attention_net", "rrdb_attention_net", "4-layer RRDB + attention", train_err=0.2,
               test_top1=0.70, flops=200_000_000, params=800_000, latency=4.0)
    return r


def _run(studies):
    from bench.studies import get_preset, study_plan
    from bench.studies.registry import preset_settings

    preset = get_preset("quick")
    return {"title": "test", "preset": "quick", "dataset": "fashion-mnist", "engines": list(ENGINES),
            "studies": [study_plan(s, preset).as_record() for s in studies], "preset_settings": preset_settings(preset),
            "measured_seconds": 60.0, "wall_seconds_this_invocation": 60.0, "command": "rbench suite"}


def test_markdown_table_and_units():
    table = format.markdown_table([{"a": "x", "b": 0.5}], [("name", "a", format.fmt_text), ("top-1", "b", format.fmt_pct)])
    assert table.splitlines() == ["| name | top-1 |", "|---|---:|", "| x | 50.0% |"]
    assert format.fmt_count(21_797_672) == "21.80M"
    assert format.fmt_count(None) == "n/a"
    assert format.model_depth("plain110") == 110 and format.model_depth("vgg11_bn") is None


def test_unit_rows_join_every_kind(records):
    rows = {r["label"]: r for r in format.unit_rows(records, "depth")}
    assert list(rows) == ["resnet20", "plain20", "resnet56", "plain56"]
    row = rows["plain56"]
    assert row["final_train_error"] == 0.40 and row["test_error"] == pytest.approx(0.40)
    assert row["latency_p50_ort"] == pytest.approx(4.6) and row["flops"] == 250_000_000
    assert len(row["history"]) == 3


def test_report_has_tables_findings_and_readable_plots(records, tmp_path):
    md = reporting.render_report(records, _run(["depth", "dynamic", "activation", "family"]), tmp_path)
    assert "Degradation shown here: plain56 ends with 40.0% training error vs 22.0% for plain20" in md
    # The coursework target: 0.70 / 0.80 = 87.5%, its interval (2000 images, nested correctness) below 90%: NOT MET.
    assert "**NOT MET**" in md and "87.5% [" in md
    assert md.index("## Summary") < md.index("![latency vs FLOPs]") < md.index("## Method") < md.index("## Depth")
    # A finding is said once: no line of the report appears twice (table rules and blank lines aside).
    said = [line for line in md.splitlines() if line.strip() and not line.startswith("|---")]
    assert len(said) == len(set(said)), [line for line in said if said.count(line) > 1]
    # The activation section's per-class table: one row per activation, 'P / R / F1' per class.
    act = md.split("## Activation")[1].split("\n## ")[0]
    assert "**Per class** (torch, test split, 2000 images): precision / recall / F1" in act
    assert "| activation | T-shirt | Trouser | Pullover |" in act and "| silu | 0.50 / 0.50 / 0.77 |" in act
    # fashion-mnist is greyscale: every subset scores as RGB, so the subset table gives way to the note saying why
    assert "K ablation" in md and "is greyscale" in md and "| model | way | RGB |" not in md
    assert "greyscale" in md, "channel subsets on grey data must be flagged"
    assert "| resnet20 | residual |" in md
    import re

    for link in re.findall(r"!\[[^]]*\]\(([^)]+)\)", md):
        if link:
            png = tmp_path / link
            assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
            import matplotlib.image

            height, width = matplotlib.image.imread(png).shape[:2]
            assert width >= 500 and height >= 300, f"{png.name} is too small to read"
    for name in ("depth_curves", "depth_accuracy", "depth_cost", "dynamic_subsets", "dynamic_k",
                 "activation_curves", "family_acc_flops", "family_per_class", "latency_vs_flops"):
        assert (tmp_path / "figures" / f"{name}.png").exists(), name


def test_target_met_when_the_four_layer_net_is_close(records, tmp_path):
    for r in records:
        if r.get("label") == "rrdb_attention_net" and r["kind"] == "accuracy":
            r["top1"] = 0.75  # 93.75% of resnet34's 0.80
            r["correct_bits"] = encode_correct(np.arange(SAMPLES) < round(0.75 * SAMPLES))
    md = reporting.render_report(records, _run(["family"]), tmp_path)
    # 93.75% with its interval: MET only if the whole interval clears 90%, else not decided
    assert ("**MET**" in md) != ("**not decided at this budget**" in md) and "93.8% [" in md


def test_an_empty_study_says_so(tmp_path):
    md = reporting.render_report([], _run(["depth"]), tmp_path)
    assert "No records yet." in md


def test_the_preset_line_says_what_ran(records, tmp_path):
    """The training comes from the train records (the fixture's units ran 'step' with adam, not the preset's cosine),
    and params are every parameter, as bench.measure.flops.count_params counts them."""
    md = reporting.render_report(records, _run(["depth"]), tmp_path)
    assert ("Training (from the train records): 3 epoch(s) of adam, step schedule, up to 900 images per epoch, "
            "best-validation weights measured (depth)") in md
    assert "cosine" not in md
    assert "Params = all parameters" in md and "trainable parameters" not in md
    records += _unit("depth", "resnet110", "resnet110", "residual", train_err=0.1, test_top1=0.8, flops=1, params=1,
                     latency=1.0, schedule="onecycle")
    assert "step / onecycle schedules" in reporting.render_report(records, _run(["depth"]), tmp_path)
    # Before any unit has trained: what the preset names, or nothing rather than a guess.
    run = _run(["depth"])
    assert "schedule" not in reporting.render_report([], run, tmp_path).split("Statistics:")[0].split("Preset:")[1]
    run["preset_settings"]["schedule"] = "plateau"
    assert "plateau schedule" in reporting.render_report([], run, tmp_path)


def _timed(study, label, model, group, latencies, contended=False):
    """A unit's latency record as the suite's timing phase leaves it: interleaved rounds, raw latencies."""
    return record_of("latency", command="test", study=study, label=label, group=group, unit=f"{model}-{label}",
                     model=model, engine="ort", latencies_ms=list(latencies), rounds=10,
                     latency_ms_p50=sorted(latencies)[len(latencies) // 2],
                     contention={"contended": contended, "reasons": ["other processes used 0.6 of 2 usable cores on average"]
                                 if contended else []})


def test_a_latency_ratio_is_stated_only_where_its_interval_supports_it(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    same = [list(1.0 + 0.02 * rng.standard_normal(50)) for _ in range(3)]
    records = [_timed("depth", "resnet20", "resnet20", "residual", same[0]),
               _timed("depth", "plain20", "plain20", "plain", same[1]),
               _timed("depth", "resnet56", "resnet56", "residual", 3 * np.asarray(same[2]), contended=True)]
    _, findings = depth.depth_section(records, tmp_path, ["ort"])
    text = " ".join(findings)
    assert "timed together: ort 1.0" in text and "no measurable difference" in text  # same distribution
    assert "] slower" in text  # resnet56 vs resnet20: 3x
    note = render.contention_note(records)
    assert "1 of 3 timings" in note and "(other processes used the CPU)" in note
    assert render.contention_note(records[:2]) == ""


def _ladder_records(label="resnet20"):
    """What the ladder study's timing phase leaves for one net: rung-tagged records, the rows on the first."""
    unit = f"{label}-relu"
    rows = [
        {"engine": "torch", "precision": "fp32", "runs": True, "p50_ms": 2.0, "p50_ci": [1.9, 2.1], "images_per_s": 500.0,
         "size_bytes": 1_100_000, "top1": 0.744, "f1_macro": 0.74, "agreement": 1.0, "samples": 1000, "speedup": 1.0,
         "speedup_ci": [1.0, 1.0], "verdict": "reference", "batch": 1},
        {"engine": "torch", "precision": "bf16", "runs": True, "p50_ms": 4.0, "p50_ci": [3.8, 4.4], "images_per_s": 300.0,
         "size_bytes": 1_100_000, "top1": 0.745, "f1_macro": 0.74, "agreement": 0.99, "samples": 1000, "speedup": 0.5,
         "speedup_ci": [0.4, 0.6], "verdict": "slower", "batch": 1, "pareto": True},
        {"engine": "ort", "precision": "fp32", "runs": True, "p50_ms": 1.98, "p50_ci": [1.8, 2.2], "images_per_s": 900.0,
         "size_bytes": 1_200_000, "top1": 0.744, "f1_macro": 0.74, "agreement": 1.0, "samples": 1000, "speedup": 1.01,
         "speedup_ci": [0.95, 1.08], "verdict": "no measurable difference", "batch": 1},
        {"engine": "openvino", "precision": "int8", "runs": True, "p50_ms": 0.1015, "p50_ci": [0.1, 0.11],
         "images_per_s": 9000.0, "size_bytes": 400_000, "top1": 0.733, "f1_macro": 0.73, "agreement": 0.962,
         "samples": 1000, "speedup": 19.7, "speedup_ci": [15.5, 21.2], "verdict": "faster", "batch": 1,
         "note": "int8 check failed: agreement 96.2%", "pareto": True},
        {"engine": "trt", "precision": "fp16", "runs": False,
         "reason": "TensorRT is not available: pip install 'rbench[trt]' (tensorrt>=10) on a machine with an NVIDIA GPU"},
    ]
    int8 = {"method": "minmax", "calibration_images": 512,
            "check": {"images": 1000, "top1_agreement": 0.962, "fp32_accuracy": 0.744, "int8_accuracy": 0.733,
                      "accuracy_ratio": 0.985, "min_agreement": 0.95, "min_accuracy_ratio": 0.99, "passed": False}}
    common = dict(command="test", study="ladder", label=label, group="", unit=unit, model=label)
    payload = {"rows": rows, "int8": int8, "test_limit": 1000, "calibration_images": 512, "throughput_batch": 32,
               "settings": {"iters": 30, "rounds": 5, "warmup": 5}}
    return [
        record_of("latency", **common, engine="torch", precision="fp32", batch=1, latency_ms_p50=2.0, rung="torch fp32",
                  ladder=payload),
        record_of("latency", **common, engine="openvino", precision="int8", batch=1, latency_ms_p50=0.1015,
                  rung="openvino int8"),
        record_of("accuracy", **common, engine="ort", precision="int8", top1=0.733, agreement=0.962,
                  reference_engine="torch fp32", rung="ort int8"),
    ]


def test_the_ladder_section_renders_from_records_and_states_only_supported_findings(records, tmp_path):
    ladder = _ladder_records("resnet20") + _ladder_records("resnet56")
    md = reporting.render_report(records + ladder, _run(["depth", "ladder"]), tmp_path)
    section = md.split("## Precision ladder")[1].split("## Export parity")[0]
    # One table, each net's cells side by side; '*' marks a net's Pareto front, a failed int8 check its rungs.
    assert "| engine | precision | resnet20 p50 ms | resnet20 speedup vs torch fp32 |" in section
    assert ("| openvino | int8 | 0.102 * | 19.70x [15.50, 21.20] faster | 9,000 | 73.3% (96.2%) check failed | "
            "0.102 * |") in section
    # A speedup is stated where its interval supports it; otherwise "no measurable difference".
    assert "openvino int8 is 19.70x [15.50, 21.20] faster than torch fp32" in section
    assert "slower than torch fp32: torch bf16 (2.00x [1.67, 2.50])" in section
    assert "no measurable difference from torch fp32: ort fp32" in section and "ort fp32 is" not in section
    # Rungs not run here are named once, at the top, with the reason; the int8 check; the test images and interval.
    head = md.split("## Summary")[0]
    assert "Not run on this machine: " in head and "fp16" in head and "TensorRT is not available" in head
    assert md.count("TensorRT is not available") == 1
    assert "**FAILED**" in section and "ratio 0.985, needs 0.99" in section
    assert "the same 1000 test images" in section and "resnet20 74.4% [" in section
    assert (tmp_path / "figures" / "ladder_resnet20.png").is_file() and (tmp_path / "figures" / "ladder_resnet56.png").is_file()
    assert "![resnet56 precision ladder](figures/ladder_resnet56.png)" in section
    # The summary links to the section; each finding is said once, in its section; the int8 check once, in text.
    assert "](#precision-ladder" in md.split("## Summary")[1].split("\n## ")[0]
    assert section.count("resnet56: openvino int8 is 19.70x [15.50, 21.20] faster than torch fp32") == 1
    assert md.count("Int8 files: ") == 1 and md.count("**FAILED**") == 2 and "the int8 check FAILED" not in md
    assert "| ladder |" not in md or "speedup 19.70x [15.50, 21.20]" in md
    # The ladder's rungs stay in their section: no openvino column, no ladder agreement in the parity table.
    assert format.engines_in(records + ladder) == list(ENGINES)
    assert "openvino" not in md.split("## Depth")[1].split("## Precision ladder")[0]
    assert "prediction agreement ort" in render.parity_table(records)
    assert render.parity_table(records + ladder) == render.parity_table(records)


def test_a_ladder_with_no_faster_rung_says_so(tmp_path):
    ladder = _ladder_records()
    for row in ladder[0]["ladder"]["rows"][1:]:
        if row.get("runs"):
            row.update(verdict="no measurable difference", speedup=1.0, speedup_ci=[0.9, 1.1])
    _, findings = ladder_study.ladder_section(ladder, tmp_path, [])
    (line,) = findings  # one line per net
    assert line.startswith("resnet20: no rung is measurably faster than torch fp32 here; no measurable difference "
                           "from torch fp32: torch bf16")
    assert not any("faster than torch fp32 at batch 1" in f for f in findings)


def test_a_rung_whose_speedup_differed_between_processes_is_unstable_with_each_value(tmp_path):
    """A speedup that took one value in some worker processes and another in the rest is no speedup with an interval:
    the summary, the findings and the table give each value and call it unstable."""
    from bench.report.summary import UNSTABLE
    from bench.scenarios.ladder import ladder_rows_table

    ladder = _ladder_records()
    fastest = ladder[0]["ladder"]["rows"][3]  # openvino int8
    fastest.update(verdict="unstable", speedup=8.0, speedup_ci=[5.0, 12.0], speedup_modes=[6.1, 9.7])
    (row,) = ladder_study.ladder_summary(ladder, {})
    assert (row.answer, row.status) == ("openvino int8, unstable", UNSTABLE)
    assert row.figure.startswith("speedup 6.10x or 9.70x by process; top-1 73.3%")
    _, findings = ladder_study.ladder_section(ladder, tmp_path, [])
    (line,) = findings
    assert "unstable, the speedup differing between worker processes: openvino int8 (6.10x or 9.70x by process)" \
        in line and "openvino int8 is" not in line
    cells = ladder_rows_table(ladder[0]["ladder"]["rows"])
    assert cells[3][-1] == "8.00x [5.00, 12.00] unstable (6.10x or 9.70x by process)"


# --------------------------------------------------------------------------- extra training seeds (accuracy only)


def _extra_seed(study, label, model, group, seed, top1):
    """The records an accuracy-only extra seed of a timed net leaves: its train record and torch's accuracy."""
    common = dict(command="test", study=study, label=label, group=group, unit=f"{model}-{label}-acc-seed{seed}",
                  model=model, act="relu", accuracy_only=True, dataset={"name": "fashion-mnist"})
    return [record_of("train", **common, history=[], epochs=3, final_train_error=0.5, final_val_error=0.5,
                      train_config={"epochs": 3, "seed": seed}),
            record_of("accuracy", **common, engine="torch", top1=top1, f1_macro=top1)]


@pytest.mark.parametrize("resnet_seed1, plain_seed1, cell, verdict", [
    (0.74, 0.75, "76.0% (74.0%-78.0%)", "within seed noise (seed spread 4.0 pp)"),
    (0.77, 0.745, "77.5% (77.0%-78.0%)", "gain beyond the seed spread (1.5 pp)"),
])
def test_accuracy_findings_give_the_seed_spread_and_say_within_seed_noise(records, tmp_path, resnet_seed1, plain_seed1,
                                                                          cell, verdict):
    records = records + _extra_seed("depth", "resnet20", "resnet20", "residual", 1, resnet_seed1) \
        + _extra_seed("depth", "plain20", "plain20", "plain", 1, plain_seed1)
    rows = {r["label"]: r for r in format.unit_rows(records, "depth")}
    # The measured net's own row is untouched by its extra seed; the seed column summarises both.
    assert rows["resnet20"]["top1_torch"] == 0.78 and rows["resnet20"]["final_train_error"] == 0.20
    assert rows["resnet20"]["top1_seeds"] == cell
    assert rows["resnet56"]["top1_seeds"].startswith("80.0% [")  # one run: its Wilson interval
    text, findings = depth.depth_section(records, tmp_path, list(ENGINES))
    assert f"| {cell} |" in text
    at20 = next(f for f in findings if f.startswith("At 20 layers"))
    assert "pp [" in at20
    at56 = next(f for f in findings if f.startswith("At 56 layers"))
    assert "-20.0 pp [" in at56
    gap = (0.78 + resnet_seed1) / 2 - (0.76 + plain_seed1) / 2
    assert format.accuracy_gap(rows["resnet20"], rows["plain20"]).startswith(f"{100 * gap:+.1f} pp")


def test_single_run_accuracy_findings_say_so(records, tmp_path):
    _, findings = activation.activation_section(records, tmp_path, list(ENGINES))
    assert any(f.startswith("silu vs relu: top-1 -1.0 pp [") for f in findings), findings
    extra = _extra_seed("activation", "relu", "resnet20", "", 1, 0.70)
    _, findings = activation.activation_section(records + extra, tmp_path, list(ENGINES))
    assert not any(f.startswith("Highest top-1") for f in findings)  # the summary table's rows say which leads
    # relu's two seeds (0.78, 0.70) against silu's one: the interval carries the seed spread and straddles 0
    assert any(f.startswith("silu vs relu: top-1 +3.0 pp [") and "not decided at this budget" in f for f in findings)


def test_summary_snippet_is_the_summary_table_of_a_run_folder(records, tmp_path, run_cli):
    """`rbench report DIR --summary` prints the run's summary table, linked to its report's sections, from its
    records alone (nothing rendered or written); a page quotes it between the generated markers."""
    import json

    from bench.records.io import to_json

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "records.jsonl").write_text("".join(to_json(r) + "\n" for r in records))
    (folder / "run.json").write_text(json.dumps(_run(["depth", "activation"])))
    code, stdout, stderr = run_cli("report", folder, "--summary")
    assert code == 0, stderr
    assert stdout == reporting.summary_snippet(folder)
    lines = stdout.splitlines()
    assert lines[0] == reporting.SNIPPET_BEGIN.format(folder=folder.as_posix()) and lines[-1] == reporting.SNIPPET_END
    assert f"| [depth]({folder.as_posix()}/report.md#depth-residual-vs-plain) | Do shortcuts help at 20 layers?" in stdout
    assert sorted(p.name for p in folder.iterdir()) == ["records.jsonl", "run.json"], "--summary writes nothing"
    for args, message in [((folder, folder, "--summary"), "one DIR"), ((tmp_path / "none", "--summary"), "run.json")]:
        code, _, stderr = run_cli("report", *args)
        assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1, stderr


def test_an_engine_that_timed_no_dynamic_net_is_left_out_of_the_k_ablation_line(records, tmp_path):
    """ort's dynamic-net timings failed: the K ablation line gives torch's latencies and says nothing of ort."""
    from bench.studies import dynamic

    kept = [r for r in records if not (r.get("study") == "dynamic" and r.get("model") == "dy_resnet20"
                                       and r.get("engine") == "ort" and r["kind"] == "latency")]
    _, findings = dynamic.dynamic_section(kept, tmp_path, list(ENGINES))
    (line,) = [f for f in findings if f.startswith("K ablation")]
    assert "p50 torch" in line and "ort" not in line and "n/a" not in line
    _, findings = dynamic.dynamic_section(records, tmp_path, list(ENGINES))
    assert "p50 ort" in next(f for f in findings if f.startswith("K ablation"))


def test_timings_that_failed_are_named_once_at_the_top(records, tmp_path):
    """A failed timing's cells read n/a: the report's head says which nets, on which engine, and why."""
    why = "worker failed to start: model.onnx takes 1 input channels, not --in-chans 3"
    broken = []
    for r in records:
        if r.get("study") == "dynamic" and r.get("model") == "dy_resnet20" and r.get("engine") == "ort" \
                and r["kind"] in ("latency", "throughput"):
            r = {**r, "error": why if r["kind"] == "latency" else "every batch size failed",
                 "latency_ms_p50": None, "throughput_img_s": None}
        broken.append(r)
    md = reporting.render_report(broken, _run(["dynamic"]), tmp_path)
    head = md.split("## Summary")[0]
    assert f"**Timings that failed** (n/a in the tables): dy_resnet20 K=3, dy_resnet20 K=4 on ort (dynamic): {why}." \
        in head
    assert "every batch size failed" not in md and md.count(why) == 1
    assert "Timings that failed" not in reporting.render_report(records, _run(["dynamic"]), tmp_path)
