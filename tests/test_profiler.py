"""Profiling: measurement in a worker, failures as records, resumable store, RPC."""
import gzip
import json
import os
import time
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from nar_tvm.dataset import DatasetStore, load_samples, split_in_domain, split_out_of_domain, stats, DatasetError
from nar_tvm.measure import Protocol
from nar_tvm.passes.host_target import host_target
from nar_tvm.platform import PlatformSpec
from nar_tvm.dataset import noise_floor
from nar_tvm.profiler import Job, Profiler, WorkerConfig, onnx_bytes_of, zoo_jobs

FAST = Protocol(warmup=1, repeat=3, min_repeat_ms=1)


def tiny_job(key, width=4, res=8):
    net = nn.Sequential(nn.Conv2d(3, width, 3), nn.BatchNorm2d(width), nn.ReLU()).eval()
    data = onnx_bytes_of(net, torch.randn(1, 3, res, res))
    return key, lambda: Job(key=key, name=key, family="tiny", onnx_bytes=data)


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds") / "data"
    store = DatasetStore(root, shard_size=2)
    prof = Profiler(store, WorkerConfig(PlatformSpec(), FAST))
    jobs = [tiny_job("file:a"), tiny_job("file:a-again"), tiny_job("file:b", width=6),
            ("file:junk", lambda: Job(key="file:junk", name="junk", onnx_bytes=b"not onnx"))]
    counts = prof.profile(jobs, progress=False)
    yield root, prof, counts
    prof.close()


def test_records_hold_graphs_measurement_and_fingerprint(profiled):
    root, prof, counts = profiled
    assert counts == {"ok": 2, "failed": 1, "duplicate": 1, "remeasure": 0, "skipped": 0}
    recs = {r["job"].split("@")[0]: r for r in DatasetStore(root).records()}
    ok = recs["file:a"]
    m = ok["measurement"]
    assert m["median_ms"] > 0 and len(m["repeats_ms"]) == 3 and m["compile_s"] > 0
    assert sorted(m["repeats_ms"])[1] == pytest.approx(m["median_ms"])
    assert any(k.startswith("fused_conv2d") for k in m["kernels_ms"])
    assert set(ok["graphs"]) == {"op", "fused"}
    # The probe in the measured compile saw legalization: the fused conv knows its attributes.
    (conv,) = [n for n in ok["graphs"]["fused"]["nodes"] if n["op"] == "kernel:conv2d"]
    assert conv["attrs"]["strides"] == [1, 1] and conv["attrs"]["padding"] == [0, 0, 0, 0]
    assert [f["op"] for f in conv["fused"]] == ["conv2d", "add", "relu"]
    fp = ok["platform"]
    assert fp["threads"] == 1 and fp["tvm"].startswith("0.27") and fp["pipeline"] == "default" and fp["cpu"]
    assert ok["platform_id"] == prof.platform_id
    # Same network under another key: recognised by graph hash, not measured twice.
    assert recs["file:a-again"]["status"] == "duplicate"
    assert recs["file:a-again"]["duplicate_of"] == ok["job"]
    assert recs["file:junk"]["status"] == "failed" and "not an ONNX model" in recs["file:junk"]["error"]
    # The run's machine speed probe rides with every record it measured.
    from nar_tvm.probe import PANEL

    probe = ok["probe"]
    assert sorted(probe["ms"]) == sorted(PANEL) and all(v > 0 for v in probe["ms"].values())
    assert recs["file:b"]["probe"] == probe and probe == prof.probe
    runs = stats(root)["probes"]
    assert [(r["id"], r["records"]) for r in runs] == [(probe["id"], 2)]
    assert runs[0]["speed_vs_first"] == 1.0 and runs[0]["same_machine_as_first"]


def test_resume_measures_nothing_twice(profiled):
    root, prof, _ = profiled
    before = len(list(DatasetStore(root).records()))
    counts = prof.profile([tiny_job("file:a"), tiny_job("file:b", width=6), tiny_job("file:c", width=5)],
                          progress=False)
    assert counts["skipped"] == 2 and counts["ok"] == 1
    assert len(list(DatasetStore(root).records())) == before + 1


