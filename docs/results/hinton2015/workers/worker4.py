"""Fourth helper pass: Fashion-MNIST members 2 and 1, started only while the main process has not
begun the MNIST ensemble's distilled run (so it is >= 2 runs away from them)."""
import sys
from pathlib import Path
from kdistill.experiments import hinton2015 as h
from kdistill.runs import execute

out = Path("/work/hinton2015-paper/out")
the_plan = h.plan(h.PROFILES["paper"], out, "/work/shared/data", seeds=3)
fashion = [h.hard_key("fashion-mnist", "mlp:300x300", k) for k in range(10)]
ensemble = out / h.ensemble_key("mnist", the_plan.profile)
for k in (2, 1):
    if ensemble.exists() or any((out / fashion[j]).exists() for j in range(k)):
        print("main process is near; stopping", flush=True)
        break
    if (out / fashion[k]).exists():
        continue
    m = execute(the_plan.runs[fashion[k]], out / fashion[k], progress=False, argv=[sys.executable, __file__])
    print(fashion[k], m["test"]["errors"], flush=True)
