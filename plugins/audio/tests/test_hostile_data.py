"""Hostile data for the audio loaders (issue 11), generated here (no committed blobs).

Every malformed input (missing, corrupt, empty or non-finite sound files, crafted headers, transcript
files that are not UTF-8 ``name: text`` lines, corrupt archives, transcripts naming recordings that are
not there, empty splits) must give one readable line, a :class:`panconv.errors.DataError` naming the
file (and line), within a time limit; never a traceback of some other type, a hang or a huge allocation.
The loaders are pointed at temporary trees (monkeypatching the module-level asterisk paths).
"""

import codecs
import gzip
import struct
import warnings

import numpy as np
import pytest
import soundfile as sf

from panconv.cli import main
from panconv.errors import DataError
from panconv_audio.datasets import mixtures, speech
from panconv_audio.datasets.mixtures import SpeakerMixtures
from panconv_audio.datasets.speech import (
    DIGIT_WORDS,
    MAX_SAMPLES,
    SpokenDigits,
    SpokenWords,
    asterisk_transcripts,
    check_audio,
    load_audio,
    split_of,
)

RATE = 8000


# --------------------------------------------------------------------------- generators


def tone(seconds=0.3, hz=220.0, rate=RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def write_wav(path, audio=None, rate=RATE, subtype="PCM_16"):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), tone() if audio is None else audio, rate, subtype=subtype, format="WAV")
    return path


def pcm_wav_bytes(payload: bytes, rate=RATE, channels=1, bits=16, claimed_size=None) -> bytes:
    """A RIFF/WAVE PCM file written by hand, so that the header can lie."""
    size = len(payload) if claimed_size is None else claimed_size
    align = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 1, channels, rate, (rate * align) % 2**32, align, bits)
    return (b"RIFF" + struct.pack("<I", min(36 + size, 2**32 - 1)) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", size) + payload)


def non_finite(value) -> np.ndarray:
    audio = tone()
    audio[100] = value
    return audio


#: name -> function(path) that writes a hostile sound file at path
BAD_AUDIO = {
    "zero bytes": lambda p: p.write_bytes(b""),
    "text, not RIFF": lambda p: p.write_text("this is not a RIFF file\n"),
    "random bytes": lambda p: p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()),
    "RIFF magic, garbage after": lambda p: p.write_bytes(b"RIFF" + b"\xff" * 60),
    "header cut in the fmt chunk": lambda p: p.write_bytes(pcm_wav_bytes(b"\0\1" * 50)[:20]),
    "header only, no samples": lambda p: p.write_bytes(pcm_wav_bytes(b"")),
    "sample rate 0 in the header": lambda p: p.write_bytes(pcm_wav_bytes(b"\0\1" * 50, rate=0)),
    "sample rate 2**31 in the header": lambda p: p.write_bytes(pcm_wav_bytes(b"\0\1" * 50, rate=2**31)),
    "NaN sample": lambda p: write_wav(p, non_finite(np.nan), subtype="FLOAT"),
    "+inf sample": lambda p: write_wav(p, non_finite(np.inf), subtype="FLOAT"),
    "-inf sample (64-bit)": lambda p: write_wav(p, non_finite(-np.inf), subtype="DOUBLE"),
    # 20000 samples at 1 Hz would be 160M samples at 8 kHz: refused before resampling allocates them
    "1 Hz header (resampling bomb)": lambda p: p.write_bytes(pcm_wav_bytes(b"\0\1" * 20000, rate=1)),
    # a rate coprime with 8 kHz needs an 8000 x 7919 polyphase filter bank
    "7919 Hz header (filter-bank bomb)": lambda p: p.write_bytes(pcm_wav_bytes(b"\0\1" * 2000, rate=7919)),
    "a directory named .wav": lambda p: p.mkdir(),
}
#: cases whose header is fine: only reading the samples finds the problem
SAMPLE_LEVEL = {"NaN sample", "+inf sample", "-inf sample (64-bit)", "1 Hz header (resampling bomb)",
                "7919 Hz header (filter-bank bomb)"}


