"""Speech-separation mixtures of utterances of different real speakers.

The built-in corpus needs no download, only Debian packages (``apt-get install flite
asterisk-core-sounds-en-wav asterisk-core-sounds-en``):

* ``allison``: the asterisk prompts recorded by Allison Smith (``asterisk-core-sounds-en-wav``,
  8 kHz, one real female speaker), with their texts from ``core-sounds-en.txt.gz``;
* ``awb``, ``rms``, ``slt``: the same prompt texts spoken by flite's clustergen voices, built from
  the CMU ARCTIC recordings of three real speakers (Scottish male, US male, US female).

Each utterance is silence-trimmed, resampled to ``sample_rate`` and cached under
``<root>/speaker_mixtures/utterances/sr<rate>/<speaker>/<prompt>.wav`` (written atomically), so it
is generated once. Alternatively ``speech_dir`` points at your own recordings laid out as
``<speech_dir>/<speaker>/<utterance>.wav``.

The split is by utterance (prompt) id, seeded: the sorted ids are permuted with ``seed`` and cut
into ``split_fractions`` (train/val/test), the same for every speaker, so held-out mixtures use
sentences never heard in training, in any voice. Mixture ``i`` of a split draws ``num_speakers``
different speakers, one utterance each (different prompts where the split allows), from a
generator seeded by ``(seed, split, epoch, i)``; the first source is at 0 dB and every other at a
uniform random SNR in ``snr_range`` relative to it (the WSJ0-2mix recipe: [-5, 5] dB by default).
Sources are cut to the shortest utterance ("min" mode), then a seeded window of
``segment_seconds`` is taken (zero-padded when shorter), and the mixture is scaled to an RMS of
0.05 (sources scaled alike so that ``mixture == sources.sum(0)``). With ``dynamic_mixing`` the
training mixtures are redrawn every epoch (``set_epoch``); validation and test never change.

Malformed data (an unreadable, empty or non-finite sound file, a transcript file that is not UTF-8
``name: text`` lines, transcripts naming no recording that exists) raises a one-line DataError
naming the file, as :mod:`.speech` does (its readers are shared).
"""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import numpy as np
import soundfile as sf
import torch
from annotated_types import Ge, Interval, Len

from panconv.api import Dataset
from panconv.errors import DataError
from panconv.io import atomic_write

from .speech import asterisk_transcripts, check_audio, load_audio, short

ASTERISK_DIR = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
ASTERISK_TEXTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
FLITE_VOICES = ("awb", "rms", "slt")
DEFAULT_SPEAKERS = ("allison", *FLITE_VOICES)
_APT_HINT = "apt-get install flite asterisk-core-sounds-en-wav asterisk-core-sounds-en"


# --------------------------------------------------------------------------- audio helpers


def _read_wav(path: Path, sample_rate: int) -> np.ndarray:
    """Mono float32 at ``sample_rate``; a missing, unreadable, empty or non-finite file raises DataError naming it."""
    return load_audio(path, sample_rate).numpy()


def _write_wav_atomic(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    atomic_write(path, lambda fh: sf.write(fh, audio, sample_rate, subtype="FLOAT", format="WAV"))


def _trim_silence(audio: np.ndarray, sample_rate: int, threshold_db: float = -40.0) -> np.ndarray:
    """Drop leading/trailing 10 ms frames quieter than ``threshold_db`` below the loudest frame."""
    hop = max(1, sample_rate // 100)
    frames = len(audio) // hop
    if frames == 0:
        return audio
    rms = np.sqrt((audio[: frames * hop].reshape(frames, hop) ** 2).mean(axis=1) + 1e-12)
    active = np.nonzero(rms >= rms.max() * 10 ** (threshold_db / 20))[0]
    return audio[active[0] * hop: (active[-1] + 1) * hop]


def asterisk_prompts(min_seconds: float = 1.0) -> dict[str, str]:
    """``{prompt id: text}`` of the top-level asterisk prompts that are speech of ``min_seconds`` or more.

    Prompts the transcripts name whose recording is not installed are skipped (the Debian package
    names one it does not ship); when none is there, a DataError names the first missing file.
    """
    if not ASTERISK_DIR.is_dir() or not ASTERISK_TEXTS.is_file():
        raise DataError(f"SpeakerMixtures: {ASTERISK_DIR} or {ASTERISK_TEXTS} not found; install them: {_APT_HINT}")
    prompts, missing = {}, []
    for key, text in asterisk_transcripts(ASTERISK_TEXTS).items():
        if "/" in key or not text or text.startswith("["):
            continue
        wav = ASTERISK_DIR / f"{key}.wav"
        if not wav.is_file():
            missing.append(wav)
            continue
        check_audio(wav)
        if sf.info(str(wav)).duration >= min_seconds:
            prompts[key] = text
    if missing and not prompts:
        raise DataError(f"{missing[0]}: recording named in {ASTERISK_TEXTS} not found ({len(missing)} of the "
                        f"prompts it names are missing from {ASTERISK_DIR}); install them: {_APT_HINT}")
    if not prompts:
        raise DataError(f"{ASTERISK_TEXTS}: names no prompt recorded in {ASTERISK_DIR} of {min_seconds} s or more; "
                        f"lower min_seconds or reinstall: {_APT_HINT}")
    return prompts


def _synthesize_flite(voice: str, text: str, sample_rate: int) -> np.ndarray:
    if shutil.which("flite") is None:
        raise DataError(f"SpeakerMixtures: the 'flite' program is needed for voice '{voice}'; install it: {_APT_HINT}")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "utt.wav"
        res = subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(out)], capture_output=True, text=True,
                             check=False)
        if res.returncode != 0 or not out.is_file():
            raise DataError(f"SpeakerMixtures: flite voice '{voice}' failed on {short(repr(text), 60)}: "
                            f"{short(res.stderr, 200)}")
        return _read_wav(out, sample_rate)


