"""Seeded architecture zoo: variants of the ten model families of NNLQP.

NNLQP built its dataset by taking torchvision architectures and varying depth, widths,
kernel sizes, expansion ratios, SE blocks and input resolution. This module does the same,
reproducibly: `generate(family, seed)` samples every choice from an RNG keyed on
`"{family}:{seed}"` and records it in `ZooModel.params`; the model is then a pure function
of those params, so a stored params dict is enough to rebuild the network.

Sizes are chosen for *untuned* TVM on one CPU thread (about 70x slower than torch): small
resolutions and widths keep a typical variant in the 5-150 ms range and its compile in a
few seconds. Models are batch 1, float32, in eval mode, and use only ops that torch's legacy
ONNX exporter writes with static shapes (hence `torch.flatten`, global pooling, and
classifiers sized from the real feature map instead of torchvision's adaptive pooling).
"""
from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .cost_model.nb201_space import NB201_OPS, nasbench201_cells, parse_nb201_cell  # noqa: F401 - re-exported

FAMILIES = (
    "resnet",
    "vgg",
    "mobilenetv2",
    "mobilenetv3",
    "efficientnet",
    "mnasnet",
    "alexnet",
    "squeezenet",
    "googlenet",
    "nasbench201",
)

NUM_CLASSES = (10, 100, 1000)

# ----------------------------------------------------------------------------------------
# Shared building blocks
# ----------------------------------------------------------------------------------------

_ACTIVATIONS = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "hswish": nn.Hardswish,
    "hsigmoid": nn.Hardsigmoid,
    "silu": nn.SiLU,
    "sigmoid": nn.Sigmoid,
}


def activation(name: str | None) -> nn.Module:
    return nn.Identity() if name is None else _ACTIVATIONS[name]()


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a scaled channel count the way torchvision does, never losing more than 10%."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def conv_bn_act(
    cin: int,
    cout: int,
    kernel: int,
    stride: int = 1,
    *,
    groups: int = 1,
    act: str | None = "relu",
    bn: bool = True,
    padding: int | None = None,
) -> nn.Sequential:
    # With BN the conv bias is redundant (BN's shift absorbs it), as in every torchvision model.
    layers = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2 if padding is None else padding,
                  groups=groups, bias=not bn)
    ]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    if act is not None:
        layers.append(activation(act))
    return nn.Sequential(*layers)


class Residual(nn.Module):
    """`act(body(x) + shortcut(x))`: the residual add of ResNet, inverted residuals and NB201."""

    def __init__(self, body: nn.Module, shortcut: nn.Module | None = None,
                 act: str | None = None):
        super().__init__()
        self.body = body
        self.shortcut = nn.Identity() if shortcut is None else shortcut
        self.act = activation(act)

    def forward(self, x):
        return self.act(self.body(x) + self.shortcut(x))


class SqueezeExcite(nn.Module):
    """Channel gating of MobileNetV3, EfficientNet and MnasNet-A1 (they differ in act/gate)."""

    def __init__(self, channels: int, squeeze: int, act: str, gate: str):
        super().__init__()
        self.scale = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, squeeze, 1),
            activation(act),
            nn.Conv2d(squeeze, channels, 1),
            activation(gate),
        )

    def forward(self, x):
        return x * self.scale(x)


def inverted_residual(cin: int, cout: int, kernel: int, stride: int, expand: float, act: str,
                      se_ratio: float, se_act: str, se_gate: str) -> nn.Module:
    """MobileNetV2 block (expand 1x1, depthwise kxk, optional SE, linear project 1x1).

    `se_ratio` is relative to the expanded width; 0 disables SE.
    """
    hidden = cin if expand == 1 else make_divisible(cin * expand)
    layers = []
    if hidden != cin:
        layers.append(conv_bn_act(cin, hidden, 1, act=act))
    layers.append(conv_bn_act(hidden, hidden, kernel, stride, groups=hidden, act=act))
    if se_ratio:
        layers.append(SqueezeExcite(hidden, make_divisible(hidden * se_ratio), se_act, se_gate))
    layers.append(conv_bn_act(hidden, cout, 1, act=None))
    body = nn.Sequential(*layers)
    return Residual(body) if stride == 1 and cin == cout else body


