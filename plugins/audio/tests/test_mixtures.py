"""SpeakerMixtures: seeded split by utterance, different speakers, SNRs, determinism, caching."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from panconv.errors import DataError
from panconv_audio.datasets.mixtures import ASTERISK_DIR, ASTERISK_TEXTS, SpeakerMixtures


@pytest.fixture()
def example(tmp_path):
    return SpeakerMixtures.example(tmp_path)


def test_items_are_sums_of_sources(example):
    ds = SpeakerMixtures(split="train", **example)
    item = ds[0]
    assert item["sources"].shape == (2, int(0.25 * 8000)) and item["mixture"].shape == (int(0.25 * 8000),)
    torch.testing.assert_close(item["mixture"], item["sources"].sum(0))
    assert ds.metadata == {"num_speakers": 2} and tuple(SpeakerMixtures.metadata_keys) == ("num_speakers",)
    batch = ds.collate([ds[i] for i in range(3)])
    assert batch["mixture"].shape == (3, 2000) and batch["sources"].shape == (3, 2, 2000)
    assert batch["lengths"].tolist() == [2000] * 3


@pytest.mark.parametrize("num_speakers", [2, 3])
def test_mixtures_have_different_speakers_and_seeded_snr(example, num_speakers):
    ds = SpeakerMixtures(split="train", num_speakers=num_speakers, **{**example, "num_mixtures": 20})
    snrs = []
    for i in range(len(ds)):
        plan = ds.plan(i)
        assert len(set(plan["speakers"])) == num_speakers
        assert len(set(plan["utterances"])) == num_speakers             # different utterances too
        assert plan["snr_db"][0] == 0.0 and all(-5 <= s <= 5 for s in plan["snr_db"])
        sources = ds[i]["sources"].double()
        for k in range(1, num_speakers):
            measured = 10 * torch.log10(sources[0].pow(2).mean() / sources[k].pow(2).mean()).item()
            assert measured == pytest.approx(plan["snr_db"][k], abs=1e-3)
        snrs += plan["snr_db"][1:]
    assert np.std(snrs) > 1.0                                             # really random, not constant


def test_split_is_by_utterance_and_disjoint(example):
    ids = {}
    for split in ("train", "val", "test"):
        ds = SpeakerMixtures(split=split, **example)
        ids[split] = {utt for utts in ds.utterances.values() for utt, _ in utts}
    assert ids["train"] and ids["val"] and ids["test"]
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    assert len(ids["train"]) == 8 and len(ids["val"]) == 1 and len(ids["test"]) == 1   # 80/10/10 of 10 ids
    # the split is seeded: other seeds hold out other utterances
    held_out = [{u for utts in SpeakerMixtures(split="val", **{**example, "seed": s}).utterances.values()
                 for u, _ in utts} for s in range(4)]
    assert len({frozenset(h) for h in held_out}) > 1


def test_deterministic_and_epochs(example):
    a, b = SpeakerMixtures(split="train", **example), SpeakerMixtures(split="train", **example)
    torch.testing.assert_close(a[1]["sources"], b[1]["sources"])
    before = a[1]["sources"].clone()
    a.set_epoch(1)
    assert not torch.equal(a[1]["sources"], before)                      # dynamic mixing: new mixtures
    a.set_epoch(0)
    torch.testing.assert_close(a[1]["sources"], before)
    val = SpeakerMixtures(split="val", **example)
    first = val[0]["sources"].clone()
    val.set_epoch(3)
    torch.testing.assert_close(val[0]["sources"], first)                  # held-out mixtures never change


def test_broken_file_raises_data_error(tmp_path):
    kwargs = SpeakerMixtures.broken_example(tmp_path)
    with pytest.raises(DataError, match=r"utt0\d\.wav"):
        SpeakerMixtures(split="train", **kwargs)


def test_too_few_speakers_is_an_error(example):
    with pytest.raises(DataError, match="num_speakers=4"):
        SpeakerMixtures(split="train", num_speakers=4, **example)


needs_corpus = pytest.mark.skipif(
    shutil.which("flite") is None or not ASTERISK_DIR.is_dir() or not ASTERISK_TEXTS.is_file(),
    reason="needs Debian flite, asterisk-core-sounds-en-wav and asterisk-core-sounds-en",
)


@needs_corpus
def test_builtin_corpus_of_real_speakers(tmp_path):
    kwargs = dict(root=tmp_path, max_prompts=10, num_mixtures=6)
    ds = SpeakerMixtures(split="train", **kwargs)
    assert sorted(ds.speakers) == ["allison", "awb", "rms", "slt"]
    cached = sorted(Path(tmp_path, "speaker_mixtures", "utterances", "sr8000").glob("*/*.wav"))
    assert len(cached) == 4 * 10 and not list(Path(tmp_path).rglob("*.tmp"))
    item = ds[0]
    assert item["sources"].shape == (2, 16000)
    assert all(s.abs().max() > 0 for s in item["sources"])
    again = SpeakerMixtures(split="train", **kwargs)                       # reads the cache
    torch.testing.assert_close(again[0]["sources"], item["sources"])


@needs_corpus
@pytest.mark.slow
def test_mossformer_small_learns_on_real_speakers(tmp_path):
    """A short run on mixtures of real speakers beats the mixture (SI-SDRi > 0) on held-out prompts."""
    import panconv
    from panconv_audio.evaluators.separation import SISDR

    torch.manual_seed(0)
    kwargs = dict(root=tmp_path, max_prompts=40, num_mixtures=40, num_eval_mixtures=16, segment_seconds=1.0)
    train, test = SpeakerMixtures(split="train", **kwargs), SpeakerMixtures(split="test", **kwargs)
    model = panconv.build("model", "audio.mossformer_small")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(15):                                                # 150 steps: ~3 dB when measured
        train.set_epoch(epoch)
        for batch in torch.utils.data.DataLoader(train, batch_size=4, shuffle=True, collate_fn=train.collate):
            loss = model.loss(model(batch), batch)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    evaluator = SISDR()
    with torch.no_grad():
        for batch in torch.utils.data.DataLoader(test, batch_size=8, collate_fn=test.collate):
            evaluator.process(batch, model.predict(model(batch), batch))
    assert evaluator.compute()["si_sdri"] > 1.0
