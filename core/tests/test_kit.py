"""The conformance kit, run in-process on tiny components declared here: the checks pass on conforming
components and name the component and the failure on broken ones; capability checks are chosen by
the protocol a component implements; the pytest plugin is lazy and opt-in."""

import glob
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import panconv
from panconv.api import Backbone, FeatureInfo
from panconv.builtin.components import GaussianBlobs
from panconv.testing import CHECKS, checks_for, run_check

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- datasets

class SilentOnBrokenFiles(GaussianBlobs):
    """Reads the broken example without complaint: the kit must report it."""

    @classmethod
    def broken_example(cls, tmp_dir):
        return {"dim": 2, "num_classes": 3}  # no file: generated data, nothing to reject


class RaisesValueError(GaussianBlobs):
    @staticmethod
    def _read_csv(path, dim, num_classes):
        raise ValueError(f"bad line in {path}")


# --------------------------------------------------------------------------- components that mutate state

class _Vector(Backbone):
    """Base of the tiny backbones below: ``(N, 4)`` vectors in, one ``(N, 4)`` feature out."""

    def __init__(self, dim: int = 4):
        super().__init__()
        self.dim = dim
        self.lin = nn.Linear(dim, dim)
        self.feature_info = [FeatureInfo(dim, 1, "lin")]

    def forward(self, x):
        return [self.lin(x)]

    def example_inputs(self, batch_size: int = 2):
        return torch.randn(batch_size, self.dim)


class CountsCalls(_Vector):
    """Counts forward calls in a buffer, also in eval mode: the kit must report it."""

    def __init__(self, dim: int = 4):
        super().__init__(dim)
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x):
        self.calls += 1
        return super().forward(x)


class NormalisesWithBatchNorm(_Vector):
    """BatchNorm updates running statistics in train mode only: allowed."""

    def __init__(self, dim: int = 4):
        super().__init__(dim)
        self.norm = nn.BatchNorm1d(dim)

    def forward(self, x):
        return [self.norm(self.lin(x))]


class TracksMean(_Vector):
    """A running mean that is not named running_*: allowed only when declared in running_buffers."""

    def __init__(self, dim: int = 4):
        super().__init__(dim)
        self.register_buffer("mean_estimate", torch.zeros(dim))

    def forward(self, x):
        if self.training:
            self.mean_estimate.mul_(0.9).add_(0.1 * x.detach().mean(0))
        return [self.lin(x - self.mean_estimate)]


class TracksMeanDeclared(TracksMean):
    running_buffers = ("mean_estimate",)


class DecaysWeights(_Vector):
    """Shrinks its own weights in every train-mode forward: never allowed."""

    def forward(self, x):
        if self.training:
            self.lin.weight.data.mul_(0.99)
        return super().forward(x)


class TypeSensitiveInit(_Vector):
    """Initialises differently from a tuple and from a list of the same values: same shapes,
    different values after a YAML round trip (a shape-only comparison passes it)."""

    def __init__(self, dim: int = 4, scales: tuple = (1.0,)):
        super().__init__(dim)
        with torch.no_grad():
            self.lin.weight.mul_(scales[0] if isinstance(scales, tuple) else 2 * scales[0])

    @classmethod
    def example_config(cls):
        return {"dim": 4, "scales": (0.5,)}


class DeclaresUnknownMetadata(_Vector):
    metadata_inputs = ("num_classes",)


# --------------------------------------------------------------------------- reparameterize capability

def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d, use_running_stats: bool = True):
    mean = bn.running_mean if use_running_stats else torch.zeros_like(bn.running_mean)
    var = bn.running_var if use_running_stats else torch.ones_like(bn.running_var)
    std = (var + bn.eps).sqrt()
    return conv.weight * (bn.weight / std).view(-1, 1, 1, 1), bn.bias - mean * bn.weight / std


