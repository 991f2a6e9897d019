"""Validation of cost-guided pipeline selection: predicted vs measured choice.

Phases (each resumable; profile,train,evaluate by default):
  profile   each non-default candidate's dataset, `nar-tvm profile --pipeline C` into DATA-C
            with the main dataset's protocol (the default pipeline's is DATA itself), the
            candidates taking turns a few models per family at a time;
  train     one joint fused-level predictor on every candidate's profiles (split by model),
            with selection scored on the validation models profiled under every candidate;
  evaluate  for held-out zoo models (seeds >= 5000): the selector scores every candidate from its
            graph-level passes only, and every candidate is also compiled and measured
            (timings interleaved round-robin across candidates, so that load drift on a shared
            core hits them alike); reports top-1 agreement, Kendall tau, regret;
  devices   device selection (choose_device) on the published NAS-Bench-201 multi-device
            latencies: per-device cell predictors, top-1 agreement and regret over held-out cells.

    taskset -c 0 python benchmarks/pipeline_selection.py --phases train,evaluate --models 30 \
        --rounds 10 --report benchmarks/pipeline_selection.md
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", "1")

from nar_tvm.cost_model.nb201_space import DEFAULT_ACCURACY_CSV, DEFAULT_LATENCY_CSV  # noqa: E402
from nar_tvm.zoo import FAMILIES  # noqa: E402  (after the thread setting TVM reads at import)



def _families(args) -> list[str]:
    return args.families.split(",")


def _candidates(args) -> list[str]:
    from nar_tvm.platform import PIPELINES

    names = args.candidates.split(",")
    unknown = [c for c in names if c not in PIPELINES]
    if unknown:
        raise SystemExit(f"unknown candidate pipelines {unknown}; choose from {PIPELINES}")
    return names


# ------------------------------------------------------------------ profile
def phase_profile(args) -> None:
    """Each non-default candidate's dataset, measured by `nar-tvm profile --pipeline C` with
    the main dataset's protocol; candidates take turns in steps of `--profile-step` models
    per family, so that a run stopped early leaves them with data of the same size."""
    from nar_tvm.cli import main as cli

    others = [c for c in _candidates(args) if c != "default"]
    for n in range(args.profile_step, args.train_per_family + args.profile_step, args.profile_step):
        for c in others:
            cli(["profile", "--pipeline", c, "--per-family", str(min(n, args.train_per_family)),
                 "--out", str(candidate_store(args, c)), "--cpu-affinity", args.cpu_affinity,
                 "--shard-size", "100"])


# -------------------------------------------------------------------- train
def candidate_store(args, candidate: str) -> Path:
    """The profiled dataset of a candidate: the main one for `default`, `<main>-<candidate>` else."""
    return Path(args.data) if candidate == "default" else Path(f"{args.data}-{candidate}")


def model_name(sample) -> str:
    return sample.record["model"]["name"]


def phase_train(args) -> None:
    """One predictor for every candidate, trained on all their profiles together.

    Candidates differ only in the graph they hand to code generation, and the fused graph
    shows that difference (kernel boundaries, layouts, layout transforms), so one model of
    "latency of this fused graph on this machine" learns from every candidate's data, and
    the 2,000 default-pipeline models teach it what the few hundred per variant cannot.
    """
    import numpy as np

    from nar_tvm.cost_model import recipes, save_checkpoint, train
    from nar_tvm.dataset import load_samples
    from nar_tvm.training import graphs_of, latencies_of

    cands = _candidates(args)
    samples = {}
    for c in cands:
        store = candidate_store(args, c)
        if not store.exists():
            raise SystemExit(f"no profiled data for candidate {c!r}: {store} does not exist "
                             f"(nar-tvm profile --pipeline {c} --out {store})")
        samples[c] = load_samples(store)
    # Split by model: all variants of a validation model stay out of training, so validation
    # also scores the choice between candidates on models the predictor never saw.
    # Stratified: the models profiled under every candidate are the few that can score a
    # choice, so they get their own share of the validation part.
    per_model = {}
    for c in cands:
        for s in samples[c]:
            per_model.setdefault(model_name(s), set()).add(c)
    rng = np.random.default_rng(args.seed)
    val_names = set()
    for group in (sorted(n for n, cs in per_model.items() if len(cs) == len(cands)),
                  sorted(n for n, cs in per_model.items() if len(cs) < len(cands))):
        if group:
            val_names.update(rng.choice(group, size=max(1, round(args.val_fraction * len(group))), replace=False))
    parts = {part: [s for c in cands for s in samples[c] if (model_name(s) in val_names) == (part == "val")]
             for part in ("train", "val")}
    t0 = time.time()
    predictor, history = train(graphs_of(parts["train"], "fused"), latencies_of(parts["train"]),
                               graphs_of(parts["val"], "fused"), latencies_of(parts["val"]), progress=False,
                               model_cfg=recipes.model_config(args.model),
                               train_cfg=replace(recipes.TRAINING, seed=args.seed,
                                                 **({"epochs": args.epochs} if args.epochs else {})))
    first = samples[cands[0]][0].record
    predictor.platform = dict(first["platform"], pipelines=cands,
                              platform_ids={c: samples[c][0].record["platform_id"] for c in cands})
    val, by_model = {}, {}
    for c in cands:
        vs = [s for s in parts["val"] if s.record["platform"]["pipeline"] == c]
        pred = predictor.predict(graphs_of(vs, "fused")).latency_ms
        val[c] = {"models": len(vs), "mape": float(np.mean(np.abs(pred / latencies_of(vs) - 1)))}
        for s, p in zip(vs, pred):
            rec = by_model.setdefault(model_name(s), {"name": model_name(s), "measured": {}, "predicted_ms": {}})
            rec["measured"][c] = {"median_ms": s.latency_ms, "cv": s.record["measurement"]["cv"]}
            rec["predicted_ms"][c] = float(p)
    # Selection on the validation models profiled under every candidate (profiler timings,
    # taken at different times, unlike the evaluate phase's interleaved ones).
    complete = [r for r in by_model.values() if len(r["measured"]) == len(cands)]
    val_selection = {k: v for k, v in summarize({"models": complete, "candidates": cands}).items() if k != "rows"}
    val_selection["models"] = len(complete)
    predictor.provenance.update(level="fused", model=args.model, best_val_mape=history.best_val_mape,
                                best_epoch=history.best_epoch, val_by_candidate=val, val_selection=val_selection,
                                train_models={c: sum(s.record["platform"]["pipeline"] == c for s in parts["train"])
                                              for c in cands})
    path = save_checkpoint(predictor, Path(args.work) / "joint.pt")
    print(f"joint {args.model} on {len(parts['train'])} training graphs ({len(val_names)} validation models): "
          f"val MAPE {history.best_val_mape:.3f} (epoch {history.best_epoch}), "
          + ", ".join(f"{c} {v['mape']:.3f} on {v['models']}" for c, v in val.items())
          + f"; {time.time() - t0:.0f} s -> {path}", flush=True)
    print(f"selection on {len(complete)} validation models: {json.dumps(val_selection)}", flush=True)


# ----------------------------------------------------------------- evaluate
def measure_candidates(mod, candidates, target, rounds: int, min_repeat_ms: int) -> dict:
    """Median ms per candidate, timing round-robin so contention drift is shared."""
    from tvm import relax

    from nar_tvm.measure import random_inputs
    from nar_tvm.selection import compile_candidate

    import tvm

    dev = tvm.cpu()
    runs, compile_s = {}, {}
    for c in candidates:
        t0 = time.perf_counter()
        ex = compile_candidate(mod, c, target)
        compile_s[c] = time.perf_counter() - t0
        vm = relax.VirtualMachine(ex, dev)
        args = [tvm.runtime.tensor(a, dev) for a in random_inputs(mod)]
        vm["main"](*args)  # warm-up
        runs[c] = vm.time_evaluator("main", dev, number=1, repeat=1, min_repeat_ms=min_repeat_ms), args
    times = {c: [] for c in candidates}
    for _ in range(rounds):
        for c in candidates:
            evaluator, a = runs[c]
            times[c].append(float(evaluator(*a).mean) * 1e3)
    return {c: {"median_ms": statistics.median(t), "cv": statistics.pstdev(t) / statistics.mean(t),
                "compile_s": compile_s[c]} for c, t in times.items()}


def phase_evaluate(args) -> dict:
    from nar_tvm.loaders import load_onnx
    from nar_tvm.profiler import zoo_job
    from nar_tvm.selection import score_candidates
    from nar_tvm.cost_model import load_checkpoint
    from nar_tvm.passes.extract import default_target

    cands = _candidates(args)
    # Measure on the profiling core(s), as the training data was measured.
    os.sched_setaffinity(0, {int(c) for c in args.cpu_affinity.split(",")})
    joint = None if args.no_predict else load_checkpoint(Path(args.work) / "joint.pt")
    predictors = {c: joint for c in cands} if joint else {}
    target = default_target()
    out_path = Path(args.work) / "heldout.jsonl"
    # Measurements are kept per model and reused; predictions are redone on every run,
    # so retrained checkpoints are scored against the same timings.
    measured = {}
    if out_path.exists():
        for line in out_path.read_text().splitlines():
            r = json.loads(line)
            measured[r["model"]] = r
    families = _families(args)
    models = [(families[i % len(families)], 5000 + i // len(families)) for i in range(args.models)]
    results = []
    for fam, seed in models:
        key = f"zoo:{fam}:{seed}"
        rec = measured.get(key)
        need_measure = rec is None or any(c not in rec["measured"] for c in cands)
        if need_measure or predictors:
            job = zoo_job(fam, seed)
            mod = load_onnx(job.onnx_bytes, None, job.name).mod
        if need_measure:
            rec = {"model": key, "name": job.name,
                   "measured": measure_candidates(mod, cands, target, args.rounds, args.min_repeat_ms),
                   "loadavg": os.getloadavg()[0]}
            with out_path.open("a") as fh:
                fh.write(json.dumps(rec) + "\n")
        rec = dict(rec)
        if predictors:
            t0 = time.perf_counter()
            scores = score_candidates(mod, predictors, target)
            rec["select_s"] = time.perf_counter() - t0
            rec["predicted_ms"] = {s.candidate: s.predicted_ms for s in scores}
        print(json.dumps(rec), flush=True)
        results.append(rec)
    return {"models": results, "candidates": cands}


# ------------------------------------------------------------------ devices
def phase_devices(args) -> dict:
    """Device selection on published multi-device NAS-Bench-201 latencies: one cell-level
    NAR-Former V2 per device, trained on a few architectures; the decision is choose_device's."""
    import numpy as np

    from nar_tvm.cost_model.nasbench import load_table, train_latency_predictor
    from nar_tvm.selection import choose_device

    devices = args.nb201_devices.split(",")
    table = load_table(args.nb201_latency, columns=devices,
                       cells_from=DEFAULT_ACCURACY_CSV)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(table))
    train_idx, test_idx = order[:args.nb201_train], order[args.nb201_train:args.nb201_train + args.nb201_test]
    cells = table.cells
    t0 = time.time()
    predicted = {}
    for d in devices:
        fit = train_latency_predictor([cells[i] for i in train_idx], table.column(d)[train_idx], seed=0)
        predicted[d] = fit([cells[i] for i in test_idx])
    true = {d: table.column(d)[test_idx] for d in devices}
    agree, regrets, taus = 0, [], []
    for k in range(len(test_idx)):
        meas = {d: float(true[d][k]) for d in devices}
        sel = choose_device({d: float(predicted[d][k]) for d in devices})
        best = min(meas, key=meas.get)
        agree += sel.choice == best
        regrets.append(meas[sel.choice] / meas[best] - 1)
        taus.append(kendall_tau([predicted[d][k] for d in devices], [meas[d] for d in devices]))
    fastest_on_average = min(devices, key=lambda d: float(np.mean(true[d])))
    fixed = [float(true[fastest_on_average][k]) / min(float(true[d][k]) for d in devices) - 1
             for k in range(len(test_idx))]
    winners = {d: int(sum(1 for k in range(len(test_idx)) if min(devices, key=lambda x: true[x][k]) == d))
               for d in devices}
    return {"devices": devices, "train": len(train_idx), "test": len(test_idx), "seconds": time.time() - t0,
            "top1": agree / len(test_idx), "mean_regret": float(np.mean(regrets)),
            "p90_regret": float(np.quantile(regrets, 0.9)), "mean_tau": float(np.mean(taus)),
            "measured_winners": winners, "fixed_device": fastest_on_average,
            "fixed_mean_regret": float(np.mean(fixed))}


