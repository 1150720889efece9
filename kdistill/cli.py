"""The ``kdistill`` command line: train, distill, sweep, teacher-logits, evaluate, plot, demo.

Every command validates its input at this boundary; a bad value ends the command with one line
on stderr (``kdistill: error: ...``) and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import fields, replace
from pathlib import Path

from kdistill.data import DATASET_NAMES
from kdistill.errors import KDistillError
from kdistill.experiments import PAPERS
from kdistill.losses import LOSSES, parse_loss_args
from kdistill.train import SCHEDULES, TrainConfig, start_optimizer_imports

HINTON_DEFAULTS = {"temperature": 20.0, "alpha": 1.0}  # of `kdistill distill`
TRAINING_COMMANDS = ("train", "distill", "sweep", "reproduce", "demo")  # build an optimizer
# --inputs of train, distill and sweep; the first is the default: standardized inputs learn faster
# at lr 0.01 (issue 15's settings), not at kdistill's default settings, and every documented
# figure was made on raw pixels (docs/performance.md, "Input scaling")
INPUTS = ("raw", "standardized")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kdistill`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in TRAINING_COMMANDS:
        start_optimizer_imports()
    try:
        status = args.handler(args, argv) or 0
        sys.stdout.flush()  # a closed pipe fails here, inside the try, not at exit
        return status
    except KDistillError as exc:
        print(f"kdistill: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `kdistill evaluate RUN | head -3`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's last flush must not fail too
        print(
            "kdistill: error: the output was cut short (its reader, e.g. head, closed the pipe)",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print(f"kdistill: interrupted; {_after_interrupt(args)}", file=sys.stderr)
        return 130


def _after_interrupt(args: argparse.Namespace) -> str:
    """What to do after Ctrl-C: the advice that works for this command."""
    from kdistill.checkpoint import has_checkpoint

    if args.command in ("train", "distill"):
        folder = getattr(args, "run_folder", None)
        if folder is not None and has_checkpoint(folder):
            if args.out:
                return "re-run the same command with --resume to continue from the last epoch"
            return f"re-run the same command with --out {folder} --resume to continue it"
        return "no epoch had finished, so nothing was kept: re-run the same command"
    if args.command in ("sweep", "reproduce", "demo"):
        return "re-run the same command: it keeps finished runs and continues the others"
    return "nothing was written"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line too (the full usage is one ``--help`` away)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"kdistill: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    from kdistill import __version__

    parser = _Parser(
        prog="kdistill", description="Knowledge distillation (Hinton, Vinyals & Dean 2015)."
    )
    parser.add_argument("--version", action="version", version=f"kdistill {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train_command(commands)
    _add_distill_command(commands)
    _add_sweep_command(commands)
    _add_teacher_logits_command(commands)
    _add_plot_command(commands)
    _add_evaluate_command(commands)
    _add_reproduce_command(commands)
    _add_demo_command(commands)
    return parser


def _add_train_command(commands) -> None:
    """``kdistill train``: a model trained on hard labels."""
    train = commands.add_parser("train", help="train a model on hard labels")
    _add_run_arguments(train, default_model="mlp:1200x1200,dropout=0.5,input_dropout=0.2")
    _add_transfer_set_arguments(train)  # e.g. the hard-label baseline on 3% of the data
    train.set_defaults(handler=_cmd_train)


def _add_distill_command(commands) -> None:
    """``kdistill distill``: a student distilled from teacher runs or a teacher-logits file."""
    distill = commands.add_parser("distill", help="distill a student from teacher run(s)")
    _add_run_arguments(distill, default_model="mlp:800x800", teacher_dataset=True)
    source = distill.add_mutually_exclusive_group(required=True)  # a teacher, or its logits
    source.add_argument(
        "--teacher",
        action="append",
        default=[],
        metavar="RUN",
        help="teacher run folder, or a state_dict .pt file with --teacher-model; repeat for an "
        "ensemble (mean of probabilities)",
    )
    _add_teacher_logits_argument(source)
    _add_teacher_model_argument(distill)
    _add_loss_arguments(distill)
    _add_transfer_set_arguments(distill)
    _add_trust_code_argument(distill)
    distill.set_defaults(handler=_cmd_distill)


def _add_transfer_set_arguments(parser: argparse.ArgumentParser) -> None:
    """Which training examples the model sees: classes dropped or kept, a fraction."""
    parser.add_argument(
        "--drop-classes", type=_int_list, default=[], help="transfer set without these, e.g. 3"
    )
    parser.add_argument(
        "--keep-classes", type=_int_list, default=[], help="transfer set of only these, e.g. 7,8"
    )
    parser.add_argument(
        "--fraction", type=float, default=1.0, help="stratified fraction of the training set"
    )
    parser.add_argument(
        "--holdout-fraction",
        type=float,
        default=0.0,
        help="stratified part of the training set no model of this run trains on, e.g. 0.1, for "
        "`evaluate --bias-shift CLASS=auto` (default 0)",
    )


def _transfer_set(args: argparse.Namespace) -> dict:
    """The RunSpec fields of :func:`_add_transfer_set_arguments`'s options."""
    return {
        "drop_classes": args.drop_classes,
        "keep_classes": args.keep_classes,
        "train_fraction": args.fraction,
        "holdout_fraction": args.holdout_fraction,
    }