class RepConv(Backbone):
    """A 3x3 conv-BN and a 1x1 conv-BN in parallel; ``reparameterize()`` folds them into one 3x3 conv."""

    def __init__(self, channels: int = 4):
        super().__init__()
        self.channels = channels
        self.conv3, self.bn3 = nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
        self.conv1, self.bn1 = nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels)
        self.fused = None
        self.feature_info = [FeatureInfo(channels, 1, "conv")]

    def forward(self, x):
        if self.fused is not None:
            return [self.fused(x)]
        return [self.bn3(self.conv3(x)) + self.bn1(self.conv1(x))]

    def example_inputs(self, batch_size: int = 2):
        return torch.randn(batch_size, self.channels, 8, 8)

    def _folded(self):
        k3, b3 = _fold(self.conv3, self.bn3)
        k1, b1 = _fold(self.conv1, self.bn1)
        return k3 + F.pad(k1, (1, 1, 1, 1)), b3 + b1

    @torch.no_grad()
    def reparameterize(self):
        kernel, bias = self._folded()
        self.fused = nn.Conv2d(self.channels, self.channels, 3, padding=1)
        self.fused.weight.copy_(kernel)
        self.fused.bias.copy_(bias)
        del self.conv3, self.bn3, self.conv1, self.bn1
        return self


class RepConvDropsSmallBranch(RepConv):
    def _folded(self):
        return _fold(self.conv3, self.bn3)


class RepConvIgnoresRunningStats(RepConv):
    """Folds the BatchNorms as if freshly initialised: right only before training."""

    def _folded(self):
        k3, b3 = _fold(self.conv3, self.bn3, use_running_stats=False)
        k1, b1 = _fold(self.conv1, self.bn1, use_running_stats=False)
        return k3 + F.pad(k1, (1, 1, 1, 1)), b3 + b1


class RepConvReturnsNone(RepConv):
    def reparameterize(self):
        super().reparameterize()


class RepConvDoesNothing(RepConv):
    def reparameterize(self):
        return self


# --------------------------------------------------------------------------- recurrent capability

class CausalConv(Backbone):
    """Depthwise causal convolution over time, ``(N, C, L)``; ``step`` keeps the last K-1 inputs."""

    def __init__(self, channels: int = 3, kernel_size: int = 4):
        super().__init__()
        self.channels, self.kernel_size = channels, kernel_size
        self.conv = nn.Conv1d(channels, channels, kernel_size, groups=channels)
        self.feature_info = [FeatureInfo(channels, 1, "conv")]

    def forward(self, x):
        return [self.conv(F.pad(x, (self.kernel_size - 1, 0)))]

    def example_inputs(self, batch_size: int = 2):
        return torch.randn(batch_size, self.channels, 10)

    def initial_state(self, batch_size: int):
        return torch.zeros(batch_size, self.channels, self.kernel_size - 1)

    def step(self, x_t, state):
        window = torch.cat([state, x_t.unsqueeze(-1)], dim=-1)
        y_t = (window * self.conv.weight.squeeze(1)).sum(-1) + self.conv.bias
        return [y_t], window[..., 1:]


class CausalConvStaleState(CausalConv):
    def step(self, x_t, state):
        outputs, _ = super().step(x_t, state)
        return outputs, state


class CausalConvTimeFirst(CausalConv):
    """The same in ``(N, L, C)`` layout, declared by ``time_dim = 1``."""

    time_dim = 1

    def forward(self, x):
        return [out.transpose(1, 2) for out in super().forward(x.transpose(1, 2))]

    def example_inputs(self, batch_size: int = 2):
        return torch.randn(batch_size, 10, self.channels)


class StepOnly(_Vector):
    """Has ``step`` but no ``initial_state``: not the recurrent protocol."""

    def step(self, x_t, state):
        return x_t, state


COMPONENTS = {
    "Silent": ("dataset", SilentOnBrokenFiles), "ValueErr": ("dataset", RaisesValueError),
    "CountsCalls": ("backbone", CountsCalls), "BatchNorm": ("backbone", NormalisesWithBatchNorm),
    "TracksMean": ("backbone", TracksMean), "TracksMeanDeclared": ("backbone", TracksMeanDeclared),
    "DecaysWeights": ("backbone", DecaysWeights), "TypeSensitive": ("backbone", TypeSensitiveInit),
    "UnknownMetadata": ("backbone", DeclaresUnknownMetadata),
    "RepConv": ("backbone", RepConv), "RepConvDropsSmallBranch": ("backbone", RepConvDropsSmallBranch),
    "RepConvIgnoresRunningStats": ("backbone", RepConvIgnoresRunningStats),
    "RepConvReturnsNone": ("backbone", RepConvReturnsNone), "RepConvDoesNothing": ("backbone", RepConvDoesNothing),
    "CausalConv": ("backbone", CausalConv), "CausalConvStaleState": ("backbone", CausalConvStaleState),
    "CausalConvTimeFirst": ("backbone", CausalConvTimeFirst), "StepOnly": ("backbone", StepOnly),
}


