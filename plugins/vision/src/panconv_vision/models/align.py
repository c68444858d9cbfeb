"""ALIGN: a dual encoder trained on noisy image-text pairs (Jia et al., ICML 2021).

"Scaling Up Visual and Vision-Language Representation Learning With Noisy Text Supervision": an
EfficientNet image tower and a BERT text tower, embeddings compared by cosine similarity, trained with
the normalised-softmax contrastive loss (image -> text and text -> image cross-entropy over the batch)
with a learnable temperature (paper Sec. 4, Eq. 1-2; :class:`panconv_vision.losses.NormalizedSoftmaxLoss`).

* **Image tower** (:class:`EfficientNetTower`): EfficientNet's stem (3x3/2 conv, BN, swish) and its seven
  MBConv stages (Tan & Le 2019, Table 1 of B0, scaled by ``width_coefficient`` / ``depth_coefficient``
  with EfficientNet's rounding): 1x1 expansion, kxk depthwise, squeeze-excitation (reduction to a
  quarter of the block's *input* channels), linear 1x1 projection, identity shortcut with stochastic
  depth on the repeats of a stage. ALIGN takes "EfficientNet with global pooling (without the 1x1
  conv layer in the classification head)": the embedding is the global average of the last MBConv
  stage, ``round_filters(320)`` channels (640 for B7, 1376 for L2). Stride-2 convolutions pad as
  TensorFlow's "SAME" (the original EfficientNet), BN eps 1e-3, momentum 0.01 (TF's 0.99).
* **Text tower** (:class:`BertEncoder`): BERT (word + position + token-type embeddings, LayerNorm;
  post-LN layers of multi-head self-attention and a GELU MLP; padding masked). The text embedding is
  the last hidden state of the first token (``<bos>``, BERT's ``[CLS]``) through a linear layer to the
  image embedding's size ("a fully-connected layer with linear activation on top of BERT").

Structure check (tests/test_align.py): ``transformers``' ``AlignModel`` on random weights, same
configuration — every parameter of ours has a counterpart of the same shape (:func:`hf_to_panconv`
maps the names); ``AlignModel`` also holds BERT's pooler (``text_model.pooler``, a dense + tanh that
its forward never uses), which we leave out. With their weights loaded, the image and text
embeddings agree to 1e-5 (fp32, eval mode). Differences in training mode only: transformers'
``AlignVisionFinalBlockLayer`` applies element-wise dropout where EfficientNet has per-sample
stochastic depth (we keep the latter) and passes TF's BN momentum 0.99 to PyTorch (where it means
0.99 of the *batch* statistic; we use 0.01).

Zero-shot classification (paper Sec. 6): ``attach_data`` takes the data set's prompt ensemble
(``class_prompts()``, ``(classes, prompts, length)`` token ids); ``predict`` then adds
``logits``: the cosine of the image embedding with each class's mean prompt embedding (normalised),
divided by the temperature. ``predict`` also returns ``image_embeddings`` / ``text_embeddings``
(normalised; ``vision.Retrieval`` with ``video_key: image_embeddings``) and ``features`` (the image
embedding, for ``vision.LinearProbe`` / ``vision.KNN``).

Encoders live under ``image_tower.`` and ``text_tower.`` (plus ``text_projection.``) for ``init_from``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Interval
from torch import nn

from panconv.api import Model

from ..losses import NormalizedSoftmaxLoss

PAD = 0   # the padding id of panconv_vision.datasets.captions (and of BERT's vocabulary)

#: EfficientNet-B0 (Tan & Le 2019, Table 1): (kernel, stride, expand ratio, in, out, repeats) per MBConv stage
B0_STAGES = ((3, 1, 1, 32, 16, 1), (3, 2, 6, 16, 24, 2), (5, 2, 6, 24, 40, 2), (3, 2, 6, 40, 80, 3),
             (5, 1, 6, 80, 112, 3), (5, 2, 6, 112, 192, 4), (3, 1, 6, 192, 320, 1))


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """EfficientNet's channel rounding: scale, round to a multiple of ``divisor``, never down by more than 10 %."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
    return int(math.ceil(depth * repeats))


