"""Compare the re-made runs in runs/paper-new with the committed records and weights' sha256."""
import hashlib
import json
import re
from pathlib import Path

new, old = Path("runs/paper-new"), Path("docs/results/hinton2015-paper/runs")
report = Path("docs/results/hinton2015-paper/REPORT.md").read_text()
sha = dict(re.findall(r"\| `([^`]+)`\s*\| `([0-9a-f]{64})` \|", report))
same = differ = 0
for metrics in sorted(new.glob("*/*/seed*/metrics.json")):
    key = str(metrics.parent.relative_to(new))
    if not (metrics.parent / "model.safetensors").exists() or "jitter1" in key:
        continue
    a, b = json.loads(metrics.read_text())["test"], json.loads((old / key / "metrics.json").read_text())["test"]
    ok = (a["errors"], a["loss"]) == (b["errors"], b["loss"])
    digest = hashlib.sha256((metrics.parent / "model.safetensors").read_bytes()).hexdigest()
    ok_sha = sha.get(key) in (None, digest)
    same += ok and ok_sha
    differ += not (ok and ok_sha)
    print(key, a["errors"], b["errors"], "loss same" if a["loss"] == b["loss"] else "LOSS DIFFERS",
          {None: "no sha in report"}.get(sha.get(key), "sha same" if ok_sha else "SHA DIFFERS"))
print("same", same, "differ", differ)
