"""Seeded architecture zoo: variants of NNLQP's ten model families and of newer ones.

NNLQP built its dataset by taking torchvision architectures and varying depth, widths,
kernel sizes, expansion ratios, SE blocks and input resolution. This module does the same,
reproducibly: `generate(family, seed)` samples every choice from an RNG keyed on
`"{family}:{seed}"` and records it in `ZooModel.params`; the model is then a pure function
of those params, so a stored params dict is enough to rebuild the network.

Besides NNLQP's ten (2014-2019 CNNs, all batch 1) there are the families users compile
today: vision transformers, transformer text encoders (int64 token ids in), ConvNeXt,
ResNeXt, DenseNet and ShuffleNetV2; these draw a batch of 2 or 4 now and then.

Sizes are chosen for *untuned* TVM on one CPU thread (about 70x slower than torch): small
resolutions and widths keep a typical variant in the 5-300 ms range and its compile in a
few seconds. Models are float32 and in eval mode, and use only ops that torch's legacy
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

# Transformer, ConvNeXt-style, grouped and dense networks, added after the 2014-2019 CNNs: reports
# compare the two groups, so the split is kept here once.
MODERN_FAMILIES = ("vit", "bert", "convnext", "resnext", "densenet", "shufflenetv2")
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
    *MODERN_FAMILIES,
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
        elif isinstance(m, nn.LayerNorm):
            # Same reason: default ones/zeros affine parameters are shared constants once exported.
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.normal_(m.bias, 0.0, 0.1)
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
# Newer families: transformers, ConvNeXt, ResNeXt, DenseNet, ShuffleNetV2
# ----------------------------------------------------------------------------------------

def _batch(rng) -> int:
    # Mostly batch 1 like the rest of the zoo; a quarter of the models batch a few inputs.
    return rng.choice((2, 4)) if rng.random() < 0.25 else 1


class SelfAttention(nn.Module):
    """Multi-head self-attention as timm and HF BERT compute it: one qkv projection, then
    batched matmuls and a softmax (nn.MultiheadAttention exports to the same ops, less plainly)."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q @ k.transpose(-2, -1) * self.scale).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))