def test_hang_becomes_failure_and_run_goes_on(tmp_path):
    store = DatasetStore(tmp_path / "d")
    prof = Profiler(store, WorkerConfig(PlatformSpec(), FAST), measure_timeout=0.01, probe=False)
    try:
        counts = prof.profile([tiny_job("file:slow")], progress=False)
        assert counts["failed"] == 1
        rec = next(store.records())
        assert rec["stage"] == "measure" and "timed out" in rec["error"]
        prof.measure_timeout = 120
        assert prof.profile([tiny_job("file:next", width=7)], progress=False)["ok"] == 1
    finally:
        prof.close()


def test_store_survives_torn_line_and_seals(tmp_path):
    store = DatasetStore(tmp_path / "s", shard_size=3)
    for i in range(4):
        store.append({"job": f"j{i}", "status": "failed"})
    shards = store.shards()
    assert [p.name for p in shards] == ["shard-00000.jsonl.gz", "shard-00001.jsonl"]
    with open(shards[1], "a") as fh:
        fh.write('{"job": "torn", "sta')  # a crash mid-write
    fresh = DatasetStore(tmp_path / "s", shard_size=3)
    assert fresh.job_keys() == {"j0", "j1", "j2", "j3"}
    fresh.append({"job": "j4", "status": "failed"})
    assert DatasetStore(tmp_path / "s").job_keys() == {"j0", "j1", "j2", "j3", "j4"}
    sealed = fresh.seal_active()
    with gzip.open(sealed, "rt") as fh:
        assert [json.loads(l)["job"] for l in fh] == ["j3", "j4"]


def _fake(job, family, ms, platform="p1"):
    return {"job": job, "status": "ok", "platform_id": platform, "platform": {},
            "model": {"family": family, "name": job}, "measurement": {"median_ms": ms, "cv": 0.01, "compile_s": 1}}


def test_splits_and_platform_separation(tmp_path):
    store = DatasetStore(tmp_path / "d")
    for fam in ("a", "b", "c"):
        for i in range(20):
            store.append(_fake(f"{fam}{i}", fam, 1 + i))
    samples = load_samples(tmp_path / "d")
    ind = split_in_domain(samples, seed=1)
    assert [len(ind[k]) for k in ("train", "val", "test")] == [48, 6, 6]
    for part in ind.values():
        assert {s.family for s in part} == {"a", "b", "c"}
    assert {s.job for s in ind["test"]} == {s.job for s in split_in_domain(samples, seed=1)["test"]}
    ood = split_out_of_domain(samples, "b", seed=0)
    assert {s.family for s in ood["test"]} == {"b"} and len(ood["test"]) == 20
    assert "b" not in {s.family for s in ood["train"] + ood["val"]}
    store.append(_fake("x", "a", 3.0, platform="p2"))
    with pytest.raises(DatasetError, match="several platforms"):
        load_samples(tmp_path / "d")
    assert len(load_samples(tmp_path / "d", platform_id="p2")) == 1
    s = stats(tmp_path / "d")
    assert s["families"]["a"]["count"] == 21 and s["families"]["b"]["max_ms"] == 20


def test_size_split_trains_on_the_smallest_graphs_and_tests_on_the_largest(tmp_path):
    import random

    from nar_tvm.dataset import make_split
    from nar_tvm.passes.opgraph import OpGraph, OpNode, TensorSpec

    store = DatasetStore(tmp_path / "d")
    kflops = list(range(1, 41))
    random.Random(0).shuffle(kflops)
    for i, k in enumerate(kflops):
        spec = TensorSpec([1, 4])
        graph = OpGraph(nodes=[OpNode(op="relax.nn.relu", inputs=[spec], outputs=[spec], flops=1000 * k)],
                        edges=[], level="op", inputs=[spec])
        store.append({**_fake(f"m{i}", "abc"[i % 3], 1.0 + i), "graphs": {"op": graph.to_dict()}})
    parts = make_split(load_samples(tmp_path / "d"), "size")
    flops = {part: sorted(s.graph("op").flops for s in samples) for part, samples in parts.items()}
    assert [len(flops[k]) for k in ("train", "val", "test")] == [32, 4, 4]
    assert flops["train"][-1] < flops["val"][0] and flops["val"][-1] < flops["test"][0]
    assert flops["test"] == [37000, 38000, 39000, 40000]
    with pytest.raises(DatasetError, match="'size'"):
        make_split(load_samples(tmp_path / "d"), "largest")


