"""The conformance kit's dataset checks, run in-process: pass, the failures they name, and no leftovers."""

import glob
import os
import tempfile

import pytest

import panconv
from panconv.builtin.components import GaussianBlobs
from panconv.testing.conformance import CHECKS, run_check


class SilentOnBrokenFiles(GaussianBlobs):
    """Reads the broken example without complaint: the kit must report it."""

    @classmethod
    def broken_example(cls, tmp_dir):
        return {"dim": 2, "num_classes": 3}  # no file: generated data, nothing to reject


class RaisesValueError(GaussianBlobs):
    @staticmethod
    def _read_csv(path, dim, num_classes):
        raise ValueError(f"bad line in {path}")


class _Plugin:
    @panconv.hookimpl
    def panconv_register_datasets(self, register):
        register("Silent", SilentOnBrokenFiles)
        register("ValueErr", RaisesValueError)


@pytest.fixture
def manager():
    from panconv import plugins

    manager = plugins.reset(entry_points=False)
    manager.collect()
    manager.add_plugin(_Plugin(), "kitcheck")
    return manager  # conftest's autouse _fresh_manager resets it afterwards


def _entry(manager, qualname):
    return next(e for e in manager.entries() if e.qualname == qualname)


def _kit_dirs():
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "panconv-kit-*")))


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
