"""The training and evaluation runs of benchmarks/latency_report.py.

A snapshot of the dataset, the runs on it (in spawned worker processes when there are several
jobs), the run cache that lets an interrupted or repeated report reuse finished runs, the
shipped checkpoint's training and the speed measurements. What is run is decided in
latency_report_protocol.py.
"""
from __future__ import annotations

import hashlib
import json
import statistics
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from nar_tvm.kernel_errors import samples_kernel_error
from nar_tvm.cost_model import load_checkpoint, regression_report, relative_error, save_checkpoint
from nar_tvm.cost_model.model import NARFormerV2Config
from nar_tvm.cost_model.nnlp import NNLPConfig
from nar_tvm.dataset import TRAINING_LABELS, DatasetStore, load_samples, make_split, measured_before_filter
from nar_tvm.training import train_on_dataset

from latency_report_protocol import LEVELS, TRAIN, Method, methods


# ------------------------------------------------------------------ running
Task = tuple  # (method name, split, level, seed, lr): one training run, the unit of parallel work


# Config fields added after runs were cached, with the value those runs had: a key leaves such a
# field out at that value, so it stays what it was.
FIELDS_ADDED_LATER = {NNLPConfig: {"readout": "sum"}, NARFormerV2Config: {"cost_prior": None}}


def run_key(snapshot_sha: str, epochs: int, labels: str, method: Method, task: Task) -> str:
    """What a run's result depends on: the data, the method's settings and the task itself.

    Cached runs are found by this key, so any change to what goes into it, or to how it is
    serialised, makes every cached run train again (tests/test_latency_report.py pins it)."""
    cfg = method.model_cfg
    model = asdict(cfg) if cfg is not None else None
    for name, absent in FIELDS_ADDED_LATER.get(type(cfg), {}).items():
        if model[name] == absent:
            del model[name]
    settings = {"snapshot": snapshot_sha, "epochs": epochs, "train": asdict(TRAIN),
                "model": model, "task": list(task)}
    if method.node_weight:
        settings["node_weight"] = method.node_weight
    if labels != "first":  # keys of runs cached before the rule existed stay valid
        settings["labels"] = labels
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


