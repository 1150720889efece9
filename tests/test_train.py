"""The training loop: learning, cached = online teacher, determinism, resume, errors; the loss
it runs is distillation_loss; configs of earlier versions load and resume."""

from __future__ import annotations

import io
import json
import re
import sys
from dataclasses import asdict, fields, replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import kdistill.runs as runs_module
from kdistill import compat
from kdistill.checkpoint import load_checkpoint, save_checkpoint
from kdistill.compat import config_differences
from kdistill.data import Split, batch_indices, train_val_split
from kdistill.losses import DistillationObjective, distillation_loss, make_loss
from kdistill.models import build_model
from kdistill.runs import RunSpec, execute
from kdistill.train import TrainConfig, evaluate, fit, predict_logits
from tests.helpers import make_split

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"

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


def test_test_every_scores_the_test_set_less_often_and_trains_the_same(tiny_split):
    """test_every=3 over 7 epochs: test errors in the history at epochs 3, 6 and 7 only, and
    the same weights as scoring every epoch (scoring draws no random numbers)."""
    test = make_split(n=128, seed=0)
    histories, weights = [], []
    for every in (1, 3):
        model = _model()
        config = TrainConfig(epochs=7, batch_size=32, lr=0.05, test_every=every)
        histories.append(fit(model, tiny_split, config, test=test, progress=False).history)
        weights.append(model.state_dict())
    tested = [row["epoch"] for row in histories[1] if "test_errors" in row]
    assert tested == [3, 6, 7]
    for row, every_epoch in zip(histories[1], histories[0], strict=True):
        assert row["train_loss"] == every_epoch["train_loss"]
        if "test_errors" in row:
            assert row["test_errors"] == every_epoch["test_errors"]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_cached_teacher_logits_give_the_same_training_as_online(tiny_split, trained_teacher):
    config = TrainConfig(
        epochs=3, batch_size=32, lr=0.05, loss_args={"temperature": 4.0, "alpha": 0.7}
    )
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
    config = TrainConfig(
        epochs=2, batch_size=32, lr=0.05, jitter=1, loss_args={"temperature": 3.0, "alpha": 0.5}
    )
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
    assert [row["lr"] for row in history] == pytest.approx([0.08, 0.04, 0.02])  # as used


def test_a_bf16_run_caches_the_teachers_logits_in_fp32(tiny_split, trained_teacher):
    config = TrainConfig(epochs=1, batch_size=32, lr=0.05, bf16=True, loss="hinton")
    cached, given = _model(), _model()
    fit(cached, tiny_split, config, teacher=trained_teacher, progress=False)
    fp32_logits = predict_logits(trained_teacher, tiny_split.images)
    fit(given, tiny_split, config, teacher_logits=fp32_logits, progress=False)
    pairs = zip(cached.parameters(), given.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


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
    config = TrainConfig(epochs=2, batch_size=32, loss_args={"temperature": 2.0})
    student, from_logits = _model(seed=8), _model(seed=8)
    result = fit(student, tiny_split, config, teacher=[trained_teacher, other], progress=False)
    # the members' logits, stacked, are the ensemble teacher: the same run bit for bit
    given = fit(from_logits, tiny_split, config, teacher_logits=logits, progress=False)
    assert [r["train_loss"] for r in result.history] == [r["train_loss"] for r in given.history]
    assert all(
        torch.equal(a, b)
        for a, b in zip(student.parameters(), from_logits.parameters(), strict=True)
    )
    mean_probs = logits.softmax(-1).mean(0)
    errors = int((mean_probs.argmax(1) != tiny_split.labels).sum())
    assert evaluate([trained_teacher, other], tiny_split)["errors"] == errors


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
        ({"loss_args": {"temperature": 0.0}}, "temperature must be"),
        ({"loss": "hinton", "loss_args": {"alpha": 1.2}}, "alpha"),
        ({"optimizer": "lbfgs"}, "optimizer must be"),
        ({"patience": 3}, "needs a validation split"),
        ({"jitter": -1}, "jitter must be >= 0"),
        ({"lr": 0.0}, "learning rate must be > 0"),
        ({"grad_clip": 0.0}, "gradient clipping norm must be > 0"),
        ({"schedule": "step"}, "schedule must be one of"),
        ({"lr_decay": 1.5}, r"lr decay per epoch must be in \(0, 1\]"),
        ({"test_every": 0}, r"test_every \(--test-every\) must be >= 1 epoch"),
    ],
)
def test_bad_config(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes).validate()


