#!/usr/bin/env python3
"""Times the CLASS-M dual ResNet in PyTorch for `cargo xtask bench model`: the same network as
classm-model (two 1-channel ResNet trunks of a given width, Linear on the mean feature,
affine-free BatchNorm1d heads), the same batch and threads.

    bench_model.py --size S --width W --batch B --threads T --steps N [--depth 18] [--device cuda]

Prints one JSON line: seconds per forward (eval mode, no grad) and per training step
(train-mode forward, soft cross-entropy + triplet, backward, RMSprop step), best of N after
warm-up, and images/s (one image = one H+E pair).
"""
import argparse
import json
import os
import sys
import time

p = argparse.ArgumentParser()
p.add_argument("--size", type=int, required=True)
p.add_argument("--width", type=int, default=64)
p.add_argument("--depth", type=int, default=18)
p.add_argument("--batch", type=int, default=16)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--steps", type=int, default=3)
p.add_argument("--device", default="cpu", help="cpu, or cuda for a GPU session's comparison")
a = p.parse_args()
for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[v] = str(a.threads)

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

torch.set_num_threads(a.threads)
torch.manual_seed(0)


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        idt = x if self.down is None else self.down(x)
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + idt)


class ResNet(nn.Module):
    def __init__(self, width, depth):
        super().__init__()
        blocks = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}[depth]
        self.conv1 = nn.Conv2d(1, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        layers, c = [], width
        for i, n in enumerate(blocks):
            cout = width * 2 ** i
            layers += [Block(c, cout, 1 if i == 0 else 2)] + [Block(cout, cout, 1) for _ in range(n - 1)]
            c = cout
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        return self.layers(x).mean(dim=(2, 3))


class Dual(nn.Module):
    def __init__(self, width, depth, classes=3):
        super().__init__()
        self.h, self.e = ResNet(width, depth), ResNet(width, depth)
        self.fc = nn.Linear(8 * width, classes)
        self.bn_h = nn.BatchNorm1d(8 * width, affine=False)
        self.bn_e = nn.BatchNorm1d(8 * width, affine=False)

    def forward(self, h, e):
        fh, fe = self.h(h), self.e(e)
        return self.fc((fh + fe) / 2), self.bn_h(fh), self.bn_e(fe)


dev = torch.device(a.device)
net = Dual(a.width, a.depth).to(dev)
opt = torch.optim.RMSprop(net.parameters(), lr=1e-4, alpha=0.99, eps=1e-8, weight_decay=1e-8, momentum=0.9)
xh = torch.rand(a.batch, 1, a.size, a.size, device=dev)
xe = torch.rand(a.batch, 1, a.size, a.size, device=dev)
t = torch.softmax(torch.randn(a.batch, 3, device=dev), 1)


def sync():
    # A GPU runs kernels asynchronously: a step's time is theirs only once they are done.
    if dev.type == "cuda":
        torch.cuda.synchronize()


def forward():
    net.eval()
    with torch.no_grad():
        net(xh, xe)


def train():
    net.train()
    logits, zh, ze = net(xh, xe)
    lx = -torch.mean(torch.sum(F.log_softmax(logits, 1) * t, 1))
    lc = F.triplet_margin_loss(zh, ze, torch.roll(ze, 1, 0), margin=37.0, reduction="sum") * 1e-3
    opt.zero_grad()
    (lx + lc).backward()
    opt.step()


def best(f, n):
    for _ in range(2):
        f()
    sync()
    times = []
    for _ in range(n):
        s = time.perf_counter()
        f()
        sync()
        times.append(time.perf_counter() - s)
    return min(times)


fwd = best(forward, a.steps)
step = best(train, a.steps)
print(json.dumps({
    "impl": "pytorch", "torch": torch.__version__, "device": a.device, "threads": a.threads, "size": a.size,
    "width": a.width, "depth": a.depth, "batch": a.batch,
    "forward_s": fwd, "train_step_s": step,
    "forward_img_s": a.batch / fwd, "train_img_s": a.batch / step,
}))
