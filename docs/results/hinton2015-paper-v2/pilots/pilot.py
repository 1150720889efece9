"""Pilot (issue 10): ensemble -> one model at quick scale. Which member recipe makes the distilled
student beat the members? Not committed code. Usage: pilot.py DATASET FRACTION EPOCHS MEMBERSPEC [variants json]"""
import json, sys, time, torch
from dataclasses import replace
from pathlib import Path
from kdistill.runs import RunSpec, execute, load_run_model, cached_dataset
from kdistill.train import TrainConfig, evaluate, predict_logits

torch.set_num_threads(1)
ds, frac, epochs, member = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
variants = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
root = Path(f"/work/main/scratch/ens/{ds}-{frac}-{epochs}-{member.replace(':','_').replace(',','_')}{'-' + '_'.join(f'{k}{v}' for k, v in json.loads(sys.argv[6]).items()) if len(sys.argv) > 6 else ''}")
base = dict(dataset=ds, data_dir="/work/shared/data", train_fraction=frac)
S = dict(optimizer="adam", lr=1e-3, bf16=True, epochs=epochs)
mem_extra = json.loads(sys.argv[6]) if len(sys.argv) > 6 else {}
members = []
for k in range(3):
    f = root / f"m{k}"
    if not (f / "metrics.json").exists():
        execute(RunSpec(model=member, train=TrainConfig(seed=k, **{**S, **mem_extra}), **base), f, progress=False)
    members.append(f)
data = cached_dataset(ds, "/work/shared/data")
errs = [json.loads((m / "metrics.json").read_text())["test"]["errors"] for m in members]
probs = sum(torch.softmax(predict_logits(load_run_model(m)[0], data.test.images), 1) for m in members)
ens = int((probs.argmax(1) != data.test.labels).sum())
print("members", errs, "ensemble", ens, flush=True)
student = member.split(",")[0]
for name, v in variants.items():
    f = root / f"d-{name}"
    model = v.pop("model", student)
    t0 = time.perf_counter()
    if not (f / "metrics.json").exists():
        execute(RunSpec(model=model, teachers=[str(m) for m in members], train=TrainConfig(**{**S, **v}), **base), f, progress=False)
    m = json.loads((f / "metrics.json").read_text())
    print(name, m["test"]["errors"], f"{time.perf_counter()-t0:.0f}s", flush=True)
