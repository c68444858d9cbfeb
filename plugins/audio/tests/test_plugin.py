import subprocess
import sys

import panconv

EXPECTED = {
    "model": ["audio.Squeezeformer", "audio.squeezeformer_xs", "audio.squeezeformer_l", "audio.Conformer",
              "audio.CMoE", "audio.MossFormer", "audio.mossformer_2spk", "audio.mossformer_3spk",
              "audio.mossformer_small"],
    "dataset": ["audio.SpokenDigits", "audio.SpokenWords", "audio.SpeakerMixtures"],
    "evaluator": ["audio.WER", "audio.CER", "audio.SISDR"],
    "transform": ["audio.LogMel", "audio.Fbank", "audio.SpecAugment"],
    "loss": ["audio.SISNRPIT"],
}


def test_registered_names():
    from panconv.registry import KINDS

    names = set(panconv.list_components())
    for kind, expected in EXPECTED.items():
        for name in expected:
            assert name in names, f"{name} ({kind}) not registered; kinds={KINDS}"


def test_plugin_import_is_light():
    code = "import sys, panconv_audio.plugin; assert 'torch' not in sys.modules, 'plugin.py imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_own_entries_load():
    for name in ["audio.Squeezeformer", "audio.squeezeformer_nano", "audio.Conformer", "audio.CMoE"]:
        assert callable(panconv.plugins.get("model", name).load())
    for kind, name in [("dataset", "audio.SpokenDigits"), ("dataset", "audio.SpokenWords"),
                       ("evaluator", "audio.WER"), ("evaluator", "audio.CER"), ("transform", "audio.LogMel"),
                       ("transform", "audio.Fbank"), ("transform", "audio.SpecAugment")]:
        assert callable(panconv.plugins.get(kind, name).load())
