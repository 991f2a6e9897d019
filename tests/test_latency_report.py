"""benchmarks/latency_report.py: its run-cache keys and its command line."""
import hashlib
import itertools
import shlex
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import latency_report  # noqa: E402
from latency_report_protocol import methods, worst_family_kernel_errors  # noqa: E402
from latency_report_runs import run_key  # noqa: E402

# Digests of the run-cache keys of every method over a grid of settings and tasks, as the
# keys were when the runs in benchmarks/latency_report.runs.jsonl were cached. A changed
# digest makes that method's cached runs train again (hours): update these only when that is
# meant, e.g. after changing the method's recipe.
KEY_DIGESTS = {
    "Linear (FLOPs)": "815324bbbbc84df2",
    "Linear (FLOPs + mem)": "3c014aca3e478a47",
    "GBT (xgboost)": "f4635bca05a4b68d",
    "NNLP (GraphSAGE)": "944111b2d503e331",
    "NAR-Former V2": "7ce199c9927f9396",
    "Transformer (plain)": "543e07806e3c1d92",
    "NAR-Former V2 - degree gate": "1b3ee8491ee1df34",
    "NAR-Former V2 - grouped FFN": "b88e1eb07a84e28b",
    "NAR-Former V2 - static feats": "adf6cde3127ac5fd",
    "NNLP (GraphSAGE) + kernel times": "f8c19a0d15729c2e",
    "NAR-Former V2 + kernel times": "5fa0d176fea9f5b3",
    "NNLP (GraphSAGE) + kernel-sum readout": "4ef644e6610b4f34",
    "NAR-Former V2 + kernel-sum readout": "67516d3e102749a9",
    "Transformer (plain) + kernel-sum readout": "0f686d6877599745",
    "NAR-Former V2 + kernel-sum readout - degree gate": "1f849f617367c404",
    "NAR-Former V2 + kernel-sum readout - grouped FFN": "8240eabac68eb16d",
    "NAR-Former V2 + kernel-sum readout - static feats": "ae0f65de8990558b",
    "NNLP (GraphSAGE) (large)": "d29cf55404d6ad70",
    "NNLP (GraphSAGE) (large) + kernel times": "a13042fa7343ed3c",
    "NAR-Former V2 (large)": "216cc4d157be3e12",
    "NAR-Former V2 (large) + kernel times": "7b15f1e1d99dd245",
    "NNLP (GraphSAGE) (large) + kernel-sum readout": "74a5b277fa4a3fa5",
}


def key_digest(name: str) -> str:
    sha = hashlib.sha256(b"snapshot").hexdigest()
    h = hashlib.sha256()
    for epochs, labels in itertools.product((120, 1), ("first", "min")):
        method = {m.name: m for m in methods(epochs)}[name]
        for split, level, seed, lr in itertools.product(("in-domain", "ood:alexnet", "ood:resnet"),
                                                        ("op", "fused"), (0, 1), (0.0, 3e-3)):
            h.update(run_key(sha, epochs, labels, method, (name, split, level, seed, lr)).encode())
    return h.hexdigest()[:16]


def test_every_method_has_a_pinned_key():
    assert [m.name for m in methods(120)] == list(KEY_DIGESTS)


@pytest.mark.parametrize("name", list(KEY_DIGESTS))
def test_run_cache_keys_are_unchanged(name):
    assert key_digest(name) == KEY_DIGESTS[name]


def test_keys_tell_runs_apart():
    sha = hashlib.sha256(b"snapshot").hexdigest()
    nar = {m.name: m for m in methods(120)}["NAR-Former V2"]
    task = ("NAR-Former V2", "in-domain", "fused", 0, 3e-3)
    keys = {run_key(sha, 120, "min", nar, task), run_key(sha, 120, "first", nar, task),
            run_key(sha, 60, "min", nar, task), run_key(sha[::-1], 120, "min", nar, task),
            run_key(sha, 120, "min", nar, task[:3] + (1, 3e-3))}
    assert len(keys) == 5


def committed_commands():
    """The regenerate command of each committed latency report, without its environment and pinning."""
    for report in sorted(BENCHMARKS.glob("latency_report*.md")):
        for line in report.read_text().splitlines():
            if "python benchmarks/latency_report.py" in line:
                args = shlex.split(line)
                yield report.name, args[args.index("benchmarks/latency_report.py") + 1:]


