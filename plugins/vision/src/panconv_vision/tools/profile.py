"""Operator profiling by category (after Golden et al., "Generative AI Beyond LLMs: System Implications of
Multi-Modal Generation", ISPASS 2024), for any panconv model or a small diffusers architecture.

One forward pass runs under ``torch.profiler`` (CPU, or CPU + CUDA). Every profiler event's *self*
time goes to exactly one category, so the categories add up to the total:

* the nearest enclosing *marked module* decides: attention modules (``nn.MultiheadAttention``, class
  names ending in ``Attention`` or ``Attn`` that are not a ``Block`` such as ``UNetMidBlock2DCrossAttn``)
  are ``temporal_attention`` when their qualified name, class or an enclosing module's class says
  temporal (``temp``), else ``spatial_attention``; normalisation modules (``*Norm*``) are
  ``normalization``;
* otherwise the operator decides: convolutions -> ``convolution``, ``linear``/``addmm``/``mm``/
  ``matmul``/``bmm`` -> ``linear``, the rest -> ``other``.

FLOPs are the profiler's (``with_flops``: convolutions, matrix products, element-wise products and
sums) plus, for a fused attention kernel the profiler does not count, the ``4 B H Lq Lk D`` of its two
matrix products (the same count the unfused path's ``bmm``s get), categorised the same way.

``sdpa=False`` replaces ``torch.nn.functional.scaled_dot_product_attention`` during the run by the
textbook ``softmax(q k^T / sqrt(d)) v`` (the unfused path); the paper's "with and without
FlashAttention" comparison in miniature. Sequence-length accounting: every attention module's
call records its token count (``H x W`` of a 4-D input, ``L`` of a 3-D one), the quantity the paper
follows across U-Net levels.
"""

from __future__ import annotations

import argparse
import contextlib
import math
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import _common

CATEGORIES = ("convolution", "linear", "spatial_attention", "temporal_attention", "normalization", "other")
_MARK = "panconv::"
_LINEAR_OPS = ("aten::linear", "aten::addmm", "aten::mm", "aten::matmul", "aten::bmm", "aten::baddbmm")
_SDPA_OPS = ("aten::scaled_dot_product_attention", "aten::_scaled_dot_product_flash_attention_for_cpu",
             "aten::_scaled_dot_product_flash_attention", "aten::_scaled_dot_product_efficient_attention",
             "aten::_scaled_dot_product_cudnn_attention")


def module_category(name: str, module: nn.Module) -> str | None:
    """The category a module marks for everything it runs (``None``: the operators decide)."""
    cls = type(module).__name__
    if isinstance(module, nn.MultiheadAttention) or (cls.endswith(("Attention", "Attn")) and "Block" not in cls):
        return "temporal_attention" if "temp" in (name + cls).lower() else "spatial_attention"
    if "Norm" in cls and not list(module.children()):
        return "normalization"
    return None


def op_category(name: str) -> str:
    if "conv" in name and name.startswith("aten::"):
        return "convolution"
    if name in _LINEAR_OPS:
        return "linear"
    return "other"


def math_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **_):
    """``softmax(q k^T * scale + mask) v`` with explicit matrix products (no fused kernel)."""
    scale = scale if scale is not None else 1.0 / math.sqrt(query.shape[-1])
    scores = torch.matmul(query, key.transpose(-2, -1)) * scale
    if is_causal:
        lq, lk = scores.shape[-2:]
        scores = scores.masked_fill(torch.ones(lq, lk, dtype=torch.bool, device=scores.device).triu(1), float("-inf"))
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
    weights = torch.softmax(scores, dim=-1)
    if dropout_p:
        weights = F.dropout(weights, dropout_p)
    return torch.matmul(weights, value)


@contextlib.contextmanager
def _sdpa(enabled: bool):
    original = F.scaled_dot_product_attention
    if not enabled:
        F.scaled_dot_product_attention = math_attention
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def _tokens(args) -> int | None:
    x = next((a for a in args if isinstance(a, torch.Tensor)), None)
    if x is None:
        return None
    return int(x.shape[-2] * x.shape[-1]) if x.dim() == 4 else int(x.shape[1]) if x.dim() == 3 else None


def _sdpa_flops(event) -> int:
    shapes = getattr(event, "input_shapes", None) or []
    if len(shapes) < 3 or len(shapes[0]) < 2 or len(shapes[1]) < 2:
        return 0
    q, k = shapes[0], shapes[1]
    return 4 * math.prod(q[:-1]) * k[-2] * q[-1]