def _add_sweep_command(commands) -> None:
    """``kdistill sweep``: a student distilled for every combination of a loss's arguments."""
    sweep = commands.add_parser(
        "sweep",
        help="distill a student for every combination of a loss's arguments, e.g. every "
        "temperature and alpha (resumable)",
    )
    _add_run_arguments(sweep, default_model="mlp:800x800", resume=False, teacher_dataset=True)
    source = sweep.add_mutually_exclusive_group(required=True)  # a teacher, or its logits
    source.add_argument(
        "--teacher", action="append", default=[], metavar="RUN",
        help="teacher run folder or state_dict .pt file (repeat for an ensemble)",
    )  # fmt: skip
    _add_teacher_logits_argument(source)
    _add_teacher_model_argument(sweep)
    _add_loss_grid_arguments(sweep)
    sweep.add_argument("--seeds", type=int, default=1, help="seeds per cell (default 1)")
    _add_trust_code_argument(sweep)
    sweep.set_defaults(handler=_cmd_sweep)


def _add_loss_grid_arguments(parser: argparse.ArgumentParser) -> None:
    """A sweep's loss and the values of each of its arguments (the grid)."""
    parser.add_argument(
        "--loss",
        dest="loss_name",
        metavar="NAME",
        help=f"the loss every cell distils with: {', '.join(LOSSES)} (default hinton)",
    )
    parser.add_argument(
        "--loss-arg",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="values of one of the loss's arguments, e.g. beta=1,2,8 (repeatable: the grid is "
        "every combination; one value fixes the argument)",
    )
    parser.add_argument(
        "--temperature",
        "-T",
        help="temperatures, the same as --loss-arg temperature=... (hinton: default 1,2,4,8,20)",
    )
    parser.add_argument(
        "--alpha",
        help="alphas, the same as --loss-arg alpha=... (hinton: default 0.1,0.5,0.9)",
    )


def _add_plot_command(commands) -> None:
    """``kdistill plot``: the curves of runs in one figure."""
    plot = commands.add_parser("plot", help="test-error and loss curves of runs in one figure")
    plot.add_argument("runs", nargs="+", metavar="RUN", help="run folders")
    plot.add_argument(
        "--out",
        default="curves.png",
        help="figure to write, its format from the suffix: .png, .pdf, .svg, ... "
        "(default curves.png); its folder must exist",
    )
    plot.set_defaults(handler=_cmd_plot)


def _add_evaluate_command(commands) -> None:
    """``kdistill evaluate``: a finished run scored on its test set."""
    evaluate = commands.add_parser("evaluate", help="score a finished run on its test set")
    evaluate.add_argument("run", metavar="RUN", help="run folder")
    evaluate.add_argument(
        "--bias-shift",
        action="append",
        default=[],
        metavar="CLASS=VALUE",
        help="add VALUE to the output bias of CLASS (repeatable), e.g. 3=3.5; CLASS=auto "
        "chooses the value on the run's held-out data (distill --holdout-fraction)",
    )
    evaluate.add_argument("--data-dir", help="folder with mnist/ and fashion-mnist/")
    evaluate.add_argument("--download", action="store_true", help="fetch missing data files")
    _add_trust_code_argument(evaluate)
    evaluate.set_defaults(handler=_cmd_evaluate)


