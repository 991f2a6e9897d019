"""Model-size and learning-rate sweep for the neural latency predictors, same grid for each.

The recipes in `cost_model/recipes.py` were sized for one CPU core. This sweep asks
whether a larger budget (wider or deeper networks, more epochs) changes which network
predicts best, giving NAR-Former V2 and NNLP the same grid, seeds and split:

    python benchmarks/recipe_sweep.py --device cuda --workers 12 --out sweep.jsonl
    python benchmarks/recipe_sweep.py --summarize sweep.jsonl

(benchmarks/recipe_sweep.md gives the commands and summaries of the committed runs.)

Every run trains on the in-domain split's train part and early-stops on its validation
part; configurations are ranked by mean validation MAPE over the seeds, and the test
part is reported for the chosen one only. Finished runs are appended to --out as they
end, so an interrupted sweep resumes where it stopped. Runs on CUDA are not bit-for-bit
reproducible (scatter-adds there are not deterministic); on CPU they are.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path

from nar_tvm.cost_model import recipes

HERE = Path(__file__).resolve().parent
DATASET = HERE / "data" / "cpu-znver4-1t"


def run_key(job: dict) -> str:
    return json.dumps({k: job[k] for k in sorted(job)}, sort_keys=True)


def grid(args) -> list[dict]:
    jobs = []
    # Seed-major: an interrupted sweep has every configuration on its first seed first.
    for seed in args.seeds:
        for method, width, layers, lr, node_weight in itertools.product(
                args.methods, args.widths, args.layers, args.lrs, args.node_weights):
            jobs.append({"method": method, "width": width, "layers": layers, "lr": lr,
                         "node_weight": node_weight, "epochs": args.epochs, "seed": seed})
    return jobs


def train_one(job: dict, dataset: str, level: str, labels: str, device: str) -> dict:
    import torch

    from nar_tvm.training import evaluate_predictor, train_on_dataset

    torch.set_num_threads(1)
    start = time.perf_counter()
    predictor, history, parts = train_on_dataset(
        dataset, level=level, split="in-domain", seed=job["seed"],
        model_cfg=recipes.model_config(job["method"], width=job["width"], layers=job["layers"]),
        train_cfg=replace(recipes.TRAINING, epochs=job["epochs"], lr=job["lr"], seed=job["seed"], device=device),
        progress=False, node_weight=job["node_weight"], labels=labels)
    train_s = time.perf_counter() - start  # includes reading the dataset (a few seconds)
    val = evaluate_predictor(predictor, parts["val"], level)["overall"]
    test = evaluate_predictor(predictor, parts["test"], level)["overall"]
    return {**job, "key": run_key(job), "best_epoch": history.best_epoch, "train_s": train_s,
            "val": val, "test": test, "device": device,
            "params": sum(p.numel() for p in predictor.model.parameters())}


def run_sweep(args) -> None:
    out = Path(args.out)
    done = set()
    if out.exists():
        done = {json.loads(line)["key"] for line in out.read_text().splitlines() if line.strip()}
    jobs = [j for j in grid(args) if run_key(j) not in done]
    print(f"{len(done)} runs already in {out}, {len(jobs)} to go", flush=True)
    deadline = time.monotonic() + args.time_limit if args.time_limit else None
    with ProcessPoolExecutor(args.workers) as pool, out.open("a") as sink:
        pending = {}
        queue = list(jobs)

        def submit():
            while queue and len(pending) < args.workers and (deadline is None or time.monotonic() < deadline):
                job = queue.pop(0)
                pending[pool.submit(train_one, job, str(args.dataset), args.level, args.labels, args.device)] = job

        submit()
        while pending:
            fut = next(as_completed(pending))
            job = pending.pop(fut)
            try:
                result = fut.result()
            except Exception as exc:  # one bad configuration must not lose the others' results
                print(f"FAILED {job}: {exc!r}", flush=True)
            else:
                sink.write(json.dumps(result) + "\n")
                sink.flush()
                print(f"{result['method']:>14} w{job['width']} L{job['layers']} lr{job['lr']:g} "
                      f"kt{job['node_weight']:g} seed{job['seed']}: val MAPE {result['val']['mape']:.4f} "
                      f"test {result['test']['mape']:.4f} ({result['train_s']:.0f} s, epoch {result['best_epoch']})",
                      flush=True)
            submit()
    if queue:
        print(f"time limit reached: {len(queue)} runs not started; run again to resume", flush=True)


def summarize(path: Path) -> str:
    runs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    by_config = defaultdict(list)
    for r in runs:
        by_config[(r["method"], r["width"], r["layers"], r["lr"], r["node_weight"], r["epochs"])].append(r)
    seeds = max(len(v) for v in by_config.values())

    def mean_sd(values):
        return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)

    rows = []
    for config, rs in by_config.items():
        if len(rs) < seeds:  # rank only configurations that ran on every seed
            continue
        rows.append((config, mean_sd([r["val"]["mape"] for r in rs]), mean_sd([r["val"]["acc@10%"] for r in rs]),
                     mean_sd([r["test"]["mape"] for r in rs]), mean_sd([r["test"]["acc@10%"] for r in rs]),
                     statistics.mean(r["train_s"] for r in rs), rs[0]["params"]))
    rows.sort(key=lambda row: row[1][0])
    device = sorted({r["device"] for r in runs})
    lines = [f"Runs: {len(runs)} ({seeds} seeds per configuration, device {', '.join(device)}), in-domain split, "
             f"ranked by mean validation MAPE. Test figures are shown for reading only; the choice is made on "
             f"validation.", "",
             "| method | width | layers | lr | kernel-time weight | epochs | val MAPE | val Acc(10%) | test MAPE | "
             "test Acc(10%) | train s | params |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (method, width, layers, lr, kt, epochs), vm, va, tm, ta, secs, params in rows:
        lines.append(f"| {method} | {width} | {layers} | {lr:g} | {kt:g} | {epochs} | {vm[0]:.4f} ± {vm[1]:.4f} | "
                     f"{100 * va[0]:.1f}% | {tm[0]:.4f} ± {tm[1]:.4f} | {100 * ta[0]:.1f} ± {100 * ta[1]:.1f}% | "
                     f"{secs:.0f} | {params:,} |")
    best = {}
    for row in rows:
        best.setdefault(row[0][0], row)
    lines += ["", "Best configuration of each method (by validation):", ""]
    for method, ((_, width, layers, lr, kt, epochs), vm, _, tm, ta, _, _) in best.items():
        lines.append(f"- {method}: width {width}, {layers} layers, lr {lr:g}, kernel-time weight {kt:g}: "
                     f"val MAPE {vm[0]:.4f}, test MAPE {tm[0]:.4f} ± {tm[1]:.4f}, "
                     f"test Acc(10%) {100 * ta[0]:.1f} ± {100 * ta[1]:.1f}%")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--level", default="fused", choices=["op", "fused"])
    parser.add_argument("--labels", default="min")
    parser.add_argument("--methods", nargs="+", default=["nar-former-v2", "nnlp"])
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3])
    parser.add_argument("--node-weights", type=float, nargs="+", default=[0.0, 1.0])
    parser.add_argument("--epochs", type=int, default=recipes.TRAINING.epochs)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument("--time-limit", type=float, default=None,
                        help="start no new run after this many seconds (finished runs are kept)")
    parser.add_argument("--out", default=str(HERE / "recipe_sweep.jsonl"))
    parser.add_argument("--summarize", type=Path, default=None, help="only summarize this results file")
    args = parser.parse_args()
    if args.summarize is None:
        run_sweep(args)
    print(summarize(Path(args.summarize or args.out)))


if __name__ == "__main__":
    main()