def profile(model: nn.Module, run, sdpa: bool = True, device: str = "cpu") -> dict:
    """Profile ``run()`` (one forward of ``model``) and break its time and FLOPs down by category.

    Returns ``{"total_ms", "total_flops", "categories": {cat: {"ms", "flops"}}, "attention": [per
    attention module: name, category, tokens, calls]}``.
    """
    from torch.profiler import ProfilerActivity, record_function
    from torch.profiler import profile as torch_profile

    hooks, open_ranges, seen = [], defaultdict(list), {}

    def pre(name, category):
        def hook(module, args):
            r = record_function(f"{_MARK}{category}::{name}")
            r.__enter__()
            open_ranges[id(module)].append(r)
            if category.endswith("attention"):
                entry = seen.setdefault(name, {"module": name, "category": category, "tokens": _tokens(args),
                                               "calls": 0})
                entry["calls"] += 1
        return hook

    def post(module, args, output):
        stack = open_ranges[id(module)]
        if stack:
            stack.pop().__exit__(None, None, None)

    classes = {name: type(module).__name__ for name, module in model.named_modules()}
    for name, module in model.named_modules():
        # the qualified name spelled with every enclosing module's class (TransformerTemporalModel...)
        path = ".".join(classes.get(".".join(name.split(".")[:i]), "") for i in range(name.count(".") + 1))
        category = module_category(f"{name}.{path}" if name else path, module)
        if category is not None:
            hooks.append(module.register_forward_pre_hook(pre(name, category)))
            hooks.append(module.register_forward_hook(post))
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    try:
        with torch.no_grad(), _sdpa(sdpa):
            run()  # warm-up (lazy initialisation, allocator) outside the measurement
            with torch_profile(activities=activities, record_shapes=True, with_flops=True) as prof:
                run()
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
    finally:
        for h in hooks:
            h.remove()
    return _breakdown(prof.events(), list(seen.values()), cuda=device.startswith("cuda"))


def _breakdown(events, attention, cuda: bool = False) -> dict:
    categories = {c: {"ms": 0.0, "flops": 0} for c in CATEGORIES}
    per_module = defaultdict(lambda: {"ms": 0.0, "flops": 0})
    total_us, total_flops = 0.0, 0
    for event in events:
        self_us = event.self_device_time_total if cuda else event.self_cpu_time_total
        flops = int(getattr(event, "flops", 0) or 0)
        if not flops and event.name in _SDPA_OPS and not _has_counted_child(event) \
                and not (event.cpu_parent is not None and event.cpu_parent.name in _SDPA_OPS):
            flops = _sdpa_flops(event)
        category, marker = op_category(event.name), None
        node = event
        while node is not None:
            if node.name.startswith(_MARK):
                marker = node.name
                category = node.name[len(_MARK):].split("::", 1)[0]
                break
            node = node.cpu_parent
        categories[category]["ms"] += self_us / 1000
        categories[category]["flops"] += flops
        total_us += self_us
        total_flops += flops
        if marker is not None:
            per_module[marker.split("::", 2)[2]]["ms"] += self_us / 1000
            per_module[marker.split("::", 2)[2]]["flops"] += flops
    for entry in attention:
        entry.update(per_module.get(entry["module"], {"ms": 0.0, "flops": 0}))
    return {"total_ms": total_us / 1000, "total_flops": total_flops, "categories": categories,
            "attention": attention}


def _has_counted_child(event) -> bool:
    return any(getattr(c, "flops", 0) or _has_counted_child(c) for c in event.cpu_children)


# ---- what to profile --------------------------------------------------------------------------------

