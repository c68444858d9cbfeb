"""Regenerate ``fixtures/parity_s4_hyena.pt.gz``: official S4/S4D/Hyena outputs on our weights.

Not a test (pytest does not collect it). Needs the official standalone files, fetched, never
committed, e.g.::

    git -C <state-spaces/s4 checkout> show HEAD:models/s4/s4.py  > /tmp/ref/s4.py
    git -C <state-spaces/s4 checkout> show HEAD:models/s4/s4d.py > /tmp/ref/s4d.py
    git -C <HazyResearch/safari checkout> show HEAD:standalone_hyena.py > /tmp/ref/standalone_hyena.py
    pip install --target /tmp/refdeps einops
    PYTHONPATH=/tmp/refdeps python plugins/sequence/tests/make_parity_fixtures.py /tmp/ref

For each case it builds our module (seeded), copies its weights into the official module
(``to_official`` below is the name mapping), runs the official forward on a fixed input and stores
``{our state_dict, input, official output}`` (float32 and float64). ``test_s4.py`` / ``test_hyena.py``
rebuild our modules from the stored state dicts and compare.
"""

from __future__ import annotations

import gzip
import importlib.util
import sys
import types
from pathlib import Path

import torch

FIXTURE = Path(__file__).parent / "fixtures" / "parity_s4_hyena.pt.gz"
#: the upstream commits the fixture was recorded from
SOURCES = {"state-spaces/s4": "e757cef57d89e448c413de7325ed5601aceaac13",
           "HazyResearch/safari": "02220c69d247e5473616cd053a443ad99fd2559b"}

# ---- the cases: (name, builder of our module, official constructor, sequence length) ----


def ours_s4d(bidirectional=False):
    from panconv_sequence.models.s4 import S4DKernel, S4Mixer
    return S4Mixer(S4DKernel(4, 8, init="lin", disc="zoh", channels=2 if bidirectional else 1), bidirectional)


def ours_s4d_bilinear():
    from panconv_sequence.models.s4 import S4DKernel, S4Mixer
    return S4Mixer(S4DKernel(4, 8, init="inv", disc="bilinear"))


def ours_s4(bidirectional=False):
    from panconv_sequence.models.s4 import S4Kernel, S4Mixer
    return S4Mixer(S4Kernel(4, 8, l_max=32, channels=2 if bidirectional else 1), bidirectional)


def ours_hyena():
    from panconv_sequence.models.hyena import HyenaOperator
    return HyenaOperator(4, l_max=32, order=3, filter_order=8)


CASES = {
    # name: (our builder, how the official module is made, length)
    "s4d_minimal": (ours_s4d, "s4d.S4D(4, d_state=8, transposed=False)", 32),
    "s4d_block": (ours_s4d, "s4.S4Block(4, transposed=False, mode='diag', init='diag-lin', d_state=8, disc='zoh')", 32),
    "s4d_block_bidirectional": (lambda: ours_s4d(True), "s4.S4Block(4, transposed=False, mode='diag', "
                                "init='diag-lin', d_state=8, disc='zoh', bidirectional=True)", 32),
    "s4d_block_bilinear": (ours_s4d_bilinear, "s4.S4Block(4, transposed=False, mode='diag', init='diag-inv', "
                           "d_state=8, disc='bilinear')", 32),
    "s4_block": (ours_s4, "s4.S4Block(4, transposed=False, mode='dplr', init='legs', d_state=8, l_max=32)", 32),
    "s4_block_bidirectional": (lambda: ours_s4(True), "s4.S4Block(4, transposed=False, mode='dplr', init='legs', "
                               "d_state=8, l_max=32, bidirectional=True)", 32),
    "hyena": (ours_hyena, "hyena.HyenaOperator(4, l_max=32, order=3, filter_order=8)", 32),
}


