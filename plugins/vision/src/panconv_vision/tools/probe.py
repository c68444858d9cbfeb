"""CNN features off-the-shelf (Razavian et al., "CNN Features off-the-shelf: an Astounding Baseline for
Recognition", CVPRW 2014), over any panconv backbone.

The recipe of the paper: take a network trained on one task, read a generic representation off one of
its layers (their first fully connected layer; here any ``feature_info`` level, global-average pooled),
then

* normalise it: power normalisation ``sign(f)|f|^a`` (the paper's retrieval uses ``a = 0.5``) and L2
  normalisation to unit length;
* add jittered copies of the training images (the paper: crops and rotations; here small shifts and
  rotations, which suit digits; flips would not);
* train a linear SVM (scikit-learn's ``LinearSVC``, one-vs-rest) on the features of the new task;
* for retrieval, rank the database by L2 distance of the normalised features and report the mean
  average precision over the queries (items of the query's class are the relevant ones).

The transfer experiment in miniature: a backbone trained on MNIST (``panconv run
examples/analysis_mobilenet_mnist.yaml``) read on two other digit sets it never saw: OpenCV's
``digits.png`` (Debian opencv-doc) and scikit-learn's 8x8 digits (upsampled to 28x28); compared with a
linear SVM on the raw pixels and with the same backbone's random initialisation.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import _common

#: (dy, dx) pixel shifts and rotations (degrees) of the default jitter (the original first)
JITTER_SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))
JITTER_ROTATIONS = (-8.0, 8.0)


# ---- features ---------------------------------------------------------------------------------------

def pool(feature: torch.Tensor) -> torch.Tensor:
    """A feature map ``(N, C, *spatial)`` -> ``(N, C)`` by global average pooling (``(N, C)`` stays)."""
    return feature.flatten(2).mean(-1) if feature.dim() > 2 else feature


@torch.no_grad()
def extract_features(backbone: nn.Module, inputs: torch.Tensor, level: int = -1, batch_size: int = 256) -> torch.Tensor:
    """Pooled features ``(N, C)`` of ``backbone``'s output ``level`` (an index into its ``feature_info``)."""
    was_training = backbone.training
    backbone.eval()
    device = next(backbone.parameters(), torch.empty(0)).device
    try:
        out = [pool(backbone(x.to(device))[level]).float().cpu() for x in _common.batches(inputs, batch_size)]
    finally:
        backbone.train(was_training)
    return torch.cat(out)


def normalize(features: torch.Tensor, power: float | None = 0.5, l2: bool = True) -> torch.Tensor:
    """Power normalisation ``sign(f)|f|^power`` (skipped for ``None`` or 1), then L2 to unit length."""
    f = features.double()
    if power is not None and power != 1:
        f = f.sign() * f.abs().pow(power)
    if l2:
        f = f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return f.float()


def jitter(images: torch.Tensor, shifts=JITTER_SHIFTS, rotations=JITTER_ROTATIONS) -> list[torch.Tensor]:
    """Augmented copies of ``(N, C, H, W)`` images: each shift (border pixels repeated), then each rotation
    about the centre (bilinear, border padding). The first copy is the original."""
    views = []
    for dy, dx in shifts:
        if (dy, dx) == (0, 0):
            views.append(images)
            continue
        s = max(abs(dy), abs(dx))
        padded = F.pad(images, (s, s, s, s), mode="replicate")
        h, w = images.shape[-2:]
        views.append(padded[..., s - dy:s - dy + h, s - dx:s - dx + w])
    for degrees in rotations:
        a = math.radians(degrees)
        theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]], dtype=images.dtype)
        grid = F.affine_grid(theta.expand(len(images), 2, 3), list(images.shape), align_corners=False)
        views.append(F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False))
    return views


# ---- classification and retrieval -------------------------------------------------------------------

