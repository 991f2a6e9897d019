"""benchmarks/real_models.py: the report stage, on a store of known latencies."""
import json
import sys
from pathlib import Path

import pytest

from nar_tvm.api import DEFAULT_CHECKPOINT, extract
from nar_tvm.cost_model import load_checkpoint
from nar_tvm.dataset import DatasetStore
from nar_tvm.passes.opgraph import OpGraph

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import real_models  # noqa: E402


def _record(job, name, graph, ms):
    return {"job": job, "status": "ok", "model": {"name": name, "family": name.split("-")[0]},
            "platform": {"cpu": "Test CPU", "mcpu": "testcpu"}, "probe": None, "time": "2026-12-03T17:00:00+00:00",
            "graphs": {"fused": graph.to_dict()}, "measurement": {"median_ms": ms, "cv": 0.01, "compile_s": 1.0}}


def test_report_calibrates_on_the_shots_and_sets_extrapolated_models_apart(tmp_path):
    predictor = load_checkpoint(DEFAULT_CHECKPOINT)
    store = DatasetStore(tmp_path / "store")
    # A machine exactly 1.5x slower than the training data's on the ten calibration shots.
    shots = [extract(f"zoo:{family}:{seed}", level="fused") for family, seed in real_models.shot_specs(predictor)]
    for graph, ms in zip(shots, predictor.predict(shots).latency_ms):
        store.append(_record(f"zoo:{graph.name}@x", graph.name, graph, 1.5 * ms))
    inside = shots[0]
    big = OpGraph.from_dict(inside.to_dict())
    for node in big.nodes:
        node.flops *= 100
    inside_ms, big_ms = predictor.predict([inside, big]).latency_ms
    store.append(_record("real:small-64px@x", "small-64px", inside, 1.5 * inside_ms))
    store.append(_record("real:huge-224px@x", "huge-224px", big, 3 * 1.5 * big_ms))

    md, js = tmp_path / "report.md", tmp_path / "report.json"
    real_models.main(["report", "--store", str(tmp_path / "store"), "--md", str(md), "--json", str(js)])
    summary = json.loads(js.read_text())
    assert summary["calibration"]["shots"] == 10 and summary["calibration"]["method"] == "scale"
    rows = {row["model"]: row for row in summary["rows"]}
    small, huge = rows.pop("small-64px"), rows.pop("huge-224px")
    assert not rows
    assert small["size_factor"] == 1.0 and not small["flagged"]
    assert small["calibrated_ms"] == pytest.approx(small["measured_ms"], rel=1e-4)
    largest_trained_flops = predictor.uncertainty.extent[0, 1]
    assert big.flops > largest_trained_flops and huge["flagged"]
    assert huge["size_factor"] == pytest.approx(big.flops / largest_trained_flops)
    assert huge["measured_ms"] / huge["calibrated_ms"] == pytest.approx(3.0, rel=1e-4)
    text = md.read_text()
    assert "| huge-224px |" in text and "Test CPU (LLVM mcpu testcpu)" in text
    # The report says how to write it again, with the options that differ from the defaults.
    assert f"--store {tmp_path / 'store'} --md {md} --json {js}`" in text and "--checkpoint" not in text
    assert "Outside it: 1 models: MAPE 0.667" in text
