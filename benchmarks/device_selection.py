"""Validation of device selection on this machine's own platforms, with real measurements.

A platform is a way to run a model here (threads, cores, pipeline, target) with a dataset
profiled by `nar-tvm profile` and a checkpoint trained on it. Held-out zoo models (seeds >= 5000,
never trained on) are profiled on every platform into one store, with the training data's
protocol, e.g. for one thread on core 1 against two threads on cores 0-1:

    taskset -c 0 nar-tvm profile --per-family 3 --start-seed 5000 --threads 1 --cpu-affinity 1 --out HELDOUT
    nar-tvm profile --per-family 3 --start-seed 5000 --threads 2 --cpu-affinity 0,1 --out HELDOUT

Phases (train,evaluate by default; trained checkpoints and results are kept in --work):
  train     for each platform given as NAME=DATASET, one checkpoint per seed (`nar-tvm train`
            with the recipe defaults); NAME=DATASET@CHECKPOINT uses that checkpoint instead;
  evaluate  for each held-out model, `selection.select_device` on the model as `nar-tvm
            select-device` calls it, scored against the platforms' measured latencies: top-1
            agreement, regret, the regret of always using one platform, and each platform
            predictor's error on the held-out models;
  report    the summary and --report again from the last evaluation's results.json.

    python benchmarks/device_selection.py --report benchmarks/device_selection.md
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

DEFAULT_PLATFORMS = ["cpu-1t=benchmarks/data/cpu-znver4-1t@nar_tvm/checkpoints/default.pt",
                     "cpu-2t=benchmarks/data/cpu-znver4-2t",
                     "cpu-1t-nhwc=benchmarks/data/cpu-znver4-1t-nhwc"]


def parse_platforms(items: list[str]) -> dict[str, dict]:
    out = {}
    for item in items:
        name, sep, rest = item.partition("=")
        if not sep or not rest:
            raise SystemExit(f"--platform {item!r}: write NAME=DATASET or NAME=DATASET@CHECKPOINT")
        dataset, _, checkpoint = rest.partition("@")
        out[name] = {"dataset": dataset, "checkpoint": checkpoint or None}
    return out


def checkpoint_path(args, name: str, platform: dict, seed: int) -> Path:
    return Path(platform["checkpoint"]) if platform["checkpoint"] else Path(args.work) / f"{name}-seed{seed}.pt"


def phase_train(args, platforms: dict) -> None:
    from nar_tvm.cli import main as cli

    for name, platform in platforms.items():
        for seed in args.seeds:
            path = checkpoint_path(args, name, platform, seed)
            if path.exists():
                continue
            t0 = time.time()
            cli(["train", platform["dataset"], "--out", str(path), "--model", args.model, "--seed", str(seed)])
            print(f"{name} seed {seed}: trained in {time.time() - t0:.0f} s", flush=True)


def heldout_latencies(heldout: str, platform_ids: dict[str, str]) -> dict[str, dict]:
    """model key -> {"family", "seed", "name", "measured": {platform: ms}, "cost_s": {platform: s}};
    only models measured on every platform."""
    from nar_tvm.dataset import load_samples

    models: dict[str, dict] = {}
    for name, pid in platform_ids.items():
        for s in load_samples(heldout, pid):
            m = s.record["model"]
            row = models.setdefault(s.job.rsplit("@", 1)[0], {"family": s.family, "seed": m["seed"],
                                                               "name": s.name, "measured": {}, "cost_s": {}})
            row["measured"][name] = s.latency_ms
            meas = s.record["measurement"]
            # What measuring costs: compile plus the timed repeats.
            row["cost_s"][name] = meas["compile_s"] + sum(meas["repeats_ms"]) / 1e3
    return {k: v for k, v in sorted(models.items()) if len(v["measured"]) == len(platform_ids)}


def phase_evaluate(args, platforms: dict) -> dict:
    from nar_tvm.api import load_predictor
    from nar_tvm.loaders import load_onnx
    from nar_tvm.profiler import zoo_job
    from nar_tvm.selection import choose_device, select_device

    predictors = {seed: {name: load_predictor(checkpoint_path(args, name, p, seed)) for name, p in platforms.items()}
                  for seed in args.seeds}
    ids = {name: pred.platform["platform_id"] for name, pred in predictors[args.seeds[0]].items()}
    models = heldout_latencies(args.heldout, ids)
    if not models:
        raise SystemExit(f"{args.heldout}: no model measured on every platform ({ids})")
    print(f"{len(models)} held-out models measured on {', '.join(ids)}", flush=True)
    for key, row in models.items():
        mod = load_onnx(zoo_job(row["family"], row["seed"]).onnx_bytes, None, row["name"]).mod
        # Once for the first seed's checkpoints, as a user would; then all seeds in one call,
        # where each platform's graph is extracted once, and each seed's choice is made on
        # its own predictions by the same rule.
        t0 = time.perf_counter()
        select_device(mod, predictors[args.seeds[0]])
        row["select_s"] = time.perf_counter() - t0
        every = select_device(mod, {f"{name}@{seed}": pred for seed, preds in predictors.items()
                                    for name, pred in preds.items()})
        row["predicted"], row["chosen"] = {}, {}
        for seed, preds in predictors.items():
            row["predicted"][seed] = {name: next(s.predicted_ms for s in every.scores if s.name == f"{name}@{seed}")
                                      for name in preds}
            row["chosen"][seed] = choose_device(row["predicted"][seed]).choice
        print(json.dumps({"model": key, **{k: row[k] for k in ("measured", "chosen")}}), flush=True)
    return {"models": models, "platforms": platforms, "platform_ids": ids, "seeds": args.seeds}


def regret(measured: dict, chosen: str) -> float:
    return measured[chosen] / min(measured.values()) - 1


def summarize(res: dict) -> dict:
    models, names, seeds = list(res["models"].values()), list(res["platform_ids"]), res["seeds"]
    per_seed = []
    for seed in seeds:
        regrets = [regret(m["measured"], m["chosen"][seed]) for m in models]
        top1 = statistics.mean(m["chosen"][seed] == min(m["measured"], key=m["measured"].get) for m in models)
        mape = {n: statistics.mean(abs(m["predicted"][seed][n] / m["measured"][n] - 1) for m in models)
                for n in names}
        per_seed.append({"seed": seed, "top1": top1, "mean_regret": statistics.mean(regrets),
                         "max_regret": max(regrets), "mape": mape})

    def spread(values):
        values = list(values)
        return {"mean": statistics.mean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}

    winners = {n: sum(min(m["measured"], key=m["measured"].get) == n for m in models) for n in names}
    return {
        "models": len(models), "winners": winners,
        "top1": spread(s["top1"] for s in per_seed),
        "mean_regret": spread(s["mean_regret"] for s in per_seed),
        "max_regret": max(s["max_regret"] for s in per_seed),
        "mape": {n: spread(s["mape"][n] for s in per_seed) for n in names},
        "always": {n: statistics.mean(regret(m["measured"], n) for m in models) for n in names},
        "select_s": statistics.median(m["select_s"] for m in models),
        "measure_s": statistics.median(sum(m["cost_s"].values()) for m in models),
        "per_seed": per_seed,
    }


def write_report(args, res: dict, summary: dict, path: Path) -> None:
    from nar_tvm.dataset import DatasetStore

    names, seed0 = list(res["platform_ids"]), res["seeds"][0]
    fps = {r["platform_id"]: r["platform"] for r in DatasetStore(args.heldout).records("ok")}

    def pm(d):
        return f"{d['mean']:.3f} ± {d['sd']:.3f}"

    lines = [
        "# Device selection on this machine's platforms: validation",
        "",
        f"Generated by `benchmarks/device_selection.py` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}); "
        f"arguments: `{' '.join(sys.argv[1:]) or '(defaults)'}`.",
        "",
        "| platform | platform id | threads | target | training data | checkpoint |",
        "|---|---|---|---|---|---|",
    ]
    for n in names:
        p, fp = res["platforms"][n], fps[res["platform_ids"][n]]
        ck = p["checkpoint"] or f"trained here, seeds {', '.join(map(str, res['seeds']))}"
        lines.append(f"| {n} | {res['platform_ids'][n]} | {fp['threads']} | `{fp['target']}` | "
                     f"`{p['dataset']}` | {ck} |")
    lines += [
        "",
        f"Held-out: {summary['models']} zoo models (seeds >= 5000, no platform trained on them), profiled on every "
        f"platform into `{args.heldout}` with the training data's protocol. Measured fastest platform: "
        + ", ".join(f"{n} {k}" for n, k in summary["winners"].items()) + ".",
        "",
        f"**Predictor-guided choice** (`selection.select_device`, {len(res['seeds'])} seeds of the trained "
        f"checkpoints): top-1 agreement {pm(summary['top1'])}, mean regret "
        f"{summary['mean_regret']['mean'] * 100:.2f}% ± {summary['mean_regret']['sd'] * 100:.2f}% "
        f"(worst model over all seeds {summary['max_regret'] * 100:.1f}%).",
        "",
        "**Always one platform** (mean regret): " + ", ".join(f"{n} {v * 100:.1f}%"
                                                         for n, v in summary["always"].items()) + ".",
        "",
        "Held-out MAPE of each platform's predictor: " + ", ".join(f"{n} {pm(v)}" for n, v in summary["mape"].items())
        + ".",
        "",
        f"Cost: choosing by prediction takes {summary['select_s']:.2f} s per model (median: import of the graph "
        f"for every platform, tokenize, predict); compiling and measuring the model on every platform took "
        f"{summary['measure_s']:.1f} s (median, the profiler's protocol).",
        "",
        f"Per model, seed {seed0}:",
        "",
        "| model | " + " | ".join(f"{n} measured / predicted ms" for n in names) + " | fastest | chosen | regret |",
        "|---" * (len(names) + 4) + "|",
    ]
    for key, m in res["models"].items():
        best = min(m["measured"], key=m["measured"].get)
        cells = [f"{m['measured'][n]:.2f} / {m['predicted'][seed0][n]:.2f}" for n in names]
        lines.append(f"| {m['name']} | " + " | ".join(cells) + f" | {best} | {m['chosen'][seed0]} | "
                     f"{regret(m['measured'], m['chosen'][seed0]) * 100:.1f}% |")
    if args.notes:
        lines += ["", Path(args.notes).read_text().strip()]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--phases", default="train,evaluate")
    p.add_argument("--platform", action="append", dest="platforms",
                   help=f"NAME=DATASET[@CHECKPOINT], repeated (default: {' '.join(DEFAULT_PLATFORMS)})")
    p.add_argument("--heldout", default="benchmarks/data/device-selection/heldout",
                   help="store with the held-out models profiled on every platform")
    p.add_argument("--work", default="benchmarks/data/device-selection", help="where trained checkpoints go")
    from nar_tvm.cost_model.recipes import MODELS

    p.add_argument("--model", default="nnlp", choices=sorted(MODELS))
    p.add_argument("--seeds", default="0,1,2", type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--report", help="markdown report to write")
    p.add_argument("--notes", help="markdown file appended to the report")
    args = p.parse_args(argv)
    platforms = parse_platforms(args.platforms or DEFAULT_PLATFORMS)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    phases = args.phases.split(",")
    if "train" in phases:
        phase_train(args, platforms)
    results = Path(args.work) / "results.json"
    if "evaluate" in phases:
        results.write_text(json.dumps(phase_evaluate(args, platforms), indent=1))
    if "evaluate" in phases or "report" in phases:
        # JSON object keys are strings: seeds come back as "0", "1", ...
        res = json.loads(results.read_text())
        res["seeds"] = [str(s) for s in res["seeds"]]
        summary = summarize(res)
        if args.report:
            write_report(args, res, summary, Path(args.report))
        print(json.dumps({k: v for k, v in summary.items() if k != "per_seed"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
