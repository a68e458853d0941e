"""One test per op rule (``moda_core.oprules``): a tiny model whose forward uses the op between two points, what
the rule says of it (its output's unit axis, or why it is kept whole), and composition through it equal to the
independent masked full model (``bench.graph_models.independent_masked_model``) with half the units of each point
dropped."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.graph_models import independent_masked_model
from moda_core.compose import compose_module, parameter_count
from moda_core.graph import graph_of
from moda_core.loop import prepare_model
from moda_core.oprules import dim_groups, full_size, index_entries, regroup, scatter_any

X = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))


class Net(nn.Module):
    """conv (6 channels) → ReLU point → ``middle`` → a head: the op under test sits in ``middle``."""

    def __init__(self, middle, channels: int = 6, head: nn.Module | None = None) -> None:
        super().__init__()
        self.conv, self.act, self.middle = nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(), middle
        self.head = head or nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.LazyLinear(10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.middle(self.act(self.conv(x))))


class Fn(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self, x)


def built(middle, **kwargs) -> nn.Module:
    torch.manual_seed(1)
    model = Net(middle, **kwargs)
    model(X)  # materialise lazy layers
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.running_mean, -0.5, 0.5)
            nn.init.uniform_(module.bias, -0.2, 0.2)
    return prepare_model(model.eval(), X)


def exact(model: nn.Module) -> nn.Module:
    """Compose classes 2 and 5 from masks keeping every other unit; check against the independent masked model."""
    points = graph_of(model).points
    masks = {name: (torch.arange(p.units) % 2 == 0).repeat(10, 1) for name, p in points.items()}
    composed = compose_module(model, masks, [2, 5])
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = independent_masked_model(model, {n: m[0] for n, m in masks.items()},
                                            {n: p.axis for n, p in points.items()})(x)[:, [2, 5]]
        torch.testing.assert_close(composed(x), expected, rtol=1e-5, atol=1e-6)
    return composed


def op(model: nn.Module, name: str):
    return graph_of(model).ops[name]


@pytest.mark.parametrize("middle,zero", [(nn.ReLU6(), True), (nn.Hardtanh(0.1, 4.0), False), (nn.Sigmoid(), False),
                                         (nn.Dropout(0.5), True), (nn.ELU(), True)])
def test_per_unit_ops_keep_the_axis_and_say_whether_zero_stays_zero(middle, zero):
    model = built(middle)
    assert (op(model, "middle").axis, op(model, "middle").data) == (1, zero)
    exact(model)


def test_a_point_zeroes_its_units_and_a_declared_axis_is_read_after_the_op():
    model = built(nn.Identity())
    assert graph_of(model).points["act"].axis == 1
    assert parameter_count(exact(model)) < parameter_count(model)


@pytest.mark.parametrize("fn", [lambda m, x: x + x.flip(1), lambda m, x: x * 2.0, lambda m, x: x + 1.0,
                                lambda m, x: x / (x.sum(1, keepdim=True) + 1.0)])
def test_binary_ops_line_up_operands_along_the_units(fn):
    exact(built(Fn(fn)))


def test_a_dense_conv_reads_only_the_channels_its_input_holds_and_a_grouped_one_is_kept_whole():
    dense = built(nn.Conv2d(6, 4, 3, padding=1))
    assert exact(dense).get_submodule("middle").in_channels == 3  # the point kept 3 of 6 channels
    grouped = built(nn.Conv2d(6, 4, 3, padding=1, groups=2))
    assert op(grouped, "middle").whole == "grouped convolution (groups=2)"
    exact(grouped)


def test_a_depthwise_conv_reads_its_own_channel_and_zeros_for_dropped_ones():
    model = built(nn.Sequential(nn.Conv2d(6, 6, 3, padding=1, groups=6), nn.ReLU()))
    assert op(model, "middle_0").data == "depthwise"
    exact(model)


def test_a_linear_layer_on_the_last_dim_and_on_another():
    channels_last = built(Fn(lambda m, x: x.permute(0, 2, 3, 1)), head=nn.Sequential(nn.Linear(6, 4), nn.Flatten(),
                                                                                      nn.LazyLinear(10)))
    assert op(channels_last, "head_0").axis == 3
    exact(channels_last)
    on_rows = built(nn.Identity(), head=nn.Sequential(nn.Linear(8, 5), nn.Flatten(), nn.LazyLinear(10)))
    assert op(on_rows, "head_0").axis == 3  # a linear over image columns: its outputs are its units, dim 3
    exact(on_rows)


def test_batch_norm_is_sliced_to_the_channels_a_later_point_keeps():
    shifted = built(nn.BatchNorm2d(6))  # its shift turns a dropped channel into a constant the head reads
    assert op(shifted, "middle").axis == 1 and exact(shifted).get_submodule("middle").num_features == 6
    model = built(nn.Sequential(nn.BatchNorm2d(6), nn.ReLU()))
    assert exact(model).get_submodule("middle.0").num_features == 3


def test_a_norm_over_the_units_carries_the_axis_but_is_kept_whole():
    model = built(nn.GroupNorm(2, 6))
    assert op(model, "middle").whole == "group norm normalises over groups of units" and op(model, "middle").axis == 1
    exact(model)


@pytest.mark.parametrize("middle", [nn.MaxPool2d(2), nn.AvgPool2d(2), nn.AdaptiveMaxPool2d(3)])
def test_pooling_keeps_the_units(middle):
    assert op(built(middle), "middle").axis == 1
    exact(built(middle))


def test_a_reduction_over_positions_keeps_the_units_and_one_over_them_is_whole():
    model = built(Fn(lambda m, x: x.mean((2, 3), keepdim=True)))
    assert op(model, "mean").axis == 1
    exact(model)
    over = built(Fn(lambda m, x: x.amax(1, keepdim=True).expand(-1, 6, -1, -1)))
    assert op(over, "amax").whole == "amax over the units"
    exact(over)


def test_permutes_move_the_axis():
    model = built(Fn(lambda m, x: x.permute(0, 3, 1, 2).transpose(1, 3).movedim(3, 2)))
    assert [op(model, name).axis for name in ("permute", "transpose", "movedim")] == [2, 2, 3]
    exact(model)


def test_reshapes_follow_the_units_and_splitting_them_is_whole():
    flat = built(nn.Flatten(), head=nn.Linear(6 * 64, 10))
    assert op(flat, "middle").axis == 1 and op(flat, "middle").data[1:] == (1, 64)
    assert exact(flat).get_submodule("head").in_features == 3 * 64
    last = built(Fn(lambda m, x: x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)), head=nn.Linear(6 * 64, 10))
    assert op(last, "reshape").data[1:] == (64, 1)  # channels last: a unit every 6 features
    exact(last)
    squeezed = built(Fn(lambda m, x: x.unsqueeze(2).squeeze(2).view(x.size(0), 6, 8, 8)))
    assert op(squeezed, "view").axis == 1
    exact(squeezed)
    shuffled = built(Fn(lambda m, x: x.view(x.size(0), 2, 3, 8, 8).transpose(1, 2).reshape(x.size(0), 6, 8, 8)))
    assert "splits the units" in op(shuffled, "view").whole
    exact(shuffled)


def test_indexing_slices_the_units_or_moves_them():
    model = built(Fn(lambda m, x: torch.cat([x[:, 1:5], x.narrow(1, 2, 4), x[..., None, :, :][:, :4, 0]], 3)))
    assert op(model, "getitem").data[1].tolist() == [1, 2, 3, 4]
    exact(model)
    one = built(Fn(lambda m, x: x[:, 2:3] * x))
    exact(one)


def test_chunks_of_the_units_and_of_positions():
    def glu_then_swap(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, 1)  # pieces of the units
        top, bottom = torch.split(a * torch.sigmoid(b), [3, 5], dim=2)  # pieces of the positions
        return torch.cat([bottom, top], 2)

    model = built(Fn(glu_then_swap))
    exact(model)


def test_concatenation_of_the_units_and_along_positions():
    model = built(Fn(lambda m, x: torch.cat([torch.cat([x, x.flip(1)], 1), torch.cat([x, x], 1)], 2)),
                  head=nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.LazyLinear(10)))
    exact(model)


def test_sizes_read_as_the_full_tensor_did():
    model = built(Fn(lambda m, x: x.reshape(x.shape[0], x.size(1) // 2, 2, 64).sum(2).reshape(x.size(0), -1)),
                  head=nn.Linear(3 * 64, 10))
    exact(model)
    assert full_size(torch.zeros(2, 3, 4), 1, 7) == torch.Size([2, 7, 4]) and full_size(torch.zeros(2, 3), 1, 7, 1) == 7


def test_a_parameter_read_directly_is_kept_and_sliced_where_it_lines_up():
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.linspace(0.5, 1.5, 6).view(1, 6, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.scale

    exact(built(Scaled()))


def test_helpers():
    assert dim_groups((2, 6, 8, 8), (2, 384)) == [([0], [0]), ([1, 2, 3], [1])]
    assert dim_groups((2, 1, 8), (2, 8)) == [([0], [0]), ([1], []), ([2], [1])]
    assert dim_groups((2, 6), (2, 4)) is None
    assert regroup(torch.zeros(5, 3, 4), (((0,), (None,)), ((1, 2), (None,)))).shape == (5, 12)
    assert [d for _, d in index_entries((slice(None), None, 0), 3)] == [0, None, 1, 2]
    assert index_entries(torch.tensor([1]), 2) is None
    assert scatter_any(torch.tensor([[True, False, False]]), torch.tensor([0, 0, 1]), 2).tolist() == [[True, False]]


def test_an_unknown_op_is_kept_whole_with_its_name():
    model = built(Fn(lambda m, x: torch.roll(x, 1, 1)))
    assert op(model, "roll").whole == "roll is not a per-unit op"
    exact(model)
