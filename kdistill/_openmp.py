"""OpenMP waits by sleeping, not spinning: set before torch loads its OpenMP runtime.

On a machine whose cores are shared (CI runners, notebooks, several jobs at once) OpenMP
threads that spin between parallel regions steal the very cores their peers wait for: here a
distillation epoch ran 10-18x slower on 2 threads than on 1 (docs/performance.md). With
``OMP_WAIT_POLICY=PASSIVE`` the two were equally fast. A value the user set wins, and this only
takes effect when kdistill is imported before torch (the ``kdistill`` command always is).
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
