"""Learning side: tokenizer, NAR-Former V2 model, training, checkpoints, metrics.

Everything runs on tiny synthetic OpGraphs built in Python, so no TVM is needed.
"""
import json
import math
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from nar_tvm.cost_model import (
    CheckpointError, NARFormerV2, NARFormerV2Config, Tokenizer, TokenizerConfig, TrainConfig,
    Vocabulary, collate, load_checkpoint, regression_report, save_checkpoint, train,
)
from nar_tvm.cost_model.checkpoint import FORMAT, VERSION
from nar_tvm.cost_model.tokenizer import padded_size
from nar_tvm.cost_model.synthetic import synthetic_dataset as dataset
from nar_tvm.cost_model.train import rse_loss, sr_loss
from nar_tvm.passes.opgraph import FusedOp, OpGraph, OpNode, TensorSpec

TINY_MODEL = NARFormerV2Config(d_model=32, n_layers=1, n_heads=2, ffn_groups=4, head_hidden=32, dropout=0.05,
                               readout="sum")
ABLATIONS = {
    "full": {},
    "no_degree_gate": {"use_degree_gate": False},
    "plain_ffn": {"grouped_ffn": False},
    "no_static": {"use_static": False},
    "plain_transformer": {"use_graph_attention": False},
    "mean_readout": {"readout": "mean"},
    "kernel_readout": {"readout": "kernels"},
}


def conv_relu_graph() -> OpGraph:
    conv = OpNode(
        op="relax.nn.conv2d",
        attrs={"strides": [2, 2], "padding": [1, 1, 1, 1], "dilation": [1, 1], "groups": 1,
               "data_layout": "NCHW"},
        inputs=[TensorSpec([1, 3, 32, 32])],
        weights=[TensorSpec([8, 3, 3, 3]), TensorSpec([8])],
        outputs=[TensorSpec([1, 8, 16, 16])],
        flops=2 * 8 * 16 * 16 * 3 * 9,
        ops=["relax.nn.conv2d"],
    )
    relu = OpNode(op="relax.nn.relu", inputs=[TensorSpec([1, 8, 16, 16])],
                  outputs=[TensorSpec([1, 8, 16, 16])], flops=2048, ops=["relax.nn.relu"])
    pool = OpNode(op="relax.nn.max_pool2d", attrs={"pool_size": [2, 2], "strides": [2, 2]},
                  inputs=[TensorSpec([1, 8, 16, 16])], outputs=[TensorSpec([1, 8, 8, 8])],
                  flops=2048, ops=["relax.nn.max_pool2d"])
    dense = OpNode(op="relax.matmul", inputs=[TensorSpec([1, 512])], weights=[TensorSpec([512, 10])],
                   outputs=[TensorSpec([1, 10])], flops=2 * 512 * 10, ops=["relax.matmul"])
    return OpGraph(nodes=[conv, relu, pool, dense], edges=[(0, 1), (1, 2), (2, 3), (0, 2)],
                   inputs=[TensorSpec([1, 3, 32, 32])])


