#!/usr/bin/python3
"""Writes tests/data/train/*.npy: inputs, parameters, outputs and gradients of the trainer's
conv2d, pooling and batch-norm layers computed by PyTorch (Debian python3-torch), for
test_train_layers.c to compare kiln against. Tensors are stored as kiln (and Keras) lay them out:
images NHWC, conv kernels [kh, kw, cin, cout]; the permutes to and from PyTorch's NCHW happen here.
The loss is sum(y * r) for a fixed random r, so every gradient is the backward pass of dy = r.

TF's "same" padding (total max((ceil(n / s) - 1) * s + k - n, 0), the smaller half before) is
applied with an explicit F.pad, since PyTorch's own padding is symmetric.

Run: /usr/bin/python3 tests/data/make_train_layer_fixtures.py (from the repository root)."""
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train")
rng = np.random.default_rng(20240606)


def save(case, name, array):
    np.save(os.path.join(OUT, f"{case}_{name}.npy"), np.ascontiguousarray(array, dtype=np.float32))


def tf_same_pad(n, k, s):
    out = math.ceil(n / s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def nchw(x_nhwc):
    return torch.tensor(x_nhwc, dtype=torch.float64).permute(0, 3, 1, 2).contiguous().requires_grad_(True)


def nhwc(t):
    return t.detach().permute(0, 2, 3, 1).numpy()


def rand(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def conv2d_same_s2_relu():
    case = "conv2d_same_s2_relu"  # 3x3 kernel, 4 filters, strides 2, padding same, relu
    x, kernel, bias = rand(2, 8, 7, 3), rand(3, 3, 3, 4) * 0.5, rand(4) * 0.1
    xt = nchw(x)
    wt = torch.tensor(kernel, dtype=torch.float64).permute(3, 2, 0, 1).contiguous().requires_grad_(True)
    bt = torch.tensor(bias, dtype=torch.float64, requires_grad=True)
    top, bottom = tf_same_pad(8, 3, 2)
    left, right = tf_same_pad(7, 3, 2)
    y = F.relu(F.conv2d(F.pad(xt, (left, right, top, bottom)), wt, bt, stride=2))
    r = rand(*nhwc(y).shape)
    (y * torch.tensor(r, dtype=torch.float64).permute(0, 3, 1, 2)).sum().backward()
    save(case, "x", x)
    save(case, "kernel", kernel)
    save(case, "bias", bias)
    save(case, "r", r)
    save(case, "y", nhwc(y))
    save(case, "dx", nhwc(xt.grad))
    save(case, "dkernel", wt.grad.permute(2, 3, 1, 0).numpy())
    save(case, "dbias", bt.grad.numpy())


def max_pool_same():
    case = "max_pooling2d_same"  # pool 3, strides 2, padding same: overlapping windows, padding below
    x = rand(2, 6, 6, 3)
    xt = nchw(x)
    top, bottom = tf_same_pad(6, 3, 2)
    y = F.max_pool2d(F.pad(xt, (top, bottom, top, bottom), value=-math.inf), 3, 2)
    r = rand(*nhwc(y).shape)
    (y * torch.tensor(r, dtype=torch.float64).permute(0, 3, 1, 2)).sum().backward()
    for name, a in (("x", x), ("r", r), ("y", nhwc(y)), ("dx", nhwc(xt.grad))):
        save(case, name, a)


def avg_pool_same():
    case = "average_pooling2d_same"  # pool 2, strides 2, padding same on 5x5: the last row and column are half padding
    x = rand(2, 5, 5, 2)
    xt = nchw(x)
    top, bottom = tf_same_pad(5, 2, 2)
    pad = (top, bottom, top, bottom)
    sums = F.avg_pool2d(F.pad(xt, pad), 2, 2, divisor_override=1)
    cells = F.avg_pool2d(F.pad(torch.ones_like(xt), pad), 2, 2, divisor_override=1)
    y = sums / cells  # TF divides by the cells that are not padding
    r = rand(*nhwc(y).shape)
    (y * torch.tensor(r, dtype=torch.float64).permute(0, 3, 1, 2)).sum().backward()
    for name, a in (("x", x), ("r", r), ("y", nhwc(y)), ("dx", nhwc(xt.grad))):
        save(case, name, a)


def batch_norm_training():
    case = "batch_normalization_training"  # momentum 0.99 (Keras), epsilon 0.001, one training step
    x = rand(4, 3, 3, 5) * 2 + 0.5
    gamma, beta = 1 + 0.3 * rand(5), 0.2 * rand(5)
    xt = nchw(x)
    gt = torch.tensor(gamma, dtype=torch.float64, requires_grad=True)
    bt = torch.tensor(beta, dtype=torch.float64, requires_grad=True)
    running_mean, running_var = torch.zeros(5, dtype=torch.float64), torch.ones(5, dtype=torch.float64)
    y = F.batch_norm(xt, running_mean, running_var, gt, bt, training=True, momentum=0.01, eps=1e-3)
    r = rand(*nhwc(y).shape)
    (y * torch.tensor(r, dtype=torch.float64).permute(0, 3, 1, 2)).sum().backward()
    # Keras averages the biased batch variance into the moving variance (PyTorch the unbiased one).
    batch_var = xt.detach().var(dim=(0, 2, 3), unbiased=False)
    for name, a in (("x", x), ("gamma", gamma), ("beta", beta), ("r", r), ("y", nhwc(y)), ("dx", nhwc(xt.grad)),
                    ("dgamma", gt.grad.numpy()), ("dbeta", bt.grad.numpy()), ("moving_mean", running_mean.numpy()),
                    ("moving_variance", (0.99 * 1 + 0.01 * batch_var).numpy())):
        save(case, name, a)


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    conv2d_same_s2_relu()
    max_pool_same()
    avg_pool_same()
    batch_norm_training()
