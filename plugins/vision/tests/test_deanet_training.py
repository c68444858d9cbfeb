"""DEA-Net at training time: the official training step, and that the network fits hazy crops.

Issue 18's short run left DEA-Net below the hazy input (SSIM 0.563 vs 0.739); these tests separate "the model
or its training path differs from the official one" from "the budget is too short":

* ``fixtures/deanet_train_parity.pt`` holds, for the official ``code/model/backbone_train.py`` DEANet (base
  width 8, the official 4/4/8 blocks) on our seeded weights in train mode: the L1 loss of the official
  ``train.py`` (``nn.L1Loss``), every parameter's gradient norm after ``backward``, and the output after one
  step of the official optimiser (Adam, betas (0.9, 0.999), eps 1e-8, the start lr 4e-4). Equal values mean the
  official training path has nothing ours lacks (no global residual, no output sigmoid, no normalisation
  layers, PyTorch's default init: the parameters are ours). Regenerate with the official code fetched (not
  committed) and ``einops`` importable::

      git -C <DEA-Net checkout> archive HEAD code | tar -x -C /tmp/deanet
      PANCONV_RECORD_DEANET_TRAIN=/tmp/deanet/code PYTHONPATH=<dir with einops> \
          pytest plugins/vision/tests/test_deanet_training.py

* A small DEA-Net trained on four hazy crops of the bundled photos fits them well above the hazy input's PSNR,
  although (as the official network: no skip from the input to the output) it starts far below it.
* The continued runs (``examples/vision_deanet_photos_long*.yaml``) validate and each starts from the previous
  run's last checkpoint with the same model and test crops.
"""

import os
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from panconv import load_config
from panconv.testing import dry_run
from panconv_vision.models.deanet import DEANet

FIXTURE = Path(__file__).parent / "fixtures" / "deanet_train_parity.pt"
LR = 4e-4  # official option_train.py --start_lr


def _ours():
    torch.manual_seed(0)
    return DEANet(base_dim=8, blocks=(4, 4, 8)).train()


def _batch():
    g = torch.Generator().manual_seed(3)
    return torch.rand(1, 3, 16, 16, generator=g), torch.rand(1, 3, 16, 16, generator=g)


def _step(model, x, y):
    """One iteration of the official train.py loop (L1 only): loss, backward, Adam step; returns the loss."""
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, betas=(0.9, 0.999), eps=1e-8)
    loss = F.l1_loss(model(x), y)
    loss.backward()
    grad_norms = torch.stack([p.grad.norm() for p in model.parameters()])
    optimizer.step()
    optimizer.zero_grad()
    return loss.detach(), grad_norms


def _record(official_dir):
    sys.path.insert(0, official_dir)
    torch.cuda.FloatTensor = lambda *s: torch.zeros(*s)  # the official kernels allocate CUDA tensors
    from model.backbone_train import DEANet as Official

    ours, official = _ours(), Official(base_dim=8).train()
    assert len(official.state_dict()) == len(ours.state_dict())
    official.load_state_dict({ko: v for ko, v in zip(official.state_dict(), ours.state_dict().values())})
    x, y = _batch()
    loss, grad_norms = _step(official, x, y)
    with torch.no_grad():
        after = official(x)
    torch.save({"loss": loss, "grad_norms": grad_norms, "output_after_step": after,
                "source": "cecret3350/DEA-Net code/model/backbone_train.py, code/train.py (L1 term)"}, FIXTURE)


def test_training_step_matches_the_official_code():
    if os.environ.get("PANCONV_RECORD_DEANET_TRAIN"):
        _record(os.environ["PANCONV_RECORD_DEANET_TRAIN"])
    rec = torch.load(FIXTURE)
    model = _ours()
    x, y = _batch()
    loss, grad_norms = _step(model, x, y)
    torch.testing.assert_close(loss, rec["loss"], atol=1e-6, rtol=1e-6)
    assert grad_norms.shape == rec["grad_norms"].shape  # same parameters, in the same order
    torch.testing.assert_close(grad_norms, rec["grad_norms"], atol=1e-6, rtol=1e-5)  # measured 1.2e-7
    with torch.no_grad():
        torch.testing.assert_close(model(x), rec["output_after_step"], atol=1e-5, rtol=1e-5)


def _psnr(pred, target):
    return float(10 * torch.log10(1 / F.mse_loss(pred.clamp(0, 1), target)))


def test_a_small_deanet_fits_hazy_crops_beyond_the_hazy_input():
    from panconv_vision.datasets.restoration import RestorationPhotos

    if RestorationPhotos.check_prerequisites(Path(".")):
        pytest.skip("the bundled photos are not installed (scikit-image, scikit-learn, opencv-doc)")
    data = RestorationPhotos(split="train", task="dehaze", patch_size=32, patches_per_image=1, baseline=False)
    batch = data.collate([data[i] for i in range(4)])
    x, y = batch["inputs"], batch["targets"]
    hazy = _psnr(x, y)
    torch.manual_seed(0)
    model = DEANet(base_dim=8, blocks=(1, 1, 1))
    with torch.no_grad():
        start = _psnr(model({"inputs": x}), y)
    assert start < hazy - 2  # no global residual (as the official code): it does not start at the input
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(120):
        out = model({"inputs": x})
        loss = model.loss(out, batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        assert _psnr(model({"inputs": x}), y) > hazy + 5


EXAMPLES = Path(__file__).parents[3] / "examples"
CHAIN = ["vision_deanet_photos.yaml", "vision_deanet_photos_long.yaml", "vision_deanet_photos_long2.yaml"]


@pytest.mark.parametrize("name", CHAIN[1:])
def test_the_continued_runs_validate_and_start_from_the_previous_run(name):
    code, out, err = dry_run(EXAMPLES / name)
    assert code == 0, err
    assert "config is valid" in out
    cfg = load_config(EXAMPLES / name)  # with its _base_ resolved
    previous = load_config(EXAMPLES / CHAIN[CHAIN.index(name) - 1])
    assert cfg["model"] == previous["model"]  # the checkpoint fits
    assert cfg["data"]["patches_per_image"] == previous["data"]["patches_per_image"]  # the same test crops
    last = f"epoch_{previous['train']['epochs']}.pth"
    assert cfg["run"]["init_from"]["path"] == f"{previous['run']['work_dir']}/{last}"
    assert previous["train"]["epochs"] % previous["train"]["checkpoint"]["interval"] == 0  # that file is written