class TransformerBlock(nn.Module):
    """Pre-norm (ViT) or post-norm (BERT) encoder block with a GELU MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, pre_norm: bool, qkv_bias: bool = True,
                 eps: float = 1e-6):
        super().__init__()
        self.pre_norm = pre_norm
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = SelfAttention(dim, heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        hidden = int(dim * mlp_ratio)
        # nn.GELU's exact (erf) form: opset 17 has no Gelu op, so it exports as Div/Erf/Add/Mul.
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x):
        if self.pre_norm:
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.mlp(x))


def _encoder_macs(tokens: int, dim: int, depth: int, mlp_ratio: float) -> int:
    """Multiply-adds of `depth` encoder blocks: projections and MLP, plus the two attention matmuls."""
    return depth * (tokens * dim * dim * int(4 + 2 * mlp_ratio) + 2 * tokens * tokens * dim)


# Untuned TVM runs an encoder at about 1.5-2 ns per multiply-add on one core (timed in CPU
# time; softmax, LayerNorm and GELU add to the matmuls): this keeps encoders under ~200 ms.
_ENCODER_MACS = 100e6


def _sample_vit(rng):
    while True:
        p = {"resolution": rng.choice((32, 48, 64, 96)), "batch": _batch(rng),
             "num_classes": rng.choice(NUM_CLASSES)}
        # Patch sizes that tile the image into a 3x3 to 16x16 grid of tokens.
        p["patch"] = rng.choice([s for s in (4, 6, 8, 12, 16)
                                 if p["resolution"] % s == 0 and 3 <= p["resolution"] // s <= 16])
        p["head_dim"] = rng.choice((16, 32, 64))
        p["heads"] = rng.choice((2, 3, 4, 6))
        p["width"] = p["heads"] * p["head_dim"]
        p["depth"] = rng.randint(2, 12)
        p["mlp_ratio"] = rng.choice((2, 3, 4))
        p["pool"] = rng.choice(("cls", "mean"))
        p["qkv_bias"] = rng.random() < 0.75
        tokens = (p["resolution"] // p["patch"]) ** 2 + (p["pool"] == "cls")
        if p["batch"] * _encoder_macs(tokens, p["width"], p["depth"], p["mlp_ratio"]) <= _ENCODER_MACS:
            return p


class VisionTransformer(nn.Module):
    def __init__(self, p):
        super().__init__()
        dim, grid = p["width"], p["resolution"] // p["patch"]
        self.patch_embed = nn.Conv2d(3, dim, p["patch"], p["patch"])
        self.cls_token = nn.Parameter(0.02 * torch.randn(1, 1, dim)) if p["pool"] == "cls" else None
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1, grid * grid + (p["pool"] == "cls"), dim))
        self.blocks = nn.Sequential(*(TransformerBlock(dim, p["heads"], p["mlp_ratio"], pre_norm=True,
                                                       qkv_bias=p["qkv_bias"]) for _ in range(p["depth"])))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, p["num_classes"])

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1)
        x = self.norm(self.blocks(x + self.pos_embed))
        return self.head(x[:, 0] if self.cls_token is not None else x.mean(1))


def _build_vit(p):
    return network(VisionTransformer(p))


def _sample_bert(rng):
    while True:
        p = {"batch": _batch(rng), "seq_len": rng.choice((16, 32, 64, 128, 256)),
             "vocab_size": rng.choice((1000, 8000, 30522)), "num_classes": rng.choice((2, 3, 10))}
        p["head_dim"] = rng.choice((32, 64))
        p["heads"] = rng.choice((1, 2, 4, 8))
        p["width"] = p["heads"] * p["head_dim"]
        p["depth"] = rng.randint(1, 8)
        p["mlp_ratio"] = rng.choice((2, 4))
        # BERT normalises after each residual add; pre-norm encoders (GPT-2 style) before.
        p["pre_norm"] = rng.random() < 0.25
        if p["width"] <= 512 and p["batch"] * _encoder_macs(p["seq_len"], p["width"], p["depth"],
                                                             p["mlp_ratio"]) <= _ENCODER_MACS:
            return p


class TextEncoder(nn.Module):
    """BERT: token and position embeddings, encoder blocks, tanh pooler on the first token."""

    def __init__(self, p):
        super().__init__()
        dim = p["width"]
        self.tokens = nn.Embedding(p["vocab_size"], dim)
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1, p["seq_len"], dim))
        self.embed_norm = nn.LayerNorm(dim, eps=1e-12)
        self.blocks = nn.Sequential(*(TransformerBlock(dim, p["heads"], p["mlp_ratio"], p["pre_norm"], eps=1e-12)
                                      for _ in range(p["depth"])))
        self.pooler = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, p["num_classes"])

    def forward(self, ids):
        x = self.blocks(self.embed_norm(self.tokens(ids) + self.pos_embed))
        return self.head(torch.tanh(self.pooler(x[:, 0])))


def _build_bert(p):
    return network(TextEncoder(p))


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map, through channels-last as timm does it."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, kernel: int, mlp_ratio: int, layer_scale: bool):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))
        self.gamma = nn.Parameter(torch.empty(dim).uniform_(0.1, 1.0)) if layer_scale else None

    def forward(self, x):
        y = self.mlp(self.norm(self.dwconv(x).permute(0, 2, 3, 1)))
        if self.gamma is not None:
            y = y * self.gamma
        return x + y.permute(0, 3, 1, 2)


def _convnext_macs(p) -> int:
    macs, side = 0, p["resolution"] // p["patch"]
    for width, depth, kernel in zip(p["widths"], p["depths"], p["kernels"]):
        macs += depth * side * side * width * (kernel * kernel + 2 * p["mlp_ratio"] * width)
        side //= 2
    return p["batch"] * macs


# Untuned TVM runs these blocks at about 2 ns per multiply-add (mostly the MLP's matmuls):
# up to ~250 ms.
_CONVNEXT_MACS = 120e6


def _sample_convnext(rng):
    while True:
        p = {"resolution": rng.choice((32, 48, 64, 96)), "batch": _batch(rng),
             "num_classes": rng.choice(NUM_CLASSES)}
        # Patchify stem; stages at 1/patch .. 1/(8 patch) of the input, the last at least 2x2.
        p["patch"] = rng.choice([s for s in (2, 4) if p["resolution"] // (8 * s) >= 2])
        base = rng.choice((16, 24, 32, 48))
        p["widths"] = [base * 2**i for i in range(4)]
        # Upper bounds are ConvNeXt-T's (3, 3, 9, 3).
        p["depths"] = [rng.randint(1, d) for d in (3, 3, 9, 3)]
        p["kernels"] = [rng.choice((3, 5, 7, 7)) for _ in range(4)]
        p["mlp_ratio"] = rng.choice((2, 3, 4))
        p["layer_scale"] = rng.random() < 0.5
        if _convnext_macs(p) <= _CONVNEXT_MACS:
            return p


def _build_convnext(p):
    w = p["widths"]
    layers = [nn.Conv2d(3, w[0], p["patch"], p["patch"]), LayerNorm2d(w[0], eps=1e-6)]
    for stage, (width, depth, kernel) in enumerate(zip(w, p["depths"], p["kernels"])):
        if stage > 0:
            layers += [LayerNorm2d(w[stage - 1], eps=1e-6), nn.Conv2d(w[stage - 1], width, 2, 2)]
        layers += [ConvNeXtBlock(width, kernel, p["mlp_ratio"], p["layer_scale"]) for _ in range(depth)]
    return network(*layers, global_pool(), nn.LayerNorm(w[-1], eps=1e-6), nn.Linear(w[-1], p["num_classes"]))


def _sample_resnext(rng):
    p = {"resolution": rng.choice((64, 80, 96, 112)), "batch": _batch(rng),
         "num_classes": rng.choice(NUM_CLASSES)}
    p["stem_width"] = rng.choice((16, 24, 32))
    base = rng.choice((24, 32, 48, 64))
    p["widths"] = [base * 2**i for i in range(4)]
    p["depths"] = [rng.randint(1, d) for d in (3, 4, 6, 3)]
    # ResNeXt's bottleneck is half its output width (32x4d); RegNetX's is the full width.
    p["bottleneck_ratio"] = rng.choice((0.5, 1.0))
    p["group_width"] = rng.choice((4, 8, 16, 32))
    p["inner"] = [max(p["group_width"], round(w * p["bottleneck_ratio"] / p["group_width"]) * p["group_width"])
                  for w in p["widths"]]
    return p


def _build_resnext(p):
    layers = [conv_bn_act(3, p["stem_width"], 7, 2), nn.MaxPool2d(3, 2, 1)]
    cin = p["stem_width"]
    for stage, (width, depth, inner) in enumerate(zip(p["widths"], p["depths"], p["inner"])):
        for i in range(depth):
            stride = 2 if stage > 0 and i == 0 else 1
            body = nn.Sequential(conv_bn_act(cin, inner, 1),
                                 conv_bn_act(inner, inner, 3, stride, groups=inner // p["group_width"]),
                                 conv_bn_act(inner, width, 1, act=None))
            shortcut = conv_bn_act(cin, width, 1, stride, act=None) if stride != 1 or cin != width else None
            layers.append(Residual(body, shortcut, act="relu"))
            cin = width
    return network(*layers, global_pool(), classifier(cin, [], p["num_classes"]))


class DenseLayer(nn.Module):
    """BN-ReLU-1x1-BN-ReLU-3x3 on the concatenation of every earlier feature map of the block."""

    def __init__(self, cin: int, growth: int, bn_size: int):
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(),
                                  conv_bn_act(cin, bn_size * growth, 1),
                                  nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False))

    def forward(self, features: list):
        return self.body(torch.cat(features, 1) if len(features) > 1 else features[0])


class DenseBlock(nn.Module):
    def __init__(self, cin: int, layers: int, growth: int, bn_size: int):
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(cin + i * growth, growth, bn_size) for i in range(layers))

    def forward(self, x):
        # torchvision's form: each layer concatenates the whole list, so concats take many inputs.
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return torch.cat(features, 1)


def _densenet_macs(p) -> int:
    side = p["resolution"] if p["stem"] == "cifar" else p["resolution"] // 4
    cin, bottleneck, macs = p["stem_width"], p["bn_size"] * p["growth"], 0
    for i, n in enumerate(p["blocks"]):
        for _ in range(n):
            macs += side * side * bottleneck * (cin + 9 * p["growth"])
            cin += p["growth"]
        if i < len(p["blocks"]) - 1:
            macs += side * side * cin * int(cin * p["compression"])
            cin, side = int(cin * p["compression"]), side // 2
    return p["batch"] * macs


# Untuned TVM: about 1.5 ns per multiply-add, plus the concatenations' copies.
_DENSENET_MACS = 100e6


def _sample_densenet(rng):
    while True:
        p = {"resolution": rng.choice((32, 48, 64, 96)), "batch": _batch(rng),
             "num_classes": rng.choice(NUM_CLASSES)}
        p["growth"] = rng.choice((8, 12, 16, 24, 32))
        p["bn_size"] = rng.choice((2, 4))
        # The CIFAR DenseNet (3x3 stem, three blocks) or the ImageNet one (7x7/2 stem and max
        # pool, four blocks). Each dense layer has shapes of its own, so TVM compiles a few
        # kernels per layer (about 1 s): half of DenseNet-121's (6, 12, 24, 16) at most.
        p["stem"] = "cifar" if p["resolution"] <= 48 and rng.random() < 0.5 else "imagenet"
        upper = (6, 8, 8) if p["stem"] == "cifar" else (4, 8, 12, 8)
        p["blocks"] = [rng.randint(2, d) for d in upper]
        p["compression"] = rng.choice((0.5, 0.5, 1.0))
        p["stem_width"] = 2 * p["growth"]
        if _densenet_macs(p) <= _DENSENET_MACS:
            return p


def _build_densenet(p):
    if p["stem"] == "cifar":
        layers = [nn.Conv2d(3, p["stem_width"], 3, padding=1, bias=False)]
    else:
        layers = [conv_bn_act(3, p["stem_width"], 7, 2), nn.MaxPool2d(3, 2, 1)]
    cin = p["stem_width"]
    for i, n in enumerate(p["blocks"]):
        layers.append(DenseBlock(cin, n, p["growth"], p["bn_size"]))
        cin += n * p["growth"]
        if i < len(p["blocks"]) - 1:
            cout = int(cin * p["compression"])
            layers += [nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cout, 1, bias=False), nn.AvgPool2d(2, 2)]
            cin = cout
    return network(*layers, nn.BatchNorm2d(cin), nn.ReLU(), global_pool(),
                   nn.Linear(cin, p["num_classes"]))


def channel_shuffle(x, groups: int):
    b, c, h, w = x.shape
    return x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit: split the channels (or, when striding, copy the input to two branches),
    transform one half, concatenate, shuffle."""

    def __init__(self, cin: int, cout: int, stride: int, kernel: int):
        super().__init__()
        half = cout // 2
        self.stride = stride
        self.branch1 = None
        if stride > 1:
            self.branch1 = nn.Sequential(conv_bn_act(cin, cin, kernel, stride, groups=cin, act=None),
                                         conv_bn_act(cin, half, 1))
        self.branch2 = nn.Sequential(conv_bn_act(cin if stride > 1 else half, half, 1),
                                     conv_bn_act(half, half, kernel, stride, groups=half, act=None),
                                     conv_bn_act(half, half, 1))

    def forward(self, x):
        if self.branch1 is None:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), 1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), 1)
        return channel_shuffle(out, 2)