def pe(value: float, dim: int = 8, base: float = 100.0) -> np.ndarray:
    """The tokenizer's scalar encoding, written out by hand."""
    t = math.log2(1 + value)
    out = []
    for j in range(dim // 2):
        w = base ** (-j / (dim // 2))
        out += [math.sin(t * w), math.cos(t * w)]
    return np.array(out, dtype=np.float32)




@pytest.fixture(scope="module")
def data():
    tr_g, tr_y = dataset(200, seed=1)
    va_g, va_y = dataset(32, seed=2)
    return tr_g, tr_y, va_g, va_y


@pytest.fixture(scope="module")
def trained(data):
    cfg = TrainConfig(epochs=40, batch_size=16, lr=2e-3, seed=0, patience=None, loss="rse", size_bucket_batches=1)
    return train(*data, model_cfg=TINY_MODEL, train_cfg=cfg, progress=False)


# ---------------------------------------------------------------- tokenizer

def test_vocabulary_reserves_unknown_slot():
    vocab = Vocabulary.fit([conv_relu_graph()])
    assert vocab.to_list() == ["<unk>", "relax.matmul", "relax.nn.conv2d", "relax.nn.max_pool2d",
                               "relax.nn.relu"]
    assert vocab.lookup("relax.nn.conv2d") == 2
    assert vocab.lookup("relax.nn.softmax") == 0
    assert Vocabulary(vocab.to_list()).to_list() == vocab.to_list()
    with pytest.raises(ValueError):
        Vocabulary(["relax.add"])


def test_token_values_match_hand_computed_encoding():
    g = conv_relu_graph()
    tok = Tokenizer().fit([g])
    span = tok.layout()
    x = tok.encode(g).x
    assert x.shape == (4, tok.token_dim)
    assert tok.token_dim == 2 * 5 + 8 * (2 + 2 + 4 + 2 + 1 + 1 + 4 + 3)

    def cols(name, node, slot=0):
        start = span[name][0] + 8 * slot
        return x[node, start:start + 8]

    # op type one-hot and contained-op multi-hot, both over the vocabulary
    a, b = span["op_type"]
    np.testing.assert_array_equal(x[0, a:b], [0, 0, 1, 0, 0])
    a, b = span["contained_ops"]
    np.testing.assert_array_equal(x[3, a:b], [0, 1, 0, 0, 0])
    # stride 2 -> PE(log2(3)); its first entry is sin(log2 3)
    np.testing.assert_allclose(cols("attr.strides", 0), pe(2), atol=1e-6)
    assert cols("attr.strides", 0)[0] == pytest.approx(math.sin(math.log2(3)), abs=1e-6)
    np.testing.assert_allclose(cols("attr.padding", 0, slot=3), pe(1), atol=1e-6)
    # kernel window from the OIHW weight, and from pool_size for the pool
    np.testing.assert_allclose(cols("kernel", 0, slot=1), pe(3), atol=1e-6)
    np.testing.assert_allclose(cols("kernel", 2, slot=0), pe(2), atol=1e-6)
    np.testing.assert_allclose(cols("num_weights", 0), pe(2), atol=1e-6)
    np.testing.assert_allclose(cols("output_shape", 0, slot=1), pe(8), atol=1e-6)
    np.testing.assert_allclose(cols("flops", 0), pe(g.nodes[0].flops), atol=1e-5)
    np.testing.assert_allclose(cols("bytes", 3), pe(g.nodes[3].bytes), atol=1e-5)
    # absent values are all-zero blocks: relu has no strides; the dense output is rank 2
    assert not cols("attr.strides", 1).any()
    assert not cols("kernel", 3).any()
    assert not cols("output_shape", 3, slot=2).any()
    np.testing.assert_allclose(cols("output_shape", 3, slot=1), pe(10), atol=1e-6)


def test_input_shape_slots_are_optional_and_old_states_keep_their_layout():
    g = conv_relu_graph()
    plain = Tokenizer().fit([g])
    tok = Tokenizer(TokenizerConfig(input_shape_dims=4)).fit([g])
    assert tok.token_dim == plain.token_dim + 4 * 8
    # --input-shapes (CLI and benchmarks) asks for this layout; without it, the default one.
    assert TokenizerConfig.with_options(input_shapes=True) == tok.config
    assert TokenizerConfig.with_options() == TokenizerConfig()
    x, span = tok.encode(g).x, tok.layout()
    start = span["input_shape"][0]
    # conv input [1, 3, 32, 32]: slot 3 holds 32; the dense input [1, 512] leaves slots 2-3 empty
    np.testing.assert_allclose(x[0, start + 24:start + 32], pe(32), atol=1e-6)
    np.testing.assert_allclose(x[3, start + 8:start + 16], pe(512), atol=1e-6)
    assert not x[3, start + 16:start + 32].any()
    # Every other feature is where it was, shifted by the new block.
    a, b = span["output_shape"]
    np.testing.assert_array_equal(x[:, a:b], plain.encode(g).x[:, slice(*plain.layout()["output_shape"])])
    # A state saved before the option existed has no such key: it decodes to the old layout.
    state = plain.state_dict()
    del state["config"]["input_shape_dims"]
    assert Tokenizer.from_state(state).token_dim == plain.token_dim


def fused_conv_pool_graph() -> OpGraph:
    conv_attrs = {"strides": [2, 2], "padding": [1, 1, 1, 1], "dilation": [1, 1], "groups": 4,
                  "kernel_layout": "OIHW"}
    conv = OpNode(op="kernel:conv2d", attrs=conv_attrs, inputs=[TensorSpec([1, 8, 8, 8])],
                  weights=[TensorSpec([8, 2, 3, 3]), TensorSpec([1, 8, 1, 1])], outputs=[TensorSpec([1, 8, 4, 4])],
                  flops=2 * 8 * 16 * 18, ops=["conv2d", "add", "tir_sigmoid", "multiply"], kernel="fused_conv2d_add",
                  fused=[FusedOp("conv2d", conv_attrs, [TensorSpec([1, 8, 8, 8]), TensorSpec([8, 2, 3, 3])],
                                 [TensorSpec([1, 8, 4, 4])]),
                         FusedOp("add"), FusedOp("tir_sigmoid"), FusedOp("multiply")])
    pool_attrs = {"pool_size": [3, 3], "strides": [2, 2], "padding": [1, 1, 1, 1]}
    pool = OpNode(op="kernel:max_pool2d", attrs=pool_attrs, inputs=[TensorSpec([1, 8, 4, 4])],
                  outputs=[TensorSpec([1, 8, 2, 2])], flops=288, ops=["max_pool2d"], kernel="max_pool2d",
                  fused=[FusedOp("max_pool2d", pool_attrs)])
    return OpGraph(nodes=[conv, pool], edges=[(0, 1)], level="fused", inputs=[TensorSpec([1, 8, 8, 8])])


def test_fused_nodes_attributes_fill_the_attribute_slots():
    g = fused_conv_pool_graph()
    tok = Tokenizer().fit([g])
    x, span = tok.encode(g).x, tok.layout()

    def cols(name, node, slot=0):
        start = span[name][0] + 8 * slot
        return x[node, start:start + 8]

    np.testing.assert_allclose(cols("attr.strides", 0), pe(2), atol=1e-6)
    np.testing.assert_allclose(cols("attr.groups", 0), pe(4), atol=1e-6)
    np.testing.assert_allclose(cols("kernel", 0, slot=1), pe(3), atol=1e-6)  # from the OIHW weight
    np.testing.assert_allclose(cols("kernel", 1, slot=0), pe(3), atol=1e-6)  # from the pool's pool_size
    np.testing.assert_allclose(cols("attr.padding", 1, slot=2), pe(1), atol=1e-6)
    # The epilogue is in the contained-op multi-hot: conv + SiLU is not conv + ReLU.
    a, b = span["contained_ops"]
    hot = {tok.vocab.names[i] for i in np.flatnonzero(x[0, a:b])}
    assert hot == {"conv2d", "add", "tir_sigmoid", "multiply"}


def test_states_from_before_fused_attributes_tokenize_as_they_were_trained():
    g = fused_conv_pool_graph()
    new = Tokenizer().fit([g])
    state = new.state_dict()
    assert state["config"]["fused_attrs"] is True
    del state["config"]["fused_attrs"]
    old = Tokenizer.from_state(state)
    assert old.config.fused_attrs is False and old.token_dim == new.token_dim
    # Such a state saw fused nodes without attributes (OpGraph /1): it encodes these as it did.
    bare = OpGraph.from_dict(g.to_dict())
    for node in bare.nodes:
        node.attrs, node.fused = {}, []
    np.testing.assert_array_equal(old.encode(g).x, old.encode(bare).x)
    assert not np.array_equal(new.encode(g).x, new.encode(bare).x)
    # Op-level nodes keep their attributes either way.
    op = conv_relu_graph()
    np.testing.assert_array_equal(Tokenizer.from_state({**state, "vocab": new.vocab.to_list()}).encode(op).x,
                                  Tokenizer(replace(new.config), new.vocab, new.static_mean, new.static_std).encode(op).x)


def test_fused_node_gets_multi_hot_of_its_contents():
    fused = OpNode(op="fused_conv2d_add_relu", ops=["conv2d", "add", "relu"],
                   outputs=[TensorSpec([1, 8, 8, 8])], flops=100)
    g = OpGraph(nodes=[fused], edges=[], level="fused")
    tok = Tokenizer().fit([g])
    a, b = tok.layout()["contained_ops"]
    hot = [tok.vocab.names[i] for i in np.flatnonzero(tok.encode(g).x[0, a:b])]
    assert sorted(hot) == ["add", "conv2d", "relu"]


def test_static_features_are_log1p_z_normalised():
    g1 = conv_relu_graph()
    g2 = OpGraph(nodes=g1.nodes[:2], edges=[(0, 1)], inputs=g1.inputs)
    tok = Tokenizer().fit([g1, g2])

    def raw(g):
        return np.log1p([g.batch, g.flops, g.params, g.memory_access, g.num_nodes, g.depth()])

    r1, r2 = raw(g1), raw(g2)
    mean, std = (r1 + r2) / 2, np.abs(r1 - r2) / 2
    std[std == 0] = 1.0  # batch is 1 in both: a constant feature is left unscaled
    np.testing.assert_allclose(tok.encode(g1).static, (r1 - mean) / std, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tok.encode(g2).static, [0, -1, -1, -1, -1, -1], atol=1e-5)


def test_unknown_ops_use_the_unknown_slot_and_are_counted():
    g = conv_relu_graph()
    tok = Tokenizer().fit([g])
    odd = OpNode(op="relax.nn.softmax", outputs=[TensorSpec([1, 10])], ops=["relax.nn.softmax"])
    new = OpGraph(nodes=[*g.nodes, odd, odd], edges=[*g.edges, (3, 4), (4, 5)])
    t = tok.encode(new)
    a, b = tok.layout()["op_type"]
    np.testing.assert_array_equal(t.x[4, a:b], [1, 0, 0, 0, 0])
    assert t.unknown_ops == 2
    assert t.unknown_op_names == ("relax.nn.softmax",)
    assert tok.encode(g).unknown_ops == 0


def test_adjacency_is_symmetric_neighbours_plus_self_loops():
    g = conv_relu_graph()
    t = Tokenizer().fit([g]).encode(g)
    expected = np.eye(4, dtype=bool)
    for s, d in g.edges:
        expected[s, d] = expected[d, s] = True
    np.testing.assert_array_equal(t.adj, expected)
    np.testing.assert_array_equal(t.degree, [[0, 2], [1, 1], [2, 1], [1, 0]])  # (in, out)


def test_collate_pads_and_masks():
    g = conv_relu_graph()
    small = OpGraph(nodes=g.nodes[:2], edges=[(0, 1)])
    tok = Tokenizer().fit([g])
    ts = [tok.encode(small), tok.encode(g)]
    batch = collate(ts)
    assert batch["x"].shape == (2, 4, tok.token_dim)
    assert batch["mask"].tolist() == [[True, True, False, False], [True] * 4]
    np.testing.assert_array_equal(batch["adj"][1].numpy(), ts[1].adj)
    np.testing.assert_array_equal(batch["adj"][0, :2, :2].numpy(), ts[0].adj)
    assert not batch["adj"][0, 2:].any() and not batch["adj"][0, :, 2:].any()
    assert not batch["x"][0, 2:].any()
    assert batch["static"].shape == (2, tok.static_dim)


def test_collate_into_a_reused_buffer_clears_what_the_last_batch_left(data):
    graphs = data[0]
    tok = Tokenizer().fit(graphs)
    tokens = tok.encode_many(graphs)
    big = sorted(tokens, key=lambda t: -t.num_nodes)[:3]
    small = sorted(tokens, key=lambda t: t.num_nodes)[:2]
    buffer = np.empty(padded_size(big), dtype=np.float32)
    collate(big, buffer)  # leaves non-zero tokens where `small` has padding
    reused = collate(small, buffer)
    fresh = collate(small)
    for key in fresh:
        torch.testing.assert_close(reused[key], fresh[key], rtol=0, atol=0)
    assert np.shares_memory(reused["x"].numpy(), buffer)
    with pytest.raises(ValueError, match="at least"):
        collate(big, np.empty(padded_size(big) - 1, dtype=np.float32))


def test_tokenizer_state_round_trips_through_json(data):
    graphs = data[0]
    tok = Tokenizer(TokenizerConfig(pe_dim=16)).fit(graphs)
    back = Tokenizer.from_state(json.loads(json.dumps(tok.state_dict())))
    for g in graphs[:5]:
        a, b = tok.encode(g), back.encode(g)
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.static, b.static)


# ---------------------------------------------------------------- model

def build(tok: Tokenizer, **overrides) -> NARFormerV2:
    torch.manual_seed(0)
    cfg = replace(TINY_MODEL, token_dim=tok.token_dim, static_dim=tok.static_dim, **overrides)
    return NARFormerV2(cfg)


@pytest.mark.parametrize("switches", [{}, {"use_graph_attention": False}, {"readout": "kernels"}],
                         ids=["graph", "plain", "kernels"])
def test_batched_forward_equals_one_graph_at_a_time(switches):
    graphs, _ = dataset(5, seed=3, sizes=(3, 40))
    assert len({g.num_nodes for g in graphs}) > 1
    tok = Tokenizer().fit(graphs)
    model = build(tok, **switches).eval()
    # Layer scale near zero would hide any leak from padding; make the branches count.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "scale" in name or "degree" in name:
                p.normal_(0.0, 0.5)
    tokens = tok.encode_many(graphs)
    with torch.no_grad():
        batched = model(**collate(tokens))
        single = torch.cat([model(**collate([t])) for t in tokens])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", ["softmax", "sigmoid-adjacency"])
def test_neighbour_attention_equals_masked_dense_attention_and_its_gradient(attention):
    """The edge-list attention the model runs must be the adjacency-masked attention
    written densely, values and gradients alike, for both attention forms."""
    graphs, _ = dataset(4, seed=5, sizes=(3, 30))
    tok = Tokenizer().fit(graphs)
    model = build(tok, attention=attention).eval()
    block = model.blocks[0]
    batch = collate(tok.encode_many(graphs))
    n = batch["x"].shape[1]
    allowed = (batch["adj"] & batch["mask"][:, None, :]) | torch.eye(n, dtype=torch.bool)
    h = torch.randn(len(graphs), n, model.cfg.d_model, requires_grad=True)
    dense = block.attend(h, allowed)
    sparse = block.attend_neighbours(h, allowed.nonzero())
    torch.testing.assert_close(sparse, dense, atol=1e-5, rtol=1e-5)
    (grad_dense,) = torch.autograd.grad(dense.square().sum(), h)
    (grad_sparse,) = torch.autograd.grad(sparse.square().sum(), h)
    torch.testing.assert_close(grad_sparse, grad_dense, atol=1e-4, rtol=1e-4)


def test_sigmoid_adjacency_attention_is_the_papers_formula():
    """sigmoid(q k^T / sqrt(d)) * D^-1/2 A D^-1/2 @ v, one head, on a three-node chain."""
    graphs, _ = dataset(1, seed=5, sizes=(3, 4))
    tok = Tokenizer().fit(graphs)
    block = build(tok, attention="sigmoid-adjacency", n_heads=1).eval().blocks[0]
    d = block.qkv.in_features
    allowed = torch.tensor([[[1, 1, 0], [1, 1, 1], [0, 1, 1]]], dtype=torch.bool)
    h = torch.randn(1, 3, d)
    q, k, v = block.qkv(h).split(d, dim=-1)
    a = allowed[0].float()
    deg = a.sum(-1)
    expected = (torch.sigmoid(q[0] @ k[0].T / math.sqrt(d)) * a / torch.sqrt(deg[:, None] * deg[None])) @ v[0]
    torch.testing.assert_close(block.attend(h, allowed)[0], expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="attention must be one of"):
        NARFormerV2Config(token_dim=8, static_dim=6, attention="linear").validate()


def test_inference_shortcuts_compute_the_textbook_block():
    """The degree gate's lookup table and the layer scales folded into the output
    weights must give what the paper's formulas give, node by node."""
    from nar_tvm.cost_model.model import DegreeGate, GroupedFeedForward

    torch.manual_seed(0)
    gate = DegreeGate(8, max_degree=4)
    for emb in (gate.in_degree, gate.out_degree):
        torch.nn.init.normal_(emb.weight)
    degree = torch.tensor([[[0, 1], [3, 9], [4, 4]]])  # 9 is above max_degree: shares slot 4
    expected = torch.sigmoid(gate.in_degree(degree[..., 0].clamp(max=4)) + gate.out_degree(degree[..., 1].clamp(max=4)))
    torch.testing.assert_close(gate(degree), expected)

    ffn = GroupedFeedForward(8, 16, groups=2, dropout=0.0)
    x, scale = torch.randn(2, 5, 8), torch.randn(8)
    torch.testing.assert_close(ffn(x, scale), scale * ffn(x), atol=1e-6, rtol=1e-5)
    # Group g's outputs depend only on group g's inputs: the block-diagonal map of the paper.
    x2 = x.clone()
    x2[..., :4] += 1.0
    torch.testing.assert_close(ffn(x2)[..., 4:], ffn(x)[..., 4:])


@pytest.mark.parametrize("switches", ABLATIONS.values(), ids=ABLATIONS.keys())
def test_each_ablation_builds_and_runs(switches, data):
    tok = Tokenizer().fit(data[0])
    model = build(tok, **switches)
    out = model(**collate(tok.encode_many(data[0][:4])))
    assert out.shape == (4,) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_ablations_change_the_architecture(data):
    tok = Tokenizer().fit(data[0])
    full = build(tok)
    sizes = {k: sum(p.numel() for p in build(tok, **v).parameters()) for k, v in ABLATIONS.items()}
    assert sizes["no_degree_gate"] < sizes["full"]
    assert sizes["plain_ffn"] > sizes["full"]  # groups cut the FFN's parameters
    assert sizes["no_static"] < sizes["full"]
    assert not any("gate" in n for n, _ in build(tok, use_degree_gate=False).named_parameters())
    assert any("gate" in n for n, _ in full.named_parameters())


def test_config_rejects_bad_shapes():
    with pytest.raises(ValueError):
        NARFormerV2(NARFormerV2Config())  # no token_dim from a tokenizer
    with pytest.raises(ValueError):
        NARFormerV2(NARFormerV2Config(token_dim=8, static_dim=6, d_model=30, n_heads=4))
    with pytest.raises(ValueError):
        NARFormerV2(NARFormerV2Config(token_dim=8, static_dim=6, readout="max"))


# ---------------------------------------------------------------- training

def test_losses_match_their_definitions():
    y = torch.tensor([1.0, 10.0, 100.0])
    pred = torch.tensor([1.1, 8.0, 100.0])
    assert rse_loss(pred.log(), y).item() == pytest.approx((0.1 ** 2 + 0.2 ** 2) / 3, rel=1e-5)
    g = torch.Generator().manual_seed(0)
    assert sr_loss(y.log(), y, g).item() == pytest.approx(0.0, abs=1e-6)
    assert sr_loss((2 * y).log(), y, g).item() == pytest.approx(0.0, abs=1e-6)  # scale-free
    assert sr_loss(pred.log(), y, g).item() > 0


def test_training_lowers_loss_and_val_mape(trained):
    _, history = trained
    losses = [e["train_loss"] for e in history.epochs]
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])
    assert history.best_val_mape < 0.5 * history.init_val_mape
    assert history.epochs[history.best_epoch - 1]["val_mape"] == history.best_val_mape


