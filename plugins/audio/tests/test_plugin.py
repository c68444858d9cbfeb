import importlib
import inspect
import pkgutil
import subprocess
import sys

import pytest
import torch

import panconv
import panconv_audio

EXPECTED = {
    "model": ["audio.Squeezeformer", "audio.squeezeformer_xs", "audio.squeezeformer_s", "audio.squeezeformer_sm",
              "audio.squeezeformer_m", "audio.squeezeformer_ml", "audio.squeezeformer_l", "audio.squeezeformer_nano",
              "audio.Conformer", "audio.conformer_xs", "audio.conformer_nano", "audio.CMoE", "audio.MossFormer",
              "audio.mossformer_2spk", "audio.mossformer_3spk", "audio.mossformer_small"],
    "backbone": ["audio.SqueezeformerEncoder", "audio.UniRepLKNetAudio", "audio.unireplknet_audio_speechcommands"],
    "dataset": ["audio.SpokenDigits", "audio.SpokenWords", "audio.SpeakerMixtures"],
    "evaluator": ["audio.WER", "audio.CER", "audio.SISDR"],
    "transform": ["audio.LogMel", "audio.Fbank", "audio.SpecAugment"],
    "loss": ["audio.SISNRPIT", "audio.CTCLoss"],
}


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_registered_names(kind):
    assert sorted(panconv.list_components(kind, "audio.*")) == sorted(EXPECTED[kind])


def test_plugin_import_is_light():
    code = "import sys, panconv_audio.plugin; assert 'torch' not in sys.modules, 'plugin.py imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True)


def _modules():
    for info in pkgutil.walk_packages(panconv_audio.__path__, "panconv_audio."):
        yield importlib.import_module(info.name)


def test_sizes_are_registered_data_not_factory_functions():
    """No per-size factory function remains in the package: every size is `register(..., args=dict(...))`."""
    variants = [name.split(".", 1)[1] for name in EXPECTED["model"] if name.split(".", 1)[1][0].islower()]
    for module in _modules():
        for name in variants:
            assert not hasattr(module, name), f"{module.__name__}.{name}: sizes are data in plugin.py"


def test_core_imports_are_public():
    public = {"panconv", "panconv.api", "panconv.io", "panconv.errors", "panconv.testing"}
    for module in _modules():
        source = inspect.getsource(module)
        for line in source.splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] in ("import", "from") and words[1].split(".")[0] == "panconv":
                assert words[1] in public, f"{module.__name__}: {line.strip()}"


def test_declared_metadata_inputs_are_constructor_arguments():
    from panconv_audio.datasets.mixtures import SpeakerMixtures
    from panconv_audio.datasets.speech import SpokenDigits, SpokenWords
    from panconv_audio.models.cmoe import CMoE
    from panconv_audio.models.conformer import Conformer
    from panconv_audio.models.mossformer import MossFormer
    from panconv_audio.models.squeezeformer import Squeezeformer

    assert CMoE.metadata_inputs == ("num_classes", "sample_rate")
    assert MossFormer.metadata_inputs == ("num_speakers",)
    assert Squeezeformer.metadata_inputs == Conformer.metadata_inputs == ("sample_rate",)
    for cls in (CMoE, MossFormer, Squeezeformer, Conformer):
        assert set(cls.metadata_inputs) <= set(inspect.signature(cls).parameters), cls
    assert tuple(SpokenDigits.metadata_keys) == ("num_classes", "sample_rate")
    assert tuple(SpokenWords.metadata_keys) == ("sample_rate",)
    assert tuple(SpeakerMixtures.metadata_keys) == ("num_speakers",)


@pytest.mark.parametrize("kind,name", [("transform", "audio.LogMel"), ("transform", "audio.Fbank"),
                                       ("transform", "audio.SpecAugment"), ("loss", "audio.SISNRPIT"),
                                       ("loss", "audio.CTCLoss")])
def test_transforms_and_losses_build(kind, name):
    assert isinstance(panconv.build(kind, name), torch.nn.Module)
