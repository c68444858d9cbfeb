"""AttributeDigits: real MNIST digits with seeded thickness / slant / scale attributes."""

import pytest
import torch

from panconv_vision.datasets.attributes import AttributeDigits, apply_slant_scale, apply_thickness, slant_of
from panconv_vision.datasets.digits import MNIST_MEAN, MNIST_STD


@pytest.fixture(scope="module")
def digits():
    return AttributeDigits(split="val", limit=1500, seed=0)


def _raw(ds):
    return ds.inputs * MNIST_STD + MNIST_MEAN


def test_items_batches_and_metadata(digits):
    item = digits[0]
    assert item["inputs"].shape == (1, 28, 28) and item["attributes"].shape == (3,)
    assert int(item["attributes"][0]) == int(item["labels"])       # attribute 0 is the class
    batch = digits.collate([digits[i] for i in range(5)])
    assert batch["attributes"].shape == (5, 3) and batch["attributes"].dtype == torch.long
    assert digits.metadata == {"num_classes": 10, "in_channels": 1, "num_attributes": 3,
                               "attribute_values": [10, 3, 3], "attribute_names": ["class", "thickness", "slant"]}
    scaled = AttributeDigits(split="val", limit=50, scales=(0.7, 1.0), channels=3, size=32)
    assert scaled.metadata["attribute_names"] == ["class", "thickness", "slant", "scale"]
    assert scaled.collate([scaled[0], scaled[1]])["inputs"].shape == (2, 3, 32, 32)


def test_seeded_uniform_and_independent(digits):
    again = AttributeDigits(split="val", limit=1500, seed=0)
    assert torch.equal(again.attributes, digits.attributes) and torch.equal(again.inputs, digits.inputs)
    other = AttributeDigits(split="val", limit=1500, seed=1)
    assert torch.equal(other.attributes[:, 0], digits.attributes[:, 0])      # same digits
    assert not torch.equal(other.attributes[:, 1:], digits.attributes[:, 1:])  # other draws
    for k in (1, 2):
        counts = torch.bincount(digits.attributes[:, k], minlength=3).float()
        assert counts.min() > 0.28 * len(digits)                                # ~1/3 each
    # independent of the class: the thickness mix is about the same for every digit
    for c in range(10):
        rows = digits.attributes[:, 0] == c
        share = (digits.attributes[rows, 1] == 2).float().mean()
        assert 0.15 < float(share) < 0.55


def test_levels_are_what_they_say(digits):
    x, a = _raw(digits), digits.attributes
    mass = [float(x[a[:, 1] == v].sum((1, 2, 3)).mean()) for v in range(3)]
    assert mass[0] < 0.75 * mass[1] and mass[2] > 1.4 * mass[1]                 # thin < normal < thick
    slant = [float(slant_of(x[a[:, 2] == v]).mean()) for v in range(3)]
    assert slant[0] < slant[1] - 15 and slant[2] > slant[1] + 15                # -25, 0, +25 degrees of shear


def test_transforms_on_a_bar():
    bar = torch.zeros(1, 1, 28, 28)
    bar[..., 4:24, 13:15] = 1.0                                                  # a vertical stroke
    assert float(slant_of(bar)) == pytest.approx(0.0, abs=1e-4)
    leaned = apply_slant_scale(bar, torch.tensor([30.0]), torch.tensor([1.0]))
    assert float(slant_of(leaned)) == pytest.approx(30.0, abs=3.0)              # top to the right
    assert float(leaned.sum()) == pytest.approx(float(bar.sum()), rel=0.05)
    small = apply_slant_scale(bar, torch.tensor([0.0]), torch.tensor([0.5]))
    assert float(small.sum()) == pytest.approx(0.25 * float(bar.sum()), rel=0.1)  # half the size: 1/4 the area
    thick = apply_thickness(bar, torch.tensor([1]))
    thin = apply_thickness(bar, torch.tensor([-1]))
    assert int((thick > 0.5).sum()) == 22 * 4 and int((thin > 0.5).sum()) == 19 * 1


@pytest.mark.parametrize("kwargs, message", [
    ({"thickness": ()}, "thickness must list at least one value"),
    ({"slants": (0.0, 0.0)}, "slants has repeated values"),
    ({"slants": (0.0, 60.0)}, r"slants values must be in \[-45, 45\]"),
    ({"scales": (0.2, 1.0)}, r"scales values must be in \[0.5, 1.5\]"),
    ({"thickness": (0.5, 1)}, "thickness must be integers"),
    ({"thickness": ("thin",)}, "thickness must be a list of numbers"),
    ({"size": 4}, "size must be >= 8"),
])
def test_bad_parameters_are_one_line_errors(kwargs, message):
    with pytest.raises(ValueError, match=message) as err:
        AttributeDigits(split="val", limit=10, **kwargs)
    assert "\n" not in str(err.value)