def utf16_with_bom(text):
    return codecs.BOM_UTF16_LE + text.encode("utf-16-le")


TRANSCRIPT = "; transcripts\n" + "".join(f"digits/{i}: {w}\n" for i, w in enumerate(DIGIT_WORDS))

#: name -> (file name, bytes, what the one-line error must contain besides the file name)
BAD_TRANSCRIPTS = {
    "UTF-16 with BOM": ("t.txt", utf16_with_bom(TRANSCRIPT), ":1: UTF-16 text"),
    "UTF-16 without BOM": ("t.txt", TRANSCRIPT.encode("utf-16-le"), ":1: NUL bytes"),
    "Latin-1": ("t.txt", (TRANSCRIPT + "digits/x: caf\xe9\n").encode("latin-1"), ":12: not UTF-8 text (byte 0xe9"),
    "binary": ("t.txt", bytes(range(256)) * 16, "not UTF-8 text"),
    "binary without NUL": ("t.txt", bytes(range(128, 256)) * 16, ":1: not UTF-8 text (byte 0x80"),
    "NUL bytes in a line": ("t.txt", (TRANSCRIPT + "digits/x: a\0b\n").encode(), ":12: NUL bytes"),
    "no colon": ("t.txt", (TRANSCRIPT + "digits/1 one\n").encode(), ":12: expected 'name: transcript'"),
    "space in the name": ("t.txt", b"digits 1: one\n", ":1: expected 'name: transcript'"),
    "path traversal in the name": ("t.txt", b"../../etc/passwd: x\n", ":1: expected 'name: transcript'"),
    "5 MB line": ("t.txt", b"digits/1: " + b"x" * 5_000_000 + b"\n", ":1: line longer than"),
    "corrupt gzip": ("t.txt.gz", b"\x1f\x8b\x08\x00" + b"\xff" * 64, "corrupt or truncated gzip archive"),
    "not gzip at all": ("t.txt.gz", TRANSCRIPT.encode(), "corrupt or truncated gzip archive"),
    "truncated gzip": ("t.txt.gz", gzip.compress(TRANSCRIPT.encode() * 50)[:-30], "corrupt or truncated gzip"),
    "gzip of UTF-16": ("t.txt.gz", gzip.compress(utf16_with_bom(TRANSCRIPT)), ":1: UTF-16 text"),
    "gzip bomb of one line": ("t.txt.gz", gzip.compress(b"a" * 50_000_000), ":1: line longer than"),
}


def assert_one_line(exc_info, *needles, limit=500):
    message = str(exc_info.value)
    assert exc_info.type is DataError, f"{exc_info.type.__name__}: {message[:500]}"
    assert "\n" not in message and len(message) <= limit, message[:2000]
    for needle in needles:
        assert str(needle) in message, message


def asterisk_tree(base, digits=range(10), prompts=()):
    """A fake asterisk layout: ``digits/<i>.wav`` tones and top-level prompts of 1.2 s."""
    for i in digits:
        write_wav(base / "digits" / f"{i}.wav", tone(0.3, 200 + 40 * i))
    for k, name in enumerate(prompts):
        write_wav(base / f"{name}.wav", tone(1.2, 150 + 30 * k))
    return base


# --------------------------------------------------------------------------- sound files


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", list(BAD_AUDIO))
def test_hostile_sound_file_is_one_line_naming_it(case, tmp_path):
    path = tmp_path / "hostile.wav"
    BAD_AUDIO[case](path)
    with pytest.raises(DataError) as exc:
        load_audio(path, RATE)
    assert_one_line(exc, path)
    if case not in SAMPLE_LEVEL:  # the header check of the loaders' first pass sees it too
        with pytest.raises(DataError) as exc:
            check_audio(path)
        assert_one_line(exc, path)


@pytest.mark.timeout(30)
def test_non_finite_samples_are_named_with_their_time(tmp_path):
    path = write_wav(tmp_path / "nan.wav", non_finite(np.nan), subtype="FLOAT")
    with pytest.raises(DataError) as exc:
        load_audio(path)
    assert_one_line(exc, path, "NaN or inf", "0.013 s")