# torchvision's stage widths and head width per width multiplier.
_SHUFFLENETV2_WIDTHS = {0.5: (48, 96, 192, 1024), 1.0: (116, 232, 464, 1024),
                        1.5: (176, 352, 704, 1024), 2.0: (244, 488, 976, 2048)}


def _sample_shufflenetv2(rng):
    p = {"resolution": rng.choice((64, 80, 96, 112)), "batch": _batch(rng),
         "num_classes": rng.choice(NUM_CLASSES)}
    # 2.0x only at batch 1: its 976-wide last stage alone costs what a whole 0.5x model does.
    p["width_mult"] = rng.choice(tuple(m for m in _SHUFFLENETV2_WIDTHS if p["batch"] == 1 or m < 2))
    *p["widths"], p["head"] = _SHUFFLENETV2_WIDTHS[p["width_mult"]]
    # Around ShuffleNetV2's (4, 8, 4) units; 3/5/7 kernels as in ShuffleNetV2+.
    p["depths"] = [rng.randint(2, d) for d in (4, 8, 4)]
    p["kernels"] = [rng.choice((3, 3, 5, 7)) for _ in range(3)]
    p["stem_width"] = 24
    return p


def _build_shufflenetv2(p):
    layers = [conv_bn_act(3, p["stem_width"], 3, 2), nn.MaxPool2d(3, 2, 1)]
    cin = p["stem_width"]
    for width, depth, kernel in zip(p["widths"], p["depths"], p["kernels"]):
        for i in range(depth):
            layers.append(ShuffleUnit(cin, width, 2 if i == 0 else 1, kernel))
            cin = width
    return network(*layers, conv_bn_act(cin, p["head"], 1), global_pool(),
                   nn.Linear(p["head"], p["num_classes"]))


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
    "vit": (_sample_vit, _build_vit),
    "bert": (_sample_bert, _build_bert),
    "convnext": (_sample_convnext, _build_convnext),
    "resnext": (_sample_resnext, _build_resnext),
    "densenet": (_sample_densenet, _build_densenet),
    "shufflenetv2": (_sample_shufflenetv2, _build_shufflenetv2),
}


