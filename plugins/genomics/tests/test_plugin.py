"""What panconv-genomics registers: every registration imports, plugin.py stays torch-free, and a missing
panconv-sequence (the plugin it builds on) is named in the error together with panconv-genomics."""

import subprocess
import sys
import tomllib
from pathlib import Path

import panconv


def test_every_registration_imports():
    for kind in ("model", "backbone", "neck", "head", "dataset", "evaluator", "kernel", "transform", "loss"):
        for name in panconv.list_components(kind, "genomics.*"):
            assert panconv.get_component(kind, name) is not None, name


def test_listing_imports_no_torch():
    code = "import sys, panconv_genomics.plugin; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_depends_on_panconv_sequence():
    meta = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert any(dep.startswith("panconv-sequence") for dep in meta["dependencies"])


def test_missing_panconv_sequence_is_named_with_both_packages():
    code = ("import sys, warnings; warnings.simplefilter('ignore')\n"
            "sys.modules['panconv_sequence'] = None; sys.modules['panconv_sequence.models'] = None\n"
            "import panconv\n"
            "try:\n    panconv.build('backbone', 'genomics.hyenadna_tiny_1k')\n"
            "except ImportError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    line = out.stdout.strip()
    assert "panconv-sequence" in line and "panconv-genomics" in line and "./plugins/sequence" in line, out.stderr
