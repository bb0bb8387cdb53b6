#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine, then lint (ruff) and type-check
# (mypy), both configured in pyproject.toml, and run it: the whole suite with the kernels compiled
# ahead of time (the default; gcc and the Python headers build them), the kernel tests again with
# numba's JIT (MADPIPE_JIT=1), the suite as plain Python (NUMBA_DISABLE_JIT=1). No -m filter:
# the slow tests run here too.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
APT_PACKAGES="tshark opensm ibsim-utils infiniband-diags gcc gdb python3-dev"  # gdb: fuzz opensm/diags crash backtraces
missing=""
for pkg in $APT_PACKAGES; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q $missing
fi
# A Debian-managed python3 refuses pip installs (PEP 668); CI machines are throwaway, so allow it.
PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q -e '.[test]'
python3 -m ruff check .
# mypy names modules by their folders, and madpipe has none called madpipe/ (setuptools maps codecs/
# and pipeline/ to madpipe.codecs and madpipe.pipeline): it reads them through a tree that has one.
types="$(mktemp -d)"
trap 'rm -rf "$types"' EXIT
mkdir "$types/madpipe"
ln -s "$PWD/codecs" "$types/madpipe/codecs"
ln -s "$PWD/pipeline" "$types/madpipe/pipeline"
MYPYPATH="$types" python3 -m mypy
# Tools are installed above: a missing one is a failure here, never a skip.
export MADPIPE_REQUIRE_TOOLS=1
python3 -m pytest -q "$@"
# The kernels again, compiled by numba's JIT in the process (what a machine without gcc runs),
# beside the next pass on the other core (~3 min less of CI's ~25; neither pass times anything
# or runs a real tool); its output follows the next pass's.
jit_log="$types/jit.log"
MADPIPE_JIT=1 python3 -m pytest -q -p no:cacheprovider tests/test_snoop.py tests/test_paravirt.py \
  tests/test_fabric.py tests/test_fabric_stream.py tests/test_decode_fast.py tests/test_float_reprs.py "$@" >"$jit_log" 2>&1 &
jit_pid=$!
# The kernels as plain Python (their reference semantics, and what a debugger steps through): all
# but the tests that would repeat the first pass's work unchanged. test_aot.py picks each
# process's compile mode itself; the documentation's examples and the real-tool runs (opensm,
# ibsim, namespaces) and the import checks are command lines in subprocesses, which the
# environment would only slow; the benchmarks time, and as Python time nothing of interest.
plain_status=0
NUMBA_DISABLE_JIT=1 python3 -m pytest -q -p no:cacheprovider --ignore=tests/test_doc_examples.py \
  --ignore=tests/test_aot.py --ignore=tests/test_benchmarks.py --ignore=tests/test_fuzz_fabric.py \
  --ignore=tests/test_sim.py --ignore=tests/test_netns.py --ignore=tests/test_imports.py "$@" || plain_status=$?
jit_status=0
wait "$jit_pid" || jit_status=$?
echo "== the kernels under numba's JIT (MADPIPE_JIT=1), run beside the plain-Python pass =="
cat "$jit_log"
[ "$plain_status" = 0 ] && [ "$jit_status" = 0 ]
