"""The example configs of this plugin validate (``core-run --dry-run``), and their keys are checked."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
CONFIGS = ["audio_squeezeformer_digits.yaml", "audio_conformer_digits.yaml", "audio_cmoe_digits.yaml",
           "audio_mossformer_2spk.yaml", "audio_mossformer_3spk.yaml"]


def _dry_run(name, tmp_path, *overrides):
    cfg = EXAMPLES / name
    if not cfg.is_file():
        pytest.skip(f"{cfg} not in this checkout")
    exe = shutil.which("core-run") or str(Path(sys.executable).with_name("core-run"))
    if not Path(exe).exists():
        pytest.skip("core-run is not installed")
    args = [exe, str(cfg), "--dry-run", "--data-root", str(tmp_path)]
    for override in overrides:
        args += ["--set", override]
    res = subprocess.run(args, capture_output=True, text=True)
    return res.returncode, res.stdout + res.stderr


@pytest.mark.parametrize("name", CONFIGS)
def test_example_config_is_valid(name, tmp_path):
    code, out = _dry_run(name, tmp_path)
    assert code == 0, out
    assert "config is valid" in out


def test_examples_use_the_transform_and_loss_registries():
    squeezeformer = yaml.safe_load((EXAMPLES / "audio_squeezeformer_digits.yaml").read_text())
    assert squeezeformer["data"]["transforms"][0]["type"] == "audio.LogMel"
    assert squeezeformer["model"]["frontend"] is None and squeezeformer["model"]["loss"] == {"type": "audio.CTCLoss"}
    mossformer = yaml.safe_load((EXAMPLES / "audio_mossformer_2spk.yaml").read_text())
    assert mossformer["model"]["loss"] == {"type": "audio.SISNRPIT"}


@pytest.mark.parametrize("name,override,key", [
    ("audio_squeezeformer_digits.yaml", "model.nonexistent_key=3", "model.nonexistent_key"),   # a size variant
    ("audio_squeezeformer_digits.yaml", "model.reduce_idx=9", "reduce_idx"),                   # ValueError
    ("audio_squeezeformer_digits.yaml", "data.transforms=[{type: audio.LogMel, hop: 10}]", "data.transforms.0.hop"),
    ("audio_mossformer_2spk.yaml", "model.loss={type: audio.SISNRPIT, bogus: 1}", "model.loss.bogus"),
    ("audio_mossformer_2spk.yaml", "model.depth=0", "depth"),
])
def test_bad_keys_are_config_errors(name, override, key, tmp_path):
    code, out = _dry_run(name, tmp_path, override)
    assert code != 0 and key in out and "Traceback" not in out, out
