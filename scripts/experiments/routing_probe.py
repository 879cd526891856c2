#!/usr/bin/python3
"""How predictable the routing device's mistakes are, and from what (docs/results.md, "Routing").

For level-2 prompts (all 16 200 of them, split 50/50 by a seeded permutation) it decodes the
device's and the cloud's greedy answers in PyTorch (tests/models/torch_gpt2.py, the conformance
model), then fits logistic regressions that predict "the device is wrong" on one half and ranks
the other half by them, handing off the top 30% (the score-ranked cap of `tandem route eval`):
  confidence  the router's three features (first-token probability and entropy, mean log-prob)
  hidden      the device's final hidden state after the prompt (what the marker row reads: the
              best a linear hand-off head on those features can do, fitted supervised)
  prompt      hand-made features of the prompt (operator, carry/borrow, sign, operands' digits)
  hidden+mlp  a one-hidden-layer MLP on the hidden state
and prints each one's accuracy and gap closed beside random and the oracle.
Usage: routing_probe.py DEVICE.safetensors CLOUD.safetensors [BUDGETS] [SEED]   (BUDGETS: 0.1,0.3)"""
import math, os, sys
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../../tests/models"))
from torch_gpt2 import model_from_file  # noqa: E402

torch.set_num_threads(1)
device_path, cloud_path = sys.argv[1], sys.argv[2]
budgets = [float(b) for b in (sys.argv[3] if len(sys.argv) > 3 else "0.3").split(",")]
seed = int(sys.argv[4]) if len(sys.argv) > 4 else 1

prompts, answers, feats = [], [], []
for a in range(10, 100):
    for b in range(10, 100):
        for op in "+-":
            v = a + b if op == "+" else a - b
            prompts.append(f"{a}{op}{b}=")
            answers.append(str(v))
            carry = (a % 10 + b % 10 >= 10) if op == "+" else (a % 10 < b % 10)
            feats.append([op == "+", carry, v < 0, abs(v) >= 100, abs(v) < 10,
                          a // 10, a % 10, b // 10, b % 10])
N = len(prompts)
tokens = torch.tensor([[0] + list(p.encode()) for p in prompts])  # (N,7): end-of-text, prompt


@torch.no_grad()
def greedy(model, max_tokens=5):
    seq, out, hidden = tokens, [[] for _ in range(N)], None
    done = torch.zeros(N, dtype=torch.bool)
    first = None
    for t in range(max_tokens):
        hs = []
        logits = model(seq, hidden=hs)[:, -1, :].clone()  # (N,V)
        if t == 0:
            x = hs[-1][:, -1, :]
            C = x.shape[-1]
            hidden = F.layer_norm(x, (C,), model.p("ln_f.weight"), model.p("ln_f.bias"), 1e-5)
            first = logits.log_softmax(-1)
        logits[:, 5] = -math.inf  # the hand-off marker banned
        lp = logits.log_softmax(-1)
        nxt = lp.argmax(-1)
        for i in range(N):
            if not done[i]:
                out[i].append((int(nxt[i]), float(lp[i, nxt[i]])))
        done |= (nxt == 10) | (nxt == 0)
        seq = torch.cat([seq, nxt[:, None]], 1)
    text = [bytes(t for t, _ in o).decode(errors="replace").split("\n")[0].strip() for o in out]
    meanlp = [sum(l for _, l in o) / len(o) for o in out]
    p1 = first.exp()
    conf = torch.stack([p1.max(-1).values, -(p1 * first).sum(-1), torch.tensor(meanlp)], 1)
    return text, hidden, conf


dev_text, hidden, conf = greedy(model_from_file(device_path))
cloud_text, _, _ = greedy(model_from_file(cloud_path))
dev_right = np.array([t == a for t, a in zip(dev_text, answers)])
cloud_right = np.array([t == a for t, a in zip(cloud_text, answers)])
rng = np.random.default_rng(seed)
perm = rng.permutation(N)
tr, te = perm[: N // 2], perm[N // 2:]
y = torch.tensor(~dev_right, dtype=torch.float32)


def fit(X, hidden_units=0, steps=3000, l2=1e-3):
    X = torch.as_tensor(np.asarray(X, dtype=np.float32))
    mu, sd = X[tr].mean(0), X[tr].std(0) + 1e-6
    Z = (X - mu) / sd
    torch.manual_seed(seed)
    if hidden_units:
        net = torch.nn.Sequential(torch.nn.Linear(Z.shape[1], hidden_units), torch.nn.ReLU(),
                                  torch.nn.Linear(hidden_units, 1))
    else:
        net = torch.nn.Linear(Z.shape[1], 1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=l2)
    for _ in range(steps):
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(net(Z[tr]).squeeze(-1), y[tr])
        loss.backward()
        opt.step()
    with torch.no_grad():
        return net(Z).squeeze(-1).numpy()


def ranked(score, budget):
    """Accuracy on the test half when the top ⌊budget·n⌋ scores go to the cloud."""
    s = score[te]
    k = int(math.floor(budget * len(te) + 1e-9))
    grant = np.zeros(len(te), dtype=bool)
    grant[np.argsort(-s, kind="stable")[:k]] = True
    return np.where(grant, cloud_right[te], dev_right[te]).mean()


d, c = dev_right[te].mean(), cloud_right[te].mean()
scorers = [("random", rng.random(N)),
           ("confidence (the router's 3 features)", fit(conf.numpy())),
           ("prompt features (carry, sign, digits)", fit(feats)),
           ("hidden state, linear (the marker row's reach)", fit(hidden.numpy())),
           ("hidden state, MLP 64", fit(hidden.numpy(), 64)),
           ("prompt features, MLP 64", fit(feats, 64)),
           ("oracle", (~dev_right).astype(float) + 1e-3 * rng.random(N))]
print(f"{N} prompts, {len(te)} scored; device right {d:.3f}, cloud {c:.3f}")
carry = np.array([f[1] for f in feats], dtype=bool)
negative = np.array([f[2] for f in feats], dtype=bool)
print(f"device right with carry/borrow {dev_right[carry].mean():.3f}, without "
      f"{dev_right[~carry].mean():.3f}; negative answers {dev_right[negative].mean():.3f}, "
      f"others {dev_right[~negative].mean():.3f}")
print("| scorer | " + " | ".join(f"{b:.0%}: accuracy, gap closed" for b in budgets) + " |")
print("|---|" + "---|" * len(budgets))
for name, score in scorers:
    cells = []
    for b in budgets:
        acc = ranked(score, b)
        cells.append(f"{100 * acc:.1f}, {100 * (acc - d) / (c - d):.1f}")
    print(f"| {name} | " + " | ".join(cells) + " |")
