# Issue 10: the 3% and omit-3 rows with SGD lr 0.1 + grad-clip 1 (seed 0), as the pilot of the main table
. /work/main/.venv/bin/activate
export OMP_NUM_THREADS=1
T=/work/main/docs/results/paper-teacher
C="--dataset mnist --data-dir /work/shared/data --model mlp:800x800 --grad-clip 1 --bf16 --seed 0 --no-progress"
P=/work/main/scratch/p10
kdistill distill --teacher $T $C --fraction 0.03 --epochs 200 -T 20 --alpha 0.9 --out $P/small-soft-clip-s0 > /dev/null 2>&1
python -c "import json;print('small-soft s0', json.load(open('$P/small-soft-clip-s0/metrics.json'))['test']['errors'])"
kdistill distill --teacher $T $C --epochs 60 -T 20 --alpha 0.9 --drop-classes 3 --holdout-fraction 0.1 --out $P/omit3-clip-s0 > /dev/null 2>&1
python -c "import json;m=json.load(open('$P/omit3-clip-s0/metrics.json'))['test'];print('omit3 s0', m['errors'], 'on 3s', m['per_class_errors'][3])"
