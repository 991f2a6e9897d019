"""benchmarks/calibration_report.py: how a machine's panel store is split."""
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import calibration_report  # noqa: E402


def _sample(family, seed):
    return SimpleNamespace(family=family, job=f"zoo:{family}:{seed}@abc")


def test_panel_splits_into_known_families_not_trained_on_and_unseen_families():
    samples = [_sample("resnet", 7), _sample("resnet", 5000), _sample("vit", 5000), _sample("vgg", 5001)]
    known, unseen = calibration_report.split_panel(samples, trained_on={"zoo:resnet:7"},
                                                   trained_families={"resnet", "vgg"})
    assert [s.job for s in known] == ["zoo:resnet:5000@abc", "zoo:vgg:5001@abc"]
    assert [s.job for s in unseen] == ["zoo:vit:5000@abc"]


def test_a_machines_other_stores_are_its_zoo_and_unseen_family_stores(tmp_path, monkeypatch):
    for name in ("panel-m1", "zoo-m1", "unseen-families-m1", "zoo-m2", "zoo-m1-extra"):
        (tmp_path / name).mkdir()
    monkeypatch.setattr(calibration_report, "DATA", tmp_path)
    assert calibration_report.other_stores("m1") == [tmp_path / "zoo-m1", tmp_path / "unseen-families-m1"]
    assert calibration_report.other_stores("m3") == []


def test_leave_one_family_out_runs_tokenize_as_the_shipped_checkpoint(tmp_path, monkeypatch):
    """The intervals calibrate the shipped predictor's errors: its held-out retrainings must use
    its tokenizer options (transcendental count, input shapes), not the tokenizer's defaults."""
    import nar_tvm.training
    from nar_tvm.cost_model import NARFormerV2Config
    from nar_tvm.cost_model.tokenizer import TokenizerConfig

    config = TokenizerConfig(transcendentals=True, input_shape_dims=4)
    base = SimpleNamespace(
        provenance={"train_config": {"epochs": 1}, "level": "fused", "method": "m"}, platform={},
        model=SimpleNamespace(cfg=NARFormerV2Config()), tokenizer=SimpleNamespace(config=config))
    asked = {}

    def train_on_dataset(*args, **kwargs):
        asked.update(kwargs)
        raise StopIteration

    monkeypatch.setattr(calibration_report, "shipped", lambda: ("ckpt.pt", base))
    monkeypatch.setattr(calibration_report, "training_split", lambda _: ([_sample("vgg", 1)], None))
    monkeypatch.setattr(calibration_report, "LOFO_RUNS", tmp_path / "lofo.jsonl")
    monkeypatch.setattr(nar_tvm.training, "train_on_dataset", train_on_dataset)
    try:
        calibration_report.run_lofo(SimpleNamespace(families=None))
    except StopIteration:
        pass
    assert asked["split"] == "ood:vgg" and asked["tokenizer_cfg"] == config


def test_shipped_intervals_come_from_leave_one_family_out_runs_of_its_own_configuration():
    """Re-shipping the default means redoing its calibration: the cached held-out runs must be
    of the shipped method (lofo_rows refuses others), cover every family it trained on, and
    give exactly the width the checkpoint stores for graphs unlike its training data."""
    from nar_tvm.cost_model.uncertainty import family_conformal_quantile

    _, base = calibration_report.shipped()
    rows = calibration_report.lofo_rows()
    assert {r["method"] for r in rows} == {base.provenance["method"]}
    assert sorted(r["family"] for r in rows) == base.provenance["families"]
    residuals = calibration_report.lofo_residuals_by_family(calibration_report.cached_lofo())
    assert base.uncertainty.q_novel == family_conformal_quantile(residuals)
    models = sum(map(len, residuals.values()))
    assert f"leave-one-family-out runs ({models} models of {len(residuals)} families" in base.uncertainty.source
