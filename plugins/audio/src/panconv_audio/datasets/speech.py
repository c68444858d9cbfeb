"""Real speech without downloads: audio I/O, data discovery, speech synthesis, spoken-word data sets.

Sources (all installed from Debian, nothing is downloaded):

* ``asterisk-core-sounds-en-wav``: 568 recordings of one real speaker (Allison, 8 kHz):
  digits, letters, prompts. ``asterisk-core-sounds-en`` ships their transcripts
  (``core-sounds-en.txt.gz``).
* ``flite``: voices ``awb``, ``rms``, ``slt`` (built from CMU ARCTIC speakers) and ``kal16``.
* ``espeak-ng``: formant voices with accents and speaker variants (``en-us+f3``, ...).

A *voice* is a string ``"flite/<voice>"`` or ``"espeak/<voice>[+variant]"``; a *take* varies the
speaking rate and pitch of one voice deterministically, so synthesis is reproducible.
Synthesised audio is cached under ``<data root>/audio/tts``.

Shared helpers (the separation data sets reuse them): :func:`load_audio`, :func:`save_audio`,
:func:`flite_voices`, :func:`synthesize`, :func:`asterisk_sounds_dir`, :func:`asterisk_transcripts`,
:func:`read_text_lines`, :func:`speech_cache_dir`, :func:`split_of`.

Malformed data (a missing, unreadable, empty or non-finite sound file, a transcript file that is
not UTF-8 text or not ``name: transcript`` lines, a corrupt archive, a split left empty) raises a
one-line :class:`~panconv.errors.DataError` naming the file (and line). What one file can make the
loaders allocate is bounded (:data:`MAX_SAMPLES`, :data:`MAX_TEXT_BYTES`).
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import math
import os
import random
import re
import shutil
import subprocess
import tempfile
import warnings
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from annotated_types import Ge, Interval

from panconv.api import Dataset
from panconv.errors import DataError
from panconv.io import atomic_write

# --------------------------------------------------------------------------- audio I/O

#: the most samples (per channel, before and after resampling) one sound file may give: 2**27, 4.6 hours at 8 kHz
MAX_SAMPLES = 1 << 27
#: resampling ``p`` Hz to ``q`` Hz builds a ``(q / gcd) x (p / gcd)`` filter bank: refuse rates that make it larger
MAX_RESAMPLE_KERNEL = 1 << 24


def short(text: object, limit: int = 200) -> str:
    """``text`` on one line, cut to ``limit`` characters (what an error message may quote of a file)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_exists(path: Path) -> None:
    if path.is_dir():
        raise DataError(f"{path}: a directory, not a sound file; move it out of the data")
    if not path.is_file():
        raise DataError(f"{path}: audio file not found; install the package that ships it or rebuild the cache")


def load_audio(path: str | os.PathLike, sample_rate: int | None = None) -> torch.Tensor:
    """Read a sound file as a mono float32 tensor ``(T,)``, resampled to ``sample_rate`` if given.

    Uses soundfile (``torchaudio.load`` needs torchcodec). A missing, unreadable or empty file, one
    with NaN/inf samples, or one longer than :data:`MAX_SAMPLES` raises DataError naming it.
    """
    import soundfile as sf

    path = Path(path)
    _check_exists(path)
    try:
        with sf.SoundFile(str(path)) as fh:
            sr, frames = fh.samplerate, fh.frames
            if frames > MAX_SAMPLES:
                raise DataError(f"{path}: {frames} samples, more than the {MAX_SAMPLES} a sound file may hold here; "
                                f"cut it into utterances")
            if sample_rate is not None and sr != sample_rate:
                _check_resampling(path, frames, sr, sample_rate)
            data = fh.read(dtype="float32", always_2d=True)
    except DataError:
        raise
    except Exception as exc:  # soundfile raises RuntimeError/LibsndfileError/TypeError
        raise DataError(f"{path}: unreadable audio ({type(exc).__name__}: {short(exc)}); "
                        f"delete or replace the file") from None
    if data.shape[0] == 0:
        raise DataError(f"{path}: audio file holds no samples; delete or replace the file")
    finite = np.isfinite(data).all(axis=1)
    if not finite.all():
        first = int(np.argmin(finite))
        raise DataError(f"{path}: audio holds NaN or inf samples ({int((~finite).sum())} frames, the first at "
                        f"{first / sr:.3f} s); delete or replace the file")
    wav = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1)))
    if sample_rate is not None and sr != sample_rate:
        wav = resample(wav, sr, sample_rate)
    return wav


