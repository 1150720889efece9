#!/bin/bash
# Issue 15: throughput at 1 and 2 threads, interleaved, idle cores.
cd "$(dirname "$0")/../.." && . .venv/bin/activate  # the repository root
export KDISTILL_DATA=${KDISTILL_DATA:-../shared/data}
for round in 1 2; do
  for t in 1 2; do
    echo "== round $round threads $t $(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg)"
    python benchmarks/throughput.py --threads $t --no-scaling --bf16-epochs 0 --memory-epochs 0 \
      --json scratch/tp-t$t-r$round.json 2>&1 | grep -v "^USDT"
  done
done
echo "== done $(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg)"
