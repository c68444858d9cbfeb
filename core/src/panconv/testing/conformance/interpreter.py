"""Child process of the kernel check: ``python -m panconv.testing.conformance.interpreter module:attr``.

Started with ``TRITON_INTERPRET=1``, so the kernel's ``@triton.jit`` functions are defined for
the interpreter; compares its Triton implementations with the reference on the CPU and prints
``{"ran": n, "failure": message or null}`` as the last line.
"""

from __future__ import annotations

import importlib
import json
import sys

from .kernels import as_kernel, compare


def main(target: str) -> int:
    module_name, _, attr = target.partition(":")
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    ran, failure = compare(as_kernel(obj), backends=("triton",))
    print(json.dumps({"ran": ran, "failure": failure}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