def test_profile_through_rpc_tracker(tmp_path):
    pytest.importorskip("tornado")
    from tvm import rpc
    from tvm.rpc.tracker import Tracker

    tracker = Tracker(host="127.0.0.1", port=9190, port_end=9290, silent=True)
    server = rpc.Server(host="127.0.0.1", port=9300, port_end=9400, key="loopback",
                        tracker_addr=("127.0.0.1", tracker.port), silent=True)
    try:
        time.sleep(0.5)
        store = DatasetStore(tmp_path / "rpc")
        # The loopback device is this machine, so this machine's target is the device's.
        cfg = WorkerConfig(PlatformSpec(target=host_target(num_cores=1)), FAST,
                           rpc_tracker=f"127.0.0.1:{tracker.port}", rpc_key="loopback")
        prof = Profiler(store, cfg, probe=False)
        try:
            assert prof.profile([tiny_job("file:remote")], progress=False)["ok"] == 1
        finally:
            prof.close()
        rec = next(store.records())
        assert rec["measurement"]["median_ms"] > 0 and "kernels_ms" not in rec["measurement"]
        # The loopback server runs full TVM, so it can say what it runs on: this machine.
        import platform

        import tvm_ffi
        llvm_cpu = tvm_ffi.get_global_func("tvm.codegen.llvm.GetHostCPUName")()
        assert rec["platform"]["cpu"] == f"remote:loopback (LLVM cpu {llvm_cpu})"
        assert rec["platform"]["cores"] == os.cpu_count() and rec["platform"]["host"] == platform.machine()
    finally:
        server.terminate()
        tracker.terminate()


def test_zoo_profile_then_remeasure_gives_noise_floor(tmp_path):
    store = DatasetStore(tmp_path / "zoo")
    prof = Profiler(store, WorkerConfig(PlatformSpec(), FAST), probe=False)
    try:
        assert prof.profile(zoo_jobs(["mobilenetv3"], 1, start_seed=2), progress=False)["ok"] == 1
        assert prof.profile(zoo_jobs(["mobilenetv3"], 1, start_seed=2), progress=False)["skipped"] == 1
        assert prof.profile(prof.remeasure_jobs(1.0), progress=False)["remeasure"] == 1
        assert prof.profile(prof.remeasure_jobs(1.0), progress=False)["skipped"] == 1
    finally:
        prof.close()
    first = next(store.records("ok"))
    assert first["model"]["params"]["resolution"] == 64 and first["job"].startswith("zoo:mobilenetv3:2@")
    again = next(store.records("remeasure"))
    assert again["remeasure_of"] == first["job"]
    nf = noise_floor(store)
    rel = abs(again["measurement"]["median_ms"] - first["measurement"]["median_ms"]) / first["measurement"]["median_ms"]
    assert nf["count"] == 1 and nf["median_rel_diff"] == pytest.approx(rel) and nf["mape"] == pytest.approx(rel)
    assert nf["acc@10%"] == float(rel <= 0.10) and nf["acc@5%"] == float(rel <= 0.05)


def test_min_label_is_the_fastest_of_a_models_runs(tmp_path):
    store = DatasetStore(tmp_path / "d")
    store.append(_fake("a", "f", 10.0))
    store.append(_fake("b", "f", 4.0))
    slower, faster = _fake("a", "f", 12.0), _fake("a", "f", 8.0)
    for again in (slower, faster):
        again.update(status="remeasure", remeasure_of=again["job"], job="remeasure:" + again["job"])
        store.append(again)
    first = {s.name: s.latency_ms for s in load_samples(tmp_path / "d")}
    fastest = {s.name: s.latency_ms for s in load_samples(tmp_path / "d", labels="min")}
    assert first == {"a": 10.0, "b": 4.0} and fastest == {"a": 8.0, "b": 4.0}
    with pytest.raises(DatasetError, match="unknown label rule 'mean'"):
        load_samples(tmp_path / "d", labels="mean")
    # Both re-measurements of "a" are scored against its first run, 10 ms: 20% and 20% off.
    nf = noise_floor(store)
    assert nf["count"] == 2 and nf["mape"] == pytest.approx(0.2) and nf["acc@10%"] == 0.0