def classifier(cin: int, hidden: list[int], num_classes: int, act: str = "relu") -> nn.Sequential:
    # Dropout is left out everywhere: it is the identity in eval mode and absent from exports.
    layers = []
    for width in hidden:
        layers += [nn.Linear(cin, width), activation(act)]
        cin = width
    layers.append(nn.Linear(cin, num_classes))
    return nn.Sequential(*layers)


def global_pool() -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))


def network(*layers: nn.Module) -> nn.Sequential:
    """The whole model in eval mode, with BatchNorm statistics drawn like a trained network's.

    Default BN (identity statistics) folds into all-zero conv biases, which the ONNX exporter
    then deduplicates into shared constants and Identity nodes no trained model would show.
    """
    model = nn.Sequential(*layers)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.normal_(m.bias, 0.0, 0.1)
            nn.init.normal_(m.running_mean, 0.0, 0.1)
            nn.init.uniform_(m.running_var, 0.5, 1.5)
    return model.eval()


def _flat_features(features: nn.Module, resolution: int) -> int:
    """Flattened size of `features` on a square input, for classifiers that see the whole map."""
    with torch.no_grad():
        return features(torch.zeros(1, 3, resolution, resolution)).flatten(1).shape[1]


# ----------------------------------------------------------------------------------------
# Family samplers (all randomness) and builders (pure functions of the params)
# ----------------------------------------------------------------------------------------


def _common(rng: random.Random, resolutions) -> dict:
    return {"resolution": rng.choice(resolutions), "batch": 1,
            "num_classes": rng.choice(NUM_CLASSES)}


def _sample_resnet(rng):
    p = _common(rng, (64, 80, 96, 112))
    p["block"] = rng.choice(("basic", "bottleneck"))
    base = rng.choice((12, 16, 24, 32))
    p["stem_width"] = base
    p["widths"] = [base * 2**i for i in range(4)]
    # Upper bounds are ResNet-34/50's stage depths; ResNet-18's (2, 2, 2, 2) lies inside.
    p["depths"] = [rng.randint(1, d) for d in (3, 4, 6, 3)]
    # Mostly ResNet's 3x3; 5x5 stages add the kernel-size axis NNLQP varied.
    p["kernels"] = [rng.choice((3, 3, 5)) for _ in range(4)]
    p["expansion"] = 4 if p["block"] == "bottleneck" else 1
    return p


def _resnet_block(cin, width, expansion, kernel, stride, bottleneck):
    cout = width * expansion
    if bottleneck:
        body = nn.Sequential(conv_bn_act(cin, width, 1),
                             conv_bn_act(width, width, kernel, stride),
                             conv_bn_act(width, cout, 1, act=None))
    else:
        body = nn.Sequential(conv_bn_act(cin, width, kernel, stride),
                             conv_bn_act(width, cout, kernel, act=None))
    shortcut = None
    if stride != 1 or cin != cout:
        shortcut = conv_bn_act(cin, cout, 1, stride, act=None)
    return Residual(body, shortcut, act="relu")


def _build_resnet(p):
    layers = [conv_bn_act(3, p["stem_width"], 7, 2), nn.MaxPool2d(3, 2, 1)]
    cin = p["stem_width"]
    for stage, (width, depth, kernel) in enumerate(zip(p["widths"], p["depths"], p["kernels"])):
        for i in range(depth):
            stride = 2 if stage > 0 and i == 0 else 1
            layers.append(_resnet_block(cin, width, p["expansion"], kernel, stride,
                                        p["block"] == "bottleneck"))
            cin = width * p["expansion"]
    return network(*layers, global_pool(), classifier(cin, [], p["num_classes"]))


def _sample_vgg(rng):
    p = _common(rng, (32, 48, 64))
    base = rng.choice((8, 12, 16, 24))
    p["widths"] = [base, 2 * base, 4 * base, 8 * base, 8 * base]
    # VGG-11..19 use 1-2 convs in the first two stages and 2-4 in the last three; going down
    # to 1 there gives shallower nets than VGG-11 for the cheap end of the range.
    p["convs"] = [rng.randint(1, 2), rng.randint(1, 2)] + [rng.randint(1, 4) for _ in range(3)]
    p["batch_norm"] = rng.random() < 0.5
    # Untuned TVM runs dense layers as naive loops (~10 ns per MAC): torchvision's 4096-wide
    # classifier alone would take over a second.
    p["hidden"] = [rng.choice((128, 256, 512, 1024))] * 2
    return p