def test_committed_regenerate_commands_still_parse():
    commands = list(committed_commands())
    assert commands, "no committed report states its command"
    parser = latency_report.build_parser()
    for name, argv in commands:
        parser.parse_args(argv)  # exits on an option the report used that is gone
        # Rerunning a committed report must not replace the shipped default, which later
        # scripts retrained and fitted intervals to.
        written = Path(parser.parse_args(argv).checkpoint).resolve()
        assert written != (Path(latency_report.__file__).parents[1] / "nar_tvm" / "checkpoints" / "default.pt").resolve()


def test_held_out_kernel_error_pairs_each_kernel_with_its_measurement():
    from types import SimpleNamespace

    from nar_tvm.kernel_errors import samples_kernel_error

    from nar_tvm.passes.opgraph import OpGraph, OpNode, TensorSpec

    x = TensorSpec([1, 8, 4, 4])
    conv = lambda kernel: OpNode(op="kernel:conv2d", attrs={"groups": 1, "data_layout": "NCHW"},  # noqa: E731
                                 inputs=[x], outputs=[x], ops=["conv2d", "add"], kernel=kernel)
    gelu = OpNode(op="kernel:matmul", attrs={}, inputs=[x], outputs=[x], ops=["matmul", "erf"], kernel="fused_matmul_erf")
    graph = OpGraph(nodes=[conv("fused_conv2d"), gelu, conv("fused_conv2d")], edges=[(0, 1), (1, 2)],
                    level="fused", inputs=[x])

    class PerNode:  # predicts 1, 2 and 3 ms for the three nodes
        predicts_kernels = True

        def predict_kernels(self, g):
            return [1.0, 2.0, 3.0]

    sample = SimpleNamespace(record={"measurement": {"kernels_ms": {"fused_conv2d": 5.0, "fused_matmul_erf": 1.0}}})
    pooled = samples_kernel_error(PerNode(), [sample, sample], [graph, graph])
    # The conv kernel is called twice per model: its predicted time is the sum of both nodes.
    assert pooled == {"conv2d": {"kernels": 2, "measured_ms": 10.0, "predicted_ms": 8.0},
                      "matmul + erf": {"kernels": 2, "measured_ms": 2.0, "predicted_ms": 4.0}}


def test_worst_families_list_the_kernel_kinds_that_carry_their_error():
    def run(mape, kinds=None):
        return {"overall": {"mape": mape}, **({"kernel_kinds": kinds} if kinds is not None else {})}

    silu = {"conv2d + sigmoid": {"kernels": 10, "measured_ms": 20.0, "predicted_ms": 12.0},
            "conv2d": {"kernels": 30, "measured_ms": 30.0, "predicted_ms": 32.0}}
    runs = {"efficientnet": {0: run(0.30, silu), 1: run(0.20, silu)},
            "resnet": {0: run(0.02, {"conv2d": {"kernels": 5, "measured_ms": 5.0, "predicted_ms": 5.5}})},
            "vgg": {0: run(0.10)}}  # a model without kernel times: nothing to list
    worst = worst_family_kernel_errors(runs, worst=2)
    assert list(worst) == ["efficientnet"]  # vgg is second worst but has no kernel times
    rows = worst["efficientnet"]
    assert [r["kind"] for r in rows] == ["conv2d + sigmoid", "conv2d"]
    assert rows[0]["measured_ms"] == 40.0 and rows[0]["predicted_ms"] == 24.0 and rows[0]["kernels"] == 20
    assert rows[0]["error_share"] == pytest.approx(16 / 20)
    assert worst_family_kernel_errors(runs, worst=3).keys() == {"efficientnet", "resnet"}


