"""Which of a held-out family's generator choices carries its error.

A family's zoo models differ by their generator parameters (stem, resolution, width, ...). When
the family is held out, the recorded runs (cost_prior_runs.jsonl, rows with per-model
predictions) say how each model was predicted; grouping those predictions by one parameter's
value shows whether the error is spread over the family or sits in one corner of it that the
training families never visit (densenet's CIFAR stem: full-resolution 1x1 convolutions over
many channels). Each configuration's seeds are pooled; parameters with more than MAX_VALUES
distinct values are left out (a depth list per stage says little one value at a time).

    python benchmarks/error_by_param.py ood:densenet --dataset benchmarks/data/zoo-epyc-znver3-1 \
        --measured-before 2026-12-04T12:31:37
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from cost_prior_runs import DATA, configuration_label, snapshot_rows

MAX_VALUES = 8


def error_by_param(split: str, dataset: Path, measured_before: str | None) -> str:
    from nar_tvm.dataset import load_samples

    samples = {s.job: s for s in load_samples(dataset, None, "min", measured_before)}
    runs: dict[str, list[dict]] = {}
    for row in snapshot_rows(dataset.name, measured_before):
        if row["split"] == split and "predicted_ms" in row:
            runs.setdefault(configuration_label(row), []).append(row)
    if not runs:
        raise SystemExit(f"no run of {split} on {dataset.name} measured before {measured_before} "
                         "recorded per-model predictions")
    lines = [f"{split} on `{dataset.name}`, measured before {measured_before or 'the end'}: held-out models grouped "
             "by one generator parameter; predicted / measured is the geometric mean over the group's models and "
             "the configuration's seeds.", ""]
    for label, rows in sorted(runs.items()):
        jobs = [job for row in rows for job in row["predicted_ms"]["test"]]
        ratio = np.array([row["predicted_ms"]["test"][job] / samples[job].latency_ms
                          for row in rows for job in row["predicted_ms"]["test"]])
        params = [samples[job].record["model"].get("params", {}) for job in jobs]
        seeds = ", ".join(str(row["seed"]) for row in sorted(rows, key=lambda r: r["seed"]))
        lines += [f"**{label}** (seeds {seeds}; MAPE {np.mean(np.abs(ratio - 1)):.3f})", "",
                  "| parameter | value | models | predicted / measured | MAPE |", "|---|---|---|---|---|"]
        for name in sorted({k for p in params for k in p}):
            values = [json.dumps(p.get(name)) for p in params]
            distinct = sorted(set(values), key=_value_order)
            if not 1 < len(distinct) <= MAX_VALUES:
                continue
            for value in distinct:
                group = ratio[[v == value for v in values]]
                lines.append(f"| {name} | {value} | {len(group) // len(rows)} | {np.exp(np.mean(np.log(group))):.2f} | "
                             f"{np.mean(np.abs(group - 1)):.3f} |")
        lines.append("")
    return "\n".join(lines)


def _value_order(text: str) -> tuple:
    """Numbers by size, then everything else by its text."""
    value = json.loads(text)
    return (0, value, "") if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, 0, text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("split", help="a held-out split, ood:<family>")
    parser.add_argument("--dataset", type=Path, default=DATA)
    parser.add_argument("--measured-before", metavar="ISO_TIME")
    args = parser.parse_args(argv)
    if not args.split.startswith("ood:"):
        parser.error("the split must hold a family out: ood:<family>")
    print(error_by_param(args.split, args.dataset, args.measured_before))
    return 0


if __name__ == "__main__":
    sys.exit(main())
