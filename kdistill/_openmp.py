"""OpenMP waits by sleeping, not spinning: set before torch loads its OpenMP runtime.

On a machine whose cores are shared (CI runners, notebooks, several jobs at once) OpenMP
threads that spin between parallel regions steal the very cores their peers wait for: here a
distillation epoch ran 10-18x slower on 2 threads than on 1 (docs/performance.md). With
``OMP_WAIT_POLICY=PASSIVE`` the two were equally fast. A value the user set wins.

The runtime reads the variable once, when it starts (GNU libgomp, which torch's wheels use:
when the library is loaded, i.e. at ``import torch``), and offers no call to change it later.
So it only takes effect when kdistill is imported before torch (the ``kdistill`` command
always is). When an OpenMP runtime is already in the process and the user set no policy,
kdistill still sets the variable (for child processes) and warns once that this process keeps
spinning threads, saying how to avoid it.
"""

from __future__ import annotations

import os
import sys
import warnings

_MESSAGE = (
    "kdistill was imported after torch had started its OpenMP runtime, so kdistill cannot make "
    "OpenMP threads sleep instead of spin (OMP_WAIT_POLICY=PASSIVE) in this process; on shared "
    "or busy cores spinning threads can make training several times slower. Import kdistill "
    "before torch, or set OMP_WAIT_POLICY=PASSIVE in the environment before starting Python."
)
_warned = False


def openmp_runtime_loaded() -> bool:
    """Whether an OpenMP runtime (libgomp, libiomp5, libomp) is already loaded in this process.

    Read from ``/proc/self/maps`` where it exists (Linux); elsewhere, whether torch is imported.
    """
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            names = {line.rsplit("/", 1)[-1].strip() for line in maps if "/" in line}
    except OSError:
        return "torch" in sys.modules
    return any(name.startswith(("libgomp", "libiomp", "libomp")) for name in names)


def apply_wait_policy() -> None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user chose one; warn once if it is too late."""
    global _warned
    if "OMP_WAIT_POLICY" in os.environ:
        return  # the user's choice (or kdistill's, set already): nothing to do or say
    too_late = openmp_runtime_loaded()
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # child processes still get it
    if too_late and not _warned:
        _warned = True
        warnings.warn(_MESSAGE, RuntimeWarning, stacklevel=2)


apply_wait_policy()
