"""NAR-Former V2: a Transformer given a GNN's inductive bias, for whole-network latency.

The paper's three changes to a pre-norm Transformer encoder are all here and all
switchable, so that each can be ablated against the plain Transformer:
graph-aided attention (scores restricted to graph neighbours, as message passing
is), a degree gate (a node's fan-in / fan-out modulates its update, which a
sum-aggregating GNN gets implicitly) and a grouped feed-forward network
(block-diagonal, so a fraction of the parameters: less room to overfit the few
network families a latency data set has).

Two liberties, both within the paper's description: attention is standard softmax
attention over the neighbours (the authors' code normalises sigmoid-kernel scores
instead), and the degree gate scales the FFN branch's input from in- and
out-degree embeddings (their code gates the attention input from the degree).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

# "kernels": the graph's latency is the sum of per-node kernel times (predicted from each
# node's state) plus a remainder read from the pooled states and static features. On one
# CPU thread the profiler's kernel times add up to the measured total, so this is the
# structure of the quantity, and it carries over to networks built from known kernels in
# unseen arrangements.
READOUTS = ("sum", "mean", "kernels")
# "softmax": multi-head softmax over each node's graph neighbours (this project's default).
# "sigmoid-adjacency": the paper's graph-aided attention as its official code computes it,
# sigmoid(q.k / sqrt(d)) times the symmetrically normalised adjacency (self-loops included),
# no normalisation over the row; with n_heads=1 it is the paper's single-head form.
ATTENTIONS = ("softmax", "sigmoid-adjacency")


@dataclass
class NARFormerV2Config:
    """The defaults are the recipe the latency report validated (recipes.NAR_FORMER_V2).

    Sized to train on one CPU core; no dropout, and a mean readout because on validation
    sum-pooling the layer-normalised node vectors trained far worse. Checkpoints record every field, and
    architectures.make_config fills a field an older file lacks with the value it was
    trained with, so changing a default here never changes a saved model.
    """
    # Input widths come from the tokenizer; train() fills them in.
    token_dim: int | None = None
    static_dim: int | None = None
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    ffn_ratio: int = 4
    ffn_groups: int = 8
    head_hidden: int = 64
    dropout: float = 0.0
    # Branches start almost switched off, so early training sees the readout of the
    # input tokens and the encoder is eased in (CaiT's layer scale; the paper uses 1e-4).
    layer_scale_init: float = 1e-4
    # Degrees above this share one embedding: fan-in/out beyond it is rare in DNN graphs.
    max_degree: int = 16
    use_graph_attention: bool = True
    use_degree_gate: bool = True
    grouped_ffn: bool = True
    use_static: bool = True
    readout: str = "mean"
    attention: str = "softmax"
    # With the "kernels" readout: a node's kernel log-time is the head's output plus the log of
    # its FLOPs + bytes (read back from its token, Tokenizer.cost_decoding), so the head learns
    # time per unit of work and a kernel larger than any in training is predicted to take
    # proportionally longer instead of saturating at the largest time it saw. None: off; {}:
    # on, with the decoding and the training nodes' mean log cost (the offset that keeps the
    # head's starting point) filled in by train().
    cost_prior: dict | None = None

    def validate(self) -> None:
        if self.token_dim is None or self.static_dim is None:
            raise ValueError("token_dim and static_dim must be set (from the tokenizer) to build a model")
        if self.n_layers < 0:
            raise ValueError(f"n_layers must be >= 0, got {self.n_layers}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.grouped_ffn and (self.d_model % self.ffn_groups or (self.d_model * self.ffn_ratio) % self.ffn_groups):
            raise ValueError(f"d_model {self.d_model} and its FFN width must be divisible by ffn_groups {self.ffn_groups}")
        if self.readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {self.readout!r}")
        if self.attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {self.attention!r}")
        if self.cost_prior is not None and self.readout != "kernels":
            raise ValueError("cost_prior scales per-kernel times: it needs readout='kernels'")


class GroupedFeedForward(nn.Module):
    """Two-layer FFN split into groups, each with its own weights (block-diagonal maps).

    Activations stay group-major ([groups, nodes, width]) between the two layers, so a
    batched matmul reads them in place: no copies of the wide hidden layer.
    """

    def __init__(self, d_model: int, hidden: int, groups: int, dropout: float):
        super().__init__()
        self.groups = groups
        self.w_in = nn.Parameter(torch.empty(groups, d_model // groups, hidden // groups))
        self.b_in = nn.Parameter(torch.zeros(groups, 1, hidden // groups))
        self.w_out = nn.Parameter(torch.empty(groups, hidden // groups, d_model // groups))
        self.b_out = nn.Parameter(torch.zeros(groups, 1, d_model // groups))
        self.dropout = nn.Dropout(dropout)
        # Each group is a small linear layer; initialise it as nn.Linear would one of its size.
        for w in (self.w_in, self.w_out):
            bound = 1.0 / math.sqrt(w.shape[1])
            nn.init.uniform_(w, -bound, bound)

    def forward(self, x: torch.Tensor, out_scale: torch.Tensor | None = None) -> torch.Tensor:
        """`out_scale` ([d_model]) multiplies the output; it is folded into the second layer's
        weights, which costs a few hundred multiplies instead of one per node feature."""
        shape = x.shape
        x = x.reshape(-1, self.groups, shape[-1] // self.groups).transpose(0, 1)
        h = self.dropout(torch.baddbmm(self.b_in, x, self.w_in).relu_())
        w_out, b_out = self.w_out, self.b_out
        if out_scale is not None:
            out_scale = out_scale.view(self.groups, 1, -1)
            w_out, b_out = w_out * out_scale, b_out * out_scale
        out = torch.baddbmm(b_out, h, w_out)
        return self.dropout(out.transpose(0, 1).reshape(shape))


class DegreeGate(nn.Module):
    def __init__(self, d_model: int, max_degree: int):
        super().__init__()
        self.max_degree = max_degree
        self.in_degree = nn.Embedding(max_degree + 1, d_model)
        self.out_degree = nn.Embedding(max_degree + 1, d_model)
        # Zero embeddings make the gate a uniform 0.5 at first: no degree is favoured until learned.
        nn.init.zeros_(self.in_degree.weight)
        nn.init.zeros_(self.out_degree.weight)

    def forward(self, degree: torch.Tensor) -> torch.Tensor:
        # The gate of every (in, out) degree pair is a small table; looking nodes up in it
        # is cheaper than two embedding lookups, an add and a sigmoid per node.
        table = torch.sigmoid(self.in_degree.weight[:, None] + self.out_degree.weight[None]).flatten(0, 1)
        degree = degree.clamp(max=self.max_degree)
        pair = degree[..., 0] * (self.max_degree + 1) + degree[..., 1]
        return table.index_select(0, pair.reshape(-1)).view(*pair.shape, -1)


class EncoderBlock(nn.Module):
    def __init__(self, cfg: NARFormerV2Config):
        super().__init__()
        d = cfg.d_model
        self.n_heads = cfg.n_heads
        self.dropout = cfg.dropout
        self.sigmoid_adjacency = cfg.attention == "sigmoid-adjacency"
        self.norm_attn = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.scale_attn = nn.Parameter(torch.full((d,), cfg.layer_scale_init))

        self.norm_ffn = nn.LayerNorm(d)
        self.gate = DegreeGate(d, cfg.max_degree) if cfg.use_degree_gate else None
        groups = cfg.ffn_groups if cfg.grouped_ffn else 1
        self.ffn = GroupedFeedForward(d, d * cfg.ffn_ratio, groups, cfg.dropout)
        self.scale_ffn = nn.Parameter(torch.full((d,), cfg.layer_scale_init))

    def attend(self, h: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """Masked softmax attention; the heads come out concatenated, before the projection."""
        q, k, v = self.qkv(h).unflatten(-1, (3, self.n_heads, -1)).permute(2, 0, 3, 1, 4)
        if self.sigmoid_adjacency:
            degree = allowed.sum(-1).clamp(min=1).to(h.dtype)  # [B, N], self-loop included
            norm = allowed.to(h.dtype) / (degree[:, :, None] * degree[:, None, :]).sqrt()
            weight = torch.sigmoid(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])) * norm[:, None]
            weight = F.dropout(weight, self.dropout, self.training)
            return (weight @ v).transpose(1, 2).flatten(-2)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed[:, None], dropout_p=self.dropout if self.training else 0.0
        )
        return out.transpose(1, 2).flatten(-2)

    def attend_neighbours(self, h: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """The same softmax attention as `attend`, computed over the allowed (query, key)
        pairs only: DNN graphs have a few neighbours per node, so this costs O(edges)
        where the masked dense form costs O(nodes^2) per graph."""
        b, n, d = h.shape
        heads, width = self.n_heads, d // self.n_heads
        query = pairs[:, 0] * n + pairs[:, 1]
        key = pairs[:, 0] * n + pairs[:, 2]
        # Gathering q, k and v each into its own contiguous block keeps the per-pair
        # products on the fast elementwise path (strided views of qkv are ~2x slower).
        q, k, v = self.qkv(h.reshape(b * n, d)).split(d, dim=1)
        scores = (q.index_select(0, query) * k.index_select(0, key)).view(-1, heads, width).sum(-1)
        scores = scores / math.sqrt(width)  # [pairs, heads]
        if self.sigmoid_adjacency:
            degree = h.new_zeros(b * n).index_add(0, query, h.new_ones(len(query)))
            norm = (degree.index_select(0, query) * degree.index_select(0, key)).rsqrt()
            weight = F.dropout(torch.sigmoid(scores) * norm[:, None], self.dropout, self.training)
            message = v.index_select(0, key).view(-1, heads, width) * weight[..., None]
            return h.new_zeros(b * n, heads, width).index_add(0, query, message).view(b, n, d)
        # Softmax per query row; the row maximum only stabilises exp(), so no gradient.
        peak = scores.new_full((b * n, heads), -math.inf).scatter_reduce(
            0, query[:, None].expand_as(scores), scores.detach(), "amax")
        weight = (scores - peak.index_select(0, query)).exp()
        total = weight.new_zeros(b * n, heads).index_add(0, query, weight)
        weight = F.dropout(weight / total.index_select(0, query), self.dropout, self.training)
        message = v.index_select(0, key).view(-1, heads, width) * weight[..., None]
        return h.new_zeros(b * n, heads, width).index_add(0, query, message).view(b, n, d)

    def forward(self, h: torch.Tensor, allowed: torch.Tensor, degree: torch.Tensor,
                pairs: torch.Tensor | None = None) -> torch.Tensor:
        u = self.norm_attn(h)
        heads = self.attend(u, allowed) if pairs is None else self.attend_neighbours(u, pairs)
        # Layer scale folded into the output projection (see GroupedFeedForward.forward).
        h = h + F.linear(heads, self.scale_attn[:, None] * self.proj.weight, self.scale_attn * self.proj.bias)
        u = self.norm_ffn(h)
        if self.gate is not None:
            u = u * self.gate(degree)
        return h + self.ffn(u, self.scale_ffn)


class ModelOutput(NamedTuple):
    """A graph model's output with its per-node part (`forward_with_nodes`)."""
    log_ms: torch.Tensor  # [B] graph log-latency, what forward returns
    # [B, N] log ms of each node's kernel: the terms of a "kernels" readout, or while
    # training on kernel times, the auxiliary node output. Padded nodes hold no meaning.
    node_log_ms: torch.Tensor


