"""The networks a latency predictor can be, by the name checkpoints record them under."""
from __future__ import annotations

from dataclasses import fields

from torch import nn

from .model import NARFormerV2, NARFormerV2Config
from .nnlp import NNLP, NNLPConfig

ARCHITECTURES: dict[str, tuple[type, type]] = {
    "nar-former-v2": (NARFormerV2Config, NARFormerV2),
    "nnlp": (NNLPConfig, NNLP),
}


def architecture_of(cfg) -> str:
    for name, (config_cls, _) in ARCHITECTURES.items():
        if type(cfg) is config_cls:
            return name
    raise TypeError(f"{type(cfg).__name__} is not the config of a known architecture ({sorted(ARCHITECTURES)})")


# The config defaults before they became the validated recipes. A saved config that lacks
# a field was trained with the default of its day, which for these fields is the value
# here, not today's default; fields not listed have never changed their default.
FORMER_DEFAULTS: dict[str, dict] = {
    "nar-former-v2": {"d_model": 128, "head_hidden": 128, "dropout": 0.05, "readout": "sum"},
    "nnlp": {"hidden": 128, "head_hidden": 128, "dropout": 0.05},
}


def make_config(architecture: str, values: dict):
    """The config of `architecture` from saved values; a missing field takes the value a
    model saved without it was trained with (FORMER_DEFAULTS). Unknown names and fields
    are errors."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; known: {sorted(ARCHITECTURES)}")
    config_cls = ARCHITECTURES[architecture][0]
    unknown = set(values) - {f.name for f in fields(config_cls)}
    if unknown:
        raise ValueError(f"{architecture} config has unknown fields {sorted(unknown)}")
    return config_cls(**{**FORMER_DEFAULTS[architecture], **values})


def build_model(cfg) -> nn.Module:
    return ARCHITECTURES[architecture_of(cfg)][1](cfg)


def state_width(cfg) -> int:
    """Width of the node states the network computes (what a per-node head reads)."""
    return cfg.hidden if isinstance(cfg, NNLPConfig) else cfg.d_model