def test_progress_bar_shows_the_training_speed_in_examples_per_second(tiny_split, monkeypatch):
    """On a terminal the bar reports examples/s beside the epoch's loss (its value depends on
    the machine and is not checked); without progress nothing is written."""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    config = TrainConfig(epochs=2, batch_size=64, device="cpu")
    for progress in (True, False):
        terminal = Terminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        fit(_model(), tiny_split, config, progress=progress)
        shown = terminal.getvalue()
        if progress:
            assert re.search(r"train_loss=\S+, examples/s=\d+", shown), shown
        else:
            assert shown == ""


# --------------------------------------------------------------------------- the loss the loop runs


def test_the_loop_runs_distillation_loss_bit_for_bit(tiny_split, trained_teacher):
    """An epoch of fit equals a hand-written loop over distillation_loss, weights bit for bit."""
    config = TrainConfig(
        epochs=1, batch_size=64, lr=0.05, schedule="constant",
        loss="hinton", loss_args={"temperature": 3.0, "alpha": 0.6},
    )  # fmt: skip
    looped = _model(seed=4)
    result = fit(looped, tiny_split, config, teacher=trained_teacher, progress=False)

    by_hand = _model(seed=4)
    optimizer = torch.optim.SGD(
        by_hand.parameters(), lr=0.05, momentum=0.9, nesterov=True, fused=True
    )
    teacher_logits = predict_logits(trained_teacher, tiny_split.images)
    generator = torch.Generator().manual_seed(config.seed)
    losses = []
    for index in batch_indices(len(tiny_split), 64, generator):
        x, y = tiny_split.images[index], tiny_split.labels[index]
        loss = distillation_loss(by_hand(x), teacher_logits[index], y, temperature=3.0, alpha=0.6)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    for p, q in zip(looped.parameters(), by_hand.parameters(), strict=True):
        assert torch.equal(p, q)
    assert result.history[0]["train_loss"] == float(torch.stack(losses).mean())
    terms = {k for k in result.history[0] if k.startswith("train_")}
    assert terms == {"train_loss", "train_soft", "train_hard"}
    row = result.history[0]
    assert row["train_soft"] + row["train_hard"] == pytest.approx(row["train_loss"], rel=1e-6)


def test_a_loss_object_can_be_given_instead_of_the_config_naming_one(tiny_split, trained_teacher):
    named = TrainConfig(epochs=1, batch_size=64, loss="hinton", loss_args={"temperature": 2.0})
    a, b = _model(seed=6), _model(seed=6)
    fit(a, tiny_split, named, teacher=trained_teacher, progress=False)
    loss = make_loss("hinton", temperature=2.0)
    fit(b, tiny_split, TrainConfig(epochs=1, batch_size=64), teacher=trained_teacher, loss=loss,
        progress=False)  # fmt: skip
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="not both"):
        fit(b, tiny_split, named, teacher=trained_teacher, loss=loss, progress=False)


