"""The example configs of this plugin validate against the registered constructors."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
CONFIGS = ["audio_squeezeformer_digits.yaml", "audio_conformer_digits.yaml", "audio_cmoe_digits.yaml"]


@pytest.mark.parametrize("name", CONFIGS)
def test_example_config_is_valid(name, tmp_path):
    cfg = EXAMPLES / name
    if not cfg.is_file():
        pytest.skip(f"{cfg} not in this checkout")
    exe = shutil.which("core-run") or str(Path(sys.executable).with_name("core-run"))
    if not Path(exe).exists():
        pytest.skip("core-run is not installed")
    res = subprocess.run([exe, str(cfg), "--dry-run", "--data-root", str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "config is valid" in res.stdout + res.stderr