def _add_reproduce_command(commands) -> None:
    """``kdistill reproduce``: a paper's experiments, reported paper vs measured."""
    reproduce = commands.add_parser(
        "reproduce", help="run a paper's experiments and report paper vs measured"
    )
    reproduce.add_argument(
        "paper",
        nargs="?",
        choices=sorted(PAPERS),
        help="the paper to reproduce (see --list)",
    )
    reproduce.add_argument(
        "--list", action="store_true", help="list the reproductions and their profiles"
    )
    reproduce.add_argument(
        "--profile",
        default="quick",
        help="how much of the protocol to run (default quick: every experiment, small and "
        "short); the profiles of each paper are in --list",
    )
    reproduce.add_argument(
        "--seeds", type=int, default=1, help="seeds for the cheap rows (default 1)"
    )
    reproduce.add_argument("--data-dir", help="folder with mnist/ and fashion-mnist/")
    reproduce.add_argument("--out", help="output folder (default runs/<paper>-<profile>)")
    reproduce.add_argument(
        "--teacher-run",
        metavar="RUN",
        help="a finished teacher run made with the profile's teacher settings (e.g. the committed "
        "docs/results/paper-teacher), copied in instead of training the teacher again",
    )
    reproduce.add_argument(
        "--experiment",
        action="append",
        default=[],
        metavar="NAME",
        help="run and report only this experiment (repeatable), with the runs its rows are "
        "compared with; the names are in --list (default: all)",
    )
    reproduce.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs made at a time, each in its own process with an equal share of the threads "
        "(default 1); a run starts once its teachers are finished",
    )
    reproduce.add_argument("--no-progress", action="store_true", help="no progress bars")
    reproduce.set_defaults(handler=_cmd_reproduce)


def _add_demo_command(commands) -> None:
    """``kdistill demo``: teacher, student alone and distilled student on the bundled digits."""
    demo = commands.add_parser(
        "demo", help="teacher, student alone and distilled student on the bundled digits"
    )
    demo.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.set_defaults(handler=_cmd_demo)


def _add_teacher_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--teacher-model",
        metavar="SPEC",
        help="architecture of state_dict teacher files, e.g. cnn:32x64 or mymodels:my_cnn",
    )


def _add_teacher_logits_argument(parser) -> None:
    parser.add_argument(
        "--teacher-logits",
        metavar="FILE",
        help="distil from a file written by `kdistill teacher-logits` instead of --teacher "
        "(no teacher is loaded; with --jitter each example's shift picks its logits)",
    )


def _add_teacher_logits_command(commands) -> None:
    logits = commands.add_parser(
        "teacher-logits",
        help="write a teacher's logits on every training example and jitter shift, once",
    )
    logits.add_argument("teachers", nargs="+", metavar="RUN", help="teacher run(s); 2+: ensemble")
    _add_teacher_model_argument(logits)
    logits.add_argument("--dataset", required=True, help=f"one of {', '.join(DATASET_NAMES)}")
    logits.add_argument("--data-dir", help="folder with mnist/ and fashion-mnist/")
    logits.add_argument("--download", action="store_true", help="fetch missing data files")
    logits.add_argument(
        "--jitter", type=int, default=0, help="every shift in [-K, K]^2: (2K+1)^2 views"
    )
    logits.add_argument("--out", required=True, metavar="FILE", help="the file to write")
    logits.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "float16"],
        help="stored precision (default float32; float16 halves the file)",
    )
    logits.add_argument("--device", default="auto", help="where the teacher runs")
    logits.add_argument(
        "--bf16", action="store_true", help="teacher under bf16 autocast (faster, not exact)"
    )
    logits.set_defaults(handler=_cmd_teacher_logits)


def _add_loss_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--loss",
        dest="loss_name",
        metavar="NAME",
        help=f"the loss: {', '.join(LOSSES)} (default hinton)",
    )
    parser.add_argument(
        "--loss-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an argument of the loss, e.g. temperature=4 (repeatable)",
    )
    parser.add_argument(
        "--temperature", "-T", type=float, help="the loss's temperature T (hinton: default 20)"
    )
    parser.add_argument(
        "--alpha",
        type=float,
        help="weight of the soft-target term in [0, 1] (hinton: default 1, soft targets only)",
    )


