"""Pilot (issue 10): the quick profile with the paper profile's student optimiser (SGD lr 0.1,
clip 1) instead of Adam: do its rows (ensemble, 3%) point the paper's way?"""
import sys, time
from dataclasses import replace
import torch
from kdistill.experiments import hinton2015 as h
torch.set_num_threads(1)
q = h.PROFILES["quick"]
S = h.STUDENT_OPTIMISER
prof = replace(q, name="quick-sgd", student=S(epochs=12),
               distill=S(epochs=12, loss="hinton", loss_args=dict(h.MAIN_LOSS_ARGS)),
               small=S(epochs=40))
t = time.time()
rows = h.reproduce(prof, sys.argv[1], "/work/shared/data", progress=False)
print("wall", time.time() - t)
for r in rows:
    print(r["experiment"][:40], "|", r["row"][:50], "|", r["measured"], r.get("gap_closed"))