def linear_svm(train_x, train_y, test_x, test_y, C: float = 1.0, seed: int = 0) -> dict:
    """Accuracy of scikit-learn's ``LinearSVC`` (one-vs-rest, squared hinge) trained on ``train``."""
    from sklearn.svm import LinearSVC

    svm = LinearSVC(C=C, random_state=seed, max_iter=5000)
    svm.fit(np.asarray(train_x, dtype=np.float64), np.asarray(train_y))
    predicted = svm.predict(np.asarray(test_x, dtype=np.float64))
    return {"accuracy": float((predicted == np.asarray(test_y)).mean()), "n_train": len(train_y),
            "n_test": len(test_y)}


def retrieval_map(query: torch.Tensor, query_labels, database: torch.Tensor | None = None,
                  database_labels=None) -> float:
    """Mean average precision of L2 retrieval: every query ranks the database by Euclidean distance;
    the database items of the query's label are relevant. Without a database the queries search
    each other (a query is never its own result)."""
    same = database is None
    database = query if same else database
    q_labels = torch.as_tensor(np.asarray(query_labels))
    d_labels = q_labels if same else torch.as_tensor(np.asarray(database_labels))
    distances = torch.cdist(query.double(), database.double())
    if same:
        distances.fill_diagonal_(float("inf"))
    aps = []
    for i in range(len(query)):
        order = torch.argsort(distances[i], stable=True)
        if same:
            order = order[:-1]  # the query itself, ranked last
        relevant = (d_labels[order] == q_labels[i]).double()
        if relevant.sum() == 0:
            continue
        precision = relevant.cumsum(0) / torch.arange(1, len(relevant) + 1, dtype=torch.float64)
        aps.append(float((precision * relevant).sum() / relevant.sum()))
    return float(np.mean(aps)) if aps else float("nan")


def probe(backbone: nn.Module, train_inputs, train_labels, test_inputs, test_labels, *, level: int = -1,
          power: float | None = 0.5, l2: bool = True, augment: bool = True, C: float = 1.0) -> dict:
    """The off-the-shelf pipeline on one task: features (+ jittered training copies), normalisation,
    linear SVM accuracy on ``test``, and L2 retrieval mAP of the test set searching itself."""
    views = jitter(train_inputs) if augment else [train_inputs]
    train_f = normalize(torch.cat([extract_features(backbone, v, level) for v in views]), power, l2)
    train_y = np.tile(np.asarray(train_labels), len(views))
    test_f = normalize(extract_features(backbone, test_inputs, level), power, l2)
    result = linear_svm(train_f, train_y, test_f, test_labels, C=C)
    result.update(retrieval_map=retrieval_map(test_f, test_labels), feature_dim=int(train_f.shape[1]),
                  jitter_views=len(views))
    return result


def pixel_baseline(train_inputs, train_labels, test_inputs, test_labels, C: float = 1.0) -> dict:
    """The same linear SVM and retrieval on L2-normalised raw pixels (no network)."""
    train_f, test_f = normalize(train_inputs.flatten(1), None), normalize(test_inputs.flatten(1), None)
    return {**linear_svm(train_f, train_labels, test_f, test_labels, C=C),
            "retrieval_map": retrieval_map(test_f, test_labels)}


# ---- the digit sets of the transfer experiment ------------------------------------------------------

