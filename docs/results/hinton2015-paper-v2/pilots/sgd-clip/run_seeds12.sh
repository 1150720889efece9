# waits for pilot10.sh (alone seed 0), then distilled and alone for seeds 1 and 2
. /work/main/.venv/bin/activate
export OMP_NUM_THREADS=1
while pgrep -f pilot10.sh > /dev/null; do sleep 10; done
T=/work/main/docs/results/paper-teacher
for s in 1 2; do
C="--dataset mnist --data-dir /work/shared/data --model mlp:800x800 --epochs 60 --grad-clip 1 --bf16 --seed $s --no-progress"
kdistill distill --teacher $T $C -T 20 --alpha 0.9 --out /work/main/scratch/p10/distilled-clip-s$s > /dev/null 2>&1
python -c "import json;print('distilled s$s', json.load(open('/work/main/scratch/p10/distilled-clip-s$s/metrics.json'))['test']['errors'])"
kdistill train $C --out /work/main/scratch/p10/alone-clip-s$s > /dev/null 2>&1
python -c "import json;print('alone s$s', json.load(open('/work/main/scratch/p10/alone-clip-s$s/metrics.json'))['test']['errors'])"
done
