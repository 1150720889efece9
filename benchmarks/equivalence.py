"""Bit-for-bit check that two versions of kdistill train the same weights and histories.

A refactor of the training loop or the losses must not change results. This script trains a
set of small cases on the bundled digits with whichever kdistill ``--source`` points at, and
writes the sha256 of every final ``state_dict`` and every history (without timings)::

    git archive 4d425ad | tar -x -C /tmp/kd-base          # the code before the change
    python benchmarks/equivalence.py --source /tmp/kd-base --out /tmp/kd-equiv/base
    python benchmarks/equivalence.py --out /tmp/kd-equiv/new --compare /tmp/kd-equiv/base

With ``--compare`` it also resumes the *other* version's interrupted runs (a checkpoint made by
the old code, continued by the new one) and prints one line per case: equal, or how far apart.
Cases: hard labels (also bf16 with jitter and lr decay), cached distillation (alpha 0.7, 1 and
0), online distillation (jitter; also bf16), an ensemble teacher (cached and online), early
stopping, resume (fit and a run folder), a run with the transfer-set options (dropped class,
hold-out, fraction) and gradient clipping, a sweep; the other data modes (a torch Dataset: cached,
online with jitter, randomly augmented, early stopping on a given val; a DataLoader), a
teacher-logits file (with jitter views, by example id with a hold-out, for a Dataset, an
ensemble run) and 2-rank torchrun runs (cached with an empty last shard; jitter with dropout).
A case the other version cannot run (e.g. no teacher-logits files yet) is skipped there.
"""

from __future__ import annotations

# isort: off
import argparse
import sys
from pathlib import Path


def _source() -> Path:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--source", default=str(Path(__file__).resolve().parents[1]))
    return Path(parser.parse_known_args()[0].source).resolve()


sys.path.insert(0, str(_source()))  # the kdistill under test
import kdistill  # noqa: E402  (before torch: it sets OMP_WAIT_POLICY)

# isort: on
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
from dataclasses import fields, replace  # noqa: E402

import torch  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import kdistill.runs as runs_module  # noqa: E402
from kdistill.data import load_dataset  # noqa: E402
from kdistill.models import build_model  # noqa: E402
from kdistill.runs import RunSpec, execute, load_run_model  # noqa: E402
from kdistill.sweep import Sweep, run_sweep  # noqa: E402
from kdistill.train import TrainConfig, fit  # noqa: E402

OLD_STYLE = "temperature" in {f.name for f in fields(TrainConfig)}  # T and alpha as fields


def config(temperature: float | None = None, alpha: float | None = None, **settings) -> TrainConfig:
    """A TrainConfig in the form this version takes (T and alpha as fields, or loss_args)."""
    settings = {"batch_size": 64, "lr": 0.05, "device": "cpu", **settings}
    if temperature is None:
        return TrainConfig(**settings)
    if OLD_STYLE:
        return TrainConfig(temperature=temperature, alpha=alpha, **settings)
    args = {"temperature": temperature, "alpha": alpha}
    return TrainConfig(loss="hinton", loss_args=args, **settings)


