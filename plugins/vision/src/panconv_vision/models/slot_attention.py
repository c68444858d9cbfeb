"""Slot Attention autoencoder for unsupervised object discovery (Locatello et al., NeurIPS 2020).

    encoder:  4 x (5x5 conv, ReLU) at full resolution -> + soft position embedding (Sec. 2.3: a linear map of
              the 4-channel grid (y, x, 1-y, 1-x)) -> flatten -> LayerNorm -> MLP            (inputs, N x D)
    slot attention (Algorithm 1): slots ~ N(mu, diag sigma^2) (learnt mu, sigma), then ``iters`` times
              attn = softmax over the SLOTS of k(inputs) q(slots)^T / sqrt(D)      (slots compete for pixels)
              updates = weighted mean of v(inputs), weights attn normalised over the inputs
              slots = GRU(updates, slots);  slots += MLP(LayerNorm(slots))
    decoder:  each slot broadcast to a ``broadcast x broadcast`` grid (spatial broadcast decoder, Watters et al.
              2019) + position embedding -> ``upsamples`` stride-2 5x5 transposed convs -> 5x5 -> 3x3 to
              RGB + alpha; the alphas are a softmax over the slots; image = sum_k alpha_k * rgb_k.

Padding and normalisation follow the official TensorFlow code (google-research ``slot_attention/model.py``;
forward parity on shared weights, ``tests/test_slot_attention_parity.py``): LayerNorm eps 1e-3 (Keras' default) and
``'SAME'`` transposed convolutions (:class:`SameConvTranspose2d`: a stride-2 5x5 layer puts tap ``k`` of input ``i``
at ``2i + k - 1``, one pixel later than torch's ``padding=2, output_padding=1``).

Trained on the mean squared reconstruction error alone. ``predict`` gives ``masks``: the slot with the
largest alpha at each pixel (``(B, H, W)``), which ``vision.ObjectDiscovery`` scores by FG-ARI/AMI against
ground-truth instances. In train mode the initial slots are drawn from the global generator; in eval mode
from a fixed seed (``eval_seed``), so evaluation is reproducible. The paper's object-discovery configuration
(CLEVR6, 128x128: 64 channels, 64-d slots, MLP 128, 7 slots, 3 iterations, broadcast 8 then 4 stride-2
transposed convs) is registered as ``slot_attention_clevr6``.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt
from torch import nn

from panconv.api import Model


def position_grid(height: int, width: int, device=None) -> torch.Tensor:
    """``(1, H, W, 4)``: the ``(y, x, 1 - y, 1 - x)`` coordinates in [0, 1] of each pixel (paper Sec. 2.3)."""
    ys = torch.linspace(0.0, 1.0, height, device=device)
    xs = torch.linspace(0.0, 1.0, width, device=device)
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([y, x, 1 - y, 1 - x], -1)[None]


class SoftPositionEmbed(nn.Module):
    """Adds a learnt linear embedding of :func:`position_grid` to channels-last features ``(B, H, W, C)``."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(4, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj(position_grid(x.shape[1], x.shape[2], x.device))


#: Keras' LayerNormalization default, which the official code uses everywhere
LN_EPS = 1e-3