class _Plugin:
    @panconv.hookimpl
    def panconv_register_models(self, register):
        for name, (kind, cls) in COMPONENTS.items():
            if kind != "dataset":
                register(name, cls, kind=kind)

    @panconv.hookimpl
    def panconv_register_datasets(self, register):
        for name, (kind, cls) in COMPONENTS.items():
            if kind == "dataset":
                register(name, cls)


@pytest.fixture
def manager():
    from panconv import plugins

    manager = plugins.reset(entry_points=False)
    manager.collect()
    manager.add_plugin(_Plugin(), "kitcheck")
    return manager  # conftest's autouse _fresh_manager resets it afterwards


def _entry(manager, qualname):
    return next(e for e in manager.entries() if e.qualname == qualname)


def _run(manager, name, check):
    return run_check(_entry(manager, f"kitcheck.{name}"), check)


def _kit_dirs():
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "panconv-kit-*")))


# --------------------------------------------------------------------------- tests: the public surface

def test_the_kit_is_importable_from_panconv_testing():
    import panconv.testing as testing
    from panconv.testing import conformance

    for name in ("check_plugin", "run_check", "checks_for", "plugin_entries", "describe_checks",
                 "describe_capabilities"):
        assert getattr(testing, name) is getattr(conformance, name)
    # the checks live in modules named by what they check
    assert {c.fn.__module__.rsplit(".", 1)[-1] for kind in CHECKS.values() for c in kind.values()} == {
        "models", "capabilities", "datasets", "evaluators", "kernels"}


# --------------------------------------------------------------------------- tests: datasets

def test_every_dataset_check_passes_on_a_conforming_dataset(manager):
    before = _kit_dirs()
    results = [run_check(_entry(manager, "core.GaussianBlobs"), name) for name in CHECKS["dataset"]]
    assert [r.status for r in results] == ["passed"] * len(CHECKS["dataset"]), [r.message for r in results]
    assert _kit_dirs() == before  # the example files are removed after each check


@pytest.mark.parametrize("qualname, message", [
    ("kitcheck.Silent", "kitcheck.Silent: malformed_file: building from broken_example() did not raise"),
    ("kitcheck.ValueErr", "kitcheck.ValueErr: malformed_file: raised ValueError instead of DataError"),
])
def test_malformed_file_check_names_component_and_failure(manager, qualname, message):
    before = _kit_dirs()
    result = run_check(_entry(manager, qualname), "malformed_file")
    assert result.status == "failed"
    assert result.message.startswith(message), result.message
    assert _kit_dirs() == before


# --------------------------------------------------------------------------- tests: forward does not mutate

@pytest.mark.parametrize("name", ["BatchNorm", "TracksMeanDeclared", "RepConv"])
def test_forward_may_update_declared_running_statistics_in_train_mode(manager, name):
    result = _run(manager, name, "forward_does_not_mutate")
    assert result.status == "passed", result.message


@pytest.mark.parametrize("name, message", [
    ("CountsCalls", "forward in eval mode changed calls"),
    ("TracksMean", "forward in train mode changed mean_estimate"),
    ("DecaysWeights", "forward in train mode changed lin.weight"),
])
def test_forward_that_mutates_state_fails_naming_the_tensor(manager, name, message):
    result = _run(manager, name, "forward_does_not_mutate")
    assert result.status == "failed"
    assert result.message.startswith(f"kitcheck.{name}: forward_does_not_mutate: {message}"), result.message


# --------------------------------------------------------------------------- tests: config round trip, metadata

def test_config_round_trip_compares_values_not_only_shapes(manager):
    result = _run(manager, "TypeSensitive", "config_round_trip")
    assert result.status == "failed"
    assert "differs in lin.weight" in result.message, result.message
    assert _run(manager, "RepConv", "config_round_trip").status == "passed"


def test_metadata_inputs_must_name_constructor_parameters(manager):
    result = _run(manager, "UnknownMetadata", "metadata_inputs")
    assert result.status == "failed"
    assert "declares num_classes, which the constructor does not take" in result.message
    assert run_check(_entry(manager, "core.MLP"), "metadata_inputs").status == "passed"


# --------------------------------------------------------------------------- tests: capabilities