def same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow "SAME" padding of a strided convolution: output ``ceil(size / stride)``, odd extra right/down."""
    h, w = x.shape[-2:]
    pad_h = max((math.ceil(h / stride) - 1) * stride + kernel - h, 0)
    pad_w = max((math.ceil(w / stride) - 1) * stride + kernel - w, 0)
    return F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop the whole residual branch per sample with probability ``rate``, rescale the rest."""
    if rate == 0.0 or not training:
        return x
    keep = torch.rand(x.shape[0], *(1,) * (x.dim() - 1), device=x.device, dtype=x.dtype) >= rate
    return x * keep / (1.0 - rate)


@torch.no_grad()
def prompt_ensemble(encode_text, prompts: torch.Tensor) -> torch.Tensor:
    """Zero-shot class embeddings from prompts ``(K, P, L)``: the mean of each class's normalised prompt
    embeddings, normalised (the embedding-space ensemble of CLIP/ALIGN) -> ``(K, D)``."""
    k, p, length = prompts.shape
    emb = F.normalize(encode_text(prompts.reshape(k * p, length)), dim=-1).view(k, p, -1)
    return F.normalize(emb.mean(1), dim=-1)


def _bn(channels: int, momentum: float) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=momentum)


class MBConv(nn.Module):
    """Mobile inverted bottleneck with squeeze-excitation (EfficientNet's block)."""

    def __init__(self, in_dim: int, out_dim: int, kernel: int, stride: int, expand_ratio: int,
                 se_ratio: float = 0.25, residual: bool = False, drop_rate: float = 0.0, bn_momentum: float = 0.01):
        super().__init__()
        mid = in_dim * expand_ratio
        self.kernel, self.stride, self.drop_rate = kernel, stride, drop_rate
        self.residual = residual and stride == 1 and in_dim == out_dim
        if expand_ratio != 1:
            self.expand_conv = nn.Conv2d(in_dim, mid, 1, bias=False)
            self.expand_bn = _bn(mid, bn_momentum)
        else:
            self.expand_conv = self.expand_bn = None
        self.dw_conv = nn.Conv2d(mid, mid, kernel, stride, padding=kernel // 2 if stride == 1 else 0, groups=mid,
                                 bias=False)
        self.dw_bn = _bn(mid, bn_momentum)
        squeezed = max(1, int(in_dim * se_ratio))
        self.se_reduce = nn.Conv2d(mid, squeezed, 1)
        self.se_expand = nn.Conv2d(squeezed, mid, 1)
        self.project_conv = nn.Conv2d(mid, out_dim, 1, bias=False)
        self.project_bn = _bn(out_dim, bn_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.expand_conv is not None:
            h = F.silu(self.expand_bn(self.expand_conv(h)))
        if self.stride != 1:
            h = same_pad(h, self.kernel, self.stride)
        h = F.silu(self.dw_bn(self.dw_conv(h)))
        gate = torch.sigmoid(self.se_expand(F.silu(self.se_reduce(h.mean((2, 3), keepdim=True)))))
        h = self.project_bn(self.project_conv(h * gate))
        return x + drop_path(h, self.drop_rate, self.training) if self.residual else h


class EfficientNetTower(nn.Module):
    """EfficientNet stem + MBConv stages, globally average-pooled (no 1x1 head conv): ``(N, C, H, W) -> (N, D)``."""

    def __init__(self, in_channels: int = 3, width_coefficient: float = 1.0, depth_coefficient: float = 1.0,
                 stages: Sequence[Sequence[int]] = B0_STAGES, drop_connect_rate: float = 0.2, divisor: int = 8,
                 bn_momentum: float = 0.01):
        super().__init__()
        stem = round_filters(32, width_coefficient, divisor)
        self.stem_conv = nn.Conv2d(in_channels, stem, 3, 2, bias=False)
        self.stem_bn = _bn(stem, bn_momentum)
        total = sum(round_repeats(s[5], depth_coefficient) for s in stages)
        blocks, index = [], 0
        for kernel, stride, expand, cin, cout, repeats in stages:
            cin, cout = round_filters(cin, width_coefficient, divisor), round_filters(cout, width_coefficient, divisor)
            for j in range(round_repeats(repeats, depth_coefficient)):
                blocks.append(MBConv(cin if j == 0 else cout, cout, kernel, stride if j == 0 else 1, expand,
                                     residual=j > 0, drop_rate=drop_connect_rate * index / total,
                                     bn_momentum=bn_momentum))
                index += 1
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = round_filters(stages[-1][4], width_coefficient, divisor)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.silu(self.stem_bn(self.stem_conv(same_pad(x, 3, 2))))
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x).mean((2, 3))