def _check_resampling(path: Path, frames: int, orig_sr: int, new_sr: int) -> None:
    """Refuse resampling that would allocate more than the bounds allow (a crafted header's rate)."""
    if new_sr <= 0:
        raise ValueError(f"sample_rate must be positive, got {new_sr}")
    out = frames * new_sr // orig_sr
    if out > MAX_SAMPLES:
        raise DataError(f"{path}: {frames} samples at {orig_sr} Hz would be {out} at {new_sr} Hz, more than the "
                        f"{MAX_SAMPLES} a sound file may hold here; resample or cut the file")
    g = math.gcd(orig_sr, new_sr)
    if (orig_sr // g) * (new_sr // g) > MAX_RESAMPLE_KERNEL:
        raise DataError(f"{path}: resampling its rate of {orig_sr} Hz to {new_sr} Hz needs a "
                        f"{new_sr // g} x {orig_sr // g} filter bank; convert the file to a common rate first")


def check_audio(path: str | os.PathLike) -> None:
    """Raise DataError naming ``path`` if it is missing or not a readable sound file (header only)."""
    import soundfile as sf

    path = Path(path)
    _check_exists(path)
    try:
        info = sf.info(str(path))
    except Exception as exc:
        raise DataError(f"{path}: unreadable audio ({type(exc).__name__}: {short(exc)}); "
                        f"delete or replace the file") from None
    if info.frames == 0:
        raise DataError(f"{path}: audio file holds no samples; delete or replace the file")
    if info.frames > MAX_SAMPLES:
        raise DataError(f"{path}: {info.frames} samples, more than the {MAX_SAMPLES} a sound file may hold here; "
                        f"cut it into utterances")


def resample(wav: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    import torchaudio.functional as AF

    return AF.resample(wav, orig_sr, new_sr) if orig_sr != new_sr else wav


def save_audio(path: str | os.PathLike, wav: torch.Tensor, sample_rate: int) -> None:
    """Write a mono wav (16-bit PCM) atomically."""
    import soundfile as sf

    data = wav.detach().cpu().float().clamp(-1, 1).numpy()
    atomic_write(path, lambda fh: sf.write(fh, data, sample_rate, subtype="PCM_16", format="WAV"))


# --------------------------------------------------------------------------- discovery

ASTERISK_DIRS = ("/usr/share/asterisk/sounds/en_US_f_Allison", "/usr/share/asterisk/sounds/en")
ASTERISK_TRANSCRIPTS = "/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"


def asterisk_sounds_dir(path: str | os.PathLike | None = None) -> Path:
    """The directory holding the asterisk English wav recordings (``digits/0.wav`` ...)."""
    candidates = [Path(path)] if path else [Path(p) for p in ASTERISK_DIRS]
    for c in candidates:
        if (c / "digits" / "0.wav").is_file():
            return c
    raise DataError(
        f"{candidates[0] / 'digits' / '0.wav'}: asterisk English recordings not found; "
        f"apt-get install asterisk-core-sounds-en-wav"
    )


#: the most bytes a text data file may hold (after decompression), and the longest line
MAX_TEXT_BYTES = 64 << 20
MAX_LINE_BYTES = 64 << 10


def read_text_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of a UTF-8 text file, gzip-compressed when its name ends in ``.gz``.

    A file that is not UTF-8 text (UTF-16, Latin-1, binary), a corrupt or truncated archive, a line
    longer than :data:`MAX_LINE_BYTES` or more than :data:`MAX_TEXT_BYTES` in all raise DataError
    naming the file (and line).
    """
    path = Path(path)
    try:
        raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    except OSError as exc:
        raise DataError(f"{path}: cannot open ({short(exc)})") from None
    lineno, total = 0, 0
    with raw:
        while True:
            try:
                line = raw.readline(MAX_LINE_BYTES + 1)
            except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
                raise DataError(f"{path}: corrupt or truncated gzip archive after line {lineno} "
                                f"({type(exc).__name__}: {short(exc, 80)}); reinstall or replace the file") from None
            if not line:
                return
            lineno += 1
            total += len(line)
            if lineno == 1 and line.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
                raise DataError(f"{path}:1: UTF-16 text; save the file as UTF-8")
            if len(line) > MAX_LINE_BYTES:
                raise DataError(f"{path}:{lineno}: line longer than {MAX_LINE_BYTES} bytes; not a transcript file?")
            if total > MAX_TEXT_BYTES:
                raise DataError(f"{path}:{lineno}: more than {MAX_TEXT_BYTES} bytes of text; not a transcript file?")
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not UTF-8 text (byte 0x{line[exc.start]:02x} at column "
                                f"{exc.start + 1}); save the file as UTF-8") from None
            if "\x00" in text:
                raise DataError(f"{path}:{lineno}: NUL bytes: UTF-16 or binary data, not UTF-8 text; "
                                f"save the file as UTF-8")
            yield lineno, text.removeprefix("\ufeff") if lineno == 1 else text


def asterisk_transcripts(path: str | os.PathLike | None = None) -> dict[str, str]:
    """``{"digits/3": "three", ...}`` from ``core-sounds-en.txt(.gz)``; a malformed file raises DataError."""
    path = Path(path or ASTERISK_TRANSCRIPTS)
    if not path.is_file():
        raise DataError(f"{path}: asterisk transcripts not found; apt-get install asterisk-core-sounds-en")
    out: dict[str, str] = {}
    for lineno, line in read_text_lines(path):
        line = line.strip()
        if not line or line.startswith(";"):
            continue
        name, sep, text = line.partition(":")
        name = name.strip()
        if not sep or not name or any(c.isspace() for c in name) or ".." in name.split("/") or name.startswith("/"):
            raise DataError(f"{path}:{lineno}: expected 'name: transcript', got {short(repr(line), 60)}")
        out[name] = text.strip()
    return out


@cache
def flite_voices() -> tuple[str, ...]:
    """Voices the installed ``flite`` offers (``awb``, ``rms``, ``slt``, ``kal16`` ...); () if none."""
    exe = shutil.which("flite")
    if exe is None:
        return ()
    out = subprocess.run([exe, "-lv"], capture_output=True, text=True, check=False).stdout
    return tuple(v for v in out.split(":", 1)[-1].split() if v and v not in ("kal", "awb_time"))


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


#: the default synthetic speakers: flite voices from CMU ARCTIC speakers, plus espeak-ng accents/variants
FLITE_SPEAKERS = ("flite/awb", "flite/rms", "flite/slt", "flite/kal16")
ESPEAK_SPEAKERS = (
    "espeak/en-us+m1", "espeak/en-us+f2", "espeak/en-gb+m3", "espeak/en-gb+f3",
    "espeak/en-gb-scotland+m4", "espeak/en-029+f4", "espeak/en-us-nyc+m2", "espeak/en-gb-x-rp+f1",
)
#: take -> (speaking-rate factor, pitch offset): deterministic variation of one voice
TAKES = ((1.0, 0), (0.85, 8), (1.15, -8), (0.95, 15), (1.1, -15), (0.9, -4), (1.05, 4), (1.2, 0))


def synthesize(text: str, voice: str, path: str | os.PathLike, sample_rate: int = 16000, take: int = 0) -> Path:
    """Synthesise ``text`` with ``voice`` (``"flite/slt"``, ``"espeak/en-us+f2"``) into a mono wav.

    ``take`` picks a deterministic speaking-rate/pitch variation (``TAKES``). The file is written
    atomically at ``sample_rate``; an existing file is reused (the cache).
    """
    path = Path(path)
    if path.is_file():
        return path
    engine, _, name = voice.partition("/")
    rate, pitch = TAKES[take % len(TAKES)]
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        if engine == "flite":
            exe = shutil.which("flite")
            if exe is None:
                raise DataError(f"{voice}: flite is not installed; apt-get install flite")
            cmd = [exe, "-voice", name, "--setf", f"duration_stretch={1.0 / rate:.3f}",
                   "--setf", f"int_f0_target_mean={(110 if name in ('awb', 'rms', 'kal16') else 170) + pitch * 2}",
                   "-t", text, "-o", str(raw)]
        elif engine == "espeak":
            exe = shutil.which("espeak-ng")
            if exe is None:
                raise DataError(f"{voice}: espeak-ng is not installed; apt-get install espeak-ng")
            cmd = [exe, "-v", name, "-s", str(int(160 * rate)), "-p", str(50 + pitch), "-w", str(raw), text]
        else:
            raise DataError(f"{voice}: unknown voice; use 'flite/<voice>' or 'espeak/<voice>'")
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0 or not raw.is_file():
            raise DataError(f"{voice}: synthesis of {text!r} failed: {res.stderr.strip()[:200]}")
        save_audio(path, load_audio(raw, sample_rate), sample_rate)
    return path


def speech_cache_dir(root: str | os.PathLike) -> Path:
    """Where synthesised audio lives under a data root."""
    return Path(root) / "audio" / "tts"


def tts_path(root: str | os.PathLike, voice: str, text: str, sample_rate: int, take: int = 0) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:40]
    digest = hashlib.sha1(f"{voice}|{text}|{take}|{sample_rate}".encode()).hexdigest()[:8]
    return speech_cache_dir(root) / voice.replace("/", "_").replace("+", "_") / f"{slug}_{take}_{digest}.wav"


def split_of(key: str, seed: int, fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> str:
    """Deterministic train/val/test assignment of one item by a seeded hash of its key."""
    h = int(hashlib.sha1(f"{seed}|{key}".encode()).hexdigest()[:12], 16) / float(16**12)
    if h < fractions[0]:
        return "train"
    return "val" if h < fractions[0] + fractions[1] else "test"


# --------------------------------------------------------------------------- data sets

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass(frozen=True)
class Utterance:
    path: Path
    text: str
    speaker: str
    label: int = -1


class _SpeechDataset(Dataset):
    """Common machinery: a list of :class:`Utterance`, waveform loading and collation."""

    @classmethod
    def check_prerequisites(cls, root: Path) -> list[str]:
        """The asterisk recordings and the flite / espeak-ng voices (``panconv doctor``)."""
        missing = []
        if not any(Path(d).is_dir() for d in ASTERISK_DIRS) or not Path(ASTERISK_TRANSCRIPTS).is_file():
            missing.append("asterisk recordings: apt-get install asterisk-core-sounds-en-wav asterisk-core-sounds-en")
        missing += [f"{exe}: apt-get install {exe}" for exe in ("flite", "espeak-ng") if shutil.which(exe) is None]
        return missing

    def __init__(self, root=None, split="train", sample_rate: Annotated[int, Interval(gt=0, le=192_000)] = 8000,
                 max_seconds: Annotated[float, Interval(gt=0, le=3600)] = 6.0):
        super().__init__(root, split)
        name = type(self).__name__
        if not 0 < sample_rate <= 192_000 or not 0 < max_seconds <= 3600:
            raise ValueError(f"{name}: need 0 < sample_rate <= 192000 and 0 < max_seconds <= 3600, got "
                             f"sample_rate={sample_rate}, max_seconds={max_seconds}")
        self.sample_rate = int(sample_rate)
        self.max_samples = int(max_seconds * self.sample_rate)
        if self.max_samples < 1:
            raise ValueError(f"{name}: max_seconds={max_seconds} is less than one sample at {sample_rate} Hz")
        self.items: list[Utterance] = []

    def _check_not_empty(self, why: str) -> None:
        """An empty split is a DataError saying which split and what was looked at."""
        if not self.items:
            raise DataError(f"{type(self).__name__}: split '{self.split}' is empty ({short(why, 300)}); "
                            f"add recordings or voices, or change the split settings")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int) -> dict:
        u = self.items[idx]
        wav = load_audio(u.path, self.sample_rate)[: self.max_samples]
        peak = wav.abs().max()
        if peak > 0:
            wav = wav / peak * 0.9  # level-normalise: recordings and engines differ in gain
        return {"inputs": wav, "labels": u.label, "texts": u.text, "speakers": u.speaker}

    def collate(self, samples: list[dict]) -> dict:
        """Zero-pad the waveforms: ``inputs`` (N, T_max), ``input_lengths``, ``labels``, ``texts``, ``speakers``."""
        lengths = torch.tensor([s["inputs"].numel() for s in samples], dtype=torch.long)
        wavs = torch.zeros(len(samples), int(lengths.max()))
        for i, s in enumerate(samples):
            wavs[i, : lengths[i]] = s["inputs"]
        return {
            "inputs": wavs,
            "input_lengths": lengths,
            "labels": torch.tensor([s["labels"] for s in samples], dtype=torch.long),
            "texts": [s["texts"] for s in samples],
            "speakers": [s["speakers"] for s in samples],
        }

    def speakers(self) -> list[str]:
        return sorted({u.speaker for u in self.items})


def _real_digit_items(asterisk_dir) -> list[Utterance]:
    d = asterisk_sounds_dir(asterisk_dir)
    return [Utterance(d / "digits" / f"{i}.wav", w, "asterisk/allison", i) for i, w in enumerate(DIGIT_WORDS)]


class SpokenDigits(_SpeechDataset):
    """Isolated spoken digits 0-9: real recordings plus synthesised speakers.

    Speakers: the asterisk recordings (one real female speaker, ``asterisk/allison``), the flite
    voices and espeak-ng voices in ``voices``; each synthetic speaker says each digit in
    ``takes`` rate/pitch variations.

    Split (documented, seeded): speakers in ``test_speakers`` (default: the real asterisk speaker
    and ``flite/slt``, a CMU ARCTIC speaker) form the **test** split: speaker-independent, every
    test recording comes from a speaker never heard in training. The remaining utterances are
    assigned to train/val by a hash of ``(seed, speaker, digit, take)`` (90/10).

    Batch: ``inputs`` (N, T) waveforms at ``sample_rate``, ``input_lengths``, ``labels`` (digit),
    ``texts``, ``speakers``. ``label_by="speaker"`` makes the label the speaker index instead
    (speaker/voice classification; then the split is by take, seeded, over all speakers).
    """

    metadata_keys = ("num_classes", "sample_rate")

    def __init__(self, root=None, split="train", voices: Sequence[str] | None = None,
                 takes: Annotated[int, Interval(ge=0, le=len(TAKES))] = 4,
                 test_speakers: Sequence[str] = ("asterisk/allison", "flite/slt"),
                 seed: Annotated[int, Interval(ge=0, lt=2**32)] = 0,
                 sample_rate: Annotated[int, Interval(gt=0, le=192_000)] = 8000, label_by: str = "digit",
                 include_real: bool = True, asterisk_dir: str | None = None,
                 max_seconds: Annotated[float, Interval(gt=0, le=3600)] = 2.0):
        super().__init__(root, split, sample_rate, max_seconds)
        if not 0 <= takes <= len(TAKES):
            raise ValueError(f"SpokenDigits: takes must be in 0 ... {len(TAKES)} (the rate/pitch variations), "
                             f"got {takes}")
        if label_by not in ("digit", "speaker"):
            raise DataError(f"SpokenDigits: label_by must be 'digit' or 'speaker', got {label_by!r}")
        self.label_by = label_by
        voices = list(voices) if voices is not None else [*FLITE_SPEAKERS, *(ESPEAK_SPEAKERS if have_espeak() else ())]
        # (utterance, split key, take of a synthetic voice or None for a recording)
        items: list[tuple[Utterance, str, int | None]] = []
        if include_real:
            items += [(u, f"{u.speaker}|{u.label}|0", None) for u in _real_digit_items(asterisk_dir)]
        for voice in voices:
            for digit, word in enumerate(DIGIT_WORDS):
                for take in range(takes):
                    path = tts_path(self.root, voice, word, self.sample_rate, take)
                    items.append((Utterance(path, word, voice, digit), f"{voice}|{digit}|{take}", take))
        self.all_speakers = sorted({u.speaker for u, _, _ in items})
        chosen, takes_of = [], {}
        for u, key, take in items:
            if label_by == "speaker":
                s = split_of(key, seed, (0.7, 0.15, 0.15))
            elif u.speaker in test_speakers:
                s = "test"
            else:
                s = split_of(key, seed, (0.9, 0.1, 0.0))
            if s == split:
                chosen.append(u)
                takes_of[u.path] = take
        for u in chosen:  # synthesise what the cache lacks; a missing recording is reported by check_audio
            if takes_of[u.path] is not None and not u.path.is_file():
                synthesize(u.text, u.speaker, u.path, self.sample_rate, take=takes_of[u.path])
        for u in chosen:
            check_audio(u.path)
        if label_by == "speaker":
            index = {s: i for i, s in enumerate(self.all_speakers)}
            chosen = [Utterance(u.path, u.text, u.speaker, index[u.speaker]) for u in chosen]
        self.items = chosen
        self._check_not_empty(f"{len(items)} utterances of {len(self.all_speakers)} speakers, "
                              f"test_speakers={list(test_speakers)}, label_by={label_by!r}")

    @property
    def metadata(self) -> dict:
        n = len(self.all_speakers) if self.label_by == "speaker" else len(DIGIT_WORDS)
        return {"num_classes": n, "sample_rate": self.sample_rate}

    @classmethod
    def example(cls, tmp_dir) -> dict:
        tmp_dir = Path(tmp_dir)
        ast = tmp_dir / "asterisk"
        for i in range(10):  # a tiny fake asterisk tree: tones of different pitch
            t = torch.arange(800) / 8000.0
            save_audio(ast / "digits" / f"{i}.wav", 0.5 * torch.sin(2 * torch.pi * (200 + 50 * i) * t), 8000)
        voices = ["flite/slt"] if "slt" in flite_voices() else []
        return {"root": str(tmp_dir), "voices": voices, "takes": 1, "asterisk_dir": str(ast),
                "test_speakers": ("asterisk/allison",), "split": "test"}

    @classmethod
    def broken_example(cls, tmp_dir) -> dict:
        ast = Path(tmp_dir) / "asterisk_broken"
        (ast / "digits").mkdir(parents=True, exist_ok=True)
        for i in range(10):
            (ast / "digits" / f"{i}.wav").write_bytes(b"RIFF not really a wav")
        kwargs = {"root": str(tmp_dir), "voices": [], "takes": 1, "asterisk_dir": str(ast),
                  "split": "test", "test_speakers": ("asterisk/allison",)}
        return kwargs


class SpokenWords(_SpeechDataset):
    """Spoken words and digit strings with transcripts, for CTC recognition.

    * real: asterisk recordings (one real speaker) whose name starts with one of ``real_prefixes``
      (default ``("digits/",)``: numbers, ordinals, weekdays, months) and whose transcript has at
      most ``max_chars`` characters of ``[a-z' ]`` after normalisation; assigned to train/val/test
      by a seeded hash of the recording name (80/10/10), so the test split holds **held-out real
      recordings**;
    * synthetic, per voice in ``voices``: every word of that real vocabulary (``synth_words``) and
      ``n_strings`` seeded random strings of 1-``max_digits`` digits (``"three one four"``), split
      80/10/10 by a seeded hash of ``(voice, text)``.

    Batch: ``inputs`` (N, T), ``input_lengths``, ``texts`` (normalised transcripts), ``speakers``.
    """

    metadata_keys = ("sample_rate",)

    def __init__(self, root=None, split="train", voices: Sequence[str] | None = None,
                 n_strings: Annotated[int, Interval(ge=0, le=100_000)] = 40,
                 max_digits: Annotated[int, Interval(ge=1, le=100)] = 3, max_chars: Annotated[int, Ge(1)] = 24,
                 seed: Annotated[int, Interval(ge=0, lt=2**32)] = 0,
                 sample_rate: Annotated[int, Interval(gt=0, le=192_000)] = 8000,
                 include_real: bool = True, real_prefixes: Sequence[str] | None = ("digits/",),
                 synth_words: bool = True, asterisk_dir: str | None = None, transcripts: str | None = None,
                 max_seconds: Annotated[float, Interval(gt=0, le=3600)] = 4.0):
        super().__init__(root, split, sample_rate, max_seconds)
        if not 0 <= n_strings <= 100_000 or not 1 <= max_digits <= 100 or max_chars < 1:
            raise ValueError(f"SpokenWords: need 0 <= n_strings <= 100000, 1 <= max_digits <= 100 and max_chars >= 1, "
                             f"got n_strings={n_strings}, max_digits={max_digits}, max_chars={max_chars}")
        voices = list(voices) if voices is not None else [*FLITE_SPEAKERS, *(ESPEAK_SPEAKERS if have_espeak() else ())]
        chosen: list[Utterance] = []
        vocabulary: set[str] = set()
        if include_real:
            d = asterisk_sounds_dir(asterisk_dir)
            transcript_file = Path(transcripts or ASTERISK_TRANSCRIPTS)
            missing: list[Path] = []
            for name, text in sorted(asterisk_transcripts(transcript_file).items()):
                norm = normalize_text(text)
                if not norm or len(norm) > max_chars or "[" in text:
                    continue
                if real_prefixes and not any(name.startswith(p) for p in real_prefixes):
                    continue
                path = d / f"{name}.wav"
                if not path.is_file():
                    missing.append(path)
                    continue
                vocabulary.add(norm)
                if split_of(f"asterisk|{name}", seed) == split:
                    check_audio(path)
                    chosen.append(Utterance(path, norm, "asterisk/allison"))
            if missing and not vocabulary:
                raise DataError(f"{missing[0]}: recording named in {transcript_file} not found ({len(missing)} of "
                                f"the recordings it names are missing from {d}, none is there); "
                                f"apt-get install asterisk-core-sounds-en-wav or fix asterisk_dir")
            if missing:
                warnings.warn(f"SpokenWords: {len(missing)} recording(s) named in {transcript_file} not found, "
                              f"skipped: {', '.join(str(p) for p in missing[:3])}{' ...' if len(missing) > 3 else ''}",
                              stacklevel=2)
        rng = random.Random(seed)
        texts = {" ".join(rng.choice(DIGIT_WORDS) for _ in range(rng.randint(1, max_digits)))
                 for _ in range(n_strings)}
        if synth_words:
            texts |= vocabulary
        for vi, voice in enumerate(voices):
            for text in sorted(texts):
                if split_of(f"{voice}|{text}", seed) != split:
                    continue
                path = tts_path(self.root, voice, text, self.sample_rate, take=vi % 3)
                if not path.is_file():
                    synthesize(text, voice, path, self.sample_rate, take=vi % 3)
                chosen.append(Utterance(path, text, voice))
        self.items = chosen
        self._check_not_empty(f"{len(vocabulary)} real words kept of the transcripts (include_real={include_real}, "
                              f"real_prefixes={real_prefixes}, max_chars={max_chars}), {len(voices)} voices, "
                              f"n_strings={n_strings}")

    @property
    def metadata(self) -> dict:
        return {"sample_rate": self.sample_rate}

    @classmethod
    def example(cls, tmp_dir) -> dict:
        tmp_dir = Path(tmp_dir)
        ast = tmp_dir / "asterisk"
        lines = ["; test transcripts"]
        for i, w in enumerate(DIGIT_WORDS):
            t = torch.arange(800) / 8000.0
            save_audio(ast / "digits" / f"{i}.wav", 0.5 * torch.sin(2 * torch.pi * (200 + 50 * i) * t), 8000)
            lines.append(f"digits/{i}: {w}")
        (tmp_dir / "t.txt").write_text("\n".join(lines) + "\n")
        return {"root": str(tmp_dir), "voices": [], "asterisk_dir": str(ast), "transcripts": str(tmp_dir / "t.txt"),
                "split": "train"}

    @classmethod
    def broken_example(cls, tmp_dir) -> dict:
        kwargs = cls.example(tmp_dir)
        Path(kwargs["transcripts"]).write_text("digits/0 zero without a colon\n")
        return kwargs


def normalize_text(text: str) -> str:
    """Lower-case, keep ``a-z``, apostrophe and single spaces (the character vocabulary)."""
    text = text.lower().replace("-", " ")
    text = re.sub(r"[^a-z' ]+", " ", text)
    return re.sub(r"\s+", " ", text).strip()
