"""Regenerate tests/fixtures/flatformer_parity.json from the official FlatFormer code (mit-han-lab/flatformer).

    PANCONV_RECORD_FLATFORMER=1 FLATFORMER_REPO=/work/.mirror/mit-han-lab+flatformer/repo \
        .venv/bin/python plugins/pointcloud/tests/make_parity_fixture.py

Runs the official ``mmdet3d/models/middle_encoders/flatformer.py`` (read from the repository with
``git show HEAD:...``, never copied here) on the CPU. What it needs but cannot have here is
replaced by stand-ins that compute the same thing: ``flash_attn_unpadded_qkvpacked_func`` (equal-
length sequences) by ``scaled_dot_product_attention`` on the same packed q/k/v, mmcv's
``auto_fp16`` by the identity (fp32 run), the mmdet3d registry by a no-op, and the
``device="cuda"`` of its frequency table by the CPU. Weights and inputs come from seeded generators
(:func:`parameter_value`, :func:`inputs`), which the test reproduces; the fixture keeps the pillar
coordinates, the four orders, ``flat2win``/``win2flat`` and the official output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import torch

FIXTURE = Path(__file__).parent / "fixtures" / "flatformer_parity.json"
CONFIG = dict(in_channels=8, num_heads=2, num_blocks=1, activation="gelu", window_shape=(4, 4, 1),
              sparse_shape=(24, 24, 1), output_shape=(24, 24), pos_temperature=10000, normalize_pos=False,
              group_size=8)
COUNTS = (37, 29)  # pillars per sample (both above group_size, as in real scenes)


def parameter_value(index: int, shape) -> torch.Tensor:
    """The value of the ``index``-th parameter (official state_dict order)."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1000 + index)) * 0.3


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """Pillar coordinates ``(batch, z, y, x)`` sorted by batch, and features ``(V, C)``."""
    g = torch.Generator().manual_seed(0)
    ny, nx = CONFIG["output_shape"]
    coords = []
    for b, n in enumerate(COUNTS):
        cells = torch.randperm(ny * nx, generator=g)[:n].sort().values
        coords.append(torch.stack([torch.full((n,), b), torch.zeros(n, dtype=torch.long), cells // nx, cells % nx], 1))
    coords = torch.cat(coords)
    x = torch.randn(coords.shape[0], CONFIG["in_channels"], generator=g)
    return coords, x


def _stub_modules() -> None:
    def flash(qkv, cu_seqlens, max_seqlen, dropout_p):
        total, _, heads, dim = qkv.shape
        q, k, v = qkv.view(-1, max_seqlen, 3, heads, dim).permute(2, 0, 3, 1, 4)
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return out.permute(0, 2, 1, 3).reshape(total, heads, dim)

    fa = types.ModuleType("flash_attn")
    fai = types.ModuleType("flash_attn.flash_attn_interface")
    fai.flash_attn_unpadded_qkvpacked_func = flash
    mmcv, runner = types.ModuleType("mmcv"), types.ModuleType("mmcv.runner")
    runner.auto_fp16 = lambda **kwargs: (lambda fn: fn)
    pkg, sub, builder = (types.ModuleType(n) for n in ("official", "official.encoders", "official.builder"))
    pkg.__path__, sub.__path__ = [], []
    builder.MIDDLE_ENCODERS = types.SimpleNamespace(register_module=lambda: (lambda cls: cls))
    sys.modules.update({"flash_attn": fa, "flash_attn.flash_attn_interface": fai, "mmcv": mmcv,
                        "mmcv.runner": runner, "official": pkg, "official.encoders": sub,
                        "official.builder": builder})


def load_official(repo: Path):
    member = "HEAD:mmdet3d/models/middle_encoders/flatformer.py"
    source = subprocess.run(["git", "--git-dir", str(repo), "show", member], capture_output=True, text=True,
                            check=True).stdout
    source = source.replace('device="cuda"', 'device="cpu"')
    _stub_modules()
    module = types.ModuleType("official.encoders.flatformer")
    module.__package__ = "official.encoders"
    exec(compile(source, "official/flatformer.py", "exec"), module.__dict__)  # noqa: S102
    return module


def main() -> None:
    if os.environ.get("PANCONV_RECORD_FLATFORMER") != "1":
        sys.exit("set PANCONV_RECORD_FLATFORMER=1 (and FLATFORMER_REPO) to regenerate the fixture")
    repo = Path(os.environ.get("FLATFORMER_REPO", "/work/.mirror/mit-han-lab+flatformer/repo"))
    official = load_official(repo)
    torch.manual_seed(0)
    model = official.FlatFormer(**CONFIG).eval()
    names = [name for name, _ in model.named_parameters()]
    with torch.no_grad():
        for i, (_, p) in enumerate(model.named_parameters()):
            p.copy_(parameter_value(i, p.shape))
    coords, x = inputs()
    with torch.no_grad():
        pe = model.embedding(coords, x.dtype)
        mappings = model.mapping(coords, len(COUNTS))
        y = x.clone()
        for block in model.block_list:
            y = block(y, pe, mappings)
    record = {
        "config": CONFIG, "counts": COUNTS, "parameter_names": names,
        "coords": coords[:, [0, 2, 3]].tolist(),  # (batch, iy, ix)
        "orders": {k: mappings[k].tolist() for k in ("x", "x_shift", "y", "y_shift")},
        "flat2win": mappings["flat2win"].tolist(), "win2flat": mappings["win2flat"].tolist(),
        "pe_row_5": [round(v, 6) for v in pe[5].tolist()],
        "output": [[round(v, 6) for v in row] for row in y.tolist()],
    }
    FIXTURE.parent.mkdir(exist_ok=True)
    FIXTURE.write_text(json.dumps(record, separators=(",", ":")) + "\n")
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
