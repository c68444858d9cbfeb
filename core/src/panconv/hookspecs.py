"""The panconv plugin contract.

A plugin is a module named by an entry point in the ``panconv`` group::

    # pyproject.toml of the plugin
    [project.entry-points.panconv]
    graph = "panconv_graph.plugin"

The entry-point name (``graph``) is the plugin's name; every component it registers is
qualified by it (``graph.LightGCN``). The module holds functions decorated with
:data:`panconv.hookimpl`. Every hook below is optional; implement the ones you need.

Contribution hooks receive a ``register`` callable. Registration is explicit, never an
import side effect, and lazy: pass an import string ``"package.module:Factory"`` so that
listing components imports nothing heavy::

    register(name, target, *, kind=None, doc=None, tags=(), args=None)

``name``
    The short name, unique inside the plugin (``"LightGCN"``).
``target``
    ``"module:attr"`` (preferred, imported on first use) or the callable itself.
``kind``
    Only for :func:`panconv_register_models`: ``"model"`` (a whole model, the default),
    ``"backbone"``, ``"neck"`` or ``"head"``.
``doc``
    A one-line description shown by ``panconv list``; defaults to the first line of the
    target's docstring once it is imported.
``args``
    For a size variant: the constructor arguments it fixes, as data (timm's ``model_args``)::

        register("convnext_tiny", "panconv_vision.models.convnext:ConvNeXt", kind="backbone",
                 args=dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768)),
                 doc="ConvNeXt-T (Table 1): 28.6M with the ImageNet-1k head")

    The variant's signature is the class's with these defaults, so a config's keys are
    checked against it and ``panconv info`` shows it; a config may still override any of them.

This file is the single source of the hook reference in ``docs/hooks.md``
(``python -m panconv.docs`` regenerates it).
"""

from __future__ import annotations

import pluggy

PROJECT = "panconv"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --------------------------------------------------------------------------- contributions


@hookspec
def panconv_register_models(register):
    """Register whole models, backbones, necks and heads.

    Call model: called once per plugin, with a ``register`` of its own (so every entry is
    attributed to its plugin), when that registry is first needed; plugins in pluggy's order
    (``tryfirst``/``trylast`` honoured). If it raises, everything the plugin registered is
    rolled back and the plugin is marked failed; the others are unaffected. Return value
    ignored. ``@hookimpl(wrapper=True)`` / ``hookwrapper=True`` are refused at registration.

    Called once per plugin when the registry is first needed (``panconv list``, building
    a config). ``register(name, target, kind=...)`` with ``kind`` one of ``"model"``,
    ``"backbone"``, ``"neck"``, ``"head"``.

    A whole model implements :class:`panconv.api.Model` (``forward``/``loss``/``predict``);
    a backbone, neck or head implements the matching interface and is composed by
    ``model: {backbone: ..., neck: ..., head: ...}`` in a config.

    Example::

        @hookimpl
        def panconv_register_models(register):
            register("LightGCN", "panconv_graph.models.lightgcn:LightGCN")
            register("ConvNeXt", "panconv_vision.models.convnext:ConvNeXt", kind="backbone")
            register("FPN", "panconv_vision.models.fpn:FPN", kind="neck")
    """


@hookspec
def panconv_register_datasets(register):
    """Register datasets (:class:`panconv.api.Dataset` subclasses).

    Call model: called once per plugin, with a ``register`` of its own (so every entry is
    attributed to its plugin), when that registry is first needed; plugins in pluggy's order
    (``tryfirst``/``trylast`` honoured). If it raises, everything the plugin registered is
    rolled back and the plugin is marked failed; the others are unaffected. Return value
    ignored. ``@hookimpl(wrapper=True)`` / ``hookwrapper=True`` are refused at registration.

    Called once per plugin when the dataset registry is first needed.

    Example::

        @hookimpl
        def panconv_register_datasets(register):
            register("RecSysData", "panconv_graph.datasets.recsys:RecSysData")
    """


@hookspec
def panconv_register_evaluators(register):
    """Register evaluators (:class:`panconv.api.Evaluator` subclasses).

    Call model: called once per plugin, with a ``register`` of its own (so every entry is
    attributed to its plugin), when that registry is first needed; plugins in pluggy's order
    (``tryfirst``/``trylast`` honoured). If it raises, everything the plugin registered is
    rolled back and the plugin is marked failed; the others are unaffected. Return value
    ignored. ``@hookimpl(wrapper=True)`` / ``hookwrapper=True`` are refused at registration.

    Example::

        @hookimpl
        def panconv_register_evaluators(register):
            register("FullRanking", "panconv_graph.evaluators.ranking:FullRankingEvaluator")
    """


@hookspec
def panconv_register_transforms(register):
    """Register data transforms (callables applied to a sample or a batch).

    Call model: called once per plugin, with a ``register`` of its own (so every entry is
    attributed to its plugin), when that registry is first needed; plugins in pluggy's order
    (``tryfirst``/``trylast`` honoured). If it raises, everything the plugin registered is
    rolled back and the plugin is marked failed; the others are unaffected. Return value
    ignored. ``@hookimpl(wrapper=True)`` / ``hookwrapper=True`` are refused at registration.

    Example::

        @hookimpl
        def panconv_register_transforms(register):
            register("LogMel", "panconv_audio.transforms:LogMel")
    """