# --------------------------------------------------------------------------- the dataset


class SpeakerMixtures(Dataset):
    """Seeded mixtures of ``num_speakers`` different real speakers; items ``{"mixture", "sources"}``.

    ``mixture``: ``(T,)``; ``sources``: ``(num_speakers, T)`` with ``mixture == sources.sum(0)``.
    ``collate`` pads to the longest item and adds ``lengths``. The training split has
    ``num_mixtures`` mixtures (per epoch), validation and test ``num_eval_mixtures`` each.
    """

    @classmethod
    def check_prerequisites(cls, root: Path) -> list[str]:
        """The asterisk recordings and flite's voices (``panconv doctor``)."""
        missing = []
        if not ASTERISK_DIR.is_dir() or not ASTERISK_TEXTS.is_file():
            missing.append(f"asterisk recordings: {_APT_HINT}")
        if shutil.which("flite") is None:
            missing.append(f"flite: {_APT_HINT}")
        return missing

    metadata_keys = ("num_speakers",)

    def __init__(self, root=None, split: str = "train", num_speakers: Annotated[int, Interval(ge=1, le=8)] = 2,
                 sample_rate: Annotated[int, Interval(gt=0, le=192_000)] = 8000,
                 speakers: list[str] | tuple[str, ...] | None = None, speech_dir: str | None = None,
                 num_mixtures: Annotated[int, Ge(1)] = 2000, num_eval_mixtures: Annotated[int, Ge(1)] = 200,
                 segment_seconds: Annotated[float, Interval(gt=0, le=3600)] | None = 2.0,
                 snr_range: Annotated[Sequence[Annotated[float, Interval(ge=-100, le=100)]], Len(2, 2)] = (-5.0, 5.0),
                 min_seconds: Annotated[float, Interval(ge=0, le=3600)] = 1.0,
                 split_fractions: Annotated[Sequence[Annotated[float, Interval(ge=0, le=1)]], Len(3, 3)]
                 = (0.8, 0.1, 0.1),
                 max_prompts: Annotated[int, Ge(1)] | None = None, seed: Annotated[int, Interval(ge=0, lt=2**32)] = 0,
                 dynamic_mixing: bool = True):
        super().__init__(root, split)
        self._check_arguments(num_speakers, sample_rate, num_mixtures, num_eval_mixtures, segment_seconds,
                              snr_range, min_seconds, split_fractions, max_prompts, seed)
        self.num_speakers = num_speakers
        self.sample_rate = sample_rate
        self.segment = None if segment_seconds is None else round(segment_seconds * sample_rate)
        if self.segment is not None and self.segment < 1:
            raise ValueError(f"SpeakerMixtures: segment_seconds={segment_seconds} is less than one sample at "
                             f"{sample_rate} Hz")
        self.snr_range = (float(snr_range[0]), float(snr_range[1]))
        self.seed = seed
        self.dynamic_mixing = dynamic_mixing and split == "train"
        self.epoch = 0
        self.num_mixtures = num_mixtures if split == "train" else num_eval_mixtures

        files = self._discover(speakers, speech_dir, min_seconds, max_prompts)       # speaker -> {id: path}
        ids = sorted({utt for per_speaker in files.values() for utt in per_speaker})
        order = np.random.default_rng(seed).permutation(len(ids))
        bounds = np.cumsum([0, *split_fractions]) / sum(split_fractions) * len(ids)
        index = self.splits.index(split)
        chosen = {ids[k] for k in order[round(bounds[index]): round(bounds[index + 1])]}
        self.speakers = sorted(files)
        self.utterances = {                                                           # speaker -> [(id, audio)]
            spk: [(utt, _read_wav(path, sample_rate)) for utt, path in sorted(files[spk].items()) if utt in chosen]
            for spk in self.speakers
        }
        self.utterances = {spk: utts for spk, utts in self.utterances.items() if utts}
        if len(self.utterances) < num_speakers:
            raise DataError(f"SpeakerMixtures: split '{split}' has utterances of {len(self.utterances)} speakers "
                            f"({', '.join(self.utterances)}), fewer than num_speakers={num_speakers}; "
                            f"add speakers or lower num_speakers")

    @staticmethod
    def _check_arguments(num_speakers, sample_rate, num_mixtures, num_eval_mixtures, segment_seconds, snr_range,
                         min_seconds, split_fractions, max_prompts, seed) -> None:
        """The ranges the signature declares, for callers that bypass config validation (ValueError)."""
        problems = []
        if not 1 <= num_speakers <= 8:
            problems.append(f"num_speakers={num_speakers} (1 ... 8: PIT scores all num_speakers! orders)")
        if not 0 < sample_rate <= 192_000:
            problems.append(f"sample_rate={sample_rate} (0 < rate <= 192000)")
        if num_mixtures < 1 or num_eval_mixtures < 1:
            problems.append(f"num_mixtures={num_mixtures}, num_eval_mixtures={num_eval_mixtures} (>= 1)")
        if segment_seconds is not None and not 0 < segment_seconds <= 3600:
            problems.append(f"segment_seconds={segment_seconds} (0 < s <= 3600)")
        if len(snr_range) != 2 or not all(-100 <= s <= 100 for s in snr_range) or snr_range[0] > snr_range[1]:
            problems.append(f"snr_range={short(snr_range, 60)} ([low, high] dB, -100 <= low <= high <= 100)")
        if not 0 <= min_seconds <= 3600:
            problems.append(f"min_seconds={min_seconds} (0 ... 3600)")
        if (len(split_fractions) != 3 or not all(0 <= f <= 1 for f in split_fractions)
                or not math.fsum(split_fractions) > 0):
            problems.append(f"split_fractions={short(split_fractions, 60)} (three fractions in [0, 1], not all 0)")
        if max_prompts is not None and max_prompts < 1:
            problems.append(f"max_prompts={max_prompts} (>= 1 or null)")
        if not 0 <= seed < 2**32:
            problems.append(f"seed={seed} (0 ... 2**32 - 1)")
        if problems:
            raise ValueError(f"SpeakerMixtures: out of range: {'; '.join(problems)}")

    # ---- corpus discovery / generation ----
    def _discover(self, speakers, speech_dir, min_seconds, max_prompts) -> dict[str, dict[str, Path]]:
        if speech_dir is not None:
            base = Path(speech_dir).expanduser()
            if not base.is_dir():
                raise DataError(f"SpeakerMixtures: speech_dir {base} is not a directory of <speaker>/<utterance>.wav")
            files = {d.name: {f.stem: f for f in sorted(d.glob("*.wav"))}
                     for d in sorted(base.iterdir()) if d.is_dir() and (speakers is None or d.name in speakers)}
            files = {spk: utts for spk, utts in files.items() if utts}
            if not files:
                raise DataError(f"{base}: no <speaker>/<utterance>.wav files"
                                f"{'' if speakers is None else f' of speakers {short(list(speakers), 80)}'}")
            return files
        speakers = tuple(speakers) if speakers is not None else DEFAULT_SPEAKERS
        unknown = sorted(set(speakers) - set(DEFAULT_SPEAKERS))
        if unknown:
            raise DataError(f"SpeakerMixtures: unknown speaker(s) {unknown}; the built-in corpus has "
                            f"{', '.join(DEFAULT_SPEAKERS)} (or pass speech_dir=)")
        prompts = asterisk_prompts(min_seconds)
        if max_prompts is not None:
            prompts = dict(sorted(prompts.items())[:max_prompts])
        cache = self.root / "speaker_mixtures" / "utterances" / f"sr{self.sample_rate}"
        files: dict[str, dict[str, Path]] = {}
        for spk in speakers:
            files[spk] = {}
            for key, text in prompts.items():
                path = cache / spk / f"{key}.wav"
                if not path.is_file():
                    if spk == "allison":
                        audio = _read_wav(ASTERISK_DIR / f"{key}.wav", self.sample_rate)
                    else:
                        audio = _synthesize_flite(spk, text, self.sample_rate)
                    _write_wav_atomic(path, _trim_silence(audio, self.sample_rate), self.sample_rate)
                files[spk][key] = path
        return files

    # ---- mixing ----
    def set_epoch(self, epoch: int) -> None:
        if self.dynamic_mixing:
            self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_mixtures

    def plan(self, index: int) -> dict:
        """What mixture ``index`` is made of: speakers, utterance ids, SNRs (dB) and the window start."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, self.splits.index(self.split), self.epoch, index])
        names = sorted(self.utterances)
        speakers = [names[k] for k in rng.permutation(len(names))[: self.num_speakers]]
        chosen: list[int] = []
        for spk in speakers:
            pool = self.utterances[spk]
            used = {self.utterances[s][k][0] for s, k in zip(speakers, chosen)}
            fresh = [k for k, (utt, _) in enumerate(pool) if utt not in used] or list(range(len(pool)))
            chosen.append(fresh[rng.integers(len(fresh))])                 # different prompts when possible
        length = min(len(self.utterances[s][k][1]) for s, k in zip(speakers, chosen))   # "min" mode
        start = 0
        if self.segment is not None and length > self.segment:
            start = int(rng.integers(length - self.segment + 1))
            length = self.segment
        snrs = [0.0, *rng.uniform(*self.snr_range, size=self.num_speakers - 1).tolist()]
        return {"speakers": speakers, "utterances": [self.utterances[s][k][0] for s, k in zip(speakers, chosen)],
                "audio": [self.utterances[s][k][1] for s, k in zip(speakers, chosen)],
                "snr_db": snrs, "start": start, "length": length}

    def __getitem__(self, index: int) -> dict:
        plan = self.plan(index)
        start, length = plan["start"], plan["length"]
        sources = np.stack([a[start: start + length] for a in plan["audio"]]).astype(np.float64)
        sources /= np.sqrt((sources ** 2).mean(axis=1, keepdims=True)) + 1e-8
        sources *= 10 ** (-np.asarray(plan["snr_db"])[:, None] / 20)       # SNR of source 0 over source k
        gain = 0.05 / (np.sqrt((sources.sum(0) ** 2).mean()) + 1e-8)
        if self.segment is not None and length < self.segment:
            sources = np.pad(sources, ((0, 0), (0, self.segment - length)))
        sources = torch.from_numpy(sources * gain).float()
        return {"mixture": sources.sum(0), "sources": sources}

    def collate(self, samples: list[dict]) -> dict:
        longest = max(s["mixture"].shape[-1] for s in samples)
        pad = lambda t: torch.nn.functional.pad(t, (0, longest - t.shape[-1]))
        return {
            "mixture": torch.stack([pad(s["mixture"]) for s in samples]),
            "sources": torch.stack([pad(s["sources"]) for s in samples]),
            "lengths": torch.tensor([s["mixture"].shape[-1] for s in samples]),
        }

    @property
    def metadata(self) -> dict:
        return {"num_speakers": self.num_speakers}

    # ---- conformance-kit examples ----
    @classmethod
    def example(cls, tmp_dir: Path) -> dict:
        """Three "speakers" of synthetic voiced sounds (distinct pitches), ten utterances each."""
        base = Path(tmp_dir) / "speech"
        rate = 8000
        t = np.arange(int(0.3 * rate)) / rate
        for k, pitch in enumerate((110.0, 180.0, 250.0)):
            for u in range(10):
                f0 = pitch * (1 + 0.03 * u)
                wave = sum(np.sin(2 * np.pi * h * f0 * t) / h for h in range(1, 6)) * np.hanning(len(t))
                _write_wav_atomic(base / f"spk{k}" / f"utt{u:02d}.wav", (0.3 * wave).astype(np.float32), rate)
        return {"root": str(Path(tmp_dir) / "root"), "speech_dir": str(base), "num_mixtures": 4, "num_eval_mixtures": 2,
                "segment_seconds": 0.25}

    @classmethod
    def broken_example(cls, tmp_dir: Path) -> dict:
        """A ``.wav`` that is not audio."""
        kwargs = cls.example(tmp_dir)
        for utt in ("utt00", "utt01", "utt02", "utt03", "utt04", "utt05", "utt06", "utt07", "utt08", "utt09"):
            (Path(kwargs["speech_dir"]) / "spk0" / f"{utt}.wav").write_text("this is not a RIFF file\n")
        return kwargs
