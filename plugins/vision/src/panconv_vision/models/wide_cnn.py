"""Deep hierarchical (local) CNNs of "What can be learnt with wide convolutional neural networks?"
(Cagnetta, Favero, Wyart, ICML 2023), the networks whose infinite-width kernels
``panconv_vision.tools.wide_cnn`` computes exactly.

The architecture of the paper (its Fig. 1): a 1-D input of dimension ``d = s ** L`` is cut into
non-overlapping patches of ``s`` variables; each of the ``L`` hidden layers is a convolution with
filter size ``s`` and stride ``s`` (so the layers form a tree: every neuron sees one "meta-patch"
of ``s ** l`` inputs at layer ``l``), followed by a ReLU; after ``L`` layers one position is left
and a linear read-out gives the output. There is no bias and no pooling.

Parametrisation: the NTK one (Jacot et al. 2018): every weight is N(0, 1) and every layer is
multiplied by ``1 / sqrt(fan_in)``; the activation is ``sqrt(2) * relu`` (He's variance), so that
with input patches of norm ``sqrt(s)`` every pre-activation has unit variance. At infinite width the
output is a Gaussian process with the NNGP kernel and gradient descent follows the NTK, both given by
the recursions of ``tools/wide_cnn.py`` (``nngp_kernel``, ``ntk_kernel``). ``parametrization="standard"``
puts the ``1 / sqrt(fan_in)`` into the initialisation instead (same function at init, ordinary
learning-rate scaling).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge
from torch import nn

from panconv.api import Model

RELU_GAIN = math.sqrt(2.0)


class WideCNN(Model):
    """Hierarchical CNN with filter size ``s`` = stride, ``depth`` hidden layers of ``width`` channels.

    Args:
        filter_size: ``s``, the patch size (the input dimension is ``s ** depth``).
        depth: ``L``, the number of hidden (convolutional) layers.
        width: ``H``, channels of every hidden layer (the kernel limit is ``H -> inf``).
        in_channels: input channels (the paper: 1).
        num_classes: outputs; 1 = scalar regression on ``batch["targets"]`` (squared loss, the kernel
            setting), >1 = classification on ``batch["labels"]`` (cross-entropy).
        parametrization: ``"ntk"`` (weights N(0,1), ``1/sqrt(fan_in)`` in the forward) or ``"standard"``.

    ``forward`` takes ``batch["inputs"]`` of shape ``(N, d)`` or ``(N, in_channels, d)`` and returns
    ``(N, num_classes)``; ``features(x)`` returns the last hidden layer ``(N, width)`` (post-activation).
    """

    metadata_inputs = ("num_classes",)

    def __init__(self, filter_size: Annotated[int, Ge(2)] = 2, depth: Annotated[int, Ge(1)] = 3,
                 width: Annotated[int, Ge(1)] = 256, in_channels: Annotated[int, Ge(1)] = 1,
                 num_classes: Annotated[int, Ge(1)] = 1, parametrization: Literal["ntk", "standard"] = "ntk"):
        super().__init__()
        if filter_size < 2 or depth < 1 or width < 1 or in_channels < 1 or num_classes < 1:
            raise ValueError(f"WideCNN: filter_size >= 2, depth, width, in_channels, num_classes >= 1; got "
                             f"{filter_size}, {depth}, {width}, {in_channels}, {num_classes}")
        if parametrization not in ("ntk", "standard"):
            raise ValueError(f"WideCNN: parametrization must be 'ntk' or 'standard', got {parametrization!r}")
        self.filter_size, self.depth, self.width = filter_size, depth, width
        self.in_channels, self.num_classes, self.parametrization = in_channels, num_classes, parametrization
        self.input_dim = filter_size ** depth
        channels = [in_channels] + [width] * depth
        self.convs = nn.ParameterList(
            nn.Parameter(torch.empty(channels[i + 1], channels[i], filter_size)) for i in range(depth))
        self.readout = nn.Parameter(torch.empty(num_classes, width))
        self.reset_parameters()

    def _scales(self) -> list[float]:
        """The forward multiplier of each layer (convs, then the read-out)."""
        fans = [w.shape[1] * w.shape[2] for w in self.convs] + [self.width]
        return [1.0 / math.sqrt(f) if self.parametrization == "ntk" else 1.0 for f in fans]

    def reset_parameters(self) -> None:
        for w in list(self.convs) + [self.readout]:
            fan_in = w[0].numel()
            nn.init.normal_(w, std=1.0 if self.parametrization == "ntk" else 1.0 / math.sqrt(fan_in))

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2 and self.in_channels == 1:
            x = x[:, None]
        if x.dim() != 3 or x.shape[1] != self.in_channels or x.shape[2] != self.input_dim:
            raise ValueError(f"WideCNN: expected inputs (N, {self.input_dim}) or (N, {self.in_channels}, "
                             f"{self.input_dim}) (d = filter_size ** depth), got {tuple(x.shape)}")
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden layer's activations ``(N, width)``."""
        h = self._check(x)
        for w, scale in zip(self.convs, self._scales()):
            h = RELU_GAIN * F.relu(F.conv1d(h, w * scale, stride=self.filter_size))
        return h[..., 0]

    def forward(self, batch: dict | torch.Tensor) -> torch.Tensor:
        x = batch["inputs"] if isinstance(batch, dict) else batch
        return self.features(x) @ (self.readout * self._scales()[-1]).t()

    def loss(self, outputs: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        if self.num_classes == 1:
            return {"loss": F.mse_loss(outputs[:, 0], batch["targets"].to(outputs.dtype))}
        return {"loss": F.cross_entropy(outputs, batch["labels"])}

    def predict(self, outputs: torch.Tensor, batch: dict | None = None) -> torch.Tensor:
        return outputs[:, 0] if self.num_classes == 1 else outputs.softmax(-1)

    def example_inputs(self, batch_size: int = 2) -> dict:
        g = torch.Generator().manual_seed(0)
        batch = {"inputs": torch.randn(batch_size, self.in_channels, self.input_dim, generator=g)}
        if self.num_classes == 1:
            batch["targets"] = torch.randn(batch_size, generator=g)
        else:
            batch["labels"] = torch.arange(batch_size) % self.num_classes
        return batch

    @classmethod
    def example_config(cls) -> dict:
        return {"filter_size": 2, "depth": 2, "width": 8, "num_classes": 1}