def test_trained_predictor_reports_provenance_and_best_model(trained, data):
    predictor, history = trained
    _, _, va_g, va_y = data
    result = predictor.predict(va_g)
    assert result.latency_ms.shape == (len(va_g),) and (result.latency_ms > 0).all()
    assert result.unknown_ops.tolist() == [0] * len(va_g)
    report = regression_report(result.latency_ms, va_y)
    assert report["mape"] == pytest.approx(history.best_val_mape, rel=1e-5)
    assert predictor.provenance["best_epoch"] == history.best_epoch
    assert predictor.provenance["val_report"]["mape"] == pytest.approx(report["mape"])


def test_predictor_chunks_agree_with_one_pass_and_keep_order(trained, data):
    predictor, _ = trained
    tokens = predictor.tokenizer.encode_many(data[2])
    whole = predictor.predict_tokens(tokens, batch_size=len(tokens), max_batch_nodes=10 ** 9)
    chunked = predictor.predict_tokens(tokens, batch_size=3, max_batch_nodes=40)
    single = np.array([predictor.predict_tokens([t], batch_size=1)[0] for t in tokens])
    np.testing.assert_allclose(chunked, whole, rtol=1e-5)
    np.testing.assert_allclose(single, whole, rtol=1e-5)


def test_training_is_deterministic_for_a_seed(data):
    cfg = TrainConfig(epochs=2, batch_size=16, seed=7, loss="rse+sr", lr=1e-3, patience=20, size_bucket_batches=1)
    runs = [train(*data, model_cfg=TINY_MODEL, train_cfg=cfg, progress=False) for _ in range(2)]
    preds = [p.predict(data[2]).latency_ms for p, _ in runs]
    np.testing.assert_array_equal(preds[0], preds[1])
    other, _ = train(*data, model_cfg=TINY_MODEL, train_cfg=replace(cfg, seed=8), progress=False)
    assert not np.array_equal(other.predict(data[2]).latency_ms, preds[0])


