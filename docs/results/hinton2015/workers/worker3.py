"""Third helper pass (after worker2): the MNIST ensemble members 9..3 in reverse, while the main
process works forward through them; stops when the main process gets within 3 members."""
import sys
from pathlib import Path
from kdistill.experiments import hinton2015 as h
from kdistill.runs import execute

out = Path("/work/hinton2015-paper/out")
the_plan = h.plan(h.PROFILES["paper"], out, "/work/shared/data", seeds=3)
members = [h.hard_key("mnist", "mlp:300x300", k) for k in range(10)]
for k in range(9, 2, -1):
    if any((out / members[j]).exists() for j in range(k - 3, k)):
        print("main process is near; stopping", flush=True)
        break
    if (out / members[k]).exists():
        continue
    m = execute(the_plan.runs[members[k]], out / members[k], progress=False, argv=[sys.executable, __file__])
    print(members[k], m["test"]["errors"], flush=True)