def _loss_settings(args: argparse.Namespace) -> dict:
    """``--loss``, ``--loss-arg`` and the shorthands ``-T``/``--alpha`` as TrainConfig fields."""
    name = args.loss_name or "hinton"
    loss_args = parse_loss_args(args.loss_arg)
    for key, value in (("temperature", args.temperature), ("alpha", args.alpha)):
        if value is not None:
            if loss_args.get(key, value) != value:
                raise KDistillError(f"--{key} and --loss-arg {key}=... disagree: give one of them")
            loss_args[key] = value
    if name == "hinton":
        loss_args = {**HINTON_DEFAULTS, **loss_args}
    return {"loss": name, "loss_args": loss_args}


def _add_trust_code_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trust-code",
        action="store_true",
        help="let a run folder whose config.json names a package.module:function model import "
        "and call it (without this, loading a run never runs code it names)",
    )


def _add_run_arguments(
    parser: argparse.ArgumentParser,
    default_model: str,
    resume: bool = True,
    teacher_dataset: bool = False,
) -> None:
    """The options of a training run (train, distill, sweep), in the order --help lists them.

    ``resume`` adds ``--resume``; with ``teacher_dataset`` the dataset defaults to the teacher
    run's.
    """
    defaults = TrainConfig()
    _add_data_arguments(parser, teacher_dataset)
    _add_model_and_folder_arguments(parser, default_model, defaults, resume)
    _add_optimizer_arguments(parser, defaults)
    _add_regularization_arguments(parser)
    _add_device_and_logging_arguments(parser)


def _add_data_arguments(parser: argparse.ArgumentParser, teacher_dataset: bool) -> None:
    """The dataset, where its files are, and whether to fetch them."""
    parser.add_argument(
        "--dataset",
        default=None if teacher_dataset else "digits",
        help=f"one of {', '.join(DATASET_NAMES)} (default "
        + ("the teacher run's dataset, else digits)" if teacher_dataset else "digits)"),
    )
    parser.add_argument("--data-dir", help="folder with mnist/ and fashion-mnist/ ($KDISTILL_DATA)")
    parser.add_argument("--download", action="store_true", help="fetch missing data files")


def _add_model_and_folder_arguments(
    parser: argparse.ArgumentParser, default_model: str, defaults: TrainConfig, resume: bool
) -> None:
    """The model, how long and with which seed it trains, and the run folder (--resume)."""
    parser.add_argument(
        "--model", default=default_model, help=f"model spec (default {default_model})"
    )
    parser.add_argument(
        "--inputs",
        choices=INPUTS,
        default=INPUTS[0],
        help="raw (default): the pixels as loaded, in [0, 1]; standardized: a built-in mlp/cnn "
        "model sees (x - mean) / std, with the mean and std of every pixel of the dataset's full "
        "training split, written into its spec in config.json (mnist: input_mean=0.1307,"
        "input_std=0.3081; pair it with a lower --lr, e.g. 0.01). A --model that sets "
        "input_mean or input_std itself keeps its own; a package.module:function model gets "
        "the pixels as loaded. Continue a run (--resume, a sweep re-run) with the --inputs "
        "that started it",
    )
    parser.add_argument(
        "--epochs", type=int, default=defaults.epochs, help="epochs (default %(default)s)"
    )
    parser.add_argument(
        "--seed", type=int, default=defaults.seed, help="random seed (default %(default)s)"
    )
    parser.add_argument("--out", help="run folder (default runs/<command>-<time>)")
    if resume:
        parser.add_argument("--resume", action="store_true", help="continue the run in --out")


