"""Graph extraction: node by node, edge by edge, on hand-built networks."""
import io
import math
import os

import onnx
import pytest
import torch
import torch.nn as nn

import tvm
from tvm import relax

from nar_tvm.api import extract
from nar_tvm.loaders import ModelLoadError, load_model
from nar_tvm.passes import OpGraph
from nar_tvm.passes.extract import ExtractOpGraph, ExtractionError, extract_from_module, prepare_for_level


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)

    def forward(self, x):
        y = torch.relu(self.conv1(x))
        return torch.relu(self.conv2(y) + y)


class DepthwiseConcat(nn.Module):
    def __init__(self):
        super().__init__()
        self.dw = nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4, bias=False)
        self.pw = nn.Conv2d(4, 6, 1, stride=2, bias=False)

    def forward(self, x):
        return torch.cat([self.dw(x), self.pw(x)], dim=1)


class Attention(nn.Module):
    def __init__(self, d=8):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(d, d, bias=False) for _ in range(3))

    def forward(self, x):
        att = torch.softmax(self.q(x) @ self.k(x).transpose(-1, -2), dim=-1)
        return att @ self.v(x)


def torch_graph(module, *shape, level="op"):
    return extract(module.eval(), level=level, example_inputs=(torch.randn(*shape),))


def onnx_proto(module, x, dynamic_batch=False, view_flatten=False) -> onnx.ModelProto:
    buf = io.BytesIO()
    kwargs = {"dynamic_axes": {"x": {0: "N"}}} if dynamic_batch else {}
    torch.onnx.export(module.eval(), (x,), buf, dynamo=False, opset_version=17, input_names=["x"], **kwargs)
    return onnx.load_from_string(buf.getvalue())


def test_residual_nodes_and_edges():
    g = torch_graph(Residual(), 1, 3, 8, 8)
    assert [n.op for n in g.nodes] == ["relax.nn.conv2d", "relax.nn.relu", "relax.nn.conv2d", "relax.add", "relax.nn.relu"]
    # relu feeds both the second conv and the residual add.
    assert g.edges == [(0, 1), (1, 2), (1, 3), (2, 3), (3, 4)]
    conv = g.nodes[0]
    assert conv.inputs[0].shape == [1, 3, 8, 8] and conv.outputs[0].shape == [1, 8, 8, 8]
    assert conv.weights[0].shape == [8, 3, 3, 3]  # weights are attributes, not nodes
    assert conv.attrs["padding"] == [1, 1, 1, 1] and conv.attrs["groups"] == 1
    assert conv.flops == 2 * (8 * 8 * 8) * (3 * 3 * 3)
    assert g.nodes[3].flops == 8 * 8 * 8 and g.nodes[3].weights == []
    assert g.inputs[0].shape == [1, 3, 8, 8]
    assert g.params == 8 * 3 * 9 + 8 * 8 * 9


def test_depthwise_and_concat():
    g = torch_graph(DepthwiseConcat(), 1, 4, 8, 8)
    ops = [n.op for n in g.nodes]
    assert ops == ["relax.nn.conv2d", "relax.nn.conv2d", "relax.concat"]
    dw, pw, cat = g.nodes
    assert dw.attrs["groups"] == 4 and dw.attrs["strides"] == [2, 2]
    assert dw.weights[0].shape == [4, 1, 3, 3]
    assert dw.flops == 2 * (4 * 4 * 4) * 9
    assert g.edges == [(0, 2), (1, 2)]
    assert cat.outputs[0].shape == [1, 10, 4, 4] and cat.attrs["axis"] == 1
    assert [i.shape for i in cat.inputs] == [[1, 4, 4, 4], [1, 6, 4, 4]]


def test_attention_matmuls():
    g = torch_graph(Attention(), 1, 5, 8)
    counts = g.op_counts()
    assert counts["relax.matmul"] == 5 and counts["relax.nn.softmax"] == 1
    # The transposes of constant weights fold into the weights of their matmul.
    weighted = [n for n in g.nodes if n.op == "relax.matmul" and n.weights]
    assert len(weighted) == 3 and all(n.weights[0].shape == [8, 8] for n in weighted)
    qk = next(n for n in g.nodes if n.op == "relax.matmul" and len(n.inputs) == 2)
    assert qk.outputs[0].shape == [1, 5, 5] and qk.flops == 2 * 25 * 8


