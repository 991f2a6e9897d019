"""The model and training settings the latency report validated, by name.

`nar-tvm train` and `benchmarks/latency_report.py` both start from these, so a user who
trains on their own platform gets the recipe whose numbers the report shows.
"""
from __future__ import annotations

from dataclasses import replace

from .model import READOUTS, NARFormerV2Config
from .nnlp import NNLP_READOUTS, NNLPConfig
from .train import TrainConfig

# The configs' defaults are the recipes (their docstrings say why), so that a model built
# from defaults is the one the report validated.
NAR_FORMER_V2 = NARFormerV2Config()
PLAIN_TRANSFORMER = replace(NAR_FORMER_V2, use_graph_attention=False, use_degree_gate=False, grouped_ffn=False)
NNLP_GRAPHSAGE = NNLPConfig()

# Larger budgets, chosen on validation by benchmarks/recipe_sweep.md (one width x depth grid
# searched for both networks): each gains there, at 2-4x the training time of its recipe above.
NAR_FORMER_V2_LARGE = replace(NAR_FORMER_V2, d_model=128, head_hidden=128, n_layers=4)
NNLP_LARGE = replace(NNLP_GRAPHSAGE, hidden=128, head_hidden=128)

MODELS = {"nar-former-v2": NAR_FORMER_V2, "transformer": PLAIN_TRANSFORMER, "nnlp": NNLP_GRAPHSAGE}

# latency_report_notes.md has the validation runs behind TrainConfig's defaults.
TRAINING = TrainConfig()


def model_config(name: str, width: int | None = None, layers: int | None = None, readout: str | None = None):
    """A named recipe's model config, optionally resized (`width`: d_model or hidden size) or
    given another readout ("kernels": the sum of per-node kernel times, model.READOUTS)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    cfg = MODELS[name]
    if width is not None:
        cfg = replace(cfg, **({"hidden": width, "head_hidden": width} if isinstance(cfg, NNLPConfig)
                              else {"d_model": width, "head_hidden": width}))
    if layers is not None:
        cfg = replace(cfg, n_layers=layers)
    if readout is not None:
        allowed = NNLP_READOUTS if isinstance(cfg, NNLPConfig) else READOUTS
        if readout not in allowed:
            raise ValueError(f"model {name!r} has no readout {readout!r}; choose from {list(allowed)}")
        cfg = replace(cfg, readout=readout)
    return cfg
