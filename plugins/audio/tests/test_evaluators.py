import pytest

from panconv_audio.evaluators.asr import CER, WER, batch_edit_distance, edit_distance


@pytest.mark.parametrize("ref,hyp,d", [
    ("kitten", "sitting", 3), ("", "abc", 3), ("abc", "", 3), ("abc", "abc", 0), ("flaw", "lawn", 2),
    (["a", "b", "c"], ["a", "c"], 1), ("intention", "execution", 5),
])
def test_edit_distance_hand_cases(ref, hyp, d):
    assert edit_distance(ref, hyp) == d


def test_batch_edit_distance():
    assert batch_edit_distance(["ab", "cd"], ["ab", "c"]) == (1, 4)


@pytest.mark.parametrize("cls", [WER, CER])
def test_examples_and_merge(cls):
    kwargs, batches, expected = cls.example()
    ev = cls(**kwargs)
    for b, o in batches:
        ev.process(b, o)
    got = ev.compute()
    for k, v in expected.items():
        assert got[k] == pytest.approx(v)
    a, b = ev.results[:1], ev.results[1:]
    assert ev.compute_metrics(a + b) == ev.compute_metrics(ev.results)


def test_wer_hand_case():
    ev = WER()
    ev.process({"texts": ["the cat sat on the mat"]}, ["the cat sit on mat"])  # 1 sub + 1 del
    assert ev.compute()["wer"] == pytest.approx(2 / 6)
    ev = CER()
    ev.process({"texts": ["one"]}, ["on"])
    assert ev.compute()["cer"] == pytest.approx(1 / 3)