def test_onnx_and_torch_export_agree():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    x = torch.randn(1, 3, 16, 16)
    from_torch = extract(net, example_inputs=(x,))
    from_onnx = extract(onnx_proto(net, x))
    core = lambda g: {k: v for k, v in g.op_counts().items() if k not in ("relax.reshape", "relax.flatten")}
    assert core(from_torch) == core(from_onnx)
    assert from_torch.flops == from_onnx.flops


def test_json_round_trip_and_stable_hash():
    g = torch_graph(Residual(), 1, 3, 8, 8)
    again = torch_graph(Residual(), 1, 3, 8, 8)  # other weights, same network
    assert g.content_hash() == again.content_hash()
    back = OpGraph.from_json(g.to_json())
    assert back.to_dict() == g.to_dict() and back.content_hash() == g.content_hash()
    other = torch_graph(Residual(), 1, 3, 16, 16)
    assert other.content_hash() != g.content_hash()


def test_fused_level_carries_contained_ops():
    g = torch_graph(Residual(), 1, 3, 8, 8, level="fused")
    assert g.level == "fused"
    assert [n.ops for n in g.nodes] == [["conv2d", "relu"], ["conv2d", "add", "relu"]]
    assert g.edges == [(0, 1)]
    assert all(n.op == "kernel:conv2d" and n.kernel.startswith("fused_conv2d") for n in g.nodes)
    # TIR FLOP counting includes the fused element-wise work on top of the convolution.
    assert g.nodes[0].flops >= 2 * 512 * 27


def test_pass_inside_sequential_pipeline_after_fusetir():
    loaded = load_model(Residual().eval(), example_inputs=(torch.randn(1, 3, 8, 8),))
    mod = prepare_for_level(loaded.mod, "fused")
    probe = ExtractOpGraph()
    out = tvm.transform.Sequential([relax.transform.FuseTIR(), probe])(mod)
    assert probe.graph is not None and probe.graph.level == "fused"
    tvm.ir.assert_structural_equal(out, relax.transform.FuseTIR()(mod))
    assert [n.ops for n in probe.graph.nodes] == [["conv2d", "relu"], ["conv2d", "add", "relu"]]


def test_stripped_weights_give_same_graph():
    net = Residual()
    proto = onnx_proto(net, torch.randn(1, 3, 8, 8))
    full = extract(proto)
    for init in proto.graph.initializer:
        init.ClearField("raw_data")
        init.ClearField("float_data")
    stripped = extract(proto)
    assert stripped.content_hash() == full.content_hash()


class BertStyleSelfAttention(nn.Module):
    """Self-attention written as Hugging Face's BERT writes it: the pattern onnxsim's optimizer
    turns into one ONNX Runtime `com.microsoft` Attention node."""

    def __init__(self, d=16, heads=2):
        super().__init__()
        self.heads, self.head_dim = heads, d // heads
        self.q, self.k, self.v, self.out = (nn.Linear(d, d) for _ in range(4))

    def split(self, t):
        b, s, _ = t.shape
        return t.view(b, s, self.heads, self.head_dim).permute(0, 2, 1, 3)

    def forward(self, x):
        scores = self.split(self.q(x)) @ self.split(self.k(x)).transpose(-1, -2) / math.sqrt(self.head_dim)
        ctx = torch.softmax(scores, dim=-1) @ self.split(self.v(x))
        b, h, s, d = ctx.shape
        return self.out(ctx.permute(0, 2, 1, 3).reshape(b, s, h * d))