def sklearn_digits(size: int = 28, channels: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 8x8 digits (values 0..16) upsampled to ``size`` and normalised like MNIST."""
    from sklearn.datasets import load_digits

    from panconv_vision.datasets.digits import MNIST_MEAN, MNIST_STD

    digits = load_digits()
    x = torch.from_numpy(digits.images).float()[:, None] / 16.0
    x = F.pad(x, (1, 1, 1, 1))  # a blank border like MNIST's (20x20 digit in a 28x28 canvas)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = ((x - MNIST_MEAN) / MNIST_STD).expand(-1, channels, -1, -1).contiguous()
    return x, torch.from_numpy(digits.target).long()


def opencv_digits(size: int = 28, channels: int = 1, root=None) -> tuple[torch.Tensor, torch.Tensor]:
    """OpenCV's 5,000 digits (Debian opencv-doc), as panconv's ``vision.OpenCVDigits`` prepares them."""
    from panconv_vision.datasets.digits import OpenCVDigits

    data = OpenCVDigits(root=root, size=size, channels=channels)
    batch = data.collate([data[i] for i in range(len(data))])
    return batch["inputs"], batch["labels"]


def split(inputs, labels, n_train: int, n_test: int, seed: int = 0):
    """A seeded random ``(train_x, train_y, test_x, test_y)`` split."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    tr, te = order[:n_train], order[n_train:n_train + n_test]
    return inputs[tr], labels[tr], inputs[te], labels[te]


# ---- the `panconv probe` command --------------------------------------------------------------------

TARGETS = ("config", "opencv", "sklearn")


def _target_data(name: str, cfg, args, size: int, channels: int):
    if name == "config":
        train = _common.build_data(cfg, "train", args.data_root)
        test = _common.build_data(cfg, "test", args.data_root) or _common.build_data(cfg, "val", args.data_root)
        if train is None or test is None:
            raise SystemExit("panconv probe: the config's data set has no train and test/val splits; "
                             "use --targets opencv,sklearn")
        a, b = _common.take(train, args.train_size), _common.take(test, args.test_size)
        return a["inputs"], a["labels"], b["inputs"], b["labels"]
    x, y = opencv_digits(size, channels, args.data_root) if name == "opencv" else sklearn_digits(size, channels)
    return split(x, y, args.train_size, args.test_size, args.seed)


def _input_geometry(cfg, args) -> tuple[int, int]:
    dataset = _common.build_data(cfg, "test", args.data_root) or _common.build_data(cfg, "train", args.data_root)
    if dataset is not None and len(dataset):
        x = _common.take(dataset, 1)["inputs"]
        return int(x.shape[-1]), int(x.shape[1])
    return 28, 1


def main(args: argparse.Namespace) -> int:
    cfg, model = _common.load(args.config, args.checkpoint, args.device, args.data_root)
    backbone = _common.backbone_of(model)
    size, channels = _input_geometry(cfg, args)
    out = Path(args.output)
    report = {"config": str(args.config), "checkpoint": args.checkpoint, "level": args.level,
              "power": args.power, "jitter": not args.no_jitter, "targets": {}}
    for name in args.targets.split(","):
        if name not in TARGETS:
            raise SystemExit(f"panconv probe: unknown target {name!r}; choose from {', '.join(TARGETS)}")
        train_x, train_y, test_x, test_y = _target_data(name, cfg, args, size, channels)
        report["targets"][name] = {
            "features": probe(backbone, train_x, train_y, test_x, test_y, level=args.level, power=args.power,
                              augment=not args.no_jitter, C=args.C),
            "pixels": pixel_baseline(train_x, train_y, test_x, test_y, C=args.C)}
        r = report["targets"][name]
        print(f"{name:8s} SVM accuracy {r['features']['accuracy']:.4f} (pixels {r['pixels']['accuracy']:.4f}), "
              f"retrieval mAP {r['features']['retrieval_map']:.4f} (pixels {r['pixels']['retrieval_map']:.4f})")
    _common.write_json(out / "probe.json", report)
    plot(report, out / "probe.png")
    print(f"wrote {out / 'probe.json'} and {out / 'probe.png'}")
    return 0


def plot(report: dict, path) -> None:
    names = list(report["targets"])
    fig, axes = _common.figure(1, 2, figsize=(9, 3.2))
    for ax, metric, title in zip(axes, ("accuracy", "retrieval_map"), ("linear SVM accuracy", "L2 retrieval mAP")):
        x = np.arange(len(names))
        ax.bar(x - 0.2, [report["targets"][n]["features"][metric] for n in names], 0.4, label="CNN features")
        ax.bar(x + 0.2, [report["targets"][n]["pixels"][metric] for n in names], 0.4, label="raw pixels")
        ax.set_xticks(x, names)
        ax.set_ylim(0, 1)
        ax.set_title(title)
    axes[0].legend(loc="lower right")
    _common.save_figure(fig, path)

