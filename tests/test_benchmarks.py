"""The benchmark's --quick mode runs and writes a complete, self-consistent table.

Correctness only: no timing is asserted (figures depend on the machine and its load).
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import pytest
import torch

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "throughput.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("kdistill_benchmark_throughput", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_quick_mode_writes_every_table(tmp_path, monkeypatch):
    monkeypatch.delenv("KDISTILL_DATA", raising=False)  # random tensors: no data needed
    bench = load_benchmark()
    out = tmp_path / "quick.json"
    assert bench.main(["--quick", "--json", str(out), "--no-bf16"]) == 0
    result = json.loads(out.read_text())

    names = [r["row"] for r in result["throughput"]]
    assert names == [
        "teacher 1200-1200 (dropout, jitter)",
        "student 800-800 alone",
        "distill, teacher online",
        "distill, cached logits",
        "reference: DataLoader, teacher per step",
    ]
    for r in result["throughput"]:
        assert r["examples_per_s"] > 0 and r["roofline_gflops"] > 0
        # ratio is roofline time / measured time, i.e. achieved / roofline GFLOP/s
        assert math.isclose(
            r["ratio"], r["gflops"] / r["roofline_gflops"], rel_tol=0.1, abs_tol=0.01
        )
        assert 0 <= r["test_errors"] <= result["machine"]["train_examples"]
    assert set(result["ratios"]) >= {"cached_over_online", "cached_over_reference"}
    sizes = bench.QUICK
    assert [(r["width"], r["batch"]) for r in result["scaling"]] == [
        (w, b) for w in sizes.widths for b in sizes.batch_sizes
    ]
    assert [r["examples"] for r in result["epoch_time"]] == list(sizes.epoch_sizes)
    assert result["machine"]["data"] == "random"


def test_flop_count_and_roofline_operands_match_nn_linear():
    bench = load_benchmark()
    model = bench.seeded_model("mlp:800x800")
    shapes = bench.linear_shapes(model)
    assert shapes == [(784, 800), (800, 800), (800, 10)]
    assert bench.forward_flops(shapes) == 2 * (784 * 800 + 800 * 800 + 800 * 10)
    ops = bench.gemm_operands(shapes, batch=4, training=True, dtype=torch.float32)
    # forward + grad-weight for each layer, grad-input for all but the first
    assert len(ops) == 3 * len(shapes) - 1
    for a, b, out in ops:
        assert torch.mm(a, b).shape == out.shape
    flops = sum(2 * a.shape[0] * a.shape[1] * b.shape[1] for a, b, _ in ops)
    first_grad_input = 2 * 4 * 784 * 800
    assert flops == 3 * 4 * bench.forward_flops(shapes) - first_grad_input


def test_tutorial_loops_normalise_inputs_as_tutorials_do(tiny_split):
    bench = load_benchmark()
    assert bench.MNIST_NORMALIZE == (0.1307, 0.3081)  # transforms.Normalize((0.1307,), (0.3081,))
    image, label = bench.PerSampleDataset(tiny_split, bench.MNIST_NORMALIZE)[3]
    assert torch.equal(image, (tiny_split.images[3] - 0.1307) / 0.3081)
    assert label == tiny_split.labels[3]
    # kdistill's rows scale inside the model, by the numbers --inputs standardized writes
    assert bench.STUDENT_SPEC == "mlp:800x800,input_mean=0.1307,input_std=0.3081"
    torch.manual_seed(0)
    teacher, student = (
        bench.build_model("mlp:8", (1, 6, 6), 4),
        bench.build_model("mlp:8", (1, 6, 6), 4),
    )
    before = [p.clone() for p in student.parameters()]
    assert bench.reference_training(teacher, tiny_split, 64, 0.01, 1, schedule="constant") > 0
    assert bench.reference_distillation(student, teacher, tiny_split, 64, 0.01, 1, alpha=0.5) > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters(), strict=True))


def test_step_profile_shares_add_up_and_name_the_matrix_products():
    path = BENCHMARK.with_name("step_profile.py")
    spec = importlib.util.spec_from_file_location("kdistill_benchmark_step_profile", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for make in (module.teacher_step, module.cached_distillation_step):
        result = module.shares(module.profiled_ops(make(), steps=2), steps=2)
        assert result.pop("ms per step") > 0
        assert math.isclose(sum(result.values()), 100.0, rel_tol=1e-9)
        assert result["matrix products"] > 20  # a 1200- or 800-wide MLP step is mostly matmuls
    assert "dropout masks" in module.shares(module.profiled_ops(module.teacher_step(), 2), 2)
    (costliest,) = module.top_ops(module.profiled_ops(module.cached_distillation_step(), 2), 1, 2)
    assert costliest.startswith("aten::") and "a step" in costliest


def load_reproduce_cost():
    path = BENCHMARK.parent / "reproduce_cost.py"
    spec = importlib.util.spec_from_file_location("kdistill_benchmark_reproduce_cost", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_reproduce_cost_schedules_runs_as_the_jobs_pool_does():
    """Plan order, a run waits for its teachers, a free worker takes the next ready run."""
    cost = load_reproduce_cost()
    order = ["teacher", "alone", "student", "member"]
    teachers = {"teacher": set(), "alone": set(), "student": {"teacher"}, "member": set()}
    seconds = {"teacher": 10.0, "alone": 3.0, "student": 5.0, "member": 4.0}
    assert cost.makespan(order, teachers, seconds, jobs=1) == 22.0
    # 2 workers: teacher | alone, member (free at 7), then the student after the teacher
    assert cost.makespan(order, teachers, seconds, jobs=2) == 15.0
    assert cost.makespan(order, teachers, seconds, jobs=4) == 15.0  # the teacher's chain


def epochs_named(key: str) -> str:
    """A run's name with the epochs that it may name ("-120ep") left out."""
    return re.sub(r"-\d+ep\b", "", key)


