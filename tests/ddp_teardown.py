"""Run by torchrun (2 ranks) from test_distributed.py: is every DDP wrapper freed in time?

A ``DistributedDataParallel`` wrapper's reducer holds the process group; freed only after
``destroy_process_group`` (e.g. by the cycle collector at interpreter exit), gloo's C++ teardown
can abort the rank ("terminate called without an active exception"). With the cycle collector
off, so that nothing depends on when it would have run, this checks that

* ``fit`` drops its wrapper when it returns, and when it raises, even though its frame stays
  referenced (as a traceback or cyclic garbage can keep it, e.g. one that torch creates while
  lazily importing a module during training);
* ``distributed.process_group`` frees cyclic garbage before it destroys the group;
* no thread but the main one is left running (tqdm's monitor).

Each rank writes its findings to ``<out>/rank<r>.json``.
"""

from __future__ import annotations

import gc
import json
import sys
import threading
import weakref
from pathlib import Path

import torch
import torch.distributed as dist
from helpers import make_split

from kdistill import distributed
from kdistill.train import TrainConfig, fit

wrappers: list[weakref.ref] = []
_wrap = distributed.wrap


def _recording_wrap(model, device):
    net = _wrap(model, device)
    wrappers.append(weakref.ref(net))
    return net


class Stop(Exception):
    """Raised from on_epoch: fit ends by an error."""


def _fit(kept_frames: list, fail: bool) -> None:
    def on_epoch(history: list[dict]) -> None:
        kept_frames.append(sys._getframe(1))  # fit's frame, kept alive after it ends
        if fail:
            raise Stop

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 4))
    config = TrainConfig(epochs=2, batch_size=8, device="cpu")
    fit(model, make_split(64), config, progress=False, on_epoch=on_epoch)


def main(out: Path) -> None:
    distributed.wrap = _recording_wrap
    destroy = dist.destroy_process_group
    alive_at_destroy: list[bool] = []

    def recording_destroy(*args, **kwargs):
        alive_at_destroy.append(any(ref() is not None for ref in wrappers))
        return destroy(*args, **kwargs)

    dist.destroy_process_group = recording_destroy
    gc.disable()
    report: dict = {}
    kept_frames: list = []

    with distributed.process_group("cpu") as ctx:
        _fit(kept_frames, fail=False)
        report["alive_after_fit"] = wrappers[-1]() is not None
        try:
            _fit(kept_frames, fail=True)
        except Stop:
            pass
        report["alive_after_failed_fit"] = wrappers[-1]() is not None
        # a wrapper that only the cycle collector can free: the group must free it first
        cycle: list = [distributed.wrap(torch.nn.Linear(2, 2), torch.device("cpu"))]
        cycle.append(cycle)
        del cycle
    report["alive_at_destroy"] = alive_at_destroy
    report["threads"] = sorted(t.name for t in threading.enumerate() if t.is_alive())
    report["wrappers"] = len(wrappers)
    (out / f"rank{ctx.rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