def digest_state(state: dict[str, torch.Tensor]) -> str:
    """sha256 of a state_dict's names, dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        h.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        h.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return h.hexdigest()


def untimed(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


class Stop(Exception):
    """Stands in for a kill right after a checkpoint."""


def stop_after(epochs: int):
    def on_epoch(history: list[dict]) -> None:
        if len(history) == epochs:
            raise Stop

    return on_epoch


def student(seed: int = 5, spec: str = "mlp:32,dropout=0.2") -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(spec, (1, 8, 8), 10)


class Cases:
    """Trains the cases into ``out`` and records each one's digests (see the module docstring)."""

    def __init__(self, out: Path, compare: Path | None) -> None:
        self.out, self.compare = out, compare
        self.data = load_dataset("digits")
        self.results: dict[str, dict] = {}

    def record(self, name: str, model: torch.nn.Module, history: list[dict]) -> None:
        """Save the weights of case ``name`` and note their sha256 and the history."""
        state = {k: v.clone() for k, v in model.state_dict().items()}
        torch.save(state, self.out / f"{name}.pt")
        self.results[name] = {"weights": digest_state(state), "history": untimed(history)}
        print(f"{name}: {self.results[name]['weights'][:16]}", flush=True)

    def record_run(self, name: str, folder: Path) -> None:
        """:meth:`record` of the finished run in ``folder``."""
        model, _ = load_run_model(folder)
        self.record(name, model, runs_module.read_history(folder / "history.csv"))

    def run(self) -> dict:
        """Every case; returns name -> {"weights": sha256, "history": rows}."""
        teacher_dir, member_dir = self.teachers()
        teacher, member = load_run_model(teacher_dir)[0], load_run_model(member_dir)[0]
        self.fit_cases(teacher, member)
        self.fit_resume(teacher)
        self.run_resume(teacher_dir)
        self.transfer_set(teacher_dir, member_dir)
        self.sweep(teacher_dir)
        self.own_data(teacher, member)
        self.logits_file(teacher_dir, member_dir)
        self.torchrun(teacher_dir)
        return self.results

    def teachers(self) -> tuple[Path, Path]:
        """Teachers as run folders (hard labels through runs.execute, config.json and all)."""
        teacher_dir, member_dir = self.out / "teacher", self.out / "member"
        for folder, spec in (
            (teacher_dir, RunSpec(model="mlp:64", train=config(epochs=6, seed=0))),
            (member_dir, RunSpec(model="mlp:32", train=config(epochs=4, seed=1, jitter=1))),
        ):
            execute(spec, folder, progress=False)
            self.record_run(f"hard-{folder.name}", folder)
        return teacher_dir, member_dir

    def fit_cases(self, teacher: torch.nn.Module, member: torch.nn.Module) -> None:
        """Straight calls of fit: hard labels, cached/online/ensemble distillation, early stop."""
        data = self.data
        paper_teacher = {"jitter": 2, "bf16": True, "schedule": "exponential", "lr_decay": 0.9}
        cases = {
            "cached": (config(4.0, 0.7, epochs=4), teacher),
            "cached-soft-only": (config(20.0, 1.0, epochs=3), teacher),
            "cached-alpha0": (config(3.0, 0.0, epochs=3), teacher),
            "online-jitter": (config(4.0, 0.7, epochs=3, jitter=1), teacher),
            "no-cache": (config(2.0, 0.5, epochs=2, cache_teacher_logits=False), teacher),
            "ensemble-cached": (config(3.0, 0.9, epochs=3), [teacher, member]),
            "ensemble-online": (config(3.0, 0.9, epochs=2, jitter=1), [teacher, member]),
            "early-stopping": (config(4.0, 0.7, epochs=30, val_fraction=0.2, patience=2), teacher),
            "hard-fit": (config(epochs=3, jitter=1), None),
            "hard-bf16-exponential": (config(epochs=3, max_norm=3.0, **paper_teacher), None),
            "online-bf16": (config(4.0, 0.7, epochs=2, jitter=1, bf16=True), [teacher, member]),
        }
        for name, (settings, source) in cases.items():
            model = student()
            result = fit(
                model, data.train, settings, teacher=source, test=data.test, progress=False
            )
            self.record(name, model, result.history)

    def fit_resume(self, teacher: torch.nn.Module) -> None:
        """Resume inside fit: stopped after 2 of 4 epochs, continued (also the other side's)."""
        settings = config(4.0, 0.7, epochs=4, seed=3)
        checkpoint = self.out / "resume-checkpoint"
        try:
            fit(student(3), self.data.train, settings, teacher=teacher, test=self.data.test,
                checkpoint_dir=checkpoint, on_epoch=stop_after(2), progress=False)  # fmt: skip
        except Stop:
            pass
        shutil.copytree(checkpoint, self.out / "resume-checkpoint-at-2")  # for the other version
        model = student(99)
        result = fit(model, self.data.train, settings, teacher=teacher, test=self.data.test,
                     checkpoint_dir=checkpoint, resume=True, progress=False)  # fmt: skip
        self.record("resume-fit", model, result.history)
        if self.compare is not None:  # the other version's checkpoint, continued by this one
            folder = self.out / "resume-checkpoint-from-other"
            shutil.copytree(self.compare / "resume-checkpoint-at-2", folder)
            model = student(99)
            result = fit(model, self.data.train, settings, teacher=teacher, test=self.data.test,
                         checkpoint_dir=folder, resume=True, progress=False)  # fmt: skip
            self.record("resume-fit-from-other", model, result.history)

    def run_resume(self, teacher_dir: Path) -> None:
        """Resume of a run folder (config.json compared, checkpoint restored), across versions."""
        spec = RunSpec(
            model="mlp:32,dropout=0.2",
            teachers=[str(teacher_dir)],
            train=config(4.0, 0.7, epochs=4),
        )
        run_dir = self.out / "run-resume"
        real_write = runs_module.write_history

        def write_then_stop(path, rows):
            real_write(path, rows)
            if len(rows) == 2:
                raise Stop

        runs_module.write_history = write_then_stop
        try:
            execute(spec, run_dir, progress=False)
        except Stop:
            pass
        finally:
            runs_module.write_history = real_write
        shutil.copytree(run_dir, self.out / "run-resume-at-2")
        execute(spec, run_dir, resume=True, progress=False)
        self.record_run("resume-run", run_dir)
        if self.compare is not None:
            folder = self.out / "run-resume-from-other"
            shutil.copytree(self.compare / "run-resume-at-2", folder)
            other = json.loads((folder / "config.json").read_text())
            other["teachers"] = [str(teacher_dir)]  # same teacher weights, this side's path
            (folder / "config.json").write_text(json.dumps(other, indent=2) + "\n")
            execute(spec, folder, resume=True, progress=False)
            self.record_run("resume-run-from-other", folder)

    def transfer_set(self, teacher_dir: Path, member_dir: Path) -> None:
        """The transfer-set options and gradient clipping of the paper reproduction, as a run."""
        spec = RunSpec(
            model="mlp:16",
            teachers=[str(teacher_dir), str(member_dir)],
            train=config(20.0, 0.9, epochs=2, grad_clip=1.0),
            drop_classes=[3],
            holdout_fraction=0.1,
            train_fraction=0.5,
        )
        execute(spec, self.out / "transfer-set", progress=False)
        self.record_run("transfer-set-grad-clip", self.out / "transfer-set")

    def sweep(self, teacher_dir: Path) -> None:
        """A sweep: shared teacher logits for every (T, alpha) cell."""
        sweep = Sweep(
            base=RunSpec(model="mlp:16", teachers=[str(teacher_dir)], train=config(epochs=2)),
            temperatures=[2.0, 8.0],
            alphas=[0.5, 1.0],
        )
        if not OLD_STYLE:
            sweep.base.train = replace(sweep.base.train, loss="hinton")
        run_sweep(sweep, self.out / "sweep", progress=False)
        for name, _ in sweep.cells():
            self.record_run(f"sweep-{name}", self.out / "sweep" / name)

    def own_data(self, teacher: torch.nn.Module, member: torch.nn.Module) -> None:
        """fit on a torch Dataset (kdistill batches it) and on a DataLoader (used as it is)."""
        data = self.data
        dataset = TensorDataset(data.train.images, data.train.labels)
        stop = {"epochs": 30, "val_fraction": 0.2, "patience": 2}
        cases = {
            "dataset-cached": (dataset, config(4.0, 0.7, epochs=3), teacher, None),
            "dataset-online-jitter": (
                dataset, config(3.0, 0.9, epochs=2, jitter=1), [teacher, member], None
            ),
            "dataset-augmented": (Brightened(dataset), config(4.0, 0.7, epochs=2), teacher, None),
            "dataset-early-stopping": (dataset, config(4.0, 0.7, **stop), teacher, data.test),
            "dataset-hard": (dataset, config(epochs=2), None, None),
        }  # fmt: skip
        for name, (train, settings, source, val) in cases.items():
            model = student()
            result = fit(model, train, settings, teacher=source, val=val, test=data.test,
                         progress=False)  # fmt: skip
            self.record(name, model, result.history)
        torch.manual_seed(11)  # the loader shuffles with the global generator
        for name, settings, source in (
            ("loader-online", config(4.0, 0.7, epochs=2), teacher),
            ("loader-hard-jitter", config(epochs=2, jitter=1), None),
        ):
            loader = DataLoader(dataset, batch_size=50, shuffle=True)
            model = student()
            result = fit(model, loader, settings, teacher=source, test=data.test, progress=False)
            self.record(name, model, result.history)

    def logits_file(self, teacher_dir: Path, member_dir: Path) -> None:
        """Distillation from a teacher-logits file: views under jitter, lookup by example id."""
        try:
            from kdistill.runs import write_for_teachers
            from kdistill.teacher_logits import read_teacher_logits
        except ImportError:  # a version before teacher-logits files
            print("teacher-logits file cases: not in this version", flush=True)
            return
        one, both = self.out / "teacher-logits.safetensors", self.out / "ensemble.safetensors"
        write_for_teachers([teacher_dir], self.data, one, max_shift=1)
        write_for_teachers([teacher_dir, member_dir], self.data, both, max_shift=1)
        dataset = TensorDataset(self.data.train.images, self.data.train.labels)
        cases = {
            "file-jitter": (self.data.train, config(4.0, 0.7, epochs=2, jitter=1)),
            "file-holdout": (self.data.train, config(4.0, 0.7, epochs=2, val_fraction=0.2)),
            "file-dataset-jitter": (dataset, config(4.0, 0.7, epochs=2, jitter=1)),
        }
        for name, (train, settings) in cases.items():
            model = student()
            result = fit(model, train, settings, teacher_logits=read_teacher_logits(one),
                         test=self.data.test, progress=False)  # fmt: skip
            self.record(name, model, result.history)
        spec = RunSpec(
            model="mlp:16",
            teacher_logits=str(both),
            train=config(3.0, 0.9, epochs=2, jitter=1),
            drop_classes=[3],
        )
        execute(spec, self.out / "file-ensemble", progress=False)
        self.record_run("file-ensemble-run", self.out / "file-ensemble")

    def torchrun(self, teacher_dir: Path) -> None:
        """2-rank data-parallel runs (gloo): their weights and histories, as rank 0 writes them."""
        common = ["distill", "--dataset", "digits", "--teacher", str(teacher_dir), "--lr", "0.05"]
        common += ["--epochs", "2", "-T", "4", "--no-progress", "--device", "cpu"]
        cases = {  # 8 a rank: the last global batch of 16 holds one example, rank 1 none
            "torchrun-cached": ["--model", "mlp:32", "--batch-size", "8"],
            "torchrun-jitter-dropout": [
                "--model", "mlp:32,dropout=0.2", "--batch-size", "32", "--jitter", "1"
            ],
        }  # fmt: skip
        env = dict(os.environ, PYTHONPATH=str(_source()), OMP_NUM_THREADS="1")
        for name, args in cases.items():
            folder = self.out / name
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2"]
            launch += ["--nnodes=1", "--master-addr=127.0.0.1", f"--master-port={port}"]
            command = [*launch, "-m", "kdistill", *common, *args, "--out", str(folder)]
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
            if done.returncode:
                raise SystemExit(f"{name} failed:\n{(done.stdout + done.stderr)[-3000:]}")
            self.record_run(name, folder)


