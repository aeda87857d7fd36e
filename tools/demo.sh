#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The engine demo: format a file-backed device in a scratch directory,
# create a volume, push data through the engine and read it back.
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
T=$BUILD/testudo
D=$(mktemp -d "${TMPDIR:-/tmp}/testudo-demo.XXXXXX")
trap 'rm -rf "$D"' EXIT
echo "scratch directory: $D"
set -x
"$T" format "$D/dev.img" --size 256M
"$T" --device "$D/dev.img" volume create demo 128M --compress lz4
head -c 64M /dev/urandom >"$D/in.raw"
"$T" --device "$D/dev.img" volume import demo "$D/in.raw"
"$T" --device "$D/dev.img" volume export demo "$D/out.raw"
cmp "$D/in.raw" <(head -c 64M "$D/out.raw")
"$T" --device "$D/dev.img" volume list
"$T" inspect "$D/dev.img"
"$T" check "$D/dev.img"
{ set +x; } 2>/dev/null
echo "demo: 64 MiB written through the engine and read back identical"