class Runner:
    """Trains and tests methods on splits of one snapshot; independent runs go to `jobs`
    spawned worker processes of one torch thread each (no shared state but the snapshot)."""

    def __init__(self, snapshot: Path, epochs: int, lrs, log, jobs: int = 1, samples=None,
                 cache: Path | None = None, labels: str = TRAINING_LABELS):
        self.samples = samples if samples is not None else load_samples(snapshot, labels=labels)
        self.labels = labels
        self.methods = {m.name: m for m in methods(epochs)}
        self.epochs = epochs
        self.lrs = lrs
        self.log = log
        self._graphs = {level: {} for level in LEVELS}
        self.chosen_lr: dict[tuple[str, str], float] = {}
        self.lr_search: dict[tuple[str, str], dict[float, float]] = {}
        self._done: dict[Task, dict] = {}
        self.cache, self.reused = cache, 0
        if cache is not None:
            self._snapshot_sha = hashlib.sha256(Path(snapshot).read_bytes()).hexdigest()
            self._load_cache()
        self.pool = None
        if jobs > 1:
            from concurrent.futures import ProcessPoolExecutor
            from multiprocessing import get_context
            self.pool = ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=_init_worker,
                                            initargs=(str(snapshot), epochs, labels))

    def run_key(self, task: Task) -> str:
        return run_key(self._snapshot_sha, self.epochs, self.labels, self.methods[task[0]], task)

    def _load_cache(self) -> None:
        """Finished runs of an interrupted or earlier report on the same snapshot and settings."""
        if not self.cache.exists():
            return
        for line in self.cache.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by an interruption
            task = tuple(entry["task"])
            if task[0] in self.methods and entry["key"] == self.run_key(task):
                self._done[task] = entry["result"]
        self.reused = len(self._done)

    def _remember(self, task: Task, result: dict) -> None:
        self._done[task] = result
        if self.cache is not None:
            with self.cache.open("a") as fh:
                fh.write(json.dumps({"key": self.run_key(task), "task": list(task), "result": result}) + "\n")

    def graphs(self, samples, level):
        cache = self._graphs[level]
        for s in samples:
            if s.job not in cache:
                cache[s.job] = s.graph(level)
        return [cache[s.job] for s in samples]

    def fit_predict(self, task: Task) -> dict:
        name, split, level, seed, lr = task
        parts = make_split(self.samples, split, seed)
        g = {k: self.graphs(v, level) for k, v in parts.items()}
        y = {k: np.array([s.latency_ms for s in v]) for k, v in parts.items()}
        model = self.methods[name].make(seed, lr)
        # Only the methods trained on kernel times take them (the others' fit has no such input).
        kernel_times = ({"node_targets": [s.node_ms(level) for s in parts["train"]]}
                        if self.methods[name].node_weight else {})
        wall, cpu = time.perf_counter(), time.process_time()
        model.fit(g["train"], y["train"], g["val"], y["val"], **kernel_times)
        train_wall, train_cpu = time.perf_counter() - wall, time.process_time() - cpu
        val_mape = float(relative_error(model.predict(g["val"]), y["val"]).mean())
        wall, cpu = time.perf_counter(), time.process_time()
        pred = model.predict(g["test"])
        pred_wall, pred_cpu = time.perf_counter() - wall, time.process_time() - cpu
        families = defaultdict(list)
        for i, s in enumerate(parts["test"]):
            families[s.family].append(i)
        extra = {}
        if split.startswith("ood:") and getattr(getattr(model, "predictor", None), "predicts_kernels", False):
            extra["kernel_kinds"] = samples_kernel_error(model.predictor, parts["test"], g["test"])
        return {
            "overall": regression_report(pred, y["test"]),
            "families": {f: regression_report(pred[i], y["test"][i]) for f, i in sorted(families.items())},
            "val_mape": val_mape, "train_wall_s": train_wall, "train_cpu_s": train_cpu,
            "predict_wall_s": pred_wall, "predict_cpu_s": pred_cpu, "n_test": len(pred),
            "epochs_run": len(model.history.epochs) if getattr(model, "history", None) else None,
            "pred": pred.tolist(), "true": y["test"].tolist(), "family": [s.family for s in parts["test"]],
            "lr": lr, **extra,
        }

    def _submit(self, tasks: list[Task]) -> dict:
        """Futures (or, with one job, finished results) of the tasks not already run."""
        todo = list(dict.fromkeys(t for t in tasks if t not in self._done))
        if self.pool is None:
            return dict.fromkeys(todo)  # run one by one in _collect, each remembered as it ends
        return {t: self.pool.submit(_worker_fit_predict, t) for t in todo}

    def _collect(self, pending: dict, deadline: float | None = None) -> None:
        for task, fut in pending.items():
            if self.pool is None:
                if deadline is not None and time.perf_counter() > deadline:
                    continue
                fut = self.fit_predict(task)
            else:
                if deadline is not None and time.perf_counter() > deadline and fut.cancel():
                    continue
                fut = fut.result()
            self._remember(task, fut)
            name, split, level, seed, lr = task
            self.log(f"{split:>18} seed {seed} {name:<30} [{level}] lr {lr:g} test MAPE {fut['overall']['mape']:.4f}"
                     f"  val {fut['val_mape']:.4f}  train {fut['train_cpu_s']:.1f}s cpu")

    def search_lrs(self, pairs) -> None:
        """Each neural method's lr at each level, chosen on the first in-domain seed's validation MAPE
        (the same candidates, so the same search budget, for every method)."""
        pairs = [(m, lv) for m, lv in pairs if m.neural and (m.name, lv) not in self.chosen_lr]
        tasks = [(m.name, "in-domain", lv, 0, lr) for m, lv in pairs for lr in self.lrs]
        self._collect(self._submit(tasks))
        for m, lv in pairs:
            scores = {lr: self._done[m.name, "in-domain", lv, 0, lr]["val_mape"] for lr in self.lrs}
            self.lr_search[m.name, lv] = scores
            self.chosen_lr[m.name, lv] = min(scores, key=scores.get)

    def task(self, method: Method, split: str, level: str, seed: int) -> Task:
        return (method.name, split, level, seed, self.chosen_lr.get((method.name, level), 0.0))

    def run_all(self, runs, deadline: float | None = None) -> dict:
        """Results of (method, split, level, seed) runs, in parallel; with a deadline, runs not
        yet started when it passes are dropped (and missing from the result)."""
        self.search_lrs({(m, lv) for m, _, lv, _ in runs})
        keys = {run: self.task(*run) for run in runs}
        self._collect(self._submit(list(keys.values())), deadline)
        return {run: self._done[t] for run, t in keys.items() if t in self._done}

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


