"""Random CNN-like OpGraphs with a made-up latency, for tests and benchmarks.

They exercise every token field (conv windows, strides, padding, pools, residual
adds, a dense head) without TVM or measurements. Not a data set to learn from.
"""
from __future__ import annotations

import numpy as np

from nar_tvm.passes.opgraph import OpGraph, OpNode, TensorSpec, numel


def _conv(shape, rng) -> OpNode:
    n, c, h, w = shape
    k = int(rng.choice([1, 3, 5]))
    s = int(rng.choice([1, 1, 2])) if h >= 8 else 1
    cout = int(rng.choice([c, c, 2 * c])) if c < 512 else c
    groups = c if (cout == c and rng.random() < 0.2) else 1
    p = k // 2
    out = [n, cout, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1]
    return OpNode(
        op="relax.nn.conv2d",
        attrs={"strides": [s, s], "padding": [p, p, p, p], "dilation": [1, 1], "groups": groups},
        inputs=[TensorSpec(list(shape))],
        weights=[TensorSpec([cout, c // groups, k, k])],
        outputs=[TensorSpec(out)],
        flops=2 * numel(out) * (c // groups) * k * k,
        ops=["relax.nn.conv2d"],
    )


def _pool(shape) -> OpNode:
    n, c, h, w = shape
    out = [n, c, h // 2, w // 2]
    return OpNode(
        op="relax.nn.max_pool2d",
        attrs={"pool_size": [2, 2], "strides": [2, 2], "padding": [0, 0, 0, 0], "dilation": [1, 1]},
        inputs=[TensorSpec(list(shape))],
        outputs=[TensorSpec(out)],
        flops=numel(out) * 4,
        ops=["relax.nn.max_pool2d"],
    )


def _elementwise(op: str, shape, arity: int) -> OpNode:
    return OpNode(op=op, inputs=[TensorSpec(list(shape))] * arity, outputs=[TensorSpec(list(shape))],
                  flops=numel(shape), ops=[op])


def random_graph(rng: np.random.Generator, n_nodes: int, batch: int = 1, name: str = "") -> OpGraph:
    """A chain of conv/relu/pool/add with residual edges, ending in a dense classifier."""
    if n_nodes < 3:
        raise ValueError("a synthetic graph needs at least 3 nodes")
    size = int(rng.choice([32, 56, 64]))
    shape = [batch, int(rng.choice([8, 16, 32])), size, size]
    nodes: list[OpNode] = []
    edges: list[tuple[int, int]] = []
    for i in range(n_nodes - 2):
        same_shape = [j for j in range(i - 1) if nodes[j].outputs[0].shape == shape]
        r = rng.random()
        if i and same_shape and r < 0.2:
            node = _elementwise("relax.add", shape, 2)
            edges.append((int(rng.choice(same_shape)), i))
        elif r < 0.55:
            node = _conv(shape, rng)
        elif r < 0.62 and shape[2] >= 4:
            node = _pool(shape)
        else:
            node = _elementwise("relax.nn.relu", shape, 1)
        if i:
            edges.append((i - 1, i))
        nodes.append(node)
        shape = node.outputs[0].shape

    n, c = shape[0], shape[1]
    gap = OpNode(op="relax.mean", attrs={"axis": [2, 3], "keepdims": False}, inputs=[TensorSpec(shape)],
                 outputs=[TensorSpec([n, c])], flops=numel(shape), ops=["relax.mean"])
    dense = OpNode(op="relax.matmul", inputs=[TensorSpec([n, c])], weights=[TensorSpec([c, 10])],
                   outputs=[TensorSpec([n, 10])], flops=2 * n * c * 10, ops=["relax.matmul"])
    nodes += [gap, dense]
    edges += [(n_nodes - 3, n_nodes - 2), (n_nodes - 2, n_nodes - 1)]
    return OpGraph(nodes=nodes, edges=edges, inputs=[TensorSpec([batch, 3, size, size])], name=name)


def synthetic_latency_ms(graph: OpGraph, rng: np.random.Generator | None = None, noise: float = 0.02) -> float:
    """Compute-bound time at 0.2 TFLOP/s plus 5 us launch overhead per node, lognormal noise."""
    latency = graph.flops / 2e8 + 0.005 * graph.num_nodes  # ms
    if rng is not None and noise:
        latency *= float(np.exp(rng.normal(0.0, noise)))
    return latency


def synthetic_dataset(n: int, seed: int, sizes=(6, 16)) -> tuple[list[OpGraph], np.ndarray]:
    """`n` random graphs of `sizes` nodes (half-open range) and their made-up latencies."""
    rng = np.random.default_rng(seed)
    graphs = [random_graph(rng, int(rng.integers(*sizes)), batch=int(rng.choice([1, 2, 4])))
              for _ in range(n)]
    return graphs, np.array([synthetic_latency_ms(g, rng) for g in graphs])