class Brightened(torch.utils.data.Dataset):
    """A Dataset that augments randomly (a brightness shift from the global generator)."""

    def __init__(self, dataset: torch.utils.data.Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        x, y = self.dataset[i]
        return x + 0.01 * torch.rand(()), y


def compare_results(mine: dict, other: dict, out: Path, other_dir: Path) -> bool:
    """Print one line per case; True when every weight and history is bit for bit equal."""
    same_everywhere = True
    for name, result in mine.items():
        base_name = name.removesuffix("-from-other")
        theirs = other.get(base_name)
        if theirs is None:
            print(f"{name}: no counterpart")
            continue
        rows_mine = [{k: r[k] for k in theirs["history"][0] if k in r} for r in result["history"]]
        history_equal = rows_mine == theirs["history"]
        weights_equal = result["weights"] == theirs["weights"]
        line = f"{name}: weights {'equal' if weights_equal else 'DIFFER'}, "
        line += f"history {'equal' if history_equal else 'DIFFERS'}"
        if not weights_equal:
            a = torch.load(out / f"{name}.pt")
            b = torch.load(other_dir / f"{base_name}.pt")
            gap = max(float((a[k] - b[k]).abs().max()) for k in a)
            line += f" (max |difference| {gap:.3g})"
        extra = sorted(set(result["history"][0]) - set(theirs["history"][0]))
        if extra:
            line += f"; new columns {', '.join(extra)}"
        print(line)
        same_everywhere &= weights_equal and history_equal
    return same_everywhere


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", help="folder whose kdistill/ is tested (default: this one)")
    parser.add_argument("--out", required=True, help="empty folder for runs and digests")
    parser.add_argument("--compare", help="the --out of the other version, to compare with")
    args = parser.parse_args()
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    torch.set_num_threads(1)
    compare = Path(args.compare) if args.compare else None
    print(f"kdistill from {Path(kdistill.__file__).parent}", flush=True)
    results = Cases(out, compare).run()
    (out / "digests.json").write_text(json.dumps(results, indent=1) + "\n")
    if compare is None:
        return 0
    other = json.loads((compare / "digests.json").read_text())
    return 0 if compare_results(results, other, out, compare) else 1


if __name__ == "__main__":
    sys.exit(main())
