"""Paper reproductions, registered by name: each a plan of runs (RunSpecs) and its analyses,
run by the loop they share (:mod:`kdistill.experiments.common`).

A paper's module ``kdistill.experiments.<name>`` defines ``REPRODUCTION`` (a
:class:`~kdistill.experiments.common.Reproduction`); :data:`PAPERS` lists them with one line
each, so listing them imports nothing heavy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from kdistill.errors import KDistillError

if TYPE_CHECKING:
    from kdistill.experiments.common import Reproduction

PAPERS = {
    "hinton2015": "Hinton, Vinyals & Dean (2015), Distilling the Knowledge in a Neural Network: "
    "every MNIST experiment, and its speech results redone on images",
}


def reproduction(name: str) -> Reproduction:
    """The registered reproduction called ``name``, or a one-line error naming the others."""
    if name not in PAPERS:
        raise KDistillError(f"no reproduction called {name!r}: choose {', '.join(PAPERS)}")
    return importlib.import_module(f"{__name__}.{name}").REPRODUCTION
