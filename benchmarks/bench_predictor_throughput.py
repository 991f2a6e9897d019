"""Tokenizer and predictor throughput on synthetic graphs of 50-250 nodes.

Compares the batched predictor (padded graphs, one forward pass per chunk) with
predicting one graph at a time, in the same run. Single-threaded on purpose, so
the numbers do not depend on how many cores happen to be free:

    taskset -c 0 python benchmarks/bench_predictor_throughput.py
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from nar_tvm.cost_model import LatencyPredictor, NARFormerV2, NARFormerV2Config, Tokenizer
from nar_tvm.cost_model.synthetic import random_graph


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graphs", type=int, default=256)
    parser.add_argument("--min-nodes", type=int, default=50)
    parser.add_argument("--max-nodes", type=int, default=250)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    graphs = [random_graph(rng, int(rng.integers(args.min_nodes, args.max_nodes + 1)))
              for _ in range(args.graphs)]
    nodes = sum(g.num_nodes for g in graphs)

    tokenizer = Tokenizer().fit(graphs)
    tokens = tokenizer.encode_many(graphs)
    cfg = NARFormerV2Config(token_dim=tokenizer.token_dim, static_dim=tokenizer.static_dim)
    # Untrained weights: throughput does not depend on their values.
    predictor = LatencyPredictor(tokenizer, NARFormerV2(cfg).eval())

    print(f"{args.graphs} graphs, {args.min_nodes}-{args.max_nodes} nodes "
          f"(mean {nodes / args.graphs:.0f}), token dim {tokenizer.token_dim}, "
          f"d_model {cfg.d_model}, {cfg.n_layers} layers, torch threads {torch.get_num_threads()}")

    runs = {
        "tokenizer": lambda: tokenizer.encode_many(graphs),
        "single": lambda: [predictor.predict_tokens([t], batch_size=1) for t in tokens],
        **{f"batched {bs}": (lambda bs=bs: predictor.predict_tokens(tokens, batch_size=bs))
           for bs in args.batch_sizes},
        "end-to-end": lambda: predictor.predict(graphs),
    }
    rate = best_rates(runs, args.graphs, args.repeats)
    print(f"tokenizer                      {rate['tokenizer']:9.1f} graphs/s  "
          f"{rate['tokenizer'] * nodes / args.graphs:9.0f} nodes/s")
    print(f"predictor, one graph at a time {rate['single']:9.1f} graphs/s")
    for bs in args.batch_sizes:
        batched = rate[f"batched {bs}"]
        print(f"predictor, batched (<= {bs:>3})   {batched:9.1f} graphs/s  "
              f"{batched / rate['single']:5.1f}x one-at-a-time")
    print(f"predict() incl. tokenizing     {rate['end-to-end']:9.1f} graphs/s")


if __name__ == "__main__":
    main()
