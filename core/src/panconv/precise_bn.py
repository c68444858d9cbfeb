"""Re-estimate a trained model's batch-norm population statistics on training batches ("precise BN").

During training each batch-norm layer keeps an exponential moving average (momentum 0.1) of its batch statistics,
and evaluation reads that average. While the weights still move fast (a short run, or a constant learning rate)
the average lags behind what the current weights produce, and evaluation scores below the same weights with batch
statistics. Precise BN (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021) keeps every weight and replaces only
the running statistics by their plain average over a number of training batches, computed with the final weights
and no gradient.

Layers: torch's batch norms that track running statistics, and any other module that follows their protocol (a
``running_mean`` buffer, a ``momentum`` attribute where ``None`` means a cumulative average, and
``reset_running_stats()``), e.g. panconv-vision's Poincaré midpoint batch norm.

From the command line, on a work dir or checkpoint written by ``panconv run``::

    panconv precise-bn work_dirs/X/epoch_2.pth work_dirs/X_precise/epoch_2.pth --batches 20
    panconv run CONFIG --eval-only --resume work_dirs/X_precise/epoch_2.pth
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import CheckpointError, ConfigError


def batchnorm_layers(model: nn.Module) -> list[nn.Module]:
    """The layers of ``model`` whose running statistics :func:`recompute_batchnorm` re-estimates."""
    found = []
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if module.track_running_stats:
                found.append(module)
        elif (callable(getattr(module, "reset_running_stats", None)) and hasattr(module, "momentum")
              and isinstance(getattr(module, "running_mean", None), torch.Tensor)):
            found.append(module)
    return found


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, batches: Iterable[Any]) -> int:
    """Replace the running statistics of every batch-norm layer of ``model`` (:func:`batchnorm_layers`) by their
    average over ``batches``: forward passes ``model(batch)`` in train mode, without gradient; no weight changes.
    Returns the number of batches used; raises ``ValueError`` when there is none or the model has no batch norm.
    The layers' momenta are restored and the model is left in eval mode."""
    layers = batchnorm_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no batch-norm layer with running statistics")
    momenta = [layer.momentum for layer in layers]
    saved = [{k: v.clone() for k, v in layer.state_dict().items()} for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average over the batches
    model.train()
    count = 0
    try:
        for batch in batches:
            model(batch)
            count += 1
        if count == 0:
            raise ValueError("recompute_batchnorm: no batches")
    except BaseException:
        for layer, state in zip(layers, saved):  # nothing half-done: the statistics it had
            layer.load_state_dict(state)
        raise
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        model.eval()
    return count


def precise_bn(path: str | Path, output: str | Path, *, batches: int = 20, data_root: str | Path | None = None,
               seed: int = 0) -> str:
    """Write ``output``: the checkpoint of ``path`` (a work dir or checkpoint written by ``panconv run``) with its
    batch-norm statistics re-estimated on ``batches`` training batches of the run's own config (its
    ``config.yaml``: data, batch size, transforms), drawn in a seeded order. Every other entry of the checkpoint is
    kept; ``config.yaml`` is copied next to ``output`` when that directory has none, so it is a work dir
    ``panconv.load_model`` and ``--resume`` accept. Returns a one-line summary."""
    from .builder import build_datasets
    from .config import load_config
    from .factory import find_checkpoint, load_model
    from .io import load_checkpoint, save_checkpoint

    if batches < 1:
        raise ValueError(f"batches must be >= 1, got {batches}")
    source = Path(path)
    checkpoint_path = find_checkpoint(source) if source.is_dir() else source
    if not checkpoint_path.is_file():
        raise CheckpointError(f"{source}: no such work dir or checkpoint")
    output = Path(output)
    if output.resolve() == checkpoint_path.resolve():
        raise ValueError(f"{output}: the output would overwrite the checkpoint it is computed from; name another file")
    config_path = checkpoint_path.parent / "config.yaml"
    if not config_path.is_file():
        raise ConfigError(f"{config_path}: not found (the config the checkpoint was trained with)")
    cfg = load_config(config_path)
    model = load_model(checkpoint_path, config=config_path, data_root=data_root)
    train = build_datasets(cfg, stages=("train",), data_root=data_root).get("train")
    if train is None:
        raise ConfigError(f"{config_path}: data.splits.train is not set: precise BN needs training batches")
    batch_size = int(cfg["data"].get("batch_size", 32))
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).tolist()
    collate = getattr(train, "collate", None) or torch.utils.data.default_collate
    loader = (collate([train[i] for i in order[j:j + batch_size]])
              for j in range(0, min(len(order), batches * batch_size), batch_size))
    used = recompute_batchnorm(model, loader)
    checkpoint = load_checkpoint(checkpoint_path)
    state = checkpoint.get("state_dict", checkpoint)
    prefixed = bool(state) and all(k.startswith("model.") for k in state)
    fresh = {("model." if prefixed else "") + k: v for k, v in model.state_dict().items()}
    if isinstance(checkpoint.get("state_dict"), dict):
        checkpoint["state_dict"] = {**state, **fresh}
    else:
        checkpoint = {**checkpoint, **fresh}
    output.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(checkpoint, output)
    if not (output.parent / "config.yaml").exists():
        shutil.copyfile(config_path, output.parent / "config.yaml")
    return (f"re-estimated {len(batchnorm_layers(model))} batch-norm layers on {used} batches of up to {batch_size} "
            f"training samples ({cfg['data']['type']}) -> {output}")
