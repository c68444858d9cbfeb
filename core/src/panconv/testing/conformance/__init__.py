"""The conformance kit: checks that every registered component follows the panconv API.

Like scikit-learn's ``check_estimator``: each check builds a component from its declared
tiny example (``example_config()``, ``example_inputs()``, ``example()``) and asserts one
property of the contract. Which checks run is decided by what the component is (its kind)
and what it declares it can do (its capabilities, :mod:`.capabilities`). A component opts
out of a check only by declaring a reason in ``conformance_skips = {"check_name": "reason"}``;
the report shows it.

The checks live by what they check: :mod:`.models` (models, backbones, necks, heads; size
variants), :mod:`.capabilities` (re-parameterisation, recurrent mode), :mod:`.datasets`,
:mod:`.evaluators`, :mod:`.kernels`; :mod:`.runner` chooses and runs them.

Use it from pytest (see :mod:`panconv.testing.pytest_plugin`) or directly::

    from panconv.testing import check_plugin
    report = check_plugin("graph")          # list of CheckResult
"""

from __future__ import annotations

from . import capabilities, datasets, evaluators, kernels, models  # noqa: F401 - each registers its checks
from .base import CHECKS, Check, CheckResult, ConformanceError, SkipCheck
from .capabilities import CAPABILITIES, capabilities_of
from .models import SIZE_VARIANT_CHECKS, is_size_variant
from .runner import check_plugin, checks_for, describe_capabilities, describe_checks, plugin_entries, run_check

__all__ = [
    "CAPABILITIES", "CHECKS", "Check", "CheckResult", "ConformanceError", "SIZE_VARIANT_CHECKS", "SkipCheck",
    "capabilities_of", "check_plugin", "checks_for", "describe_capabilities", "describe_checks", "is_size_variant",
    "plugin_entries", "run_check",
]
