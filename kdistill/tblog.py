"""Optional TensorBoard logging of each epoch's row (``--tensorboard``).

TensorBoard is an optional extra (``pip install 'kdistill[tensorboard]'``), imported only when
asked for, so kdistill itself never needs it.
"""

from __future__ import annotations

from pathlib import Path

from kdistill.errors import KDistillError


class TensorBoardLog:
    """Writes the numeric columns of history rows as scalars, one step per epoch."""

    def __init__(self, folder: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise KDistillError(
                "--tensorboard needs the tensorboard package: pip install 'kdistill[tensorboard]'"
            ) from None
        self.folder = Path(folder)
        self._writer_class = SummaryWriter
        self._writer = None
        self._logged = 0  # rows of the history already written by this process

    def __call__(self, history: list[dict]) -> None:
        """Log the rows of ``history`` not logged yet (all of them after a resume)."""
        if self._writer is None:
            # purge_step drops events a killed run wrote past the epoch it resumes from.
            first = int(history[0]["epoch"]) if history else 1
            self._writer = self._writer_class(str(self.folder), purge_step=first)
        for row in history[self._logged :]:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self._writer.add_scalar(key, value, int(row["epoch"]))
        self._logged = len(history)
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        if self._writer is not None:
            self._writer.close()