def test_reproduce_cost_cuts_every_run_and_keeps_the_plan(tmp_path):
    """The cut profile plans the same runs in the same order, each at the cut epochs."""
    from kdistill.experiments import hinton2015 as h

    cost = load_reproduce_cost()
    for name in ("paper", "quick"):
        profile = h.PROFILES[name]
        full, short = (h.plan(p, tmp_path, seeds=2) for p in (profile, cost.cut(profile, 3)))
        # a profile's own ensemble epochs are in the runs' names: "-40ep" cut to "-3ep"
        assert [epochs_named(key) for key in short.runs] == [epochs_named(k) for k in full.runs]
        assert any("-3ep" in key for key in short.runs)
        assert {spec.train.epochs for spec in short.runs.values()} == {3}
        assert max(spec.train.epochs for spec in full.runs.values()) > 3


def test_jitter_views_benchmark_runs_both_ways_to_the_same_student(monkeypatch):
    monkeypatch.delenv("KDISTILL_DATA", raising=False)  # random tensors: no data needed
    path = BENCHMARK.parent / "jitter_views.py"
    spec = importlib.util.spec_from_file_location("kdistill_benchmark_jitter_views", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.main(["--quick"])
    assert [row["teacher"] for row in rows] == list(module.TEACHERS)
    for row in rows:  # the views computed once give the online teacher's soft targets
        assert row["test_errors_views"] == row["test_errors_online"]
        assert row["online_s"] > 0 and row["views_once_s"] > 0


def test_reproduce_cost_from_records_schedules_their_recorded_times(tmp_path):
    """--from-records: each run at its record's train_seconds, the first folder holding it."""
    from kdistill.experiments import hinton2015 as h

    cost = load_reproduce_cost()
    profile = h.PROFILES["quick"]
    keys = list(h.plan(profile, tmp_path / "a", seeds=1).runs)
    for number, key in enumerate(keys):  # the first half in one folder, the rest in another
        folder = tmp_path / ("a" if number < len(keys) // 2 else "b") / key
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({"train_seconds": 60.0}))
    result = cost.from_records(profile, [tmp_path / "a", tmp_path / "b"], seeds=1, jobs=2)
    assert result["runs"] == len(keys) and result["training_summed_min"] == len(keys)
    assert sorted(result["runs_by_folder"].values()) == [len(keys) // 2, len(keys) - len(keys) // 2]
    # two workers: at least half the sum, and the teacher's chain (teacher, then a student)
    assert len(keys) / 2 <= result["wall_min"] < len(keys)
    with pytest.raises(SystemExit, match="no finished record"):
        cost.from_records(profile, [tmp_path / "a"], seeds=1, jobs=2)
