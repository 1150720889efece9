"""Model specs, the max-norm constraint, bias shifts and cost counting."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdistill.models import (
    MLP,
    Dropout,
    build_model,
    count_parameters,
    flops_per_example,
    max_norm_,
    shift_output_bias_,
)

PAPER_TEACHER_PARAMS = (784 * 1200 + 1200) + (1200 * 1200 + 1200) + (1200 * 10 + 10)


def test_paper_teacher_and_student_shapes():
    teacher = build_model("mlp:1200x1200,dropout=0.5,input_dropout=0.2", (1, 28, 28), 10)
    student = build_model("mlp:800x800", (1, 28, 28), 10)
    assert count_parameters(teacher) == PAPER_TEACHER_PARAMS
    assert count_parameters(student) == 784 * 800 + 800 + 800 * 800 + 800 + 800 * 10 + 10
    assert [m.p for m in teacher.modules() if isinstance(m, nn.Dropout)] == [0.2, 0.5, 0.5]
    assert not any(isinstance(m, nn.Dropout) for m in student.modules())
    assert teacher(torch.rand(3, 1, 28, 28)).shape == (3, 10)
    assert all(type(m) is Dropout for m in teacher.modules() if isinstance(m, nn.Dropout))
    cnn = build_model("cnn:8x16,dropout=0.5", (1, 28, 28), 10)
    assert [type(m) for m in cnn.modules() if isinstance(m, nn.Dropout)] == [Dropout]


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dropout_keeps_each_unit_with_probability_1_minus_p_and_scales_it(p: float) -> None:
    torch.manual_seed(0)
    layer = Dropout(p)
    x = torch.full((400_000,), 3.0, requires_grad=True)
    y = layer(x)
    kept = y != 0
    assert torch.equal(y[kept], torch.full_like(y[kept], 3.0 / (1 - p)))
    n = x.numel()  # 5 standard deviations of the binomial count
    assert abs(kept.sum().item() - (1 - p) * n) < 5 * (n * p * (1 - p)) ** 0.5
    y.sum().backward()
    assert torch.equal(x.grad, kept.float() / (1 - p))  # the gradient is the same mask
    assert not torch.equal(layer(x), layer(x))  # a new mask each call
    layer.eval()
    assert layer(x) is x
    assert Dropout(0.0)(x) is x


def test_dropout_under_bf16_keeps_the_dtype_and_the_rate() -> None:
    torch.manual_seed(0)
    y = Dropout(0.2)(torch.ones(100_000, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16
    assert set(y.unique().tolist()) == {0.0, 1.25}
    assert abs((y != 0).float().mean().item() - 0.8) < 0.01


def test_flops_are_two_per_multiply_add():
    model = build_model("mlp:1200x1200", (1, 28, 28), 10)
    assert flops_per_example(model, (1, 28, 28)) == 2 * (784 * 1200 + 1200 * 1200 + 1200 * 10)
    cnn = build_model("cnn:4", (1, 8, 8), 3)  # 5x5 conv, padding 2: 8x8 output positions
    conv_flops = 2 * 25 * 1 * 4 * 64
    linear_flops = 2 * (4 * 4 * 4 * 128 + 128 * 3)
    assert flops_per_example(cnn, (1, 8, 8)) == conv_flops + linear_flops


def test_cnn_is_the_spec_it_names():
    model = build_model("cnn:8x16,hidden=32,dropout=0.25", (1, 28, 28), 10)
    convs = (8 * 1 * 25 + 8) + (16 * 8 * 25 + 16)  # 5x5 convs; 28 -> 14 -> 7 after each pool
    dense = (16 * 7 * 7 * 32 + 32) + (32 * 10 + 10)
    assert count_parameters(model) == convs + dense
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.25]
    x = torch.rand(2, 1, 28, 28)
    model.eval()
    assert model(x).shape == (2, 10) and torch.equal(model(x), model(x))  # no dropout in eval


def test_input_scaling_is_part_of_the_model():
    torch.manual_seed(0)
    scaled = build_model("mlp:8,input_mean=0.5,input_std=0.25", (1, 4, 4), 3)
    plain = build_model("mlp:8", (1, 4, 4), 3)
    plain.load_state_dict(scaled.state_dict())  # no new weights: old run folders still load
    x = torch.rand(5, 1, 4, 4)
    torch.testing.assert_close(scaled(x), plain((x - 0.5) / 0.25))


def test_module_function_spec():
    model = build_model("tests.helpers:five_way_mlp", (1, 8, 8), 10)
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 5)


@pytest.mark.parametrize(
    "spec,message",
    [
        ("mlp", "bad model spec"),
        ("rnn:12", "unknown model kind 'rnn'"),
        ("mlp:12xabc", "bad layer widths"),
        ("mlp:0", "widths must be >= 1"),
        ("mlp:12,dropout=0.5,colour=red", "unknown option"),
        ("mlp:12,dropout=1.5", r"dropout must be in \[0, 1\)"),
        ("no_such.module_xyz:build", "cannot import module 'no_such.module_xyz'"),
        ("tests.helpers:missing", "has no function 'missing'"),
        ("tests.helpers:make_split", "not an nn.Module"),
        ("9lives:x", "unknown model kind"),
        ("mlp:12,input_std=0", "input_std must be > 0"),
        ("mlp:12,input_mean=nan", "input_mean must be finite"),
        ("mlp:12,input_std=abc", "input_std must be a number"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        build_model(spec, (1, 8, 8), 10)


def test_max_norm_caps_only_the_rows_above_the_limit():
    torch.manual_seed(0)
    model = MLP(4, [3], 2)
    layer = model.net[1]
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[3.0, 4, 0, 0], [0.1, 0, 0, 0], [0, 0, 6, 8]]))
    max_norm_(model, 2.0)
    norms = layer.weight.norm(dim=1)
    torch.testing.assert_close(norms, torch.tensor([2.0, 0.1, 2.0]))
    torch.testing.assert_close(layer.weight[0], torch.tensor([1.2, 1.6, 0, 0]))


def test_shift_output_bias():
    model = MLP(4, [3], 5)
    before = model.net[-1].bias.clone()
    shift_output_bias_(model, {3: 3.5, 0: -1.0})
    delta = model.net[-1].bias - before
    torch.testing.assert_close(delta, torch.tensor([-1.0, 0, 0, 3.5, 0]))
    with pytest.raises(ValueError, match="class 7 is out of range"):
        shift_output_bias_(model, {7: 1.0})


def test_run_cost_times_each_architecture_once(monkeypatch) -> None:
    """A reproduction's runs share a few architectures: each one's speed is measured once."""
    from kdistill import runs

    timed: list[str] = []

    def fake_throughput(model, input_shape, seconds):
        timed.append(repr(model))
        return 1000.0 * len(timed)

    monkeypatch.setattr(runs, "inference_throughput", fake_throughput)
    monkeypatch.setattr(runs, "_THROUGHPUT", {})
    cpu = torch.device("cpu")
    first, same = build_model("mlp:20x20", (64,), 10), build_model("mlp:20x20", (64,), 10)
    other = build_model("mlp:30x30", (64,), 10)
    costs = [runs.model_cost(m, (64,), cpu) for m in (first, same, other, first)]
    assert len(timed) == 2  # mlp:20x20 once (other weights, same speed), mlp:30x30 once
    assert [c["inference_examples_per_s"] for c in costs] == [1000, 1000, 2000, 1000]
    assert costs[0]["parameters"] == costs[1]["parameters"] != costs[2]["parameters"]