def test_capability_checks_are_chosen_by_the_declared_protocol(manager):
    def names(name):
        return set(checks_for(_entry(manager, f"kitcheck.{name}")))

    assert "reparameterize" in names("RepConv") and "recurrent_mode" not in names("RepConv")
    assert "recurrent_mode" in names("CausalConv") and "reparameterize" not in names("CausalConv")
    assert not {"reparameterize", "recurrent_mode"} & names("StepOnly")
    assert names("RepConv") - {"reparameterize"} == names("StepOnly")  # every other check stays


def test_reparameterize_check_passes_on_a_correct_fold(manager):
    result = _run(manager, "RepConv", "reparameterize")
    assert result.status == "passed", result.message


@pytest.mark.parametrize("name, message", [
    ("RepConvDropsSmallBranch", "outputs differ after reparameterize(): max abs diff"),
    ("RepConvIgnoresRunningStats", "outputs differ after reparameterize(): max abs diff"),
    ("RepConvReturnsNone", "reparameterize() must convert in place and return self, returned NoneType"),
    ("RepConvDoesNothing", "reparameterize() changed nothing"),
])
def test_reparameterize_check_names_the_failure(manager, name, message):
    result = _run(manager, name, "reparameterize")
    assert result.status == "failed"
    assert result.message.startswith(f"kitcheck.{name}: reparameterize: {message}"), result.message


@pytest.mark.parametrize("name", ["CausalConv", "CausalConvTimeFirst"])
def test_recurrent_mode_equals_convolution_mode(manager, name):
    result = _run(manager, name, "recurrent_mode")
    assert result.status == "passed", result.message


def test_recurrent_mode_check_catches_a_stale_state(manager):
    result = _run(manager, "CausalConvStaleState", "recurrent_mode")
    assert result.status == "failed"
    assert "recurrent mode differs from convolution mode: max abs diff" in result.message, result.message


def test_vision_reparameterisable_backbones_get_the_capability_check():
    """RepLKNet and UniRepLKNet declare reparameterize(): the kit checks them; ConvNeXt does not."""
    from panconv.plugins import get_manager

    manager = get_manager()
    manager.collect()
    if manager.records.get("vision") is None or manager.records["vision"].status != "ok":
        pytest.skip("panconv-vision is not installed")
    with_capability = {e.name for e in manager.entries(["backbone", "neck", "head", "model"])
                       if e.plugin == "vision" and "reparameterize" in checks_for(e)}
    assert {"RepLKNet", "UniRepLKNet"} <= with_capability and "ConvNeXt" not in with_capability


# --------------------------------------------------------------------------- tests: kernels under the interpreter

KERNEL_MODULE = '''
import torch
import triton
import triton.language as tl

from panconv.api import Kernel


@triton.jit
def _scale_add(x_ptr, y_ptr, out_ptr, alpha, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask)
    y = tl.load(y_ptr + offs, mask=mask)
    tl.store(out_ptr + offs, alpha * x + y + OFFSET, mask=mask)


def _inputs(device, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(300, generator=g).to(device, dtype), torch.randn(300, generator=g).to(device, dtype), 2.0), {}


axpy = Kernel("kitcheck.axpy", reference=lambda x, y, alpha: alpha * x + y, make_inputs=_inputs)


@axpy.implementation("triton", backend="triton", dtypes=(torch.float32,))
def axpy_triton(x, y, alpha):
    out = torch.empty_like(x)
    _scale_add[(triton.cdiv(x.numel(), 128),)](x, y, out, alpha, x.numel(), BLOCK=128)
    return out
'''


@pytest.mark.parametrize("offset, status", [(0.0, "passed"), pytest.param(0.5, "failed", marks=pytest.mark.slow)])
def test_triton_kernel_checked_under_the_interpreter_without_touching_this_process(tmp_path, monkeypatch, offset,
                                                                                   status):
    pytest.importorskip("triton")
    if torch.cuda.is_available():
        pytest.skip("with a GPU the kernel runs on it")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    module = f"kit_axpy_{str(offset).replace('.', '_')}"
    (tmp_path / f"{module}.py").write_text(KERNEL_MODULE.replace("OFFSET", repr(offset)))
    monkeypatch.syspath_prepend(str(tmp_path))

    class KernelPlugin:
        @panconv.hookimpl
        def panconv_register_kernels(self, register):
            register("axpy", f"{module}:axpy")

    from panconv import plugins

    manager = plugins.reset(entry_points=False)
    manager.collect()
    manager.add_plugin(KernelPlugin(), "kitkernel")
    result = run_check(_entry(manager, "kitkernel.axpy"), "implementations_match_reference")
    assert result.status == status, result.message
    if status == "failed":
        assert result.message.startswith("kitkernel.axpy: implementations_match_reference: triton on cpu/"
                                         "torch.float32: max abs diff 0.5"), result.message
    assert "TRITON_INTERPRET" not in os.environ