class BertLayer(nn.Module):
    """Post-LN transformer layer: self-attention, add & norm, GELU MLP, add & norm (BERT)."""

    def __init__(self, hidden: int, heads: int, intermediate: int, dropout: float, eps: float):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))
        self.attn_out = nn.Linear(hidden, hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=eps)
        self.ffn_in = nn.Linear(hidden, intermediate)
        self.ffn_out = nn.Linear(intermediate, hidden)
        self.ffn_norm = nn.LayerNorm(hidden, eps=eps)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """``x`` ``(N, L, H)``; ``keep`` ``(N, L)`` bool, False at padding (never attended to)."""
        n, length, hidden = x.shape

        def split(t):
            return t.view(n, length, self.heads, hidden // self.heads).transpose(1, 2)

        attn = F.scaled_dot_product_attention(split(self.query(x)), split(self.key(x)), split(self.value(x)),
                                              attn_mask=keep[:, None, None, :],
                                              dropout_p=self.dropout if self.training else 0.0)
        attn = F.dropout(self.attn_out(attn.transpose(1, 2).reshape(n, length, hidden)), self.dropout, self.training)
        x = self.attn_norm(x + attn)
        h = F.dropout(self.ffn_out(F.gelu(self.ffn_in(x))), self.dropout, self.training)
        return self.ffn_norm(x + h)


class BertEncoder(nn.Module):
    """BERT without its pooler: token ids ``(N, L)`` -> hidden states ``(N, L, H)`` (``PAD`` positions masked)."""

    def __init__(self, vocab_size: int, hidden: int = 768, layers: int = 12, heads: int = 12,
                 intermediate: int = 3072, max_positions: int = 512, type_vocab_size: int = 2,
                 dropout: float = 0.1, eps: float = 1e-12):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"BertEncoder: hidden size {hidden} is not a multiple of {heads} heads")
        self.word_embeddings = nn.Embedding(vocab_size, hidden, padding_idx=PAD)
        self.position_embeddings = nn.Embedding(max_positions, hidden)
        self.token_type_embeddings = nn.Embedding(type_vocab_size, hidden)
        self.embed_norm = nn.LayerNorm(hidden, eps=eps)
        self.layers = nn.ModuleList(BertLayer(hidden, heads, intermediate, dropout, eps) for _ in range(layers))
        self.dropout = dropout
        for m in self.modules():                       # BERT's initialisation: N(0, 0.02), zero biases
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)
        with torch.no_grad():
            self.word_embeddings.weight[PAD].zero_()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        length = ids.shape[1]
        if length > self.position_embeddings.num_embeddings:
            raise ValueError(f"BertEncoder: {length} tokens, more than the {self.position_embeddings.num_embeddings} "
                             f"positions")
        positions = torch.arange(length, device=ids.device)
        x = (self.word_embeddings(ids) + self.position_embeddings(positions)[None]
             + self.token_type_embeddings(torch.zeros_like(ids)))
        x = F.dropout(self.embed_norm(x), self.dropout, self.training)
        keep = ids != PAD
        for layer in self.layers:
            x = layer(x, keep)
        return x