def test_a_rerun_replaces_its_recorded_row(tmp_path, monkeypatch):
    import json

    import cost_prior_runs

    monkeypatch.setattr(cost_prior_runs, "RUNS", tmp_path / "runs.jsonl")
    old = {"split": "ood:vgg", "prior": True, "seed": 0, "test_mape": 0.05}  # written before attention/dataset existed
    other = {"split": "ood:vgg", "prior": True, "attention": "sigmoid-adjacency", "seed": 0, "test_mape": 0.07}
    elsewhere = {"split": "ood:vgg", "prior": True, "attention": "softmax", "seed": 0, "dataset": "zoo-x", "test_mape": 0.2}
    for row in (old, other, elsewhere):
        cost_prior_runs.record(row)
    # The baseline, and the same recipe on an earlier snapshot of the same store, are other runs.
    baseline = {"split": "ood:vgg", "prior": False, "method": "nnlp", "seed": 0, "test_mape": 0.1}
    earlier = {**elsewhere, "measured_before": "2026-12-04T13:00", "test_mape": 0.3}
    for row in (baseline, earlier):
        cost_prior_runs.record(row)
    rerun = {"split": "ood:vgg", "prior": True, "attention": "softmax", "seed": 0, "test_mape": 0.05, "kernel_kinds": {}}
    cost_prior_runs.record(rerun)
    rows = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert rows == [other, elsewhere, baseline, earlier, rerun]
    # A batch asks only for the runs not recorded yet: here none, so no worker starts.
    specs = [cost_prior_runs.Run("ood:vgg", 0), cost_prior_runs.Run("ood:vgg", 0, method="nnlp", prior=False),
             cost_prior_runs.Run("ood:vgg", 0, data=tmp_path / "zoo-x", measured_before="2026-12-04T13:00")]
    assert cost_prior_runs.batch(specs, jobs=2) == []
    # Asked for per-model predictions, the rows recorded without them are pending again.
    with_predictions = {**rerun, "predicted_ms": {"val": {}, "test": {}}}
    cost_prior_runs.record(with_predictions)
    assert cost_prior_runs.pending(specs) == []
    assert cost_prior_runs.pending(specs, with_predictions=True) == specs[1:]
    assert cost_prior_runs.rerun_differs(None, rerun) is None and cost_prior_runs.rerun_differs(rerun, rerun) is None
    assert cost_prior_runs.rerun_differs({**rerun, "best_epoch": 3}, {**rerun, "best_epoch": 4}) == \
        "ood:vgg seed 0: the rerun differs from its recorded row (best_epoch 3 -> 4)"
    cost_prior_runs.record(rerun)
    for row in rows:
        row.update(val_mape=0.01, test_acc10=0.5)
    monkeypatch.setattr(cost_prior_runs, "recorded", lambda: [cost_prior_runs.with_defaults(r) for r in rows])
    table = cost_prior_runs.table()
    assert "| zoo-x | 2026-12-04T13:00 | ood:vgg | shipped | yes | softmax | 0 | " in table
    assert "| nnlp | no | softmax | 0 |" in table


def test_a_row_says_where_it_trained_and_how_busy_that_machine_was(monkeypatch):
    import torch

    import cost_prior_runs
    from nar_tvm.platform import cpu_model_name

    monkeypatch.setattr(cost_prior_runs.os, "cpu_count", lambda: 16)
    assert cost_prior_runs.trained_on(4) == f"{cpu_model_name()}, 16 cores, torch {torch.__version__}, 4 runs in parallel"
    assert cost_prior_runs.trained_on(1).endswith(", 1 run in parallel")
    assert cost_prior_runs.trained_on(8, threads=2).endswith(", 8 runs in parallel, 2 threads each")
    # How busy the machine was does not change what a run measured: a rerun replaces the row.
    spec = cost_prior_runs.Run(split="ood:vgg", parallel_runs=16)
    assert cost_prior_runs.run_id(cost_prior_runs._row_of(spec)) == cost_prior_runs.run_id(
        cost_prior_runs._row_of(cost_prior_runs.replace(spec, parallel_runs=8, threads=2)))


def test_batch_holds_out_every_family_of_the_snapshot(tmp_path):
    import cost_prior_runs
    from nar_tvm.dataset import DatasetStore

    store = DatasetStore(tmp_path / "d")
    for i, (family, when) in enumerate((("vgg", "12:00"), ("vit", "12:10"), ("bert", "13:30"))):
        store.append({"job": f"j{i}", "status": "ok", "platform_id": "p", "platform": {}, "time": f"2026-12-04T{when}",
                      "model": {"family": family, "name": f"j{i}"}, "measurement": {"median_ms": 1.0}})
    assert cost_prior_runs.expand_splits(["in-domain", "ood:all"], tmp_path / "d", "2026-12-04T13:00") == [
        "in-domain", "ood:vgg", "ood:vit"]
    assert cost_prior_runs.expand_splits(["ood:bert"], tmp_path / "d", None) == ["ood:bert"]
    with pytest.raises(ValueError, match=r"split 'ood:bert': use .* of \['vgg', 'vit'\]"):
        cost_prior_runs.expand_splits(["ood:bert"], tmp_path / "d", "2026-12-04T13:00")
    # The report's snapshot of the same store at the same time holds the same models.
    from latency_report_runs import Snapshot

    snapshot = Snapshot.take(str(tmp_path / "d"), "min", "2026-12-04T13:00")
    try:
        assert snapshot.families == ["vgg", "vit"] and len(snapshot.path.read_text().splitlines()) == 2
    finally:
        snapshot.cleanup()


