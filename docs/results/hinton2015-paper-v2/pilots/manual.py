import torch, json, sys
import torch.nn.functional as F
from pathlib import Path
from kdistill.runs import load_run_model, cached_dataset, RunSpec, transfer_split
from kdistill.train import predict_logits
from kdistill.models import build_model
torch.set_num_threads(1)
root = Path(sys.argv[1])
data = cached_dataset("mnist", "/work/shared/data")
members = [load_run_model(root / f"m{k}")[0] for k in range(3)]
cfg = json.loads((root / "m0/config.json").read_text())
train = transfer_split(data.train, RunSpec(model="x", dataset="mnist", train_fraction=0.1))
print(len(train.images))
L = torch.stack([predict_logits(m, train.images) for m in members])
P = torch.softmax(L, -1).mean(0)
print("ensemble train errors", int((P.argmax(1) != train.labels).sum()), "mean max prob", float(P.max(1).values.mean()))
def run(mode, epochs=24, seed=0, spec=sys.argv[2]):
    torch.manual_seed(seed)
    s = build_model(spec, (1, 28, 28), 10)
    opt = torch.optim.Adam(s.parameters(), 1e-3)
    n = len(train.images); g = torch.Generator().manual_seed(seed)
    for ep in range(epochs):
        s.train()
        for idx in torch.randperm(n, generator=g).split(128):
            z = s(train.images[idx])
            if mode == "hard": loss = F.cross_entropy(z, train.labels[idx])
            else: loss = F.kl_div(F.log_softmax(z, -1), P[idx], reduction="batchmean")
            opt.zero_grad(); loss.backward(); opt.step()
    s.eval()
    with torch.no_grad():
        e = int((s(data.test.images).argmax(1) != data.test.labels).sum())
        tr = int((s(train.images).argmax(1) != train.labels).sum())
    print(mode, "test", e, "train", tr, flush=True)
run("hard"); run("soft")