def test_training_rejects_bad_targets(data):
    tr_g, tr_y, va_g, va_y = data
    with pytest.raises(ValueError, match="positive"):
        train(tr_g, -tr_y, va_g, va_y, progress=False)
    with pytest.raises(ValueError, match="targets"):
        train(tr_g, tr_y[:-1], va_g, va_y, progress=False)


# ---------------------------------------------------------------- checkpoints

def test_checkpoint_round_trip_gives_identical_predictions(trained, data, tmp_path):
    predictor, _ = trained
    predictor.platform = {"target": "llvm -mcpu=znver3", "threads": 1}
    path = save_checkpoint(predictor, tmp_path / "model.pt")
    loaded = load_checkpoint(path)
    np.testing.assert_array_equal(loaded.predict(data[2]).latency_ms, predictor.predict(data[2]).latency_ms)
    assert loaded.platform == predictor.platform
    assert loaded.provenance == predictor.provenance
    assert loaded.tokenizer.state_dict() == predictor.tokenizer.state_dict()
    assert not loaded.model.training


def test_checkpoint_refuses_non_plain_metadata(trained, tmp_path):
    predictor, _ = trained
    predictor.platform = {"device": np.float32(1.0)}
    try:
        with pytest.raises(TypeError, match="platform"):
            save_checkpoint(predictor, tmp_path / "bad.pt")
    finally:
        predictor.platform = {}


