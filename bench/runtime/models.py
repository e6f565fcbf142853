"""Reference models for kiln's runtime: defined in PyTorch (Debian python3-torch, no torchvision),
exported to ONNX with torch.onnx. Used by bench/runtime (kiln vs ONNX Runtime) and by the
reference-output test (kiln vs PyTorch).

    /usr/bin/python3 bench/runtime/models.py OUT_DIR [NAME ...]

writes OUT_DIR/NAME.onnx plus OUT_DIR/NAME.inputs.npz / NAME.outputs.npz (PyTorch's outputs on
fixed random inputs at batch 2) for every model, or the named ones.
"""
import os
import sys

import numpy as np
import torch
from torch import nn

OPSET = 13


class MLP(nn.Module):
    """The seed's Keras model: Dense(128, relu) -> Dense(10) on 28x28 images."""

    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(784, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(self.flatten(x))))


class SmallCNN(nn.Module):
    """Two conv blocks and a classifier on 28x28x1 (a Fashion-MNIST CNN)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
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
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class ResNet18(nn.Module):
    """torchvision's resnet18, written out (torchvision is not packaged with Debian's torch)."""

    def __init__(self, classes=1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        layers, cin = [], 64
        for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        layers = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision's mobilenet_v2 (width 1.0), written out."""

    def __init__(self, classes=1000):
        super().__init__()
        settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
        layers = [nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6()]
        cin = 32
        for t, c, n, s in settings:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers += [nn.Conv2d(cin, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(1280, classes)

    def forward(self, x):
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


class Transformer(nn.Module):
    """A 2-layer transformer encoder over 128 tokens: token embeddings (Gather), learned positions,
    GELU feed-forward, a key padding mask (Where/Equal/Expand in the export) and a classifier."""

    def __init__(self, vocab=1000, d=256, heads=4, ff=1024, seq=128, classes=2):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(1, seq, d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, heads, ff, dropout=0.0, activation="gelu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(d, classes)

    def forward(self, ids, mask):
        x = self.embed(ids) + self.pos
        x = self.encoder(x, src_key_padding_mask=mask == 0)
        return self.head(x[:, 0])


class LSTMModel(nn.Module):
    """A 2-layer LSTM over 64 steps of 64 features, classifying from the last hidden state."""

    def __init__(self, cell=nn.LSTM):
        super().__init__()
        self.rnn = cell(64, 128, num_layers=2, batch_first=True)
        self.fc = nn.Linear(128, 10)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.fc(y[:, -1])


def _image(c, h, w):
    return lambda b, rng: {"input": rng.standard_normal((b, c, h, w), dtype=np.float32)}


def _tokens(b, rng):
    mask = np.ones((b, 128), dtype=np.int64)
    mask[:, 100:] = 0  # padding at the end of every row
    return {"ids": rng.integers(0, 1000, (b, 128), dtype=np.int64), "mask": mask}


# name -> (constructor, input generator, dynamic axes)
MODELS = {
    "mlp": (MLP, _image(1, 28, 28)),
    "cnn": (SmallCNN, _image(1, 28, 28)),
    "resnet18": (ResNet18, _image(3, 224, 224)),
    "mobilenetv2": (MobileNetV2, _image(3, 224, 224)),
    "transformer": (Transformer, _tokens),
    "lstm": (LSTMModel, lambda b, rng: {"input": rng.standard_normal((b, 64, 64), dtype=np.float32)}),
    "gru": (lambda: LSTMModel(nn.GRU), lambda b, rng: {"input": rng.standard_normal((b, 64, 64), dtype=np.float32)}),
}


def export(name, out_dir, batch=2, seed=0):
    """Exports one model with a symbolic batch dimension and saves PyTorch's outputs."""
    make, inputs_for = MODELS[name]
    torch.manual_seed(seed)
    model = make().eval()
    # BatchNorm running statistics away from 0/1, so the export's folded or unfolded BN is tested
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    rng = np.random.default_rng(seed)
    inputs = inputs_for(batch, rng)
    names = list(inputs)
    args = tuple(torch.from_numpy(inputs[k]) for k in names)
    path = os.path.join(out_dir, name + ".onnx")
    torch.onnx.export(model, args, path, input_names=names, output_names=["output"], opset_version=OPSET,
                      dynamic_axes={k: {0: "batch"} for k in names + ["output"]}, do_constant_folding=True)
    with torch.no_grad():
        out = model(*args).numpy()
    np.savez(os.path.join(out_dir, name + ".inputs.npz"), **inputs)
    np.savez(os.path.join(out_dir, name + ".outputs.npz"), output=out)
    return path


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    out_dir = argv[1]
    os.makedirs(out_dir, exist_ok=True)
    for name in argv[2:] or MODELS:
        print("exported", export(name, out_dir), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