def test_measured_before_keeps_what_the_store_held_then(tmp_path):
    store = DatasetStore(tmp_path / "d")
    for job, ms, when in (("a", 10.0, "2026-12-04T12:00:00+00:00"), ("b", 4.0, "2026-12-04T13:00:00+00:00")):
        store.append({**_fake(job, "f", ms), "time": when})
    again = {**_fake("a", "f", 7.0), "time": "2026-12-04T12:30:00+00:00"}
    again.update(status="remeasure", remeasure_of="a", job="remeasure:a")
    store.append(again)

    def labels(before):
        return {s.name: s.latency_ms for s in load_samples(tmp_path / "d", labels="min", measured_before=before)}
    assert labels(None) == {"a": 7.0, "b": 4.0}
    # A time without a zone is UTC; the re-measurement at 12:30 is not yet in at 12:15.
    assert labels("2026-12-04T12:15") == {"a": 10.0}
    assert labels("2026-12-04T12:45:00+00:00") == {"a": 7.0}
    with pytest.raises(DatasetError, match="no successfully measured records before 2026-12-04T11:00"):
        load_samples(tmp_path / "d", measured_before="2026-12-04T11:00")
    with pytest.raises(DatasetError, match="'noon': not an ISO time"):
        load_samples(tmp_path / "d", measured_before="noon")
    store.append(_fake("c", "f", 1.0))
    with pytest.raises(DatasetError, match="record 'c' has no measurement time"):
        load_samples(tmp_path / "d", measured_before="2026-12-04T12:15")


def test_next_model_is_exported_during_timing_only_off_the_measuring_cores():
    from nar_tvm.profiler import builds_beside_measurement

    spec = PlatformSpec()
    assert builds_beside_measurement(WorkerConfig(spec, FAST, cpu_affinity=[1]), {0})
    assert not builds_beside_measurement(WorkerConfig(spec, FAST, cpu_affinity=[0, 1]), {0})
    assert not builds_beside_measurement(WorkerConfig(spec, FAST, cpu_affinity=[1]), {0, 1})
    # Unpinned: the worker may land on this process's core.
    assert not builds_beside_measurement(WorkerConfig(spec, FAST), {0})
    remote = PlatformSpec(target={"kind": "llvm", "mtriple": "aarch64-linux-gnu"})
    assert builds_beside_measurement(WorkerConfig(remote, FAST, rpc_tracker="127.0.0.1:9190", rpc_key="pi"), {0, 1})


def test_an_rpc_device_needs_its_key_and_its_target():
    with pytest.raises(ValueError, match="--rpc-tracker needs --rpc-key"):
        WorkerConfig(PlatformSpec(target={"kind": "llvm"}), FAST, rpc_tracker="127.0.0.1:9190")
    # Without a target TVM would build for the profiling host's CPU and record that CPU.
    with pytest.raises(ValueError, match="RPC device 'pi' needs its TVM target: give --target"):
        WorkerConfig(PlatformSpec(), FAST, rpc_tracker="127.0.0.1:9190", rpc_key="pi")
    with pytest.raises(ValueError, match="RPC device 'jetson' needs its TVM target"):
        WorkerConfig(PlatformSpec(device="cuda"), FAST, rpc_tracker="127.0.0.1:9190", rpc_key="jetson")


def _probe(ms_scale, when):
    from nar_tvm.probe import PANEL, Probe

    return Probe(ms={name: (i + 1) * ms_scale for i, name in enumerate(PANEL)}, time=when).to_dict()


