import json
from pathlib import Path

import pytest
import torch
from torch import nn

from nar_tvm import zoo


CNN_FAMILIES = [f for f in zoo.FAMILIES if f != "nasbench201"]
ALL_FAMILIES = list(zoo.FAMILIES)

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
    assert tuple(x.shape) == z.input_shape == (1, 3, z.params["resolution"], z.params["resolution"])
    assert x.dtype == torch.float32
    with torch.no_grad():
        y = model(x)
    assert tuple(y.shape) == (1, z.params["num_classes"])
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
    assert params["batch"] == 1


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