def kernel_time_head(d: int, hidden: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, 1))


# What the cost prior charges for one transcendental evaluation, in FLOP-or-byte units: a
# scalar libm call against vectorised multiply-adds. Fixed: learnt along with the network, the
# price drifted wherever the few kernels with transcendentals pulled it and training was unstable.
TRANSCENDENTAL_COST = 32.0


def node_log_cost(x: torch.Tensor, prior: dict) -> torch.Tensor:
    """[B, N] ln(FLOPs + bytes [+ price x transcendental evaluations]) of each node (cost_prior),
    less the training nodes' mean, decoded from the tokens [B, N, D]."""
    log_e = {name: torch.atan2(x[..., sin], x[..., cos]) / prior["frequency"] * math.log(2.0)
             for name, (sin, cos) in prior["columns"].items()}
    if "transcendentals" in log_e:
        log_e["transcendentals"] = log_e["transcendentals"] + math.log(prior["transcendental_cost"])
    return torch.logsumexp(torch.stack(list(log_e.values())), dim=0) - prior.get("offset", 0.0)


def add_kernel_times(rest_log_ms: torch.Tensor, kernel_log_ms: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log(exp(rest) + sum of exp(kernel) over valid nodes): [B] from [B] and [B, N]."""
    kernels = kernel_log_ms.masked_fill(~mask, -math.inf)
    return torch.logsumexp(torch.cat([rest_log_ms[:, None], kernels], dim=1), dim=1)


def start_at_constant(model: nn.Module, log_ms: float, mean_nodes: float) -> None:
    """Make every graph's first prediction the constant `log_ms`; with a kernel readout the
    kernels' sum and the remainder start with half of it each."""
    outputs = [(model.head[-1], log_ms)]
    if getattr(model, "kernel_head", None) is not None:
        half = log_ms - math.log(2.0)
        outputs = [(model.head[-1], half), (model.kernel_head[-1], half - math.log(max(mean_nodes, 1.0)))]
    with torch.no_grad():
        for layer, value in outputs:
            layer.weight.zero_()
            layer.bias.fill_(value)


def node_output(head: nn.Module | None, h: torch.Tensor) -> torch.Tensor:
    if head is None:
        raise ValueError("this model has no node head: it exists only while training on kernel times")
    return head(h).squeeze(-1)


def regression_head(d: int, static_dim: int, hidden: int, dropout: float, use_static: bool):
    """Static-feature encoder and MLP head shared by every graph model here, so that
    baselines differ from NAR-Former V2 only in how node states are computed."""
    static_mlp = nn.Sequential(nn.Linear(static_dim, d), nn.ReLU(), nn.Dropout(dropout)) if use_static else None
    head = nn.Sequential(
        nn.Linear(2 * d if use_static else d, hidden), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden, 1),
    )
    return static_mlp, head