@pytest.mark.timeout(30)
def test_a_header_claiming_more_data_than_the_file_holds_reads_what_is_there(tmp_path):
    path = tmp_path / "liar.wav"
    path.write_bytes(pcm_wav_bytes(b"\0\1" * 50, claimed_size=0xFFFFFFF0))
    assert load_audio(path, RATE).numel() == 50  # libsndfile bounds the frames by the file size


def test_bounds_are_sane():
    assert MAX_SAMPLES >= 3600 * 16000  # an hour at 16 kHz still loads


# --------------------------------------------------------------------------- transcripts


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", list(BAD_TRANSCRIPTS))
def test_hostile_transcript_file_is_one_line_naming_it(case, tmp_path, monkeypatch):
    name, content, says = BAD_TRANSCRIPTS[case]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as exc:
        asterisk_transcripts(path)
    assert_one_line(exc, path, says)
    # the same through SpokenWords, found at the module-level default path
    ast = asterisk_tree(tmp_path / "asterisk")
    monkeypatch.setattr(speech, "ASTERISK_TRANSCRIPTS", str(path))
    monkeypatch.setattr(speech, "ASTERISK_DIRS", (str(ast),))
    with pytest.raises(DataError) as exc:
        SpokenWords(tmp_path / "root", "train", voices=[], n_strings=0)
    assert_one_line(exc, path, says)


