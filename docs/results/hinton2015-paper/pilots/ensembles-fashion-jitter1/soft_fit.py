"""Issue 10 diagnostic: how closely models distilled from an ensemble at T = 5 match its soft
targets, on the transfer set's images (unshifted) and on the test set, beside one member.

Needs the pilot's weights (not committed). From the repository root:
``python soft_fit.py RUN_FOLDER fashion-mnist -jitter1`` (the suffix of the runs' names).
"""

import sys
from pathlib import Path

import kdistill  # noqa: F401  # isort: skip  (before torch: it sets the OpenMP wait policy)
import torch

from kdistill.data import load_dataset
from kdistill.runs import load_run_model

TEMPERATURE = 5.0


@torch.no_grad()
def logits_of(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    return torch.cat([model(images[i : i + 5000]) for i in range(0, len(images), 5000)])


def main(root: Path, dataset: str, suffix: str) -> None:
    torch.set_num_threads(1)
    data = load_dataset(dataset, "/work/shared/data")
    member = f"hard-300x300{suffix}/seed{{}}"
    members = [load_run_model(root / dataset / member.format(k))[0] for k in range(10)]
    students = [f"ensemble10-distilled-300x300{suffix}-T5/seed{s}" for s in range(3)]
    for split in ("train", "test"):
        images, labels = getattr(data, split).images, getattr(data, split).labels
        member_logits = [logits_of(m, images) for m in members]
        ensemble = torch.stack([z.softmax(1) for z in member_logits]).mean(0)
        soft = torch.stack([(z / TEMPERATURE).softmax(1) for z in member_logits]).mean(0)
        print(f"{split}: ensemble errors {(ensemble.argmax(1) != labels).sum().item()}")
        for name in [member.format(0), *students]:
            z = logits_of(load_run_model(root / dataset / name)[0], images)
            log_q = (z / TEMPERATURE).log_softmax(1)
            kl = (soft * (soft.clamp_min(1e-12).log() - log_q)).sum(1).mean()
            agree = (z.argmax(1) == ensemble.argmax(1)).float().mean()
            errors = (z.argmax(1) != labels).sum().item()
            print(f"  {name}: errors {errors}, agrees with the ensemble {agree:.4f}, KL {kl:.4f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