def _build_vgg(p):
    layers, cin = [], 3
    for width, convs in zip(p["widths"], p["convs"]):
        for _ in range(convs):
            layers.append(conv_bn_act(cin, width, 3, bn=p["batch_norm"]))
            cin = width
        layers.append(nn.MaxPool2d(2, 2))
    features = nn.Sequential(*layers, nn.Flatten(1))
    return network(features, classifier(_flat_features(features, p["resolution"]),
                                        p["hidden"], p["num_classes"]))


def _sample_alexnet(rng):
    p = _common(rng, (64, 96, 112, 128))
    width = rng.choice((0.25, 0.375, 0.5, 0.75))
    p["width_mult"] = width
    p["widths"] = [make_divisible(c * width) for c in (64, 192, 384, 256, 256)]
    p["stem_kernel"] = rng.choice((7, 9, 11))
    p["hidden"] = [rng.choice((256, 512, 1024))] * 2
    return p


def _build_alexnet(p):
    w = p["widths"]
    features = nn.Sequential(
        conv_bn_act(3, w[0], p["stem_kernel"], 4, bn=False, padding=2),
        nn.MaxPool2d(3, 2),
        conv_bn_act(w[0], w[1], 5, bn=False),
        nn.MaxPool2d(3, 2),
        conv_bn_act(w[1], w[2], 3, bn=False),
        conv_bn_act(w[2], w[3], 3, bn=False),
        conv_bn_act(w[3], w[4], 3, bn=False),
        nn.MaxPool2d(3, 2),
        nn.Flatten(1),
    )
    return network(features, classifier(_flat_features(features, p["resolution"]),
                                        p["hidden"], p["num_classes"]))


class Fire(nn.Module):
    def __init__(self, cin: int, squeeze: int, e1x1: int, e3x3: int):
        super().__init__()
        self.squeeze = conv_bn_act(cin, squeeze, 1, bn=False)
        self.expand1x1 = conv_bn_act(squeeze, e1x1, 1, bn=False)
        self.expand3x3 = conv_bn_act(squeeze, e3x3, 3, bn=False)

    def forward(self, x):
        x = self.squeeze(x)
        return torch.cat([self.expand1x1(x), self.expand3x3(x)], 1)