def _add_optimizer_arguments(parser: argparse.ArgumentParser, defaults: TrainConfig) -> None:
    """Batch size, optimizer, learning rate and its schedule, weight and gradient limits."""
    parser.add_argument(
        "--batch-size",
        type=int,
        default=defaults.batch_size,
        help="examples per step (per process under torchrun; default %(default)s)",
    )
    parser.add_argument(
        "--optimizer",
        default=defaults.optimizer,
        choices=["sgd", "adam"],
        help="sgd (Nesterov momentum) or adam (default %(default)s)",
    )
    parser.add_argument(
        "--lr", type=float, default=defaults.lr, help="learning rate (default %(default)s)"
    )
    parser.add_argument(
        "--momentum",
        type=float,
        default=defaults.momentum,
        help="SGD momentum (default %(default)s)",
    )
    parser.add_argument(
        "--weight-decay",
        type=float,
        default=defaults.weight_decay,
        help="L2 weight decay (default %(default)s)",
    )
    parser.add_argument(
        "--schedule",
        default=defaults.schedule,
        choices=list(SCHEDULES),
        help="learning-rate schedule over the run (default %(default)s)",
    )
    parser.add_argument(
        "--lr-decay",
        type=float,
        default=defaults.lr_decay,
        help="per-epoch factor of --schedule exponential (e.g. 0.993: halves every 100 epochs)",
    )
    parser.add_argument("--max-norm", type=float, help="max L2 norm of each unit's weights")
    parser.add_argument(
        "--grad-clip", type=float, help="clip the gradient's global L2 norm to this, every step"
    )


def _add_regularization_arguments(parser: argparse.ArgumentParser) -> None:
    """Input jitter, a validation split and early-stopping patience."""
    parser.add_argument(
        "--jitter", type=int, default=0, help="random shifts of up to N pixels (default 0)"
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.0,
        help="fraction of the training set held out for validation (default 0)",
    )
    parser.add_argument("--patience", type=int, help="early stopping patience (epochs)")
    parser.add_argument(
        "--test-every",
        type=int,
        default=1,
        help="score the test set for the history after every N-th epoch and the last "
        "(default 1; the final scores are always made)",
    )


def _add_device_and_logging_arguments(parser: argparse.ArgumentParser) -> None:
    """Where and in which precision it trains, and what it shows and logs."""
    parser.add_argument(
        "--device", default="auto", help="cpu, cuda, cuda:1 or auto (default auto: cuda if present)"
    )
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (fp32 weights)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--tensorboard", action="store_true", help="also log to OUT/tensorboard (needs tensorboard)"
    )


def _model_for_inputs(args: argparse.Namespace, dataset: str) -> str:
    """``--model`` as the run will record it: as given (``--inputs raw``), or with the dataset's
    pixel statistics written in (``standardized``; the data are loaded only then)."""
    from kdistill.models import takes_input_scaling, with_input_scaling
    from kdistill.runs import cached_dataset

    if args.inputs == "raw" or not takes_input_scaling(args.model):
        return args.model
    data = cached_dataset(dataset, args.data_dir, args.download)  # the run's own, cached
    return with_input_scaling(args.model, *data.pixel_statistics)


def _train_config(args: argparse.Namespace, **changes) -> TrainConfig:
    names = {f.name for f in fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in names and v is not None}
    config = TrainConfig(**values, **changes)
    config.validate()
    return config


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated class numbers, got {text!r}"
        ) from None


def _default_out(command: str) -> str:
    return f"runs/{command}-{time.strftime('%Y%m%d-%H%M%S')}"


def _cmd_train(args: argparse.Namespace, argv: list[str]) -> int:
    from kdistill.runs import RunSpec

    spec = RunSpec(
        model=args.model,
        dataset=args.dataset,
        data_dir=args.data_dir,
        train=_train_config(args),
        **_transfer_set(args),
    )
    spec.validate()
    model = _model_for_inputs(args, args.dataset)
    return _execute(replace(spec, model=model), args, "train", argv)


def _cmd_distill(args: argparse.Namespace, argv: list[str]) -> int:
    from kdistill.runs import RunSpec

    for teacher in args.teacher:
        _check_teacher(teacher)
    spec = RunSpec(
        model=args.model,
        dataset=_teacher_dataset(args),
        data_dir=args.data_dir,
        teachers=args.teacher,
        train=_train_config(args, **_loss_settings(args)),
        teacher_model=args.teacher_model,
        teacher_logits=args.teacher_logits,
        **_transfer_set(args),
    )
    spec.validate()
    model = _model_for_inputs(args, spec.dataset)
    return _execute(replace(spec, model=model), args, "distill", argv)


def _teacher_dataset(args: argparse.Namespace) -> str:
    """``--dataset``, else the dataset the first teacher run was trained on, else digits."""
    if args.dataset is not None:
        return args.dataset
    from kdistill.runs import read_config

    for teacher in args.teacher:
        if Path(teacher).is_dir():
            dataset = read_config(teacher).get("dataset")
            if isinstance(dataset, str):
                return dataset
    return "digits"


