"""Training examples/s of ``fit`` in 1 process and in N torchrun processes (data-parallel).

Prints a markdown table. Every configuration trains the same model with the same *global*
batch on the same MNIST subset; a figure is the examples/s of the last epoch (the first warms
up). ``--compare-to /path/to/other/checkout`` instead times the single-process run of that
checkout against this one, alternating, and prints the ratio (is a plain run any slower?).

    python benchmarks/distributed_throughput.py --procs 1 2
    python benchmarks/distributed_throughput.py --compare-to ../main --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent


def worker(args: argparse.Namespace) -> None:
    """One process of a measurement: train, and (on rank 0) print a JSON line."""
    import torch

    from kdistill.data import Split, load_dataset
    from kdistill.models import build_model
    from kdistill.train import TrainConfig, fit

    world = int(os.environ.get("WORLD_SIZE", "1"))
    data = load_dataset(args.dataset, args.data_dir)
    train = Split(data.train.images[: args.examples], data.train.labels[: args.examples])
    config = TrainConfig(
        epochs=args.epochs, batch_size=args.global_batch // world, seed=0, device="cpu"
    )

    def run() -> dict:
        torch.manual_seed(0)
        model = build_model(args.model, data.input_shape, data.num_classes)
        result = fit(model, train, config, progress=False)
        return {"examples_per_s": len(train) / result.history[-1]["seconds"]}

    if world > 1:
        from kdistill.distributed import process_group

        with process_group("cpu") as ctx:
            row = run()
        if not ctx.is_main:
            return
    else:
        row = run()
    row.update(processes=world, threads_per_process=torch.get_num_threads())
    print("RESULT " + json.dumps(row), flush=True)


def measure(command: list[str], env: dict) -> dict:
    """Run one measurement and parse its RESULT line."""
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise SystemExit(f"measurement failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")


def worker_args(args: argparse.Namespace) -> list[str]:
    flags = ["--worker", "--model", args.model, "--dataset", args.dataset]
    flags += ["--examples", str(args.examples), "--epochs", str(args.epochs)]
    flags += ["--global-batch", str(args.global_batch)]
    return flags + (["--data-dir", args.data_dir] if args.data_dir else [])


def environment_for(source: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(source)
    return env


def torchrun(nproc: int) -> list[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}"]
    return launcher + ["--master-addr=127.0.0.1", f"--master-port={port}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="mlp:800x800")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--data-dir", default=os.environ.get("KDISTILL_DATA"))
    parser.add_argument("--examples", type=int, default=12000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--global-batch", type=int, default=256)
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--compare-to", type=Path, help="another checkout: time its 1 process")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    print(f"load average before: {os.getloadavg()}, cpus: {os.cpu_count()}")
    script = [sys.executable, str(HERE), *worker_args(args)]
    if args.compare_to:
        ours, theirs = [], []
        for _ in range(args.repeats):  # alternate, so both see the same machine load
            theirs.append(measure(script, environment_for(args.compare_to))["examples_per_s"])
            ours.append(measure(script, environment_for(REPO))["examples_per_s"])
        print("| checkout | examples/s (median) | runs |")
        print("|---|---|---|")
        print(f"| {args.compare_to} | {statistics.median(theirs):,.0f} | {theirs} |")
        print(f"| {REPO} | {statistics.median(ours):,.0f} | {ours} |")
        print(f"ratio this/other: {statistics.median(ours) / statistics.median(theirs):.3f}")
        return None

    rows = []
    one_thread = {**environment_for(REPO), "OMP_NUM_THREADS": "1"}
    for nproc in args.procs:
        if nproc == 1:  # the default thread count, and 1 thread as each torchrun worker gets
            setups = [("python", script, environment_for(REPO)), ("python", script, one_thread)]
        else:
            setups = [("torchrun", torchrun(nproc) + script[1:], environment_for(REPO))]
        for launcher, command, env in setups:
            results = [measure(command, env) for _ in range(args.repeats)]
            speed = statistics.median(r["examples_per_s"] for r in results)
            rows.append((launcher, nproc, results[0]["threads_per_process"], speed))
    print(
        f"{args.model}, {args.examples} {args.dataset} examples, global batch {args.global_batch}"
    )
    print("| launcher | processes | threads/process | train examples/s (median) |")
    print("|---|---|---|---|")
    for launcher, nproc, threads, speed in rows:
        print(f"| {launcher} | {nproc} | {threads} | {speed:,.0f} |")
    print(f"load average after: {os.getloadavg()}")
    return None


if __name__ == "__main__":
    main()