def test_probes_tell_machines_of_one_fingerprint_apart(tmp_path):
    from nar_tvm.probe import Probe, per_model_ratios, same_machine, speed_ratio

    a, a_again, b = _probe(1.0, "2026-01-01"), _probe(1.02, "2026-01-02"), _probe(1.16, "2026-01-03")
    pa, pb = Probe.from_dict(a), Probe.from_dict(b)
    assert speed_ratio(pa, pb) == pytest.approx(1.16)
    assert list(per_model_ratios(pa, pb).values()) == pytest.approx([1.16] * 6)
    assert same_machine(pa, Probe.from_dict(a_again)) and not same_machine(pa, pb)
    with pytest.raises(ValueError, match="version"):
        speed_ratio(pa, Probe(ms=pa.ms, version=pa.version + 1))
    with pytest.raises(ValueError, match="not a machine probe"):
        Probe.from_dict({"ms": {}})

    store = DatasetStore(tmp_path / "d")
    store.append(_fake("old", "f", 5.0))  # measured before probes existed
    for i, probe in enumerate((b, a, a_again, a)):
        rec = _fake(f"m{i}", "f", 5.0)
        rec["probe"] = probe
        store.append(rec)
    runs = stats(tmp_path / "d")["probes"]
    assert runs[0]["id"] is None and runs[0]["records"] == 1
    # Ordered by probe time; ratios relative to the oldest probe.
    assert [(r["id"], r["records"]) for r in runs[1:]] == [(a["id"], 2), (a_again["id"], 1), (b["id"], 1)]
    assert [round(r["speed_vs_first"], 3) for r in runs[1:]] == [1.0, 1.02, 1.16]
    assert [r["same_machine_as_first"] for r in runs[1:]] == [True, True, False]
    assert all(r["steady"] for r in runs[1:])  # probes that recorded no round spread count as steady

def test_probe_times_the_panel_in_interleaved_rounds_and_ignores_bursts(monkeypatch):
    import nar_tvm.measure as measure
    from nar_tvm import probe as probe_mod
    from nar_tvm.measure import Protocol

    monkeypatch.setattr(probe_mod, "panel_onnx", lambda names=probe_mod.PANEL: {n: n for n in names})
    monkeypatch.setattr("nar_tvm.loaders.load_onnx", lambda data, shapes, name: SimpleNamespace(mod=data))
    monkeypatch.setattr(measure, "build", lambda mod, spec, probe=None: mod)
    monkeypatch.setattr(measure, "random_inputs", lambda mod: [])
    loads = []
    session = SimpleNamespace(load=lambda ex: loads.append(ex) or ex, to_device=lambda arrays: arrays, remote=None)
    calls = []

    def timed(mod, args, session, protocol):
        calls.append((mod, protocol.repeat))
        rnd = sum(1 for m, _ in calls if m == mod)
        base = 1.0 + probe_mod.PANEL.index(mod)
        # A neighbour's burst slows the whole of round 2 threefold.
        return [base * (3.0 if rnd == 2 else 1.0) + 0.01 * i for i in range(protocol.repeat)]

    monkeypatch.setattr(measure, "time_loaded", timed)
    got = probe_mod.measure_probe(None, session, Protocol(), rounds=4)
    assert loads == list(probe_mod.PANEL)  # each model loaded once, not once per round
    assert calls == [(n, probe_mod.REPEATS_PER_ROUND) for _ in range(4) for n in probe_mod.PANEL]
    # 12 timings per model, 3 of them in the burst: the 10th percentile is an unburst timing.
    assert list(got.ms.values()) == pytest.approx([1.0 + i + 0.001 for i in range(6)], abs=0.01)
    assert got.version == probe_mod.PANEL_VERSION and all(cv > 0.3 for cv in got.cv.values())
    # The burst does not move the probe, but it shows: round 2 ran 3x slower than the others.
    assert got.round_spread == pytest.approx(2.0, abs=0.02) and not got.steady
    assert probe_mod.Probe.from_dict(got.to_dict()).round_spread == got.round_spread
    # A local probe records the share of the core its timings got (here pure Python, so busy).
    assert got.cpu_share > 0 and probe_mod.Probe.from_dict(got.to_dict()).cpu_share == got.cpu_share
    remote = probe_mod.measure_probe(None, SimpleNamespace(**{**vars(session), "remote": object()}), Protocol(), rounds=1)
    assert remote.cpu_share is None and "cpu_share" not in remote.to_dict()
    with pytest.raises(ValueError, match="unknown runner"):
        probe_mod.measure_probe(None, None, Protocol(), runner="gpu")


