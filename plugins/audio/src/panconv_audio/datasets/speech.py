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
:func:`speech_cache_dir`, :func:`split_of`.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import random
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch

from panconv.api import Dataset
from panconv.engine.io import atomic_write
from panconv.errors import DataError

# --------------------------------------------------------------------------- audio I/O


def load_audio(path: str | os.PathLike, sample_rate: int | None = None) -> torch.Tensor:
    """Read a sound file as a mono float32 tensor ``(T,)``, resampled to ``sample_rate`` if given.

    Uses soundfile (``torchaudio.load`` needs torchcodec). Unreadable files raise DataError.
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: audio file not found; install the package that ships it or rebuild the cache")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises RuntimeError/LibsndfileError/TypeError
        raise DataError(f"{path}: unreadable audio ({type(exc).__name__}: {exc}); delete or replace the file") from None
    if data.shape[0] == 0:
        raise DataError(f"{path}: audio file holds no samples; delete or replace the file")
    wav = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1)))
    if sample_rate is not None and sr != sample_rate:
        wav = resample(wav, sr, sample_rate)
    return wav


def check_audio(path: str | os.PathLike) -> None:
    """Raise DataError naming ``path`` if it is missing or not a readable sound file (header only)."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: audio file not found; install the package that ships it or rebuild the cache")
    try:
        info = sf.info(str(path))
    except Exception as exc:
        raise DataError(f"{path}: unreadable audio ({type(exc).__name__}); delete or replace the file") from None
    if info.frames == 0:
        raise DataError(f"{path}: audio file holds no samples; delete or replace the file")


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
        f"{candidates[0]}: asterisk English recordings not found; apt-get install asterisk-core-sounds-en-wav"
    )


def asterisk_transcripts(path: str | os.PathLike | None = None) -> dict[str, str]:
    """``{"digits/3": "three", ...}`` from ``core-sounds-en.txt(.gz)``; malformed lines raise DataError."""
    path = Path(path or ASTERISK_TRANSCRIPTS)
    if not path.is_file():
        raise DataError(f"{path}: asterisk transcripts not found; apt-get install asterisk-core-sounds-en")
    opener = gzip.open if path.suffix == ".gz" else open
    out: dict[str, str] = {}
    with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line or line.startswith(";"):
                continue
            name, sep, text = line.partition(":")
            if not sep or not name.strip() or " " in name.strip():
                raise DataError(f"{path}:{lineno}: expected 'name: transcript', got {line[:40]!r}")
            out[name.strip()] = text.strip()
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

    def __init__(self, root=None, split="train", sample_rate: int = 8000, max_seconds: float = 6.0):
        super().__init__(root, split)
        self.sample_rate = int(sample_rate)
        self.max_samples = int(max_seconds * self.sample_rate)
        self.items: list[Utterance] = []

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

    metadata_keys = ("num_classes",)

    def __init__(self, root=None, split="train", voices: Sequence[str] | None = None, takes: int = 4,
                 test_speakers: Sequence[str] = ("asterisk/allison", "flite/slt"), seed: int = 0,
                 sample_rate: int = 8000, label_by: str = "digit", include_real: bool = True,
                 asterisk_dir: str | None = None, max_seconds: float = 2.0):
        super().__init__(root, split, sample_rate, max_seconds)
        if label_by not in ("digit", "speaker"):
            raise DataError(f"SpokenDigits: label_by must be 'digit' or 'speaker', got {label_by!r}")
        self.label_by = label_by
        voices = list(voices) if voices is not None else [*FLITE_SPEAKERS, *(ESPEAK_SPEAKERS if have_espeak() else ())]
        items: list[tuple[Utterance, str]] = []  # (utterance, split key)
        if include_real:
            items += [(u, f"{u.speaker}|{u.label}|0") for u in _real_digit_items(asterisk_dir)]
        for voice in voices:
            for digit, word in enumerate(DIGIT_WORDS):
                for take in range(takes):
                    path = tts_path(self.root, voice, word, self.sample_rate, take)
                    items.append((Utterance(path, word, voice, digit), f"{voice}|{digit}|{take}"))
        self.all_speakers = sorted({u.speaker for u, _ in items})
        chosen = []
        for u, key in items:
            if label_by == "speaker":
                s = split_of(key, seed, (0.7, 0.15, 0.15))
            elif u.speaker in test_speakers:
                s = "test"
            else:
                s = split_of(key, seed, (0.9, 0.1, 0.0))
            if s == split:
                chosen.append(u)
        for u in chosen:
            if not u.path.is_file():
                synthesize(u.text, u.speaker, u.path, self.sample_rate, take=int(u.path.stem.split("_")[-2]))
        for u in chosen:
            check_audio(u.path)
        if label_by == "speaker":
            index = {s: i for i, s in enumerate(self.all_speakers)}
            chosen = [Utterance(u.path, u.text, u.speaker, index[u.speaker]) for u in chosen]
        self.items = chosen

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

    metadata_keys = ()

    def __init__(self, root=None, split="train", voices: Sequence[str] | None = None, n_strings: int = 40,
                 max_digits: int = 3, max_chars: int = 24, seed: int = 0, sample_rate: int = 8000,
                 include_real: bool = True, real_prefixes: Sequence[str] | None = ("digits/",),
                 synth_words: bool = True, asterisk_dir: str | None = None, transcripts: str | None = None,
                 max_seconds: float = 4.0):
        super().__init__(root, split, sample_rate, max_seconds)
        voices = list(voices) if voices is not None else [*FLITE_SPEAKERS, *(ESPEAK_SPEAKERS if have_espeak() else ())]
        chosen: list[Utterance] = []
        vocabulary: set[str] = set()
        if include_real:
            d = asterisk_sounds_dir(asterisk_dir)
            for name, text in sorted(asterisk_transcripts(transcripts).items()):
                norm = normalize_text(text)
                if not norm or len(norm) > max_chars or "[" in text:
                    continue
                if real_prefixes and not any(name.startswith(p) for p in real_prefixes):
                    continue
                path = d / f"{name}.wav"
                if not path.is_file():
                    continue
                vocabulary.add(norm)
                if split_of(f"asterisk|{name}", seed) == split:
                    check_audio(path)
                    chosen.append(Utterance(path, norm, "asterisk/allison"))
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