def test_family_targets_judge_every_held_out_family_and_the_modern_families_in_domain():
    from latency_report_protocol import family_targets

    def run(mape, families=None):
        return {"overall": {"mape": mape}, "families": {f: {"mape": m} for f, m in (families or {}).items()}}

    ood = {"resnet": {0: run(0.02), 1: run(0.04)}, "vit": {0: run(0.16), 1: run(0.12)}, "bert": {0: run(0.05)}}
    in_domain = {0: run(0.0, {"resnet": 0.01, "vgg": 0.02, "vit": 0.03}),
                 1: run(0.0, {"resnet": 0.03, "vgg": 0.02, "vit": 0.05})}
    lines = family_targets(in_domain, ood, modern=("vit", "bert"))
    # Held-out means: resnet 0.03, vit 0.14, bert 0.05 -> 0.0733 over three families; vit is the worst.
    assert "0.073 -> **not met**" in lines[0] and "3 held-out families" in lines[0]
    assert "worst vit 0.140 -> **met**" in lines[1]
    # In-domain: vit 0.04 against resnet 0.02 and vgg 0.02 -> 2.00x, above 1.5x.
    assert "0.040 vs 0.020 (2.00x) -> **not met**" in lines[2]
    # A zoo without modern families in-domain and no held-out runs: nothing to judge.
    assert family_targets({0: run(0.0, {"resnet": 0.01})}, {}, modern=("vit",)) == []


def test_families_table_judges_the_shipped_recipe_against_nnlp_on_one_snapshot(monkeypatch):
    import cost_prior_runs

    def row(split, seed, mape, method="shipped", families=None, kinds=None):
        return cost_prior_runs.with_defaults({
            "split": split, "seed": seed, "prior": method == "shipped", "method": method, "dataset": "zoo-x",
            "measured_before": "2026-12-04T13:00", "test_mape": mape,
            "test_family_mape": families or {split.removeprefix("ood:"): mape}, **({"kernel_kinds": kinds} if kinds else {})})
    rows = [row("ood:vgg", 0, 0.04), row("ood:vgg", 1, 0.06), row("ood:vit", 0, 0.20,
            kinds={"matmul + erf": {"kernels": 3, "measured_ms": 10.0, "predicted_ms": 6.0}}),
            row("ood:vit", 1, 0.08), row("ood:vgg", 0, 0.10, "nnlp"), row("ood:vit", 0, 0.30, "nnlp"),
            row("in-domain", 0, 0.02, families={"vgg": 0.01, "vit": 0.03}),
            # Another snapshot of the same store is not pooled in.
            {**row("ood:vgg", 2, 0.9), "measured_before": None}]
    monkeypatch.setattr(cost_prior_runs, "recorded", lambda: rows)
    text = cost_prior_runs.families("zoo-x", "2026-12-04T13:00")
    assert "| vgg | 0.050 ± 0.014 (2) | 0.100 (1) |" in text and "| vit | 0.140 ± 0.085 (2) | 0.300 (1) |" in text
    assert "| **mean** | **0.095** | **0.200** |" in text
    # Seed 0 holds out vgg at 0.04 and vit at 0.20, seed 1 at 0.06 and 0.08 (spreads: sample std over seeds).
    assert "| mean per seed | 0.120 (seed 0), 0.070 (seed 1); 0.095 ± 0.035 | 0.200 (seed 0) |" in text
    assert "| in-domain (all families) | 0.020 (1) |  |" in text
    # (0.05 + 0.14) / 2 = 0.095 against NNLP's 0.200: 52% lower.
    assert "0.095 vs 0.200 (52% lower) -> **met**" in text
    assert "worst vit 0.140 -> **met**" in text
    assert "0.030 vs 0.010 (3.00x) -> **not met**" in text
    assert "| vit | matmul + erf | 3 | 10.0 | 6.0 | 0.60 | 100% |" in text
    with pytest.raises(ValueError, match="no recorded runs on zoo-y"):
        cost_prior_runs.families("zoo-y", None)


