"""Teacher-logits files: round trip, exactness against the online teacher under jitter,
lookup by example for transfer subsets, and every refusal (one line, nothing written)."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import shlex
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from torch import nn

import kdistill.batches
from kdistill.batches import batch_source, caches_views
from kdistill.cli import main
from kdistill.compat import config_differences, current_train_config
from kdistill.data import (
    drop_classes,
    jitter,
    load_dataset,
    random_shifts,
    shift_grid,
    shift_images,
    stratified_fraction,
    train_val_split,
    view_index,
)
from kdistill.errors import KDistillError
from kdistill.losses import log_soft_targets
from kdistill.teacher_logits import (
    DatasetIdentity,
    _metadata_sha256,
    compute_teacher_logits,
    dataset_identity,
    log_soft_target_table,
    read_teacher_logits,
    write_teacher_logits,
)
from kdistill.train import TrainConfig, evaluate, fit

FAST = ["--no-progress", "--device", "cpu"]


def _old_jitter(images, max_shift, generator=None):
    """kdistill's jitter before it was split in two (commit 7f2c788), verbatim."""
    if max_shift <= 0:
        return images
    b, c, h, w = images.shape
    k = max_shift
    padded = torch.nn.functional.pad(images, (k, k, k, k))
    shifts = torch.randint(0, 2 * k + 1, (2, b), generator=generator, device=images.device)
    rows = (torch.arange(h, device=images.device)[None, :] + shifts[0][:, None])[:, :, None]
    cols = (torch.arange(w, device=images.device)[None, :] + shifts[1][:, None])[:, None, :]
    flat = padded.reshape(b, c, -1)
    index = (rows * (w + 2 * k) + cols).reshape(b, 1, h * w).expand(b, c, h * w)
    return flat.gather(2, index).reshape(b, c, h, w)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def teacher(digits):
    """A small MLP trained 3 epochs on digits (about 85% right): soft targets worth copying."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10))
    fit(model, digits.train, TrainConfig(epochs=3, device="cpu"), progress=False)
    return model.eval()


def _student() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 24), nn.ReLU(), nn.Linear(24, 10))


def _write(path, digits, teacher, max_shift=2, dtype="float32", identity=None, labels=None):
    logits = compute_teacher_logits(teacher, digits.train.images, max_shift, rows_per_pass=3000)
    identity = identity or dataset_identity(digits)
    return write_teacher_logits(
        path,
        logits,
        identity=identity,
        labels=digits.train.labels if labels is None else labels,
        max_shift=max_shift,
        teachers=[{"source": "test", "weights_sha256": "0" * 64}],
        dtype=dtype,
    )


@pytest.fixture(scope="module")
def logits_file(digits, teacher, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("logits") / "teacher.logits"
    _write(path, digits, teacher)
    return path


# --------------------------------------------------------------------------- shifts


@pytest.mark.parametrize("max_shift", [1, 2, 3])
def test_jitter_is_still_the_same_draws_and_pixels(max_shift):
    images = torch.rand(300, 1, 9, 7)
    old = _old_jitter(images, max_shift, torch.Generator().manual_seed(5))
    new = jitter(images, max_shift, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    composed = shift_images(images, random_shifts(300, max_shift, g), max_shift)
    assert torch.equal(old, new) and torch.equal(old, composed)


def test_shift_direction_and_view_index():
    image = torch.zeros(1, 1, 5, 5)
    image[0, 0, 2, 2] = 1.0
    moved = shift_images(image, torch.tensor([[1, -2]]), 2)  # output[i, j] = input[i+1, j-2]
    assert moved[0, 0, 1, 4] == 1.0 and moved.sum() == 1.0
    grid = shift_grid(2)
    assert len(grid) == 25 and grid[0] == (-2, -2) and grid[12] == (0, 0)
    assert view_index(torch.tensor(grid), 2).tolist() == list(range(25))


# --------------------------------------------------------------------------- the file


def test_round_trip_keeps_logits_and_metadata(digits, teacher, logits_file):
    read = read_teacher_logits(logits_file, expect=dataset_identity(digits), max_shift=2)
    expected = compute_teacher_logits(teacher, digits.train.images, 2)
    assert read.logits.shape == (1, 25, len(digits.train), 10) and not read.ensemble
    assert torch.allclose(read.logits[0], expected, atol=1e-5)
    assert read.dataset == "digits" and read.max_shift == 2 and read.metadata["dtype"] == "float32"
    assert json.loads(read.metadata["views"])[12] == [0, 0]
    assert read.teachers == [{"source": "test", "weights_sha256": "0" * 64}]
    with torch.no_grad():
        center = teacher(digits.train.images[:7])
    assert torch.allclose(read.logits_of(torch.arange(7)), center, atol=1e-5)


def test_float16_halves_the_file_within_half_precision(digits, teacher, logits_file, tmp_path):
    half = tmp_path / "half.logits"
    _write(half, digits, teacher, dtype="float16")
    full, read = read_teacher_logits(logits_file), read_teacher_logits(half)
    assert read.logits.dtype == torch.float16
    assert half.stat().st_size < 0.55 * logits_file.stat().st_size
    assert torch.allclose(read.logits.float(), full.logits, rtol=1e-3, atol=1e-3)


def test_an_ensemble_file_gives_the_mean_of_probabilities(digits, teacher, tmp_path):
    torch.manual_seed(3)
    other = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    members = [teacher, other]
    logits = compute_teacher_logits(members, digits.train.images, 1)
    assert logits.shape == (2, 9, len(digits.train), 10)
    path = tmp_path / "ensemble.logits"
    records = [{"source": "a"}, {"source": "b"}]
    write_teacher_logits(
        path, logits, identity=dataset_identity(digits), labels=digits.train.labels,
        max_shift=1, teachers=records,
    )  # fmt: skip
    read = read_teacher_logits(path)
    ids, shifts = torch.tensor([3, 9]), torch.tensor([[1, -1], [0, 1]])
    x = shift_images(digits.train.images[ids], shifts, 1)
    with torch.no_grad():
        online = log_soft_targets([m(x) for m in members], 4.0)
    table = log_soft_target_table(read, read.positions(ids), 1, 4.0)
    assert torch.allclose(table[view_index(shifts, 1), torch.arange(2)], online, atol=1e-5)
    assert read.logits_of(ids, shifts).shape == (2, 2, 10)


# --------------------------------------------------------------------------- exactness


def test_soft_targets_from_the_file_equal_the_online_teachers_on_the_same_shifts(
    digits, teacher, logits_file
):
    read = read_teacher_logits(logits_file)
    for run_shift in (1, 2):  # a run may jitter less than the file holds
        ids = torch.randperm(len(digits.train), generator=torch.Generator().manual_seed(0))[:500]
        shifts = random_shifts(500, run_shift, torch.Generator().manual_seed(run_shift))
        with torch.no_grad():
            online = log_soft_targets(teacher(shift_images(digits.train.images[ids], shifts, 2)), 8)
        table = log_soft_target_table(read, read.positions(ids), run_shift, 8.0)
        from_file = table[view_index(shifts, run_shift), torch.arange(500)]
        assert torch.allclose(from_file, online, rtol=0, atol=1e-5)


def test_jittered_distillation_from_the_file_equals_the_online_teacher(
    digits, teacher, logits_file
):
    config = TrainConfig(epochs=3, jitter=2, loss_args={"temperature": 4.0}, lr=0.05, device="cpu")
    runs = {}
    for source in ("online", "file"):
        student = _student()
        kwargs = (
            {"teacher": teacher}
            if source == "online"
            else {"teacher_logits": read_teacher_logits(logits_file)}
        )
        result = fit(student, digits.train, config, test=digits.test, progress=False, **kwargs)
        runs[source] = (result.history, evaluate(student, digits.test)["errors"])
    (online, online_errors), (cached, cached_errors) = runs["online"], runs["file"]
    assert online_errors == cached_errors
    assert [r["test_errors"] for r in online] == [r["test_errors"] for r in cached]
    for a, b in zip(online, cached, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)


def _counting_forwards(model: nn.Module) -> list[int]:
    """Count the examples ``model`` is run on (one entry per forward pass)."""
    seen: list[int] = []
    model.register_forward_hook(lambda module, args, out: seen.append(len(args[0])))
    return seen


@pytest.fixture
def no_views_kept():
    """No views table left by an earlier test: each test counts the teacher passes it makes."""
    kdistill.batches.forget_views()


@pytest.mark.parametrize("ensemble", [False, True])
def test_jittered_views_computed_once_equal_the_online_teacher(
    digits, teacher, ensemble, no_views_kept
):
    # 9 epochs at jitter 1: its 9 views cost no more teacher passes than running it online
    config = TrainConfig(epochs=9, jitter=1, loss_args={"temperature": 4.0}, lr=0.05, device="cpu")
    runs = {}
    for views in (True, False):
        members = [copy.deepcopy(teacher) for _ in range(2 if ensemble else 1)]
        seen = [_counting_forwards(member) for member in members]
        student = _student()
        run_config = replace(config, cache_jitter_views=views)
        given = members if ensemble else members[0]
        result = fit(
            student, digits.train, run_config, teacher=given, test=digits.test, progress=False
        )
        runs[views] = result.history, evaluate(student, digits.test)["errors"], seen
    (cached, cached_errors, cached_seen), (online, online_errors, online_seen) = runs.values()
    assert cached_errors == online_errors
    assert [r["test_errors"] for r in cached] == [r["test_errors"] for r in online]
    for a, b in zip(cached, online, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    examples = len(digits.train)
    for member_cached, member_online in zip(cached_seen, online_seen, strict=True):
        # (+ 1: fit first checks each model on one example)
        assert sum(member_online) == 9 * examples + 1  # every epoch, on each batch
        assert sum(member_cached) == 9 * examples + 1  # once, on each example's 9 views
        assert len(member_cached) < len(member_online) / 10  # in a few large passes


def test_the_next_run_from_the_same_teacher_reuses_its_views(digits, teacher, no_views_kept):
    """A sweep's cells (or a reproduction worker's runs) from one teacher on one transfer set
    compute the views once; the runs are the same bit for bit; other weights, other views."""
    config = TrainConfig(epochs=9, jitter=1, loss_args={"temperature": 4.0}, lr=0.05, device="cpu")
    twin = copy.deepcopy(teacher)  # another object with the same weights: the same views
    seen = [_counting_forwards(model) for model in (teacher, twin)]
    histories = []
    for model in (teacher, twin):
        histories.append(
            fit(_student(), digits.train, config, teacher=model, progress=False).history
        )
    without_time = [
        [{k: v for k, v in row.items() if k != "seconds"} for row in h] for h in histories
    ]
    assert without_time[0] == without_time[1]
    assert sum(seen[1]) == 1  # only fit's check of the model on one example
    changed = copy.deepcopy(teacher)
    with torch.no_grad():
        changed[1].bias[0] += 1.0
    seen_changed = _counting_forwards(changed)
    fit(_student(), digits.train, config, teacher=changed, progress=False)
    assert sum(seen_changed) == 9 * len(digits.train) + 1  # computed again


def test_jittered_views_are_cached_only_where_they_pay(digits, teacher, monkeypatch):
    source = batch_source(digits.train, 128, max_shift=2)  # 25 views
    assert caches_views(source, 1, 10, allowed=True, epochs=25)
    assert not caches_views(source, 1, 10, allowed=True, epochs=24)  # online is cheaper
    assert not caches_views(source, 1, 10, allowed=False, epochs=60)
    assert not caches_views(batch_source(digits.train, 128, 0), 1, 10, allowed=True, epochs=60)
    table = 4 * 3 * 25 * len(digits.train) * 10  # three members' fp32 views
    monkeypatch.setattr(kdistill.batches, "VIEW_CACHE_MAX_BYTES", table)
    assert caches_views(source, 3, 10, allowed=True, epochs=60)
    assert not caches_views(source, 4, 10, allowed=True, epochs=60)  # would not fit
    # a run saved before the option ran its jittered teacher online, and resumes so; on runs
    # it cannot change (no jitter, no teacher) the option is not part of what a run is
    new = asdict(TrainConfig(epochs=60, jitter=2))
    saved = {key: value for key, value in new.items() if key != "cache_jitter_views"}
    assert current_train_config(saved, distilling=True)["cache_jitter_views"] is False
    assert config_differences(saved, new, distilling=True) == ["cache_jitter_views: False -> True"]
    assert config_differences(saved, new, distilling=False) == []
    unjittered = {**saved, "jitter": 0}
    assert config_differences(unjittered, {**new, "jitter": 0}, distilling=True) == []


def test_transfer_subsets_look_the_file_up_by_example(digits, teacher, logits_file):
    read = read_teacher_logits(logits_file)
    no_threes = drop_classes(digits.train, [3])
    part = stratified_fraction(no_threes, 0.3, seed=2)
    rest, held_out = train_val_split(part, 0.25, seed=1)
    for subset in (no_threes, part, rest, held_out):
        ids = subset.example_ids
        assert torch.equal(digits.train.labels[ids], subset.labels)
        assert torch.equal(digits.train.images[ids], subset.images)
        with torch.no_grad():
            expected = teacher(subset.images)
        looked_up = read.logits_of(ids)
        assert torch.allclose(looked_up, expected, atol=1e-5)
    # fit on the subset from the file = fit on it with the teacher online (no jitter: cached)
    hinton = {"temperature": 4.0}
    config = TrainConfig(epochs=2, loss_args=hinton, lr=0.05, val_fraction=0.2, device="cpu")
    errors = []
    for kwargs in ({"teacher": teacher}, {"teacher_logits": read}):
        student = _student()
        fit(student, no_threes, config, progress=False, **kwargs)
        errors.append(evaluate(student, digits.test)["errors"])
    assert errors[0] == errors[1]


# --------------------------------------------------------------------------- refusals


def _identity(digits, **changes) -> DatasetIdentity:
    base = dataset_identity(digits)
    return DatasetIdentity(**{**base.__dict__, **changes})


def _rewrite_metadata(source: Path, target: Path, **changes: str) -> None:
    """A copy of ``source`` with metadata changed and re-signed (a well-formed other file)."""
    payload = source.read_bytes()
    size = int.from_bytes(payload[:8], "little")
    metadata = {**json.loads(payload[8 : 8 + size])["__metadata__"], **changes}
    metadata["metadata_sha256"] = _metadata_sha256(metadata)
    target.write_bytes(safetensors_save(safetensors_load(payload), metadata))


def _flip_byte(source: Path, target: Path, offset: int) -> None:
    payload = bytearray(source.read_bytes())
    payload[offset] ^= 0x40
    target.write_bytes(bytes(payload))


def _bad_files(digits, teacher, logits_file: Path, folder: Path) -> dict[str, tuple[Path, str]]:
    """A file per refusal case and the words its one-line error must contain."""
    cases: dict[str, tuple[Path, str]] = {}
    other = folder / "other-dataset.logits"
    _write(other, digits, teacher, identity=_identity(digits, name="fashion-mnist"))
    cases["wrong dataset"] = (other, "written for dataset fashion-mnist, not digits")
    order = torch.randperm(len(digits.train), generator=torch.Generator().manual_seed(0))
    shuffled = folder / "shuffled.logits"
    _write(shuffled, digits, teacher, identity=_identity(digits, data_sha256="f" * 64),
           labels=digits.train.labels[order])  # fmt: skip
    cases["wrong order"] = (shuffled, "another example order")
    torch.manual_seed(0)
    five = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
    classes = folder / "five-classes.logits"
    _write(classes, digits, five, identity=_identity(digits, num_classes=5))
    cases["wrong class count"] = (classes, "has 5 classes, dataset digits has 10")
    truncated = folder / "truncated.logits"
    truncated.write_bytes(logits_file.read_bytes()[: logits_file.stat().st_size // 2])
    cases["truncated"] = (truncated, "truncated or corrupt")
    flipped_data = folder / "flipped-data.logits"
    _flip_byte(logits_file, flipped_data, logits_file.stat().st_size - 1000)
    cases["corrupt logits bytes"] = (flipped_data, "fail their checksum")
    flipped_meta = folder / "flipped-metadata.logits"
    _flip_byte(logits_file, flipped_meta, logits_file.read_bytes().index(b'"digits"') + 3)
    cases["corrupt metadata bytes"] = (flipped_meta, "truncated or corrupt")
    views = folder / "views.logits"
    wrong_views = [[dy, dx] for dy, dx in shift_grid(2)][::-1]
    _rewrite_metadata(logits_file, views, views=json.dumps(wrong_views))
    cases["wrong view set"] = (views, "not every shift in [-2, 2]")
    version = folder / "version.logits"
    _rewrite_metadata(logits_file, version, version="99")
    cases["other version"] = (version, "format version 99")
    notes = folder / "notes.txt"
    notes.write_text("not a safetensors file at all")
    cases["not safetensors"] = (notes, "truncated or corrupt")
    return cases


@pytest.fixture(scope="module")
def bad_files(digits, teacher, logits_file, tmp_path_factory):
    return _bad_files(digits, teacher, logits_file, tmp_path_factory.mktemp("bad"))


CASES = [
    "wrong dataset", "wrong order", "wrong class count", "truncated", "corrupt logits bytes",
    "corrupt metadata bytes", "wrong view set", "other version", "not safetensors",
]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_read_refuses_with_one_line(digits, bad_files, case):
    path, words = bad_files[case]
    with pytest.raises(KDistillError) as error:
        read_teacher_logits(path, expect=dataset_identity(digits), max_shift=2)
    assert words in str(error.value) and "\n" not in str(error.value)


def test_read_refuses_a_jitter_larger_than_the_files(logits_file):
    with pytest.raises(KDistillError, match="holds shifts up to 2 pixel.*--jitter 3"):
        read_teacher_logits(logits_file, max_shift=3)
    with pytest.raises(KDistillError, match="--jitter 3"):
        fit(_student(), load_dataset("digits").train, TrainConfig(epochs=1, jitter=3),
            teacher_logits=read_teacher_logits(logits_file), progress=False)  # fmt: skip


def test_fit_refuses_a_transfer_set_the_file_was_not_written_for(digits, logits_file):
    read = read_teacher_logits(logits_file)
    relabelled = digits.train.subset(torch.arange(len(digits.train)))
    relabelled.labels = (relabelled.labels + 1) % 10
    with pytest.raises(KDistillError, match="does not match this transfer set: example 0"):
        fit(_student(), relabelled, TrainConfig(epochs=1), teacher_logits=read, progress=False)


@pytest.mark.parametrize("case", CASES)
def test_distill_refuses_a_bad_file_and_writes_nothing(bad_files, case, tmp_path, capsys):
    path, words = bad_files[case]
    out = tmp_path / "student"
    argv = ["distill", "--teacher-logits", str(path), "--model", "mlp:16", "--jitter", "2"]
    assert main([*argv, "--epochs", "1", "--out", str(out), *FAST]) == 2
    error = capsys.readouterr().err
    assert words in error and error.count("\n") == 1
    assert not out.exists()


def test_distill_refuses_too_much_jitter_and_both_sources(logits_file, tmp_path, capsys):
    out = tmp_path / "student"
    base = ["distill", "--model", "mlp:16", "--epochs", "1", "--out", str(out), *FAST]
    assert main([*base, "--teacher-logits", str(logits_file), "--jitter", "3"]) == 2
    assert "--jitter 3" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # argparse: the two are mutually exclusive
        main([*base, "--teacher-logits", str(logits_file), "--teacher", "x"])
    assert exit_info.value.code == 2 and "not allowed with" in capsys.readouterr().err
    assert not out.exists()


# --------------------------------------------------------------------------- command line


def test_cli_writes_the_file_students_use_and_resume_refuses_a_changed_one(tmp_path, capsys):
    teacher, logits = tmp_path / "teacher", tmp_path / "teacher.logits"
    assert main(["train", "--model", "mlp:32", "--epochs", "2", "--out", str(teacher), *FAST]) == 0
    write = ["teacher-logits", str(teacher), "--dataset", "digits", "--jitter", "1"]
    assert main([*write, "--out", str(logits)]) == 0
    assert "(9, 1297, 10)" in capsys.readouterr().out
    read = read_teacher_logits(logits)
    from kdistill.teacher_logits import weights_sha256

    assert read.teachers[0]["weights_sha256"] == weights_sha256(teacher)
    before = logits.read_bytes()
    assert main([*write, "--out", str(logits)]) == 2  # refuses to overwrite
    assert "already exists" in capsys.readouterr().err and logits.read_bytes() == before

    student = tmp_path / "student"
    distill = ["distill", "--teacher-logits", str(logits), "--model", "mlp:16", "--jitter", "1",
               "--epochs", "1", "--out", str(student), *FAST]  # fmt: skip
    assert main(distill) == 0
    config = json.loads((student / "config.json").read_text())
    assert config["teacher_logits_sha256"] == read.sha256 and config["teachers"] == []
    assert config["teacher_logits_teachers_sha256"] == [weights_sha256(teacher)]
    capsys.readouterr()

    logits.unlink()
    assert main([*write, "--dtype", "float16", "--out", str(logits)]) == 0  # another file
    kept = {p.name: p.read_bytes() for p in student.iterdir() if p.is_file()}
    assert main([*distill, "--resume"]) == 2
    error = capsys.readouterr().err
    assert "has changed since" in error and error.count("\n") == 1
    assert {p.name: p.read_bytes() for p in student.iterdir() if p.is_file()} == kept


def test_sweep_reads_the_file_once_for_every_cell(logits_file, tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", "--teacher-logits", str(logits_file), "--model", "mlp:16", "--jitter", "1",
            "-T", "2,4", "--alpha", "0.5", "--epochs", "1", "--out", str(out), *FAST]  # fmt: skip
    assert main(argv) == 0
    assert len((out / "sweep.csv").read_text().splitlines()) == 3
    sha = read_teacher_logits(logits_file).sha256
    for cell in ("T2-alpha0.5-seed0", "T4-alpha0.5-seed0"):
        assert json.loads((out / cell / "config.json").read_text())["teacher_logits_sha256"] == sha
    assert main(argv) == 0  # finished cells are read back, the file checked against them


# --------------------------------------------------------------------------- guide, benchmark

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "guide.md"
BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "teacher_logits.py"


def test_guide_example_runs_as_written(tmp_path, monkeypatch):
    pattern = r"<!-- tested: teacher-logits -->\n```bash\n(.*?)```"
    match = re.search(pattern, GUIDE.read_text(), re.S)
    assert match, "no block tagged teacher-logits in docs/guide.md"
    commands = [
        shlex.split(line)
        for line in match.group(1).replace("\\\n", " ").splitlines()
        if line.startswith("kdistill ")
    ]
    assert [c[1] for c in commands] == ["train", "teacher-logits", "distill"]
    monkeypatch.chdir(tmp_path)
    for command in commands:
        extra = [] if command[1] == "teacher-logits" else ["--epochs", "2", *FAST]
        assert main(command[1:] + extra) == 0
    config = json.loads(Path("runs/student/config.json").read_text())
    assert config["teacher_logits_sha256"] == read_teacher_logits("runs/teacher.logits").sha256


def test_benchmark_quick_mode_writes_every_figure(tmp_path, monkeypatch):
    monkeypatch.delenv("KDISTILL_DATA", raising=False)
    spec = importlib.util.spec_from_file_location("kdistill_benchmark_teacher_logits", BENCHMARK)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    out = tmp_path / "quick.json"
    assert bench.main(["--quick", "--no-bf16", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r["row"] for r in result["write"]] == ["write 25 views, fp32"]
    assert result["write"][0]["forward_passes"] == 25 * bench.QUICK.train_examples
    assert [r["row"] for r in result["epochs"]] == [
        "cached logits, no jitter", "file, jitter 2", "online teacher, jitter 2",
    ]  # fmt: skip
    assert set(result["ratios"]) == {"file_jitter_over_cached", "file_jitter_over_online_jitter"}
    assert {r["file_dtype"] for r in result["fp16"]} == {"float32", "float16"}


def test_forgotten_views_are_computed_again(digits, teacher, no_views_kept):
    """forget_views frees the process's table: the next run from the same teacher recomputes."""
    config = TrainConfig(epochs=9, jitter=1, loss_args={"temperature": 4.0}, lr=0.05, device="cpu")
    seen = _counting_forwards(teacher)
    fit(_student(), digits.train, config, teacher=teacher, progress=False)
    kdistill.batches.forget_views()
    fit(_student(), digits.train, config, teacher=teacher, progress=False)
    assert sum(seen) == 2 * (9 * len(digits.train) + 1)  # each run: 9 views and fit's check
