"""Each run of the timed ensemble experiment against the committed record of the same run."""
import json
import sys
from pathlib import Path

new, old = Path(sys.argv[1]), Path("docs/results/hinton2015-paper/runs")
same = 0
for metrics in sorted(new.glob("*/*/seed*/metrics.json")):
    key = metrics.parent.relative_to(new)
    a = json.loads(metrics.read_text())["test"]
    b = json.loads((old / key / "metrics.json").read_text())["test"]
    if (a["errors"], a["loss"]) == (b["errors"], b["loss"]):
        same += 1
    else:
        print("differs:", key, a["errors"], b["errors"], a["loss"], b["loss"])
print(f"{same} runs with the committed test errors and test loss")
