"""A checkpoint that knows all sixteen zoo families, carried to another machine.

The shipped default trained on the ten older families of `cpu-znver4-1t`; the six modern ones
(vit, bert, convnext, resnext, densenet, shufflenetv2) were measured only on the AMD EPYC znver3
VM of `zoo-epyc-znver3-1` (#19 item 3 is blocked on the default's machine). Would a checkpoint
trained there on all sixteen serve a user on a third machine better? This script answers it on
the Intel Xeon stores: calibrated on ten shots of that machine, as `nar-tvm calibrate` does,
against the shipped default calibrated the same way.

Stages:
  fit   give a checkpoint trained on the sixteen families (cost_prior_runs.py ... --save) the
        interval fit `nar-tvm predict` reports: q from its validation split, q_novel over the
        families from the recorded leave-one-family-out runs of its configuration
        (cost_prior_runs.jsonl, rows with per-model predictions), the default novelty quantile
  xeon  each checkpoint calibrated on 10 models of the Xeon panel (ten older families, DRAWS
        seeded draws), tested on the panel's other 90 and on the six modern families measured
        on the same VM (`unseen-families-xeon-rocketlake-1`): MAPE and 90%-interval coverage

    OMP_NUM_THREADS=1 python benchmarks/cost_prior_runs.py in-domain prior 1 --transcendentals \
        --dataset benchmarks/data/zoo-epyc-znver3-1 --measured-before 2026-12-05T00:00 --save zoo16.pt
    python benchmarks/zoo16_transfer.py fit zoo16.pt --seed 1 --out benchmarks/zoo16_epyc.pt
    python benchmarks/zoo16_transfer.py xeon nar_tvm/checkpoints/default.pt benchmarks/zoo16_epyc.pt
    python benchmarks/real_models.py report --store benchmarks/data/real-models-xeon-rocketlake-1 \
        --checkpoint benchmarks/zoo16_epyc.pt --md benchmarks/real_models_zoo16.md --json benchmarks/real_models_zoo16.json
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from cost_prior_runs import DATA, METHODS, configuration_label, snapshot_rows

STORE = DATA.parent / "zoo-epyc-znver3-1"
# The store as its checkpoints trained on it (every model measured by then), and the snapshot the
# sixteen-family leave-one-family-out runs were recorded on.
TRAINED_BEFORE = "2026-12-05T00:00"
LOFO_BEFORE = "2026-12-04T12:31:37"
PANEL = DATA.parent / "panel-xeon-rocketlake-1"
MODERN = DATA.parent / "unseen-families-xeon-rocketlake-1"
SHOTS = 10
DRAWS = 30


def held_out_residuals(method: str) -> dict[str, list[float]]:
    """|log(measured / predicted)| of each family's models when `method` held it out, over every
    recorded seed with per-model predictions."""
    from nar_tvm.dataset import load_samples

    measured = {s.job: s.latency_ms for s in load_samples(STORE, None, "min", LOFO_BEFORE)}
    residuals: dict[str, list[float]] = {}
    for row in snapshot_rows(STORE.name, LOFO_BEFORE):
        if row["split"].startswith("ood:") and "predicted_ms" in row \
                and configuration_label(row, METHODS[row["method"]]) == method:
            residuals.setdefault(row["split"].removeprefix("ood:"), []).extend(
                abs(float(np.log(measured[job] / ms))) for job, ms in row["predicted_ms"]["test"].items())
    if not residuals:
        raise SystemExit(f"no leave-one-family-out runs of {method!r} with per-model predictions on {STORE.name}")
    return residuals


def run_fit(args) -> None:
    from nar_tvm.cost_model import load_checkpoint, save_checkpoint
    from nar_tvm.cost_model.uncertainty import fit_uncertainty
    from nar_tvm.dataset import load_samples, make_split
    from nar_tvm.training import graphs_of, latencies_of

    predictor = load_checkpoint(args.checkpoint)
    level = predictor.provenance["level"]
    parts = make_split(load_samples(STORE, None, "min", TRAINED_BEFORE), "in-domain", args.seed)
    novel = held_out_residuals(predictor.provenance["method"])
    unc = fit_uncertainty(predictor, graphs_of(parts["train"], level), graphs_of(parts["val"], level),
                          latencies_of(parts["val"]), novel)
    unc.source = (f"q: validation split ({len(parts['val'])} models); q_novel: leave-one-family-out runs of this "
                  f"configuration ({sum(map(len, novel.values()))} models of {len(novel)} families, a quantile over "
                  "families; benchmarks/zoo16_transfer.py)")
    predictor.provenance["uncertainty"] = unc.to_state()
    predictor.provenance["families"] = sorted({s.family for s in parts["train"]})
    save_checkpoint(predictor, args.out)
    print(f"{args.out}: q {unc.q:.3f} (x{np.exp(unc.q):.2f}), q_novel {unc.q_novel:.3f} (x{np.exp(unc.q_novel):.2f}) "
          f"over {len(novel)} families")


def run_xeon(args) -> None:
    from nar_tvm.calibrate import calibrated_predictor
    from nar_tvm.cost_model import calibration, load_checkpoint
    from nar_tvm.dataset import load_samples

    panel, modern = load_samples(PANEL, None, "min"), load_samples(MODERN, None, "min")
    families = sorted({s.family for s in modern})
    print(f"Calibrated on {SHOTS} of the {len(panel)} panel models ({DRAWS} draws), tested on the panel's other "
          f"{len(panel) - SHOTS} and on {len(modern)} models of {len(families)} modern families; mean ± spread over draws.\n")
    print("| checkpoint | panel MAPE | panel coverage | modern MAPE | modern coverage | "
          + " | ".join(families) + " |")
    print("|---|---|---|---|---|" + "---|" * len(families))
    for path in args.checkpoints:
        predictor = load_checkpoint(path)
        level = predictor.provenance["level"]
        panel_graphs, modern_graphs = [s.graph(level) for s in panel], [s.graph(level) for s in modern]
        panel_ms, modern_ms = np.array([s.latency_ms for s in panel]), np.array([s.latency_ms for s in modern])
        scores, by_family = [], {f: [] for f in families}
        rng = np.random.default_rng(0)  # the same draws for every checkpoint
        for _ in range(DRAWS):
            shots = rng.choice(len(panel), SHOTS, replace=False)
            rest = np.setdiff1d(np.arange(len(panel)), shots)
            fit = calibration.fit(predictor, [panel_graphs[i] for i in shots], panel_ms[shots])
            calibrated = calibrated_predictor(predictor, fit, None, {}, str(path))
            panel_res, modern_res = calibrated.predict([panel_graphs[i] for i in rest]), calibrated.predict(modern_graphs)
            scores.append([score for res, ms in ((panel_res, panel_ms[rest]), (modern_res, modern_ms))
                           for score in (np.mean(np.abs(res.latency_ms / ms - 1)),
                                         np.mean((ms >= res.low_ms) & (ms <= res.high_ms)))])
            for f in families:
                mask = np.array([s.family == f for s in modern])
                by_family[f].append(np.mean(np.abs(modern_res.latency_ms[mask] / modern_ms[mask] - 1)))
        mean, std = np.mean(scores, axis=0), np.std(scores, axis=0)
        print(f"| `{path}` | " + " | ".join(f"{m:.3f} ± {s:.3f}" for m, s in zip(mean, std)) + " | "
              + " | ".join(f"{np.mean(by_family[f]):.3f}" for f in families) + " |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="stage", required=True)
    p = sub.add_parser("fit", help="write the interval fit into a sixteen-family checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("--seed", type=int, required=True, help="the in-domain split seed it trained with")
    p.add_argument("--out", required=True)
    p.set_defaults(func=run_fit)
    p = sub.add_parser("xeon", help="calibrated on the Xeon panel, tested on its rest and the modern families")
    p.add_argument("checkpoints", nargs="+")
    p.set_defaults(func=run_xeon)
    args = parser.parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
