#!/usr/bin/env bash
# The README's test command. On a Debian machine with the .NET SDK it installs, when missing, the tools the tests use
# as independent decoders of LlmBuild's outputs (mlir-opt-16 for MLIR, flatc for bmodel flatbuffers, numpy for npz/npy,
# Pillow for the image resize Hugging Face's processor does),
# runs every test project, and ends with one line "N passed, M failed" summed over them. Arguments go to `dotnet test`
# (e.g. ./test.sh --filter FullyQualifiedName~OptionTable). CI runs exactly this (.ci/run).
set -uo pipefail
cd "$(dirname "$0")"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

need=()
command -v mlir-opt-16 >/dev/null 2>&1 || need+=(mlir-16-tools)
command -v flatc >/dev/null 2>&1 || need+=(flatbuffers-compiler)
/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1 || need+=(python3-numpy)
/usr/bin/python3 -c 'import PIL' >/dev/null 2>&1 || need+=(python3-pil)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing the test decoders: ${need[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  if command -v apt-get >/dev/null 2>&1; then
    $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null \
      || echo "warning: could not install ${need[*]}; the tests that need them will fail and say so"
  else
    echo "warning: no apt-get; install ${need[*]} (or your system's equivalents) yourself: the tests that need them will fail and say so"
  fi
fi

results="artifacts/test-results"
rm -rf "$results"
mkdir -p artifacts
# The tests' temporary files live in a folder of this run only, removed when the run ends (each test assembly also
# deletes its own on exit). Free space is printed: builds of the example take about 150 MB each.
export TMPDIR="$(mktemp -d "${TMPDIR:-/tmp}/llmbuild-test.XXXXXX")"
trap 'rm -rf "$TMPDIR"' EXIT
echo "temporary files: $TMPDIR ($(df -h --output=avail "$TMPDIR" | tail -n1 | tr -d ' ') free); repository: $(df -h --output=avail . | tail -n1 | tr -d ' ') free"
dotnet restore LlmBuild.sln || { echo "0 passed, 1 failed"; exit 1; }
dotnet test LlmBuild.sln --no-restore --logger "trx" --results-directory "$results" "$@" 2>&1 | tee artifacts/test.log
status=${PIPESTATUS[0]}

passed=0; failed=0
shopt -s nullglob
for trx in "$results"/*.trx; do
  counters=$(grep -o '<Counters [^>]*>' "$trx" | head -n1)
  p=$(sed -n 's/.* passed="\([0-9]*\)".*/\1/p' <<<"$counters"); f=$(sed -n 's/.* failed="\([0-9]*\)".*/\1/p' <<<"$counters")
  e=$(sed -n 's/.* error="\([0-9]*\)".*/\1/p' <<<"$counters"); t=$(sed -n 's/.* timeout="\([0-9]*\)".*/\1/p' <<<"$counters")
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0} + ${e:-0} + ${t:-0}))
done
trx_count=$(ls "$results"/*.trx 2>/dev/null | wc -l)
# The failed tests and the start of their messages, last, where a truncated log still shows them.
if [ "$failed" -gt 0 ] && [ "$trx_count" -gt 0 ] && command -v python3 >/dev/null 2>&1; then
  python3 - "$results"/*.trx <<'PY'
import sys, xml.etree.ElementTree as ET
ns = {"t": "http://microsoft.com/schemas/VisualStudio/TeamTest/2010"}
for path in sys.argv[1:]:
    for r in ET.parse(path).getroot().iterfind(".//t:UnitTestResult", ns):
        if r.get("outcome") in ("Failed", "Error", "Timeout"):
            message = " ".join((r.findtext(".//t:Message", "", ns) or "").split())
            print(f"FAILED {r.get('testName')}: {message[:600]}")
PY
fi
# A build failure or a crashed test host produces no (or too few) results: count it as a failure.
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
[ "$trx_count" -eq 0 ] && [ "$failed" -eq 0 ] && failed=1
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