# ------------------------------------------------------------------- report
def kendall_tau(a: list[float], b: list[float]) -> float:
    """Tau-a over all pairs (ties count zero): with 3 candidates there are only 3 pairs."""
    n, s = len(a), 0
    for i in range(n):
        for j in range(i + 1, n):
            s += (1 if (a[i] - a[j]) * (b[i] - b[j]) > 0 else -1 if (a[i] - a[j]) * (b[i] - b[j]) < 0 else 0)
    return s / (n * (n - 1) / 2) if n > 1 else float("nan")


def summarize(res: dict) -> dict:
    cands = res["candidates"]
    rows, regrets, agree, taus, fixed = [], [], 0, [], {c: [] for c in cands}
    for r in res["models"]:
        meas = {c: r["measured"][c]["median_ms"] for c in cands}
        best = min(meas, key=meas.get)
        for c in cands:
            fixed[c].append(meas[c] / meas[best] - 1)
        row = {"model": r["name"], "measured": meas, "best": best,
               "cv": max(r["measured"][c]["cv"] for c in cands)}
        if "predicted_ms" in r:
            pred = {c: r["predicted_ms"][c] for c in cands}
            chosen = min(pred, key=pred.get)
            regret = meas[chosen] / meas[best] - 1
            tau = kendall_tau([pred[c] for c in cands], [meas[c] for c in cands])
            row.update(predicted=pred, chosen=chosen, regret=regret, tau=tau)
            regrets.append(regret)
            taus.append(tau)
            agree += chosen == best
        rows.append(row)
    out = {"rows": rows, "always": {c: statistics.mean(v) for c, v in fixed.items()} if rows else {}}
    if regrets:
        out.update(top1=agree / len(regrets), mean_regret=statistics.mean(regrets),
                   max_regret=max(regrets), mean_tau=statistics.mean(taus))
    return out


