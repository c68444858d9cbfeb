"""What panconv-education registers: every registration imports, and plugin.py stays torch-free."""

import subprocess
import sys

import panconv


def test_every_registration_imports():
    for kind in ("model", "backbone", "neck", "head", "dataset", "evaluator", "kernel", "transform", "loss"):
        for name in panconv.list_components(kind, "education.*"):
            assert panconv.get_component(kind, name) is not None, name


def test_listing_imports_no_torch():
    code = ("import sys, panconv_education.plugin; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