def _sample_squeezenet(rng):
    p = _common(rng, (64, 80, 96, 112))
    # The SqueezeNet paper's own design space: fire i expands to base_e + incr_e * (i // 2)
    # channels, a pct_3x3 share of them 3x3, squeezed by squeeze_ratio first.
    p["version"] = rng.choice(("1_0", "1_1"))
    p["base_e"] = rng.choice((32, 64, 96, 128))
    p["incr_e"] = rng.choice((32, 64, 96))
    p["pct_3x3"] = rng.choice((0.25, 0.5, 0.75))
    p["squeeze_ratio"] = rng.choice((0.125, 0.25, 0.5))
    fires = []
    for i in range(8):
        e = p["base_e"] + p["incr_e"] * (i // 2)
        e3x3 = make_divisible(e * p["pct_3x3"])
        fires.append([make_divisible(e * p["squeeze_ratio"]), e - e3x3, e3x3])
    p["fires"] = fires
    p["stem_kernel"], p["stem_width"] = (7, 96) if p["version"] == "1_0" else (3, 64)
    # v1.1 pools earlier, which is most of its 2.4x saving over v1.0.
    p["pool_after"] = [2, 6] if p["version"] == "1_0" else [1, 3]
    return p


def _build_squeezenet(p):
    layers = [conv_bn_act(3, p["stem_width"], p["stem_kernel"], 2, bn=False, padding=0),
              nn.MaxPool2d(3, 2, ceil_mode=True)]
    cin = p["stem_width"]
    for i, (squeeze, e1x1, e3x3) in enumerate(p["fires"]):
        layers.append(Fire(cin, squeeze, e1x1, e3x3))
        cin = e1x1 + e3x3
        if i in p["pool_after"]:
            layers.append(nn.MaxPool2d(3, 2, ceil_mode=True))
    # SqueezeNet classifies with a 1x1 conv to num_classes before pooling, not a Linear.
    return network(*layers, conv_bn_act(cin, p["num_classes"], 1, bn=False), global_pool())


class Inception(nn.Module):
    def __init__(self, cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, pool: int,
                 big_kernel: int):
        super().__init__()
        self.branches = nn.ModuleList([
            conv_bn_act(cin, c1, 1),
            nn.Sequential(conv_bn_act(cin, c3r, 1), conv_bn_act(c3r, c3, 3)),
            nn.Sequential(conv_bn_act(cin, c5r, 1), conv_bn_act(c5r, c5, big_kernel)),
            nn.Sequential(nn.MaxPool2d(3, 1, 1), conv_bn_act(cin, pool, 1)),
        ])

    def forward(self, x):
        return torch.cat([branch(x) for branch in self.branches], 1)


# torchvision's GoogLeNet table: (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj) per block.
_INCEPTION_TABLE = (
    ((64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64)),
    ((192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
     (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128)),
    ((256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128)),
)


def _sample_googlenet(rng):
    p = _common(rng, (64, 80, 96, 112))
    width = rng.choice((0.25, 0.375, 0.5, 0.75))
    p["width_mult"] = width
    p["stem_widths"] = [make_divisible(c * width) for c in (64, 64, 192)]
    # torchvision's branch 3 is 3x3 where the paper has 5x5; both are in the space.
    p["big_kernel"] = rng.choice((3, 5))
    p["blocks"] = [
        [[make_divisible(c * width) for c in block] for block in stage[:rng.randint(1, len(stage))]]
        for stage in _INCEPTION_TABLE
    ]
    return p


def _build_googlenet(p):
    s = p["stem_widths"]
    layers = [conv_bn_act(3, s[0], 7, 2), nn.MaxPool2d(3, 2, ceil_mode=True),
              conv_bn_act(s[0], s[1], 1), conv_bn_act(s[1], s[2], 3),
              nn.MaxPool2d(3, 2, ceil_mode=True)]
    cin = s[2]
    for stage, blocks in enumerate(p["blocks"]):
        if stage > 0:
            layers.append(nn.MaxPool2d(3, 2, ceil_mode=True))
        for block in blocks:
            layers.append(Inception(cin, *block, big_kernel=p["big_kernel"]))
            cin = block[0] + block[2] + block[4] + block[5]
    return network(*layers, global_pool(), classifier(cin, [], p["num_classes"]))


# Mobile families share one builder; each template lists its stages as
# (out channels, depth, first stride, kernel, expansion, SE ratio, activation). Stage 0 is the
# expansion-1 block right after the stem and is kept as is; the samplers vary the others.
_MOBILENETV2 = (
    (16, 1, 1, 3, 1, 0.0, "relu6"), (24, 2, 2, 3, 6, 0.0, "relu6"),
    (32, 3, 2, 3, 6, 0.0, "relu6"), (64, 4, 2, 3, 6, 0.0, "relu6"),
    (96, 3, 1, 3, 6, 0.0, "relu6"), (160, 3, 2, 3, 6, 0.0, "relu6"),
    (320, 1, 1, 3, 6, 0.0, "relu6"),
)
# torchvision's per-block expanded widths (64, 72, 120, 240, 200, ...) as per-stage ratios.
_MOBILENETV3 = {
    "large": ((16, 1, 1, 3, 1, 0.0, "relu"), (24, 2, 2, 3, 4, 0.0, "relu"),
              (40, 3, 2, 5, 3, 0.25, "relu"), (80, 4, 2, 3, 3, 0.0, "hswish"),
              (112, 2, 1, 3, 6, 0.25, "hswish"), (160, 3, 2, 5, 6, 0.25, "hswish")),
    "small": ((16, 1, 2, 3, 1, 0.25, "relu"), (24, 2, 2, 3, 4, 0.0, "relu"),
              (40, 3, 2, 5, 6, 0.25, "hswish"), (48, 2, 1, 5, 3, 0.25, "hswish"),
              (96, 3, 2, 5, 6, 0.25, "hswish")),
}
# SE ratios here are relative to the expanded width; EfficientNet squeezes to a quarter of
# the block *input*, so its sampler divides by the expansion.
_EFFICIENTNET_B0 = (
    (16, 1, 1, 3, 1, 0.25, "silu"), (24, 2, 2, 3, 6, 0.25, "silu"),
    (40, 2, 2, 5, 6, 0.25, "silu"), (80, 3, 2, 3, 6, 0.25, "silu"),
    (112, 3, 1, 5, 6, 0.25, "silu"), (192, 4, 2, 5, 6, 0.25, "silu"),
    (320, 1, 1, 3, 6, 0.25, "silu"),
)
_MNASNET_B1 = (
    (16, 1, 1, 3, 1, 0.0, "relu"), (24, 3, 2, 3, 3, 0.0, "relu"),
    (40, 3, 2, 5, 3, 0.0, "relu"), (80, 3, 2, 5, 6, 0.0, "relu"),
    (96, 2, 1, 3, 6, 0.0, "relu"), (192, 4, 2, 5, 6, 0.0, "relu"),
    (320, 1, 1, 3, 6, 0.0, "relu"),
)


def _stage(out, depth, stride, kernel, expand, se_ratio, act):
    return {"out": out, "depth": depth, "stride": stride, "kernel": kernel, "expand": expand,
            "se_ratio": se_ratio, "act": act}


def _depth_around(rng, depth):
    return rng.randint(max(1, depth - 1), depth + 1)


def _sample_mobilenetv2(rng):
    p = _common(rng, (64, 96, 112, 128))
    width = rng.choice((0.35, 0.5, 0.75, 1.0))
    p.update(width_mult=width, act="relu6", se_act="relu", se_gate="sigmoid", hidden=[],
             stem=make_divisible(32 * width), head=make_divisible(1280 * max(1.0, width)))
    stages = []
    for i, (out, depth, stride, kernel, expand, se, act) in enumerate(_MOBILENETV2):
        if i > 0:
            depth = _depth_around(rng, depth)
            kernel, expand = rng.choice((3, 5, 7)), rng.choice((3, 4, 6))
        stages.append(_stage(make_divisible(out * width), depth, stride, kernel, expand, se, act))
    p["stages"] = stages
    return p


def _sample_mobilenetv3(rng):
    p = _common(rng, (64, 96, 112, 128, 160))
    variant = rng.choice(("large", "small"))
    width = rng.choice((0.35, 0.5, 0.75, 1.0))
    template = _MOBILENETV3[variant]
    p.update(variant=variant, width_mult=width, act="hswish", se_act="relu", se_gate="hsigmoid",
             stem=make_divisible(16 * width), head=6 * make_divisible(template[-1][0] * width),
             hidden=[make_divisible((1280 if variant == "large" else 1024) * width)])
    stages = []
    for i, (out, depth, stride, kernel, expand, se, act) in enumerate(template):
        if i > 0:
            depth = _depth_around(rng, depth)
            kernel, expand = rng.choice((3, 5, 7)), rng.choice((3, 4, 6))
            se = rng.choice((0.0, 0.25))
        stages.append(_stage(make_divisible(out * width), depth, stride, kernel, expand, se, act))
    p["stages"] = stages
    return p


def _sample_efficientnet(rng):
    p = _common(rng, (64, 96, 112, 128))
    # EfficientNet's own axes: compound width and depth multipliers on top of B0.
    width = rng.choice((0.25, 0.5, 0.75, 1.0))
    depth_mult = rng.choice((0.5, 0.75, 1.0, 1.25))
    p.update(width_mult=width, depth_mult=depth_mult, act="silu", se_act="silu",
             se_gate="sigmoid", hidden=[], stem=make_divisible(32 * width),
             head=make_divisible(1280 * width))
    stages = []
    for i, (out, depth, stride, kernel, expand, se, act) in enumerate(_EFFICIENTNET_B0):
        if i > 0:
            kernel, expand = rng.choice((3, 5)), rng.choice((4, 6))
        se_ratio = se / expand if rng.random() < 0.75 else 0.0
        stages.append(_stage(make_divisible(out * width), math.ceil(depth * depth_mult), stride,
                             kernel, expand, se_ratio, act))
    p["stages"] = stages
    return p


def _sample_mnasnet(rng):
    p = _common(rng, (64, 96, 112, 128))
    # MnasNet's factorised search space: per stage kernel {3,5}, expansion {3,6},
    # SE {0,0.25} and layer count -1/0/+1 around the B1 template.
    width = rng.choice((0.5, 0.75, 1.0))
    p.update(width_mult=width, act="relu", se_act="relu", se_gate="sigmoid", hidden=[],
             stem=make_divisible(32 * width), head=1280)
    stages = []
    for i, (out, depth, stride, kernel, expand, se, act) in enumerate(_MNASNET_B1):
        if i > 0:
            depth = _depth_around(rng, depth)
            kernel, expand, se = rng.choice((3, 5)), rng.choice((3, 6)), rng.choice((0.0, 0.25))
        stages.append(_stage(make_divisible(out * width), depth, stride, kernel, expand, se, act))
    p["stages"] = stages
    return p


def _build_mobile(p):
    layers = [conv_bn_act(3, p["stem"], 3, 2, act=p["act"])]
    cin = p["stem"]
    for s in p["stages"]:
        for i in range(s["depth"]):
            stride = s["stride"] if i == 0 else 1
            layers.append(inverted_residual(cin, s["out"], s["kernel"], stride, s["expand"],
                                            s["act"], s["se_ratio"], p["se_act"], p["se_gate"]))
            cin = s["out"]
    return network(*layers, conv_bn_act(cin, p["head"], 1, act=p["act"]), global_pool(),
                   classifier(p["head"], p["hidden"], p["num_classes"], act=p["act"]))


# ----------------------------------------------------------------------------------------
# NAS-Bench-201
# ----------------------------------------------------------------------------------------

def _nb201_edge(op: str, channels: int) -> nn.Module:
    if op == "skip_connect":
        return nn.Identity()
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, 1, 1, count_include_pad=False)
    kernel = 3 if op == "nor_conv_3x3" else 1
    return nn.Sequential(nn.ReLU(), conv_bn_act(channels, channels, kernel, act=None))


class NB201Cell(nn.Module):
    """A NAS-Bench-201 cell holding only the edges that can change its output.

    `none` edges, and edges leaving a node cut off from the input or entering one the output
    does not depend on, contribute nothing (NB201 computes them and multiplies by zero), so
    they are not built: the module mirrors the computation whose latency matters.
    """

    def __init__(self, cell: str, channels: int):
        super().__init__()
        nodes = parse_nb201_cell(cell)
        live = [True]
        for edges in nodes:
            live.append(any(op != "none" and live[src] for op, src in edges))
        incoming = [[(op, src) for op, src in edges if op != "none" and live[src]]
                    for edges in nodes]
        needed = [False] * len(nodes) + [True]
        for j in range(len(nodes), 0, -1):
            for _, src in incoming[j - 1] if needed[j] else ():
                needed[src] = True
        # Per node, the sources of its kept edges; self.edges holds their ops in the same order.
        self.plan = [[src for _, src in inc] if needed[j] else []
                     for j, inc in enumerate(incoming, start=1)]
        self.edges = nn.ModuleList(_nb201_edge(op, channels)
                                   for j, inc in enumerate(incoming, start=1) if needed[j]
                                   for op, _ in inc)

    def forward(self, x):
        if not self.plan[-1]:
            # The output is cut off from the input: NB201's Zero op gives x * 0.
            return x.mul(0.0)
        nodes, edges = [x], iter(self.edges)
        for sources in self.plan:
            nodes.append(sum(next(edges)(nodes[src]) for src in sources) if sources else None)
        return nodes[-1]


def _nb201_reduction(cin: int, cout: int) -> Residual:
    # NB201's ResNetBasicblock: ReLU-Conv-BN twice, avgpool + 1x1 shortcut, no final ReLU.
    body = nn.Sequential(nn.ReLU(), conv_bn_act(cin, cout, 3, 2, act=None),
                         nn.ReLU(), conv_bn_act(cout, cout, 3, act=None))
    shortcut = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(cin, cout, 1, bias=False))
    return Residual(body, shortcut)


