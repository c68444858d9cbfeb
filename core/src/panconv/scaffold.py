"""``panconv new-plugin NAME``: write a ready-to-install plugin package.

The package has the common plugin shape (pyproject with the entry point, ``plugin.py``,
``models/``, ``datasets/``, ``evaluators/``, tests that run the conformance kit, README) and
passes the kit as generated: replace the example components with yours.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path
from string import Template

from .errors import PanconvError

FILES: dict[str, str] = {
    "pyproject.toml": '''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "panconv-$name"
version = "0.1.0"
description = "A panconv plugin: $name"
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["panconv-core>=0.1", "torch>=2.4"]

[project.optional-dependencies]
test = ["pytest>=8"]

[project.entry-points.panconv]
$name = "panconv_$name.plugin"

[tool.setuptools.packages.find]
where = ["src"]
''',
    "README.md": '''\
# panconv-$name

A [panconv](https://example.invalid/panconv) plugin. It registers:

| name | kind | what |
|---|---|---|
| `$name.ExampleNet` | backbone | two conv stages (replace with your model) |
| `$name.ExampleHead` | head | linear classifier with cross-entropy |
| `$name.CSVVectors` | dataset | `label,x1,...,xd` lines from `<data root>/$name/<split>.csv` |
| `$name.ErrorRate` | evaluator | 1 - accuracy |

    pip install -e .
    panconv list $name          # your components
    pytest tests                 # your tests + the panconv conformance kit
    core-run configs/example.yaml --data-root DATA

Publish: `python -m build` then upload the wheel; users `pip install panconv-$name` and the
components appear in `panconv list` (entry point group `panconv`).
''',
    "configs/example.yaml": '''\
model:
  backbone: {type: $name.ExampleNet, width: 8}
  head: {type: $name.ExampleHead}
data: {type: $name.CSVVectors, length: 16, batch_size: 16}
train: {epochs: 2, optimizer: {type: Adam, lr: 0.01}}
eval: {evaluators: [{type: $name.ErrorRate}]}
''',
    "src/panconv_$name/__init__.py": '"""panconv-$name: a panconv plugin."""\n',
    "src/panconv_$name/plugin.py": '''\
"""What panconv-$name registers (lazy import strings: listing imports nothing heavy)."""

from panconv import hookimpl


@hookimpl
def panconv_register_models(register):
    register("ExampleNet", "panconv_$name.models.example:ExampleNet", kind="backbone",
             doc="Two strided 1-D conv stages on vectors")
    register("ExampleHead", "panconv_$name.models.example:ExampleHead", kind="head",
             doc="Linear classifier with cross-entropy")


@hookimpl
def panconv_register_datasets(register):
    register("CSVVectors", "panconv_$name.datasets.csv_vectors:CSVVectors", doc="label,x1,...,xd lines")


@hookimpl
def panconv_register_evaluators(register):
    register("ErrorRate", "panconv_$name.evaluators.error_rate:ErrorRate", doc="1 - accuracy")
''',
    "src/panconv_$name/models/__init__.py": "",
    "src/panconv_$name/models/example.py": '''\
"""An example backbone and head: replace them with your model."""

import torch
import torch.nn.functional as F
from torch import nn

from panconv.api import Backbone, FeatureInfo, Head


class ExampleNet(Backbone):
    """Vectors (N, L) -> two 1-D conv stages with stride 2: features at reduction 2 and 4."""

    def __init__(self, width: int = 16, length: int = 16):
        super().__init__()
        self.length = length
        self.stage1 = nn.Sequential(nn.Conv1d(1, width, 3, stride=2, padding=1), nn.GELU())
        self.stage2 = nn.Sequential(nn.Conv1d(width, 2 * width, 3, stride=2, padding=1), nn.GELU())
        self.feature_info = [FeatureInfo(width, 2, "stage1"), FeatureInfo(2 * width, 4, "stage2")]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        a = self.stage1(x.unsqueeze(1))
        return [a, self.stage2(a)]

    @classmethod
    def example_config(cls) -> dict:
        return {"width": 4, "length": 16}

    def example_inputs(self, batch_size: int = 2) -> torch.Tensor:
        return torch.randn(batch_size, self.length)


class ExampleHead(Head):
    """Average over positions, linear layer, cross-entropy on batch["labels"]."""

    def __init__(self, in_features, num_classes: int = 2):
        super().__init__(in_features)
        self.num_classes = num_classes
        self.fc = nn.Linear(self.in_features[-1].channels, num_classes)

    def forward(self, features):
        return self.fc(features[-1].mean(-1))

    def loss(self, outputs, batch):
        return {"loss": F.cross_entropy(outputs, batch["labels"])}

    def predict(self, outputs, batch=None):
        return outputs.softmax(-1)

    def example_inputs(self, batch_size: int = 2):
        features = [torch.randn(batch_size, f.channels, 4) for f in self.in_features]
        return features, {"labels": torch.randint(self.num_classes, (batch_size,))}
''',
    "src/panconv_$name/datasets/__init__.py": "",
    "src/panconv_$name/datasets/csv_vectors.py": '''\
"""``label,x1,...,xd`` per line in ``<data root>/$name/<split>.csv``."""

from pathlib import Path

import torch

from panconv.api import Dataset
from panconv.errors import DataError


class CSVVectors(Dataset):
    splits = ("train", "val", "test")
    metadata_keys = ("num_classes", "length")

    def __init__(self, root=None, split: str = "train", length: int = 16):
        super().__init__(root, split)
        self.path = Path(self.root) / "$name" / f"{split}.csv"
        if not self.path.is_file():
            raise DataError(f"{self.path}: no such file (expected 'label,x1,...,x{length}' lines)")
        xs, ys = [], []
        for lineno, line in enumerate(self.path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split(",")
            try:
                label, values = int(parts[0]), [float(v) for v in parts[1:]]
            except ValueError:
                raise DataError(f"{self.path}:{lineno}: not numbers: {line[:60]!r}") from None
            if len(values) != length or label < 0:
                raise DataError(f"{self.path}:{lineno}: expected a label >= 0 and {length} values")
            ys.append(label)
            xs.append(values)
        self.x, self.y, self.length = torch.tensor(xs), torch.tensor(ys), length

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"inputs": self.x[i], "labels": self.y[i]}

    @property
    def metadata(self):
        return {"num_classes": int(self.y.max()) + 1, "length": self.length}

    @classmethod
    def example(cls, tmp_dir):
        folder = Path(tmp_dir) / "$name"
        folder.mkdir(parents=True, exist_ok=True)
        rows = [f"{i % 2}," + ",".join(str((i * j) % 5 - 2.0) for j in range(4)) for i in range(6)]
        (folder / "train.csv").write_text("\\n".join(rows) + "\\n")
        return {"root": str(tmp_dir), "split": "train", "length": 4}

    @classmethod
    def broken_example(cls, tmp_dir):
        folder = Path(tmp_dir) / "$name"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "train.csv").write_text("1,0.5,0.5,0.5,0.5\\nx,1,2,3,4\\n")
        return {"root": str(tmp_dir), "split": "train", "length": 4}
''',
    "src/panconv_$name/evaluators/__init__.py": "",
    "src/panconv_$name/evaluators/error_rate.py": '''\
"""Classification error rate: the fraction of wrong top-1 predictions."""

import torch

from panconv.api import Evaluator


class ErrorRate(Evaluator):
    def process(self, batch, outputs):
        wrong = int((outputs.argmax(-1) != batch["labels"]).sum())
        self.results.append((wrong, int(batch["labels"].numel())))

    def compute_metrics(self, results):
        total = sum(n for _, n in results)
        return {"error_rate": sum(w for w, _ in results) / total if total else 0.0}

    @classmethod
    def example(cls):
        scores = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
        labels = torch.tensor([0, 0, 0, 1])
        return {}, [({"labels": labels[:2]}, scores[:2]), ({"labels": labels[2:]}, scores[2:])], {"error_rate": 0.25}
''',
    "tests/test_conformance.py": '''\
"""The panconv conformance kit on every component this plugin registers."""

from panconv.testing.pytest_plugin import test_conformance  # noqa: F401

PANCONV_PLUGIN = "$name"
''',
    "tests/test_example.py": '''\
"""Behaviour of the example components (replace with tests of yours)."""

import torch

import panconv


def test_the_example_model_learns_a_separable_task():
    torch.manual_seed(0)
    model = panconv.create_model({"backbone": {"type": "$name.ExampleNet", "width": 8},
                                  "head": {"type": "$name.ExampleHead"}})
    x = torch.randn(64, 16)
    batch = {"inputs": x, "labels": (x[:, :8].sum(1) > x[:, 8:].sum(1)).long()}
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    first = None
    for _ in range(60):
        loss = model.loss(model(batch), batch)["loss"]
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.5 * first
''',
}


def write_plugin(name: str, output: str | Path = ".") -> Path:
    """Write ``panconv-<name>/`` under ``output``; refuses to overwrite."""
    if not name.isidentifier() or keyword.iskeyword(name) or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise PanconvError(f"plugin name {name!r} must be a lower-case Python identifier, e.g. 'demo'")
    root = Path(output) / f"panconv-{name}"
    if root.exists():
        raise PanconvError(f"{root} already exists; choose another name or directory")
    for relative, text in FILES.items():
        path = root / Template(relative).substitute(name=name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template(text).safe_substitute(name=name))
    return root