def test_probes_of_different_panels_are_reported_as_not_comparable():
    from nar_tvm.probe import Probe, describe

    old = Probe(ms={"conv3x3": 3.0}, version=1)
    new = Probe(ms={"conv3x3": 3.0})
    assert "not comparable" in describe(new, old) and "panel v1" in describe(new, old)
    assert "same machine" in describe(new, Probe(ms={"conv3x3": 3.2}))
    assert "a different machine" in describe(new, Probe(ms={"conv3x3": 3.5}))
    assert "unsteady" not in describe(new, Probe(ms={"conv3x3": 3.2}, round_spread=0.04))
    shaky = Probe(ms={"conv3x3": 3.2}, round_spread=0.3)
    assert "unsteady during probe " + shaky.id in describe(new, shaky)
    assert "same machine, but an unsteady probe makes this verdict unreliable" in describe(new, shaky)
    # Shared throughout, every round is slow alike: a small spread, yet not a reading of this machine.
    starved = Probe(ms={"conv3x3": 6.0}, round_spread=0.02, cpu_share=0.5)
    assert not starved.steady and starved.id == Probe(ms={"conv3x3": 6.0}).id
    text = describe(starved, new)
    assert f"other work shared the core during probe {starved.id}: its timings got 50% of it" in text
    assert "a different machine, but an unsteady probe makes this verdict unreliable" in text
    assert Probe(ms={"conv3x3": 3.0}, cpu_share=0.95).steady


def test_round_spread_compares_rounds_not_models():
    from nar_tvm.probe import spread_of_rounds

    # Models of very different speeds, each steady over its rounds: no spread.
    assert spread_of_rounds({"a": [1.0, 1.0, 1.0], "b": [50.0, 50.0, 50.0]}) == pytest.approx(0.0)
    # The whole host 20% slower in one round.
    assert spread_of_rounds({"a": [1.0, 1.2, 1.0], "b": [50.0, 60.0, 50.0]}) == pytest.approx(0.2)
    # One model slow in one round counts as its share of the panel's geometric mean.
    assert spread_of_rounds({"a": [1.0, 1.44, 1.0], "b": [50.0, 50.0, 50.0]}) == pytest.approx(0.2)


def _stored_record(job_prefix: str) -> dict:
    from pathlib import Path

    shard = Path(__file__).resolve().parent.parent / "benchmarks/data/cpu-znver4-1t/shard-00000.jsonl.gz"
    with gzip.open(shard, "rt") as fh:
        return next(r for r in map(json.loads, fh) if r["job"].startswith(job_prefix))