def _cmd_teacher_logits(args: argparse.Namespace, argv: list[str]) -> int:
    from kdistill.distributed import refuse_torchrun
    from kdistill.runs import cached_dataset, write_for_teachers
    from kdistill.train import resolve_device

    refuse_torchrun("teacher-logits")
    if Path(args.out).exists():
        raise KDistillError(
            f"{args.out} already exists (students' runs record its sha256): choose another "
            "--out, or delete it first"
        )
    if args.jitter < 0:
        raise KDistillError(f"--jitter must be >= 0 pixels, got {args.jitter}")
    for teacher in args.teachers:
        _check_teacher(teacher)
    dataset = cached_dataset(args.dataset, args.data_dir, args.download)
    written = write_for_teachers(
        args.teachers,
        dataset,
        args.out,
        max_shift=args.jitter,
        teacher_model=args.teacher_model,
        dtype=args.dtype,
        device=resolve_device(args.device),
        bf16=args.bf16,
    )
    views = (2 * args.jitter + 1) ** 2
    print(
        f"teacher logits {tuple(written['shape'])} ({views} views, {args.dtype}) of "
        f"{args.dataset} written to {args.out} in {written['total_seconds']} s; "
        f"sha256 {written['sha256']}"
    )
    return 0


def _check_teacher(teacher: str) -> None:
    path = Path(teacher)
    if path.is_file():
        return  # a state_dict file: loaded (and checked) with --teacher-model
    if not (path / "model.safetensors").is_file():
        raise KDistillError(f"teacher run {teacher} does not exist or has not finished")


def _float_grid(text: str, option: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise KDistillError(
            f"{option} takes comma-separated numbers, e.g. 1,4,20; got {text!r}"
        ) from None


def _cmd_sweep(args: argparse.Namespace, argv: list[str]) -> int:
    from kdistill.distributed import refuse_torchrun
    from kdistill.reports import format_table
    from kdistill.runs import RunSpec
    from kdistill.sweep import Sweep, figure_name, parse_grid, run_sweep, summarize

    refuse_torchrun("sweep")
    for teacher in args.teacher:
        _check_teacher(teacher)
    grid = parse_grid(args.loss_arg)
    for key in ("temperature", "alpha"):  # the old options: that argument's values
        text = getattr(args, key)
        if text is not None:
            if key in grid:
                raise KDistillError(f"--{key} and --loss-arg {key}=... both give {key}: give one")
            grid[key] = _float_grid(text, f"--{key}")
    settings = {k: v for k, v in vars(args).items() if k not in ("temperature", "alpha")}
    sweep = Sweep(
        base=RunSpec(
            model=args.model,
            dataset=_teacher_dataset(args),
            data_dir=args.data_dir,
            teachers=args.teacher,
            train=_train_config(argparse.Namespace(**settings), loss=args.loss_name),
            teacher_model=args.teacher_model,
            teacher_logits=args.teacher_logits,
        ),
        grid=grid,
        seeds=args.seeds,
    )
    sweep.validate()  # every cell, before anything is written
    out = Path(args.out or _default_out("sweep"))
    model = _model_for_inputs(args, sweep.base.dataset)
    sweep = replace(sweep, base=replace(sweep.base, model=model))
    rows = run_sweep(
        sweep,
        out,
        progress=not args.no_progress,
        download=args.download,
        argv=["kdistill", *argv],
        tensorboard=args.tensorboard,
        trust_code=args.trust_code,
    )
    print(format_table(summarize(rows)))
    print(f"sweep written to {out} (sweep.csv, {figure_name(rows)}); re-run to continue it")
    return 0


def _cmd_plot(args: argparse.Namespace, argv: list[str]) -> int:
    from kdistill.reports import figure_format, plot_curves
    from kdistill.runs import read_history

    out = Path(args.out)
    figure_format(out)  # an unknown suffix fails here, before any run is read
    if not out.parent.is_dir():
        raise KDistillError(f"the folder of --out {out} does not exist: create it first")
    histories = {}
    for run in args.runs:
        path = Path(run, "history.csv")
        if not path.is_file():
            raise KDistillError(f"{run} is not a run folder (no history.csv)")
        label = Path(run).resolve().name
        while label in histories:
            label += "'"
        histories[label] = _with_loss_terms(read_history(path), Path(run, "config.json"))
    plot_curves(histories, out)
    print(f"curves of {len(histories)} run(s) written to {out}")
    return 0


def _with_loss_terms(history: list[dict], config_path: Path) -> list[dict]:
    """A history from before losses logged their terms (only ``train_loss``) gets the term its
    loss was made of, read from the run's config: ``train_hard`` (cross-entropy) for a run
    without a teacher, ``train_soft`` for one distilled at alpha = 1; so ``plot`` never draws
    the two on one axis. A mix of both (alpha < 1) stays the total."""
    if not history or any(k.startswith("train_") and k != "train_loss" for k in history[0]):
        return history
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError):
        return history
    train = config.get("train") or {}
    distilled = bool(config.get("teachers") or config.get("teacher_logits"))
    alpha = (train.get("loss_args") or {}).get("alpha", train.get("alpha", 1.0))
    term = "hard" if not distilled else "soft" if alpha == 1 else None
    if term is None:
        return history
    return [{**row, f"train_{term}": row["train_loss"]} for row in history]


