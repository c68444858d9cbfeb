"""Training and evaluation engine (mmengine's Runner underneath); see :mod:`.runner`."""

__all__ = ["run_experiment"]


def run_experiment(*args, **kwargs):
    from .runner import run_experiment as _run

    return _run(*args, **kwargs)