def diffusers_model(kind: str, batch_size: int = 2, size: int = 16):
    """A small diffusers architecture with random weights and its inputs: ``(model, run)``."""
    try:
        import diffusers
    except ImportError:
        raise SystemExit("panconv profile --diffusers needs the diffusers package: "
                         "pip install --no-deps diffusers (plus huggingface_hub, safetensors)") from None
    torch.manual_seed(0)
    text = torch.randn(batch_size, 8, 32)
    t = torch.tensor([10] * batch_size)
    if kind == "unet":  # Stable-Diffusion-style text-to-image U-Net in miniature
        model = diffusers.UNet2DConditionModel(
            sample_size=size, in_channels=4, out_channels=4, block_out_channels=(32, 64, 64), layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
            attention_head_dim=8, norm_num_groups=8).eval()
        x = torch.randn(batch_size, 4, size, size)
        return model, lambda: model(x, t, encoder_hidden_states=text)
    if kind == "transformer":  # PixArt-style text-to-image transformer (DiT blocks with cross-attention)
        model = diffusers.PixArtTransformer2DModel(
            num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=8, num_layers=2,
            cross_attention_dim=32, sample_size=size, patch_size=2, caption_channels=32,
            norm_num_groups=8).eval()
        x = torch.randn(batch_size, 4, size, size)
        cond = {"resolution": None, "aspect_ratio": None}
        return model, lambda: model(x, encoder_hidden_states=text, timestep=t, added_cond_kwargs=cond)
    if kind == "video-unet":  # ModelScope-style text-to-video U-Net (spatial + temporal attention)
        model = diffusers.UNet3DConditionModel(
            sample_size=size, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
            down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
            up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"), cross_attention_dim=32, attention_head_dim=8,
            norm_num_groups=8).eval()
        x = torch.randn(batch_size, 4, 4, size, size)
        return model, lambda: model(x, t, encoder_hidden_states=text)
    raise SystemExit(f"panconv profile: unknown diffusers architecture {kind!r}")


def config_model(args):
    from .lrp import model_forward

    cfg, model = _common.load(args.config, args.checkpoint, args.device, args.data_root)
    dataset = _common.build_data(cfg, "test", args.data_root) or _common.build_data(cfg, "train", args.data_root)
    if dataset is None:
        raise SystemExit("panconv profile: the config has no data split to take an input batch from")
    x = _common.take(dataset, args.batch_size)["inputs"].to(args.device)
    if args.input_size:
        x = F.interpolate(x, size=(args.input_size, args.input_size), mode="bilinear", align_corners=False)
    return model, lambda: model_forward(model, x)


def main(args: argparse.Namespace) -> int:
    if args.diffusers:
        model, run = diffusers_model(args.diffusers, args.batch_size, args.input_size or 16)
        name = f"diffusers {args.diffusers}"
    elif args.config:
        model, run = config_model(args)
        name = str(args.config)
    else:
        raise SystemExit("panconv profile: give a CONFIG or --diffusers unet|transformer|video-unet")
    model = model.to(args.device)
    results = {"model": name, "parameters": sum(p.numel() for p in model.parameters()),
               "sdpa": profile(model, run, True, args.device), "no_sdpa": profile(model, run, False, args.device)}
    out = Path(args.output)
    _common.write_json(out / "profile.json", results)
    _plot(results, out / "profile.png")
    rows = [[mode, c, r["categories"][c]["ms"], r["categories"][c]["ms"] / max(r["total_ms"], 1e-12),
             r["categories"][c]["flops"]] for mode, r in (("SDPA", results["sdpa"]), ("no SDPA", results["no_sdpa"]))
            for c in CATEGORIES]
    rows += [["SDPA", f"{a['module']} ({a['category']})", a["ms"], a["tokens"], a["flops"]]
             for a in results["sdpa"]["attention"]]
    (out / "profile.html").write_text(_common.html_table(
        f"Operator profile: {name}", ["mode", "category / attention module", "ms", "share / tokens", "FLOPs"], rows,
        ["profile.png"]))
    for mode in ("sdpa", "no_sdpa"):
        r = results[mode]
        shares = ", ".join(f"{c} {r['categories'][c]['ms'] / max(r['total_ms'], 1e-12):.0%}" for c in CATEGORIES)
        print(f"{mode:8s} {r['total_ms']:.1f} ms, {r['total_flops'] / 1e6:.1f} MFLOPs: {shares}")
    print(f"wrote {out}/profile.json, profile.png, profile.html")
    return 0


def _plot(results, path):
    fig, axes = _common.figure(1, 2, figsize=(10, 3.5))
    modes = [("SDPA", results["sdpa"]), ("no SDPA", results["no_sdpa"])]
    for ax, key, label in zip(axes, ("ms", "flops"), ("time (ms)", "FLOPs")):
        bottom = [0.0, 0.0]
        for c in CATEGORIES:
            values = [r["categories"][c][key] for _, r in modes]
            ax.bar([m for m, _ in modes], values, bottom=bottom, label=c.replace("_", " "))
            bottom = [b + v for b, v in zip(bottom, values)]
        ax.set_ylabel(label)
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    _common.save_figure(fig, path)