class ALIGN(Model):
    """ALIGN dual encoder (see the module docstring).

    Args:
        vocab_size / max_caption_length: the text vocabulary and the number of positions (from the data set).
        in_channels: image channels. ``width_coefficient`` / ``depth_coefficient``: EfficientNet scaling
            (B7: 2.0 / 3.1, L2: 4.3 / 5.3). ``drop_connect_rate``: stochastic depth of the last block.
            ``bn_momentum``: PyTorch's BN momentum (0.01 = TF's 0.99, EfficientNet's; short runs want 0.1, else
            the running statistics lag behind the weights and evaluation-mode embeddings collapse).
        text_hidden / text_layers / text_heads / text_intermediate: BERT's size (Base: 768/12/12/3072).
        dropout: BERT's dropout. ``init_temperature`` / ``label_smoothing``: the loss.
    """

    metadata_inputs = ("vocab_size", "max_caption_length", "in_channels")

    def __init__(self, vocab_size: Annotated[int, Ge(4)] = 30522, max_caption_length: Annotated[int, Ge(2)] = 512,
                 in_channels: Annotated[int, Ge(1)] = 3, width_coefficient: Annotated[float, Gt(0)] = 1.0,
                 depth_coefficient: Annotated[float, Gt(0)] = 1.0,
                 drop_connect_rate: Annotated[float, Interval(ge=0, lt=1)] = 0.2,
                 bn_momentum: Annotated[float, Interval(gt=0, le=1)] = 0.01,
                 text_hidden: Annotated[int, Ge(1)] = 768, text_layers: Annotated[int, Ge(1)] = 12,
                 text_heads: Annotated[int, Ge(1)] = 12, text_intermediate: Annotated[int, Ge(1)] = 3072,
                 type_vocab_size: Annotated[int, Ge(1)] = 2, dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.1,
                 init_temperature: Annotated[float, Gt(0)] = 1.0,
                 label_smoothing: Annotated[float, Interval(ge=0, lt=1)] = 0.0):
        super().__init__()
        if vocab_size < 4 or max_caption_length < 2 or in_channels < 1:
            raise ValueError("ALIGN: vocab_size >= 4, max_caption_length >= 2, in_channels >= 1")
        if min(width_coefficient, depth_coefficient) <= 0 or not 0 <= drop_connect_rate < 1 or not 0 < bn_momentum <= 1:
            raise ValueError("ALIGN: width/depth coefficients > 0, 0 <= drop_connect_rate < 1, 0 < bn_momentum <= 1")
        if text_hidden % text_heads:
            raise ValueError(f"ALIGN: text_hidden {text_hidden} is not a multiple of text_heads {text_heads}")
        self.image_tower = EfficientNetTower(in_channels, width_coefficient, depth_coefficient,
                                             drop_connect_rate=drop_connect_rate, bn_momentum=bn_momentum)
        self.embed_dim = self.image_tower.out_channels
        self.text_tower = BertEncoder(vocab_size, text_hidden, text_layers, text_heads, text_intermediate,
                                      max_caption_length, type_vocab_size, dropout)
        self.text_projection = nn.Linear(text_hidden, self.embed_dim)
        nn.init.xavier_uniform_(self.text_projection.weight)
        nn.init.zeros_(self.text_projection.bias)
        self.criterion = NormalizedSoftmaxLoss(init_temperature, learnable=True, label_smoothing=label_smoothing)
        self.in_channels = in_channels
        self.class_prompts: torch.Tensor | None = None       # (classes, prompts, length) ids, from attach_data

    # ---- encoders ----
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != self.in_channels:
            raise ValueError(f"ALIGN: expected images (N, {self.in_channels}, H, W), got {tuple(images.shape)}")
        return self.image_tower(images)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.dim() != 2 or ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"ALIGN: expected token ids (N, L) of integers, got {tuple(ids.shape)} {ids.dtype}")
        return self.text_projection(self.text_tower(ids)[:, 0])      # the [CLS] (<bos>) position

    # ---- Model contract ----
    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        out = {"image_embeddings": self.encode_image(batch["inputs"])}
        if batch.get("captions") is not None:
            out["text_embeddings"] = self.encode_text(batch["captions"])
        return out

    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        if "text_embeddings" not in outputs:
            raise ValueError("ALIGN: the batch has no 'captions' to train on")
        return {"loss": self.criterion(outputs["image_embeddings"], outputs["text_embeddings"]),
                "temperature": self.criterion.temperature.detach()}

    def attach_data(self, dataset) -> None:
        prompts = getattr(dataset, "class_prompts", None)
        if callable(prompts):
            self.class_prompts = prompts()

    def class_embeddings(self, prompts: torch.Tensor) -> torch.Tensor:
        return prompt_ensemble(self.encode_text, prompts)

    def predict(self, outputs: dict, batch: dict | None = None) -> dict[str, torch.Tensor]:
        image = F.normalize(outputs["image_embeddings"], dim=-1)
        out = {"image_embeddings": image, "features": outputs["image_embeddings"]}
        if "text_embeddings" in outputs:
            out["text_embeddings"] = F.normalize(outputs["text_embeddings"], dim=-1)
        prompts = (batch or {}).get("class_prompts", self.class_prompts)
        if prompts is not None:
            classes = self.class_embeddings(prompts.to(image.device))
            out["logits"] = image @ classes.T / self.criterion.temperature
        return out

    @classmethod
    def example_config(cls) -> dict:
        return {"vocab_size": 12, "max_caption_length": 8, "in_channels": 1, "width_coefficient": 0.25,
                "depth_coefficient": 0.5, "text_hidden": 16, "text_layers": 1, "text_heads": 2,
                "text_intermediate": 32}

    def example_inputs(self, batch_size: int = 2) -> dict:
        vocab = self.text_tower.word_embeddings.num_embeddings
        length = self.text_tower.position_embeddings.num_embeddings
        captions = torch.randint(3, vocab, (batch_size, length))
        captions[:, 0], captions[:, -2:] = 1, torch.tensor([2, PAD])
        return {"inputs": torch.randn(batch_size, self.in_channels, 32, 32), "captions": captions}