def _execute(spec, args: argparse.Namespace, command: str, argv: list[str]) -> int:
    from kdistill.distributed import broadcast_from_main, process_group
    from kdistill.reports import format_table
    from kdistill.runs import execute

    if args.resume and not args.out:
        raise KDistillError("--resume needs the --out folder of the run to continue")
    with process_group(spec.train.device) as ctx:  # under torchrun: one rank of the job
        out = Path(broadcast_from_main(args.out or _default_out(command)))  # rank 0's clock
        args.run_folder = out  # for the advice after Ctrl-C
        metrics = execute(
            spec,
            out,
            resume=args.resume,
            progress=not args.no_progress,
            download=args.download,
            argv=["kdistill", *argv],
            tensorboard=args.tensorboard,
            trust_code=getattr(args, "trust_code", False),
        )
    if not ctx.is_main:
        return 0
    role = "student" if spec.teachers or spec.teacher_logits else "model"
    rows = [_cost_row(role, spec.model, metrics["test"], metrics["cost"]["model"])]
    for folder, cost in zip(spec.teachers, metrics["cost"].get("teacher", []), strict=True):
        if Path(folder).is_file():  # a state_dict file: no run folder to read its test score
            rows.append(_cost_row("teacher", spec.teacher_model, None, cost))
            continue
        teacher = json.loads(Path(folder, "config.json").read_text())
        scored = json.loads(Path(folder, "metrics.json").read_text())["test"]
        rows.append(_cost_row("teacher", teacher["model"], scored, cost))
    print(format_table(rows))
    print(f"run written to {out}")
    return 0


def _cost_row(role: str, spec: str, test: dict | None, cost: dict) -> dict:
    row = {"role": role, "model": spec}
    if test is not None:
        row.update(test_errors=test["errors"], accuracy=round(test["accuracy"], 4))
    row.update(
        parameters=cost["parameters"],
        flops_per_example=cost["flops_per_example"],
        examples_per_s=cost["inference_examples_per_s"],
    )
    return row


def _cmd_evaluate(args: argparse.Namespace, argv: list[str]) -> int:
    from kdistill.models import shift_output_bias_
    from kdistill.reports import format_table
    from kdistill.runs import cached_dataset, load_run_model
    from kdistill.train import evaluate

    shifts, auto = _parse_shifts(args.bias_shift)
    model, config = load_run_model(args.run, trust_code=args.trust_code)
    dataset = cached_dataset(config["dataset"], args.data_dir or config["data_dir"], args.download)
    before = evaluate(model, dataset.test)
    chosen = ""
    if auto:
        value, examples = _choose_shift(model, config, dataset, auto)
        shifts.update({c: shifts.get(c, 0.0) + value for c in auto})
        chosen = f" (auto: chosen on {examples} held-out examples)"
    shift_output_bias_(model, shifts)
    rows = [("none", before)]
    if shifts:
        after = evaluate(model, dataset.test)
        rows.append((", ".join(f"{c}{v:+g}" for c, v in shifts.items()) + chosen, after))
    print(
        format_table(
            [
                {
                    "run": args.run,
                    "bias_shift": label,
                    "test_errors": scored["errors"],
                    "accuracy": round(scored["accuracy"], 4),
                }
                for label, scored in rows
            ]
        )
    )
    per_class = []
    examples = before["per_class_examples"]
    for i, (name, n) in enumerate(zip(dataset.class_names, examples, strict=True)):
        row = {"class": name, "examples": n, "errors": before["per_class_errors"][i]}
        if shifts:
            row["errors_after_shift"] = rows[-1][1]["per_class_errors"][i]
        per_class.append(row)
    print(format_table(per_class))
    return 0