def nasbench201_network(cell: str, C: int = 16, N: int = 5, num_classes: int = 10) -> nn.Module:
    """The NAS-Bench-201 macro skeleton around `cell`, for 32x32 CIFAR input."""
    layers = [conv_bn_act(3, C, 3, act=None)]
    channels = C
    for stage in range(3):
        if stage > 0:
            layers.append(_nb201_reduction(channels, 2 * channels))
            channels *= 2
        layers += [NB201Cell(cell, channels) for _ in range(N)]
    return network(*layers, nn.BatchNorm2d(channels), nn.ReLU(), global_pool(),
                   nn.Linear(channels, num_classes))


def _sample_nasbench201(rng, csv_path=None):
    arch_index, cell = rng.choice(nasbench201_cells(csv_path))
    # The standard skeleton is kept so latencies line up with published NB201 tables.
    return {"resolution": 32, "batch": 1, "num_classes": 10, "arch_index": arch_index,
            "cell": cell, "C": 16, "N": 5}


def _build_nasbench201(p):
    return nasbench201_network(p["cell"], p["C"], p["N"], p["num_classes"])


# ----------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------

_FAMILY_IMPL = {
    "resnet": (_sample_resnet, _build_resnet),
    "vgg": (_sample_vgg, _build_vgg),
    "mobilenetv2": (_sample_mobilenetv2, _build_mobile),
    "mobilenetv3": (_sample_mobilenetv3, _build_mobile),
    "efficientnet": (_sample_efficientnet, _build_mobile),
    "mnasnet": (_sample_mnasnet, _build_mobile),
    "alexnet": (_sample_alexnet, _build_alexnet),
    "squeezenet": (_sample_squeezenet, _build_squeezenet),
    "googlenet": (_sample_googlenet, _build_googlenet),
    "nasbench201": (_sample_nasbench201, _build_nasbench201),
}


