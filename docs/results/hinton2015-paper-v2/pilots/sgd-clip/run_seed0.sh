# Issue 10 lead: the main table's students with SGD lr 0.1 + grad-clip 1 (60 epochs, bf16), alone and distilled at T = 20, alpha 0.9
. /work/main/.venv/bin/activate
export OMP_NUM_THREADS=1
T=/work/main/docs/results/paper-teacher
C="--dataset mnist --data-dir /work/shared/data --model mlp:800x800 --epochs 60 --grad-clip 1 --bf16 --seed 0 --no-progress"
kdistill distill --teacher $T $C -T 20 --alpha 0.9 --out /work/main/scratch/p10/distilled-clip-s0 > /dev/null 2>&1
python -c "import json;print('distilled', json.load(open('/work/main/scratch/p10/distilled-clip-s0/metrics.json'))['test']['errors'])"
kdistill train $C --out /work/main/scratch/p10/alone-clip-s0 > /dev/null 2>&1
python -c "import json;print('alone', json.load(open('/work/main/scratch/p10/alone-clip-s0/metrics.json'))['test']['errors'])"
