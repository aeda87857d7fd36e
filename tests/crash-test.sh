#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The long crash run: ITERATIONS SIGKILLs and ITERATIONS power cuts.
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
N=${ITERATIONS:-500}
D=$(mktemp -d "${TMPDIR:-/tmp}/testudo-crash.XXXXXX")
trap 'rm -rf "$D"' EXIT
rc=0
"$BUILD"/tests/torture crash --dev "$D/crash.img" --iterations "$N" | grep -v '^  verified\|^iteration' || rc=1
"$BUILD"/tests/torture powercut --dev "$D/cut.img" --iterations "$N" | grep -v '^  verified\|^iteration' || rc=1
exit $rc