def _choose_shift(model, config: dict, dataset, classes: list[int]) -> tuple[float, int]:
    """One bias shift for ``classes``, chosen on the run's held-out training data."""
    from dataclasses import fields as dataclass_fields

    from kdistill.experiments.hinton2015 import choose_shift
    from kdistill.runs import RunSpec, holdout_split
    from kdistill.train import predict_logits

    names = {f.name for f in dataclass_fields(RunSpec)}
    spec = RunSpec.from_dict({k: v for k, v in config.items() if k in names})
    if spec.holdout_fraction <= 0:
        raise KDistillError(
            "--bias-shift CLASS=auto chooses the shift on held-out training data, and this run "
            "kept none: distill with --holdout-fraction 0.1, or give the shift, e.g. 3=3.5"
        )
    for cls in classes:
        if not 0 <= cls < dataset.num_classes:
            raise KDistillError(f"class {cls} is out of range: the model has {dataset.num_classes}")
    held = holdout_split(dataset.train, spec)
    logits = predict_logits(model, held.images)
    candidates = [choose_shift(logits, held.labels, classes, sign) for sign in (1.0, -1.0)]

    def errors(shift: float) -> int:
        shifted = logits.clone()
        shifted[:, classes] += shift
        return int((shifted.argmax(1) != held.labels).sum())

    return min(candidates, key=lambda shift: (errors(shift), abs(shift))), len(held)


def _parse_shifts(items: list[str]) -> tuple[dict[int, float], list[int]]:
    """``CLASS=VALUE`` items as {class: summed value}, and the classes given ``CLASS=auto``."""
    shifts: dict[int, float] = {}
    auto: list[int] = []
    for item in items:
        cls, eq, value = item.partition("=")
        try:
            if not eq:
                raise ValueError
            if value.strip() == "auto":
                auto.append(int(cls))
            else:
                shifts[int(cls)] = shifts.get(int(cls), 0.0) + float(value)
        except ValueError:
            raise KDistillError(
                f"--bias-shift takes CLASS=VALUE or CLASS=auto, e.g. 3=3.5; got {item!r}"
            ) from None
    return shifts, auto


def _cmd_reproduce(args: argparse.Namespace, argv: list[str]) -> int:
    from kdistill.checkpoint import check_folder_path
    from kdistill.experiments import common, reproduction

    if args.list:
        _list_reproductions()
        return 0
    if args.paper is None:
        raise KDistillError(
            f"name the paper to reproduce ({', '.join(PAPERS)}), or list them with --list"
        )
    paper = reproduction(args.paper)
    paper.profile(args.profile)  # an unknown profile or experiment, before any folder is made
    paper.check_experiments(args.experiment)
    out = Path(args.out or f"runs/{args.paper}-{args.profile}")
    check_folder_path(out)
    common.reproduce(
        paper,
        args.profile,
        out,
        args.data_dir,
        args.seeds,
        progress=not args.no_progress,
        argv=["kdistill", *argv],
        teacher_run=args.teacher_run,
        experiments=args.experiment,
        jobs=args.jobs,
    )
    return 0


def _list_reproductions() -> None:
    """``kdistill reproduce --list``: each registered paper, its line and its profiles."""
    from kdistill.experiments import reproduction

    for name, description in PAPERS.items():
        paper = reproduction(name)
        print(f"{name}: {description} (profiles: {', '.join(paper.profiles)})")
        for experiment, line in paper.experiments.items():
            print(f"  --experiment {experiment}: {line}")


def _cmd_demo(args: argparse.Namespace, argv: list[str]) -> int:
    from kdistill.demo import run_demo
    from kdistill.distributed import refuse_torchrun

    refuse_torchrun("demo")
    run_demo(Path(args.out), seed=args.seed, progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
