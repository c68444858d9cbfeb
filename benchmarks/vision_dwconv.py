"""``vision.dwconv2d_large`` against PyTorch's native depthwise convolution, per kernel size.

    python benchmarks/vision_dwconv.py                         # CPU: the dispatch (reference) vs F.conv2d
    python benchmarks/vision_dwconv.py --device cuda --dtype bf16 --batch 64 --channels 384 --size 56

The peer is ``torch.nn.functional.conv2d(groups=C, padding=K//2)`` (cuDNN on a GPU, oneDNN on the CPU),
measured in the same run on the same tensors. Printed: time of ours / time of the peer (below 1 is
faster) for the forward and for forward + backward (input and weight gradients), and the peak memory
ratio on CUDA. On the CPU the dispatch runs the reference (``F.conv2d``), so the ratio measures the
dispatch overhead; the Triton implementation runs on CUDA (the issue's target: >= 2x faster than the
native depthwise conv at 31x31 in fp16/bf16). ``--impl triton`` forces the Triton path (CUDA only).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from _timing import peak_cuda_memory, time_call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--kernels", default="7,13,17,21,27,31")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--impl", default="dispatch", choices=["dispatch", "triton"])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from panconv_vision.kernels.dwconv_large import dwconv2d_large, dwconv2d_large_triton

    ours_fn = dwconv2d_large_triton if args.impl == "triton" else dwconv2d_large
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    dev = args.device
    print(f"device {dev} ({torch.cuda.get_device_name() if dev == 'cuda' else 'cpu'}), dtype {args.dtype}, "
          f"x = ({args.batch}, {args.channels}, {args.size}, {args.size}), impl {args.impl}")
    print(f"{'K':>3} {'selected':>12} {'fwd ours ms':>12} {'fwd peer ms':>12} {'fwd ratio':>9} "
          f"{'f+b ours ms':>12} {'f+b peer ms':>12} {'f+b ratio':>9} {'mem ratio':>9}")
    for k in (int(s) for s in args.kernels.split(",")):
        bench_one(k, args, dtype, ours_fn, dwconv2d_large)


def bench_one(k: int, args, dtype, ours_fn, dispatch) -> None:
    dev, c = args.device, args.channels
    g = torch.Generator().manual_seed(k)
    x = torch.randn(args.batch, c, args.size, args.size, generator=g).to(dev, dtype)
    w = (torch.randn(c, 1, k, k, generator=g) / k).to(dev, dtype)
    b = torch.randn(c, generator=g).to(dev, dtype)
    impl = dispatch.select(x, w, b)
    xg, wg, bg = (t.clone().requires_grad_(True) for t in (x, w, b))

    def ours_fwd():
        with torch.no_grad():
            ours_fn(x, w, b)

    def peer_fwd():
        with torch.no_grad():
            F.conv2d(x, w, b, padding=k // 2, groups=c)

    def ours_fb():
        ours_fn(xg, wg, bg).sum().backward()

    def peer_fb():
        F.conv2d(xg, wg, bg, padding=k // 2, groups=c).sum().backward()

    t = [time_call(f, iters=args.iters, warmup=args.warmup, cuda=dev == "cuda")
         for f in (ours_fwd, peer_fwd, ours_fb, peer_fb)]
    mem = peak_cuda_memory(ours_fb), peak_cuda_memory(peer_fb)
    mem_ratio = f"{mem[0] / mem[1]:9.2f}" if mem[1] else f"{'-':>9}"
    name = impl.name if impl is not None else "reference"
    print(f"{k:>3} {name:>12} {t[0] * 1e3:12.2f} {t[1] * 1e3:12.2f} {t[0] / t[1]:9.2f} {t[2] * 1e3:12.2f} "
          f"{t[3] * 1e3:12.2f} {t[2] / t[3]:9.2f} {mem_ratio}")


if __name__ == "__main__":
    main()