def test_each_held_out_family_gets_the_configuration_the_other_families_chose():
    import cost_prior_runs

    def runs(**by_family):  # family -> MAPE per seed
        return {f: {s: {"overall": {"mape": m}} for s, m in enumerate(mapes)} for f, mapes in by_family.items()}

    ood = {"A": runs(vgg=[0.1, 0.1], vit=[0.1, 0.1], bert=[0.3, 0.3]),
           "B": runs(vgg=[0.2, 0.2], vit=[0.05, 0.05], bert=[0.05, 0.05]),
           "one seed": runs(vgg=[0.01], vit=[0.01], bert=[0.01])}
    # bert is held out: A averages 0.10 on vgg and vit, B 0.125, so bert gets A although B's
    # 0.05 on bert would have been better: its own test never enters its choice.
    assert cost_prior_runs.choose_on_other_families(ood, ["A", "B"], [0, 1]) == {"bert": "A", "vgg": "B", "vit": "B"}
    lines = cost_prior_runs.chosen_on_other_families(ood, ["A", "B", "one seed"], ["bert", "vgg", "vit"])
    assert "among: A; B." in lines[1]  # a one-seed variant is not a candidate
    assert "| bert | A | 0.300 ± 0.000 |" in lines and "| vgg | B | 0.200 ± 0.000 |" in lines
    assert "| **mean** | | **0.183** |" in lines
    assert any("worst bert 0.300 -> **not met**" in line for line in lines)
    # With one candidate left there is nothing to choose.
    assert cost_prior_runs.chosen_on_other_families(ood, ["A", "one seed"], ["bert", "vgg", "vit"]) == []


def test_rows_say_how_their_transcendentals_were_counted(monkeypatch):
    import cost_prior_runs

    spec = cost_prior_runs.Run("ood:vgg", transcendentals=True)
    new = {**cost_prior_runs._row_of(spec), "val_mape": 0.01, "test_mape": 0.02, "test_acc10": 0.9}
    old = {**new, "transcendentals": True}  # written before each fused op was counted on its own output
    assert new["transcendentals"] == "fused ops"
    assert cost_prior_runs.run_id(new) != cost_prior_runs.run_id(old)
    monkeypatch.setattr(cost_prior_runs, "recorded", lambda: [cost_prior_runs.with_defaults(r) for r in (old, new)])
    table = cost_prior_runs.table()
    assert "| yes + transcendentals (kernel outputs) |" in table and "| yes + transcendentals (fused ops) |" in table


def test_input_shape_tokens_are_a_run_of_their_own(monkeypatch):
    import cost_prior_runs

    plain = {**cost_prior_runs._row_of(cost_prior_runs.Run("ood:vgg")), "val_mape": 0.01, "test_mape": 0.02,
             "test_acc10": 0.9}
    shapes = {**cost_prior_runs._row_of(cost_prior_runs.Run("ood:vgg", input_shapes=True)), "val_mape": 0.01,
              "test_mape": 0.02, "test_acc10": 0.9}
    assert shapes["input_shapes"] and cost_prior_runs.run_id(plain) != cost_prior_runs.run_id(shapes)
    # Rows written before the option read as without it.
    legacy = {k: v for k, v in plain.items() if k != "input_shapes"}
    assert cost_prior_runs.run_id(legacy) == cost_prior_runs.run_id(plain)
    monkeypatch.setattr(cost_prior_runs, "recorded", lambda: [cost_prior_runs.with_defaults(r) for r in (plain, shapes)])
    assert "| ood:vgg | shipped + input shapes | yes | softmax | 0 |" in cost_prior_runs.table()
    with pytest.raises(SystemExit):
        cost_prior_runs.main(["batch", "--variants", "nnlp", "--input-shapes"])


def test_a_batch_starts_no_run_after_its_deadline():
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    import cost_prior_runs

    started, release = [], threading.Event()

    def slow(item):
        started.append(item)
        release.wait(5)
        return item * 10

    # Two workers, the deadline passing while the first two runs are still going: the other four
    # must not start, although the pool had room to queue them.
    threading.Timer(0.3, release.set).start()
    with ThreadPoolExecutor(4) as pool:
        results = cost_prior_runs.started_before(pool, slow, [1, 2, 3, 4, 5, 6], jobs=2, deadline=time.monotonic() + 0.2)
        assert sorted(results) == [10, 20] and sorted(started) == [1, 2]
    # Without a deadline every item runs, at most `jobs` at a time.
    with ThreadPoolExecutor(4) as pool:
        assert sorted(cost_prior_runs.started_before(pool, lambda i: i + 1, [1, 2, 3], jobs=2, deadline=None)) == [2, 3, 4]


