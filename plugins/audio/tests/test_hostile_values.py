"""Out-of-range values (issue 11): every numeric constructor parameter of every registered audio
component declares its range (``typing.Annotated`` + ``annotated_types``), so that a bad value in an
example config or a ``--set`` is stopped at validation (``--dry-run``) with one line naming the key.
"""

import collections.abc
import inspect
import types
import typing
import warnings
from pathlib import Path

import pytest

import panconv
from panconv.cli import main

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
SQUEEZE, CONFORMER, CMOE = "audio_squeezeformer_digits.yaml", "audio_conformer_digits.yaml", "audio_cmoe_digits.yaml"
MOSS2, MOSS3 = "audio_mossformer_2spk.yaml", "audio_mossformer_3spk.yaml"

#: (example config, --set override, key path the error must name, what it must say)
BAD = [
    # models
    (CMOE, "model.num_classes=-1", "model.num_classes", "a value >= 1, got -1"),
    (CMOE, "model.num_experts=0", "model.num_experts", "a value >= 1, got 0"),
    (CMOE, "model.n_mels=0", "model.n_mels", "a value >= 8, got 0"),
    (CMOE, "model.sample_rate=0", "model.sample_rate", "a value > 0, got 0"),
    (CMOE, "model.balance_weight=-0.5", "model.balance_weight", "a value >= 0"),
    (CMOE, "model.expert_hidden=-1", "model.expert_hidden", "a value >= 0"),
    (CMOE, "model.widths=[16, -1]", "model.widths", "item 1: a value >= 1, got -1"),
    (CMOE, "model.widths=[]", "model.widths", "at least 1 items"),
    (CMOE, "model.depths=[2, .inf]", "model.depths", "item 1: int, got float inf"),
    (SQUEEZE, "model.dropout=-1", "model.dropout", "a value >= 0, got -1"),
    (SQUEEZE, "model.dropout=1", "model.dropout", "a value < 1, got 1"),
    (SQUEEZE, "model.dropout=.nan", "model.dropout", "got nan"),
    (SQUEEZE, "model.attn_dropout=1.5", "model.attn_dropout", "a value < 1"),
    (SQUEEZE, "model.n_mels=0", "model.n_mels", "a value >= 4, got 0"),
    (SQUEEZE, "model.sample_rate=0", "model.sample_rate", "a value > 0, got 0"),
    (SQUEEZE, "model.sample_rate=1000000000", "model.sample_rate", "a value <= 192000"),
    (SQUEEZE, "model.num_layers=0", "model.num_layers", "a value >= 1, got 0"),
    (SQUEEZE, "model.d_model=-8", "model.d_model", "a value >= 1, got -8"),
    (SQUEEZE, "model.norm_eps=0", "model.norm_eps", "a value > 0, got 0"),
    (SQUEEZE, "model.bn_momentum=2", "model.bn_momentum", "a value <= 1, got 2"),
    (SQUEEZE, "model.beam_size=0", "model.beam_size", "a value >= 1, got 0"),
    (SQUEEZE, "model.time_masks=-1", "model.time_masks", "a value >= 0, got -1"),
    (SQUEEZE, "model.vocab_size=-1", "model.vocab_size", "a value >= 1, got -1"),
    (SQUEEZE, "model.reduce_idx=0", "model.reduce_idx", "a value >= 1, got 0"),
    (CONFORMER, "model.heads=0", "model.heads", "a value >= 1, got 0"),
    (CONFORMER, "model.kernel_size=-3", "model.kernel_size", "a value >= 1, got -3"),
    (CONFORMER, "model.dropout=-0.1", "model.dropout", "a value >= 0"),
    (MOSS2, "model.num_speakers=0", "model.num_speakers", "a value >= 1, got 0"),
    (MOSS2, "model.depth=-1", "model.depth", "a value >= 1, got -1"),
    (MOSS2, "model.kernel_size=1", "model.kernel_size", "a value >= 2, got 1"),
    (MOSS2, "model.group_size=0", "model.group_size", "a value >= 1, got 0"),
    (MOSS2, "model.expansion_factor=0", "model.expansion_factor", "a value > 0, got 0"),
    (MOSS2, "model.dropout=-1", "model.dropout", "a value >= 0, got -1"),
    # losses (model.loss: {type: ...})
    (MOSS2, "model.loss={type: audio.SISNRPIT, eps: 0}", "model.loss.eps", "a value > 0, got 0"),
    (SQUEEZE, "model.loss={type: audio.CTCLoss, blank: -1}", "model.loss.blank", "a value >= 0, got -1"),
    # data sets
    (CMOE, "data.sample_rate=0", "data.sample_rate", "a value > 0, got 0"),
    (CMOE, "data.takes=-1", "data.takes", "a value >= 0, got -1"),
    (CMOE, "data.takes=100", "data.takes", "a value <= 8, got 100"),
    (CMOE, "data.seed=-1", "data.seed", "a value >= 0, got -1"),
    (CMOE, f"data.seed={2**40}", "data.seed", "a value < 4294967296"),
    (CMOE, "data.max_seconds=0", "data.max_seconds", "a value > 0, got 0"),
    (CMOE, "data.max_seconds=.inf", "data.max_seconds", "a value <= 3600, got inf"),
    (SQUEEZE, "data.sample_rate=-8000", "data.sample_rate", "a value > 0, got -8000"),
    (SQUEEZE, "data.n_strings=-1", "data.n_strings", "a value >= 0, got -1"),
    (SQUEEZE, f"data.n_strings={10**12}", "data.n_strings", "a value <= 100000"),
    (SQUEEZE, "data.max_digits=0", "data.max_digits", "a value >= 1, got 0"),
    (SQUEEZE, "data.max_chars=0", "data.max_chars", "a value >= 1, got 0"),
    (MOSS2, "data.num_speakers=0", "data.num_speakers", "a value >= 1, got 0"),
    (MOSS3, "data.num_speakers=40", "data.num_speakers", "a value <= 8, got 40"),
    (MOSS2, "data.sample_rate=0", "data.sample_rate", "a value > 0, got 0"),
    (MOSS2, "data.num_mixtures=0", "data.num_mixtures", "a value >= 1, got 0"),
    (MOSS2, "data.num_eval_mixtures=-5", "data.num_eval_mixtures", "a value >= 1, got -5"),
    (MOSS2, "data.segment_seconds=0", "data.segment_seconds", "a value > 0, got 0"),
    (MOSS2, "data.segment_seconds=-1.5", "data.segment_seconds", "a value > 0, got -1.5"),
    (MOSS2, "data.snr_range=[5]", "data.snr_range", "at least 2 items, got 1"),
    (MOSS2, "data.snr_range=[-5, .nan]", "data.snr_range", "item 1"),
    (MOSS2, "data.snr_range=[-5, 1000]", "data.snr_range", "item 1: a value <= 100, got 1000"),
    (MOSS2, "data.min_seconds=-1", "data.min_seconds", "a value >= 0, got -1"),
    (MOSS2, "data.split_fractions=[0.8, 0.1, .inf]", "data.split_fractions", "item 2: a value <= 1, got inf"),
    (MOSS2, "data.split_fractions=[0.8, 0.2]", "data.split_fractions", "at least 3 items, got 2"),
    (MOSS2, "data.max_prompts=0", "data.max_prompts", "a value >= 1, got 0"),
    # transforms (data.transforms: [{type: ...}])
    (SQUEEZE, "data.transforms=[{type: audio.LogMel, n_mels: 0}]", "data.transforms.0.n_mels", "a value >= 1, got 0"),
    (SQUEEZE, "data.transforms=[{type: audio.LogMel, sample_rate: 0}]", "data.transforms.0.sample_rate",
     "a value > 0, got 0"),
    (SQUEEZE, "data.transforms=[{type: audio.LogMel, hop_ms: -10}]", "data.transforms.0.hop_ms", "a value > 0"),
    (SQUEEZE, "data.transforms=[{type: audio.LogMel, n_fft: 0}]", "data.transforms.0.n_fft", "a value >= 1, got 0"),
    (SQUEEZE, "data.transforms=[{type: audio.Fbank, win_ms: .inf}]", "data.transforms.0.win_ms",
     "a value <= 1000, got inf"),
    (SQUEEZE, "data.transforms=[{type: audio.Fbank, dither: -1}]", "data.transforms.0.dither", "a value >= 0"),
    (SQUEEZE, "data.transforms=[{type: audio.SpecAugment, time_masks: -1}]", "data.transforms.0.time_masks",
     "a value >= 0, got -1"),
    (SQUEEZE, "data.transforms=[{type: audio.SpecAugment, time_ratio: 2}]", "data.transforms.0.time_ratio",
     "a value <= 1, got 2"),
    # evaluators (eval.evaluators: [{type: ...}])
    (MOSS2, "eval.evaluators=[{type: audio.SISDR, eps: -1}]", "eval.evaluators.0.eps", "a value > 0, got -1"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("example,override,key,says", BAD, ids=[f"{b[0][:-5]}:{b[1]}" for b in BAD])
def test_bad_value_is_stopped_at_validation_with_one_line(example, override, key, says, tmp_path, monkeypatch,
                                                           capsys):
    cfg = EXAMPLES / example
    if not cfg.is_file():
        pytest.skip(f"{cfg} not in this checkout")
    monkeypatch.chdir(tmp_path)  # the examples' relative work_dir
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["run", str(cfg), "--dry-run", "--data-root", str(tmp_path), "--set", override])
    err = capsys.readouterr().err
    assert code == 2, err[:2000]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err[:2000]
    assert f"{key}:" in lines[0] and says in lines[0], lines[0]
    assert "Traceback" not in err and len(lines[0]) < 400


@pytest.mark.timeout(60)
@pytest.mark.parametrize("example", [SQUEEZE, CONFORMER, CMOE, MOSS2, MOSS3])
def test_the_examples_themselves_pass(example, tmp_path, monkeypatch, capsys):
    """The declared ranges admit every value the shipped configs use (and the size variants' args)."""
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(EXAMPLES / example), "--dry-run", "--data-root", str(tmp_path)]) == 0, \
        capsys.readouterr().err


