"""How fast untuned TVM runs plain convolutions: 1x1 ones by input channels and plane size,
few-channel ones (stems, patch embeddings) by window and stride.

Reads a store's measured per-kernel times (no measuring, no TVM) and prints the median time per
unit of the cost prior's FLOPs + bytes of plain convolution kernels (a conv2d anchor with no
transcendental epilogue): for every ungrouped stride-1 1x1 convolution, per input-channel count
(over all families and per family) and per input plane size; for every convolution with at
most 4 input channels, per family, window and stride. The cost prior assumes time grows with
FLOPs + bytes at one rate per kind of kernel; these tables show where untuned code breaks that
(on the znver3 VM: a ~5x slowdown past ~40 input channels, 32x32 planes, 4 KiB apart, another
~4x, and a stem's rate growing ~8x from a 2x2 window to 16x16). Figures: families16.md.

    python benchmarks/conv_efficiency.py --dataset benchmarks/data/zoo-epyc-znver3-1 \\
        --measured-before 2026-12-04T12:31:37
"""
from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CHANNEL_EDGES = (8, 16, 24, 32, 40, 48, 64, 128, 1 << 20)


def plain_conv_calls(samples):
    """(family, node, ns per FLOP-or-byte) of every plain conv kernel call (kernel_kind "conv2d":
    ungrouped, no transcendental epilogue) with its weights; a kernel called several times counts
    as its mean call (node_times). Both tables select from these, so each graph is read once."""
    from nar_tvm.dataset import node_times
    from nar_tvm.kernel_errors import kernel_kind

    for sample in samples:
        graph = sample.graph("fused")
        for node, ms in zip(graph.nodes, node_times(graph, sample.record["measurement"].get("kernels_ms")) or []):
            if ms is not None and node.weights and kernel_kind(node) == "conv2d":
                yield sample.record["model"]["family"], node, ms * 1e6 / (node.flops + node.bytes)


def plain_pointwise_convs(calls):
    """(family, input shape [N, C, H, W], ns per FLOP-or-byte) of the 1x1 stride-1 ones among
    `plain_conv_calls`."""
    # Graphs extracted before OpGraph /2 carry no strides on fused nodes: not classifiable.
    return [(family, node.inputs[0].shape, e) for family, node, e in calls
            if list(node.attrs.get("strides", [])) == [1, 1] and node.weights[0].shape[2:] == [1, 1]]


def few_channel_convs(calls, max_channels: int = 4):
    """(family, window, strides, ns per FLOP-or-byte) of the `plain_conv_calls` reading at most
    `max_channels` input channels: the stems on images and the patch embeddings."""
    return [(family, tuple(node.weights[0].shape[2:]), tuple(node.attrs.get("strides", [])), e)
            for family, node, e in calls if node.inputs[0].shape[1] <= max_channels]


def few_channel_table(rows) -> str:
    by_window = defaultdict(list)
    for family, window, strides, e in rows:
        by_window[(family, window, strides)].append(e)
    lines = ["Convolutions reading at most 4 input channels (stems, patch embeddings), by window and stride:", "",
             "| family | window | stride | median ns per FLOP-or-byte | kernels |", "|---|---|---|---|---|"]
    lines += [f"| {f} | {'x'.join(map(str, w))} | {'x'.join(map(str, st))} | {np.median(v):.3f} | {len(v)} |"
              for (f, w, st), v in sorted(by_window.items())]
    return "\n".join(lines)


def median_cell(values) -> str:
    return f"{np.median(values):.3f} ({len(values)})" if values else ""


def tables(rows) -> str:
    families = sorted({family for family, _, _ in rows})
    bands = list(zip(CHANNEL_EDGES, CHANNEL_EDGES[1:]))
    lines = ["Median ns per FLOP-or-byte (kernels) of plain 1x1 stride-1 convolutions, by input channels:", "",
             "| family | " + " | ".join(f"{lo}-{hi - 1}" if hi < 1 << 20 else f">= {lo}" for lo, hi in bands) + " |",
             "|---|" + "---|" * len(bands)]
    for family in [*families, "all"]:
        cells = [median_cell([e for f, shape, e in rows if family in (f, "all") and lo <= shape[1] < hi])
                 for lo, hi in bands]
        lines.append(f"| {family} | " + " | ".join(cells) + " |")
    by_plane = defaultdict(list)
    for _, shape, e in rows:
        if shape[1] >= 48:
            by_plane[(shape[2], shape[3])].append(e)
    lines += ["", "With >= 48 input channels, by input plane (H x W) and its size in bytes (float32):", "",
              "| plane | bytes | median ns per FLOP-or-byte | kernels |", "|---|---|---|---|"]
    lines += [f"| {h}x{w} | {4 * h * w} | {np.median(v):.3f} | {len(v)} |"
              for (h, w), v in sorted(by_plane.items()) if len(v) >= 50]
    return "\n".join(lines)


def main(argv=None) -> int:
    from nar_tvm.dataset import load_samples

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=REPO / "benchmarks" / "data" / "zoo-epyc-znver3-1")
    parser.add_argument("--measured-before", metavar="ISO_TIME")
    args = parser.parse_args(argv)
    calls = list(plain_conv_calls(load_samples(args.dataset, labels="min", measured_before=args.measured_before)))
    print(tables(plain_pointwise_convs(calls)))
    print()
    print(few_channel_table(few_channel_convs(calls)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
