"""NNLP's latency predictor (NNLQP, Liu et al. 2022): GraphSAGE over operator tokens.

The GNN NAR-Former V2 is compared against. It is a full cost model here, not only a
baseline: it reads the same tokens, trains through the same loop and loads from the
same checkpoints, so whichever of the two predicts better on a platform can ship.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .model import GraphLatencyModel, ModelOutput, add_kernel_times, kernel_time_head, node_output, regression_head


NNLP_READOUTS = ("sum", "kernels")


@dataclass
class NNLPConfig:
    """The defaults are the validated recipe (recipes.NNLP_GRAPHSAGE), sized like
    NARFormerV2Config's; see there for how checkpoints keep the values they were trained with."""
    # Input widths come from the tokenizer; train() fills them in.
    token_dim: int | None = None
    static_dim: int | None = None
    hidden: int = 64
    n_layers: int = 2
    head_hidden: int = 64
    dropout: float = 0.0
    use_static: bool = True
    # "sum": NNLQP's sum pooling; "kernels": as NARFormerV2Config's (sum of per-node kernel times).
    readout: str = "sum"

    def validate(self) -> None:
        if self.token_dim is None or self.static_dim is None:
            raise ValueError("token_dim and static_dim must be set (from the tokenizer) to build a model")
        if self.readout not in NNLP_READOUTS:
            raise ValueError(f"readout must be one of {NNLP_READOUTS}, got {self.readout!r}")


class SAGELayer(nn.Module):
    """GraphSAGE with mean aggregation: relu(W_self h_i + W_neigh mean_{j in N(i)} h_j)."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.self_lin = nn.Linear(d_in, d_out)
        self.neigh_lin = nn.Linear(d_in, d_out, bias=False)

    def forward(self, h: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        """`h` [nodes, d] of the whole batch; the mean runs over the (src -> dst) neighbour pairs.
        A scatter over the few pairs a DNN graph has, not a dense [B, N, N] product."""
        total = torch.zeros_like(h).index_add_(0, dst, h.index_select(0, src))
        return torch.relu(self.self_lin(h) + self.neigh_lin(total / count))


class NNLP(GraphLatencyModel):
    """NNLQP's predictor: GraphSAGE over the node tokens, sum pooling, static features.

    Takes the same batched tensors as NARFormerV2 (tokenizer.collate) and, like it,
    returns log-latency (log ms). Neighbours are predecessors and successors, the
    neighbourhood NAR-Former V2's graph-aided attention uses.
    """

    def __init__(self, cfg: NNLPConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        d = cfg.hidden
        self.embed = nn.Linear(cfg.token_dim, d)
        self.layers = nn.ModuleList(SAGELayer(d, d) for _ in range(cfg.n_layers))
        self.dropout = nn.Dropout(cfg.dropout)
        self.static_mlp, self.head = regression_head(d, cfg.static_dim, cfg.head_hidden, cfg.dropout,
                                                     cfg.use_static)
        self.kernel_head = kernel_time_head(d, cfg.head_hidden) if cfg.readout == "kernels" else None
        self.node_out: nn.Module | None = None  # as NARFormerV2's

    def _outputs(self, x, adj, degree, static, mask, nodes: bool) -> ModelOutput:
        b, n, _ = x.shape
        # collate's adjacency includes self loops (for attention); SAGE keeps self apart.
        graph, node, other = (adj & mask[:, None, :] & ~torch.eye(n, dtype=torch.bool, device=x.device)).nonzero().T
        dst, src = graph * n + node, graph * n + other
        count = torch.bincount(dst, minlength=b * n).clamp(min=1).unsqueeze(-1).to(x.dtype)
        h = self.embed(x).flatten(0, 1)
        for layer in self.layers:
            h = self.dropout(layer(h, src, dst, count))
        h = h.view(b, n, -1)
        pooled = (h * mask[..., None]).sum(dim=1)
        if self.cfg.use_static:
            pooled = torch.cat([pooled, self.static_mlp(static)], dim=-1)
        graph = self.head(pooled).squeeze(-1)
        if self.kernel_head is not None:
            kernels = self.kernel_head(h).squeeze(-1)
            return ModelOutput(add_kernel_times(graph, kernels, mask), kernels)
        return ModelOutput(graph, node_output(self.node_out, h) if nodes else None)