_WORKER: Runner | None = None


def _init_worker(snapshot: str, epochs: int, labels: str) -> None:
    global _WORKER
    torch.set_num_threads(1)
    _WORKER = Runner(Path(snapshot), epochs, lrs=(), log=lambda msg: None, labels=labels)


def _worker_fit_predict(task: Task) -> dict:
    return _WORKER.fit_predict(task)


# ------------------------------------------------------------------ speed
def speed_section(predictor, level: str, samples, n_models: int, n_throughput: int, log) -> dict:
    """End-to-end prediction vs compile-and-measure of the same zoo models, and batched throughput."""
    from nar_tvm import api
    from nar_tvm.loaders import load_onnx
    from nar_tvm.measure import Protocol, Session, measure
    from nar_tvm.platform import PlatformSpec
    from nar_tvm.profiler import onnx_bytes_of
    from nar_tvm.zoo import generate

    out = {"level": level, "models": []}
    # One model of each of a few families, ones the dataset measured (so a record has its compile_s).
    by_family = {}
    for s in samples:
        by_family.setdefault(s.family, s)
    chosen = list(by_family.values())[:n_models]
    spec = PlatformSpec(threads=1)
    session = Session(spec)
    with tempfile.TemporaryDirectory(prefix="nar-tvm-speed-") as tmp:
        for s in chosen:
            params = s.record["model"]
            zoo_model = generate(params["family"], int(params["seed"]))
            path = Path(tmp) / f"{zoo_model.name}.onnx"
            path.write_bytes(onnx_bytes_of(zoo_model.build(), zoo_model.example_input()))
            api.predict(str(path), predictor=predictor)  # warm-up: first use imports and initialises TVM
            walls, cpus = [], []
            for _ in range(3):
                wall, cpu = time.perf_counter(), time.process_time()
                pred = api.predict(str(path), predictor=predictor)
                walls.append(time.perf_counter() - wall)
                cpus.append(time.process_time() - cpu)
            wall, cpu = time.perf_counter(), time.process_time()
            loaded = load_onnx(str(path))
            measured = measure(loaded.mod, spec, session, Protocol(), with_kernels=False)
            cm_wall, cm_cpu = time.perf_counter() - wall, time.process_time() - cpu
            row = {"name": zoo_model.name, "nodes": pred.nodes, "predicted_ms": pred.latency_ms,
                   "dataset_ms": s.latency_ms, "measured_here_ms": measured["median_ms"],
                   "predict_wall_s": statistics.median(walls), "predict_cpu_s": statistics.median(cpus),
                   "compile_measure_wall_s": cm_wall, "compile_measure_cpu_s": cm_cpu,
                   "compile_s": measured["compile_s"], "dataset_compile_s": s.record["measurement"]["compile_s"]}
            out["models"].append(row)
            log(f"speed {row['name']}: predict {row['predict_wall_s'] * 1e3:.0f} ms, "
                f"compile+measure {cm_wall:.1f} s")

    graphs = [s.graph(level) for s in samples]
    graphs = [graphs[i % len(graphs)] for i in range(n_throughput)]
    tokens = predictor.tokenizer.encode_many(graphs)
    timings = {}
    for name, fn in {
        "batched_end_to_end": lambda: predictor.predict(graphs),
        "batched_forward": lambda: predictor.predict_tokens(tokens),
        "tokenize": lambda: predictor.tokenizer.encode_many(graphs),
        "one_at_a_time_forward": lambda: [predictor.predict_tokens([t], batch_size=1) for t in tokens],
    }.items():
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        timings[name] = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
    out["throughput"] = {"graphs": n_throughput, "mean_nodes": float(np.mean([g.num_nodes for g in graphs])),
                         **timings}
    return out