def _unconstrained(hint) -> bool:
    """Whether ``hint`` has an ``int``/``float`` (alone, optional or as list items) without a declared range."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        base = args[0]
        if base in (int, float):
            return not hint.__metadata__
        return _unconstrained(base)
    if hint in (int, float):
        return True
    if origin in (typing.Union, types.UnionType, list, tuple, collections.abc.Sequence):
        return any(_unconstrained(a) for a in args if a is not Ellipsis)
    return False


def _registered():
    for kind in ("model", "backbone", "dataset", "evaluator", "transform", "loss"):
        for name in panconv.list_components(kind, "audio.*"):
            yield kind, name


@pytest.mark.parametrize("kind,name", list(_registered()))
def test_every_numeric_parameter_declares_its_range(kind, name):
    factory = panconv.get_component(kind, name)
    cls = getattr(factory, "factory", factory)
    hints = typing.get_type_hints(cls.__init__, include_extras=True)
    params = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "root", "split")]
    numeric = [p for p in params if p in hints and _unconstrained(hints[p])]
    assert not numeric, f"{name}: numeric parameters without a declared range: {numeric}"
    for p in params:  # and every parameter is annotated (a hint the validator could not resolve would be dropped)
        assert p in hints, f"{name}.{p} has no resolvable annotation"


def test_registered_defaults_and_size_variants_are_in_range():
    """The validator's check on every default (of the class and of every registered size variant)."""
    from annotated_types import BaseMetadata, GroupedMetadata

    def violates(value, hint) -> bool:
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin is typing.Annotated:
            flat = [m for item in hint.__metadata__
                    for m in (item if isinstance(item, GroupedMetadata) else [item]) if isinstance(m, BaseMetadata)]
            checks = {"gt": lambda v, b: v > b, "ge": lambda v, b: v >= b, "lt": lambda v, b: v < b,
                      "le": lambda v, b: v <= b}
            for m in flat:
                for attr, ok in checks.items():
                    bound = getattr(m, attr, None)
                    if bound is not None and isinstance(value, (int, float)) and not ok(value, bound):
                        return True
            return violates(value, args[0])
        if origin in (typing.Union, types.UnionType):
            return all(violates(value, a) for a in args) if value is not None else False
        if origin in (list, tuple, collections.abc.Sequence) and isinstance(value, (list, tuple)) and args:
            return any(violates(v, args[0]) for v in value)
        return False

    for kind, name in _registered():
        factory = panconv.get_component(kind, name)
        cls = getattr(factory, "factory", factory)
        hints = typing.get_type_hints(cls.__init__, include_extras=True)
        for p in inspect.signature(factory).parameters.values():
            if p.default is not p.empty and p.name in hints:
                assert not violates(p.default, hints[p.name]), f"{name}.{p.name}={p.default!r} is out of its range"


