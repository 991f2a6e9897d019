"""Latency-prediction report: NAR-Former V2 against baselines on the measured dataset.

    OMP_NUM_THREADS=1 taskset -c 0,1 python benchmarks/latency_report.py --jobs 2

writes benchmarks/latency_report.md, the PNG plots it links and
nar_tvm/checkpoints/default.pt (the best neural method by validation, to ship). One
torch thread per training run, `--jobs` runs at a time; finished runs are kept in
a .runs.jsonl file beside the report, so an interrupted report resumes where it stopped.

Protocol, all on one snapshot of the dataset taken at the start:
* graph level: NAR-Former V2 is trained on op-level and fused-level graphs (in-domain,
  every seed); the level with the lower mean validation MAPE is used for everything else;
* learning rate: each neural method picks its own from the same candidates on the
  validation part of the first in-domain seed (the same search budget for all of them);
* in-domain: every method on every seed (split and initialisation both follow the seed);
* out-of-domain: each family held out in turn, the non-ablation methods, every OOD seed;
* models are compared on test; every choice (level, lr, epoch, shipped model) is made on validation.
"""
from __future__ import annotations

import os

# TVM's thread pool (the speed section compiles and runs models) reads this at import.
os.environ.setdefault("TVM_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import hashlib
import json
import shlex
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from nar_tvm.cost_model import load_checkpoint, recipes, regression_report, relative_error, save_checkpoint
from nar_tvm.cost_model.baselines import GradientBoostedTrees, LogLinear, NeuralRegressor
from nar_tvm.cost_model.nnlp import NNLPConfig
from nar_tvm.dataset import LABELS, TRAINING_LABELS, DatasetStore, load_samples, make_split, noise_floor
from nar_tvm.training import train_on_dataset

HERE = Path(__file__).resolve().parent
LEVELS = ("op", "fused")
METRICS = ("mape", "rmse", "acc@5%", "acc@10%")

NAR, NNLP, TRAIN = recipes.NAR_FORMER_V2, recipes.NNLP_GRAPHSAGE, recipes.TRAINING
KERNEL_WEIGHT = 1.0
NNLP_KERNELS = replace(NNLP, readout="kernels")
NNLP_LARGE_KERNELS = replace(recipes.NNLP_LARGE, readout="kernels")


@dataclass(eq=False)  # identity-hashed: runs are keyed by their method
class Method:
    name: str
    make: Callable[[int, float], object]  # (seed, lr) -> a regressor with fit / predict
    neural: bool = False
    ood: bool = True  # ablations and the plain Transformer are in-domain only, to fit the compute budget
    ablation: bool = False  # gets --ablation-seeds seeds in-domain
    model_cfg: object = None
    node_weight: float = 0.0  # > 0: also trained on the measured kernel times (cost_model.train)


def neural(cfg, epochs, node_weight: float = 0.0):
    return lambda seed, lr: NeuralRegressor(cfg, replace(TRAIN, epochs=epochs, seed=seed, lr=lr),
                                            node_weight=node_weight)


def nar_variants(cfg, suffix: str = "") -> list[tuple[str, object, bool, bool]]:
    """NAR-Former V2 in configuration `cfg`, the plain Transformer and the paper's three
    ablations of it: (name, config, run out of domain, is an ablation)."""
    return [
        (f"NAR-Former V2{suffix}", cfg, True, False),
        (f"Transformer (plain){suffix}", replace(cfg, use_graph_attention=False, use_degree_gate=False,
                                                 grouped_ffn=False), False, False),
        (f"NAR-Former V2{suffix} - degree gate", replace(cfg, use_degree_gate=False), False, True),
        (f"NAR-Former V2{suffix} - grouped FFN", replace(cfg, grouped_ffn=False), False, True),
        (f"NAR-Former V2{suffix} - static feats", replace(cfg, use_static=False), False, True),
    ]


def methods(epochs: int) -> list[Method]:
    kernel_sum = " + kernel-sum readout"
    return [
        Method("Linear (FLOPs)", lambda seed, lr: LogLinear(("flops",))),
        Method("Linear (FLOPs + mem)", lambda seed, lr: LogLinear(("flops", "memory_access"))),
        Method("GBT (xgboost)", lambda seed, lr: GradientBoostedTrees(seed=seed)),
        Method("NNLP (GraphSAGE)", neural(NNLP, epochs), neural=True, model_cfg=NNLP),
        *[Method(name, neural(cfg, epochs), neural=True, ood=ood, ablation=ablation, model_cfg=cfg)
          for name, cfg, ood, ablation in nar_variants(NAR)],
        # Extensions beyond the paper: the profiler's per-kernel times as extra supervision, and
        # with them a readout that adds up per-node kernel times (model.READOUTS, "kernels").
        *[Method(f"{name} + kernel times", neural(cfg, epochs, KERNEL_WEIGHT), neural=True, model_cfg=cfg,
                 node_weight=KERNEL_WEIGHT)
          for name, cfg in (("NNLP (GraphSAGE)", NNLP), ("NAR-Former V2", NAR))],
        Method(f"NNLP (GraphSAGE){kernel_sum}", neural(NNLP_KERNELS, epochs, KERNEL_WEIGHT), neural=True,
               model_cfg=NNLP_KERNELS, node_weight=KERNEL_WEIGHT),
        # The paper's ablations again on the configuration that validates best.
        *[Method(name, neural(cfg, epochs, KERNEL_WEIGHT), neural=True, ood=ood, ablation=ablation, model_cfg=cfg,
                 node_weight=KERNEL_WEIGHT)
          for name, cfg, ood, ablation in nar_variants(replace(NAR, readout="kernels"), kernel_sum)],
        # Both networks at the sizes benchmarks/recipe_sweep.md chose on validation from one
        # grid searched for both; in-domain only (out of domain they would cost hours more).
        *[Method(f"{name} (large){suffix}", neural(cfg, epochs, weight), neural=True, ood=False,
                 model_cfg=cfg, node_weight=weight)
          for name, cfg in (("NNLP (GraphSAGE)", recipes.NNLP_LARGE), ("NAR-Former V2", recipes.NAR_FORMER_V2_LARGE))
          for suffix, weight in (("", 0.0), (" + kernel times", KERNEL_WEIGHT))],
        # The baseline's best shot with the kernel-sum readout too (the large NAR-Former V2 with
        # it, 4x the cost, was not run).
        Method(f"NNLP (GraphSAGE) (large){kernel_sum}", neural(NNLP_LARGE_KERNELS, epochs, KERNEL_WEIGHT), neural=True,
               ood=False, model_cfg=NNLP_LARGE_KERNELS, node_weight=KERNEL_WEIGHT),
    ]


def pinning() -> str:
    """The taskset prefix that reproduces this run's CPU affinity ('' when unpinned)."""
    cores = sorted(os.sched_getaffinity(0))
    return "" if len(cores) == os.cpu_count() else f"taskset -c {','.join(map(str, cores))} "


def children_cpu_s() -> float:
    """CPU seconds of finished child processes (the training workers)."""
    import resource
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ------------------------------------------------------------------ running
Task = tuple  # (method name, split, level, seed, lr): one training run, the unit of parallel work


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
        """What a run's result depends on: the data, the method's settings and the task itself."""
        method = self.methods[task[0]]
        cfg = method.model_cfg
        model = asdict(cfg) if cfg is not None else None
        if isinstance(cfg, NNLPConfig) and cfg.readout == "sum":
            del model["readout"]  # added after runs were cached: at its default a key stays as it was
        settings = {"snapshot": self._snapshot_sha, "epochs": self.epochs, "train": asdict(TRAIN),
                    "model": model, "task": list(task)}
        if method.node_weight:
            settings["node_weight"] = method.node_weight
        if self.labels != "first":  # keys of runs cached before the rule existed stay valid
            settings["labels"] = self.labels
        return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()

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
        return {
            "overall": regression_report(pred, y["test"]),
            "families": {f: regression_report(pred[i], y["test"][i]) for f, i in sorted(families.items())},
            "val_mape": val_mape, "train_wall_s": train_wall, "train_cpu_s": train_cpu,
            "predict_wall_s": pred_wall, "predict_cpu_s": pred_cpu, "n_test": len(pred),
            "epochs_run": len(model.history.epochs) if getattr(model, "history", None) else None,
            "pred": pred.tolist(), "true": y["test"].tolist(), "family": [s.family for s in parts["test"]],
            "lr": lr,
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


# ------------------------------------------------------------------ report
def is_nar_former(name: str) -> bool:
    """A configuration of NAR-Former V2 itself (size, extensions), not an ablation."""
    return name.startswith("NAR-Former V2") and " - " not in name


def best_by_validation(in_domain: dict, names) -> str:
    return min(names, key=lambda n: np.mean([r["val_mape"] for r in in_domain[n].values()]))


def mean_std(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


def pct(values) -> str:
    values = [100 * v for v in values]
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f}"


def ood_seed_means(runs_by_family: dict, metric: str) -> list[float]:
    """Per OOD seed, the metric averaged over held-out families (each family counts once)."""
    seeds = sorted({seed for runs in runs_by_family.values() for seed in runs})
    return [float(np.mean([runs[seed]["overall"][metric] for runs in runs_by_family.values() if seed in runs]))
            for seed in seeds]


def plot_scatter(results, names, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams = sorted({f for n in names for run in results[n].values() for f in run["family"]})
    colours = {f: plt.cm.tab10(i % 10) for i, f in enumerate(fams)}
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4.0 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        runs = results[name].values()
        true = np.concatenate([r["true"] for r in runs])
        pred = np.concatenate([r["pred"] for r in runs])
        fam = sum((r["family"] for r in runs), [])
        lo, hi = min(true.min(), pred.min()) / 1.3, max(true.max(), pred.max()) * 1.3
        ax.fill_between([lo, hi], [lo / 1.1, hi / 1.1], [lo * 1.1, hi * 1.1], color="0.9", label="±10%")
        ax.plot([lo, hi], [lo, hi], color="0.4", lw=0.8)
        for f in fams:
            idx = [i for i, x in enumerate(fam) if x == f]
            if idx:
                ax.scatter(true[idx], pred[idx], s=7, color=colours[f], label=f)
        ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi), xlabel="measured (ms)",
               ylabel="predicted (ms)", title=f"{name}\nMAPE {relative_error(pred, true).mean():.3f}")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6, loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_ape(in_domain_runs, ood_runs, name: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("in-domain test (all seeds)", list(in_domain_runs.values()))]
    if ood_runs:
        panels.append(("out-of-domain: family held out (all seeds)",
                       [run for runs in ood_runs.values() for run in runs.values()]))
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.2), squeeze=False)
    for ax, (title, runs) in zip(axes.flat, panels):
        ape = defaultdict(list)
        for r in runs:
            for p, t, f in zip(r["pred"], r["true"], r["family"]):
                ape[f].append(100 * abs(p - t) / t)
        fams = sorted(ape)
        ax.boxplot([ape[f] for f in fams], showfliers=True, flierprops={"markersize": 2})
        ax.set_xticks(range(1, len(fams) + 1), fams, rotation=40, ha="right", fontsize=8)
        ax.set(yscale="log", ylabel="absolute percentage error (%)", title=f"{name}: {title}")
        ax.axhline(10, color="r", lw=0.7, ls="--")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(path: Path, ctx: dict) -> None:
    L = []
    w = L.append
    w("# Latency prediction report: NAR-Former V2 vs baselines\n")
    w("Generated by one command (from the repository root):\n")
    w(f"```\n{ctx['command']}\n```\n")
    w(f"Run {ctx['started']} to {ctx['finished']} UTC; {ctx['total_wall_min']:.1f} min wall, "
      f"{ctx['total_cpu_min']:.1f} min CPU in all ({ctx['jobs']} training process(es) in parallel, one torch "
      "thread each). The cores were shared with other jobs during the run, so wall times exceed CPU times; "
      "CPU times are the comparable numbers.\n")
    if ctx.get("reused"):
        w(f"{ctx['reused']} training runs were reused from the run cache `{ctx['runs_cache']}`: an earlier "
          "invocation trained them on the same snapshot with the same settings (the cache key covers both). "
          "The times above are this invocation's; the per-run training times in the tables are the runs' own.\n")

    ds = ctx["dataset"]
    w("## Dataset\n")
    w(f"`{ds['path']}`, a snapshot of **{ds['n']} measured models** (taken at the start of the run), "
      f"platform `{ds['platform_id']}`: {ds['platform']['cpu']} (`{ds['platform']['mcpu']}`), "
      f"{ds['platform']['threads']} thread, TVM {ds['platform']['tvm']}, untuned default pipeline. "
      + ("Each model's label is its fastest measured run (`--labels min`: the first measurement or a "
         "re-measurement).\n" if ds.get("labels") == "min" else "Each model's label is its first measurement.\n"))
    w("| family | models | min ms | median ms | max ms |\n|---|---:|---:|---:|---:|")
    for f, st in ds["families"].items():
        w(f"| {f} | {st['n']} | {st['min']:.2f} | {st['median']:.2f} | {st['max']:.2f} |")
    w("")
    nf = ctx["noise"]
    w(f"**Noise floor: {100 * nf['value']:.2f}%** ({nf['label']})."
      + (" The labels here are the faster of a model's runs, which drops most interference hits, so their "
         "own noise is lower than this single-run floor; it cannot be measured without a third run.\n"
         if ds.get("labels") == "min" else "\n"))

    w("## Protocol (exactly what ran)\n")
    for line in ctx["protocol"]:
        w(f"* {line}")
    w("")

    w(f"## Graph level: op vs fused (NAR-Former V2, in-domain, seeds {list(next(iter(ctx['level_runs'].values())))})\n")
    w("| level | val MAPE | test MAPE | test Acc(10%) | train s (CPU) |\n|---|---:|---:|---:|---:|")
    for level, runs in ctx["level_runs"].items():
        r = list(runs.values())
        w(f"| {level} | {mean_std([x['val_mape'] for x in r])} | {mean_std([x['overall']['mape'] for x in r])} | "
          f"{pct([x['overall']['acc@10%'] for x in r])}% | {mean_std([x['train_cpu_s'] for x in r])} |")
    if ctx["level_given"]:
        w(f"\n**Not compared in this run**: the level was given on the command line (`--level {ctx['level']}`); "
          "the other level was not trained.\n")
    else:
        w(f"\nChosen on validation MAPE: **{ctx['level']}** level "
          "(used for every learned method below and for the shipped checkpoint).\n")

    if ctx["lr_search"]:
        w("## Learning-rate search (first in-domain seed, validation MAPE)\n")
        lrs = sorted({lr for scores in ctx["lr_search"].values() for lr in scores})
        w("| method | level | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " | chosen |")
        w("|---|---|" + "---:|" * (len(lrs) + 1))
        for (name, level), scores in ctx["lr_search"].items():
            w(f"| {name} | {level} | " + " | ".join(f"{scores[lr]:.4f}" if lr in scores else "-" for lr in lrs)
              + f" | {ctx['chosen_lr'][name, level]:g} |")
        w("")

    w("## In-domain (random 80/10/10 split within each family)\n")
    w(f"Test metrics, mean ± std over {len(ctx['seeds'])} seeds (split and initialisation). MAPE is a fraction, "
      "RMSE in ms, Acc(δ) the share of test models within δ relative error. Noise floor "
      f"{100 * nf['value']:.2f}% ({nf['short']}).\n")
    w("| method | seeds | MAPE | RMSE (ms) | Acc(5%) | Acc(10%) | val MAPE | train s (CPU) | train s (wall) "
      "| predict ms/model (CPU) | predict ms/model (wall) |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    acc = (f"*{100 * nf['acc@5%']:.1f}%* | *{100 * nf['acc@10%']:.1f}%*" if "acc@10%" in nf else " | ")
    w(f"| *noise floor ({nf['short']})* | | *{nf['value']:.3f}* | | {acc} | | | | | |")
    for name, runs in ctx["in_domain"].items():
        r = list(runs.values())
        w(f"| {name} | {len(r)} | {mean_std([x['overall']['mape'] for x in r])} | "
          f"{mean_std([x['overall']['rmse'] for x in r])} | "
          f"{pct([x['overall']['acc@5%'] for x in r])}% | {pct([x['overall']['acc@10%'] for x in r])}% | "
          f"{mean_std([x['val_mape'] for x in r])} | {mean_std([x['train_cpu_s'] for x in r])} | "
          f"{mean_std([x['train_wall_s'] for x in r])} | {mean_std([1e3 * x['predict_cpu_s'] / x['n_test'] for x in r])} | "
          f"{mean_std([1e3 * x['predict_wall_s'] / x['n_test'] for x in r])} |")
    w("")
    fams = sorted({f for runs in ctx["in_domain"].values() for run in runs.values() for f in run["families"]})
    for title, metric, fmt in (("MAPE per family (mean ± std over seeds)", "mape", mean_std),
                               ("Acc(10%) per family (%, mean ± std over seeds)", "acc@10%", pct)):
        w(f"### In-domain test {title}\n")
        w("| method | " + " | ".join(fams) + " |")
        w("|---|" + "---:|" * len(fams))
        for name, runs in ctx["in_domain"].items():
            cells = [fmt([run["families"][f][metric] for run in runs.values() if f in run["families"]]) for f in fams]
            w(f"| {name} | " + " | ".join(cells) + " |")
        w("")
    w(f"![predicted vs measured, in-domain]({ctx['plots']['scatter_in']})\n")

    if ctx["ood"]:
        w("## Out-of-domain (leave one family out)\n")
        w("Each family in turn is the test set; the model trains on the others (10% of them for validation). "
          "The summary averages each seed's metrics over the held-out families (each family counts once), then "
          "gives mean ± std over seeds; the two configurations the target is judged on have more seeds per family "
          "than the others when the command line asks for it (`--target-ood-seeds`).\n")
        w("| method | seeds per family | mean MAPE | mean RMSE (ms) | mean Acc(5%) | mean Acc(10%) |\n"
          "|---|---:|---:|---:|---:|---:|")
        for name, by_fam in ctx["ood"].items():
            n_seeds = len({seed for runs in by_fam.values() for seed in runs})
            w(f"| {name} | {n_seeds} | {mean_std(ood_seed_means(by_fam, 'mape'))} | {mean_std(ood_seed_means(by_fam, 'rmse'))} | "
              f"{pct(ood_seed_means(by_fam, 'acc@5%'))}% | {pct(ood_seed_means(by_fam, 'acc@10%'))}% |")
        w("")
        ood_fams = sorted({f for by_fam in ctx["ood"].values() for f in by_fam})
        for metric, label, fmt in (("mape", "MAPE", mean_std), ("acc@10%", "Acc(10%) (%)", pct)):
            w(f"### Held-out family {label} (mean ± std over seeds)\n")
            w("| method | " + " | ".join(ood_fams) + " |")
            w("|---|" + "---:|" * len(ood_fams))
            for name, by_fam in ctx["ood"].items():
                w(f"| {name} | " + " | ".join(
                    fmt([run["overall"][metric] for run in by_fam[f].values()]) if f in by_fam else "-"
                    for f in ood_fams) + " |")
            w("")
        w(f"![predicted vs measured, out-of-domain]({ctx['plots']['scatter_ood']})\n")
    w(f"![APE per family]({ctx['plots']['ape']})\n")

    w("## Targets\n")
    for line in ctx["targets"]:
        w(f"* {line}")
    w("")

    w("## Shipped checkpoint\n")
    for line in ctx["shipped"]:
        w(f"* {line}")
    w("")

    sp = ctx.get("speed")
    if sp:
        w("## Speed\n")
        w(f"Measured in this run, one thread, with the shipped checkpoint ({sp['level']}-level graphs). "
          "Prediction end to end = `nar_tvm.api.predict(model.onnx)`: load the ONNX file, import it into "
          "Relax, extract the OpGraph, tokenize, forward (median of 3, after one warm-up call). "
          "Compile-and-measure = load the same ONNX, `tvm.compile` (untuned) and time it with the dataset's "
          "protocol (1 warm-up, 5 repeats of >= 40 ms) on this core.\n")
        w("| model | nodes | predicted ms | dataset ms | predict s (wall / CPU) | compile+measure s (wall / CPU) | ratio (CPU) |")
        w("|---|---:|---:|---:|---:|---:|---:|")
        for m in sp["models"]:
            w(f"| {m['name']} | {m['nodes']} | {m['predicted_ms']:.2f} | {m['dataset_ms']:.2f} | "
              f"{m['predict_wall_s']:.3f} / {m['predict_cpu_s']:.3f} | {m['compile_measure_wall_s']:.2f} / "
              f"{m['compile_measure_cpu_s']:.2f} | {m['compile_measure_cpu_s'] / m['predict_cpu_s']:.0f}x |")
        tp = sp["throughput"]
        per = {k: v["cpu_s"] / tp["graphs"] for k, v in tp.items() if isinstance(v, dict)}
        cm = np.mean([m["compile_measure_cpu_s"] for m in sp["models"]])
        e2e = np.mean([m["predict_cpu_s"] for m in sp["models"]])
        w("")
        w(f"Batched, {tp['graphs']} dataset graphs (mean {tp['mean_nodes']:.0f} nodes), CPU time:\n")
        w("| path | total s | ms / graph | graphs / s |\n|---|---:|---:|---:|")
        for k, label in (("batched_end_to_end", "tokenize + batched forward (`predictor.predict`)"),
                         ("tokenize", "tokenize only"), ("batched_forward", "batched forward only"),
                         ("one_at_a_time_forward", "forward one graph at a time")):
            w(f"| {label} | {tp[k]['cpu_s']:.2f} | {1e3 * per[k]:.2f} | {1 / per[k]:.0f} |")
        w("")
        cm_wall = np.mean([m["compile_measure_wall_s"] for m in sp["models"]])
        e2e_wall = np.mean([m["predict_wall_s"] for m in sp["models"]])
        w(f"Ratios (CPU time, this run): one end-to-end prediction from ONNX is **{cm / e2e:.0f}x** faster than "
          f"compiling and measuring the model; a graph in the batched path costs {1e3 * per['batched_end_to_end']:.2f} ms, "
          f"**{cm / per['batched_end_to_end']:.0f}x** less than compile-and-measure; batched forward is "
          f"{per['one_at_a_time_forward'] / per['batched_forward']:.1f}x one-graph-at-a-time forward. "
          f"The dataset's own median compile time is {ctx['dataset']['median_compile_s']:.2f} s per model "
          f"(measured on the profiling core). In wall time on the shared core the end-to-end ratio is "
          f"{cm_wall / e2e_wall:.0f}x.\n")

    w("## Files\n")
    w(f"* raw results: `{ctx['json_name']}`")
    w("* plots: " + ", ".join(f"`{p}`" for p in ctx["plots"].values()))
    w(f"* checkpoint: `{ctx['checkpoint_name']}`")
    if ctx.get("notes"):
        w("\n" + ctx["notes"].strip())
    path.write_text("\n".join(L) + "\n")


# ------------------------------------------------------------------ main
def read_all(path, attempts: int = 5) -> list[dict]:
    """Every record of a store that is being written; a shard sealed under the reader is read again."""
    for attempt in range(attempts):
        try:
            return list(DatasetStore(path).records())
        except FileNotFoundError:
            if attempt == attempts - 1:
                raise
            time.sleep(1.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="benchmarks/data/cpu-znver4-1t")
    parser.add_argument("--out", default=str(HERE / "latency_report.md"))
    parser.add_argument("--checkpoint", default=str(HERE.parent / "nar_tvm" / "checkpoints" / "default.pt"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--level-seeds", type=int, default=None, help="default: --seeds")
    parser.add_argument("--level", choices=LEVELS, default=None,
                        help="use this graph level instead of choosing it on validation (skips the comparison)")
    parser.add_argument("--ablation-seeds", type=int, default=None, help="default: --seeds")
    parser.add_argument("--ood-seeds", type=int, default=3)
    parser.add_argument("--target-ood-seeds", type=int, default=None,
                        help="seeds per family for the two configurations the out-of-domain target is judged "
                             "on, NAR-Former V2's best and NNLP as specified (default: --ood-seeds)")
    parser.add_argument("--ood-families", nargs="*", default=None, help="default: every family")
    parser.add_argument("--epochs", type=int, default=TRAIN.epochs)
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3])
    parser.add_argument("--speed-models", type=int, default=3)
    parser.add_argument("--throughput-graphs", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=1,
                        help="training runs in parallel, each in its own process with one torch thread")
    parser.add_argument("--budget-min", type=float, default=None,
                        help="wall minutes after which runs not yet started are dropped (out-of-domain "
                             "families missing a run are skipped and listed), so that the report is still written")
    parser.add_argument("--runs-cache", default=None,
                        help="file of finished runs (default: the report's name with .runs.jsonl); a rerun on "
                             "the same snapshot and settings reuses them instead of training again")
    parser.add_argument("--notes", default=None, help="markdown file appended to the report (discussion)")
    parser.add_argument("--labels", choices=LABELS, default=TRAINING_LABELS,
                        help="a model's latency: its first measurement, or its fastest run (dataset.load_samples)")
    args = parser.parse_args()

    torch.set_num_threads(1)
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    wall0, cpu0 = time.perf_counter(), time.process_time()
    out = Path(args.out)
    log_lines = []

    def log(msg):
        line = f"[{time.strftime('%H:%M:%S', time.gmtime())}] {msg}"
        log_lines.append(line)
        print(line, flush=True)

    # One snapshot for the whole run: the profiler keeps appending (and sealing shards).
    snapshot_dir = tempfile.TemporaryDirectory(prefix="nar-tvm-report-")
    snapshot = Path(snapshot_dir.name) / "shard-00000.jsonl"
    snapshot.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in read_all(args.dataset)))
    samples = load_samples(snapshot, labels=args.labels)
    store = DatasetStore(snapshot)
    platform, platform_id = samples[0].record["platform"], samples[0].record["platform_id"]
    families = sorted({s.family for s in samples})
    log(f"snapshot: {len(samples)} models, families {families}")

    nf = noise_floor(store)
    if nf:
        # Scored like a predictor (the re-measurement against the first measurement), so the
        # floor and the methods share a metric: the median would understate a mean of a heavy tail.
        noise = {"value": nf["mape"], "short": "re-measurement MAPE", "acc@5%": nf["acc@5%"],
                 "acc@10%": nf["acc@10%"],
                 "label": f"{nf['count']} models measured a second time, the second run scored as a prediction "
                          f"of the first: MAPE {nf['mape']:.3f}, Acc(5%) {100 * nf['acc@5%']:.1f}%, "
                          f"Acc(10%) {100 * nf['acc@10%']:.1f}%; the median relative difference is "
                          f"{100 * nf['median_rel_diff']:.2f}% and the 90th percentile "
                          f"{100 * nf['p90_rel_diff']:.1f}%: most runs repeat closely, a few are hit by interference"}
    else:
        noise = {"value": statistics.median(s.record["measurement"]["cv"] for s in samples), "short": "median CV",
                 "label": "the dataset has no re-measurements, so this is the median coefficient of variation "
                          "of the 5 timing repeats within a measurement"}

    cache = Path(args.runs_cache) if args.runs_cache else out.with_suffix(".runs.jsonl")
    runner = Runner(snapshot, args.epochs, args.lrs, log, jobs=args.jobs, samples=samples, cache=cache,
                    labels=args.labels)
    if runner.reused:
        log(f"reusing {runner.reused} finished runs from {cache} (same snapshot and settings)")
    all_methods = list(runner.methods.values())
    nar = runner.methods["NAR-Former V2"]
    seeds = list(range(args.seeds))
    ood_seeds = list(range(args.ood_seeds))

    level_seeds = seeds[:args.level_seeds or len(seeds)]
    ablation_seeds = seeds[:args.ablation_seeds or len(seeds)]
    compared = [args.level] if args.level else list(reversed(LEVELS))
    done = runner.run_all([(nar, "in-domain", lv, seed) for lv in compared for seed in level_seeds])
    level_runs = {lv: {seed: done[nar, "in-domain", lv, seed] for seed in level_seeds} for lv in compared}
    level = min(compared, key=lambda lv: np.mean([r["val_mape"] for r in level_runs[lv].values()]))
    log(f"level: {level}")

    ood_families = args.ood_families if args.ood_families is not None else families
    unknown = set(ood_families) - set(families)
    if unknown:
        parser.error(f"--ood-families: not in the dataset: {sorted(unknown)}")
    in_domain_runs = [(m, "in-domain", level, seed) for m in all_methods
                      for seed in (ablation_seeds if m.ablation else seeds)]
    deadline = wall0 + 60 * args.budget_min if args.budget_min is not None else None
    done = runner.run_all(in_domain_runs)
    in_domain = {m.name: {seed: done[m, split, lv, seed] for m2, split, lv, seed in in_domain_runs if m2 is m}
                 for m in all_methods}
    # The configurations the out-of-domain target compares, chosen on in-domain validation
    # before any out-of-domain run: NAR-Former V2's best, NNLP as specified and NNLP's best.
    ood_names = [m.name for m in all_methods if m.ood]
    target_ood = {"NAR-Former V2": best_by_validation(in_domain, [n for n in ood_names if is_nar_former(n)]),
                  "NNLP": "NNLP (GraphSAGE)",
                  "NNLP (best)": best_by_validation(in_domain, [n for n in ood_names if n.startswith("NNLP")])}
    judged = (target_ood["NAR-Former V2"], target_ood["NNLP"])
    method_ood_seeds = {name: list(range(max(args.ood_seeds, args.target_ood_seeds or 0)))
                        if name in judged else ood_seeds for name in ood_names}
    ood_runs = [(m, f"ood:{fam}", level, seed) for fam in ood_families for m in all_methods if m.ood
                for seed in method_ood_seeds[m.name]]
    done.update(runner.run_all(ood_runs, deadline))
    runner.close()
    # A family counts only if every run of it finished within the time budget.
    skipped = [fam for fam in ood_families
               if any((m, f"ood:{fam}", level, seed) not in done for m, split, _, seed in ood_runs
                      if split == f"ood:{fam}")]
    ood = {m.name: {fam: {seed: done[m, f"ood:{fam}", level, seed] for seed in method_ood_seeds[m.name]}
                    for fam in ood_families if fam not in skipped}
           for m in all_methods if m.ood}
    if skipped:
        log(f"time budget spent: out-of-domain families not run: {skipped}")
    ood_methods = list(ood)
    ood = {name: by_fam for name, by_fam in ood.items() if by_fam}

    # Ship the checkpointable (neural) method with the best mean validation MAPE, retrained
    # through the dataset glue (for platform and provenance) on its best validation seed.
    candidates = [m for m in all_methods if m.neural]
    ship = runner.methods[best_by_validation(in_domain, [m.name for m in candidates])]
    ship_seed = min(in_domain[ship.name], key=lambda s: in_domain[ship.name][s]["val_mape"])
    ship_lr = runner.chosen_lr[ship.name, level]
    predictor, history, _ = train_on_dataset(
        snapshot, level=level, split="in-domain", seed=ship_seed, model_cfg=ship.model_cfg,
        train_cfg=replace(TRAIN, epochs=args.epochs, seed=ship_seed, lr=ship_lr), progress=False,
        node_weight=ship.node_weight, labels=args.labels)
    predictor.provenance.update(dataset=args.dataset, dataset_models=len(samples), method=ship.name,
                                report=str(out.name))
    ckpt = save_checkpoint(predictor, args.checkpoint)
    reloaded = load_checkpoint(ckpt)
    size_mb = ckpt.stat().st_size / 2 ** 20
    log(f"shipped {ship.name} seed {ship_seed}: val MAPE {history.best_val_mape:.4f}, {size_mb:.2f} MiB")

    speed = speed_section(reloaded, level, samples, args.speed_models, args.throughput_graphs, log) \
        if args.speed_models else None

    # ---- targets
    best_in = min(in_domain, key=lambda n: np.mean([r["overall"]["mape"] for r in in_domain[n].values()]))
    best_val = best_by_validation(in_domain, in_domain)
    # The in-domain targets hold NAR-Former V2 to its best configuration (size, kernel-time
    # supervision), chosen on validation like everything else; ablations are not candidates.
    nar_name = best_by_validation(in_domain, [n for n in in_domain if is_nar_former(n)])
    nar_mape = [r["overall"]["mape"] for r in in_domain[nar_name].values()]
    nar_acc = [r["overall"]["acc@10%"] for r in in_domain[nar_name].values()]
    targets = [
        f"NAR-Former V2 configuration for the in-domain targets, by validation MAPE: **{nar_name}**",
        f"NAR-Former V2 in-domain MAPE <= 2x noise floor ({2 * noise['value']:.3f}): "
        f"{mean_std(nar_mape)} -> **{'met' if np.mean(nar_mape) <= 2 * noise['value'] else 'not met'}**",
        f"NAR-Former V2 in-domain Acc(10%) >= 95%"
        + (f" (a re-measurement reaches {100 * noise['acc@10%']:.1f}% against the first run)" if "acc@10%" in noise else "")
        + f": {pct(nar_acc)}% -> "
        f"**{'met' if np.mean(nar_acc) >= 0.95 else 'not met'}**",
    ]
    if ood and "NNLP (GraphSAGE)" in ood:
        # Each network out of domain in its configuration that validates best in-domain (among
        # those run out of domain), held against NNLP as its paper specifies it and against
        # NNLP given the same extensions.
        nar_ood = target_ood["NAR-Former V2"]
        a = np.mean(ood_seed_means(ood[nar_ood], "mape"))
        targets.append(f"NAR-Former V2 configuration out of domain, by in-domain validation MAPE among those run "
                       f"out of domain: **{nar_ood}**")
        for nnlp_name in dict.fromkeys([target_ood["NNLP"], target_ood["NNLP (best)"]]):
            b = np.mean(ood_seed_means(ood[nnlp_name], "mape"))
            change = f"{100 * (1 - a / b):.0f}% lower" if a <= b else f"{100 * (a / b - 1):.0f}% higher"
            targets.append(f"out-of-domain mean MAPE at least 25% below {nnlp_name}'s: {a:.3f} vs {b:.3f} "
                           f"({change}) -> **{'met' if a <= 0.75 * b else 'not met'}**")
    targets.append(f"best method in-domain: by validation MAPE **{best_val}**, by test MAPE **{best_in}**; "
                   f"the shipped checkpoint is the best neural method by validation MAPE, **{ship.name}**"
                   + ("" if ship.name == best_val else
                      f" ({best_val} validates better but has no checkpoint format)"))
    shipped = [
        f"`{Path(args.checkpoint).name}`: {ship.name}, {level}-level graphs, trained on the in-domain train split "
        f"of seed {ship_seed} (the seed with the best validation MAPE), lr {ship_lr:g}, best epoch "
        f"{history.best_epoch} of {len(history.epochs)}, validation MAPE {history.best_val_mape:.4f}, "
        f"{size_mb:.2f} MiB",
        f"platform `{predictor.platform.get('platform_id')}`: {predictor.platform.get('cpu')} "
        f"({predictor.platform.get('mcpu')}), {predictor.platform.get('threads')} thread, TVM {predictor.platform.get('tvm')}",
        f"loads with `nar_tvm.cost_model.load_checkpoint`; its test-split numbers are the {ship.name} row, seed {ship_seed}",
    ]

    # ---- plots
    stem = out.stem
    plots = {"scatter_in": f"{stem}_scatter_in_domain.png", "ape": f"{stem}_ape_by_family.png"}
    main_names = ["Linear (FLOPs + mem)", "GBT (xgboost)", "NNLP (GraphSAGE)", "Transformer (plain)", "NAR-Former V2"]
    main_names += [n for n in dict.fromkeys([nar_name, ship.name]) if n not in main_names]
    plot_scatter(in_domain, main_names,
                 out.parent / plots["scatter_in"], f"in-domain test, all {len(seeds)} seeds, {level}-level graphs")
    if ood:
        plots["scatter_ood"] = f"{stem}_scatter_ood.png"
        flat = {n: {(f, s): r for f, runs in by_fam.items() for s, r in runs.items()} for n, by_fam in ood.items()}
        plot_scatter(flat, [n for n in main_names if n in flat], out.parent / plots["scatter_ood"],
                     "out-of-domain: each family predicted by a model that never saw it")
    plot_ape(in_domain[nar_name], ood.get(nar_name), nar_name, out.parent / plots["ape"])

    protocol = [
        f"Snapshot of {len(samples)} models; in-domain split per family 80/10/10 (`make_split('in-domain', seed)`), "
        f"seeds {seeds} (the ablations: seeds {ablation_seeds}; the op-vs-fused comparison: seeds "
        f"{level_seeds}); out-of-domain `make_split('ood:<family>', seed)` for "
        f"{'all ' + str(len(ood_families)) if set(ood_families) == set(families) else len(ood_families)} families "
        f"({', '.join(ood_families)}), seeds {ood_seeds}, methods: {', '.join(ood_methods)}"
        + "".join(f"; {name}: seeds {method_ood_seeds[name]}" for name in judged
                  if method_ood_seeds[name] != ood_seeds) + "."
        + (f" **Not run, the time budget (--budget-min {args.budget_min:g}) being spent: {', '.join(skipped)}.**"
           if skipped else ""),
        f"Neural models share `cost_model.train.train`: AdamW, warm-up then linear decay, batch 32 re-cut by graph "
        f"size in runs of 8 batches, at most {args.epochs} epochs, early stopping after {TRAIN.patience} epochs "
        f"without a better validation MAPE and the best-validation epoch kept; loss `{TRAIN.loss}` "
        "(squared error of log-latency; see the note below).",
        f"NAR-Former V2: {json.dumps({k: v for k, v in asdict(NAR).items() if k not in ('token_dim', 'static_dim')})}; "
        "the plain Transformer and the ablations switch off graph-aided attention + degree gate + grouped FFN "
        "(Transformer), the degree gate, the grouped FFN (plain FFN of the same width) or the static features. "
        "Size and readout were set before this run: d_model 64 instead of 128 (to fit the one-core budget), "
        "mean readout instead of sum (sum-pooled, layer-normalised node vectors trained far worse), "
        "no dropout (CPU cost of attention dropout masks).",
        f"NNLP: {json.dumps({k: v for k, v in asdict(NNLP).items() if k not in ('token_dim', 'static_dim')})} "
        "(two GraphSAGE mean-aggregation layers over predecessors and successors, sum pooling, static features).",
        "Extensions beyond the paper, given to both networks: `+ kernel times` adds a loss on the profiler's "
        f"per-kernel times (weight {KERNEL_WEIGHT:g}) through a training-only per-node output; `+ kernel-sum "
        "readout` (`readout='kernels'`) makes a per-node kernel time part of the model and predicts the graph's "
        "latency as the sum of its nodes' kernel times plus a remainder from the pooled states and static "
        "features, trained with the same kernel-time loss on those per-node times. The rows "
        "`... + kernel-sum readout - <component>` and `Transformer (plain) + kernel-sum readout` repeat the "
        "paper's ablations on that configuration.",
        f"Learning rate: each neural method (and level) chose from {args.lrs} on the validation MAPE of in-domain "
        "seed 0; that lr is then used for all of its in-domain and out-of-domain runs.",
        "GBT: xgboost, log-latency target, depth 4, eta 0.05, up to 2000 rounds with early stopping (100 rounds) on "
        "validation RMSE; features: op-type counts (node types and fused-in ops), log FLOPs, params, memory "
        "access, batch, depth, node count. Linear: least squares on log-latency vs log FLOPs (and log memory access).",
        "Prediction times are for the test part, per model, excluding graph extraction (graphs come from the "
        "records); the Speed section has end-to-end times.",
    ]
    ctx = {
        "command": f"OMP_NUM_THREADS=1 {pinning()}python benchmarks/latency_report.py"
                   + "".join(f" {shlex.quote(a)}" for a in sys.argv[1:]),
        "started": started, "finished": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "total_wall_min": (time.perf_counter() - wall0) / 60, "jobs": args.jobs,
        "total_cpu_min": (time.process_time() - cpu0 + children_cpu_s()) / 60,
        "dataset": {
            "path": args.dataset, "n": len(samples), "platform": platform, "platform_id": platform_id,
            "labels": args.labels,
            "families": {f: {"n": len(v), "min": min(v), "median": statistics.median(v), "max": max(v)}
                         for f in families for v in [[s.latency_ms for s in samples if s.family == f]]},
            "median_compile_s": statistics.median(s.record["measurement"]["compile_s"] for s in samples),
        },
        "noise": noise, "protocol": protocol, "level_runs": level_runs, "level": level,
        "level_given": args.level is not None,
        "lr_search": runner.lr_search if len(args.lrs) > 1 else {}, "chosen_lr": runner.chosen_lr,
        "seeds": seeds, "ood_seeds": ood_seeds, "in_domain": in_domain, "ood": ood,
        "targets": targets, "shipped": shipped, "speed": speed, "plots": plots,
        "json_name": f"{stem}.json", "checkpoint_name": Path(args.checkpoint).name,
        "notes": Path(args.notes).read_text() if args.notes else None,
        "reused": runner.reused, "runs_cache": cache.name,
    }
    write_report(out, ctx)
    raw = {k: ctx[k] for k in ("command", "started", "finished", "dataset", "noise", "level", "seeds", "ood_seeds",
                               "speed", "targets")}
    raw["chosen_lr"] = {f"{n} [{lv}]": lr for (n, lv), lr in runner.chosen_lr.items()}
    strip = lambda run: {k: v for k, v in run.items() if k not in ("pred", "true", "family")}  # noqa: E731
    raw["level_runs"] = {lv: {s: strip(r) for s, r in runs.items()} for lv, runs in level_runs.items()}
    raw["in_domain"] = {n: {s: strip(r) for s, r in runs.items()} for n, runs in in_domain.items()}
    raw["ood"] = {n: {f: {s: strip(r) for s, r in runs.items()} for f, runs in by_fam.items()}
                  for n, by_fam in ood.items()}
    raw["log"] = log_lines
    (out.parent / ctx["json_name"]).write_text(json.dumps(raw, indent=1, default=str))
    log(f"wrote {out}")
    snapshot_dir.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
