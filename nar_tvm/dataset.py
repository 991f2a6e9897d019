"""The latency dataset store: a folder of JSON-lines shards, append-only and resumable.

Each record is flushed and fsynced as it is written, so killing a profiling run
loses at most the model being measured; a torn last line is dropped on read.
Full shards are sealed (gzipped) so the committed data stays small. Nothing here
imports tvm or torch: training reads the store on machines without them.
"""
from __future__ import annotations

import gzip
import json
import os
import random
import statistics
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np

from nar_tvm.native import shared_core as on_shared_core
from nar_tvm.passes.opgraph import OpGraph

SHARD_PREFIX = "shard-"


class DatasetError(ValueError):
    pass


class DatasetStore:
    def __init__(self, root, shard_size: int = 200):
        self.root = Path(root)
        self.shard_size = shard_size
        self._active: Path | None = None
        self._active_count = 0

    # ------------------------------------------------------------ reading
    def shards(self) -> list[Path]:
        if not self.root.exists():
            return []
        if self.root.is_file():
            return [self.root]
        return sorted(p for p in self.root.iterdir()
                      if p.name.startswith(SHARD_PREFIX) and p.name.endswith((".jsonl", ".jsonl.gz")))

    @staticmethod
    def _read_shard(path: Path) -> Iterator[dict]:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    # Only a crash mid-write tears a line, and only the last one.
                    continue

    def records(self, status: str | None = None) -> Iterator[dict]:
        for shard in self.shards():
            for rec in self._read_shard(shard):
                if status is None or rec.get("status") == status:
                    yield rec

    def job_keys(self) -> set[str]:
        return {r["job"] for r in self.records()}

    # ------------------------------------------------------------ writing
    def _open_active(self) -> Path:
        if self._active is not None and self._active_count < self.shard_size:
            return self._active
        if self._active is not None:
            self.seal_active()
        self.root.mkdir(parents=True, exist_ok=True)
        open_shards = [p for p in self.shards() if p.name.endswith(".jsonl")]
        if open_shards:
            path = open_shards[-1]
            self._repair_tail(path)
            count = sum(1 for _ in self._read_shard(path))
            if count < self.shard_size:
                self._active, self._active_count = path, count
                return path
            self._active = path
            self.seal_active()
        index = len(self.shards())
        self._active, self._active_count = self.root / f"{SHARD_PREFIX}{index:05d}.jsonl", 0
        return self._active

    @staticmethod
    def _repair_tail(path: Path) -> None:
        """Cut a torn final line left by a crash, so the next append starts clean."""
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(path, "r+b") as fh:
                fh.truncate(data.rfind(b"\n") + 1)

    def append(self, record: dict) -> None:
        path = self._open_active()
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        self._active_count += 1

    def seal_active(self) -> Path | None:
        """Gzip the open shard (safe to call at any time; appends then start a new shard)."""
        path = self._active or next((p for p in reversed(self.shards()) if p.name.endswith(".jsonl")), None)
        self._active, self._active_count = None, 0
        if path is None or not path.exists():
            return None
        sealed = path.with_name(path.name + ".gz")
        tmp = sealed.with_name(sealed.name + ".tmp")
        with open(path, "rb") as src, gzip.open(tmp, "wb", compresslevel=9) as dst:
            dst.write(src.read())
        os.replace(tmp, sealed)
        path.unlink()
        return sealed


# ------------------------------------------------------------------ loading
class Sample:
    """One measured model, as training and evaluation see it."""

    __slots__ = ("job", "family", "name", "latency_ms", "record")

    def __init__(self, record: dict, latency_ms: float | None = None):
        self.record = record
        self.job = record["job"]
        self.family = record["model"].get("family", "unknown")
        self.name = record["model"].get("name", self.job)
        self.latency_ms = float(record["measurement"]["median_ms"] if latency_ms is None else latency_ms)

    def graph(self, level: str = "op") -> OpGraph:
        return OpGraph.from_dict(self.record["graphs"][level])

    def node_ms(self, level: str = "fused") -> list[float | None] | None:
        """Measured ms of each node's kernel in `level`'s graph, in node order (node_times):
        the labels of per-kernel training. None below the fused level, whose nodes are
        operators and not kernels, and for a model measured without a kernel profile."""
        if level != "fused":
            return None
        return node_times(self.graph(level), self.record["measurement"].get("kernels_ms"))


def node_times(graph: OpGraph, kernels_ms: dict | None) -> list[float | None] | None:
    """Measured ms of each fused node's kernel, None where the profile has no such kernel.

    The profile sums a kernel's calls, and a PrimFunc reused by several nodes (repeated
    blocks) is one kernel: its time is split evenly between them.
    """
    if not kernels_ms:
        return None
    calls = Counter(nd.kernel for nd in graph.nodes)
    return [kernels_ms[nd.kernel] / calls[nd.kernel] if nd.kernel in kernels_ms else None
            for nd in graph.nodes]


