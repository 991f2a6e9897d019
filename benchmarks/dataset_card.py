"""Write the dataset card (README.md + latency histogram) next to a measured dataset.

    python benchmarks/dataset_card.py benchmarks/data/cpu-znver4-1t
"""
from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nar_tvm.dataset import DatasetStore, stats  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    args = parser.parse_args()
    root = Path(args.dataset)
    s = stats(root)
    records = list(DatasetStore(root).records("ok"))
    per_family = defaultdict(list)
    cvs = defaultdict(list)
    for r in records:
        per_family[r["model"]["family"]].append(r["measurement"]["median_ms"])
        cvs[r["model"]["family"]].append(r["measurement"]["cv"])
    fingerprint = records[0]["platform"] if records else {}
    protocol = records[0]["measurement"]["protocol"] if records else {}
    failures = [r for r in DatasetStore(root).records("failed")]
    # The commands that grew this dataset and the conditions they ran in: hand-written, kept
    # beside the data, since the records cannot tell how many runs made them.
    how = root / "MEASURED.md"
    how_lines = how.read_text().strip().splitlines() if how.exists() else [
        "(no MEASURED.md beside the data: the commands that made it are not recorded)"]

    fig, ax = plt.subplots(figsize=(8, 4.5))
    bins = np.logspace(np.log10(min(min(v) for v in per_family.values())),
                       np.log10(max(max(v) for v in per_family.values())), 40)
    for fam, values in sorted(per_family.items()):
        ax.hist(values, bins=bins, histtype="step", label=fam)
    ax.set_xscale("log")
    ax.set_xlabel("median latency (ms)")
    ax.set_ylabel("models")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(root / "latency_hist.png", dpi=110)
    plt.close(fig)

    lines = [
        f"# Dataset card: {root.name}",
        "",
        "Regenerate with `python benchmarks/dataset_card.py " + str(root) + "`.",
        "",
        "Latencies of TVM-compiled models from the project's seeded architecture zoo "
        "(`nar_tvm/zoo.py`), measured by `nar-tvm profile` on one machine. Every record holds the "
        "op-level and fused-level OpGraphs, the generator parameters, the measurement (median, "
        "all repeats, CV, compile seconds, per-kernel times of one instrumented run) and the "
        "platform fingerprint. Shards are JSON lines, gzipped when full.",
        "",
        "## How it was measured",
        "",
        *how_lines,
        "",
        "* Each model: torch -> ONNX (legacy exporter, BatchNorm folded) -> onnx-simplifier -> "
        f"Relax (`from_onnx`) -> `tvm.compile` with the `{fingerprint.get('pipeline', 'default')}` "
        "compile pipeline (`nar_tvm.measure.graph_level_passes`; no tuning) -> "
        f"Relax VM `time_evaluator` with protocol {json.dumps(protocol)}: one warm-up call, "
        "then `repeat` timings, each of as many calls as fill `min_repeat_ms`; the latency is the "
        "median of the repeats, the CV their spread.",
        "",
        "## Platform fingerprint",
        "",
        "```json",
        json.dumps(fingerprint, indent=2),
        "```",
        "",
        "## Counts and latency per family",
        "",
        f"Records by status: {json.dumps(s['status'])}.",
        "",
        "| family | models | min ms | median ms | max ms | median CV |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for fam, f in s["families"].items():
        lines.append(f"| {fam} | {f['count']} | {f['min_ms']:.2f} | {f['median_ms']:.2f} | "
                     f"{f['max_ms']:.2f} | {statistics.median(cvs[fam]):.4f} |")
    total = sum(f["count"] for f in s["families"].values())
    lines += [
        f"| **all** | **{total}** | | | | {s['median_cv']:.4f} |" if s["median_cv"] is not None else "",
        "",
        "![latency histogram](latency_hist.png)",
        "",
        f"Median compile time per model: {s['median_compile_s']:.2f} s.",
        "",
        "## Noise floor",
        "",
    ]
    nf = s["noise_floor"]
    if nf:
        share = nf["count"] / max(s["status"].get("ok", 0), 1)
        who = ("Every measured model was" if share >= 1 else
               f"{nf['count']} models ({share:.0%} of the measured ones, a seeded random sample) were")
        lines.append(f"{who} measured again in a later pass. "
                     f"Median relative difference between the two measurements: "
                     f"**{nf['median_rel_diff']:.4f}** ({nf['median_rel_diff']:.2%}); 90th percentile "
                     f"{nf['p90_rel_diff']:.4f}. Scored as a prediction of the first run, the second run "
                     f"has MAPE **{nf['mape']:.3f}**, Acc(5%) {nf['acc@5%']:.1%} and Acc(10%) {nf['acc@10%']:.1%}: "
                     "against single-run labels, no predictor can be expected to do better.")
    else:
        lines.append("No re-measurements yet (run the `--remeasure` command above).")
    if failures:
        lines += ["", "## Failures", ""]
        for r in failures[:20]:
            lines.append(f"* `{r['job']}` ({r.get('stage')}): {r.get('error', '')[:200]}")
    (root / "README.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {root / 'README.md'}")


if __name__ == "__main__":
    main()
