"""``kdistill demo``: the whole idea in under a minute on scikit-learn's bundled digits.

A CNN teacher, an MLP student trained alone, and the same student distilled from the teacher
with the same optimiser settings; a comparison table and two PNGs (training curves, and the
teacher's soft targets at T = 1, 4, 20).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from kdistill.checkpoint import check_folder_path
from kdistill.reports import format_table, plot_curves, plot_soft_targets
from kdistill.runs import (
    RunSpec,
    cached_dataset,
    is_complete,
    load_run_model,
    read_history,
    run_or_resume,
)
from kdistill.train import TrainConfig, predict_logits

TEACHER = "cnn:16x32,dropout=0.5"
STUDENT = "mlp:64"
TEMPERATURE = 8.0
# The same optimiser for every run, so the only difference between the students is the loss.
SETTINGS = TrainConfig(epochs=40, batch_size=128, lr=0.05, schedule="cosine")


def run_demo(out: Path, seed: int = 0, progress: bool = True) -> list[dict]:
    """Train the three models into ``out`` (reusing finished runs, continuing interrupted ones),
    print and return the table."""
    check_folder_path(out)
    settings = replace(SETTINGS, seed=seed)
    runs = {
        "teacher": RunSpec(model=TEACHER, train=settings),
        "student alone": RunSpec(model=STUDENT, train=settings),
        f"student distilled (T={TEMPERATURE:g})": RunSpec(
            model=STUDENT,
            teachers=[str(out / "teacher")],
            train=replace(settings, loss="hinton", loss_args={"temperature": TEMPERATURE}),
        ),
    }
    rows, histories = [], {}
    for label, spec in runs.items():
        folder = out / label.split(" (")[0].replace(" ", "-")
        if not is_complete(folder):
            print(f"training {label}: {spec.model}", flush=True)
        # a finished run is checked and kept; a demo stopped by Ctrl-C continues
        metrics, _ = run_or_resume(spec, folder, progress=progress, argv=["kdistill", "demo"])
        histories[label] = read_history(folder / "history.csv")
        cost = metrics["cost"]["model"]
        rows.append(
            {
                "model": label,
                "spec": spec.model,
                "test_errors": metrics["test"]["errors"],
                "of": metrics["test"]["examples"],
                "accuracy": round(metrics["test"]["accuracy"], 4),
                "parameters": cost["parameters"],
                "flops/example": cost["flops_per_example"],
                "examples/s": cost["inference_examples_per_s"],
            }
        )

    plot_curves(histories, out / "curves.png")
    teacher, _ = load_run_model(out / "teacher")
    test = cached_dataset("digits", None).test
    logits = predict_logits(teacher, test.images[:4])
    plot_soft_targets(logits, [1, 4, 20], out / "soft_targets.png", images=test.images[:4])
    print(format_table(rows))
    print(f"plots: {out / 'curves.png'}, {out / 'soft_targets.png'}")
    return rows
