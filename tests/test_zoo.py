import json
from pathlib import Path

import pytest
import torch
from torch import nn

from nar_tvm import zoo


ALL_FAMILIES = list(zoo.FAMILIES)
NEW_FAMILIES = list(zoo.MODERN_FAMILIES)
# The families the stored datasets were measured on: their params must never change.
NNLQP_FAMILIES = [f for f in ALL_FAMILIES if f not in NEW_FAMILIES]

# NB201 arch 1: three 3x3 convs, one avg pool, two skips.
CELL = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|"
        "+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")
# Stem conv, plus conv_a, conv_b and the 1x1 shortcut of each of the two reduction blocks.
SKELETON_CONVS = 1 + 2 * 3


def count(module, kind):
    return sum(isinstance(m, kind) for m in module.modules())


@pytest.mark.parametrize("family", ALL_FAMILIES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_builds_and_runs(family, seed):
    z = zoo.generate(family, seed)
    model, x = z.build(), z.example_input()
    assert z.name == f"{family}-{seed}" and z.family == family and z.seed == seed
    assert not model.training
    batch = z.params["batch"]
    if family == "bert":
        assert tuple(x.shape) == z.input_shape == (batch, z.params["seq_len"])
        assert x.dtype == torch.int64 and z.input_dtype == "int64"
        assert 0 <= int(x.min()) and int(x.max()) < z.params["vocab_size"]
    else:
        assert tuple(x.shape) == z.input_shape == (batch, 3, z.params["resolution"], z.params["resolution"])
        assert x.dtype == torch.float32 and z.input_dtype == "float32"
    with torch.no_grad():
        y = model(x)
    assert tuple(y.shape) == (batch, z.params["num_classes"])
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_same_seed_same_model(family):
    a, b = zoo.generate(family, 3), zoo.generate(family, 3)
    assert a == b
    ma, mb = a.build(), b.build()
    sa, sb = ma.state_dict(), mb.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert torch.equal(a.example_input(), b.example_input())
    with torch.no_grad():
        assert torch.equal(ma(a.example_input()), mb(b.example_input()))


def test_build_leaves_global_rng_alone():
    state = torch.get_rng_state()
    zoo.generate("resnet", 0).build()
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_seeds_vary_params(family):
    distinct = {json.dumps(zoo.generate(family, s).params, sort_keys=True) for s in range(10)}
    assert len(distinct) >= 8


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_params_are_json(family):
    params = zoo.generate(family, 0).params
    assert json.loads(json.dumps(params)) == params
    assert params["batch"] == (1 if family in NNLQP_FAMILIES else params["batch"])


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_new_families_mostly_batch_one(family):
    batches = [zoo.generate(family, s).params["batch"] for s in range(40)]
    assert set(batches) <= {1, 2, 4} and batches.count(1) >= 20 and max(batches) > 1


def test_nnlqp_families_still_generate_the_measured_params():
    # As benchmarks/data/cpu-znver4-1t recorded them (zoo:resnet:0, zoo:vgg:0).
    assert zoo.generate("resnet", 0).params == {
        "resolution": 80, "batch": 1, "num_classes": 1000, "block": "basic", "stem_width": 12,
        "widths": [12, 24, 48, 96], "depths": [1, 1, 1, 2], "kernels": [5, 3, 3, 5], "expansion": 1}
    assert zoo.generate("vgg", 0).params == {
        "resolution": 64, "batch": 1, "num_classes": 100, "widths": [24, 48, 96, 192, 192],
        "convs": [1, 2, 2, 1, 1], "batch_norm": True, "hidden": [512, 512]}


def test_unknown_family_lists_valid_ones():
    with pytest.raises(ValueError) as err:
        zoo.generate("lenet", 0)
    assert all(f in str(err.value) for f in zoo.FAMILIES)
    with pytest.raises(ValueError):
        list(zoo.iter_variants(["resnet", "lenet"]))


def test_iter_variants():
    names = [z.name for z in zoo.iter_variants(["vgg", "alexnet"], per_family=2, start_seed=5)]
    assert names == ["vgg-5", "vgg-6", "alexnet-5", "alexnet-6"]


def test_family_shapes():
    # One structural fingerprint per family, so a refactor cannot silently swap blocks.
    def model(family):
        return zoo.generate(family, 0).build()

    assert count(model("resnet"), zoo.Residual) == sum(zoo.generate("resnet", 0).params["depths"])
    assert count(model("squeezenet"), zoo.Fire) == 8
    assert count(model("googlenet"), zoo.Inception) >= 3
    assert count(model("mobilenetv3"), nn.Hardswish) > 0
    assert count(model("efficientnet"), nn.SiLU) > 0
    assert count(model("mobilenetv2"), nn.ReLU6) > 0
    vgg = model("vgg")
    assert count(vgg, nn.Conv2d) == sum(zoo.generate("vgg", 0).params["convs"])
    assert count(vgg, nn.MaxPool2d) == 5


def test_nb201_known_cell():
    net = zoo.nasbench201_network(CELL)
    cells = [m for m in net.modules() if isinstance(m, zoo.NB201Cell)]
    assert len(cells) == 15
    assert count(cells[0], nn.Conv2d) == 3 and count(cells[0], nn.AvgPool2d) == 1
    assert count(net, nn.Conv2d) == SKELETON_CONVS + 15 * 3
    assert net[-1].in_features == 64
    with torch.no_grad():
        assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("cell, convs", [
    # A single skip from the input: the cell is the identity.
    ("|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|", 0),
    # The conv feeds node 1, which reaches nothing: it cannot affect the output.
    ("|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|", 0),
    # Node 2 is cut off from the input, so the 1x1 conv leaving it has nothing to carry.
    ("|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|nor_conv_1x1~2|", 0),
    ("|nor_conv_1x1~0|+|none~0|nor_conv_3x3~1|+|none~0|none~1|nor_conv_1x1~2|", 3),
])
def test_nb201_drops_edges_that_cannot_matter(cell, convs):
    net = zoo.nasbench201_network(cell, N=1, num_classes=7)
    assert count(net, nn.Conv2d) == SKELETON_CONVS + 3 * convs
    with torch.no_grad():
        assert net(torch.randn(1, 3, 32, 32)).shape == (1, 7)


def test_nb201_cell_without_path_outputs_zero():
    cell = zoo.NB201Cell("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", 8)
    assert count(cell, nn.Conv2d) == 0
    assert not cell(torch.randn(1, 8, 4, 4)).any()


@pytest.mark.parametrize("bad", ["|conv_5x5~0|+|none~0|none~1|", "|skip_connect~1|", "|none|"])
def test_nb201_bad_cell(bad):
    with pytest.raises(ValueError):
        zoo.parse_nb201_cell(bad)


def test_nb201_cells_missing_file(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(FileNotFoundError, match="arch_index") as err:
        zoo.nasbench201_cells(missing)
    assert str(missing) in str(err.value)


def test_nb201_family_from_custom_table(tmp_path):
    table = tmp_path / "cells.csv"
    table.write_text(f"arch_index,cell,cifar10_test_acc\n7,{CELL},90.0\n")
    z = zoo.generate("nasbench201", 0, nasbench201_csv=table)
    assert (z.params["arch_index"], z.params["cell"]) == (7, CELL)
    assert z.input_shape == (1, 3, 32, 32)
    assert count(z.build(), nn.Conv2d) == SKELETON_CONVS + 15 * 3


def test_nb201_family_uses_reference_table():
    rows = dict(zoo.nasbench201_cells())
    assert len(rows) == 15625
    p = zoo.generate("nasbench201", 0).params
    assert rows[p["arch_index"]] == p["cell"]
    assert (p["C"], p["N"], p["resolution"]) == (16, 5, 32)


# ----------------------------------------------------------------------------------------
# The newer families, on tiny hand-set params (the builders are pure functions of them)
# ----------------------------------------------------------------------------------------

TINY = {
    "vit": {"resolution": 16, "batch": 2, "num_classes": 10, "patch": 4, "head_dim": 8, "heads": 2,
            "width": 16, "depth": 1, "mlp_ratio": 2, "pool": "cls", "qkv_bias": True},
    "bert": {"batch": 1, "seq_len": 8, "vocab_size": 50, "num_classes": 2, "head_dim": 8, "heads": 2,
             "width": 16, "depth": 1, "mlp_ratio": 2, "pre_norm": False},
    "convnext": {"resolution": 32, "batch": 1, "num_classes": 10, "patch": 2, "widths": [8, 16, 24, 32],
                 "depths": [1, 1, 1, 1], "kernels": [7, 7, 3, 3], "mlp_ratio": 2, "layer_scale": True},
    "resnext": {"resolution": 32, "batch": 1, "num_classes": 10, "stem_width": 8, "widths": [16, 32, 32, 32],
                "depths": [1, 1, 1, 1], "bottleneck_ratio": 1.0, "group_width": 4, "inner": [16, 32, 32, 32]},
    "densenet": {"resolution": 16, "batch": 1, "num_classes": 10, "growth": 4, "bn_size": 2, "stem": "cifar",
                 "blocks": [3, 2], "compression": 0.5, "stem_width": 8},
    "shufflenetv2": {"resolution": 32, "batch": 1, "num_classes": 10, "width_mult": 0.5,
                     "widths": [16, 32, 64], "head": 64, "depths": [2, 2, 1], "kernels": [3, 5, 3],
                     "stem_width": 8},
}


def tiny(family) -> zoo.ZooModel:
    params = TINY[family]
    return zoo.ZooModel(f"{family}-tiny", family, 0, params, *zoo.input_spec(params))


@pytest.fixture(scope="module")
def tiny_graphs():
    """Op- and fused-level graphs of each tiny model, exported as the profiler exports them."""
    from nar_tvm.loaders import load_onnx
    from nar_tvm.passes.extract import extract_opgraph
    from nar_tvm.profiler import onnx_bytes_of

    out = {}
    for family in NEW_FAMILIES:
        z = tiny(family)
        loaded = load_onnx(onnx_bytes_of(z.build(), z.example_input()), None, z.name)
        out[family] = {level: extract_opgraph(loaded.mod, level) for level in ("op", "fused")}
        out[family]["mod"] = loaded.mod
    return out


def _nodes(graph, op):
    return [n for n in graph.nodes if n.op == op]


def test_vit_graph(tiny_graphs):
    op, fused = tiny_graphs["vit"]["op"], tiny_graphs["vit"]["fused"]
    counts = op.op_counts()
    assert counts["relax.nn.softmax"] == 1 and counts["relax.erf"] == 1 and counts["relax.nn.layer_norm"] == 3
    # Attention scores: batch 2, 2 heads, 16 patches + class token, head dim 8.
    (scores,) = [n for n in _nodes(op, "relax.matmul") if n.outputs[0].shape == [2, 2, 17, 17]]
    assert [i.shape for i in scores.inputs] == [[2, 2, 17, 8], [2, 2, 8, 17]]
    assert scores.flops == 2 * 2 * 2 * 17 * 17 * 8
    assert any(n.attrs.get("axes") == [2, 0, 3, 1, 4] for n in _nodes(op, "relax.permute_dims"))
    (softmax,) = _nodes(fused, "kernel:softmax")
    assert softmax.attrs["axis"] == -1 and softmax.fused[0].outputs[0].shape == [2, 2, 17, 17]
    gelu = [n for n in fused.nodes if "erf" in n.ops]
    assert len(gelu) == 1 and {"divide", "erf", "multiply"} <= set(gelu[0].ops)


def test_bert_graph(tiny_graphs):
    op, fused = tiny_graphs["bert"]["op"], tiny_graphs["bert"]["fused"]
    assert op.inputs[0].shape == [1, 8] and op.inputs[0].dtype == "int64"
    (embed,) = [n for n in _nodes(op, "relax.take") if n.weights and n.weights[0].shape == [50, 16]]
    assert embed.inputs[0].dtype == "int64" and embed.outputs[0].shape == [1, 8, 16] and embed.flops == 0
    assert op.op_counts()["relax.nn.layer_norm"] == 3 and op.op_counts()["relax.tanh"] == 1
    table = [n for n in _nodes(fused, "kernel:take") if [50, 16] in [w.shape for w in n.weights]]
    assert len(table) == 1 and table[0].attrs["axis"] == 0
    # The lookup reads the 8 rows it gathers, not the 50-row table: 8 int64 ids + 2 x 8 x 16 floats.
    assert embed.bytes == table[0].bytes == 8 * 8 + 2 * 8 * 16 * 4


def test_convnext_graph(tiny_graphs):
    op, fused = tiny_graphs["convnext"]["op"], tiny_graphs["convnext"]["fused"]
    depthwise = [n for n in _nodes(op, "relax.nn.conv2d") if n.attrs["groups"] > 1]
    assert [(n.attrs["groups"], n.weights[0].shape[2:]) for n in depthwise] == [
        (8, [7, 7]), (16, [7, 7]), (24, [3, 3]), (32, [3, 3])]
    counts = op.op_counts()
    assert counts["relax.erf"] == 4 and counts["relax.nn.layer_norm"] == 1 + 4 + 3 + 1
    assert counts["relax.permute_dims"] >= 2 * 4
    dw = [n for n in fused.nodes if n.op == "kernel:conv2d" and n.attrs["groups"] == 8]
    assert len(dw) == 1 and dw[0].attrs["padding"] == [3, 3, 3, 3]


def test_resnext_graph(tiny_graphs):
    op, fused = tiny_graphs["resnext"]["op"], tiny_graphs["resnext"]["fused"]
    grouped = [n for n in _nodes(op, "relax.nn.conv2d") if n.attrs["groups"] > 1]
    # Group width 4: 16 / 4 and 32 / 4 groups, each filter reading 4 channels.
    assert [n.attrs["groups"] for n in grouped] == [4, 8, 8, 8]
    assert all(n.weights[0].shape[1:] == [4, 3, 3] for n in grouped)
    g = grouped[1]
    assert g.attrs["strides"] == [2, 2] and g.flops == 2 * numel(g.outputs[0].shape) * 4 * 9
    fused_grouped = [n for n in fused.nodes if n.attrs.get("groups", 1) > 1]
    assert [n.attrs["groups"] for n in fused_grouped] == [4, 8, 8, 8]
    assert all(n.ops[:2] == ["conv2d", "add"] and n.ops[-1] == "relu" for n in fused_grouped)


def test_densenet_graph(tiny_graphs):
    op, fused = tiny_graphs["densenet"]["op"], tiny_graphs["densenet"]["fused"]
    widths = sorted(len(n.inputs) for n in _nodes(op, "relax.concat"))
    # Block of 3 layers: its 2nd and 3rd layers concatenate 2 and 3 maps, its output 4; then 2 and 3.
    assert widths == [2, 2, 3, 3, 4]
    assert op.op_counts()["relax.nn.avg_pool2d"] == 1
    assert max(len(n.inputs) for n in fused.nodes if "concatenate" in n.ops) == 4


def test_shufflenetv2_graph(tiny_graphs):
    op, fused = tiny_graphs["shufflenetv2"]["op"], tiny_graphs["shufflenetv2"]["fused"]
    shuffles = [n for n in _nodes(op, "relax.permute_dims") if n.attrs["axes"] == [0, 2, 1, 3, 4]]
    assert len(shuffles) == 5 and shuffles[0].inputs[0].shape == [1, 2, 8, 4, 4]
    # Each stride-1 unit splits its channels in two halves, exported as two slices.
    halves = _nodes(op, "relax.strided_slice")
    assert len(halves) == 4 and sorted(n.outputs[0].shape for n in halves)[0] == [1, 8, 4, 4]
    assert any("transpose" in n.ops for n in fused.nodes)


def numel(shape):
    out = 1
    for d in shape:
        out *= d
    return out


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_new_family_compiles_and_matches_torch(family, tiny_graphs):
    import numpy as np
    import tvm
    from tvm import relax

    from nar_tvm.measure import build
    from nar_tvm.platform import PlatformSpec

    z = tiny(family)
    x = z.example_input()
    with torch.no_grad():
        want = z.build()(x).numpy()
    vm = relax.VirtualMachine(build(tiny_graphs[family]["mod"], PlatformSpec()), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x.numpy()))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_new_family_params_fix_the_model(family):
    a, b = zoo.generate(family, 5), zoo.generate(family, 5)
    assert a.params == b.params and a.input_shape == b.input_shape and a.input_dtype == b.input_dtype
    assert a.params != zoo.generate(family, 6).params
    # The builder reads nothing but the params: a stored params dict rebuilds the same network.
    rebuilt = zoo.ZooModel(a.name, family, 5, json.loads(json.dumps(a.params)), a.input_shape, a.input_dtype)
    sa, sb = a.build().state_dict(), rebuilt.build().state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_cached_legalization_gives_the_module_and_graph_of_plain_legalization(tiny_graphs):
    # Across models, as a batch prediction meets them: later models hit signatures of earlier ones.
    import tvm
    import tvm_ffi

    from nar_tvm.loaders import load_onnx
    from nar_tvm.passes.cached_legalize import LegalizeCache, with_cached_legalization
    from nar_tvm.passes.extract import ExtractOpGraph, default_target, record_kernel_attrs
    from nar_tvm.passes.fold import shape_only_folding
    from nar_tvm.passes.pipeline import level_passes
    from nar_tvm.profiler import zoo_job

    mods = [tiny_graphs[f]["mod"] for f in NEW_FAMILIES]
    mods.append(load_onnx(zoo_job("mobilenetv3", 0).onnx_bytes, None, "mobilenetv3-0").mod)
    cache = LegalizeCache()
    target = default_target()
    for mod in mods:
        with target:
            plain = shape_only_folding(level_passes("fused", target))
            graphs = []
            for passes in (plain, with_cached_legalization(plain, cache)):
                extractor = ExtractOpGraph()
                out = tvm.transform.Sequential([*record_kernel_attrs(passes, extractor), extractor])(mod)
                graphs.append((out, extractor))
        (want_mod, want), (got_mod, got) = graphs
        assert tvm_ffi.structural_equal(want_mod, got_mod, map_free_vars=True)
        assert got.graph.to_dict() == want.graph.to_dict()
        assert got.kernel_attrs == want.kernel_attrs
    assert cache.hits > 50 and cache.misses > 50


_SIMPLIFY_AND_HASH = """
import sys
if sys.argv[2] == "sympy-first":
    import sympy
from nar_tvm.loaders import load_onnx
from nar_tvm.passes.extract import extract_opgraph
sympy_before = "sympy" in sys.modules
loaded = load_onnx(sys.argv[1])
hashes = [extract_opgraph(loaded.mod, level).content_hash() for level in ("op", "fused")]
print(sympy_before, "sympy" in sys.modules, *hashes)
import sympy
print(sympy.Symbol("n") + 1)
"""


def test_onnxsim_without_sympy_simplifies_to_the_same_graphs(tmp_path):
    # onnxsim 0.8.1 rewrites the transformer families' MatMul + Add (an older onnxsim does not), so
    # the vit model shows whether skipping onnxsim's sympy changes what it simplifies to.
    import subprocess
    import sys

    from nar_tvm.profiler import onnx_bytes_of

    z = tiny("vit")
    path = tmp_path / "vit.onnx"
    path.write_bytes(onnx_bytes_of(z.build(), z.example_input()))
    lines = {}
    for mode in ("sympy-first", "plain"):
        out = subprocess.run([sys.executable, "-c", _SIMPLIFY_AND_HASH, str(path), mode],
                             capture_output=True, text=True, check=True).stdout.split("\n")
        lines[mode] = out[0].split()
        assert out[1] == "n + 1"  # sympy still works after onnxsim was imported without it
    assert lines["plain"][:2] == ["False", "False"]  # loading never imported sympy
    assert lines["sympy-first"][:2] == ["True", "True"]
    assert lines["plain"][2:] == lines["sympy-first"][2:]
