"""SimQ-NAS: simultaneous search of the architecture and the per-layer quantisation policy.

Paper: Sarah, Sridhar, Szankin, Sundaresan (Intel Labs), "SimQ-NAS: Simultaneous Quantization Policy and
Neural Architecture Search" (2023). A weight-sharing super-network is trained once; a **genome** holds a
sub-network's architecture *and* a bit-width per layer; a multi-objective evolutionary search (NSGA-II,
here from ``pymoo``) guided by lightly trained predictors (the LINAS loop: evaluate a few candidates,
fit the predictors, search on the predictors, evaluate the front, refit) returns the Pareto front of
accuracy against latency and model size, each point evaluated with its quantisation policy applied.

This file (small, for MNIST; the paper searches OFA MobileNet-V3, ViT and BERT super-networks):

* :class:`SimQSuperNet`: a MobileNet-V3/OFA-style super-network, a stride-2 3x3 stem then stages of inverted
  residual blocks (1x1 expand, ``k x k`` depthwise, 1x1 project, hard-swish) with **elastic depth**
  (the first ``d`` blocks of each stage run), **elastic width** (expand ratio ``e``: the first
  ``e * C_in`` hidden channels) and **elastic kernel** (the centre ``k x k`` of the largest kernel), all
  sub-networks sharing the largest one's weights (OFA's slicing; OFA's kernel transformation matrices
  are left out). No batch norm: sliced BN statistics would need re-calibration per sub-network (OFA
  does it); the stem and every block output (fixed widths) are normalised by a one-group GroupNorm
  (per-sample statistics, kept in fp32), the other convolutions carry biases.
* Training (``forward`` in training mode, one optimizer step of the engine): the **sandwich rule**
  (BigNAS/OFA) - the largest, the smallest and ``n_random`` random sub-networks per batch, their losses
  summed; the others are also distilled from the largest one's (detached) predictions
  (``distill``; in-place distillation). In eval mode ``forward`` runs the active genome (default: the
  largest sub-network in fp32).
* :class:`Genome`: depths per stage, (kernel, expand) per block, and a bit-width per quantisable layer
  (stem, expand/depthwise/project of every block, classifier) from ``BITS`` = (32: not quantised, 8, 4);
  :meth:`SimQSuperNet.encode` / :meth:`SimQSuperNet.decode` map it to the integer vector NSGA-II evolves.
* Fake quantisation with ``torch.ao``: weights per-tensor symmetric (``MinMaxObserver``, qint8 range
  [-2^(b-1), 2^(b-1) - 1]), activations (the layer's input) per-tensor affine ([0, 2^b - 1]) observed on
  the batch being evaluated (calibration on the evaluation batch), both through
  ``torch.fake_quantize_per_tensor_affine``: INT8 / INT4 simulation (post-training quantisation, as the
  paper's search evaluates).
* Costs (exact, no predictor needed): ``size_bytes`` = sum of parameters x weight bits / 8 and
  ``bit_ops`` = sum of MACs x weight bits x activation bits (the BOPs latency proxy of mixed-precision
  search; the paper measures latency on Intel Xeon CPUs with real INT8 kernels, which CPU PyTorch lacks
  for INT4). Accuracy is predicted by a ridge regression on the one-hot genome (:class:`RidgePredictor`).
* Measured latency (the paper's objective, on this machine): :meth:`SimQSuperNet.measure_latency` times
  the sub-network as the genome runs it (``run``: fake quantisation where a layer has 8 or 4 bits, plain
  float where it has 32) on a fixed CPU batch, median of repeats after warm-up. A
  :class:`LatencyPredictor` (ridge regression on :meth:`SimQSuperNet.latency_features`: active layers,
  point-wise and depthwise MACs, activation volume, fake-quantised layers and the elements they quantise)
  is fitted on measured sub-networks and replaces the bit-operations proxy in the search. Fake quantisation
  *adds* work in PyTorch (observe, quantise, dequantise), so on this simulation a quantised layer is slower,
  not faster, than a float one: the measured objective says what the simulated network costs here, not
  what an INT8/INT4 kernel would cost.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import torch
import torch.nn.functional as F
from annotated_types import Ge, Interval, MinLen
from torch import nn

from panconv.api import Model

__all__ = ["BITS", "Genome", "LatencyPredictor", "RidgePredictor", "SimQSuperNet", "fake_quantize", "nsga2",
           "pareto_mask", "r2_score", "spearman"]

#: bit-width choices of a layer (32: left in floating point)
BITS = (32, 8, 4)


def fake_quantize(x: torch.Tensor, bits: int, symmetric: bool) -> torch.Tensor:
    """``x`` quantised to ``bits`` and back (per tensor) with ``torch.ao`` observers; 32 bits: ``x`` itself.

    Symmetric (weights): signed range ``[-2^(b-1), 2^(b-1) - 1]``, zero point 0. Affine (activations):
    ``[0, 2^b - 1]`` with a zero point. Inside the observed range the error is at most half a step (scale / 2).
    """
    if bits >= 32:
        return x
    from torch.ao.quantization.observer import MinMaxObserver

    if symmetric:
        observer = MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric,
                                  quant_min=-(2 ** (bits - 1)), quant_max=2 ** (bits - 1) - 1)
    else:
        observer = MinMaxObserver(dtype=torch.quint8, qscheme=torch.per_tensor_affine,
                                  quant_min=0, quant_max=2 ** bits - 1)
    observer = observer.to(x.device)
    observer(x.detach())
    scale, zero_point = observer.calculate_qparams()
    return torch.fake_quantize_per_tensor_affine(x, float(scale), int(zero_point), observer.quant_min,
                                                 observer.quant_max)


@dataclass(frozen=True)
class Genome:
    """A sub-network and its quantisation policy.

    ``depths[s]``: blocks run in stage ``s``; ``kernels[b]``, ``expands[b]``: of every block ``b`` (all
    ``max_depth * stages`` of them; those past a stage's depth are carried but inactive); ``bits``: one
    entry per quantisable layer, in :meth:`SimQSuperNet.layer_names` order.
    """

    depths: tuple[int, ...]
    kernels: tuple[int, ...]
    expands: tuple[int, ...]
    bits: tuple[int, ...]


class _Block(nn.Module):
    """An elastic inverted residual block: 1x1 expand, depthwise ``k x k`` (centre of ``k_max``), 1x1 project."""

    def __init__(self, cin: int, cout: int, stride: int, k_max: int, e_max: int):
        super().__init__()
        hidden = cin * e_max
        self.cin, self.cout, self.stride = cin, cout, stride
        self.expand = nn.Conv2d(cin, hidden, 1)
        self.depthwise = nn.Conv2d(hidden, hidden, k_max, stride, padding=k_max // 2, groups=hidden)
        self.project = nn.Conv2d(hidden, cout, 1)
        self.norm = nn.GroupNorm(1, cout)  # on the fixed output width: nothing to slice, no running statistics

    def sliced(self, kernel: int, expand: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The shared weights of the sub-block: ``[(weight, bias)]`` for expand, depthwise, project."""
        hidden = self.cin * expand
        k_max = self.depthwise.kernel_size[0]
        lo = (k_max - kernel) // 2
        return [(self.expand.weight[:hidden], self.expand.bias[:hidden]),
                (self.depthwise.weight[:hidden, :, lo:lo + kernel, lo:lo + kernel], self.depthwise.bias[:hidden]),
                (self.project.weight[:, :hidden], self.project.bias)]

    def forward(self, x: torch.Tensor, kernel: int, expand: int, bits: tuple[int, int, int]) -> torch.Tensor:
        (we, be), (wd, bd), (wp, bp) = self.sliced(kernel, expand)
        h = F.hardswish(F.conv2d(fake_quantize(x, bits[0], False), fake_quantize(we, bits[0], True), be))
        h = F.hardswish(F.conv2d(fake_quantize(h, bits[1], False), fake_quantize(wd, bits[1], True), bd,
                                 self.stride, kernel // 2, groups=wd.shape[0]))
        out = self.norm(F.conv2d(fake_quantize(h, bits[2], False), fake_quantize(wp, bits[2], True), bp))
        return out + x if self.stride == 1 and self.cin == self.cout else out


class SimQSuperNet(Model):
    """Weight-sharing super-network with elastic depth, width (expand ratio) and kernel, and per-layer bits.

    Args:
        num_classes, in_channels: from the data set.
        stem_channels: output channels of the 3x3 stem.
        channels, strides: per stage.
        depths: allowed blocks per stage; kernels: allowed depthwise sizes (odd); expands: allowed ratios.
        pool: the last feature map is average-pooled to ``pool x pool`` and flattened into the classifier
            (1: global pooling as MobileNet-V3; 4 on MNIST keeps the 4x4 map, which trains much faster).
        n_random: random sub-networks per training step besides the largest and the smallest.
        distill: distil the sub-networks from the largest one (in-place distillation).
    """

    metadata_inputs = ("num_classes", "in_channels")

    def __init__(self, num_classes: Annotated[int, Ge(2)] = 10, in_channels: Annotated[int, Ge(1)] = 1,
                 stem_channels: Annotated[int, Ge(1)] = 16,
                 channels: Annotated[tuple[int, ...], MinLen(1)] = (16, 24, 32),
                 strides: Annotated[tuple[int, ...], MinLen(1)] = (1, 2, 2),
                 depths: Annotated[tuple[int, ...], MinLen(1)] = (1, 2, 3),
                 kernels: Annotated[tuple[int, ...], MinLen(1)] = (3, 5, 7),
                 expands: Annotated[tuple[int, ...], MinLen(1)] = (2, 3, 4),
                 pool: Annotated[int, Ge(1)] = 4, n_random: Annotated[int, Interval(ge=0, le=16)] = 2,
                 distill: bool = True):
        super().__init__()
        channels, strides = tuple(int(c) for c in channels), tuple(int(s) for s in strides)
        depths, kernels, expands = (tuple(sorted(int(v) for v in vs)) for vs in (depths, kernels, expands))
        if len(channels) != len(strides):
            raise ValueError(f"SimQSuperNet: channels {channels} and strides {strides} differ in length")
        if min(depths) < 1 or min(expands) < 1 or any(k < 1 or k % 2 == 0 for k in kernels):
            raise ValueError(f"SimQSuperNet: depths and expands must be >= 1 and kernels odd, got {depths}, "
                             f"{expands}, {kernels}")
        if any(c < 1 for c in channels) or any(s not in (1, 2) for s in strides):
            raise ValueError(f"SimQSuperNet: channels must be positive and strides 1 or 2, got {channels}, {strides}")
        self.num_classes, self.in_channels, self.n_random, self.distill = num_classes, in_channels, n_random, distill
        self.channels, self.strides = channels, strides
        self.depth_choices, self.kernel_choices, self.expand_choices = depths, kernels, expands
        self.stem = nn.Conv2d(in_channels, stem_channels, 3, stride=2, padding=1)
        self.stem_norm = nn.GroupNorm(1, stem_channels)
        self.stages = nn.ModuleList()
        prev = stem_channels
        for c, s in zip(channels, strides):
            self.stages.append(nn.ModuleList(_Block(prev if i == 0 else c, c, s if i == 0 else 1, kernels[-1],
                                                    expands[-1]) for i in range(depths[-1])))
            prev = c
        self.pool = pool
        self.classifier = nn.Linear(prev * pool * pool, num_classes)
        self.active: Genome = self.largest()

    # ------------------------------------------------------------------ genomes

    @property
    def max_blocks(self) -> int:
        return len(self.stages) * self.depth_choices[-1]

    def layer_names(self) -> list[str]:
        """The quantisable layers, in the order of ``Genome.bits``."""
        names = ["stem"]
        for s, stage in enumerate(self.stages):
            for b in range(len(stage)):
                names += [f"stages.{s}.{b}.{part}" for part in ("expand", "depthwise", "project")]
        return names + ["classifier"]

    def largest(self, bits: int = 32) -> Genome:
        n = len(self.layer_names())
        return Genome((self.depth_choices[-1],) * len(self.stages), (self.kernel_choices[-1],) * self.max_blocks,
                      (self.expand_choices[-1],) * self.max_blocks, (bits,) * n)

    def smallest(self, bits: int = 32) -> Genome:
        n = len(self.layer_names())
        return Genome((self.depth_choices[0],) * len(self.stages), (self.kernel_choices[0],) * self.max_blocks,
                      (self.expand_choices[0],) * self.max_blocks, (bits,) * n)

    def gene_choices(self) -> list[tuple[int, ...]]:
        """The allowed values of each position of the encoded genome vector."""
        return ([self.depth_choices] * len(self.stages) + [self.kernel_choices] * self.max_blocks
                + [self.expand_choices] * self.max_blocks + [BITS] * len(self.layer_names()))

    def encode(self, genome: Genome) -> np.ndarray:
        """The genome as a vector of choice indices (what NSGA-II evolves)."""
        values = (*genome.depths, *genome.kernels, *genome.expands, *genome.bits)
        choices = self.gene_choices()
        if len(values) != len(choices):
            raise ValueError(f"SimQSuperNet.encode: genome of {len(values)} genes, expected {len(choices)}")
        try:
            return np.array([c.index(v) for v, c in zip(values, choices)], dtype=np.int64)
        except ValueError as exc:
            raise ValueError(f"SimQSuperNet.encode: a gene is not an allowed choice ({exc})") from exc

    def decode(self, vector) -> Genome:
        choices = self.gene_choices()
        vector = [int(round(float(v))) for v in vector]
        if len(vector) != len(choices) or any(not 0 <= v < len(c) for v, c in zip(vector, choices)):
            raise ValueError(f"SimQSuperNet.decode: expected {len(choices)} indices within the choices, got {vector}")
        values = [c[v] for v, c in zip(vector, choices)]
        s, m = len(self.stages), self.max_blocks
        return Genome(tuple(values[:s]), tuple(values[s:s + m]), tuple(values[s + m:s + 2 * m]),
                      tuple(values[s + 2 * m:]))

    def random_genome(self, generator: torch.Generator | None = None, bits: int | None = 32) -> Genome:
        """A uniformly random genome (bit-widths random too when ``bits`` is None)."""
        vector = [int(torch.randint(len(c), (), generator=generator)) for c in self.gene_choices()]
        genome = self.decode(vector)
        if bits is not None:
            genome = Genome(genome.depths, genome.kernels, genome.expands, (bits,) * len(genome.bits))
        return genome

    def active_layers(self, genome: Genome) -> list[tuple[int, int, int]]:
        """``(stage, block, flat block index)`` of the blocks ``genome`` runs."""
        out = []
        for s, stage in enumerate(self.stages):
            for b in range(min(genome.depths[s], len(stage))):
                out.append((s, b, s * self.depth_choices[-1] + b))
        return out

    # ------------------------------------------------------------------ forward

    def run(self, x: torch.Tensor, genome: Genome) -> torch.Tensor:
        """Logits of the sub-network ``genome`` (its quantisation policy applied) on images ``x``."""
        bits = genome.bits
        h = F.hardswish(self.stem_norm(F.conv2d(fake_quantize(x, bits[0], False),
                                                fake_quantize(self.stem.weight, bits[0], True), self.stem.bias,
                                                stride=2, padding=1)))
        for s, b, flat in self.active_layers(genome):
            i = 1 + 3 * flat
            h = self.stages[s][b](h, genome.kernels[flat], genome.expands[flat], tuple(bits[i:i + 3]))
        h = F.adaptive_avg_pool2d(h, self.pool).flatten(1)
        return F.linear(fake_quantize(h, bits[-1], False), fake_quantize(self.classifier.weight, bits[-1], True),
                        self.classifier.bias)

    def forward(self, batch: dict | torch.Tensor):
        x = batch["inputs"] if isinstance(batch, dict) else batch
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"SimQSuperNet: expected inputs (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if not self.training:
            return self.run(x, self.active)
        genomes = [self.largest(), self.smallest()] + [self.random_genome() for _ in range(self.n_random)]
        return {"sandwich": [self.run(x, g) for g in genomes]}

    def loss(self, outputs, batch: dict) -> dict[str, torch.Tensor]:
        labels = batch["labels"]
        if not isinstance(outputs, dict):
            return {"loss": F.cross_entropy(outputs, labels)}
        logits = outputs["sandwich"]
        losses = {"loss_largest": F.cross_entropy(logits[0], labels)}
        teacher = F.softmax(logits[0].detach(), dim=-1)
        for i, z in enumerate(logits[1:], start=1):
            if self.distill:
                losses[f"loss_sub{i}"] = F.kl_div(F.log_softmax(z, -1), teacher, reduction="batchmean")
            else:
                losses[f"loss_sub{i}"] = F.cross_entropy(z, labels)
        return losses

    def predict(self, outputs, batch: dict | None = None) -> torch.Tensor:
        return outputs["sandwich"][0] if isinstance(outputs, dict) else outputs

    # ------------------------------------------------------------------ sub-networks and costs

    def extract(self, genome: Genome) -> nn.Sequential:
        """A standalone fp32 copy of the sub-network: plain convolutions holding (copies of) the sliced weights."""
        layers: list[nn.Module] = []
        stem = nn.Conv2d(self.in_channels, self.stem.out_channels, 3, stride=2, padding=1)
        stem.load_state_dict(self.stem.state_dict())
        stem_norm = nn.GroupNorm(1, self.stem.out_channels)
        stem_norm.load_state_dict(self.stem_norm.state_dict())
        layers += [stem, stem_norm, nn.Hardswish()]
        for s, b, flat in self.active_layers(genome):
            block = self.stages[s][b]
            k = genome.kernels[flat]
            (we, be), (wd, bd), (wp, bp) = block.sliced(k, genome.expands[flat])
            hidden = we.shape[0]
            convs = [nn.Conv2d(block.cin, hidden, 1), nn.Conv2d(hidden, hidden, k, block.stride, k // 2, groups=hidden),
                     nn.Conv2d(hidden, block.cout, 1)]
            with torch.no_grad():
                for conv, (w, bias) in zip(convs, ((we, be), (wd, bd), (wp, bp))):
                    conv.weight.copy_(w)
                    conv.bias.copy_(bias)
            norm = nn.GroupNorm(1, block.cout)
            norm.load_state_dict(block.norm.state_dict())
            layers.append(_StaticBlock(convs, norm, residual=block.stride == 1 and block.cin == block.cout))
        head = nn.Linear(self.classifier.in_features, self.num_classes)
        head.load_state_dict(self.classifier.state_dict())
        layers += [nn.AdaptiveAvgPool2d(self.pool), nn.Flatten(), head]
        return nn.Sequential(*layers)

    def costs(self, genome: Genome, input_size: int = 28) -> dict[str, float]:
        """``params``, ``size_bytes`` (weights at their bit-widths), ``macs`` and ``bit_ops`` at ``input_size``."""
        bits, side = genome.bits, math.ceil(input_size / 2)
        entries = []  # (params, macs, weight bits, activation bits); norms: fp32, no MACs counted
        stem_params = self.stem.weight.numel() + self.stem.out_channels
        entries.append((stem_params, self.stem.weight.numel() * side * side, bits[0], bits[0]))
        entries.append((2 * self.stem.out_channels, 0, 32, 32))
        for s, b, flat in self.active_layers(genome):
            block = self.stages[s][b]
            k, hidden = genome.kernels[flat], block.cin * genome.expands[flat]
            out_side = math.ceil(side / block.stride)
            i = 1 + 3 * flat
            entries.append((block.cin * hidden + hidden, block.cin * hidden * side * side, bits[i], bits[i]))
            entries.append((hidden * k * k + hidden, hidden * k * k * out_side ** 2, bits[i + 1], bits[i + 1]))
            entries.append((hidden * block.cout + block.cout, hidden * block.cout * out_side ** 2, bits[i + 2],
                            bits[i + 2]))
            entries.append((2 * block.cout, 0, 32, 32))
            side = out_side
        entries.append((self.classifier.weight.numel() + self.num_classes, self.classifier.weight.numel(),
                        bits[-1], bits[-1]))
        return {"params": float(sum(e[0] for e in entries)),
                "size_bytes": float(sum(e[0] * e[2] / 8 for e in entries)),
                "macs": float(sum(e[1] for e in entries)),
                "bit_ops": float(sum(e[1] * e[2] * e[3] for e in entries))}

    #: the columns of :meth:`latency_features`
    LATENCY_FEATURES = ("layers", "pointwise_macs", "depthwise_macs", "activations", "quantised_layers",
                        "quantised_activations", "quantised_weights")

    def latency_features(self, genome: Genome, input_size: int = 28) -> np.ndarray:
        """Per-image work of ``run(x, genome)`` (see ``LATENCY_FEATURES``): convolution/linear layers run,
        MACs of the dense (stem, 1x1, classifier) and of the depthwise layers, elements of the layers' inputs,
        layers with fewer than 32 bits, and the activation and weight elements those layers fake-quantise."""
        bits, side = genome.bits, math.ceil(input_size / 2)
        # (macs, depthwise?, input elements, weight elements, bits) per layer run
        rows = [(self.stem.weight.numel() * side * side, False, self.in_channels * input_size ** 2,
                 self.stem.weight.numel(), bits[0])]
        for s, b, flat in self.active_layers(genome):
            block = self.stages[s][b]
            k, hidden = genome.kernels[flat], block.cin * genome.expands[flat]
            out_side = math.ceil(side / block.stride)
            i = 1 + 3 * flat
            rows += [(block.cin * hidden * side ** 2, False, block.cin * side ** 2, block.cin * hidden, bits[i]),
                     (hidden * k * k * out_side ** 2, True, hidden * side ** 2, hidden * k * k, bits[i + 1]),
                     (hidden * block.cout * out_side ** 2, False, hidden * out_side ** 2, hidden * block.cout,
                      bits[i + 2])]
            side = out_side
        rows.append((self.classifier.weight.numel(), False, self.classifier.in_features,
                     self.classifier.weight.numel(), bits[-1]))
        q = [r for r in rows if r[4] < 32]
        return np.array([len(rows), sum(r[0] for r in rows if not r[1]), sum(r[0] for r in rows if r[1]),
                         sum(r[2] for r in rows), len(q), sum(r[2] for r in q), sum(r[3] for r in q)],
                        dtype=np.float64)

    @torch.no_grad()
    def measure_latency(self, genome: Genome, input_size: int = 28, batch_size: int = 32, repeats: int = 7,
                        warmup: int = 2, clock: str = "wall") -> float:
        """Time (ms, median of ``repeats`` after ``warmup`` runs) of ``run`` on a fixed random batch: the
        sub-network with its quantisation policy as evaluated (fake-quantised layers where the genome has 8 or 4
        bits, float ones at 32), on this process's threads and device.

        ``clock="wall"``: elapsed time (``time.perf_counter``; on a loaded machine it includes the time other
        processes hold the cores); ``"cpu"``: this process's CPU time (``time.process_time``; the latency the
        same threads would have on otherwise idle cores; CPU device only)."""
        if repeats < 1 or warmup < 0 or batch_size < 1 or clock not in ("wall", "cpu"):
            raise ValueError(f"measure_latency: repeats >= 1, warmup >= 0, batch_size >= 1, clock 'wall' or "
                             f"'cpu', got {repeats}, {warmup}, {batch_size}, {clock!r}")
        timer = time.perf_counter if clock == "wall" else time.process_time
        was = self.training
        self.eval()
        device = self.stem.weight.device
        x = torch.randn(batch_size, self.in_channels, input_size, input_size,
                        generator=torch.Generator().manual_seed(0)).to(device)
        times = []
        for i in range(warmup + repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = timer()
            self.run(x, genome)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append(timer() - start)
        self.train(was)
        return float(np.median(times) * 1e3)

    @torch.no_grad()
    def accuracy(self, genome: Genome, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
        """Top-1 accuracy of the quantised sub-network (activations observed per evaluated batch)."""
        was = self.training
        self.eval()
        correct = 0
        for start in range(0, len(images), batch_size):
            logits = self.run(images[start:start + batch_size], genome)
            correct += int((logits.argmax(-1) == labels[start:start + batch_size]).sum())
        self.train(was)
        return correct / max(1, len(images))

    @classmethod
    def example_config(cls) -> dict:
        return {"num_classes": 3, "stem_channels": 4, "channels": [6, 8], "strides": [2, 1], "depths": [1, 2],
                "kernels": [3, 5], "expands": [1, 2], "pool": 2, "n_random": 1}

    def example_inputs(self, batch_size: int = 2) -> dict:
        g = torch.Generator().manual_seed(0)
        return {"inputs": torch.randn(batch_size, self.in_channels, 12, 12, generator=g),
                "labels": torch.randint(self.num_classes, (batch_size,), generator=g)}


class _StaticBlock(nn.Module):
    def __init__(self, convs: list[nn.Conv2d], norm: nn.GroupNorm, residual: bool):
        super().__init__()
        self.expand, self.depthwise, self.project = convs
        self.norm, self.residual = norm, residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm(self.project(F.hardswish(self.depthwise(F.hardswish(self.expand(x))))))
        return out + x if self.residual else out


# ---------------------------------------------------------------------- predictors and search

def one_hot(vectors: np.ndarray, choices: list[tuple[int, ...]]) -> np.ndarray:
    """Genome index vectors ``(N, G)`` -> one-hot features ``(N, sum |choices|)``."""
    vectors = np.asarray(vectors, dtype=np.int64).reshape(len(vectors), -1)
    cols = []
    for j, c in enumerate(choices):
        cols.append(np.eye(len(c))[vectors[:, j]])
    return np.concatenate(cols, axis=1)


class RidgePredictor:
    """Ridge regression on one-hot genome features (closed form), the light accuracy predictor of the search."""

    def __init__(self, choices: list[tuple[int, ...]], alpha: float = 1.0):
        self.choices, self.alpha = choices, alpha
        self.coef: np.ndarray | None = None

    def fit(self, vectors: np.ndarray, targets: np.ndarray) -> RidgePredictor:
        x = one_hot(vectors, self.choices)
        y = np.asarray(targets, dtype=np.float64)
        self.mean = float(y.mean())
        a = x.T @ x + self.alpha * np.eye(x.shape[1])
        self.coef = np.linalg.solve(a, x.T @ (y - self.mean))
        return self

    def predict(self, vectors: np.ndarray) -> np.ndarray:
        if self.coef is None:
            raise RuntimeError("RidgePredictor.predict before fit")
        return one_hot(vectors, self.choices) @ self.coef + self.mean


class LatencyPredictor:
    """Latency (ms) as a ridge regression on :meth:`SimQSuperNet.latency_features` (standardised, intercept
    unpenalised): a linear cost model of the measured sub-networks, lightly trained as the paper's predictors."""

    def __init__(self, alpha: float = 1e-3):
        if alpha < 0:
            raise ValueError(f"LatencyPredictor: alpha must be >= 0, got {alpha}")
        self.alpha = alpha
        self.coef: np.ndarray | None = None

    def fit(self, features: np.ndarray, latency_ms: np.ndarray) -> LatencyPredictor:
        x = np.asarray(features, dtype=np.float64)
        y = np.asarray(latency_ms, dtype=np.float64)
        if x.ndim != 2 or len(x) != len(y) or len(y) < 2:
            raise ValueError(f"LatencyPredictor.fit: expected features (N, F) and N >= 2 latencies, got "
                             f"{x.shape} and {y.shape}")
        self.mu, self.sd = x.mean(0), x.std(0)
        self.sd[self.sd == 0] = 1.0
        z = (x - self.mu) / self.sd
        self.intercept = float(y.mean())
        self.coef = np.linalg.solve(z.T @ z + self.alpha * len(y) * np.eye(z.shape[1]), z.T @ (y - y.mean()))
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        if self.coef is None:
            raise RuntimeError("LatencyPredictor.predict before fit")
        return (np.asarray(features, dtype=np.float64) - self.mu) / self.sd @ self.coef + self.intercept


def r2_score(y: np.ndarray, prediction: np.ndarray) -> float:
    """Coefficient of determination ``1 - SS_res / SS_tot``."""
    y, prediction = np.asarray(y, dtype=np.float64), np.asarray(prediction, dtype=np.float64)
    total = ((y - y.mean()) ** 2).sum()
    return float(1 - ((y - prediction) ** 2).sum() / total) if total > 0 else float("nan")


def _ranks(v: np.ndarray) -> np.ndarray:
    """Ranks 1..N, tied values sharing their average rank."""
    v = np.asarray(v, dtype=np.float64)
    order = np.argsort(v, kind="stable")
    ranks = np.empty(len(v))
    ranks[order] = np.arange(1, len(v) + 1)
    for value in np.unique(v[np.diff(np.sort(v), prepend=np.nan) == 0]):
        ranks[v == value] = ranks[v == value].mean()
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties), ``nan`` under 3 points."""
    if len(a) < 3:
        return float("nan")
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def pareto_mask(objectives: np.ndarray) -> np.ndarray:
    """``(N, M)`` objectives to minimise -> bool mask of the non-dominated rows."""
    f = np.asarray(objectives, dtype=np.float64)
    keep = np.ones(len(f), dtype=bool)
    for i in range(len(f)):
        dominated = np.all(f <= f[i], axis=1) & np.any(f < f[i], axis=1)
        keep[i] = not dominated.any()
    return keep


def nsga2(objective, upper: np.ndarray, population: int = 40, generations: int = 20, seed: int = 0) -> np.ndarray:
    """NSGA-II (``pymoo``) over integer vectors ``0 <= x_j <= upper_j``; ``objective(X (N, G)) -> F (N, M)``
    to minimise. Returns the integer vectors of the final non-dominated set."""
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.problem import Problem
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair
    from pymoo.operators.sampling.rnd import IntegerRandomSampling
    from pymoo.optimize import minimize

    upper = np.asarray(upper, dtype=np.int64)
    n_obj = np.asarray(objective(np.zeros((1, len(upper)), dtype=np.int64))).shape[1]

    class _Problem(Problem):
        def __init__(self):
            super().__init__(n_var=len(upper), n_obj=n_obj, xl=np.zeros(len(upper)), xu=upper.astype(float),
                             vtype=int)

        def _evaluate(self, x, out, *args, **kwargs):
            out["F"] = np.asarray(objective(np.rint(x).astype(np.int64)), dtype=np.float64)

    algorithm = NSGA2(pop_size=population, sampling=IntegerRandomSampling(),
                      crossover=SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair()),
                      mutation=PM(eta=20, vtype=float, repair=RoundingRepair()), eliminate_duplicates=True)
    result = minimize(_Problem(), algorithm, ("n_gen", generations), seed=seed, verbose=False)
    x = np.atleast_2d(np.rint(result.X).astype(np.int64))
    return x
