#!/usr/bin/python3
"""kiln's training steps against PyTorch (Debian python3-torch), step by step: the same data, the
same batches in the same order and the same initial weights (kiln's, written by test_train's C
half); every step's loss must agree within 1e-4 relative, and the final weights closely.

Keras' update rules are written out here in torch where torch's own optimizer differs (Adam and
AdamW put epsilon outside the bias-corrected square root); SGD with Nesterov momentum is
torch.optim.SGD, which is the same rule at a constant learning rate.

    test_train_torch.py TEST_TRAIN_BINARY
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import torch

BINARY = None
N, FEATURES, BATCH = 200, 12, 16

RUNS = {
    # name: (layers, optimizer, loss, target kind, epochs)
    "run_adam_sparse": ([{"dense": {"units": 32, "activation": "relu"}}, {"dense": {"units": 4}}],
                        {"adam": {"learning_rate": 0.01}}, {"sparse_categorical_crossentropy": {"from_logits": True}},
                        "label", 2),
    "run_sgd_mse": ([{"dense": {"units": 16, "activation": "tanh"}}, {"dense": {"units": 3}}],
                    {"sgd": {"learning_rate": 0.05, "momentum": 0.9, "nesterov": True}}, "mse", "y", 2),
    "run_adamw_probabilities": ([{"dense": {"units": 16, "activation": "sigmoid"}}, {"dense": {"units": 4, "activation": "softmax"}}],
                                {"adamw": {"learning_rate": 0.01, "weight_decay": 0.01}}, "categorical_crossentropy",
                                "onehot", 1),
}

ACT = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "softmax": lambda z: torch.softmax(z, 1),
       "linear": lambda z: z}


def dense_shapes(layers, width):
    shapes = []
    for layer in layers:
        units = layer["dense"]["units"]
        shapes.append(((width, units), (units,)))
        width = units
    return shapes


def split(flat, shapes):
    out, at = [], 0
    for kshape, bshape in shapes:
        k = flat[at:at + int(np.prod(kshape))].reshape(kshape)
        at += k.size
        b = flat[at:at + bshape[0]]
        at += b.size
        out.append((torch.tensor(k, dtype=torch.float64, requires_grad=True),
                    torch.tensor(b, dtype=torch.float64, requires_grad=True)))
    assert at == flat.size
    return out


class KerasAdam:
    """Keras' Adam / AdamW: lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps), decay first."""

    def __init__(self, params, lr, weight_decay=0.0, b1=0.9, b2=0.999, eps=1e-7):
        self.params, self.lr, self.wd, self.b1, self.b2, self.eps, self.t = params, lr, weight_decay, b1, b2, eps, 0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step(self):
        self.t += 1
        alpha = self.lr * (1 - self.b2 ** self.t) ** 0.5 / (1 - self.b1 ** self.t)
        for p, m, v in zip(self.params, self.m, self.v):
            p -= p * self.lr * self.wd
            m += (p.grad - m) * (1 - self.b1)
            v += (p.grad * p.grad - v) * (1 - self.b2)
            p -= alpha * m / (v.sqrt() + self.eps)


class TrainTorch(unittest.TestCase):
    def test_steps_match_pytorch(self):
        d = tempfile.mkdtemp(prefix="kiln_torch_")
        try:
            rng = np.random.default_rng(11)
            x = rng.normal(0, 1, (N, FEATURES)).astype(np.float32)
            label = rng.integers(0, 4, N).astype(np.int64)
            y = rng.normal(0, 1, (N, 3)).astype(np.float32)
            onehot = np.eye(4, dtype=np.float32)[label]
            np.savez(os.path.join(d, "data.npz"), x=x, label=label, y=y, onehot=onehot)
            for name, (layers, optim, loss, target, epochs) in RUNS.items():
                run = {"model": {"layers": layers}, "optimizer": optim, "loss": loss, "epochs": epochs,
                       "batch_size": BATCH, "seed": 5, "features": "x", "label": target,
                       "data": {"source": {"format": "npz", "path": "data.npz"}}}
                with open(os.path.join(d, name + ".json"), "w") as f:
                    json.dump(run, f)
            r = subprocess.run([BINARY, d], capture_output=True, text=True, timeout=300)
            self.assertEqual(r.returncode, 0, r.stderr)
            for name, (layers, optim, loss, target, epochs) in RUNS.items():
                with self.subTest(run=name):
                    self.check(d, name, layers, optim, loss, {"label": label, "y": y, "onehot": onehot}[target], x, epochs)
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def check(self, d, name, layers, optim, loss, target, x, epochs):
        load = lambda what: np.load(os.path.join(d, "%s.json.%s.npy" % (name, what)))
        params = split(load("init").astype(np.float64), dense_shapes(layers, FEATURES))
        flat = [t for pair in params for t in pair]
        kind, cfg = next(iter(optim.items()))
        if kind == "sgd":
            opt = torch.optim.SGD(flat, lr=cfg["learning_rate"], momentum=cfg["momentum"], nesterov=cfg["nesterov"])
        else:
            opt = KerasAdam(flat, cfg["learning_rate"], cfg.get("weight_decay", 0.0))
        want = []
        for _ in range(epochs):
            for i in range(0, N, BATCH):  # no shuffle: batches in file order, the last one short
                xb = torch.tensor(x[i:i + BATCH], dtype=torch.float64)
                tb = torch.tensor(target[i:i + BATCH])
                h = xb
                for (k, b), layer in zip(params, layers):
                    h = ACT[layer["dense"].get("activation", "linear")](h @ k + b)
                if loss == "mse":
                    l = ((h - tb.double()) ** 2).mean()
                elif isinstance(loss, dict):  # sparse, from logits
                    l = torch.nn.functional.cross_entropy(h, tb)
                else:  # Keras' categorical crossentropy on probabilities: normalized, clipped
                    p = (h / h.sum(1, keepdim=True)).clamp(1e-7, 1 - 1e-7)
                    l = -(tb.double() * p.log()).sum(1).mean()
                for t in flat:
                    t.grad = None
                l.backward()
                opt.step()
                want.append(l.item())
        got = load("losses")
        self.assertEqual(len(got), len(want))
        print("%s: %d steps, max relative loss difference %.2e" % (name, len(got), np.max(np.abs(got - want) / np.abs(want))),
              file=sys.stderr)
        np.testing.assert_allclose(got, want, rtol=1e-4)
        final = np.concatenate([t.detach().numpy().ravel() for t in flat])
        np.testing.assert_allclose(load("final"), final, rtol=1e-3, atol=1e-4)


if __name__ == "__main__":
    BINARY = os.path.abspath(sys.argv.pop(1))
    unittest.main()
