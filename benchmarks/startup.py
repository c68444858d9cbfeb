"""Start-up time of the CLI: `panconv --help`, `panconv list`, `import panconv`, and `import torch` as the peer.

    .venv/bin/python benchmarks/startup.py [--repeat 5]

Prints the median wall time of each command (fresh interpreter each run) and its ratio to
`python -c "import torch"`, measured in the same run. Target: `panconv list` < 0.5 s with
every plugin installed. Measured, not asserted.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from importlib import metadata

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "import panconv": [sys.executable, "-c", "import panconv"],
    "panconv --help": [sys.executable, "-m", "panconv.cli", "--help"],
    "panconv list": [sys.executable, "-m", "panconv.cli", "list"],
    "panconv plugins": [sys.executable, "-m", "panconv.cli", "plugins"],
    "import torch (peer)": [sys.executable, "-c", "import torch"],
}


def median_seconds(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    plugins = sorted(ep.name for ep in metadata.entry_points(group="panconv"))
    print(f"plugins installed: {', '.join(plugins) or '(none)'}; median of {args.repeat} runs")
    results = {name: median_seconds(cmd, args.repeat) for name, cmd in COMMANDS.items()}
    peer = results["import torch (peer)"]
    print(f"{'command':<22} {'seconds':>8} {'x import torch':>15}")
    for name, seconds in results.items():
        print(f"{name:<22} {seconds:>8.3f} {seconds / peer:>15.2f}")


if __name__ == "__main__":
    main()