def test_attention_the_simplifier_would_turn_into_an_onnxruntime_op_still_loads():
    from nar_tvm.loaders import import_onnxsim, simplify_onnx

    proto = onnx_proto(BertStyleSelfAttention(), torch.randn(1, 4, 16))
    optimized, ok = import_onnxsim().simplify(proto, overwrite_input_shapes={"x": [1, 4, 16]}, check_n=0)
    assert ok and "com.microsoft" in {n.domain for n in optimized.graph.node}  # what TVM cannot import

    assert {n.domain for n in simplify_onnx(proto, {"x": [1, 4, 16]}).graph.node} == {""}
    g = extract(proto)
    ops = [n.op for n in g.nodes]
    assert ops.count("relax.matmul") == 6 and ops.count("relax.nn.softmax") == 1
    assert g.nodes[-1].outputs[0].shape == [1, 4, 16]
    fused = extract(proto, level="fused")
    assert ["softmax"] in [n.ops for n in fused.nodes] and ["matmul", "divide"] in [n.ops for n in fused.nodes]


def test_simplifier_keeps_the_graph_when_it_adds_no_foreign_operator():
    from nar_tvm.loaders import import_onnxsim, simplify_onnx

    proto = onnx_proto(ViewFlatten(), torch.randn(1, 3, 8, 8))
    plain, ok = import_onnxsim().simplify(proto, overwrite_input_shapes={"x": [1, 3, 8, 8]}, check_n=0)
    assert ok
    assert simplify_onnx(proto, {"x": [1, 3, 8, 8]}) == plain
    assert not {"Shape", "Gather"} & {n.op_type for n in plain.graph.node}


def test_native_chatter_on_stderr_is_dropped_and_python_output_kept(capfd):
    import sys

    from nar_tvm.loaders import _native_stderr_dropped

    print("before", file=sys.stderr, end="|")
    with _native_stderr_dropped():
        os.write(2, b"WARNING: failed to run op")
    os.write(2, b"after")
    assert capfd.readouterr().err == "before|after"


class ViewFlatten(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 2)

    def forward(self, x):
        y = self.conv(x)
        return self.fc(y.view(y.size(0), -1))  # exported as Shape/Gather/Concat arithmetic


