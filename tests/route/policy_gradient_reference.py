#!/usr/bin/env python3
"""Independent reference for tandem's policy-gradient term (route/policy_gradient.h), PyTorch float64.

Reads the cases policy_gradient_reference_test writes (a case count, then per case a header
"mode P G V eps rows" with mode 0 = GAPG, 1 = GRPO; the P*G rewards, group by group; each row's
completion index; each row's target; the rows' logits) and writes per case the loss and
autograd's gradient in the logits:
    GAPG  A_i = (r_i - mean(r)) / (G - 1)
    GRPO  A_i = (r_i - mean(r)) / ((std(r, unbiased) + eps) * G)
    loss  = -(1/P) * sum over rows of A[completion(row)] * log_softmax(logits[row])[target[row]]
Usage: policy_gradient_reference.py INPUT OUTPUT. Exit status 2 when torch cannot be imported.
"""
import sys

try:
    import torch
except Exception as e:  # noqa: BLE001 - any import failure means the dependency is missing
    sys.stderr.write(f"policy_gradient_reference.py: cannot import torch ({e}); install python3-torch\n")
    sys.exit(2)


def advantages(rewards, mode, eps):
    r = torch.tensor(rewards, dtype=torch.float64)
    g = r.numel()
    centred = r - r.mean()
    if mode == 0:
        return centred / (g - 1)
    return centred / ((r.std(unbiased=True) + eps) * g)


def reference(mode, p, g, v, eps, rewards, owner, targets, logits):
    adv = torch.cat([advantages(rewards[k * g:(k + 1) * g], mode, eps) for k in range(p)])
    z = torch.tensor(logits, dtype=torch.float64).reshape(len(owner), v).requires_grad_(True)
    logp = torch.log_softmax(z, dim=-1)
    picked = logp[torch.arange(len(owner)), torch.tensor(targets, dtype=torch.long)]
    loss = -(adv[torch.tensor(owner, dtype=torch.long)] * picked).sum() / p
    loss.backward()
    return loss.item(), z.grad.reshape(-1).tolist()


def main():
    if len(sys.argv) != 3:
        sys.stderr.write("usage: policy_gradient_reference.py INPUT OUTPUT\n")
        return 1
    with open(sys.argv[1]) as f:
        lines = f.read().split("\n")
    cases = int(lines[0])
    out = []
    for c in range(cases):
        head, rewards, owner, targets, logits = lines[1 + 5 * c: 6 + 5 * c]
        mode, p, g, v, eps, _rows = head.split()
        loss, grad = reference(int(mode), int(p), int(g), int(v), float(eps),
                               [float(x) for x in rewards.split()], [int(x) for x in owner.split()],
                               [int(x) for x in targets.split()], [float(x) for x in logits.split()])
        out.append(f"{loss:.17g}")
        out.append(" ".join(f"{x:.17g}" for x in grad))
    with open(sys.argv[2], "w") as f:
        f.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