def test_an_ensemble_teacher_distills_the_mean_of_its_members_probabilities(
    tiny_split, trained_teacher
):
    """Through fit: an ensemble equals one teacher whose soft targets are the members' mean."""
    other = _model("mlp:8", seed=7)
    fit(other, tiny_split, TrainConfig(epochs=2, batch_size=32), progress=False)
    members = predict_logits([trained_teacher, other], tiny_split.images).double()
    temperature = 2.0
    mean_probs = torch.softmax(members / temperature, dim=-1).mean(dim=0)
    as_one = (temperature * mean_probs.log()).float()  # softmax(as_one / T) = mean_probs
    config = TrainConfig(epochs=2, batch_size=32, loss_args={"temperature": temperature})
    ensemble, single = _model(seed=8), _model(seed=8)
    a = fit(ensemble, tiny_split, config, teacher=[trained_teacher, other], progress=False)
    b = fit(single, tiny_split, config, teacher_logits=as_one, progress=False)
    for row_a, row_b in zip(a.history, b.history, strict=True):
        assert row_a["train_loss"] == pytest.approx(row_b["train_loss"], rel=1e-5)
    for p, q in zip(ensemble.parameters(), single.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


class _Recorder(DistillationObjective):
    """A loss that records what the loop gives it (and when), then trains on hard labels."""

    name = "recorder-test"
    supports_ensemble = False

    def __init__(self) -> None:
        super().__init__()
        self.teacher_shapes: set[tuple[int, ...] | None] = set()
        self.epochs: list[tuple[int, int]] = []

    def forward(self, student_logits, teacher_logits, labels):
        self.teacher_shapes.add(None if teacher_logits is None else tuple(teacher_logits.shape))
        return {"ce": torch.nn.functional.cross_entropy(student_logits, labels)}

    def on_epoch(self, epoch: int, epochs: int) -> None:
        self.epochs.append((epoch, epochs))


def test_the_loop_gives_raw_teacher_logits_and_calls_on_epoch(tiny_split, trained_teacher):
    recorder = _Recorder()
    config = TrainConfig(epochs=2, batch_size=64)
    result = fit(_model(), tiny_split, config, teacher=trained_teacher, loss=recorder,
                 progress=False)  # fmt: skip
    assert recorder.teacher_shapes == {(64, 4)} and recorder.epochs == [(0, 2), (1, 2)]
    assert result.history[0]["train_ce"] == result.history[0]["train_loss"]
    hard = _Recorder()  # the probe before training and the steps: no teacher
    fit(_model(), tiny_split, config, loss=hard, progress=False)
    assert hard.teacher_shapes == {None}
    # a loss that defines no ensemble refuses one before training starts
    with pytest.raises(ValueError, match="does not define an ensemble teacher"):
        fit(_model(), tiny_split, config, teacher=[trained_teacher, trained_teacher],
            loss=_Recorder(), progress=False)  # fmt: skip


def test_a_loss_that_needs_a_teacher_fails_before_training(tiny_split):
    with pytest.raises(ValueError, match="'hinton' loss needs a teacher"):
        fit(_model(), tiny_split, TrainConfig(loss="hinton"), progress=False)
    with pytest.raises(ValueError, match="no teacher: hard labels .* take no arguments"):
        fit(_model(), tiny_split, TrainConfig(loss_args={"temperature": 2.0}), progress=False)


def test_one_teacher_cache_serves_every_temperature(tiny_split, trained_teacher, monkeypatch):
    """The cache holds raw logits: given once, they give each T what fit computes itself."""
    logits = predict_logits(trained_teacher, tiny_split.images)
    for temperature in (1.0, 5.0):
        config = TrainConfig(epochs=1, batch_size=64, loss_args={"temperature": temperature})
        a, b = _model(seed=9), _model(seed=9)
        fit(a, tiny_split, config, teacher_logits=logits, progress=False)
        fit(b, tiny_split, config, teacher=trained_teacher, progress=False)
        for p, q in zip(a.parameters(), b.parameters(), strict=True):
            assert torch.equal(p, q)


# --------------------------------------------------------------------------- configs of any version


def test_config_json_records_the_loss_and_all_its_arguments(tmp_path):
    teacher = tmp_path / "teacher"
    execute(RunSpec(model="mlp:8", train=TrainConfig(epochs=1)), teacher, progress=False)
    saved = json.loads((teacher / "config.json").read_text())
    assert (saved["train"]["loss"], saved["train"]["loss_args"]) == ("cross-entropy", {})
    spec = RunSpec(
        model="mlp:8",
        teachers=[str(teacher)],
        train=TrainConfig(epochs=1, loss_args={"alpha": 0.5}),
    )
    execute(spec, tmp_path / "student", progress=False)
    saved = json.loads((tmp_path / "student" / "config.json").read_text())
    assert saved["train"]["loss"] == "hinton"
    assert saved["train"]["loss_args"] == {"temperature": 1.0, "alpha": 0.5}
    assert "temperature" not in saved["train"] and "alpha" not in saved["train"]
    assert RunSpec.from_dict(saved).train.loss_args == {"temperature": 1.0, "alpha": 0.5}
    history = (tmp_path / "student" / "history.csv").read_text().splitlines()[0].split(",")
    assert history[:5] == ["epoch", "lr", "train_loss", "train_soft", "train_hard"]


def _as_old_version(train: dict, teachers: bool) -> dict:
    """A train config as kdistill wrote it before lr_decay, grad_clip and losses as objects."""
    old = {k: v for k, v in train.items() if k not in ("lr_decay", "grad_clip", "loss_args")}
    args = train["loss_args"] if teachers else {}
    old["temperature"], old["alpha"] = args.get("temperature", 1.0), args.get("alpha", 1.0)
    old.pop("loss")
    return old


class _Killed(Exception):
    pass


@pytest.mark.parametrize("teachers", [False, True])
def test_a_run_saved_before_newer_fields_resumes_exactly(tmp_path, monkeypatch, teachers):
    """config.json and checkpoint without lr_decay, grad_clip, holdout_fraction, teacher_model,
    loss (but with temperature and alpha): the run resumes and ends as an unbroken one."""
    if teachers:
        execute(
            RunSpec(model="mlp:16", train=TrainConfig(epochs=2)), tmp_path / "t", progress=False
        )
    spec = RunSpec(
        model="mlp:16,dropout=0.2",
        teachers=[str(tmp_path / "t")] if teachers else [],
        train=TrainConfig(epochs=3, batch_size=256, lr=0.05, loss_args=(
            {"temperature": 4.0, "alpha": 0.7} if teachers else {}
        )),
    )  # fmt: skip
    execute(spec, tmp_path / "unbroken", progress=False)

    real_write = runs_module.write_history

    def killed_after_one_epoch(path, rows):
        real_write(path, rows)
        if len(rows) == 1:
            raise _Killed

    monkeypatch.setattr(runs_module, "write_history", killed_after_one_epoch)
    folder = tmp_path / "old"
    with pytest.raises(_Killed):
        execute(spec, folder, progress=False)
    monkeypatch.setattr(runs_module, "write_history", real_write)

    saved = json.loads((folder / "config.json").read_text())
    for key in ("holdout_fraction", "teacher_model"):
        del saved[key]
    saved["train"] = _as_old_version(saved["train"], teachers)
    (folder / "config.json").write_text(json.dumps(saved))
    state = load_checkpoint(folder)
    state["config"] = _as_old_version(state["config"], teachers)
    state.pop("loss_state")
    save_checkpoint(folder, state, state["epoch"])

    execute(spec, folder, resume=True, progress=False)
    a, b = (load_file(f / "model.safetensors") for f in (folder, tmp_path / "unbroken"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # and another loss setting is still refused, naming the difference
    changed = replace(spec, train=replace(spec.train, seed=1))
    with pytest.raises(ValueError, match=r"other settings \(train.seed: 0 -> 1\)"):
        execute(changed, folder, resume=True, progress=False)


def test_committed_result_configs_read_as_their_loss():
    """Every config.json under docs/results reads back as the loss it trained with, those made
    before losses were objects (temperature and alpha beside the other settings) included."""
    folders = sorted(RESULTS.glob("**/config.json"))
    assert len(folders) > 60
    for path in folders:
        saved = json.loads(path.read_text())
        spec = RunSpec.from_dict(saved)
        if "loss" in saved["train"]:  # today's form: read back as written
            assert (spec.train.loss, spec.train.loss_args) == (
                saved["train"]["loss"],
                saved["train"]["loss_args"],
            )
        elif saved["teachers"]:
            assert spec.train.loss == "hinton"
            old = saved["train"]
            assert spec.train.loss_args == {
                "temperature": old["temperature"],
                "alpha": old["alpha"],
            }
        else:
            assert (spec.train.loss, spec.train.loss_args) == ("cross-entropy", {})
        assert config_differences(saved, asdict(spec)) == []
        other = replace(spec, train=replace(spec.train, loss_args={**spec.train.loss_args}))
        if saved["teachers"]:
            other.train.loss_args["temperature"] += 1
            assert config_differences(saved, asdict(other))[0].startswith("train.loss_args")


def test_identity_fields_cover_every_setting():
    """A field added to RunSpec or TrainConfig must be placed in kdistill.compat's lists."""
    assert set(compat.TRAIN_IDENTITY) == {f.name for f in fields(TrainConfig)}
    assert set(compat.RUN_IDENTITY) == {f.name for f in fields(RunSpec)}
    assert set(compat.TRAIN_ADDED) <= set(compat.TRAIN_IDENTITY)
    assert set(compat.RUN_ADDED) <= set(compat.RUN_IDENTITY)


@pytest.mark.parametrize("early_stopping", [False, True])
def test_a_run_scores_its_test_set_once(tmp_path, monkeypatch, early_stopping):
    """fit's test scores of its last epoch are the run's test metrics: no second pass over the
    test set (issue 15). With early stopping the weights returned are the best epoch's, which
    the run scores again."""
    from kdistill import distributed
    from kdistill.data import load_dataset

    scored, real_evaluate = [], distributed.evaluate

    def counting(model, split, *args, **kwargs):
        scored.append(len(split))
        return real_evaluate(model, split, *args, **kwargs)

    monkeypatch.setattr(distributed, "evaluate", counting)
    extra = dict(val_fraction=0.2, patience=1) if early_stopping else {}
    config = TrainConfig(epochs=3, batch_size=64, lr=0.05, **extra)
    spec = RunSpec(model="mlp:16", dataset="digits", train=config)
    metrics = execute(spec, tmp_path, progress=False)

    test = load_dataset("digits").test
    tested = [n for n in scored if n == len(test)]
    assert len(tested) == metrics["epochs_run"] + early_stopping
    model, _ = runs_module.load_run_model(tmp_path)
    assert metrics["test"] == evaluate(model, test, config.eval_batch_size)