def test_legacy_export_shape_arithmetic_and_dynamic_batch(tmp_path):
    proto = onnx_proto(ViewFlatten(), torch.randn(1, 3, 8, 8), dynamic_batch=True)
    assert {"Shape", "Gather", "Concat"} <= {n.op_type for n in proto.graph.node}
    path = tmp_path / "legacy.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(ModelLoadError, match=r"input 'x' has dynamic shape.*--input-shape x=N,3,8,8"):
        extract(path)
    g = extract(path, input_shapes={"x": [2, 3, 8, 8]})
    assert g.batch == 2 and g.nodes[-1].outputs[0].shape == [2, 2]


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(ModelLoadError, match="missing.onnx: no such file"):
        extract(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01definitely not protobuf")
    with pytest.raises(ModelLoadError, match="junk.onnx: not an ONNX model"):
        extract(junk)
    proto = onnx_proto(Residual(), torch.randn(1, 3, 8, 8))
    with pytest.raises(ModelLoadError, match=r"names \['y'\], but the inputs are \['x'\]"):
        extract(proto, input_shapes={"y": [1, 3, 8, 8]})
    with pytest.raises(ModelLoadError, match="rank 4"):
        extract(proto, input_shapes={"x": [1, 3, 8]})
    with pytest.raises(ModelLoadError, match="cannot load a model from a int"):
        load_model(42)


def test_dynamic_relax_module_is_rejected():
    from tvm.script import relax as R

    @tvm.script.ir_module
    class Dyn:
        @R.function
        def main(x: R.Tensor(("n", 4), "float32")):
            with R.dataflow():
                y = R.nn.relu(x)
                R.output(y)
            return y

    with pytest.raises(ExtractionError, match="dynamic dimension"):
        extract_from_module(Dyn)


class ConvReLU6(nn.Module):
    """ONNX Clip, which the importer emits as a kernel (call_tir) beside the high-level conv2d;
    the bias becomes a constant reshape that FoldConstant evaluates after legalization."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        return nn.functional.relu6(self.conv(x))


def _pipeline_graph(mod, shape_only: bool):
    from nar_tvm.measure import graph_level_passes
    from nar_tvm.passes.fold import shape_only_folding

    from nar_tvm.passes.extract import record_kernel_attrs

    target = tvm.target.Target({"kind": "llvm"})
    passes = graph_level_passes("default", target)
    probe = ExtractOpGraph()
    # As measure.compile_pipeline probes the compile it measures.
    passes = record_kernel_attrs(shape_only_folding(passes) if shape_only else passes, probe)
    with target:
        tvm.transform.Sequential([relax.transform.DecomposeOpsForInference(), *passes, probe])(mod)
    return probe.graph


def test_shape_only_folding_gives_the_graph_of_real_folding():
    mod = load_model(onnx_proto(ConvReLU6(), torch.randn(1, 3, 8, 8))).mod
    real, shape_only = _pipeline_graph(mod, False), _pipeline_graph(mod, True)
    assert shape_only.to_dict() == real.to_dict()
    (node,) = shape_only.nodes
    assert node.ops[:2] == ["conv2d", "add"] and [1, 8, 1, 1] in [w.shape for w in node.weights]


def test_frontend_kernels_do_not_make_a_module_look_lowered():
    from nar_tvm.integration import module_graph
    from nar_tvm.passes.extract import past_legalization

    mod = load_model(onnx_proto(ConvReLU6(), torch.randn(1, 3, 8, 8))).mod
    assert "call_tir" in mod["main"].script() and not past_legalization(mod)
    assert past_legalization(prepare_for_level(mod, "fused"))
    # So the selector runs the pipeline's passes on it instead of reading it as it is.
    graph = module_graph(mod, "default", "fused", {"kind": "llvm"})
    assert graph.to_dict()["nodes"] == _pipeline_graph(mod, False).to_dict()["nodes"]
    assert [n.op for n in graph.nodes] == ["kernel:conv2d"]


# ------------------------------------------------- one definition of the fused level
def test_fused_level_runs_the_measured_compiles_graph_level_passes():
    from nar_tvm import measure
    from nar_tvm.passes import pipeline
    from nar_tvm.passes.extract import level_passes

    target = tvm.target.Target({"kind": "llvm"})
    names = lambda passes: [p.info.name for p in passes]  # noqa: E731
    assert measure.graph_level_passes is pipeline.graph_level_passes
    # build() decomposes for inference, then the pipeline's graph-level passes run.
    decompose = names([relax.transform.DecomposeOpsForInference()])
    assert names(level_passes("fused", target)) == [*decompose, *names(measure.graph_level_passes("default", target))]
    assert names(level_passes("op", target)) == decompose
    with pytest.raises(ValueError, match="unknown level"):
        level_passes("kernel", target)


def test_extracted_fused_graph_is_the_graph_the_measured_compile_probes():
    from nar_tvm.measure import build
    from nar_tvm.passes.extract import extract_opgraph
    from nar_tvm.platform import PlatformSpec

    mod = load_model(onnx_proto(ConvReLU6(), torch.randn(1, 3, 8, 8))).mod
    target = {"kind": "llvm"}
    probe = ExtractOpGraph()
    build(mod, PlatformSpec(target=target), probe)
    extracted = extract_opgraph(mod, "fused", tvm.target.Target(target))
    assert extracted.to_dict()["nodes"] == probe.graph.to_dict()["nodes"]


def test_passes_never_import_torch_or_the_integration_layer():
    """Every module of nar_tvm.passes, imported in a fresh interpreter, needs tvm only:
    predictions reach the passes as callables. (tvm itself may load torch when it is
    installed; the passes must not load anything of torch beyond that.)"""
    import pkgutil
    import subprocess
    import sys

    import nar_tvm.passes as passes

    modules = sorted(f"nar_tvm.passes.{m.name}" for m in pkgutil.iter_modules(passes.__path__))
    assert {"nar_tvm.passes.annotate_latency", "nar_tvm.passes.select_device"} <= set(modules)
    code = ("import importlib, sys\n"
            "import tvm\n"
            "from tvm import relax\n"
            "before = set(sys.modules)\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            "bad = sorted(m for m in set(sys.modules) - before if m == 'torch' or m.startswith('torch.')\n"
            "             or (m.startswith('nar_tvm') and m != 'nar_tvm' and not m.startswith('nar_tvm.passes')))\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)

class BatchedMatmul(nn.Module):
    def forward(self, x):
        return x @ x.transpose(-1, -2)


class WeightFirstMatmul(nn.Module):
    """A constant left operand: the node lists it after the input, as a weight."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(5, 7))

    def forward(self, x):
        return self.w @ x


def test_flops_follow_the_plain_formulas():
    # Batched matmul [2, 3, 5, 7] @ [2, 3, 7, 5]: 2 * batch * M * N * K.
    (mm,) = [n for n in onnx_graph(BatchedMatmul(), torch.randn(2, 3, 5, 7)).nodes if n.op == "relax.matmul"]
    assert mm.outputs[0].shape == [2, 3, 5, 5] and mm.flops == 2 * (2 * 3) * 5 * 5 * 7
    (wx,) = [n for n in onnx_graph(WeightFirstMatmul(), torch.randn(2, 7, 4)).nodes if n.op == "relax.matmul"]
    assert wx.weights[0].shape == [5, 7] and wx.flops == 2 * 2 * 5 * 4 * 7
    # Grouped conv, 8 -> 12 channels in 4 groups, 3x3 stride 2 on 10x10: each output reads 2 x 3 x 3.
    grouped = nn.Conv2d(8, 12, 3, stride=2, padding=1, groups=4, bias=False)
    (conv,) = onnx_graph(grouped, torch.randn(1, 8, 10, 10)).nodes
    assert conv.outputs[0].shape == [1, 12, 5, 5] and conv.flops == 2 * (12 * 5 * 5) * (2 * 3 * 3)
    (norm,) = onnx_graph(nn.LayerNorm(16), torch.randn(2, 4, 16)).nodes
    assert norm.op == "relax.nn.layer_norm" and norm.flops == 8 * 2 * 4 * 16
    # The fused level counts the same matmul from its TIR loop nest.
    fused = onnx_graph(BatchedMatmul(), torch.randn(2, 3, 5, 7), level="fused")
    (fused_mm,) = [n for n in fused.nodes if n.op == "kernel:matmul"]
    assert fused_mm.flops == 2 * (2 * 3) * 5 * 5 * 7


def onnx_graph(module, x, level="op"):
    return extract(onnx_proto(module, x), level=level)


class ConvSiLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 5, stride=2, padding=2, groups=2)

    def forward(self, x):
        return nn.functional.silu(self.conv(x))