def test_checkpoint_load_errors_name_the_file(trained, tmp_path):
    predictor, _ = trained
    good = save_checkpoint(predictor, tmp_path / "good.pt")
    payload = torch.load(good, weights_only=True)

    def write(name, obj):
        path = tmp_path / name
        torch.save(obj, path)
        return path

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"definitely not a zip archive")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    wrong_state = dict(payload, state_dict={k: v for k, v in payload["state_dict"].items() if "head" not in k})
    cases = {
        tmp_path / "missing.pt": "no such",
        corrupt: "not a readable",
        truncated: "not a readable",
        write("other_format.pt", {"format": "something-else", "version": VERSION}): "format",
        write("list.pt", [1, 2, 3]): "format",
        write("future.pt", dict(payload, version=VERSION + 1)): "version",
        write("wrong_config.pt", dict(payload, model_config=dict(payload["model_config"], d_model=64))): "do not fit",
        write("wrong_state.pt", wrong_state): "do not fit",
        write("unknown_field.pt", dict(payload, model_config=dict(payload["model_config"], colour="red"))): "unknown",
        write("unknown_arch.pt", dict(payload, architecture="mlp")): "unknown architecture 'mlp'",
        # NAR-Former V2 weights under the NNLP name: the configs' fields do not match.
        write("wrong_arch.pt", dict(payload, architecture="nnlp")): "nnlp config has unknown fields",
    }
    for path, why in cases.items():
        with pytest.raises(CheckpointError, match=why) as err:
            load_checkpoint(path)
        assert path.name in str(err.value)
    assert payload["format"] == FORMAT


def test_version_1_checkpoints_still_load_as_nar_former_v2(trained, data, tmp_path):
    predictor, _ = trained
    payload = torch.load(save_checkpoint(predictor, tmp_path / "v2.pt"), weights_only=True)
    assert payload["architecture"] == "nar-former-v2"
    old = {k: v for k, v in payload.items() if k != "architecture"}
    old["version"] = 1
    torch.save(old, tmp_path / "v1.pt")
    loaded = load_checkpoint(tmp_path / "v1.pt")
    assert isinstance(loaded.model, NARFormerV2)
    np.testing.assert_array_equal(loaded.predict(data[2]).latency_ms, predictor.predict(data[2]).latency_ms)


@pytest.mark.parametrize("architecture", ["nar-former-v2", "nnlp"])
def test_a_checkpoint_without_a_config_field_gets_the_value_it_was_trained_with(architecture, data, tmp_path):
    """A field missing from a saved config takes the default of the time the file could have
    been written, not today's: the config defaults moved to the recipes after files were saved."""
    from nar_tvm.cost_model import LatencyPredictor
    from nar_tvm.cost_model.architectures import FORMER_DEFAULTS, build_model
    from nar_tvm.cost_model.nnlp import NNLPConfig

    tok = Tokenizer().fit(data[0])
    config_cls = NNLPConfig if architecture == "nnlp" else NARFormerV2Config
    cfg = config_cls(token_dim=tok.token_dim, static_dim=tok.static_dim, **FORMER_DEFAULTS[architecture])
    assert cfg != replace(config_cls(), token_dim=tok.token_dim, static_dim=tok.static_dim)
    torch.manual_seed(0)
    predictor = LatencyPredictor(tok, build_model(cfg).eval())
    payload = torch.load(save_checkpoint(predictor, tmp_path / "full.pt"), weights_only=True)
    for name in FORMER_DEFAULTS[architecture]:
        del payload["model_config"][name]
    torch.save(payload, tmp_path / "older.pt")
    loaded = load_checkpoint(tmp_path / "older.pt")
    assert loaded.model.cfg == cfg
    np.testing.assert_array_equal(loaded.predict(data[2]).latency_ms, predictor.predict(data[2]).latency_ms)


def test_nnlp_checkpoint_round_trip(data, tmp_path):
    from nar_tvm.cost_model.nnlp import NNLP, NNLPConfig

    train_graphs, y_train, val_graphs, y_val = data[0], data[1], data[2], data[3]
    predictor, _ = train(train_graphs, y_train, val_graphs, y_val, model_cfg=NNLPConfig(hidden=16, head_hidden=16, dropout=0.05),
                         train_cfg=TrainConfig(epochs=2, batch_size=8, seed=0, lr=1e-3, loss="rse", patience=20, size_bucket_batches=1),
                         progress=False)
    path = save_checkpoint(predictor, tmp_path / "gnn.pt")
    assert torch.load(path, weights_only=True)["architecture"] == "nnlp"
    loaded = load_checkpoint(path)
    assert isinstance(loaded.model, NNLP) and loaded.model.cfg == predictor.model.cfg
    np.testing.assert_array_equal(loaded.predict(val_graphs).latency_ms, predictor.predict(val_graphs).latency_ms)


def kernel_readout_models(tok):
    from nar_tvm.cost_model.nnlp import NNLP, NNLPConfig

    nnlp = NNLP(NNLPConfig(token_dim=tok.token_dim, static_dim=tok.static_dim, hidden=16, head_hidden=16,
                           dropout=0.05, readout="kernels"))
    return {"nar-former-v2": build(tok, readout="kernels"), "nnlp": nnlp}


