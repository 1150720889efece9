"""The training loop: learning, cached = online teacher, determinism, resume, errors."""

from __future__ import annotations

import pytest
import torch

from kdistill.data import Split, train_val_split
from kdistill.models import build_model
from kdistill.train import TrainConfig, evaluate, fit, predict_logits
from tests.helpers import make_split

SHAPE = (1, 6, 6)


def _model(spec: str = "mlp:16", seed: int = 0, classes: int = 4) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(spec, SHAPE, classes)


@pytest.fixture(scope="module")
def trained_teacher():
    split = make_split(seed=1)
    teacher = _model("mlp:32x32,dropout=0.2", seed=1)
    fit(teacher, split, TrainConfig(epochs=6, batch_size=32, lr=0.05), progress=False)
    return teacher


def test_a_model_learns_from_hard_labels(tiny_split):
    model = _model()
    test = make_split(n=128, seed=0)
    result = fit(
        model, tiny_split, TrainConfig(epochs=8, batch_size=32, lr=0.05), test=test, progress=False
    )
    assert [row["epoch"] for row in result.history] == list(range(1, 9))
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert evaluate(model, test)["errors"] <= 4


def test_cached_teacher_logits_give_the_same_training_as_online(tiny_split, trained_teacher):
    config = TrainConfig(epochs=3, batch_size=32, lr=0.05, temperature=4.0, alpha=0.7)
    cached, online = _model(seed=5), _model(seed=5)
    a = fit(cached, tiny_split, config, teacher=trained_teacher, progress=False)
    b = fit(
        online,
        tiny_split,
        TrainConfig(**{**config.__dict__, "cache_teacher_logits": False}),
        teacher=trained_teacher,
        progress=False,
    )
    # The teacher's matmuls run on batches of another size in the two paths, so the logits
    # can differ in the last bits of float32; nothing else differs.
    for row_a, row_b in zip(a.history, b.history, strict=True):
        assert row_a["train_loss"] == pytest.approx(row_b["train_loss"], rel=1e-5)
    for p, q in zip(cached.parameters(), online.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def test_same_seed_same_result_bitwise(tiny_split, trained_teacher):
    config = TrainConfig(epochs=2, batch_size=32, lr=0.05, jitter=1, temperature=3.0, alpha=0.5)
    runs = []
    for _ in range(2):
        model = _model("mlp:16,dropout=0.3", seed=2)
        result = fit(model, tiny_split, config, teacher=trained_teacher, progress=False)
        runs.append(
            (model, [{k: v for k, v in r.items() if k != "seconds"} for r in result.history])
        )
    assert runs[0][1] == runs[1][1]
    for p, q in zip(runs[0][0].parameters(), runs[1][0].parameters(), strict=True):
        assert torch.equal(p, q)


class _Stop(Exception):
    pass


def test_resume_after_an_interruption_is_bitwise_equal(tiny_split, tmp_path):
    config = TrainConfig(epochs=4, batch_size=32, lr=0.05, jitter=1, seed=3)
    unbroken = _model("mlp:16,dropout=0.3", seed=3)
    expected = fit(unbroken, tiny_split, config, progress=False)

    def stop_after_two(history):
        if len(history) == 2:
            raise _Stop

    broken = _model("mlp:16,dropout=0.3", seed=3)
    with pytest.raises(_Stop):
        fit(
            broken,
            tiny_split,
            config,
            checkpoint_dir=tmp_path,
            on_epoch=stop_after_two,
            progress=False,
        )
    resumed = _model("mlp:16,dropout=0.3", seed=99)  # weights come from the checkpoint
    result = fit(resumed, tiny_split, config, checkpoint_dir=tmp_path, resume=True, progress=False)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(result.history) == strip(expected.history)
    for p, q in zip(resumed.parameters(), unbroken.parameters(), strict=True):
        assert torch.equal(p, q)


def test_resume_needs_a_checkpoint_and_a_fresh_run_refuses_to_overwrite(tiny_split, tmp_path):
    config = TrainConfig(epochs=1, batch_size=64)
    with pytest.raises(ValueError, match="no checkpoint to resume from"):
        fit(_model(), tiny_split, config, checkpoint_dir=tmp_path, resume=True, progress=False)
    fit(_model(), tiny_split, config, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="already holds a checkpoint"):
        fit(_model(), tiny_split, config, checkpoint_dir=tmp_path, progress=False)


def test_grad_clip_bounds_the_norm_of_each_step(tiny_split):
    # One full-batch step of plain SGD at lr 1 moves the weights by exactly the gradient.
    config = TrainConfig(
        epochs=1, batch_size=len(tiny_split), lr=1.0, momentum=0.0, schedule="constant"
    )

    def step_norm(grad_clip: float | None) -> float:
        model = _model()
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        fit(
            model,
            tiny_split,
            TrainConfig(**{**config.__dict__, "grad_clip": grad_clip}),
            progress=False,
        )
        after = torch.cat([p.detach().flatten() for p in model.parameters()])
        return float((after - before).norm())

    assert step_norm(None) > 0.1
    assert step_norm(0.01) == pytest.approx(0.01, rel=1e-4)


def test_exponential_schedule_multiplies_the_lr_by_the_decay_each_epoch(tiny_split):
    config = TrainConfig(epochs=3, batch_size=32, lr=0.08, schedule="exponential", lr_decay=0.5)
    history = fit(_model(), tiny_split, config, progress=False).history
    assert [row["lr"] for row in history] == pytest.approx([0.04, 0.02, 0.01])


def test_bf16_training_is_scored_in_fp32(tiny_split):
    model, test = _model(), make_split(n=128, seed=0)
    config = TrainConfig(epochs=1, batch_size=32, lr=0.05, bf16=True)
    history = fit(model, tiny_split, config, test=test, progress=False).history
    assert history[-1]["test_loss"] == evaluate(model, test)["loss"]  # fp32, bit for bit


def test_ensemble_teacher(tiny_split, trained_teacher):
    other = _model("mlp:8", seed=7)
    fit(other, tiny_split, TrainConfig(epochs=2, batch_size=32), progress=False)
    logits = predict_logits([trained_teacher, other], tiny_split.images)
    assert logits.shape == (2, len(tiny_split), 4)
    student = _model(seed=8)
    result = fit(
        student,
        tiny_split,
        TrainConfig(epochs=2, batch_size=32, temperature=2.0),
        teacher=[trained_teacher, other],
        progress=False,
    )
    assert len(result.history) == 2
    assert evaluate([trained_teacher, other], tiny_split)["examples"] == len(tiny_split)


def test_early_stopping_keeps_the_best_validation_epoch(tiny_split):
    model = _model()
    config = TrainConfig(epochs=30, batch_size=16, lr=0.1, val_fraction=0.25, patience=2)
    result = fit(model, tiny_split, config, progress=False)
    assert result.stopped_early and len(result.history) < 30
    best = result.history[result.best_epoch - 1]["val_errors"]
    assert best == min(row["val_errors"] for row in result.history)
    _, val = train_val_split(tiny_split, 0.25, 0)
    assert evaluate(model, val)["errors"] == best


def test_evaluate_reports_consistent_counts(tiny_split):
    scored = evaluate(_model(), tiny_split)
    confusion = torch.tensor(scored["confusion"])
    assert int(confusion.sum()) == len(tiny_split)
    assert scored["errors"] == int(confusion.sum() - confusion.trace())
    assert sum(scored["per_class_errors"]) == scored["errors"]
    assert scored["per_class_examples"] == [64, 64, 64, 64]


def test_nan_loss_stops_and_names_the_step(tiny_split):
    images = tiny_split.images.clone()
    images[:] = float("nan")
    with pytest.raises(ValueError, match=r"non-finite at epoch 1, step 1 \(global step 1\)"):
        fit(_model(), Split(images, tiny_split.labels), TrainConfig(epochs=1), progress=False)


def test_labels_out_of_range(tiny_split):
    bad = Split(tiny_split.images, tiny_split.labels + 1)  # labels 1..4 for a 4-class model
    with pytest.raises(ValueError, match=r"labels must be in \[0, 4\)"):
        fit(_model(), bad, TrainConfig(epochs=1), progress=False)


def test_teacher_and_student_class_counts_must_match(tiny_split, trained_teacher):
    student = _model(classes=3)
    with pytest.raises(ValueError, match="teacher has 4 classes but student has 3"):
        fit(student, tiny_split, TrainConfig(epochs=1), teacher=trained_teacher, progress=False)


def test_model_that_cannot_take_the_inputs(tiny_split):
    model = build_model("mlp:8", (1, 8, 8), 4)
    with pytest.raises(ValueError, match=r"the model cannot take inputs of shape \(1, 6, 6\)"):
        fit(model, tiny_split, TrainConfig(epochs=1), progress=False)


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"temperature": 0.0}, "temperature must be"),
        ({"alpha": 1.2}, "alpha"),
        ({"optimizer": "lbfgs"}, "optimizer must be"),
        ({"patience": 3}, "needs a validation split"),
        ({"jitter": -1}, "jitter must be >= 0"),
        ({"lr": 0.0}, "learning rate must be > 0"),
        ({"grad_clip": 0.0}, "gradient clipping norm must be > 0"),
        ({"schedule": "step"}, "schedule must be one of"),
        ({"lr_decay": 1.5}, r"lr decay per epoch must be in \(0, 1\]"),
    ],
)
def test_bad_config(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes).validate()
