"""Pilot (issue 10): the 3% soft-target student at other temperatures (and alpha), seed given.
python scratch/small-T/run.py T SEED [ALPHA] -> runs/small-T/T{T}[-alpha{ALPHA}]/seed{SEED}"""
import sys
import kdistill  # noqa: F401
import torch
from dataclasses import replace
from pathlib import Path
from kdistill.experiments import hinton2015 as h
from kdistill.runs import run_or_resume

torch.set_num_threads(1)
T, seed = float(sys.argv[1]), int(sys.argv[2])
alpha = float(sys.argv[3]) if len(sys.argv) > 3 else None
out = Path("runs/paper-new").resolve()
p = h.plan(h.PROFILES["paper"], out, data_dir="/work/shared/data", seeds=3)
spec = p.runs[h.small_key("soft", seed)] if hasattr(p, "runs") else None
spec = p.runs[h.small_key("soft", seed)]
spec = replace(spec, train=h.at_temperature(spec.train, T))
name = f"T{T:g}"
if alpha is not None:
    args = {**spec.train.loss_args, "alpha": alpha}
    spec = replace(spec, train=replace(spec.train, loss_args=args))
    name += f"-alpha{alpha:g}"
folder = Path(f"runs/small-T/{name}/seed{seed}")
metrics, state = run_or_resume(spec, folder, progress=False, argv=sys.argv)
print(T, seed, metrics["test"]["errors"], state, flush=True)
