
import pytest
import torch

from panconv.errors import DataError
from panconv_audio.datasets import speech
from panconv_audio.datasets.speech import (
    DIGIT_WORDS,
    SpokenDigits,
    SpokenWords,
    asterisk_transcripts,
    load_audio,
    normalize_text,
    save_audio,
    split_of,
)

HAVE_ASTERISK = True
try:
    speech.asterisk_sounds_dir()
    speech.asterisk_transcripts()
except DataError:
    HAVE_ASTERISK = False
HAVE_FLITE = "slt" in speech.flite_voices()
needs_asterisk = pytest.mark.skipif(
    not HAVE_ASTERISK, reason="apt-get install asterisk-core-sounds-en-wav asterisk-core-sounds-en")
needs_flite = pytest.mark.skipif(not HAVE_FLITE, reason="apt-get install flite")


def test_audio_roundtrip_and_resample(tmp_path):
    t = torch.arange(8000) / 8000.0
    wav = 0.5 * torch.sin(2 * torch.pi * 440 * t)
    save_audio(tmp_path / "a.wav", wav, 8000)
    back = load_audio(tmp_path / "a.wav")
    assert back.shape == (8000,) and (back - wav).abs().max() < 1e-3
    assert load_audio(tmp_path / "a.wav", 16000).shape == (16000,)


def test_broken_and_missing_audio_name_the_file(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....garbage")
    with pytest.raises(DataError, match="bad.wav"):
        load_audio(bad)
    with pytest.raises(DataError, match="missing.wav"):
        load_audio(tmp_path / "missing.wav")


def test_transcript_parsing_errors_name_file_and_line(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("; comment\ndigits/1: one\nthis line has no colon\n")
    with pytest.raises(DataError, match=r"t.txt:3"):
        asterisk_transcripts(f)
    f.write_text("; comment\ndigits/1: one\n\nhello: Hello, world.\n")
    assert asterisk_transcripts(f) == {"digits/1": "one", "hello": "Hello, world."}


def test_normalize_text():
    assert normalize_text("Call-Forward on Busy.") == "call forward on busy"
    assert normalize_text("It's 5 o'clock!") == "it's o'clock"


def test_split_is_seeded_and_deterministic():
    keys = [f"k{i}" for i in range(2000)]
    a = [split_of(k, 0) for k in keys]
    assert a == [split_of(k, 0) for k in keys]
    assert a != [split_of(k, 1) for k in keys]
    frac = a.count("train") / len(a)
    assert 0.75 < frac < 0.85


@pytest.mark.parametrize("cls", [SpokenDigits, SpokenWords])
def test_examples_build_and_collate(cls, tmp_path):
    ds = cls(**cls.example(tmp_path))
    assert len(ds) > 0
    batch = ds.collate([ds[i] for i in range(min(3, len(ds)))])
    assert batch["inputs"].dim() == 2 and batch["input_lengths"].max() == batch["inputs"].shape[1]
    assert len(batch["texts"]) == batch["inputs"].shape[0]


@pytest.mark.parametrize("cls", [SpokenDigits, SpokenWords])
def test_broken_examples_raise_data_error(cls, tmp_path):
    with pytest.raises(DataError):
        cls(**cls.broken_example(tmp_path))


@needs_flite
def test_synthesis_is_deterministic(tmp_path):
    a = speech.synthesize("three", "flite/slt", tmp_path / "a.wav", 8000, take=1)
    b = speech.synthesize("three", "flite/slt", tmp_path / "b.wav", 8000, take=1)
    assert a.read_bytes() == b.read_bytes()
    c = speech.synthesize("three", "flite/slt", tmp_path / "c.wav", 8000, take=2)
    assert load_audio(a).numel() != load_audio(c).numel()  # takes vary the speaking rate


def test_unknown_voice_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="unknown voice"):
        speech.synthesize("one", "festival/kal", tmp_path / "x.wav")


@needs_asterisk
def test_real_asterisk_data_and_transcripts():
    tr = asterisk_transcripts()
    assert len(tr) > 500 and tr["digits/7"] == "seven"
    d = speech.asterisk_sounds_dir()
    wav = load_audio(d / "digits" / "7.wav", 8000)
    assert 2000 < wav.numel() < 16000 and wav.abs().max() > 0.05


@needs_asterisk
@needs_flite
def test_spoken_digits_splits_are_disjoint_and_speaker_independent(tmp_path):
    kw = dict(root=tmp_path, voices=["flite/awb", "flite/slt"], takes=2)
    splits = {s: SpokenDigits(split=s, **kw) for s in ("train", "val", "test")}
    paths = {s: {u.path for u in d.items} for s, d in splits.items()}
    assert not (paths["train"] & paths["val"]) and not (paths["train"] & paths["test"])
    assert sum(len(p) for p in paths.values()) == 10 + 2 * 10 * 2
    assert {u.speaker for u in splits["test"].items} == {"asterisk/allison", "flite/slt"}
    assert "flite/slt" not in {u.speaker for u in splits["train"].items}
    assert splits["train"].metadata["num_classes"] == 10
    item = splits["test"][0]
    assert item["texts"] == DIGIT_WORDS[item["labels"]]
    spk = SpokenDigits(split="train", label_by="speaker", **kw)
    assert spk.metadata["num_classes"] == 3 and set(spk.collate([spk[0]])["labels"].tolist()) <= {0, 1, 2}


@needs_asterisk
def test_spoken_words_real_recordings_split(tmp_path):
    parts = {s: SpokenWords(tmp_path, s, voices=[], n_strings=0, real_prefixes=None) for s in ("train", "val", "test")}
    names = [{u.path for u in p.items} for p in parts.values()]
    assert not (names[0] & names[2]) and not (names[1] & names[2])
    assert len(parts["test"]) > 20
    assert all(set(u.text) <= set(" 'abcdefghijklmnopqrstuvwxyz") for p in parts.values() for u in p.items)
