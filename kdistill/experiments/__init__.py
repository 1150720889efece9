"""Paper reproductions, registered by name: each a plan of runs (RunSpecs) and its analyses,
run by the loop they share (:mod:`kdistill.experiments.common`).

A paper's module ``kdistill.experiments.<name>`` (a ``-`` of the name as ``_``) defines
``REPRODUCTION`` (a :class:`~kdistill.experiments.common.Reproduction`); :data:`PAPERS` lists
them with one line each, so listing them imports nothing heavy.
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
    "logit-losses": "One comparison of the logit-distillation losses (hinton, reverse-kl, jsd, "
    "tv, skew-kl, skew-reverse-kl, dkd, dist): same teacher, student and optimiser, each loss's "
    "setting chosen on held-out training data, MNIST and Fashion-MNIST",
}


def reproduction(name: str) -> Reproduction:
    """The registered reproduction called ``name``, or a one-line error naming the others."""
    if name not in PAPERS:
        raise KDistillError(f"no reproduction called {name!r}: choose {', '.join(PAPERS)}")
    module = name.replace("-", "_")
    return importlib.import_module(f"{__name__}.{module}").REPRODUCTION
