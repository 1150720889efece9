"""Issue 11, items 11-14 and 18: the documented ways of installing, testing, importing and
plotting behave as documented (the rest of issue 11 is in test_safety.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    environ.update(PYTHONPATH=str(REPO), **env)
    return subprocess.run(
        [sys.executable, "-W", "default", "-c", code],
        capture_output=True, text=True, env=environ, timeout=120, check=True,
    )  # fmt: skip


# --------------------------------------------------------------------------- 12. import order


def test_importing_kdistill_after_torch_warns_once_and_first_does_not():
    late = _python(
        "import torch\n"
        "torch.ones(64, 64) @ torch.ones(64, 64)\n"
        "import kdistill, kdistill._openmp as o, importlib\n"
        "importlib.reload(o)\n"  # a second try to apply it says nothing more
        "import os; print(os.environ['OMP_WAIT_POLICY'])\n"
    )
    assert late.stderr.count("RuntimeWarning") == 1, late.stderr
    assert "import kdistill before torch" in late.stderr.lower().replace("\n", " ")
    assert "OMP_WAIT_POLICY=PASSIVE" in late.stderr
    assert late.stdout.strip() == "PASSIVE"  # child processes still get it

    first = _python("import kdistill, torch\ntorch.ones(64, 64) @ torch.ones(64, 64)\n")
    assert "Warning" not in first.stderr, first.stderr
    chosen = _python("import torch, kdistill", OMP_WAIT_POLICY="ACTIVE")  # the user's choice
    assert "Warning" not in chosen.stderr, chosen.stderr
