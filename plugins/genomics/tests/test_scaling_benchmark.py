"""``benchmarks/genomics_hyenadna_scaling.py``: its three step modes measure what they say (training saves
activations, checkpointing saves only the blocks' inputs, inference saves nothing), and its stopping rules
extrapolate from the last two lengths."""

from pathlib import Path

import pytest

from panconv.testing import load_script

BENCHMARK = Path(__file__).resolve().parents[3] / "benchmarks" / "genomics_hyenadna_scaling.py"


@pytest.fixture(scope="module")
def bench():
    return load_script(BENCHMARK, "genomics_hyenadna_scaling")


def test_modes_save_for_backward_what_they_should(bench):
    saved = {}
    for mode in ("train", "checkpointed", "inference"):
        model = bench.build("HyenaDNA", 64, 8, 2, "cpu", None)
        seconds, _, saved[mode] = bench.measure(model, 64, "cpu", 0.0, mode, min_steps=1)
        assert seconds > 0
        if mode == "checkpointed":   # the blocks were wrapped: a later forward recomputes instead of storing
            assert all(getattr(block.forward, "__wrapped__", None) for block in model.blocks)
    # checkpointing keeps each block's input (N, L, d) only: 2 blocks x 64 x 8 floats, plus the final norm's
    assert saved["inference"] == 0 < saved["checkpointed"] < saved["train"] / 4


def test_prediction_extrapolates_the_last_growth_and_never_below_linear(bench):
    points = {64: (1.0, 100, 0), 128: (3.0, 300, 0)}
    assert bench.predict(points, 256, 0) == pytest.approx(9.0)       # growth 3x per doubling continues
    assert bench.predict({128: (3.0, 300, 0)}, 256, 1) == 1200       # one point: assume quadratic (x4)
    assert bench.predict({64: (2.0, 0, 0), 128: (2.2, 0, 0)}, 256, 0) == pytest.approx(4.4)  # at least x2
    assert bench.predict(points, 1024, 0) is None                    # nothing at L/2: no prediction


def test_main_prints_both_models_per_length_in_inference_mode(bench, capsys):
    bench.main(["--mode", "inference", "--start", "64", "--stop", "128", "--min-time", "0", "--d-model", "8",
                "--n-layers", "1", "--device", "cpu"])
    out = capsys.readouterr().out
    assert "mode=inference" in out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [(r[0], r[1]) for r in rows] == [("64", "HyenaDNA"), ("64", "Transformer"),
                                              ("128", "HyenaDNA"), ("128", "Transformer")]
    assert all(r[-4] == "0.0" for r in rows)                           # saved MB: inference keeps nothing


def test_min_steps_below_one_is_refused(bench):
    with pytest.raises(SystemExit):
        bench.main(["--min-steps", "0", "--device", "cpu"])


def test_no_transformer_measures_hyenadna_alone(bench, capsys):
    bench.main(["--mode", "inference", "--start", "64", "--stop", "64", "--min-time", "0", "--d-model", "8",
                "--n-layers", "1", "--device", "cpu", "--no-transformer", "--min-steps", "1"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.strip()[:1].isdigit()]
    assert [(r[0], r[1]) for r in rows] == [("64", "HyenaDNA")]
    assert rows[0][-2:] == ["-", "-"]                                  # no Transformer to take ratios against
