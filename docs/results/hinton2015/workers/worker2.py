"""A second worker for the paper reproduction: runs the tail of the plan (the 3% runs, then the
Fashion-MNIST ensemble members in reverse) while the main `kdistill reproduce` process works
forward, so both cores stay busy on these small models. Never starts a run whose folder exists,
and stops taking Fashion members when the main process gets within 3 of them."""
import sys
from pathlib import Path
from kdistill.experiments import hinton2015 as h
from kdistill.runs import execute

out = Path("/work/hinton2015-paper/out")
the_plan = h.plan(h.PROFILES["paper"], out, "/work/shared/data", seeds=3)
small = [k for k in the_plan.runs if k.startswith("mnist/small-")]
fashion = [h.hard_key("fashion-mnist", "mlp:300x300", k) for k in range(10)]
todo = small + [(k, fashion[k]) for k in range(9, 2, -1)]  # 9..3: the main process needs >= 3 runs to get there
for item in todo:
    if isinstance(item, tuple):
        k, key = item
        if any((out / fashion[j]).exists() for j in range(max(0, k - 3), k)) or (out / fashion[0]).exists():
            print("main process is near; stopping", flush=True)
            break
    else:
        key = item
    if (out / key).exists():
        continue
    m = execute(the_plan.runs[key], out / key, progress=False, argv=[sys.executable, __file__])
    print(key, m["test"]["errors"], flush=True)
