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
"""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from panconv.api import Dataset
from panconv.engine.io import atomic_write
from panconv.errors import DataError

ASTERISK_DIR = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
ASTERISK_TEXTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
FLITE_VOICES = ("awb", "rms", "slt")
DEFAULT_SPEAKERS = ("allison", *FLITE_VOICES)
_APT_HINT = "apt-get install flite asterisk-core-sounds-en-wav asterisk-core-sounds-en"


# --------------------------------------------------------------------------- audio helpers


def _read_wav(path: Path, sample_rate: int) -> np.ndarray:
    """Mono float32 at ``sample_rate``; a malformed file raises DataError naming it."""
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, OSError, ValueError) as exc:  # sf.LibsndfileError is a RuntimeError
        raise DataError(f"{path}: not a readable audio file ({exc}); replace or delete it") from None
    audio = audio.mean(axis=1)
    if rate != sample_rate:
        import torchaudio.functional as AF

        audio = AF.resample(torch.from_numpy(audio), rate, sample_rate).numpy()
    return audio


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
    """``{prompt id: text}`` of the top-level asterisk prompts that are speech of ``min_seconds`` or more."""
    if not ASTERISK_DIR.is_dir() or not ASTERISK_TEXTS.is_file():
        raise DataError(f"SpeakerMixtures: {ASTERISK_DIR} or {ASTERISK_TEXTS} not found; install them: {_APT_HINT}")
    prompts = {}
    with gzip.open(ASTERISK_TEXTS, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            key, sep, text = line.partition(":")
            key, text = key.strip(), text.strip()
            if not sep or line.startswith(";") or "/" in key or not text or text.startswith("["):
                continue
            wav = ASTERISK_DIR / f"{key}.wav"
            if wav.is_file() and sf.info(str(wav)).duration >= min_seconds:
                prompts[key] = text
    return prompts


def _synthesize_flite(voice: str, text: str, sample_rate: int) -> np.ndarray:
    import shutil
    import subprocess

    if shutil.which("flite") is None:
        raise DataError(f"SpeakerMixtures: the 'flite' program is needed for voice '{voice}'; install it: {_APT_HINT}")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "utt.wav"
        subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(out)], check=True, capture_output=True)
        return _read_wav(out, sample_rate)


# --------------------------------------------------------------------------- the dataset


class SpeakerMixtures(Dataset):
    """Seeded mixtures of ``num_speakers`` different real speakers; items ``{"mixture", "sources"}``.

    ``mixture``: ``(T,)``; ``sources``: ``(num_speakers, T)`` with ``mixture == sources.sum(0)``.
    ``collate`` pads to the longest item and adds ``lengths``. The training split has
    ``num_mixtures`` mixtures (per epoch), validation and test ``num_eval_mixtures`` each.
    """

    metadata_keys = ("num_speakers",)

    def __init__(self, root=None, split: str = "train", num_speakers: int = 2, sample_rate: int = 8000,
                 speakers: list[str] | tuple[str, ...] | None = None, speech_dir: str | None = None,
                 num_mixtures: int = 2000, num_eval_mixtures: int = 200, segment_seconds: float | None = 2.0,
                 snr_range: tuple[float, float] | list[float] = (-5.0, 5.0), min_seconds: float = 1.0,
                 split_fractions: tuple[float, float, float] | list[float] = (0.8, 0.1, 0.1),
                 max_prompts: int | None = None, seed: int = 0, dynamic_mixing: bool = True):
        super().__init__(root, split)
        self.num_speakers = num_speakers
        self.sample_rate = sample_rate
        self.segment = None if segment_seconds is None else round(segment_seconds * sample_rate)
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

    # ---- corpus discovery / generation ----
    def _discover(self, speakers, speech_dir, min_seconds, max_prompts) -> dict[str, dict[str, Path]]:
        if speech_dir is not None:
            base = Path(speech_dir).expanduser()
            if not base.is_dir():
                raise DataError(f"SpeakerMixtures: speech_dir {base} is not a directory of <speaker>/<utterance>.wav")
            files = {d.name: {f.stem: f for f in sorted(d.glob("*.wav"))}
                     for d in sorted(base.iterdir()) if d.is_dir() and (speakers is None or d.name in speakers)}
            return {spk: utts for spk, utts in files.items() if utts}
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
