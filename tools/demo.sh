#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The main job: a Testudo node on loopback serving a volume over NBD.
# Formats a file-backed device in a scratch directory, starts testudod,
# creates a volume through the admin API, puts some data on it, and
# serves until Ctrl-C (or DEMO_SECONDS, when set), then stops cleanly.
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
NBD=${NBD:-127.0.0.1:10809}
ADMIN=${ADMIN:-127.0.0.1:10810}
D=$(mktemp -d "${TMPDIR:-/tmp}/testudo-demo.XXXXXX")
PID=
stop() {
	if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
		echo
		echo "stopping testudod (pid $PID)..."
		kill -TERM "$PID"
		wait "$PID" && echo "testudod stopped cleanly" || echo "testudod exited with status $?"
	fi
	rm -rf "$D"
}
trap stop EXIT
trap 'exit 0' INT TERM

echo "scratch directory: $D"
"$BUILD"/testudo format "$D/dev.img" --size 2G
"$BUILD"/testudod --device "$D/dev.img" --nbd "$NBD" --admin "$ADMIN" >"$D/out" 2>"$D/log" &
PID=$!
for _ in $(seq 100); do
	grep -q "listening admin" "$D/out" 2>/dev/null && break
	kill -0 "$PID" 2>/dev/null || { echo "testudod did not start:"; cat "$D/log"; exit 1; }
	sleep 0.1
done
cat "$D/out"
# the addresses it really listens on (port 0 picks one)
NBD=$(sed -n 's/^listening nbd //p' "$D/out")
ADMIN=$(sed -n 's/^listening admin //p' "$D/out")
"$BUILD"/testudo --admin "$ADMIN" volume create demo 1G
port=${NBD##*:}
host=${NBD%:*}
if command -v nbdcopy >/dev/null; then
	head -c 64M /dev/urandom >"$D/in.raw"
	nbdcopy "$D/in.raw" "nbd://$NBD/demo"
	echo "wrote 64 MiB of random data to volume demo with nbdcopy"
fi
"$BUILD"/testudo --admin "$ADMIN" status
cat <<EOF

testudod serves volume "demo" on $NBD (log: $D/log).
  attach it on a host with the nbd module:  nbd-client $host $port /dev/nbd0 -N demo -b 4096
  look at it without a kernel module:       nbdinfo nbd://$NBD/demo
  metrics:                                   curl http://$ADMIN/metrics
Ctrl-C stops the node.
EOF
if [ -n "${DEMO_SECONDS:-}" ]; then
	sleep "$DEMO_SECONDS"
else
	wait "$PID"
fi
