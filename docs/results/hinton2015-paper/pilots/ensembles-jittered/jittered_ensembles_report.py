"""Issue 10: the report of the jittered-ensemble pilot (runs/p4, made by p4e_run.sh) from today's
code: profile `paper` with ensemble_jitter=2, ensemble experiment only; trains nothing."""
import sys
from dataclasses import replace
from kdistill.experiments import hinton2015 as h

if __name__ == "__main__":
    profile = replace(h.PROFILES["paper"], name="paper-jittered-ensembles", ensemble_jitter=2)
    h.reproduce(profile, sys.argv[1], "/work/shared/data", seeds=3, experiments=["ensemble"],
                progress=False, log=lambda line: None)