# --------------------------------------------------------------------------- tests: the pytest plugin

def _pytest(*args, cwd, env=None):
    env = {k: v for k, v in {**os.environ, **(env or {})}.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_pytest_plugin_is_lazy_and_leaves_unrelated_runs_alone(tmp_path):
    (tmp_path / "test_unrelated.py").write_text(textwrap.dedent("""\
        import os
        import sys

        def test_no_torch_and_no_triton_interpreter():
            assert "torch" not in sys.modules
            assert "panconv.testing.conformance" not in sys.modules
            assert "TRITON_INTERPRET" not in os.environ
    """))
    result = _pytest("-q", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:]
    assert "1 passed" in result.stdout


def test_pytest_plugin_shares_the_slow_marker_and_the_single_thread_fixture(tmp_path):
    (tmp_path / "test_helpers.py").write_text(textwrap.dedent("""\
        import pytest
        import torch

        @pytest.mark.slow
        def test_marked_slow():
            pass

        def test_single_thread(single_thread):
            assert torch.get_num_threads() == 1
    """))
    result = _pytest("-q", "--strict-markers", cwd=tmp_path, env={"OMP_NUM_THREADS": "2"})
    assert result.returncode == 0, result.stdout[-2000:]
    assert "2 passed" in result.stdout


def test_panconv_plugin_option_runs_the_kit_without_any_test_file(tmp_path):
    (tmp_path / "test_elsewhere.py").write_text("def test_not_collected():\n    raise AssertionError\n")
    result = _pytest("-q", "--panconv-plugin", "core", cwd=tmp_path)
    from panconv.plugins import get_manager
    from panconv.testing import plugin_entries

    get_manager().collect()
    expected = sum(len(checks_for(e)) for e in plugin_entries("core"))
    assert result.returncode == 0, result.stdout[-3000:]
    assert f"{expected} passed" in result.stdout, result.stdout[-3000:]


def test_conformance_module_without_plugin_name_is_a_usage_error(tmp_path):
    (tmp_path / "test_conformance.py").write_text(
        "from panconv.testing.pytest_plugin import test_conformance  # noqa: F401\n")
    result = _pytest("-q", cwd=tmp_path)
    assert result.returncode != 0
    assert "sets no PANCONV_PLUGIN" in result.stdout + result.stderr


# --------------------------------------------------------------------------- docs

def test_conformance_docs_are_generated_from_the_kit():
    from panconv.docs import conformance_markdown

    page = REPO / "docs" / "conformance.md"
    assert page.read_text() == conformance_markdown(), "regenerate: python -m panconv.docs docs"
    for name in ("reparameterize", "recurrent", "initial_state(batch_size)", "step(x_t, state)", "running_buffers"):
        assert name in page.read_text()


def test_import_official_imports_from_the_named_folders_or_gives_none(tmp_path, monkeypatch):
    from panconv.testing import import_official

    (tmp_path / "paper_official_mod.py").write_text("VALUE = 42\n")
    monkeypatch.delenv("PAPER_OFFICIAL", raising=False)
    assert import_official("PAPER_OFFICIAL", "paper_official_mod") is None          # unset: the test skips
    monkeypatch.setenv("PAPER_OFFICIAL", f"{tmp_path / 'missing'}{os.pathsep}{tmp_path}")
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "paper_official_mod", raising=False)
    assert import_official("PAPER_OFFICIAL", "paper_official_mod").VALUE == 42
    assert sys.path[:2] == [str(tmp_path / "missing"), str(tmp_path)]               # first, in the given order
    assert import_official("PAPER_OFFICIAL", "no_such_official_module") is None


def test_load_script_loads_a_file_outside_any_package_without_running_its_main(tmp_path):
    from panconv.testing import load_script

    script = tmp_path / "bench_thing.py"
    script.write_text("def f(x):\n    return 2 * x\n\nif __name__ == '__main__':\n    raise SystemExit('ran main')\n")
    module = load_script(script)
    assert module.f(21) == 42 and module.__name__ == "bench_thing"
    assert load_script(script, "other_name").__name__ == "other_name"
    with pytest.raises(ImportError, match="notes.txt"):
        load_script(tmp_path / "notes.txt")
