#!/usr/bin/env bash
# The core suite (engine, rules, seeds, fixtures, properties; no torchvision/transformers) on other torch versions:
# the oldest supported (2.6.0), one in between (2.11.0, the version of the GPU image the device check ran on), and
# the newest (2.15.0) when it installs here. The pinned version (Makefile: 2.14.1) runs the full suite in `make test`.
# Each version gets its own venv, cached across runs under $DLB_CI_CACHE (torch wheels are large).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${DLB_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dl_backtrace-ci}
REQUIRED=${DLB_TORCH_REQUIRED:-"2.6.0 2.11.0"}
OPTIONAL=${DLB_TORCH_OPTIONAL:-"2.15.0"}
CORE=(tests/rules tests/engine tests/test_golden.py tests/test_worked_example.py tests/test_seeds.py
      tests/test_properties.py tests/test_relevance_io.py)
mkdir -p "$CACHE"

venv_for() {  # $1 = torch version; prints the venv's python, or fails if torch does not install
  local v=$1 dir="$CACHE/torch-$1"
  if [ ! -f "$dir/.ok" ]; then
    rm -rf "$dir"
    python3 -m venv "$dir"
    "$dir/bin/python" -m pip install -q --upgrade pip >/dev/null
    # the machine's pip constraints cap torch at the pinned version; this venv asks for another on purpose
    PIP_CONSTRAINT=/dev/null "$dir/bin/python" -m pip install -q "torch==$v" numpy pytest hypothesis safetensors \
      >/dev/null 2> >(grep -v "^WARNING: Location" >&2) || return 1
    touch "$dir/.ok"
  fi
  echo "$dir/bin/python"
}

status=0
for v in $REQUIRED $OPTIONAL; do
  echo "== torch $v: core suite"
  if ! py=$(venv_for "$v"); then
    case " $OPTIONAL " in
      *" $v "*) echo "torch $v does not install here: skipped (optional)"; continue ;;
      *) echo "torch $v failed to install"; status=1; continue ;;
    esac
  fi
  PYTHONPATH="$PWD/src:$PWD" "$py" -m pytest -q -o addopts="" -p no:cacheprovider -W ignore::DeprecationWarning \
    "${CORE[@]}" || status=1
done
exit $status
