#!/usr/bin/env python3
"""Independent reference for tandem's dense KD loss (distill/kd_loss.h), in PyTorch float64.

Reads the cases kd_reference_test writes (a case count, then per case: N V T alpha; student
logits; teacher logits; targets, -1 = ignored) and writes per case the loss, its CE and KL parts,
the row count, and autograd's gradient in the student logits:
    loss = alpha * F.cross_entropy(s, y, ignore_index=-1)
         + (1 - alpha) * T^2 * sum over kept rows of F.kl_div(log_softmax(s/T), softmax(t/T)) / count
Usage: kd_reference.py INPUT OUTPUT. Exit status 2 when torch cannot be imported.
"""
import sys

try:
    import torch
    import torch.nn.functional as F
except Exception as e:  # noqa: BLE001 - any import failure means the dependency is missing
    sys.stderr.write(f"kd_reference.py: cannot import torch ({e}); install python3-torch\n")
    sys.exit(2)


def reference(n, v, temp, alpha, s, t, y):
    s = torch.tensor(s, dtype=torch.float64).reshape(n, v).requires_grad_(True)
    t = torch.tensor(t, dtype=torch.float64).reshape(n, v)
    y = torch.tensor(y, dtype=torch.long)
    keep = y != -1
    count = int(keep.sum())
    ce = F.cross_entropy(s, y, ignore_index=-1, reduction="sum") / count
    kl_rows = F.kl_div(F.log_softmax(s / temp, dim=-1), F.softmax(t / temp, dim=-1),
                       reduction="none").sum(dim=-1)
    kl = (kl_rows * keep).sum() / count  # 'batchmean' over the kept rows only
    loss = alpha * ce + (1 - alpha) * temp * temp * kl
    loss.backward()
    return loss.item(), ce.item(), kl.item(), count, s.grad.reshape(-1).tolist()


def main():
    if len(sys.argv) != 3:
        sys.stderr.write("usage: kd_reference.py INPUT OUTPUT\n")
        return 1
    with open(sys.argv[1]) as f:
        lines = f.read().split("\n")
    cases = int(lines[0])
    out = []
    for c in range(cases):
        head, s, t, y = lines[1 + 4 * c: 5 + 4 * c]
        n, v, temp, alpha = head.split()
        loss, ce, kl, count, grad = reference(
            int(n), int(v), float(temp), float(alpha), [float(x) for x in s.split()],
            [float(x) for x in t.split()], [int(x) for x in y.split()])
        out.append(f"{loss:.17g} {ce:.17g} {kl:.17g} {count}")
        out.append(" ".join(f"{g:.17g}" for g in grad))
    with open(sys.argv[2], "w") as f:
        f.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
