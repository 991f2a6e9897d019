"""Cost-guided tuning: the predictor's trial allocation against MetaSchedule's schedulers.

For each held-out zoo model and each budget (trials per task on average, times the model's
task count), the three allocations of `nar-tvm tune` (predicted, metaschedule, round-robin)
tune the model from empty databases with the same search settings; then the untuned build
and the three tuned libraries are timed in interleaved rounds with the profiler's protocol.
One (model, budget) unit is tuned and timed on one machine in one go, so its four latencies
are comparable; units from different machines are reported apart.

    taskset -c 1 python benchmarks/tune_report.py run --store benchmarks/data/tuned-<machine>
    python benchmarks/tune_report.py report

`run` is resumable: finished units are in tune_runs.jsonl, and a unit in progress resumes from
its tuning databases (under --work). Every tuned library's latency and per-kernel times go into
--store as a dataset record of a platform of its own (fingerprint + tuning budget + allocation,
with the machine speed probe), and the untuned ones under the untuned platform.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RUNS = HERE / "tune_runs.jsonl"
REPORT = HERE / "tune_report.md"
PLOT = HERE / "tune_report_curves.png"
# Held out: the training data's zoo seeds stop at 211. The families with the fewest tasks, so
# that a unit takes minutes, not hours.
MODELS = ("zoo:alexnet:7000", "zoo:vgg:7000", "zoo:resnet:7002", "zoo:vit:7000", "zoo:bert:7000",
          "zoo:nasbench201:7000")
BUDGETS = (4, 16)
ALLOCATIONS = ("predicted", "metaschedule", "round-robin")
# The same, smaller-than-default evolutionary search for every allocation: at these budgets
# MetaSchedule's default (population 512, 4 genetic rounds) spends more time searching than measuring.
SEARCH = {"population_size": 64, "init_min_unmeasured": 16, "genetic_num_iters": 2}
TIMING_ROUNDS = 3
COMMAND_RUN = "taskset -c 1 python benchmarks/tune_report.py run --store benchmarks/data/tuned-<machine>"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def done_units() -> set[tuple[str, int]]:
    if not RUNS.is_file():
        return set()
    return {(r["model"], r["budget"]) for r in (json.loads(line) for line in RUNS.read_text().splitlines() if line.strip())}


def n_tasks(model: str) -> int:
    from tvm.s_tir import meta_schedule as ms

    from nar_tvm.api import load
    from nar_tvm.platform import PlatformSpec
    from nar_tvm.tune import tuning_module

    target = PlatformSpec().tvm_target()
    return len(ms.relax_integration.extract_tasks(tuning_module(load(model).mod, target), target))


def estimated_curve(history, kernels: dict[str, int], untuned_kernels_ms: dict[str, float], weights: list[int],
                    untuned_ms: float) -> list[tuple[int, float]]:
    """Model latency after each trial, estimated as: every task at its best trial so far
    (times its call count), untuned tasks at their untuned time, plus the time outside tasks."""
    untuned_task = np.zeros(len(weights))
    for name, ms in untuned_kernels_ms.items():
        if name in kernels:
            untuned_task[kernels[name]] += ms
    outside = untuned_ms - untuned_task.sum()
    current = untuned_task.copy()
    curve = [(0, float(untuned_ms))]
    for k, (task, ms) in enumerate(history, start=1):
        if math.isfinite(ms):
            current[task] = min(current[task], weights[task] * ms)
        curve.append((k, float(outside + current.sum())))
    return curve


def run_unit(model: str, budget: int, args, store, probe, predictor) -> dict:
    import tvm

    from nar_tvm.measure import Protocol, Session, measure, time_executable
    from nar_tvm.platform import PlatformSpec, fingerprint, platform_id
    from nar_tvm.tune import tune

    spec = PlatformSpec()
    protocol = Protocol()
    tasks = n_tasks(model)
    trials = budget * tasks
    work = Path(args.work) / f"{model.replace(':', '-')}-{budget}"
    results = {}
    for allocation in ALLOCATIONS:
        log(f"{model} budget {budget}/task ({trials} trials, {tasks} tasks): {allocation}")
        results[allocation] = tune(model, trials, work / f"{allocation}.so", allocation, work / f"{allocation}-db",
                                   search=SEARCH, progress=False)
    some = results["predicted"]
    session = Session(spec)
    untuned = measure(some.module, spec, session, protocol)
    libraries = {a: tvm.runtime.load_module(str(r.library)) for a, r in results.items()}
    timings = {a: [] for a in ALLOCATIONS}
    for _ in range(TIMING_ROUNDS):  # interleaved, so drift hits every allocation alike
        for a in ALLOCATIONS:
            timings[a].append(time_executable(libraries[a], some.module, session, protocol, 0.0, with_kernels=False))
    kernels = {a: time_executable(libraries[a], some.module, session, protocol, 0.0)["kernels_ms"] for a in ALLOCATIONS}

    predicted_untuned = float(predictor.predict([some.graph]).latency_ms[0])
    weights = [row["weight"] for row in some.tasks if "weight" in row]
    base_fp = fingerprint(spec)
    base_record = {"model": {"name": some.graph.name or model, "spec": model}, "probe": probe,
                   "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "status": "ok",
                   "graphs": {"fused": some.graph.to_dict()}}
    store.append({**base_record, "job": f"{model}@{platform_id(base_fp)}", "platform_id": platform_id(base_fp),
                  "platform": base_fp, "measurement": untuned})
    row = {"model": model, "budget": budget, "tasks": tasks, "trials": trials,
           "machine": {k: base_fp.get(k) for k in ("cpu", "mcpu", "host")},
           "probe": probe, "untuned_ms": untuned["median_ms"], "predicted_untuned_ms": predicted_untuned,
           "time": base_record["time"], "runs": {}}
    for a, r in results.items():
        medians = [t["median_ms"] for t in timings[a]]
        fp = {**base_fp, "tuning": {"allocation": a, "trials": trials, "trials_per_task": budget, "search": SEARCH}}
        measurement = {**timings[a][0], "median_ms": statistics.median(medians), "rounds_ms": medians,
                       "kernels_ms": kernels[a]}
        store.append({**base_record, "job": f"{model}@{platform_id(fp)}", "platform_id": platform_id(fp),
                      "platform": fp, "measurement": measurement, "tuning": r.to_dict()})
        row["runs"][a] = {"tuned_ms": measurement["median_ms"], "rounds_ms": medians, "tune_s": r.tune_s,
                          "trials_run": r.trials_run, "tasks": r.tasks,
                          "curve": estimated_curve(r.history, r.kernels, untuned.get("kernels_ms", {}), weights,
                                                   untuned["median_ms"])}
    return row


def cmd_run(args) -> int:
    from nar_tvm.api import load_predictor
    from nar_tvm.dataset import DatasetStore
    from nar_tvm.probe import measure_probe

    from nar_tvm.measure import Protocol, Session
    from nar_tvm.platform import PlatformSpec

    store = DatasetStore(args.store)
    predictor = load_predictor(use_calibration=False)
    log("measuring the machine speed probe")
    spec = PlatformSpec()
    probe = measure_probe(spec, Session(spec), Protocol()).to_dict()
    finished = done_units()
    for budget in args.budgets:
        for model in args.models:
            if (model, budget) in finished:
                continue
            row = run_unit(model, budget, args, store, probe, predictor)
            with RUNS.open("a") as f:
                f.write(json.dumps(row) + "\n")
            log(f"{model} budget {budget}: untuned {row['untuned_ms']:.2f} ms; " + ", ".join(
                f"{a} {r['tuned_ms']:.3f} ms ({r['tune_s']:.0f} s)" for a, r in row["runs"].items()))
    return 0


def cmd_report(args) -> int:
    from scipy import stats

    rows = [json.loads(line) for line in RUNS.read_text().splitlines() if line.strip()] if RUNS.is_file() else []
    kernels = unit_kernels(args.stores)
    lines = ["# Cost-guided tuning: predicted trial allocation against MetaSchedule's schedulers", "",
             f"Regenerate: `{COMMAND_RUN}` (resumable), then `python benchmarks/tune_report.py report`. "
             "What the figures say and what they do not: `tune_report_notes.md`.", "",
             f"Models: {', '.join(MODELS)} (held out: the training data's seeds stop at 211). Budgets: "
             f"{', '.join(str(b) for b in BUDGETS)} trials per task on average (times the model's task count). "
             f"Search for every allocation: EvolutionarySearch {SEARCH}. Each (model, budget) unit: the three "
             f"allocations tune from empty databases, then the untuned build and the three libraries are timed in "
             f"{TIMING_ROUNDS} interleaved rounds (profiler protocol, median of rounds).", ""]
    if not rows:
        lines.append("No unit has run yet.")
    for budget in BUDGETS:
        mine = [r for r in rows if r["budget"] == budget]
        if not mine:
            continue
        lines += [f"## {budget} trials per task", "",
                  "| model | tasks | trials | untuned ms | " + " | ".join(f"{a} ms (tune s)" for a in ALLOCATIONS)
                  + " | predicted / metaschedule | machine (speed probe) |", "|---|" + "---|" * (5 + len(ALLOCATIONS))]
        ratios = []
        for r in mine:
            runs = r["runs"]
            ratio = runs["predicted"]["tuned_ms"] / runs["metaschedule"]["tuned_ms"]
            ratios.append(ratio)
            lines.append(f"| {r['model']} | {r['tasks']} | {r['trials']} | {r['untuned_ms']:.2f} | " + " | ".join(
                f"{runs[a]['tuned_ms']:.3f} ({runs[a]['tune_s']:.0f})" for a in ALLOCATIONS)
                + f" | {ratio:.3f} | {machine_label(r)} |")
        gm = float(np.exp(np.mean(np.log(ratios))))
        lines += ["", f"Geometric mean of predicted / metaschedule tuned latency: **{gm:.3f}** over {len(ratios)} "
                      "model(s) (target at the low budget: <= 0.90; at the high budget: <= 1.0).", ""]
        losses = [line for r in mine if r["runs"]["predicted"]["tuned_ms"] > r["runs"]["metaschedule"]["tuned_ms"]
                  for line in misjudged(r, kernels.get((r["model"], r["time"]), {}))]
        if losses:
            lines += ["Where the predicted allocation lost to MetaSchedule's scheduler: the tasks whose kernels it "
                      "left slowest relative to MetaSchedule's (one instrumented run of each library).", "",
                      "| model | task | trials, predicted / metaschedule | share of untuned time, predicted / "
                      "measured | tuned kernel ms, predicted / metaschedule | ms lost | why |",
                      "|---|---|---|---|---|---|---|", *losses, ""]
        for a in ALLOCATIONS:
            if len(mine) >= 3:
                tau = stats.kendalltau([r["predicted_untuned_ms"] for r in mine],
                                       [r["runs"][a]["tuned_ms"] for r in mine]).statistic
                lines.append(f"- Kendall tau of the untuned-latency prediction against the {a}-tuned latency: "
                             f"{tau:.3f} ({len(mine)} models)")
        lines.append("")
    if rows:
        plot_curves(rows)
        lines += ["Curves (the high budget where it ran, else the low): the model's latency after each trial, "
                  "estimated as every task at its best measured time so far times its call count, tasks not yet "
                  "tuned at their untuned kernel time, plus the untuned time outside any task. The estimate is "
                  "not the measured latency (the table has that); it shows how soon each allocation gets there.",
                  "", f"![estimated latency against trials]({PLOT.name})", ""]
    REPORT.write_text("\n".join(lines))
    log(f"wrote {REPORT}")
    return 0


def unit_kernels(stores) -> dict[tuple[str, str], dict[str, dict]]:
    """(model, unit time) -> {"untuned" or allocation: kernels_ms}: the per-kernel times each
    unit stored with its measurements (a unit's records share the unit's time stamp)."""
    from nar_tvm.dataset import DatasetStore

    out: dict[tuple[str, str], dict[str, dict]] = {}
    for store in stores:
        for rec in DatasetStore(store).records("ok"):
            tuning = rec["platform"].get("tuning")
            key = (rec["model"]["spec"], rec["time"])
            out.setdefault(key, {})["untuned" if tuning is None else tuning["allocation"]] = \
                rec["measurement"].get("kernels_ms", {})
    return out


def misjudged(row: dict, kernels: dict[str, dict], top: int = 3) -> list[str]:
    """Where the predicted allocation's library is slower than MetaSchedule's: the tasks that
    cost it most, with the trials each allocation gave them and what the predictor expected."""
    if not {"untuned", "predicted", "metaschedule"} <= set(kernels):
        return []
    pred_tasks = {t["task"]: t for t in row["runs"]["predicted"]["tasks"]}
    ms_tasks = {t["task"]: t for t in row["runs"]["metaschedule"]["tasks"]}
    predicted_total = sum(t.get("predicted_ms", 0.0) for t in pred_tasks.values()) or 1.0
    untuned_total = sum(kernels["untuned"].get(name, 0.0) for name in pred_tasks) or 1.0
    loss = {name: kernels["predicted"].get(name, 0.0) - kernels["metaschedule"].get(name, 0.0) for name in pred_tasks}
    lines = []
    for name in sorted(loss, key=loss.get, reverse=True)[:top]:
        if loss[name] <= 0:
            break
        given, ms_given = pred_tasks[name]["trials"], ms_tasks.get(name, {}).get("trials", 0)
        why = ("left untuned by the cut" if given == 0 else
               "more trials, slower schedule (search variance)" if given >= ms_given else "fewer trials")
        lines.append(f"| {row['model']} | {name} | {given} / {ms_given} | "
                     f"{pred_tasks[name].get('predicted_ms', 0.0) / predicted_total:.1%} / "
                     f"{kernels['untuned'].get(name, 0.0) / untuned_total:.1%} | "
                     f"{kernels['predicted'].get(name, 0.0):.3f} / {kernels['metaschedule'].get(name, 0.0):.3f} | "
                     f"+{loss[name]:.3f} | {why} |")
    return lines


def machine_label(row: dict) -> str:
    mcpu = (row.get("machine") or {}).get("mcpu")
    return f"{mcpu + ', ' if mcpu else ''}probe {row['probe']['id']}"


def plot_curves(rows) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    high = {r["model"]: r for r in rows if r["budget"] == max(BUDGETS)}
    chosen = high or {r["model"]: r for r in rows}
    fig, axes = plt.subplots(1, len(chosen), figsize=(3.2 * len(chosen), 3), squeeze=False)
    for ax, (model, r) in zip(axes[0], chosen.items()):
        for a in ALLOCATIONS:
            xs, ys = zip(*r["runs"][a]["curve"])
            ax.plot(xs, ys, label=a)
        ax.set_yscale("log")
        ax.set_title(f"{model.removeprefix('zoo:')} ({r['budget']}/task)", fontsize=9)
        ax.set_xlabel("trials")
    axes[0][0].set_ylabel("estimated latency, ms")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="stage", required=True)
    p = sub.add_parser("run")
    p.add_argument("--store", required=True, help="dataset folder for the tuned and untuned measurements")
    p.add_argument("--work", default="/tmp/nar-tvm-tune-bench", help="tuning databases and libraries")
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--budgets", nargs="+", type=int, default=list(BUDGETS))
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("report")
    p.add_argument("--stores", nargs="*", default=sorted(str(d) for d in (HERE / "data").glob("tuned-*")),
                   help="stores the units wrote their measurements to (default: benchmarks/data/tuned-*)")
    p.set_defaults(func=cmd_report)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
