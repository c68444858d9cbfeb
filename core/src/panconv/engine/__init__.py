"""Training and evaluation engine (mmengine's Runner underneath); see :mod:`.runner`."""

from .io import atomic_write, atomic_write_json, load_checkpoint, model_state_dict, save_checkpoint

__all__ = ["atomic_write", "atomic_write_json", "load_checkpoint", "model_state_dict", "run_experiment",
           "save_checkpoint"]


def run_experiment(*args, **kwargs):
    from .runner import run_experiment as _run

    return _run(*args, **kwargs)