# ------------------------------------------------------------------ the dataset snapshot
def read_all(path, attempts: int = 5) -> list[dict]:
    """Every record of a store that is being written; a shard sealed under the reader is read again."""
    for attempt in range(attempts):
        try:
            return list(DatasetStore(path).records())
        except FileNotFoundError:
            if attempt == attempts - 1:
                raise
            time.sleep(1.0)


@dataclass
class Snapshot:
    """One copy of the dataset for the whole report: the profiler keeps appending (and sealing shards)."""
    dir: tempfile.TemporaryDirectory
    path: Path
    samples: list
    store: DatasetStore
    platform: dict
    platform_id: str
    families: list[str]

    @classmethod
    def take(cls, dataset: str, labels: str, measured_before: str | None = None) -> Snapshot:
        """`measured_before`: what the store held at that time, so that a report on a store still
        being profiled can be resumed, or repeated, on the same data."""
        snapshot_dir = tempfile.TemporaryDirectory(prefix="nar-tvm-report-")
        path = Path(snapshot_dir.name) / "shard-00000.jsonl"
        kept = measured_before_filter(measured_before)
        path.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in read_all(dataset) if kept(r)))
        samples = load_samples(path, labels=labels)
        return cls(dir=snapshot_dir, path=path, samples=samples, store=DatasetStore(path),
                   platform=samples[0].record["platform"], platform_id=samples[0].record["platform_id"],
                   families=sorted({s.family for s in samples}))

    def cleanup(self) -> None:
        self.dir.cleanup()


def children_cpu_s() -> float:
    """CPU seconds of finished child processes (the training workers)."""
    import resource
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ------------------------------------------------------------------ the shipped checkpoint
@dataclass
class Shipped:
    method: Method
    seed: int
    lr: float
    level: str
    predictor: object  # as trained
    reloaded: object  # as loaded back from the checkpoint file
    history: object
    size_mb: float


def train_shipped(snapshot: Snapshot, ship: Method, seed: int, lr: float, level: str, epochs: int, labels: str,
                  dataset: str, report_name: str, checkpoint: str) -> Shipped:
    """Retrains the chosen run through the dataset glue, which records platform and provenance."""
    predictor, history, _ = train_on_dataset(
        snapshot.path, level=level, split="in-domain", seed=seed, model_cfg=ship.model_cfg,
        train_cfg=replace(TRAIN, epochs=epochs, seed=seed, lr=lr), progress=False,
        node_weight=ship.node_weight, labels=labels)
    predictor.provenance.update(dataset=dataset, dataset_models=len(snapshot.samples), method=ship.name,
                                report=report_name)
    ckpt = save_checkpoint(predictor, checkpoint)
    reloaded = load_checkpoint(ckpt)
    return Shipped(method=ship, seed=seed, lr=lr, level=level, predictor=predictor, reloaded=reloaded,
                   history=history, size_mb=ckpt.stat().st_size / 2 ** 20)