# ---------------------------------------------------------------- transformers' AlignModel -> ours
_HF_RULES = (
    (r"^vision_model\.embeddings\.convolution\.", "image_tower.stem_conv."),
    (r"^vision_model\.embeddings\.batchnorm\.", "image_tower.stem_bn."),
    (r"^vision_model\.encoder\.blocks\.(\d+)\.expansion\.expand_conv\.", r"image_tower.blocks.\1.expand_conv."),
    (r"^vision_model\.encoder\.blocks\.(\d+)\.expansion\.expand_bn\.", r"image_tower.blocks.\1.expand_bn."),
    (r"^vision_model\.encoder\.blocks\.(\d+)\.depthwise_conv\.depthwise_conv\.", r"image_tower.blocks.\1.dw_conv."),
    (r"^vision_model\.encoder\.blocks\.(\d+)\.depthwise_conv\.depthwise_norm\.", r"image_tower.blocks.\1.dw_bn."),
    (r"^vision_model\.encoder\.blocks\.(\d+)\.squeeze_excite\.reduce\.", r"image_tower.blocks.\1.se_reduce."),
    (r"^vision_model\.encoder\.blocks\.(\d+)\.squeeze_excite\.expand\.", r"image_tower.blocks.\1.se_expand."),
    (r"^vision_model\.encoder\.blocks\.(\d+)\.projection\.project_conv\.", r"image_tower.blocks.\1.project_conv."),
    (r"^vision_model\.encoder\.blocks\.(\d+)\.projection\.project_bn\.", r"image_tower.blocks.\1.project_bn."),
    (r"^text_model\.embeddings\.(word|position|token_type)_embeddings\.", r"text_tower.\1_embeddings."),
    (r"^text_model\.embeddings\.LayerNorm\.", "text_tower.embed_norm."),
    (r"^text_model\.encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.", r"text_tower.layers.\1.\2."),
    (r"^text_model\.encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"text_tower.layers.\1.attn_out."),
    (r"^text_model\.encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", r"text_tower.layers.\1.attn_norm."),
    (r"^text_model\.encoder\.layer\.(\d+)\.intermediate\.dense\.", r"text_tower.layers.\1.ffn_in."),
    (r"^text_model\.encoder\.layer\.(\d+)\.output\.dense\.", r"text_tower.layers.\1.ffn_out."),
    (r"^text_model\.encoder\.layer\.(\d+)\.output\.LayerNorm\.", r"text_tower.layers.\1.ffn_norm."),
    (r"^text_projection\.", "text_projection."),
)
#: AlignModel entries with no counterpart: BERT's pooler (unused by AlignModel.forward) and the temperature
#: (ours is the loss's log-temperature)
HF_UNUSED = (r"^text_model\.pooler\.", r"^temperature$")


def hf_to_panconv(name: str) -> str | None:
    """Our state-dict name for a ``transformers`` ``AlignModel`` entry (None: it has no counterpart)."""
    if any(re.search(p, name) for p in HF_UNUSED):
        return None
    for pattern, replacement in _HF_RULES:
        if re.search(pattern, name):
            return re.sub(pattern, replacement, name)
    raise KeyError(f"hf_to_panconv: no rule for AlignModel entry '{name}'")


__all__ = ["ALIGN", "B0_STAGES", "BertEncoder", "EfficientNetTower", "HF_UNUSED", "MBConv", "hf_to_panconv",
           "prompt_ensemble", "round_filters", "round_repeats", "same_pad"]