@pytest.mark.timeout(30)
def test_a_utf8_bom_and_crlf_are_fine(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(codecs.BOM_UTF8 + TRANSCRIPT.replace("\n", "\r\n").encode())
    assert asterisk_transcripts(path)["digits/0"] == "zero" and len(asterisk_transcripts(path)) == 10


# --------------------------------------------------------------------------- missing recordings


@pytest.mark.timeout(30)
def test_spoken_words_names_a_missing_recording_when_none_is_there(tmp_path):
    ast = asterisk_tree(tmp_path / "asterisk", digits=[0])          # only digits/0 (the layout marker)
    path = tmp_path / "t.txt"
    path.write_text("digits/5: five\ndigits/6: six\n")
    with pytest.raises(DataError) as exc:
        SpokenWords(tmp_path / "root", "train", voices=[], n_strings=0, asterisk_dir=str(ast), transcripts=str(path))
    assert_one_line(exc, ast / "digits" / "5.wav", "not found", path)


@pytest.mark.timeout(30)
def test_spoken_words_skips_a_missing_recording_with_a_warning_naming_it(tmp_path):
    ast = asterisk_tree(tmp_path / "asterisk")
    path = tmp_path / "t.txt"
    path.write_text(TRANSCRIPT + "digits/ten: ten\n")
    with pytest.warns(UserWarning, match=r"digits/ten\.wav"):
        ds = SpokenWords(tmp_path / "root", "train", voices=[], n_strings=0, asterisk_dir=str(ast),
                         transcripts=str(path))
    assert len(ds) > 0 and all(u.path.is_file() for u in ds.items)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("missing", [0, 4])
def test_spoken_digits_names_a_missing_recording(missing, tmp_path, monkeypatch):
    ast = asterisk_tree(tmp_path / "asterisk")
    (ast / "digits" / f"{missing}.wav").unlink()
    monkeypatch.setattr(speech, "ASTERISK_DIRS", (str(ast),))
    with pytest.raises(DataError) as exc:
        SpokenDigits(tmp_path / "root", "test", voices=[], takes=1, test_speakers=("asterisk/allison",))
    assert_one_line(exc, ast / "digits" / f"{missing}.wav", "not found")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", [c for c in BAD_AUDIO if c not in SAMPLE_LEVEL])
def test_spoken_digits_names_a_corrupt_recording(case, tmp_path):
    ast = asterisk_tree(tmp_path / "asterisk")
    bad = ast / "digits" / "3.wav"
    bad.unlink()
    BAD_AUDIO[case](bad)
    with pytest.raises(DataError) as exc:
        SpokenDigits(tmp_path / "root", "test", voices=[], takes=1, test_speakers=("asterisk/allison",),
                     asterisk_dir=str(ast))
    assert_one_line(exc, bad)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_spoken_digits_item_with_non_finite_audio_names_the_file(value, tmp_path):
    ast = asterisk_tree(tmp_path / "asterisk")
    bad = write_wav(ast / "digits" / "7.wav", non_finite(value), subtype="FLOAT")
    ds = SpokenDigits(tmp_path / "root", "test", voices=[], takes=1, test_speakers=("asterisk/allison",),
                      asterisk_dir=str(ast))
    index = [u.path for u in ds.items].index(bad)
    with pytest.raises(DataError) as exc:
        ds[index]
    assert_one_line(exc, bad, "NaN or inf")


# --------------------------------------------------------------------------- empty splits


@pytest.mark.timeout(30)
def test_empty_training_split_of_spoken_digits(tmp_path):
    ast = asterisk_tree(tmp_path / "asterisk")
    with pytest.raises(DataError) as exc:  # every recording is in the test split and there are no voices
        SpokenDigits(tmp_path / "root", "train", voices=[], takes=1, test_speakers=("asterisk/allison",),
                     asterisk_dir=str(ast))
    assert_one_line(exc, "SpokenDigits: split 'train' is empty")


@pytest.mark.timeout(30)
def test_empty_training_split_of_spoken_words(tmp_path):
    with pytest.raises(DataError) as exc:
        SpokenWords(tmp_path / "root", "train", voices=[], n_strings=0, include_real=False)
    assert_one_line(exc, "SpokenWords: split 'train' is empty")


@pytest.mark.timeout(30)
def test_empty_training_split_of_speaker_mixtures(tmp_path):
    kwargs = SpeakerMixtures.example(tmp_path)
    with pytest.raises(DataError) as exc:
        SpeakerMixtures(split="train", split_fractions=(0.0, 0.5, 0.5), **kwargs)
    assert_one_line(exc, "split 'train' has utterances of 0 speakers")


# --------------------------------------------------------------------------- SpeakerMixtures


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", list(BAD_AUDIO))
def test_speaker_mixtures_names_a_hostile_utterance(case, tmp_path):
    kwargs = SpeakerMixtures.example(tmp_path)
    bad = tmp_path / "speech" / "spk1" / "utt03.wav"
    bad.unlink()
    BAD_AUDIO[case](bad)
    with pytest.raises(DataError) as exc:
        for split in SpeakerMixtures.splits:  # the file is in one of the splits
            SpeakerMixtures(split=split, **kwargs)
    assert_one_line(exc, bad)


@pytest.mark.timeout(30)
def test_speaker_mixtures_with_no_utterances_names_the_folder(tmp_path):
    (tmp_path / "speech" / "spk0").mkdir(parents=True)
    with pytest.raises(DataError) as exc:
        SpeakerMixtures(root=tmp_path / "root", speech_dir=str(tmp_path / "speech"))
    assert_one_line(exc, tmp_path / "speech", "no <speaker>/<utterance>.wav")


def _builtin_corpus(tmp_path, monkeypatch, transcript: bytes, prompts=("hello", "goodbye", "welcome", "thanks")):
    ast = asterisk_tree(tmp_path / "asterisk", prompts=prompts)
    texts = tmp_path / "core-sounds-en.txt.gz"
    texts.write_bytes(gzip.compress(transcript))
    monkeypatch.setattr(mixtures, "ASTERISK_DIR", ast)
    monkeypatch.setattr(mixtures, "ASTERISK_TEXTS", texts)
    return ast, texts


PROMPTS = b"; prompts\nhello: Hello there.\ngoodbye: Goodbye now.\nwelcome: Welcome back.\nthanks: Thank you.\n"


@pytest.mark.timeout(30)
def test_speaker_mixtures_builtin_corpus_in_a_temp_tree(tmp_path, monkeypatch):
    _builtin_corpus(tmp_path, monkeypatch, PROMPTS)
    ds = SpeakerMixtures(root=tmp_path / "root", speakers=["allison"], num_speakers=1, num_mixtures=2,
                         split_fractions=(1.0, 0.0, 0.0))
    assert len(ds) == 2 and ds[0]["sources"].shape[0] == 1


@pytest.mark.timeout(30)
def test_speaker_mixtures_names_the_missing_recording(tmp_path, monkeypatch):
    ast, texts = _builtin_corpus(tmp_path, monkeypatch, b"absent: Not recorded.\nalso-absent: Nor this.\n")
    with pytest.raises(DataError) as exc:
        SpeakerMixtures(root=tmp_path / "root", speakers=["allison"], num_speakers=1)
    assert_one_line(exc, ast / "absent.wav", "not found", texts)


@pytest.mark.timeout(30)
def test_speaker_mixtures_skips_a_missing_recording_among_present_ones(tmp_path, monkeypatch):
    _builtin_corpus(tmp_path, monkeypatch, PROMPTS + b"absent: Not recorded.\n")
    ds = SpeakerMixtures(root=tmp_path / "root", speakers=["allison"], num_speakers=1, num_mixtures=2,
                         split_fractions=(1.0, 0.0, 0.0))
    assert {u for u, _ in ds.utterances["allison"]} == {"hello", "goodbye", "welcome", "thanks"}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case,says", [("UTF-16 with BOM", ":1: UTF-16 text"), ("Latin-1", ":12: not UTF-8 text"),
                                       ("no colon", ":12: expected 'name: transcript'"),
                                       ("5 MB line", ":1: line longer than")])