class GraphLatencyModel(nn.Module):
    """What every whole-graph network here offers: `forward` for the latency alone, and
    `forward_with_nodes` for it with the per-node part. Subclasses write `_outputs` once."""

    def forward(self, x: torch.Tensor, adj: torch.Tensor, degree: torch.Tensor,
                static: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Graph log-latency [B]."""
        return self._outputs(x, adj, degree, static, mask, nodes=False).log_ms

    def forward_with_nodes(self, x: torch.Tensor, adj: torch.Tensor, degree: torch.Tensor,
                           static: torch.Tensor, mask: torch.Tensor) -> ModelOutput:
        """Graph log-latency and per-node log kernel ms (ModelOutput)."""
        return self._outputs(x, adj, degree, static, mask, nodes=True)

    def _outputs(self, x, adj, degree, static, mask, nodes: bool) -> ModelOutput:
        raise NotImplementedError


class NARFormerV2(GraphLatencyModel):
    """Batched graphs in (see tokenizer.collate), predicted log-latency (log ms) out.

    Log space because latencies span orders of magnitude: exp() of the output is
    positive by construction and a relative error is a difference there.
    """

    def __init__(self, cfg: NARFormerV2Config):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        d = cfg.d_model
        self.embed = nn.Sequential(nn.Linear(cfg.token_dim, d), nn.Dropout(cfg.dropout))
        self.blocks = nn.ModuleList(EncoderBlock(cfg) for _ in range(cfg.n_layers))
        self.norm_out = nn.LayerNorm(d)
        self.static_mlp, self.head = regression_head(d, cfg.static_dim, cfg.head_hidden, cfg.dropout,
                                                     cfg.use_static)
        self.kernel_head = kernel_time_head(d, cfg.head_hidden) if cfg.readout == "kernels" else None
        # Training-only auxiliary output (train's node_weight); never part of a checkpoint.
        self.node_out: nn.Module | None = None

    def block_states(self, x: torch.Tensor, adj: torch.Tensor, degree: torch.Tensor,
                     mask: torch.Tensor) -> list[torch.Tensor]:
        """Node states after each encoder block (readouts may fuse several of them); with no
        blocks, the embedded tokens: each node then sees only its own kernel, not its neighbours."""
        n = x.shape[1]
        keys = mask[:, None, :]
        allowed = (adj & keys) if self.cfg.use_graph_attention else keys.expand(-1, n, -1)
        # Padded rows would otherwise have nothing to attend to and softmax to NaN;
        # they are dropped at readout, and valid rows never see padded keys.
        allowed = allowed | torch.eye(n, dtype=torch.bool, device=x.device)

        # Graph-aided attention is sparse: list the allowed pairs once for all blocks.
        pairs = allowed.nonzero() if self.cfg.use_graph_attention else None
        h = self.embed(x)
        states = []
        for block in self.blocks:
            h = block(h, allowed, degree, pairs)
            states.append(h)
        return states or [h]

    @staticmethod
    def pool(h: torch.Tensor, norm: nn.Module, mask: torch.Tensor) -> torch.Tensor:
        return NARFormerV2.sum_valid(norm(h), mask)

    @staticmethod
    def sum_valid(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (h * mask[..., None]).sum(dim=1)

    def regress(self, pooled: torch.Tensor, static: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Pooled node states (summed over nodes) and static features to log-latency."""
        if self.cfg.readout in ("mean", "kernels"):
            pooled = pooled / mask.sum(dim=1, keepdim=True).clamp(min=1)
        if self.cfg.use_static:
            pooled = torch.cat([pooled, self.static_mlp(static)], dim=-1)
        return self.head(pooled).squeeze(-1)

    def _outputs(self, x, adj, degree, static, mask, nodes: bool) -> ModelOutput:
        last = self.block_states(x, adj, degree, mask)[-1]
        # One normalisation serves the pooled readout and the per-kernel head.
        normed = self.norm_out(last)
        graph = self.regress(self.sum_valid(normed, mask), static, mask)
        if self.kernel_head is not None:
            kernels = self.kernel_head(normed).squeeze(-1)
            if self.cfg.cost_prior:
                kernels = kernels + node_log_cost(x, self.cfg.cost_prior)
            return ModelOutput(add_kernel_times(graph, kernels, mask), kernels)
        # The auxiliary node head costs a pass over every node: only when asked for.
        return ModelOutput(graph, node_output(self.node_out, last) if nodes else None)
