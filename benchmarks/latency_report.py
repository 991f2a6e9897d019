"""Latency-prediction report: NAR-Former V2 against baselines on the measured dataset.

    OMP_NUM_THREADS=1 taskset -c 0,1 python benchmarks/latency_report.py --jobs 2

writes benchmarks/latency_report.md, the PNG plots it links and the best neural method by
validation as a checkpoint beside them (`--checkpoint`). That is not the shipped default: the
default adds the cost prior and its intervals (`cost_prior_runs.py --save`, then
`calibration_report.py intervals --write-default`), and a report run must not overwrite it. One
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
import statistics
import sys
import time
from pathlib import Path

import torch

from nar_tvm.dataset import LABELS, TRAINING_LABELS

# What is run (protocol), running it (runs) and writing it up (writer) are separate modules so
# that each can be read, and changed, without the other two.
from latency_report_protocol import (LEVELS, TRAIN, Plan, best_by_validation, choose_level, describe, in_domain_nar,
                                     noise_reference, target_ood_configurations, targets)
from latency_report_runs import Runner, Snapshot, children_cpu_s, speed_section, train_shipped
from latency_report_writer import command, shipped_lines, write_json, write_plots, write_report

HERE = Path(__file__).resolve().parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="benchmarks/data/cpu-znver4-1t")
    parser.add_argument("--out", default=str(HERE / "latency_report.md"))
    parser.add_argument("--checkpoint", default=str(HERE / "latency_report_best.pt"),
                        help="where the best neural method's checkpoint goes (not the shipped default)")
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
    parser.add_argument("--measured-before", metavar="ISO_TIME",
                        help="the dataset as it was at this time (UTC unless a zone is given): a store that a "
                             "profiler is still filling gives the same snapshot, and the run cache stays valid")
    parser.add_argument("--labels", choices=LABELS, default=TRAINING_LABELS,
                        help="a model's latency: its first measurement, or its fastest run (dataset.load_samples)")
    return parser


class Log:
    """Timestamped progress on stdout, kept for the raw JSON."""

    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S', time.gmtime())}] {msg}"
        self.lines.append(line)
        print(line, flush=True)


def compare_levels(runner: Runner, plan: Plan, log) -> tuple[str, dict]:
    """NAR-Former V2 on each compared graph level; the level that validates best is used for the rest."""
    nar = runner.methods["NAR-Former V2"]
    done = runner.run_all(plan.level_runs(nar))
    level_runs = {lv: {seed: done[nar, "in-domain", lv, seed] for seed in plan.level_seeds}
                  for lv in plan.compared_levels}
    level = choose_level(level_runs)
    log(f"level: {level}")
    return level, level_runs


def run_in_domain(runner: Runner, plan: Plan, level: str) -> dict:
    all_methods = list(runner.methods.values())
    runs = plan.in_domain_runs(all_methods, level)
    done = runner.run_all(runs)
    return {m.name: {seed: done[m, split, lv, seed] for m2, split, lv, seed in runs if m2 is m} for m in all_methods}


def run_out_of_domain(runner: Runner, plan: Plan, level: str, method_ood_seeds: dict, deadline: float | None,
                      log) -> tuple[dict, list[str], list[str]]:
    """Results by method, family and seed (methods with no finished family left out), the
    families skipped for the time budget, and every method meant to run out of domain."""
    all_methods = list(runner.methods.values())
    runs = plan.ood_runs(all_methods, level, method_ood_seeds)
    done = runner.run_all(runs, deadline)
    # A family counts only if every run of it finished within the time budget.
    skipped = [fam for fam in plan.ood_families
               if any((m, f"ood:{fam}", level, seed) not in done for m, split, _, seed in runs
                      if split == f"ood:{fam}")]
    ood = {m.name: {fam: {seed: done[m, f"ood:{fam}", level, seed] for seed in method_ood_seeds[m.name]}
                    for fam in plan.ood_families if fam not in skipped}
           for m in all_methods if m.ood}
    if skipped:
        log(f"time budget spent: out-of-domain families not run: {skipped}")
    ood_methods = list(ood)
    return {name: by_fam for name, by_fam in ood.items() if by_fam}, skipped, ood_methods


def ship(runner: Runner, snapshot: Snapshot, in_domain: dict, level: str, args, out: Path, log):
    """The checkpointable (neural) method with the best mean validation MAPE, retrained on its
    best validation seed, saved to --checkpoint."""
    candidates = [m for m in runner.methods.values() if m.neural]
    method = runner.methods[best_by_validation(in_domain, [m.name for m in candidates])]
    seed = min(in_domain[method.name], key=lambda s: in_domain[method.name][s]["val_mape"])
    shipped = train_shipped(snapshot, method, seed, runner.chosen_lr[method.name, level], level, args.epochs,
                            args.labels, args.dataset, out.name, args.checkpoint)
    log(f"shipped {method.name} seed {seed}: val MAPE {shipped.history.best_val_mape:.4f}, "
        f"{shipped.size_mb:.2f} MiB")
    return shipped


def dataset_summary(args, snapshot: Snapshot) -> dict:
    samples = snapshot.samples
    return {
        "path": args.dataset, "measured_before": args.measured_before, "n": len(samples),
        "platform": snapshot.platform, "platform_id": snapshot.platform_id, "labels": args.labels,
        "families": {f: {"n": len(v), "min": min(v), "median": statistics.median(v), "max": max(v)}
                     for f in snapshot.families for v in [[s.latency_ms for s in samples if s.family == f]]},
        "median_compile_s": statistics.median(s.record["measurement"]["compile_s"] for s in samples),
    }


def kernel_error_method(ood: dict, preferred) -> str | None:
    """The first of `preferred` (the shipped method, then the NAR-Former V2 configuration the
    out-of-domain target is judged on) whose held-out runs predicted per-kernel times."""
    return next((name for name in preferred
                 if any("kernel_kinds" in run for runs in ood.get(name, {}).values() for run in runs.values())), None)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv

    torch.set_num_threads(1)
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    wall0, cpu0 = time.perf_counter(), time.process_time()
    out = Path(args.out)
    log = Log()

    snapshot = Snapshot.take(args.dataset, args.labels, args.measured_before)
    samples, families = snapshot.samples, snapshot.families
    log(f"snapshot: {len(samples)} models, families {families}")
    plan = Plan.from_args(args, families)
    unknown = set(plan.ood_families) - set(families)
    if unknown:
        parser.error(f"--ood-families: not in the dataset: {sorted(unknown)}")
    noise = noise_reference(snapshot.store, samples)

    cache = Path(args.runs_cache) if args.runs_cache else out.with_suffix(".runs.jsonl")
    runner = Runner(snapshot.path, args.epochs, args.lrs, log, jobs=args.jobs, samples=samples, cache=cache,
                    labels=args.labels)
    if runner.reused:
        log(f"reusing {runner.reused} finished runs from {cache} (same snapshot and settings)")

    level, level_runs = compare_levels(runner, plan, log)
    in_domain = run_in_domain(runner, plan, level)
    ood_names = [m.name for m in runner.methods.values() if m.ood]
    target_ood = target_ood_configurations(in_domain, ood_names)
    judged = (target_ood["NAR-Former V2"], target_ood["NNLP"])
    method_ood_seeds = plan.method_ood_seeds(ood_names, judged)
    deadline = wall0 + 60 * args.budget_min if args.budget_min is not None else None
    ood, skipped, ood_methods = run_out_of_domain(runner, plan, level, method_ood_seeds, deadline, log)
    runner.close()

    shipped = ship(runner, snapshot, in_domain, level, args, out, log)
    speed = speed_section(shipped.reloaded, level, samples, args.speed_models, args.throughput_graphs, log) \
        if args.speed_models else None

    nar_name = in_domain_nar(in_domain)
    plots = write_plots(out, in_domain, ood, [nar_name, shipped.method.name], nar_name, len(plan.seeds), level)
    ctx = {
        "command": command(argv),
        "started": started, "finished": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "total_wall_min": (time.perf_counter() - wall0) / 60, "jobs": args.jobs,
        "total_cpu_min": (time.process_time() - cpu0 + children_cpu_s()) / 60,
        "dataset": dataset_summary(args, snapshot),
        "noise": noise,
        "protocol": describe(plan, args.epochs, args.lrs, ood_methods, method_ood_seeds, judged, skipped,
                             args.budget_min, len(samples)),
        "level_runs": level_runs, "level": level, "level_given": args.level is not None,
        "lr_search": runner.lr_search if len(args.lrs) > 1 else {}, "chosen_lr": runner.chosen_lr,
        "seeds": plan.seeds, "ood_seeds": plan.ood_seeds, "in_domain": in_domain, "ood": ood,
        "targets": targets(in_domain, ood, noise, target_ood, nar_name, shipped.method.name),
        "shipped": shipped_lines(shipped, args.checkpoint), "speed": speed, "plots": plots,
        "json_name": f"{out.stem}.json", "checkpoint_name": Path(args.checkpoint).name,
        "notes": Path(args.notes).read_text() if args.notes else None,
        "reused": runner.reused, "runs_cache": cache.name, "kernel_error_method": kernel_error_method(ood, (shipped.method.name, judged[0])),
    }
    write_report(out, ctx)
    write_json(out.parent / ctx["json_name"], ctx, runner.chosen_lr, log.lines)
    log(f"wrote {out}")
    snapshot.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
