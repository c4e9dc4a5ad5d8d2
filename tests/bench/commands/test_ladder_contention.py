"""`rbench ladder` warns about contended timings as `rbench latency` does: on stderr and in ladder.md."""

from __future__ import annotations

import pytest

from bench.scenarios import ladder
from tests.conftest import record_of

REASON = "1-minute load 3.9 on 2 usable cores"


def _result(contended: bool) -> ladder.LadderResult:
    contention = {"contended": contended, "reasons": [REASON] if contended else []}
    rows = [{"engine": "torch", "precision": "fp32", "runs": True, "p50_ms": 1.0, "p50_ci": [0.9, 1.1], "top1": 0.9,
             "speedup": 1.0, "batch": 1},
            {"engine": "ort", "precision": "int8", "runs": True, "p50_ms": 0.5, "p50_ci": [0.4, 0.6], "top1": 0.89,
             "speedup": 2.0, "speedup_ci": [1.8, 2.2], "verdict": "faster", "batch": 1}]
    latency = [record_of("latency", model="resnet20", engine=e, precision=p, batch=1, contention=contention)
               for e, p in (("torch", "fp32"), ("ort", "int8"))]
    return ladder.LadderResult(rows=rows, latency=latency)


@pytest.mark.parametrize("contended", [True, False])
def test_ladder_says_when_other_work_competed(run_cli, tmp_path, monkeypatch, contended):
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"weights")
    monkeypatch.setattr(ladder, "run_ladder", lambda *args, **kwargs: _result(contended))
    out = tmp_path / "ladder"
    code, stdout, err = run_cli("ladder", "resnet20", "--checkpoint", checkpoint, "--out", out, "--rungs", "ort:int8")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("rbench: warning:")]
    markdown = (out / "ladder.md").read_text()
    if contended:
        assert len(warnings) == 2 and all(REASON in w and "likely slow" in w for w in warnings)
        assert "ort int8 batch 1" in warnings[1]
        assert "Warning: contended timings" in markdown and markdown.count(REASON) == 2
    else:
        assert warnings == [] and "contended" not in markdown


def test_contention_notes_name_each_contended_timing():
    assert ladder.contention_notes(_result(False).latency) == []
    notes = ladder.contention_notes(_result(True).latency)
    assert [n.split(":")[0] for n in notes] == ["torch fp32 batch 1", "ort int8 batch 1"]