def _derived_seed(family: str, seed: int) -> int:
    # str hashes are salted per process; sha256 keeps weights identical across runs.
    digest = hashlib.sha256(f"{family}:{seed}:torch".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def input_spec(params: dict) -> tuple[tuple, str]:
    """(shape, dtype) of a zoo model's input: token ids for text encoders, else an image."""
    if "seq_len" in params:
        return (params["batch"], params["seq_len"]), "int64"
    res = params["resolution"]
    return (params["batch"], 3, res, res), "float32"


@dataclass
class ZooModel:
    name: str
    family: str
    seed: int
    params: dict
    input_shape: tuple
    input_dtype: str = "float32"

    def build(self) -> nn.Module:
        """The network in eval mode, with weights that depend only on (family, seed)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_derived_seed(self.family, self.seed))
            return _FAMILY_IMPL[self.family][1](self.params)

    def example_input(self) -> torch.Tensor:
        generator = torch.Generator().manual_seed(_derived_seed(self.family, self.seed))
        if self.input_dtype == "int64":
            return torch.randint(0, self.params["vocab_size"], self.input_shape, generator=generator)
        return torch.randn(self.input_shape, generator=generator)


def _check_family(family: str) -> None:
    if family not in _FAMILY_IMPL:
        raise ValueError(f"unknown family {family!r}; valid families: {', '.join(FAMILIES)}")


def parse_spec(spec: str) -> tuple[str, int]:
    """(family, seed) of a `zoo:FAMILY:SEED` model argument; ValueError in one line naming the
    valid form and families otherwise."""
    form = f"expected zoo:FAMILY:SEED with FAMILY one of {', '.join(FAMILIES)} and SEED a non-negative integer"
    parts = spec.split(":")
    if len(parts) != 3 or parts[0] != "zoo" or not parts[1] or not parts[2]:
        raise ValueError(f"{spec!r}: {form}")
    family, seed = parts[1], parts[2]
    if family not in FAMILIES:
        raise ValueError(f"{spec!r}: unknown zoo family {family!r}; {form}")
    if not (seed.isascii() and seed.isdigit()):  # a model's name is FAMILY-SEED: a sign would make it ambiguous
        raise ValueError(f"{spec!r}: seed {seed!r} is not a non-negative integer; {form}")
    return family, int(seed)


def generate(family: str, seed: int, *, nasbench201_csv: str | Path | None = None) -> ZooModel:
    """The variant of `family` drawn by `seed`; the same pair always gives the same model."""
    _check_family(family)
    rng = random.Random(f"{family}:{seed}")
    sample = _FAMILY_IMPL[family][0]
    params = sample(rng, nasbench201_csv) if family == "nasbench201" else sample(rng)
    shape, dtype = input_spec(params)
    return ZooModel(f"{family}-{seed}", family, seed, params, shape, dtype)


def iter_variants(families=FAMILIES, per_family: int = 1, start_seed: int = 0, *,
                  nasbench201_csv: str | Path | None = None):
    """`per_family` variants of each family, seeds start_seed, start_seed + 1, ..."""
    families = [families] if isinstance(families, str) else list(families)
    for family in families:
        _check_family(family)
    return (generate(family, seed, nasbench201_csv=nasbench201_csv)
            for family in families for seed in range(start_seed, start_seed + per_family))