def to_official(name: str, ours: dict) -> dict:
    """Our state dict -> the official module's parameter names and shapes."""
    if name.startswith("hyena"):
        out = {k: v for k, v in ours.items() if k.startswith(("in_proj", "out_proj", "short_filter"))}
        out["filter_fn.bias"] = ours["filter_fn.bias"]
        for i in range(3):
            out[f"filter_fn.implicit_filter.{2 * i}.weight"] = ours[f"filter_fn.implicit_filter.{i}.weight"]
            out[f"filter_fn.implicit_filter.{2 * i}.bias"] = ours[f"filter_fn.implicit_filter.{i}.bias"]
        out["filter_fn.implicit_filter.6.weight"] = ours["filter_fn.head.weight"]
        for i in (1, 3, 5):  # one shared Sin module
            out[f"filter_fn.implicit_filter.{i}.freq"] = ours["filter_fn.act.freq"]
        out["filter_fn.modulation.deltas"] = ours["filter_fn.deltas"]
        return out
    if name == "s4d_minimal":
        return {"D": ours["D"], "kernel.log_dt": ours["kernel.log_dt"], "kernel.C": ours["kernel.C"][0],
                # the minimal S4D writes A = -exp(log_A_real) + i A_imag (the full module: - i A_imag)
                "kernel.log_A_real": ours["kernel.A_real"], "kernel.A_imag": -ours["kernel.A_imag"],
                "output_linear.0.weight": ours["out.weight"][..., None], "output_linear.0.bias": ours["out.bias"]}
    out = {"layer.D": ours["D"][None], "layer.kernel.inv_dt": ours["kernel.log_dt"][:, None],
           "layer.kernel.A_real": ours["kernel.A_real"], "layer.kernel.A_imag": ours["kernel.A_imag"],
           "layer.kernel.B": ours["kernel.B"][None], "layer.kernel.C": ours["kernel.C"],
           "output_linear.0.weight": ours["out.weight"], "output_linear.0.bias": ours["out.bias"]}
    if "kernel.P" in ours:
        out["layer.kernel.P"] = ours["kernel.P"]
        out["layer.kernel.l_kernel"] = torch.tensor(ours_l_max(name))  # C is already C~ for l_max
    return out


def ours_l_max(name: str) -> int:
    return CASES[name][2]


def _load(path: Path, module_name: str):
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def official_modules(ref: Path) -> dict:
    # the standalone files import a logger helper from pytorch_lightning and DropoutNd from the repo: stub them
    lightning = types.ModuleType("pytorch_lightning")
    lightning.utilities = types.ModuleType("pytorch_lightning.utilities")
    lightning.utilities.rank_zero_only = lambda fn: fn
    sys.modules.setdefault("pytorch_lightning", lightning)
    sys.modules.setdefault("pytorch_lightning.utilities", lightning.utilities)
    s4 = _load(ref / "s4.py", "official_s4")
    for name in ("src", "src.models", "src.models.nn"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["src.models.nn"].DropoutNd = s4.DropoutNd
    return {"s4": s4, "s4d": _load(ref / "s4d.py", "official_s4d"),
            "hyena": _load(ref / "standalone_hyena.py", "official_hyena")}


def main(ref: str) -> None:
    modules = official_modules(Path(ref))
    record = {"sources": SOURCES, "cases": {}}
    for name, (build, official, length) in CASES.items():
        torch.manual_seed(0)
        ours = build().eval()
        torch.manual_seed(1)
        theirs = eval(official, {}, modules).eval()  # noqa: S307 - a fixed expression from CASES above
        state = {k: v.detach().clone() for k, v in ours.state_dict().items()}
        missing, unexpected = theirs.load_state_dict(to_official(name, state), strict=False)
        missing = [k for k in missing if not k.endswith(("pos_emb.z", "pos_emb.t"))]
        if missing or unexpected:
            raise SystemExit(f"{name}: mapping incomplete: missing {missing}, unexpected {unexpected}")
        x = torch.randn(2, length, ours.out.in_features if hasattr(ours, "out") else ours.d_model,
                        generator=torch.Generator().manual_seed(2))
        outputs = {}
        for dtype in (torch.float32, torch.float64):
            for module in theirs.modules():  # S4's kernel caches its FFT nodes in the first dtype it ran in
                for cached in ("omega", "z"):
                    if isinstance(getattr(module, cached, None), torch.Tensor) and cached not in module._buffers \
                            and cached not in module._parameters:
                        delattr(module, cached)
            with torch.no_grad():
                y = theirs.to(dtype)(x.to(dtype))
            outputs[str(dtype).removeprefix("torch.")] = (y[0] if isinstance(y, tuple) else y).detach().clone()
        record["cases"][name] = {"state_dict": state, "input": x, "outputs": outputs}
        print(name, {k: tuple(v.shape) for k, v in outputs.items()})
    FIXTURE.parent.mkdir(exist_ok=True)
    with gzip.open(FIXTURE, "wb") as fh:  # the legacy format, gzipped: a few KB
        torch.save(record, fh, _use_new_zipfile_serialization=False)
    print("wrote", FIXTURE, FIXTURE.stat().st_size, "bytes")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/ref")