def test_reextract_rewrites_graphs_and_keeps_measurements(tmp_path):
    import copy

    from nar_tvm.dataset import node_times
    from nar_tvm.passes.opgraph import OpGraph
    from nar_tvm.reextract import reextract_store

    # A record of the shipped dataset as it was measured, with OpGraph /1: no attributes or
    # fused operators on fused nodes (the store itself has been re-extracted since).
    rec = _stored_record("zoo:alexnet:0@")
    fused_v1 = rec["graphs"]["fused"]
    fused_v1["format"] = "nar-tvm.opgraph/1"
    for node in fused_v1["nodes"]:
        node["attrs"] = {}
        node.pop("fused", None)
    again = {"job": "remeasure:" + rec["job"], "status": "remeasure", "remeasure_of": rec["job"],
             "model": rec["model"], "measurement": {"median_ms": 70.0}}
    drifted = copy.deepcopy(rec)
    drifted["job"] = "zoo:alexnet:0@drifted-params"
    drifted["model"]["params"]["stem_kernel"] = 7  # not what zoo:alexnet:0 generates
    renamed = copy.deepcopy(rec)
    renamed["job"] = "zoo:alexnet:0@renamed-kernel"
    renamed["graphs"]["fused"]["nodes"][0]["kernel"] = "fused_conv2d_add_relu9"
    src = tmp_path / "src"
    src.mkdir()
    with gzip.open(src / "shard-00000.jsonl.gz", "wt") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in (rec, again, drifted, renamed))
    (src / "README.md").write_text("card")

    counts = reextract_store(src, tmp_path / "out")
    assert counts == {"rewritten": 1, "kept": 1, "mismatch": 2}
    # A rerun (after an interruption) skips the finished shard instead of extracting it again.
    assert reextract_store(src, tmp_path / "out") == {}
    out = list(DatasetStore(tmp_path / "out").records())
    assert [r["job"] for r in out] == [rec["job"], again["job"], drifted["job"], renamed["job"]]
    assert out[1:] == [again, drifted, renamed]  # left exactly as they were
    assert (tmp_path / "out" / "README.md").read_text() == "card"
    new = out[0]
    assert {k: v for k, v in new.items() if k != "graphs"} == {k: v for k, v in rec.items() if k != "graphs"}
    op = OpGraph.from_dict(new["graphs"]["op"])
    assert op.content_hash() == rec["graph_hash"] and new["graphs"]["op"]["nodes"] == rec["graphs"]["op"]["nodes"]
    fused, old = OpGraph.from_dict(new["graphs"]["fused"]), OpGraph.from_dict(rec["graphs"]["fused"])
    kernels = rec["measurement"]["kernels_ms"]
    assert node_times(fused, kernels) == node_times(old, kernels) and None not in node_times(fused, kernels)[:3]
    stem = fused.nodes[0]
    # AlexNet's 11x11 stride-4 stem, padding 2: now on the node, not only in the weights' shape.
    assert stem.attrs["strides"] == [4, 4] and stem.attrs["padding"] == [2, 2, 2, 2]
    assert [f.op for f in stem.fused] == ["conv2d", "add", "relu"] and stem.fused[0].inputs[1].shape == [48, 3, 11, 11]
    assert fused.nodes[1].attrs["pool_size"] == [3, 3] and old.nodes[1].attrs == {}


def test_dataset_stats_prints_probes_of_a_new_panel_as_not_comparable(tmp_path, capsys):
    from nar_tvm.cli import _print_probes
    from nar_tvm.probe import PANEL, Probe

    store = DatasetStore(tmp_path / "d")
    probes = [Probe(ms={n: 1.0 for n in PANEL}, version=1, time="2026-01-01"),
              Probe(ms={n: 1.3 for n in PANEL}, time="2026-01-02", round_spread=0.2),
              Probe(ms={n: 1.31 for n in PANEL}, time="2026-01-03", round_spread=0.03)]
    for i, probe in enumerate(probes):
        rec = _fake(f"m{i}", "f", 5.0)
        rec["probe"] = probe.to_dict()
        store.append(rec)
    _print_probes(stats(tmp_path / "d")["probes"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].endswith("the first")
    assert lines[3].endswith("first probe of panel v2; not comparable with the ones above  "
                             "(host unsteady during this probe)")
    assert lines[5].endswith(f"x1.008 of {probes[1].id}")


def test_remeasure_takes_only_the_families_asked_for(tmp_path):
    store = DatasetStore(tmp_path / "d")
    prof = Profiler(store, WorkerConfig(PlatformSpec(), FAST), probe=False)
    try:
        for family, seed in (("vgg", 0), ("vgg", 1), ("vit", 0)):
            store.append({"job": f"zoo:{family}:{seed}@{prof.platform_id}", "status": "ok",
                          "platform_id": prof.platform_id, "model": {"family": family, "seed": seed},
                          "measurement": {"median_ms": 1.0}})
        keys = lambda **kw: sorted(key for key, _ in prof.remeasure_jobs(1.0, **kw))
        assert keys(families=["vgg"]) == ["remeasure:zoo:vgg:0", "remeasure:zoo:vgg:1"]
        assert keys() == ["remeasure:zoo:vgg:0", "remeasure:zoo:vgg:1", "remeasure:zoo:vit:0"]
    finally:
        prof.close()