@hookspec
def panconv_register_kernels(register):
    """Register kernels (:class:`panconv.api.Kernel` instances or factories).

    Call model: called once per plugin, with a ``register`` of its own (so every entry is
    attributed to its plugin), when that registry is first needed; plugins in pluggy's order
    (``tryfirst``/``trylast`` honoured). If it raises, everything the plugin registered is
    rolled back and the plugin is marked failed; the others are unaffected. Return value
    ignored. ``@hookimpl(wrapper=True)`` / ``hookwrapper=True`` are refused at registration.

    A kernel is one named operation with a pure-PyTorch reference and optional
    accelerated implementations; see :mod:`panconv.api.kernel`.

    Example::

        @hookimpl
        def panconv_register_kernels(register):
            register("spmm_sym", "panconv_graph.kernels.spmm:spmm_kernel")
    """


@hookspec
def panconv_register_losses(register):
    """Register loss functions (``nn.Module`` factories) usable from configs.

    Call model: called once per plugin, with a ``register`` of its own (so every entry is
    attributed to its plugin), when that registry is first needed; plugins in pluggy's order
    (``tryfirst``/``trylast`` honoured). If it raises, everything the plugin registered is
    rolled back and the plugin is marked failed; the others are unaffected. Return value
    ignored. ``@hookimpl(wrapper=True)`` / ``hookwrapper=True`` are refused at registration.

    Example::

        @hookimpl
        def panconv_register_losses(register):
            register("SISNRPIT", "panconv_audio.losses:SISNRPIT")
    """


# --------------------------------------------------------------------------- lifecycle


@hookspec
def panconv_before_run(config, work_dir):
    """Called once before training/evaluation starts, on every rank.

    Call model: every plugin's implementation is called in pluggy's order (``tryfirst``/
    ``trylast`` honoured), each on its own: one that raises is reported as a warning (re-raised
    under ``--strict``) and the others still run. Return values are ignored. Wrappers are
    refused at registration.

    ``config`` is the merged, validated config as a plain ``dict``; ``work_dir`` the run's
    output directory (a :class:`pathlib.Path`). Use it to start a tracker. Return value
    is ignored. An exception here is reported and does not stop the run.

    Example::

        @hookimpl
        def panconv_before_run(config, work_dir):
            mytracker.init(project="panconv", config=config, dir=str(work_dir))
    """


@hookspec
def panconv_after_evaluation(config, work_dir, split, epoch, metrics):
    """Called after every evaluation (``split`` is ``"val"`` or ``"test"``), rank 0 only.

    Call model: every plugin's implementation is called in pluggy's order (``tryfirst``/
    ``trylast`` honoured), each on its own: one that raises is reported as a warning (re-raised
    under ``--strict``) and the others still run. Return values are ignored. Wrappers are
    refused at registration.

    ``epoch`` is the 1-based epoch just finished (0 for a stand-alone test), ``metrics``
    a ``dict[str, float]``.

    Example::

        @hookimpl
        def panconv_after_evaluation(config, work_dir, split, epoch, metrics):
            mytracker.log({f"{split}/{k}": v for k, v in metrics.items()}, step=epoch)
    """


@hookspec
def panconv_after_run(config, work_dir, metrics):
    """Called once when the run ends successfully, rank 0 only.

    Call model: every plugin's implementation is called in pluggy's order (``tryfirst``/
    ``trylast`` honoured), each on its own: one that raises is reported as a warning (re-raised
    under ``--strict``) and the others still run. Return values are ignored. Wrappers are
    refused at registration.

    ``metrics`` is the final ``dict[str, float]`` (the test metrics when a test split ran,
    else the last validation metrics).

    Example::

        @hookimpl
        def panconv_after_run(config, work_dir, metrics):
            mytracker.finish(summary=metrics)
    """


@hookspec
def panconv_add_commands(subparsers):
    """Add subcommands to the ``panconv`` CLI.

    Call model: called once per plugin when the CLI builds its parser, in pluggy's order; a
    plugin that raises here is marked failed and its commands are absent, the CLI still works.
    Wrappers are refused at registration.

    ``subparsers`` is the ``argparse`` sub-parser action. Each added parser must set a
    ``func`` default taking the parsed ``argparse.Namespace`` and returning an exit code.
    Called when the CLI starts, so keep this function import-light.

    Example::

        @hookimpl
        def panconv_add_commands(subparsers):
            p = subparsers.add_parser("cam", help="Eigen-CAM heatmap of an image")
            p.add_argument("config")
            p.set_defaults(func=lambda args: __import__("panconv_vision.tools.cam").tools.cam.main(args))
    """


CONTRIBUTION_HOOKS = {
    "panconv_register_models": "model",
    "panconv_register_datasets": "dataset",
    "panconv_register_evaluators": "evaluator",
    "panconv_register_transforms": "transform",
    "panconv_register_kernels": "kernel",
    "panconv_register_losses": "loss",
}