def test_fused_nodes_carry_their_operators_attributes():
    g = onnx_graph(ConvSiLU(), torch.randn(1, 4, 16, 16), level="fused")
    (node,) = g.nodes
    # TVM's ONNX importer emits Sigmoid straight as a kernel (tir_sigmoid).
    assert node.ops == ["conv2d", "add", "tir_sigmoid", "multiply"]
    # The anchor's attributes, which legalization dropped from the conv2d PrimFunc.
    assert node.attrs["strides"] == [2, 2] and node.attrs["groups"] == 2 and node.attrs["padding"] == [2, 2, 2, 2]
    conv, add, sigmoid, multiply = node.fused
    assert (conv.op, sigmoid.op, multiply.op) == ("conv2d", "tir_sigmoid", "multiply")
    assert [t.shape for t in conv.inputs] == [[1, 4, 16, 16], [8, 2, 5, 5]]
    assert conv.outputs[0].shape == [1, 8, 8, 8] and conv.attrs["kernel_layout"] == "OIHW"
    assert [t.shape for t in add.inputs] == [[1, 8, 8, 8], [1, 8, 1, 1]] and sigmoid.attrs == {}
    back = OpGraph.from_json(g.to_json())
    assert back.to_dict() == g.to_dict() and back.nodes[0].fused[0].attrs["groups"] == 2