def platforms(path) -> dict[str, dict]:
    return {r["platform_id"]: r["platform"] for r in DatasetStore(path).records("ok")}


LABELS = ("first", "min")
# What training uses unless told otherwise: interference only slows a run down, so the fastest
# run is the better label (latency_report.md compares the two rules); on a store without
# re-measurements the two rules give the same labels.
TRAINING_LABELS = "min"


def load_samples(path, platform_id: str | None = None, labels: str = "first",
                 measured_before: str | None = None) -> list[Sample]:
    """Successfully measured samples of one platform (required when several are present).

    `labels`: "first", each model's first measurement; "min", the fastest of its first
    measurement and its re-measurements (`nar-tvm profile --remeasure`). Interference from
    other work on the machine only ever slows a run down, so the fastest run is the one
    closest to the model's own latency.
    `measured_before` (ISO time, UTC if no zone is given): only what was measured before it,
    so that training on a store that a profiler is still filling can be repeated later.
    """
    if labels not in LABELS:
        raise DatasetError(f"unknown label rule {labels!r}; choose from {LABELS}")
    if not Path(path).exists():
        raise DatasetError(f"{path}: no such dataset")
    store = DatasetStore(path)
    kept = measured_before_filter(measured_before)
    records = [r for r in store.records("ok") if kept(r)]
    if not records:
        raise DatasetError(f"{path}: no successfully measured records"
                           + (f" before {measured_before}" if measured_before else ""))
    ids = Counter(r["platform_id"] for r in records)
    if platform_id is None:
        if len(ids) > 1:
            listing = ", ".join(f"{k} ({n} records)" for k, n in ids.most_common())
            raise DatasetError(f"{path}: holds several platforms ({listing}); choose one with --platform")
        platform_id = next(iter(ids))
    elif platform_id not in ids:
        raise DatasetError(f"{path}: no records for platform {platform_id}; present: {sorted(ids)}")
    records = [r for r in records if r["platform_id"] == platform_id]
    if labels == "first":
        return [Sample(r) for r in records]
    fastest = {r["job"]: r["measurement"]["median_ms"] for r in records}
    for r in store.records("remeasure"):
        if r.get("remeasure_of") in fastest and kept(r):
            fastest[r["remeasure_of"]] = min(fastest[r["remeasure_of"]], r["measurement"]["median_ms"])
    return [Sample(r, fastest[r["job"]]) for r in records]


def _utc(text: str) -> datetime:
    when = datetime.fromisoformat(text)
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def measured_before_filter(when: str | None):
    """A filter keeping the records measured before `when` (all of them for None)."""
    if when is None:
        return lambda record: True
    try:
        limit = _utc(when)
    except ValueError:
        raise DatasetError(f"measured before {when!r}: not an ISO time such as 2026-12-04T13:20") from None

    def kept(record: dict) -> bool:
        if "time" not in record:
            raise DatasetError(f"record {record.get('job')!r} has no measurement time: it cannot be kept or "
                               f"dropped by time")
        return _utc(record["time"]) < limit
    return kept


def split_in_domain(samples: list[Sample], seed: int = 0, fractions=(0.8, 0.1, 0.1)) -> dict[str, list[Sample]]:
    """Random split within each family, so every family is in train, val and test."""
    rng = random.Random(seed)
    out = {"train": [], "val": [], "test": []}
    by_family = defaultdict(list)
    for s in sorted(samples, key=lambda s: s.job):
        by_family[s.family].append(s)
    for fam in sorted(by_family):
        items = by_family[fam]
        rng.shuffle(items)
        # Every family with a handful of models gets at least one val and one test model.
        n_val = max(round(len(items) * fractions[1]), int(len(items) >= 3))
        n_test = max(round(len(items) * fractions[2]), int(len(items) >= 3))
        out["val"] += items[:n_val]
        out["test"] += items[n_val:n_val + n_test]
        out["train"] += items[n_val + n_test:]
    return out


def split_out_of_domain(samples: list[Sample], held_out: str, seed: int = 0, val_fraction: float = 0.1) -> dict[str, list[Sample]]:
    """Leave one family out for test; validation is drawn from the other families."""
    families = {s.family for s in samples}
    if held_out not in families:
        raise DatasetError(f"family {held_out!r} is not in the dataset; families: {sorted(families)}")
    rest = sorted((s for s in samples if s.family != held_out), key=lambda s: s.job)
    random.Random(seed).shuffle(rest)
    n_val = round(len(rest) * val_fraction)
    return {"train": rest[n_val:], "val": rest[:n_val],
            "test": sorted((s for s in samples if s.family == held_out), key=lambda s: s.job)}


def split_by_size(samples: list[Sample], fractions=(0.8, 0.1, 0.1)) -> dict[str, list[Sample]]:
    """Train on the smallest graphs (by FLOPs), validate on the next, test on the largest:
    how a predictor extrapolates to graphs bigger than it trained on, with the choice of
    method made on the middle band. Deterministic (no seed)."""
    ordered = sorted(samples, key=lambda s: (s.graph("op").flops, s.job))
    n_train = round(len(ordered) * fractions[0])
    n_val = round(len(ordered) * fractions[1])
    return {"train": ordered[:n_train], "val": ordered[n_train:n_train + n_val],
            "test": ordered[n_train + n_val:]}