def write_report(args, res: dict, summary: dict, path: Path) -> None:
    cands = res["candidates"]
    loads = [r["loadavg"] for r in res["models"] if "loadavg" in r]
    lines = [
        "# Cost-guided pipeline selection: validation",
        "",
        f"Generated by `benchmarks/pipeline_selection.py` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}); "
        f"arguments: `{' '.join(sys.argv[1:])}`.",
        "",
        f"- Candidates: {', '.join(cands)}; held-out models: {len(summary['rows'])} zoo models, seeds >= 5000, "
        f"families {args.families}.",
        f"- Measurement: every candidate compiled, {args.rounds} timing rounds interleaved round-robin across "
        f"candidates (min {args.min_repeat_ms} ms each), median; 1 thread, CPU {args.cpu_affinity}.",
    ]
    if loads:
        lines.append(f"- 1-minute load average of the machine (all cores) {min(loads):.1f} .. {max(loads):.1f} during "
                     "the measurements: other cores were busy, so timings carry some interference; interleaving "
                     "keeps the comparison between candidates of one model fair, not precise.")
    lines += ["", "| model | " + " | ".join(f"{c} measured / predicted ms" for c in cands)
              + " | max CV | best | chosen | regret | tau |", "|---" * (len(cands) + 6) + "|"]
    for row in summary["rows"]:
        cells = [f"{row['measured'][c]:.1f} / {row['predicted'][c]:.1f}" if "predicted" in row
                 else f"{row['measured'][c]:.1f} / -" for c in cands]
        tail = [f"{row['cv']:.2f}", row["best"], row.get("chosen", "-"),
                f"{row['regret'] * 100:.1f}%" if "regret" in row else "-",
                f"{row['tau']:.2f}" if "tau" in row else "-"]
        lines.append(f"| {row['model']} | " + " | ".join(cells) + " | " + " | ".join(tail) + " |")
    lines.append("")
    if "top1" in summary:
        lines.append(f"**Predictor-guided selection**: top-1 agreement {summary['top1']:.2f}, mean Kendall tau "
                     f"{summary['mean_tau']:.2f}, mean regret {summary['mean_regret'] * 100:.1f}% "
                     f"(max {summary['max_regret'] * 100:.1f}%) over {len(summary['rows'])} models.")
    lines.append("**Fixed choice** (mean regret of always compiling one candidate): " + ", ".join(
        f"{c} {v * 100:.1f}%" for c, v in summary["always"].items()) + ".")
    joint_path = Path(args.work) / "joint.pt"
    if joint_path.exists():
        from nar_tvm.cost_model import load_checkpoint

        prov = load_checkpoint(joint_path).provenance
        vs = prov["val_selection"]
        lines += ["", f"Joint predictor ({prov['model']}, fused-level graphs, one checkpoint for all candidates): "
                  "trained on " + ", ".join(f"{n} {c}" for c, n in prov["train_models"].items())
                  + f" profiled models; validation MAPE {prov['best_val_mape']:.3f} (epoch {prov['best_epoch']}): "
                  + ", ".join(f"{c} {v['mape']:.3f} on {v['models']} models" for c, v in prov["val_by_candidate"].items())
                  + ".",
                  "",
                  f"**Selection on the {vs['models']} validation models profiled under every candidate** "
                  f"(profiler timings, none of these models trained on): top-1 agreement {vs['top1']:.2f}, mean "
                  f"Kendall tau {vs['mean_tau']:.2f}, mean regret {vs['mean_regret'] * 100:.1f}% "
                  f"(max {vs['max_regret'] * 100:.1f}%); always one candidate: "
                  + ", ".join(f"{c} {v * 100:.1f}%" for c, v in vs["always"].items()) + "."]
    devices_path = Path(args.work) / "devices.json"
    if devices_path.exists():
        d = json.loads(devices_path.read_text())
        lines += ["", "## Device selection on NAS-Bench-201 multi-device latencies", "",
                  f"Published measurements (`cost_model/data/nasbench201/latency.csv.gz`, HW-NAS-Bench/BRP-NAS) on "
                  f"{', '.join(x.removesuffix('_ms') for x in d['devices'])}; one cell-level NAR-Former V2 per "
                  f"device trained on {d['train']} architectures, `selection.choose_device` on {d['test']} "
                  f"held-out ones. Measured fastest device: "
                  + ", ".join(f"{k.removesuffix('_ms')} {v}" for k, v in d["measured_winners"].items()) + ".",
                  "",
                  f"Top-1 agreement {d['top1']:.3f}, mean Kendall tau over devices {d['mean_tau']:.2f}, "
                  f"mean regret {d['mean_regret'] * 100:.2f}% (p90 {d['p90_regret'] * 100:.2f}%); always using "
                  f"the fastest device on average ({d['fixed_device'].removesuffix('_ms')}): mean regret "
                  f"{d['fixed_mean_regret'] * 100:.2f}%."]
    if args.notes:
        lines += ["", Path(args.notes).read_text().strip()]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--phases", default="profile,train,evaluate")
    p.add_argument("--candidates", default="default,nofuse,nhwc")
    p.add_argument("--families", default=",".join(FAMILIES), help="held-out model families")
    p.add_argument("--train-per-family", type=int, default=60, help="profiled models per family and candidate")
    p.add_argument("--profile-step", type=int, default=4, help="models per family each candidate adds in turn")
    p.add_argument("--models", type=int, default=8, help="held-out models (seeds >= 5000, families in turn)")
    p.add_argument("--work", default="benchmarks/data/pipeline-selection")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds per held-out candidate")
    p.add_argument("--min-repeat-ms", type=int, default=20)
    p.add_argument("--cpu-affinity", default="1", help="core(s) that measure, e.g. 1 (pin this script elsewhere)")
    p.add_argument("--data", default="benchmarks/data/cpu-znver4-1t",
                   help="profiled dataset of the default pipeline; candidate C's is DATA-C")
    from nar_tvm.cost_model.recipes import MODELS

    p.add_argument("--model", default="nnlp", choices=sorted(MODELS),
                   help="network of the joint predictor (recipes.MODELS)")
    p.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nb201-latency", default=str(DEFAULT_LATENCY_CSV))
    p.add_argument("--nb201-devices", default="silver_4114_ms,1080ti_1_ms,samsung_a50_ms,gold_6240_ms")
    p.add_argument("--nb201-train", type=int, default=100, help="architectures per device predictor")
    p.add_argument("--nb201-test", type=int, default=2000)
    p.add_argument("--no-predict", action="store_true", help="evaluate: measured orderings only")
    p.add_argument("--report", help="markdown report to write")
    p.add_argument("--notes", help="markdown file appended to the report (discussion, what is left)")
    args = p.parse_args(argv)
    phases = args.phases.split(",")
    Path(args.work).mkdir(parents=True, exist_ok=True)
    if "profile" in phases:
        phase_profile(args)
    if "train" in phases:
        phase_train(args)
    if "devices" in phases:
        d = phase_devices(args)
        (Path(args.work) / "devices.json").write_text(json.dumps(d, indent=2))
        print(json.dumps(d, indent=2))
    if "evaluate" in phases:
        res = phase_evaluate(args)
        summary = summarize(res)
        if args.report:
            write_report(args, res, summary, Path(args.report))
        print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
