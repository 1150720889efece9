#!/bin/bash
# Issue 10 (2026-11-27): the ensembles distilled at T = 2 and 5 (paper profile's
# ensemble_temperatures, made in runs/paper-new by `kdistill reproduce hinton2015 --profile paper
# --seeds 3 --experiment ensemble --jobs 2`), then the whole report regenerated there; copies the
# report and the new runs' records (no weights) into docs/results/hinton2015-paper.
set -e
src=/work/main/runs/paper-new dst=/work/main/docs/results/hinton2015-paper
cp $src/REPORT.md $src/results.json $src/meta.json $src/*.png $dst/
(cd $src && for d in */ensemble10-distilled-300x300-T*/seed*; do
  mkdir -p $dst/runs/$d
  cp $d/config.json $d/meta.json $d/history.csv $d/metrics.json $dst/runs/$d/
done)
find $dst/runs -name metrics.json | wc -l