def make_split(samples: list[Sample], split: str, seed: int = 0) -> dict[str, list[Sample]]:
    """`in-domain`, `ood:<family>` or `size` (extrapolation to larger graphs)."""
    if split == "in-domain":
        return split_in_domain(samples, seed)
    if split.startswith("ood:"):
        return split_out_of_domain(samples, split[4:], seed)
    if split == "size":
        return split_by_size(samples)
    raise DatasetError(f"unknown split {split!r}; use 'in-domain', 'ood:<family>' or 'size'")


# -------------------------------------------------------------------- stats
def noise_floor(store: DatasetStore) -> dict | None:
    """How well one measurement predicts another of the same model, in the report's metrics.

    The re-measurement is scored as if it were a prediction of the first measurement, so
    `mape`, `acc@5%` and `acc@10%` are directly comparable with a predictor's figures on
    first-measurement labels. The median relative difference is the typical repeat error;
    the mean (MAPE) is larger because of the heavy tail of runs hit by interference.
    """
    first = {r["job"]: r["measurement"]["median_ms"] for r in store.records("ok")}
    pairs = [(r["measurement"]["median_ms"], first[r["remeasure_of"]])
             for r in store.records("remeasure") if r["remeasure_of"] in first]
    if not pairs:
        return None
    again, reference = np.array(pairs).T
    diffs = np.abs(again - reference) / reference
    return {"count": len(diffs), "median_rel_diff": float(np.median(diffs)),
            "p90_rel_diff": float(np.sort(diffs)[int(0.9 * (len(diffs) - 1))]),
            "mape": float(diffs.mean()), "acc@5%": float((diffs <= 0.05).mean()),
            "acc@10%": float((diffs <= 0.10).mean())}


def probe_runs(store: DatasetStore) -> list[dict]:
    """The machine speed probes of a store's runs, oldest first, each with the records it came with.

    A store grown on several machines shows several probes; `speed_vs_first` is each probe's
    panel time relative to the first one's (nar_tvm.probe.speed_ratio), so a second machine of
    the same fingerprint stands out as a ratio away from 1.
    """
    from nar_tvm.probe import Probe, same_machine, speed_ratio

    runs: dict[str, dict] = {}
    unprobed = Counter()
    for r in store.records():
        if r.get("status") not in ("ok", "remeasure"):
            continue
        if "probe" not in r:
            unprobed[r["platform_id"]] += 1
            continue
        pid = r["probe"]["id"]
        run = runs.setdefault(pid, {"id": pid, "probe": r["probe"], "platform_id": r["platform_id"],
                                    "cpu": r["platform"].get("cpu", ""), "records": 0})
        run["records"] += 1
    ordered = sorted(runs.values(), key=lambda run: run["probe"].get("time", ""))
    first = None
    for run in ordered:
        probe = Probe.from_dict(run["probe"])
        if first is None or first.version != probe.version:
            first = probe
        run["speed_vs_first"] = speed_ratio(first, probe)
        run["compared_with"] = first.id
        run["same_machine_as_first"] = same_machine(first, probe)
        run["steady"] = probe.steady
    out = list(ordered)
    for platform_id, n in sorted(unprobed.items()):
        out.insert(0, {"id": None, "probe": None, "platform_id": platform_id, "records": n})
    return out


def stats(path) -> dict:
    store = DatasetStore(path)
    if not store.shards():  # an empty summary would read as an empty dataset, not a wrong folder
        raise DatasetError(f"{path}: not a dataset (no {SHARD_PREFIX}*.jsonl.gz files in it; "
                           "`nar-tvm profile --out` writes them)")
    status = Counter()
    per_family: dict[str, list[float]] = defaultdict(list)
    cvs, compile_s, fps = [], [], Counter()
    shared_core = 0
    for r in store.records():
        status[r["status"]] += 1
        shared_core += on_shared_core(r.get("measurement", {}).get("cpu_share"))
        if r["status"] == "ok":
            m = r["measurement"]
            per_family[r["model"].get("family", "unknown")].append(m["median_ms"])
            cvs.append(m["cv"])
            compile_s.append(m["compile_s"])
            fps[r["platform_id"]] += 1
    families = {
        fam: {"count": len(v), "min_ms": min(v), "median_ms": statistics.median(v), "max_ms": max(v)}
        for fam, v in sorted(per_family.items())
    }
    return {
        "status": dict(status),
        "platforms": dict(fps),
        "families": families,
        "median_cv": statistics.median(cvs) if cvs else None,
        "median_compile_s": statistics.median(compile_s) if compile_s else None,
        # Measurements (first runs and repeats) whose timing shared its core: inflated.
        "shared_core": shared_core,
        "noise_floor": noise_floor(store),
        "probes": probe_runs(store),
    }