def test_the_runs_table_spreads_are_sample_standard_deviations(monkeypatch):
    import cost_prior_runs

    rows = [{**cost_prior_runs._row_of(cost_prior_runs.Run("ood:vgg", seed)), "val_mape": 0.01,
             "test_mape": mape, "test_acc10": 0.9} for seed, mape in ((0, 0.02), (1, 0.04))]
    monkeypatch.setattr(cost_prior_runs, "recorded", lambda: [cost_prior_runs.with_defaults(r) for r in rows])
    # Two seeds 0.02 apart: sample std 0.0141 (the population's would be 0.0100).
    assert "| 0, 1 | 0.0100 ± 0.0000 | 0.0300 ± 0.0141 | 0.900 ± 0.0000 |" in cost_prior_runs.table()


def test_conv_efficiency_keeps_plain_pointwise_convs_per_call():
    from types import SimpleNamespace

    import conv_efficiency
    from nar_tvm.passes.opgraph import FusedOp, OpGraph, OpNode, TensorSpec

    def conv(kernel, channels, window=1, groups=1, epilogue=()):
        data, weight = TensorSpec([1, channels, 8, 8]), TensorSpec([4, channels // groups, window, window])
        out = TensorSpec([1, 4, 8, 8])
        attrs = {"groups": groups, "strides": [1, 1]}
        return OpNode("kernel:conv2d", attrs, inputs=[data], weights=[weight], outputs=[out], flops=1000,
                      ops=["conv2d", *epilogue], kernel=kernel,
                      fused=[FusedOp("conv2d", attrs, [data, weight], [out]), *(FusedOp(op) for op in epilogue)])

    nodes = [conv("plain", 16), conv("silu", 16, epilogue=("tir_sigmoid", "multiply")), conv("window", 16, window=3),
             conv("grouped", 16, groups=2), conv("twice", 64), conv("twice", 64)]
    graph = OpGraph(nodes, [], level="fused")
    ms = {"plain": 0.002, "silu": 1.0, "window": 1.0, "grouped": 1.0, "twice": 0.010}
    sample = SimpleNamespace(record={"model": {"family": "toy"}, "measurement": {"kernels_ms": ms}},
                             graph=lambda level: graph)
    rows = conv_efficiency.plain_pointwise_convs(list(conv_efficiency.plain_conv_calls([sample])))
    units = [n.flops + n.bytes for n in (nodes[0], nodes[4])]
    assert [(f, shape[1]) for f, shape, _ in rows] == [("toy", 16), ("toy", 64), ("toy", 64)]
    # A kernel the graph calls twice is timed once for both calls: each call gets half.
    assert rows[0][2] == pytest.approx(0.002 * 1e6 / units[0]) and rows[1][2] == pytest.approx(0.005 * 1e6 / units[1])
    table = conv_efficiency.tables(rows)
    assert f"| toy |  | {rows[0][2]:.3f} (1) |" in table and f"| {rows[1][2]:.3f} (2) |" in table


def test_conv_efficiency_groups_few_channel_convs_by_window_and_stride():
    from types import SimpleNamespace

    import conv_efficiency
    from nar_tvm.passes.opgraph import FusedOp, OpGraph, OpNode, TensorSpec

    def conv(kernel, channels, window, stride):
        data, weight = TensorSpec([1, channels, 32, 32]), TensorSpec([8, channels, window, window])
        out = TensorSpec([1, 8, 32 // stride, 32 // stride])
        attrs = {"groups": 1, "strides": [stride, stride]}
        return OpNode("kernel:conv2d", attrs, inputs=[data], weights=[weight], outputs=[out], flops=5000,
                      ops=["conv2d"], kernel=kernel, fused=[FusedOp("conv2d", attrs, [data, weight], [out])])

    nodes = [conv("patch", 3, 16, 16), conv("stem", 3, 7, 2), conv("wide", 16, 3, 1)]
    ms = {"patch": 0.004, "stem": 0.002, "wide": 1.0}
    sample = SimpleNamespace(record={"model": {"family": "toy"}, "measurement": {"kernels_ms": ms}},
                             graph=lambda level: OpGraph(nodes, [], level="fused"))
    rows = conv_efficiency.few_channel_convs(list(conv_efficiency.plain_conv_calls([sample])))
    assert [(w, st) for _, w, st, _ in rows] == [((16, 16), (16, 16)), ((7, 7), (2, 2))]  # 16 channels: not a stem
    assert rows[0][3] == pytest.approx(0.004 * 1e6 / (nodes[0].flops + nodes[0].bytes))
    assert f"| toy | 16x16 | 16x16 | {rows[0][3]:.3f} | 1 |" in conv_efficiency.few_channel_table(rows)


def test_cost_prior_runs_names_a_configuration_for_tables_and_for_checkpoints():
    import cost_prior_runs

    row = cost_prior_runs.with_defaults(cost_prior_runs._row_of(
        cost_prior_runs.Run("in-domain", transcendentals=True, input_shapes=True, attention="sigmoid-adjacency")))
    assert cost_prior_runs.configuration_label(row) == \
        "shipped + prior + transcendentals (fused ops) + input shapes (sigmoid-adjacency)"
    # The shipped checkpoint's provenance names its method this way; the calibration cache checks it.
    assert cost_prior_runs.configuration_label({**row, "attention": "softmax"}, cost_prior_runs.BASE_METHOD) == \
        "NAR-Former V2 + kernel-sum readout - grouped FFN + cost prior + transcendentals (fused ops) + input shapes"
    nnlp = cost_prior_runs.with_defaults(cost_prior_runs._row_of(cost_prior_runs.Run("ood:vit", method="nnlp")))
    assert cost_prior_runs.configuration_label(nnlp) == "nnlp"


def test_a_run_row_keeps_every_validation_and_test_models_prediction(monkeypatch):
    from types import SimpleNamespace

    import numpy as np

    import cost_prior_runs
    import nar_tvm.training

    samples = {part: [SimpleNamespace(job=f"zoo:vgg:{i}@p", family="vgg") for i in ids]
               for part, ids in (("train", [0]), ("val", [1]), ("test", [2, 3]))}
    predicted = {"zoo:vgg:1@p": 1.23456, "zoo:vgg:2@p": 20.0, "zoo:vgg:3@p": 3.5}
    predictor = SimpleNamespace(predicts_kernels=False, provenance={})

    def evaluate(_, chosen):
        pred = np.array([predicted[s.job] for s in chosen])
        report = {"mape": 0.1, "acc@10%": 0.5}
        return {"overall": report, "families": {"vgg": report}, "pred": pred, "true": pred}

    monkeypatch.setattr(nar_tvm.training, "train_on_dataset",
                        lambda *a, **k: (predictor, SimpleNamespace(best_epoch=4), samples))
    monkeypatch.setattr(nar_tvm.training, "evaluate_predictor", evaluate)
    row = cost_prior_runs.run(cost_prior_runs.Run(split="ood:vgg"))
    assert row["predicted_ms"] == {"val": {"zoo:vgg:1@p": 1.2346}, "test": {"zoo:vgg:2@p": 20.0, "zoo:vgg:3@p": 3.5}}
    assert row["models"] == 4 and row["best_epoch"] == 4


def test_ensemble_takes_the_geometric_mean_of_the_members_predictions(tmp_path, monkeypatch, labelled_store):
    import cost_prior_runs

    labelled_store("zoo-x", {"a": ("vit", 10.0), "b": ("vit", 20.0)})
    monkeypatch.setattr(cost_prior_runs, "DATA", tmp_path / "default-store")
    count, shapes = ({"split": "ood:vit", "seed": 0, "prior": True, "transcendentals": "fused ops", "dataset": "zoo-x",
                      "input_shapes": flag, "measured_before": "2026-12-04T13:00", "predicted_ms": {"test": preds}}
                     for flag, preds in ((False, {"a": 5.0, "b": 20.0}), (True, {"a": 20.0, "b": 20.0})))
    unpaired = {**count, "split": "ood:vgg"}
    # The whole store, not the 13:00 snapshot: one member only, so nothing to combine.
    whole_store = {**count, "measured_before": None}
    monkeypatch.setattr(cost_prior_runs, "recorded",
                        lambda: [cost_prior_runs.with_defaults(r) for r in (count, shapes, unpaired, whole_store)])
    text = cost_prior_runs.ensemble("zoo-x", "2026-12-04T13:00")
    # a: 5 and 20 ms against 10 -> geometric mean 10, exact; b: 20 ms from both. MAPEs 0.25, 0.5, 0.
    assert "| ood:vit | 0 | 0.250 | 0.500 | 0.000 |" in text and "ood:vgg" not in text
    assert "| **mean** | 1 runs | **0.250** | **0.500** | **0.000** |" in text
    with pytest.raises(ValueError, match="no split and seed of zoo-x measured before None"):
        cost_prior_runs.ensemble("zoo-x", None)


def test_ensemble_states_the_targets_once_a_seed_held_out_every_family(tmp_path, monkeypatch, labelled_store):
    import cost_prior_runs

    labelled_store("zoo-x", {"a": ("vit", 10.0), "b": ("vit", 20.0), "c": ("vgg", 10.0)})
    monkeypatch.setattr(cost_prior_runs, "DATA", tmp_path / "default-store")
    snapshot = {"seed": 0, "dataset": "zoo-x", "measured_before": "2026-12-04T13:00"}
    member = {**snapshot, "prior": True, "transcendentals": "fused ops"}
    rows = [{**member, "split": "ood:vit", "input_shapes": False, "predicted_ms": {"test": {"a": 5.0, "b": 20.0}}},
            {**member, "split": "ood:vit", "input_shapes": True, "predicted_ms": {"test": {"a": 20.0, "b": 20.0}}},
            {**member, "split": "ood:vgg", "input_shapes": False, "predicted_ms": {"test": {"c": 12.0}}},
            {**member, "split": "ood:vgg", "input_shapes": True, "predicted_ms": {"test": {"c": 12.0}}},
            # Seed 1 holds out one family only: no sixteen-family line of its own.
            {**member, "split": "ood:vgg", "seed": 1, "input_shapes": False, "predicted_ms": {"test": {"c": 10.0}}},
            {**member, "split": "ood:vgg", "seed": 1, "input_shapes": True, "predicted_ms": {"test": {"c": 10.0}}},
            {**snapshot, "split": "ood:vit", "method": "nnlp", "prior": False, "test_mape": 0.4, "test_family_mape": {}},
            {**snapshot, "split": "ood:vgg", "method": "nnlp", "prior": False, "test_mape": 0.4, "test_family_mape": {}}]
    monkeypatch.setattr(cost_prior_runs, "recorded", lambda: [cost_prior_runs.with_defaults(r) for r in rows])
    text = cost_prior_runs.ensemble("zoo-x", "2026-12-04T13:00")
    # vit 0.25 / 0.5 / 0 (as above), vgg 0.2 from every member: means 0.225, 0.35, 0.1.
    assert "| **mean over the 2 held-out families** | seed 0 | **0.225** | **0.350** | **0.100** |" in text
    assert "| seed 1 |" not in text and "(seeds 0):" in text
    assert "0.100 vs 0.400 (75% lower) -> **met**" in text
    assert "mean MAPE <= 0.06 over the 2 held-out families: 0.100 -> **not met**" in text
    assert "worst vgg 0.200 -> **not met**" in text
    assert "Every run of seeds" not in text  # one complete seed: nothing to pool across seeds

    # Seed 1 holds out vit too: both seeds' four runs combine per model. vit: a from 5, 20 (seed 0) and
    # 10, 10 (seed 1) -> 10, exact; b 20 from all. vgg: c from 12, 12, 10, 10 -> sqrt(120), APE 0.095.
    rows += [{**member, "split": "ood:vit", "seed": 1, "input_shapes": shapes, "predicted_ms": {"test": {"a": 10.0, "b": 20.0}}}
             for shapes in (False, True)]
    text = cost_prior_runs.ensemble("zoo-x", "2026-12-04T13:00")
    assert "| **mean over the 2 held-out families** | seed 1 |" in text
    assert ("Every run of seeds 0, 1 combined (4 predictions per model, the same geometric mean): mean over the 2 "
            "held-out families **0.048**, worst 0.095.") in text


def test_encoder_depth_is_a_run_of_its_own(monkeypatch):
    import cost_prior_runs

    scores = {"val_mape": 0.01, "test_mape": 0.02, "test_acc10": 0.9}
    recipe = {**cost_prior_runs._row_of(cost_prior_runs.Run("ood:vgg")), **scores}
    no_blocks = {**cost_prior_runs._row_of(cost_prior_runs.Run("ood:vgg", layers=0)), **scores}
    assert no_blocks["layers"] == 0 and cost_prior_runs.run_id(recipe) != cost_prior_runs.run_id(no_blocks)
    # Rows written before the option trained the recipe's depth.
    legacy = {k: v for k, v in recipe.items() if k != "layers"}
    assert cost_prior_runs.run_id(legacy) == cost_prior_runs.run_id(recipe)
    assert cost_prior_runs.configuration_label(cost_prior_runs.with_defaults(no_blocks)) == "shipped + prior (0 layers)"
    monkeypatch.setattr(cost_prior_runs, "recorded", lambda: [cost_prior_runs.with_defaults(r) for r in (recipe, no_blocks)])
    assert "| ood:vgg | shipped (0 layers) | yes | softmax | 0 |" in cost_prior_runs.table()
    for bad in (["--variants", "nnlp", "--layers", "0"], ["--layers", "-1"]):
        with pytest.raises(SystemExit):
            cost_prior_runs.main(["batch", *bad])