@pytest.mark.parametrize("architecture", ["nar-former-v2", "nnlp"])
def test_kernel_readout_is_the_sum_of_kernel_times_plus_the_remainder(architecture):
    from nar_tvm.cost_model.architectures import build_model

    graphs, _ = dataset(4, seed=7, sizes=(3, 30))
    tok = Tokenizer().fit(graphs)
    torch.manual_seed(0)
    model = kernel_readout_models(tok)[architecture].eval()
    for p in model.parameters():  # away from the zero-initialised heads, so every term counts
        torch.nn.init.normal_(p, 0.0, 0.3)
    batch = collate(tok.encode_many(graphs))
    with torch.no_grad():
        graph, kernels = model.forward_with_nodes(**batch)
        # The same weights without the kernel head: what the remainder alone predicts.
        rest_model = build_model(replace(model.cfg, readout="mean" if architecture == "nar-former-v2" else "sum"))
        rest_model.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("kernel_head")})
        rest = rest_model.eval()(**batch)
    mask = batch["mask"]
    assert kernels.shape == mask.shape
    expected = torch.log(rest.exp() + (kernels.exp() * mask).sum(dim=1))
    torch.testing.assert_close(graph, expected, atol=1e-5, rtol=1e-5)
    # Padding adds nothing: the kernels of padded rows are not in the sum.
    assert (graph.exp() > rest.exp()).all()

    # Training starts a graph of the average size at the constant given: the kernels'
    # sum and the remainder each hold half of it.
    from nar_tvm.cost_model.model import start_at_constant

    start_at_constant(model, math.log(7.0), mean_nodes=float(graphs[0].num_nodes))
    with torch.no_grad():
        first = model(**collate(tok.encode_many(graphs[:1])))
    torch.testing.assert_close(first.exp(), torch.tensor([7.0]))


@pytest.mark.parametrize("layers", [0, 1])
def test_without_encoder_blocks_each_kernel_is_priced_from_its_own_token(layers):
    graphs, _ = dataset(2, seed=3, sizes=(6, 12))
    tok = Tokenizer().fit(graphs)
    model = build(tok, readout="kernels", n_layers=layers).eval()
    for p in model.parameters():  # away from the near-zero layer scale, so the blocks do count
        torch.nn.init.normal_(p, 0.0, 0.3)
    batch = collate(tok.encode_many(graphs))
    changed = {**batch, "x": batch["x"].clone()}
    changed["x"][:, 0] += 1.0  # every graph's first node becomes another kernel
    with torch.no_grad():
        _, kernels = model.forward_with_nodes(**batch)
        _, kernels_changed = model.forward_with_nodes(**changed)
    others = batch["mask"].clone()
    others[:, 0] = False
    assert not torch.allclose(kernels[:, 0], kernels_changed[:, 0])
    # One block lets a neighbour's token move a kernel's price; none leaves each kernel to itself.
    assert torch.equal(kernels[others], kernels_changed[others]) == (layers == 0)
    with pytest.raises(ValueError, match="n_layers"):
        build(tok, n_layers=-1)


def test_tokens_give_back_each_nodes_flops_and_bytes():
    from nar_tvm.cost_model.model import node_log_cost

    graphs, _ = dataset(6, seed=11, sizes=(3, 20))
    tok = Tokenizer().fit(graphs)
    prior = tok.cost_decoding()
    for graph, tokens in zip(graphs, tok.encode_many(graphs)):
        decoded = node_log_cost(torch.from_numpy(tokens.x)[None], prior)[0].double().numpy()
        # log2(1 + flops) and log2(1 + bytes), read back and added: ln(2 + flops + bytes).
        exact = np.log(2.0 + np.array([n.flops + n.bytes for n in graph.nodes], dtype=np.float64))
        np.testing.assert_allclose(decoded, exact, rtol=0, atol=5e-5 * exact.max())
    assert node_log_cost(torch.from_numpy(tokens.x)[None], {**prior, "offset": 3.0})[0].double().numpy() == \
        pytest.approx(decoded - 3.0, abs=1e-5)


def test_cost_prior_adds_each_kernels_log_cost_to_its_predicted_time(data, tmp_path):
    from nar_tvm.cost_model.model import node_log_cost

    graphs, _ = dataset(4, seed=7, sizes=(3, 30))
    tok = Tokenizer().fit(graphs)
    prior = {**tok.cost_decoding(), "offset": 1.5}
    with_prior, without = build(tok, readout="kernels", cost_prior=prior), build(tok, readout="kernels")
    without.load_state_dict(with_prior.state_dict())
    batch = collate(tok.encode_many(graphs))
    with torch.no_grad():
        _, kernels = with_prior.eval().forward_with_nodes(**batch)
        _, plain = without.eval().forward_with_nodes(**batch)
    mask = batch["mask"]
    torch.testing.assert_close(kernels[mask], (plain + node_log_cost(batch["x"], prior))[mask])
    with pytest.raises(ValueError, match="needs readout='kernels'"):
        build(tok, readout="mean", cost_prior=prior)

    # Training fills the decoding in and centres it on the training nodes, so the model
    # starts where it would without the prior; the checkpoint keeps it.
    cfg = TrainConfig(epochs=2, batch_size=16, seed=0, lr=1e-3, loss="log_mse", patience=None, size_bucket_batches=1)
    predictor, _ = train(*data, model_cfg=replace(TINY_MODEL, readout="kernels", cost_prior={}), train_cfg=cfg,
                         progress=False)
    trained = predictor.model.cfg.cost_prior
    assert {k: trained[k] for k in ("columns", "frequency")} == predictor.tokenizer.cost_decoding()
    x = torch.from_numpy(np.concatenate([t.x for t in predictor.tokenizer.encode_many(data[0])]))[None]
    assert node_log_cost(x, trained).mean().item() == pytest.approx(0.0, abs=1e-4)
    loaded = load_checkpoint(save_checkpoint(predictor, tmp_path / "prior.pt"))
    assert loaded.model.cfg.cost_prior == trained
    np.testing.assert_array_equal(loaded.predict(data[2]).latency_ms, predictor.predict(data[2]).latency_ms)