class SameConvTranspose2d(nn.ConvTranspose2d):
    """A transposed convolution with TensorFlow's ``padding="SAME"``: output size ``stride * input``, the
    ``max(k - stride, 0)`` padding of the matching forward convolution split with the smaller half first."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        total = max(kernel_size - stride, 0)
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=total // 2,
                         output_padding=0 if total else stride - kernel_size)
        self.crop = total % 2

    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        y = super().forward(x)
        return y[..., :y.shape[-2] - self.crop, :y.shape[-1] - self.crop] if self.crop else y


class SlotAttention(nn.Module):
    """Algorithm 1 of the paper: ``inputs (B, N, D_in)`` -> ``slots (B, K, D)`` and ``attn (B, N, K)``."""

    def __init__(self, num_slots: int, dim: int, input_dim: int, iters: int = 3, mlp_hidden: int = 128,
                 eps: float = 1e-8):
        super().__init__()
        self.num_slots, self.dim, self.iters, self.eps = num_slots, dim, iters, eps
        self.scale = dim ** -0.5
        self.slots_mu = nn.Parameter(torch.empty(1, 1, dim))
        self.slots_log_sigma = nn.Parameter(torch.empty(1, 1, dim))
        nn.init.xavier_uniform_(self.slots_mu)
        nn.init.xavier_uniform_(self.slots_log_sigma)
        self.norm_inputs = nn.LayerNorm(input_dim, eps=LN_EPS)
        self.norm_slots, self.norm_mlp = nn.LayerNorm(dim, eps=LN_EPS), nn.LayerNorm(dim, eps=LN_EPS)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(input_dim, dim, bias=False)
        self.to_v = nn.Linear(input_dim, dim, bias=False)
        self.gru = nn.GRUCell(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_hidden), nn.ReLU(), nn.Linear(mlp_hidden, dim))

    def initial_slots(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(batch, self.num_slots, self.dim, generator=generator,
                            device=self.slots_mu.device if generator is None else generator.device)
        return self.slots_mu + self.slots_log_sigma.exp() * noise.to(self.slots_mu.device)

    def forward(self, inputs: torch.Tensor, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = self.norm_inputs(inputs)
        k, v = self.to_k(inputs), self.to_v(inputs)
        attn = None
        for _ in range(self.iters):
            previous = slots
            q = self.to_q(self.norm_slots(slots))
            attn = (torch.einsum("bnd,bkd->bnk", k, q) * self.scale).softmax(-1) + self.eps   # over the slots
            weights = attn / attn.sum(1, keepdim=True)                                       # mean over inputs
            updates = torch.einsum("bnk,bnd->bkd", weights, v)
            slots = self.gru(updates.reshape(-1, self.dim), previous.reshape(-1, self.dim)).view_as(previous)
            slots = slots + self.mlp(self.norm_mlp(slots))
        return slots, attn


class SlotAttentionAE(Model):
    """The object-discovery autoencoder (module docstring). ``batch["inputs"]``: ``(B, in_channels, S, S)`` in
    [0, 1] with ``S = broadcast * 2**upsamples`` (``image_size``)."""

    def __init__(self, num_slots: Annotated[int, Ge(1)] = 5, image_size: Annotated[int, Ge(1)] = 32,
                 in_channels: Annotated[int, Ge(1)] = 3, hidden: Annotated[int, Ge(1)] = 32,
                 slot_dim: Annotated[int, Ge(1)] = 64, mlp_hidden: Annotated[int, Ge(1)] = 128,
                 iters: Annotated[int, Ge(1)] = 3, broadcast: Annotated[int, Ge(1)] = 8,
                 upsamples: Annotated[int, Ge(0)] = 2, eval_seed: Annotated[int, Ge(0)] = 0,
                 eps: Annotated[float, Gt(0)] = 1e-8):
        super().__init__()
        if broadcast * 2 ** upsamples != image_size:
            raise ValueError(f"SlotAttentionAE: broadcast * 2**upsamples must equal image_size, got "
                             f"{broadcast} * 2**{upsamples} != {image_size}")
        if min(num_slots, in_channels, hidden, slot_dim, mlp_hidden, iters) < 1:
            raise ValueError("SlotAttentionAE: num_slots, in_channels, hidden, slot_dim, mlp_hidden, iters must be "
                             ">= 1")
        self.image_size, self.in_channels = image_size, in_channels
        self.broadcast, self.eval_seed = broadcast, eval_seed
        self.encoder = nn.Sequential(*[m for i in range(4) for m in (
            nn.Conv2d(in_channels if i == 0 else hidden, hidden, 5, padding=2), nn.ReLU())])
        self.encoder_pos = SoftPositionEmbed(hidden)
        self.encoder_norm = nn.LayerNorm(hidden, eps=LN_EPS)
        self.encoder_mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.slot_attention = SlotAttention(num_slots, slot_dim, hidden, iters, mlp_hidden, eps)
        self.decoder_pos = SoftPositionEmbed(slot_dim)
        layers: list[nn.Module] = []
        channels = slot_dim
        for _ in range(upsamples):
            layers += [SameConvTranspose2d(channels, hidden, 5, stride=2), nn.ReLU()]
            channels = hidden
        layers += [SameConvTranspose2d(channels, hidden, 5), nn.ReLU(), SameConvTranspose2d(hidden, in_channels + 1, 3)]
        self.decoder = nn.Sequential(*layers)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, S, S)`` -> ``(B, S*S, hidden)`` input features."""
        x = self.encoder(images).permute(0, 2, 3, 1)
        x = self.encoder_pos(x).flatten(1, 2)
        return self.encoder_mlp(self.encoder_norm(x))

    def decode(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(B, K, D)`` slots -> reconstruction ``(B, C, S, S)``, per-slot RGB ``(B, K, C, S, S)`` and alpha
        masks ``(B, K, 1, S, S)`` (a softmax over the slots)."""
        b, k, d = slots.shape
        x = slots.reshape(b * k, 1, 1, d).expand(-1, self.broadcast, self.broadcast, -1)
        x = self.decoder(self.decoder_pos(x).permute(0, 3, 1, 2))
        x = x.view(b, k, self.in_channels + 1, x.shape[-2], x.shape[-1])
        rgb, alpha = x[:, :, :self.in_channels], x[:, :, self.in_channels:].softmax(1)
        return (rgb * alpha).sum(1), rgb, alpha

    def forward(self, batch: dict) -> dict:
        images = batch["inputs"] if isinstance(batch, dict) else batch
        if images.dim() != 4 or images.shape[1] != self.in_channels or images.shape[-1] != self.image_size \
                or images.shape[-2] != self.image_size:
            raise ValueError(f"SlotAttentionAE: expected (B, {self.in_channels}, {self.image_size}, "
                             f"{self.image_size}) images, got {tuple(images.shape)}")
        generator = None if self.training else torch.Generator(images.device).manual_seed(self.eval_seed)
        slots = self.slot_attention.initial_slots(images.shape[0], generator)
        return self.forward_slots(images, slots)

    def forward_slots(self, images: torch.Tensor, slots: torch.Tensor) -> dict:
        """The autoencoder from given initial slots ``(B, K, D)`` (tests: permutation equivariance)."""
        slots, attn = self.slot_attention(self.encode(images), slots)
        recon, rgb, alpha = self.decode(slots)
        return {"recon": recon, "rgb": rgb, "alpha": alpha, "slots": slots, "attn": attn, "images": images}

    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        return {"loss": F.mse_loss(outputs["recon"], outputs["images"])}

    def predict(self, outputs: dict, batch: dict | None = None) -> dict:
        return {"masks": outputs["alpha"][:, :, 0].argmax(1), "recon": outputs["recon"]}

    def example_inputs(self, batch_size: int = 2) -> dict:
        return {"inputs": torch.rand(batch_size, self.in_channels, self.image_size, self.image_size)}

    @classmethod
    def example_config(cls) -> dict:
        return {"num_slots": 3, "image_size": 8, "hidden": 8, "slot_dim": 8, "mlp_hidden": 16, "iters": 2,
                "broadcast": 4, "upsamples": 1}


__all__ = ["SameConvTranspose2d", "SlotAttention", "SlotAttentionAE", "SoftPositionEmbed", "position_grid"]