def test_speaker_mixtures_names_a_hostile_transcript_file(case, says, tmp_path, monkeypatch):
    _, content, _ = BAD_TRANSCRIPTS[case]
    _, texts = _builtin_corpus(tmp_path, monkeypatch, content)
    with pytest.raises(DataError) as exc:
        SpeakerMixtures(root=tmp_path / "root", speakers=["allison"], num_speakers=1)
    assert_one_line(exc, f"{texts}{says}")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", [c for c in BAD_AUDIO if c not in SAMPLE_LEVEL and c != "a directory named .wav"])
def test_speaker_mixtures_names_a_corrupt_prompt_recording(case, tmp_path, monkeypatch):
    ast, _ = _builtin_corpus(tmp_path, monkeypatch, PROMPTS)
    bad = ast / "welcome.wav"
    bad.unlink()
    BAD_AUDIO[case](bad)
    with pytest.raises(DataError) as exc:
        SpeakerMixtures(root=tmp_path / "root", speakers=["allison"], num_speakers=1)
    assert_one_line(exc, bad)


# --------------------------------------------------------------------------- through the CLI


CONFIG = """\
model: {{type: audio.CMoE, num_experts: 2, widths: [4], depths: [1], n_mels: 16, spec_augment: false}}
data:
  type: audio.SpokenDigits
  voices: []
  takes: 1
  test_speakers: []
  asterisk_dir: {ast}
  sample_rate: 8000
  batch_size: 4
  num_workers: 0
  splits: {{train: train, val: null, test: null}}
train: {{epochs: 1, optimizer: {{type: SGD, lr: 0.01}}}}
run: {{work_dir: {work}, device: cpu, threads: 1}}
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", ["text, not RIFF", "header only, no samples", "NaN sample"])
def test_a_run_on_hostile_audio_fails_with_one_line(case, tmp_path, capsys):
    ast = asterisk_tree(tmp_path / "asterisk")
    digit = next(d for d in range(10) if split_of(f"asterisk/allison|{d}|0", 0, (0.9, 0.1, 0.0)) == "train")
    bad = ast / "digits" / f"{digit}.wav"
    bad.unlink()
    BAD_AUDIO[case](bad)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(CONFIG.format(ast=ast, work=tmp_path / "work"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["run", str(cfg), "--data-root", str(tmp_path / "root")])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err[-2000:]
    assert str(bad) in lines[0] and "Traceback" not in err, err[-2000:]
