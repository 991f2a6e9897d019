"""Tokenizer and predictor throughput: batched vs one graph at a time, in one run.

Measures the predictor that ships (default checkpoint), and the networks of the recipes
named with --models at their recipe size (weights as initialised: speed does not depend
on their values), on measured dataset graphs of 50-250 nodes at the checkpoint's graph
level, for each torch thread count asked:

    python benchmarks/bench_predictor_throughput.py            # 1 and 2 threads
    python benchmarks/bench_predictor_throughput.py --synthetic  # no dataset needed

Run it on an otherwise idle machine: both paths are timed round-robin, so a burst of
load hits them alike, but absolute rates still depend on what else runs.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from nar_tvm.api import resolve_checkpoint
from nar_tvm.cost_model import LatencyPredictor, NARFormerV2, NARFormerV2Config, Tokenizer, load_checkpoint, recipes
from nar_tvm.cost_model.architectures import architecture_of, build_model
from nar_tvm.cost_model.synthetic import random_graph

HERE = Path(__file__).resolve().parent


def best_rates(runs: dict, items: int, repeats: int) -> dict[str, float]:
    """Items per second of each run's fastest repetition. Repetitions go round-robin
    over the runs, so a burst of load from elsewhere on the machine hits them alike."""
    best = dict.fromkeys(runs, float("inf"))
    for fn in runs.values():  # warm-up
        fn()
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: items / seconds for name, seconds in best.items()}


def dataset_graphs(path: str, level: str, min_nodes: int, max_nodes: int, count: int):
    from nar_tvm.dataset import load_samples

    graphs = [g for g in (s.graph(level) for s in load_samples(path)) if min_nodes <= g.num_nodes <= max_nodes]
    if not graphs:
        raise SystemExit(f"{path}: no {level}-level graphs with {min_nodes}-{max_nodes} nodes")
    return [graphs[i % len(graphs)] for i in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="default: the shipped checkpoint")
    parser.add_argument("--dataset", default=str(HERE / "data" / "cpu-znver4-1t"))
    parser.add_argument("--synthetic", action="store_true",
                        help="random synthetic graphs and an untrained default-size model instead")
    parser.add_argument("--graphs", type=int, default=256)
    parser.add_argument("--min-nodes", type=int, default=50)
    parser.add_argument("--max-nodes", type=int, default=250)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--models", nargs="*", default=["nar-former-v2"], choices=sorted(recipes.MODELS),
                        help="recipe networks measured beside the shipped checkpoint")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    if args.synthetic:
        rng = np.random.default_rng(args.seed)
        graphs = [random_graph(rng, int(rng.integers(args.min_nodes, args.max_nodes + 1)))
                  for _ in range(args.graphs)]
        tokenizer = Tokenizer().fit(graphs)
        # The 128-wide network the synthetic figures have always been measured with.
        cfg = NARFormerV2Config(token_dim=tokenizer.token_dim, static_dim=tokenizer.static_dim,
                                d_model=128, head_hidden=128, dropout=0.05, readout="sum")
        predictors = {"NARFormerV2 128 wide": LatencyPredictor(tokenizer, NARFormerV2(cfg).eval())}
        source = "synthetic graphs, untrained models"
    else:
        checkpoint = resolve_checkpoint(args.checkpoint)
        shipped = load_checkpoint(checkpoint)
        level = shipped.provenance.get("level", "op")
        graphs = dataset_graphs(args.dataset, level, args.min_nodes, args.max_nodes, args.graphs)
        tokenizer = shipped.tokenizer
        predictors = {f"shipped ({architecture_of(shipped.model.cfg)}, {shipped.provenance.get('method', '?')})": shipped}
        for name in args.models:
            cfg = replace(recipes.MODELS[name], token_dim=tokenizer.token_dim, static_dim=tokenizer.static_dim)
            predictors[f"recipe {name}"] = LatencyPredictor(tokenizer, build_model(cfg).eval())
        source = f"{level}-level graphs of {args.dataset}, checkpoint {checkpoint.name}"
    nodes = sum(g.num_nodes for g in graphs)
    tokens = tokenizer.encode_many(graphs)
    print(f"{len(graphs)} graphs ({source}), {args.min_nodes}-{args.max_nodes} nodes "
          f"(mean {nodes / len(graphs):.0f}); {platform.processor() or platform.machine()}")

    results = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        runs = {"tokenizer": lambda: tokenizer.encode_many(graphs)}
        for label, pred in predictors.items():
            runs[f"{label}|single"] = lambda pred=pred: [pred.predict_tokens([t], batch_size=1) for t in tokens]
            for bs in args.batch_sizes:
                runs[f"{label}|batched {bs}"] = lambda pred=pred, bs=bs: pred.predict_tokens(tokens, batch_size=bs)
            runs[f"{label}|end-to-end"] = lambda pred=pred: pred.predict(graphs)
        rate = best_rates(runs, len(graphs), args.repeats)
        print(f"\ntorch threads {torch.get_num_threads()}")
        print(f"  tokenizer                        {rate['tokenizer']:9.1f} graphs/s  "
              f"{rate['tokenizer'] * nodes / len(graphs):9.0f} nodes/s")
        speedups = {}
        for label in predictors:
            single = rate[f"{label}|single"]
            print(f"  {label}")
            print(f"    one graph at a time            {single:9.1f} graphs/s")
            for bs in args.batch_sizes:
                batched = rate[f"{label}|batched {bs}"]
                speedups[f"{label}|batched {bs}"] = batched / single
                print(f"    batched (<= {bs:>3})              {batched:9.1f} graphs/s  {batched / single:5.1f}x one-at-a-time")
            print(f"    predict() incl. tokenizing     {rate[f'{label}|end-to-end']:9.1f} graphs/s")
        results.append({"threads": threads, "graphs_per_s": rate, "speedup": speedups})
    if args.json:
        Path(args.json).write_text(json.dumps({"source": source, "graphs": len(graphs),
                                               "mean_nodes": nodes / len(graphs), "results": results}, indent=1))


if __name__ == "__main__":
    main()