def test_watching_legalization_leaves_the_compiled_module_alone():
    from nar_tvm.measure import graph_level_passes
    from nar_tvm.passes.extract import record_kernel_attrs

    mod = load_model(onnx_proto(ConvSiLU(), torch.randn(1, 4, 16, 16))).mod
    target = tvm.target.Target({"kind": "llvm"})
    passes = graph_level_passes("default", target)
    probe = ExtractOpGraph()
    with target:
        plain = tvm.transform.Sequential(passes)(mod)
        watched = tvm.transform.Sequential([*record_kernel_attrs(passes, probe), probe])(mod)
    tvm.ir.assert_structural_equal(watched, plain)
    assert probe.graph.nodes[0].attrs["groups"] == 2


# A graph as OpGraph /1 wrote it, and the hash the code of that format gave it.
V1_GRAPH = {
    "format": "nar-tvm.opgraph/1", "name": "v1", "level": "op",
    "inputs": [{"shape": [1, 3, 8, 8], "dtype": "float32"}],
    "nodes": [
        {"op": "relax.nn.conv2d", "attrs": {"strides": [2, 2], "groups": 1},
         "inputs": [{"shape": [1, 3, 8, 8], "dtype": "float32"}], "weights": [{"shape": [4, 3, 3, 3], "dtype": "float32"}],
         "outputs": [{"shape": [1, 4, 4, 4], "dtype": "float32"}], "flops": 1728, "ops": ["relax.nn.conv2d"], "kernel": None},
        {"op": "relax.nn.relu", "attrs": {}, "inputs": [{"shape": [1, 4, 4, 4], "dtype": "float32"}], "weights": [],
         "outputs": [{"shape": [1, 4, 4, 4], "dtype": "float32"}], "flops": 64, "ops": ["relax.nn.relu"], "kernel": None},
    ],
    "edges": [[0, 1]], "meta": {},
}
V1_HASH = "11508af9415081e5e382"


def test_opgraph_v1_still_loads_and_keeps_its_hash():
    from nar_tvm.passes.opgraph import FORMAT, OpGraphError

    g = OpGraph.from_dict(V1_GRAPH)
    assert g.content_hash() == V1_HASH and all(n.fused == [] for n in g.nodes)
    out = g.to_dict()
    assert out["format"] == FORMAT == "nar-tvm.opgraph/2"
    # Nothing new to say about op-level nodes: they serialise as under /1.
    assert out["nodes"] == V1_GRAPH["nodes"]
    with pytest.raises(OpGraphError, match="format is 'nar-tvm.opgraph/9'"):
        OpGraph.from_dict({**V1_GRAPH, "format": "nar-tvm.opgraph/9"})


def test_gathers_count_the_rows_they_read_not_their_source():
    from nar_tvm.passes.opgraph import FusedOp, OpNode, TensorSpec

    table, ids, rows = TensorSpec([1000, 64]), TensorSpec([1, 5], "int64"), TensorSpec([1, 5, 64])
    plain = OpNode("relax.add", inputs=[rows, rows], outputs=[rows])
    assert plain.bytes == 3 * 5 * 64 * 4
    lookup = OpNode("relax.take", inputs=[ids], weights=[table], outputs=[rows])
    assert lookup.bytes == 5 * 8 + 2 * 5 * 64 * 4
    # A fused lookup with its scale: the table is still read row by row, the multiply's
    # operand in full.
    scale = TensorSpec([64])
    fused = OpNode("kernel:take", ops=["take", "multiply"], inputs=[ids], weights=[table, scale], outputs=[rows],
                   fused=[FusedOp("take", inputs=[table, ids], outputs=[rows]),
                          FusedOp("multiply", inputs=[rows, scale], outputs=[rows])])
    assert fused.bytes == 5 * 8 + 64 * 4 + 2 * 5 * 64 * 4
    # A gather from a tensor the kernel computes itself never counted that tensor.
    source, computed = TensorSpec([1, 999, 64]), TensorSpec([1, 1000, 64])
    gather_of_computed = OpNode("kernel:exp_take", ops=["exp", "take"], inputs=[source, ids], outputs=[rows],
                                fused=[FusedOp("exp", inputs=[source], outputs=[computed]),
                                       FusedOp("take", inputs=[computed, ids], outputs=[rows])])
    assert gather_of_computed.bytes == 999 * 64 * 4 + 5 * 8 + 5 * 64 * 4