def test_kernel_readout_supervises_its_own_head_and_keeps_it_in_checkpoints(data, tmp_path):
    from nar_tvm.cost_model.nnlp import NNLP, NNLPConfig
    from nar_tvm.cost_model.synthetic import synthetic_dataset

    graphs, y = synthetic_dataset(120, seed=3)
    node_ms = [[nd.flops / 2e8 + 0.005 for nd in g.nodes] for g in graphs]
    cfg = TrainConfig(epochs=30, batch_size=16, lr=3e-3, seed=0, patience=None, loss="log_mse", size_bucket_batches=1)
    predictor, history = train(graphs[:100], y[:100], graphs[100:], y[100:],
                               model_cfg=NNLPConfig(hidden=16, head_hidden=16, dropout=0.05, readout="kernels"),
                               train_cfg=cfg, progress=False, node_weight=1.0, node_targets=node_ms[:100])
    node_loss = [e["node_loss"] for e in history.epochs]
    assert node_loss[-1] < 0.1 * node_loss[0]
    # No separate auxiliary head: the kernel times trained are the ones the readout adds up.
    assert predictor.model.node_out is None
    assert any(k.startswith("kernel_head") for k in predictor.model.state_dict())
    loaded = load_checkpoint(save_checkpoint(predictor, tmp_path / "kernels.pt"))
    assert isinstance(loaded.model, NNLP) and loaded.model.cfg.readout == "kernels"
    np.testing.assert_array_equal(loaded.predict(graphs[100:]).latency_ms, predictor.predict(graphs[100:]).latency_ms)
    with pytest.raises(ValueError, match="readout must be one of"):
        NNLP(NNLPConfig(token_dim=8, static_dim=6, readout="mean"))


# ---------------------------------------------------------------- metrics

def test_metrics_on_hand_computed_example():
    true = [100.0, 200.0, 50.0, 400.0]
    pred = [110.0, 180.0, 50.0, 600.0]  # relative errors 0.1, 0.1, 0, 0.5
    r = regression_report(pred, true)
    assert r["n"] == 4
    assert r["mape"] == pytest.approx(0.175)
    assert r["rmse"] == pytest.approx(math.sqrt((10 ** 2 + 20 ** 2 + 0 + 200 ** 2) / 4))
    assert r["acc@5%"] == pytest.approx(0.25)
    assert r["acc@10%"] == pytest.approx(0.75)
    assert r["kendall_tau"] == pytest.approx(1.0) and r["spearman"] == pytest.approx(1.0)

    ranked = regression_report([1.0, 2.0, 4.0, 3.0], [1.0, 2.0, 3.0, 4.0])
    assert ranked["kendall_tau"] == pytest.approx(4 / 6)  # 5 concordant, 1 discordant pair
    assert ranked["spearman"] == pytest.approx(1 - 6 * 2 / (4 * 15))


def test_rank_metrics_of_one_sample_or_constant_input_are_nan_without_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        single = regression_report([2.0], [1.0])
        flat = regression_report([3.0, 3.0, 3.0], [1.0, 2.0, 3.0])
    assert single["mape"] == pytest.approx(1.0) and math.isnan(single["kendall_tau"]) and math.isnan(single["spearman"])
    assert math.isnan(flat["kendall_tau"]) and math.isnan(flat["spearman"]) and flat["acc@10%"] == pytest.approx(1 / 3)


# ---------------------------------------------------------------- isolation

def test_cost_model_never_imports_tvm_or_the_integration_layer():
    """Every module of the learning side, imported in a fresh interpreter, pulls in neither
    tvm nor any nar_tvm module outside cost_model but the plain OpGraph data structure."""
    import pkgutil

    import nar_tvm.cost_model as cm

    modules = sorted(f"nar_tvm.cost_model.{m.name}" for m in pkgutil.iter_modules(cm.__path__))
    assert {"nar_tvm.cost_model.nasbench", "nar_tvm.cost_model.train", "nar_tvm.cost_model.fit"} <= set(modules)
    allowed = {"nar_tvm", "nar_tvm.passes", "nar_tvm.passes.opgraph"}
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            "bad = sorted(m for m in sys.modules if m == 'tvm' or m.startswith('tvm.') or m == 'tvm_ffi'\n"
            "             or (m.startswith('nar_tvm') and not m.startswith('nar_tvm.cost_model')\n"
            f"                 and m not in {sorted(allowed)!r}))\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_training_from_a_stored_dataset_needs_no_tvm():
    """What trains and evaluates on a stored dataset (a training server without TVM) imports
    no tvm: the dataset, the training glue and the kernel-error analysis."""
    modules = ["nar_tvm.dataset", "nar_tvm.training", "nar_tvm.kernel_errors"]
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            "bad = sorted(m for m in sys.modules if m == 'tvm' or m.startswith('tvm.') or m == 'tvm_ffi')\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------- kernel-time supervision

def test_node_times_split_shared_kernels_and_mark_unknown_ones():
    from nar_tvm.cost_model.synthetic import random_graph
    from nar_tvm.dataset import node_times

    g = random_graph(np.random.default_rng(0), 4)
    for nd, kernel in zip(g.nodes, ["k_conv", "k_act", "k_act", "k_pool"]):
        nd.kernel = kernel
    # k_act ran twice (one PrimFunc, two nodes): the profile's 1.0 ms is both calls together.
    assert node_times(g, {"k_conv": 3.0, "k_act": 1.0}) == [3.0, 0.5, 0.5, None]
    assert node_times(g, None) is None and node_times(g, {}) is None


def test_samples_give_kernel_times_beside_their_fused_graphs():
    from nar_tvm.cost_model.synthetic import random_graph
    from nar_tvm.dataset import Sample

    g = random_graph(np.random.default_rng(0), 4)
    for nd, kernel in zip(g.nodes, ["k_conv", "k_act", "k_act", "k_pool"]):
        nd.kernel = kernel
    record = {"job": "j", "model": {"family": "f"}, "graphs": {"op": g.to_dict(), "fused": g.to_dict()},
              "measurement": {"median_ms": 5.0, "kernels_ms": {"k_conv": 3.0, "k_act": 1.0}}}
    sample = Sample(record)
    assert sample.node_ms("fused") == [3.0, 0.5, 0.5, None]
    assert sample.node_ms("op") is None  # operators are not kernels
    # The graph is what the model reads, nothing more: labels do not ride along in it.
    assert "node_ms" not in sample.graph("fused").meta and record["graphs"]["fused"]["meta"] == {}


