"""Variants of the shipped recipe, each trained on one split and seed and chosen on validation.

Trains the recipe of the checkpoint shipped before the prior (NAR-Former V2, kernel-sum readout,
no grouped FFN, kernel times weight 1, fused graphs, labels "min"; cost_model.recipes.TRAINING)
with and without `cost_prior` (with it, the shipped recipe), optionally with the paper's
attention form (`--attention sigmoid-adjacency`: a sigmoid of the query-key score times the
normalised adjacency, one head, as the official NAR-Former V2 code computes it), and appends its
validation and test MAPE to benchmarks/cost_prior_runs.jsonl. Splits: `in-domain`, `ood:<family>`
(the family held out of training and validation), and `size` (train on the smallest 80% of
graphs by FLOPs, validate on the next 10%, test on the largest 10%: extrapolation to larger
graphs). One run is 5-11 minutes on one core, depending on the machine. `--dataset` trains on
another store (rows then name it, and the table keeps stores apart): another machine's data
is never pooled with this one's.

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/cost_prior_runs.py size prior 0 [--save ckpt.pt]
    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/cost_prior_runs.py in-domain prior 0 --attention sigmoid-adjacency
    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/cost_prior_runs.py in-domain prior 0 --dataset benchmarks/data/zoo-epyc-znver3-1
    python benchmarks/cost_prior_runs.py table
    python benchmarks/cost_prior_runs.py kinds
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "benchmarks" / "data" / "cpu-znver4-1t"
RUNS = REPO / "benchmarks" / "cost_prior_runs.jsonl"
# The latency report's method that was shipped before the prior.
BASE_METHOD = "NAR-Former V2 + kernel-sum readout - grouped FFN"


def run(split: str, prior: bool, seed: int, save: str | None, attention: str = "softmax", data: Path = DATA,
        transcendentals: bool = False) -> dict:
    from nar_tvm.cost_model import save_checkpoint
    from nar_tvm.cost_model.tokenizer import TokenizerConfig
    from nar_tvm.training import evaluate_predictor, graphs_of, train_on_dataset

    from latency_report_protocol import TRAIN, methods
    from nar_tvm.compare import samples_kernel_error

    base = next(m for m in methods(TRAIN.epochs) if m.name == BASE_METHOD)
    cfg = replace(base.model_cfg, cost_prior={} if prior else None)
    if attention != cfg.attention:
        # The paper's attention has a single head: its score gates the adjacency, one per edge.
        cfg = replace(cfg, attention=attention, n_heads=1)
    start = time.process_time()
    predictor, history, parts = train_on_dataset(data, level="fused", split=split, seed=seed, model_cfg=cfg,
                                                 train_cfg=replace(TRAIN, seed=seed), progress=False,
                                                 node_weight=base.node_weight, labels="min",
                                                 tokenizer_cfg=TokenizerConfig(transcendentals=transcendentals))
    if save:
        save_checkpoint(predictor, save)
    evaluated = {part: evaluate_predictor(predictor, parts[part]) for part in ("val", "test")}
    scores = {part: e["overall"] for part, e in evaluated.items()}
    # Rows of the default store carry no dataset field, as those written before the option.
    where = {} if data.resolve() == DATA else {"dataset": data.name}
    return {"split": split, "prior": prior, "attention": attention, "transcendentals": transcendentals, "seed": seed,
            **where,
            "cpu_s": round(time.process_time() - start), "best_epoch": history.best_epoch,
            **{f"{part}_{metric}": scores[part][key] for part in ("val", "test")
               for metric, key in (("mape", "mape"), ("acc10", "acc@10%"))},
            "test_family_mape": {f: r["mape"] for f, r in evaluated["test"]["families"].items()},
            **({"kernel_kinds": samples_kernel_error(predictor, parts["test"], graphs_of(parts["test"], "fused"))}
               if split.startswith("ood:") else {})}


def with_defaults(row: dict) -> dict:
    """Rows written before the attention, dataset and transcendentals options trained the default
    attention on DATA without a transcendental count."""
    return {"attention": "softmax", "dataset": DATA.name, "transcendentals": False, **row}


def recorded() -> list[dict]:
    return [with_defaults(json.loads(line)) for line in RUNS.read_text().splitlines() if line.strip()]


def table() -> str:
    import numpy as np

    rows = recorded()
    lines = ["| dataset | split | cost prior | attention | seeds | validation MAPE | test MAPE | test Acc(10%) |",
             "|---|---|---|---|---|---|---|---|"]
    for dataset, split in sorted({(r["dataset"], r["split"]) for r in rows}, key=lambda k: (k[0] != DATA.name, k)):
        here = [r for r in rows if (r["dataset"], r["split"]) == (dataset, split)]
        for prior, attention, transcendentals in sorted({(r["prior"], r["attention"], r["transcendentals"]) for r in here},
                                                        key=lambda k: (k[0], k[1] != "softmax", k[2])):
            sel = sorted((r for r in here if (r["prior"], r["attention"], r["transcendentals"])
                          == (prior, attention, transcendentals)), key=lambda r: r["seed"])

            def cell(key, fmt="{:.4f}"):
                v = np.array([r[key] for r in sel])
                return fmt.format(v.mean()) + (f" ± {v.std():.4f}" if len(v) > 1 else "")
            lines.append(f"| {dataset} | {split} | {('yes' if prior else 'no') + (' + transcendentals' if transcendentals else '')} | {attention} | {', '.join(str(r['seed']) for r in sel)} | "
                         f"{cell('val_mape')} | {cell('test_mape')} | {cell('test_acc10', '{:.3f}')} |")
    return "\n".join(lines)


def kinds(top: int = 4) -> str:
    """For each recorded held-out run that kept its kernel times, the kinds of kernel carrying its error."""
    from nar_tvm.compare import largest_kernel_errors

    lines = ["| dataset | held out | attention | seed | test MAPE | kernel kind | kernels | measured ms | predicted ms "
             "| predicted / measured | share of error |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in recorded():
        for k in largest_kernel_errors(r.get("kernel_kinds") or {})[:top]:
            lines.append(f"| {r['dataset']} | {r['split'].removeprefix('ood:')} | {r['attention']} | "
                         f"{r['seed']} | {r['test_mape']:.3f} | {k['kind']} | {k['kernels']} | {k['measured_ms']:.1f} | "
                         f"{k['predicted_ms']:.1f} | {k['predicted_ms'] / k['measured_ms']:.2f} | {k['error_share']:.0%} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("split", help="in-domain, ood:<family> or size; or 'table' to print the recorded runs, "
                        "'kinds' the kernel kinds carrying each recorded held-out run's error")
    parser.add_argument("prior", nargs="?", choices=["prior", "base"])
    parser.add_argument("seed", nargs="?", type=int, default=0)
    parser.add_argument("--save", help="also write the trained checkpoint here")
    parser.add_argument("--attention", choices=["softmax", "sigmoid-adjacency"], default="softmax")
    parser.add_argument("--dataset", type=Path, default=DATA, help=f"store to train on (default {DATA.relative_to(REPO)})")
    parser.add_argument("--transcendentals", action="store_true",
                        help="the prior also prices each node's transcendental evaluations (exp, erf, tanh, sigmoid)")
    args = parser.parse_args(argv)
    if args.split in ("table", "kinds"):
        print(table() if args.split == "table" else kinds())
        return 0
    if args.prior is None:
        parser.error("say prior or base")
    if args.transcendentals and args.prior != "prior":
        parser.error("--transcendentals prices them in the cost prior: it needs 'prior'")
    row = run(args.split, args.prior == "prior", args.seed, args.save, args.attention, args.dataset, args.transcendentals)
    record(row)
    print(json.dumps(row))
    return 0


def run_id(row: dict) -> tuple:
    """What a row measured."""
    row = with_defaults(row)
    return (row["dataset"], row["split"], row["prior"], row["attention"], row["transcendentals"], row["seed"])


def record(row: dict) -> None:
    """Append `row`; a rerun of the same run replaces the earlier row (a seed counts once).
    Runs in parallel processes finish at any time: the rewrite holds a lock on the file."""
    import fcntl

    with RUNS.open("a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        kept = [line for line in fh.read().splitlines() if line.strip() and run_id(json.loads(line)) != run_id(row)]
        fh.seek(0)
        fh.truncate()
        fh.write("".join(line + "\n" for line in kept + [json.dumps(row)]))


if __name__ == "__main__":
    sys.exit(main())