@pytest.mark.parametrize("build,match", [
    # the runtime checks stay for callers that bypass config validation
    (lambda: panconv.build("transform", "audio.LogMel", sample_rate=8000, win_ms=0.05), "at least one sample"),
    (lambda: panconv.build("transform", "audio.LogMel", sample_rate=8000, n_fft=16), "n_fft=16 is shorter"),
    (lambda: panconv.build("transform", "audio.Fbank", dither=float("inf")), "dither"),
    (lambda: panconv.build("loss", "audio.SISNRPIT", eps=0.0), "eps"),
    (lambda: panconv.build("evaluator", "audio.SISDR", eps=-1.0), "eps"),
    (lambda: panconv.create_model("audio.CMoE", num_classes=3, balance_weight=float("inf")), "balance_weight"),
    (lambda: panconv.create_model("audio.MossFormer", depth=1, dim=8, encoder_dim=8, expansion_factor=float("inf")),
     "expansion_factor"),
    (lambda: panconv.build("dataset", "audio.SpeakerMixtures", snr_range=(5.0, -5.0)), "snr_range"),
    (lambda: panconv.build("dataset", "audio.SpeakerMixtures", num_speakers=12), "num_speakers=12"),
    (lambda: panconv.build("dataset", "audio.SpeakerMixtures", split_fractions=(0, 0, 0)), "split_fractions"),
    (lambda: panconv.build("dataset", "audio.SpokenDigits", takes=9), "takes"),
    (lambda: panconv.build("dataset", "audio.SpokenWords", max_seconds=1e-6), "less than one sample"),
])
def test_runtime_checks_raise_value_error(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_pit_refuses_a_factorial_blow_up():
    import torch

    from panconv_audio.losses import pit_si_snr

    with pytest.raises(ValueError, match="at most 8 sources"):
        pit_si_snr(torch.zeros(1, 12, 16), torch.zeros(1, 12, 16))