def test_training_on_kernel_times_teaches_the_node_head():
    from nar_tvm.cost_model.architectures import build_model
    from nar_tvm.cost_model.synthetic import synthetic_dataset

    graphs, y = synthetic_dataset(120, seed=3)
    # Each node's made-up kernel time: its share of the synthetic latency model.
    node_ms = [[nd.flops / 2e8 + 0.005 for nd in g.nodes] for g in graphs]
    for ms in node_ms:
        ms[0] = None  # an unprofiled kernel is skipped, not a zero
    cfg = TrainConfig(epochs=30, batch_size=16, lr=3e-3, seed=0, patience=None, loss="rse", size_bucket_batches=1)
    predictor, history = train(graphs[:100], y[:100], graphs[100:], y[100:], model_cfg=TINY_MODEL, train_cfg=cfg,
                               progress=False, node_weight=1.0, node_targets=node_ms[:100])
    node_loss = [e["node_loss"] for e in history.epochs]
    assert node_loss[-1] < 0.1 * node_loss[0]  # squared error of log kernel ms: it learns them
    # The auxiliary head is gone afterwards: the predictor saves and predicts like any other.
    assert predictor.model.node_out is None
    assert set(predictor.model.state_dict()) == set(build_model(predictor.model.cfg).state_dict())
    assert np.all(predictor.predict(graphs[100:]).latency_ms > 0)
    with pytest.raises(ValueError, match="needs node_targets for each of the 20 training graphs, got none"):
        train(*synthetic_dataset(20, seed=4), graphs[:5], y[:5], model_cfg=TINY_MODEL, train_cfg=cfg,
              progress=False, node_weight=1.0)
    with pytest.raises(ValueError, match="node_targets hold no kernel time"):
        train(*synthetic_dataset(20, seed=4), graphs[:5], y[:5], model_cfg=TINY_MODEL, train_cfg=cfg,
              progress=False, node_weight=1.0, node_targets=[None] * 20)


def test_a_fused_kernel_counts_each_transcendental_on_the_tensor_it_runs_on():
    """A squeeze-excitation gate's sigmoid runs once per channel and is broadcast over the map
    the kernel writes; a SiLU convolution's runs once per output element."""
    from nar_tvm.cost_model.tokenizer import transcendental_evaluations

    feature_map, per_channel = TensorSpec([1, 8, 4, 4]), TensorSpec([1, 8, 1, 1])
    gate = OpNode(op="kernel:conv2d", outputs=[feature_map], ops=["conv2d", "add", "tir_sigmoid", "multiply"],
                  fused=[FusedOp("conv2d", outputs=[per_channel]), FusedOp("add", outputs=[per_channel]),
                         FusedOp("tir_sigmoid", outputs=[per_channel]), FusedOp("multiply", outputs=[feature_map])])
    silu = OpNode(op="kernel:conv2d", outputs=[feature_map], ops=["conv2d", "add", "tir_sigmoid", "multiply"],
                  fused=[FusedOp(op, outputs=[feature_map]) for op in ("conv2d", "add", "tir_sigmoid", "multiply")])
    gelu = OpNode(op="kernel:matmul", outputs=[feature_map], ops=["matmul", "erf", "tir_tanh"],
                  fused=[FusedOp(op, outputs=[feature_map]) for op in ("matmul", "erf", "tir_tanh")])
    assert [transcendental_evaluations(n) for n in (gate, silu, gelu)] == [8, 128, 256]


def test_the_prior_prices_transcendental_evaluations_that_flop_counts_miss(data, tmp_path):
    from nar_tvm.cost_model.model import TRANSCENDENTAL_COST, node_log_cost

    x = TensorSpec([1, 8, 4, 4])  # 128 output elements per node
    fused = lambda ops: OpNode(op="kernel:conv2d", inputs=[x], outputs=[x], ops=ops, flops=5000)  # noqa: E731
    graph = OpGraph(nodes=[fused(["conv2d", "add", "relu"]), fused(["conv2d", "add", "tir_sigmoid", "multiply"]),
                           fused(["matmul", "erf", "tir_tanh"])], edges=[(0, 1), (1, 2)], level="fused", inputs=[x])
    counted = Tokenizer(TokenizerConfig(transcendentals=True)).fit([graph])
    assert counted.token_dim == Tokenizer().fit([graph]).token_dim + counted.config.pe_dim
    prior = counted.cost_decoding()
    assert set(prior["columns"]) == {"flops", "bytes", "transcendentals"}
    # Without the fused ops' shapes, each transcendental counts once per output element; an
    # op-level node lists itself among its ops and is counted once, not twice.
    from nar_tvm.cost_model.tokenizer import transcendental_evaluations
    assert [transcendental_evaluations(n) for n in graph.nodes] == [0, 128, 256]
    assert transcendental_evaluations(OpNode(op="exp", ops=["exp"], outputs=[TensorSpec([2, 3])])) == 6
    tokens = torch.from_numpy(counted.encode(graph).x)[None]
    # Each count is read back as 1 + count: ln((1 + FLOPs) + (1 + bytes) + price x (1 + evaluations)).
    evaluations = np.array([0.0, 128.0, 256.0])
    for price in (TRANSCENDENTAL_COST, 100.0):
        exact = np.log(2.0 + np.array([n.flops + n.bytes for n in graph.nodes]) + price * (1.0 + evaluations))
        decoded = node_log_cost(tokens, {**prior, "transcendental_cost": price})[0].double().numpy()
        np.testing.assert_allclose(decoded, exact, rtol=1e-4)

    # Training sets the price and the checkpoint keeps it; a tokenizer state saved before the
    # option existed loads without the slot.
    cfg = TrainConfig(epochs=2, batch_size=16, seed=0, lr=1e-3, loss="log_mse", patience=None, size_bucket_batches=1)
    predictor, _ = train([graph] * 8 + list(data[0][:24]), np.concatenate([np.full(8, 3.0), data[1][:24]]),
                         data[2][:8], data[3][:8], model_cfg=replace(TINY_MODEL, readout="kernels", cost_prior={}),
                         train_cfg=cfg, progress=False, tokenizer=Tokenizer(TokenizerConfig(transcendentals=True)))
    assert predictor.model.cfg.cost_prior["transcendental_cost"] == TRANSCENDENTAL_COST
    loaded = load_checkpoint(save_checkpoint(predictor, tmp_path / "priced.pt"))
    assert loaded.tokenizer.config.transcendentals and loaded.model.cfg.cost_prior == predictor.model.cfg.cost_prior
    np.testing.assert_array_equal(loaded.predict([graph]).latency_ms, predictor.predict([graph]).latency_ms)
    state = predictor.tokenizer.state_dict()
    old = {**state, "config": {k: v for k, v in state["config"].items() if k != "transcendentals"}}
    assert not Tokenizer.from_state(old).config.transcendentals