def _derived_seed(family: str, seed: int) -> int:
    # str hashes are salted per process; sha256 keeps weights identical across runs.
    digest = hashlib.sha256(f"{family}:{seed}:torch".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass
class ZooModel:
    name: str
    family: str
    seed: int
    params: dict
    input_shape: tuple

    def build(self) -> nn.Module:
        """The network in eval mode, with weights that depend only on (family, seed)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_derived_seed(self.family, self.seed))
            return _FAMILY_IMPL[self.family][1](self.params)

    def example_input(self) -> torch.Tensor:
        generator = torch.Generator().manual_seed(_derived_seed(self.family, self.seed))
        return torch.randn(self.input_shape, generator=generator)


def _check_family(family: str) -> None:
    if family not in _FAMILY_IMPL:
        raise ValueError(f"unknown family {family!r}; valid families: {', '.join(FAMILIES)}")


def parse_spec(spec: str) -> tuple[str, int]:
    """(family, seed) of a `zoo:FAMILY:SEED` model argument; ValueError in one line naming the
    valid form and families otherwise."""
    form = f"expected zoo:FAMILY:SEED with FAMILY one of {', '.join(FAMILIES)} and SEED an integer"
    parts = spec.split(":")
    if len(parts) != 3 or parts[0] != "zoo" or not parts[1] or not parts[2]:
        raise ValueError(f"{spec!r}: {form}")
    family, seed = parts[1], parts[2]
    if family not in FAMILIES:
        raise ValueError(f"{spec!r}: unknown zoo family {family!r}; {form}")
    try:
        return family, int(seed)
    except ValueError:
        raise ValueError(f"{spec!r}: seed {seed!r} is not an integer; {form}") from None


def generate(family: str, seed: int, *, nasbench201_csv: str | Path | None = None) -> ZooModel:
    """The variant of `family` drawn by `seed`; the same pair always gives the same model."""
    _check_family(family)
    rng = random.Random(f"{family}:{seed}")
    sample = _FAMILY_IMPL[family][0]
    params = sample(rng, nasbench201_csv) if family == "nasbench201" else sample(rng)
    res = params["resolution"]
    return ZooModel(f"{family}-{seed}", family, seed, params, (params["batch"], 3, res, res))


def iter_variants(families=FAMILIES, per_family: int = 1, start_seed: int = 0, *,
                  nasbench201_csv: str | Path | None = None):
    """`per_family` variants of each family, seeds start_seed, start_seed + 1, ..."""
    families = [families] if isinstance(families, str) else list(families)
    for family in families:
        _check_family(family)
    return (generate(family, seed, nasbench201_csv=nasbench201_csv)
            for family in families for seed in range(start_seed, start_seed + per_family))
