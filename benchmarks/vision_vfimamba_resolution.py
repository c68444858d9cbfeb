"""VFIMamba vs a windowed-attention interpolator of equal size: throughput as the resolution grows.

The paper's claim (Zhang et al., NeurIPS 2024) is that the S6 scan mixes the two frames over the whole image
at a cost linear in the number of tokens, so VFIMamba keeps up with attention-based interpolators (EMA-VFI's
inter-frame windowed attention) at high resolution while seeing further. Measured here, in one run, on the
same inputs:

* ``vfimamba``: ``vision.VFIMamba`` (Mixed-SSM blocks: interleaved four-direction S6 scans; the scan takes the
  kernel's dispatch: the parallel PyTorch scan on a CPU, the Triton kernel on a GPU);
* ``window_attn``: the same network with every Mixed-SSM block's ``SS2D`` replaced by an inter-frame
  windowed attention of (within 1 %) the same parameter count (:class:`WindowAttentionMixer`: the two frames'
  tokens of each ``window x window`` window attend to each other, as EMA-VFI's inter-frame attention;
  multi-head, ``scaled_dot_product_attention``). Everything else (conv stages, CAB, flow heads,
  refinement) is shared, so the ratio isolates the inter-frame mixer;
* ``global_attn`` (``--global-attention``): the same with one window covering the whole feature map
  (quadratic in tokens), the baseline the linear-cost argument is about;
* ``conv``: ``block="conv"``, the equal-size plain-conv mixer (a lower bound on the mixer's cost).

Printed per resolution: milliseconds per forward (inference, ``torch.no_grad``, median of ``--repeats``) and
the ratio ``peer / vfimamba`` (> 1: VFIMamba is faster), plus the parameter counts. On a CPU this times
PyTorch paths only (the Triton kernel needs a GPU; its interpreter timings are meaningless).

    OMP_NUM_THREADS=1 python benchmarks/vision_vfimamba_resolution.py --sizes 64 128 256 --repeats 3
    python benchmarks/vision_vfimamba_resolution.py --device cuda --sizes 256 512 1024 2048
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from _timing import peak_cuda_memory, time_call
from torch import nn

from panconv_vision.models.vfimamba import VFIMamba, _ss2d_params


class WindowAttentionMixer(nn.Module):
    """Inter-frame windowed multi-head attention, ``(N, 2, H, W, C)`` -> same: the ``2 * window^2`` tokens of
    the two frames in each window attend to each other (``window=0``: one window over the whole map). Its
    attention width is chosen so that it has as many parameters as ``SS2D(dim, d_state, ssm_ratio)``."""

    def __init__(self, dim: int, d_state: int = 16, ssm_ratio: float = 2.0, window: int = 8, head_dim: int = 32):
        super().__init__()
        target = _ss2d_params(dim, d_state, ssm_ratio)
        self.heads = max(1, round((target - dim) / (4 * dim + 3) / head_dim))   # qkv: 3(dim h + h); proj: h dim + dim
        hidden = max(self.heads, round((target - dim) / (4 * dim + 3) / self.heads) * self.heads)
        self.window = window
        self.qkv = nn.Linear(dim, 3 * hidden)
        self.proj = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, h, w, c = x.shape
        wh, ww = (self.window, self.window) if self.window else (h, w)
        ph, pw = -h % wh, -w % ww
        if ph or pw:
            x = F.pad(x, (0, 0, 0, pw, 0, ph))
        hb, wb = x.shape[2] // wh, x.shape[3] // ww
        tokens = x.view(n, t, hb, wh, wb, ww, c).permute(0, 2, 4, 1, 3, 5, 6).reshape(n * hb * wb, t * wh * ww, c)
        q, k, v = self.qkv(tokens).view(tokens.shape[0], tokens.shape[1], 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
        y = self.proj(y).view(n, hb, wb, t, wh, ww, c).permute(0, 3, 1, 4, 2, 5, 6).reshape(n, t, hb * wh,
                                                                                               wb * ww, c)
        return y[:, :, :h, :w]


def build(kind: str, embed_dim: int, depths: tuple[int, ...], window: int) -> VFIMamba:
    torch.manual_seed(0)
    model = VFIMamba(embed_dim=embed_dim, depths=depths, block="conv" if kind == "conv" else "mamba")
    if kind in ("window_attn", "global_attn"):
        for stage in model.features.stages:
            for block in stage:
                if hasattr(block, "mixer"):
                    mixer = block.mixer
                    block.mixer = WindowAttentionMixer(mixer.dim, mixer.d_state, mixer.inner / mixer.dim,
                                                       window if kind == "window_attn" else 0)
    return model.eval()


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256], help="square frame sizes (x32)")
    parser.add_argument("--embed-dim", type=int, default=16, help="F (16: VFIMamba-S, 32: VFIMamba)")
    parser.add_argument("--depths", type=int, nargs=5, default=[2, 2, 2, 3, 3])
    parser.add_argument("--window", type=int, default=8, help="attention window on the feature maps")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--global-attention", action="store_true", help="also time one whole-map window")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if any(s % 32 for s in args.sizes):
        parser.error("--sizes must be multiples of 32 (five stages)")
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print("no CUDA device: skipping")
        return
    kinds = ["vfimamba", "window_attn"] + (["global_attn"] if args.global_attention else []) + ["conv"]
    models = {k: build(k, args.embed_dim, tuple(args.depths), args.window).to(args.device) for k in kinds}
    base = count(models["vfimamba"])
    print(f"F={args.embed_dim} depths={tuple(args.depths)} window={args.window} batch={args.batch} "
          f"device={args.device} threads={torch.get_num_threads()}")
    print("params: " + ", ".join(f"{k} {count(m):,} ({count(m) / base:.4f}x)" for k, m in models.items()))
    columns = ["size", *[f"{k} ms" for k in kinds], *[f"{k} / vfimamba" for k in kinds[1:]]]
    if cuda:
        columns.append("peak MiB (" + ", ".join(kinds) + ")")
    header = "| " + " | ".join(columns) + " |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    g = torch.Generator().manual_seed(0)
    for size in args.sizes:
        frames = torch.rand(args.batch, 2, 3, size, size, generator=g).to(args.device)
        times, peaks = {}, {}
        for kind, model in models.items():
            def run(model=model, frames=frames):
                with torch.no_grad():
                    model.interpolate(frames[:, 0], frames[:, 1])
            times[kind] = time_call(run, iters=args.repeats, warmup=1, cuda=cuda)
            if cuda:
                peaks[kind] = peak_cuda_memory(run) / 2 ** 20
        row = [f"{size}x{size}"] + [f"{1e3 * times[k]:.1f}" for k in kinds] + \
            [f"{times[k] / times['vfimamba']:.2f}" for k in kinds[1:]]
        if cuda:
            row.append(", ".join(f"{peaks[k]:.0f}" for k in kinds))
        print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
