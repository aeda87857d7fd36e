#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# What a client can make the daemon hold: (a) a hostile NBD client that
# pipelines 32 MiB reads and never reads a reply, (b) 1000 idle sockets on
# the NBD port, (c) 32 unauthenticated sockets on a cluster node's repl
# port (silent, half a HELLO, or a HELLO header claiming 33 MiB followed by
# 32 MiB). Each time the daemon's VmRSS stays under RSS_MAX_MB (600 MiB),
# another client is served meanwhile, and the idle sockets are closed once
# the handshake timeout (NBD 10 s, peers 5 s) has passed.
# usage: tests/limits.sh SCRATCHDIR
set -u
cd "$(dirname "$0")/.."
. tests/lib.sh
D=${1:?usage: limits.sh SCRATCHDIR}
rm -rf "$D"
mkdir -p "$D"
n=0 bad=0
RSS_MAX_MB=${RSS_MAX_MB:-600}
ATTACK=
cleanup() {
	for p in $ATTACK ${NODE_PID:-} "${CL_PID[@]}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done
	return 0
}
trap cleanup EXIT

# rss_under PID SECONDS: VmRSS sampled every 0.2 s for SECONDS stays under
# RSS_MAX_MB; the largest sample goes to $D/rss
rss_under() {
	local max=0 r end=$((SECONDS + $2))
	while [ $SECONDS -lt "$end" ]; do
		r=$(awk '/^VmRSS/ { print int($2 / 1024) }' "/proc/$1/status") || return 1
		[ "$r" -gt "$max" ] && max=$r
		sleep 0.2
	done
	echo "largest VmRSS ${max} MiB (limit ${RSS_MAX_MB} MiB)" | tee "$D/rss"
	[ "$max" -lt "$RSS_MAX_MB" ]
}
served() { timeout 10 "$PY" tests/limits_clients.py served "$NBD_PORT" lim; }

mkdir -p "$D/node"
"$BUILD"/testudo format "$D/node/dev.img" --size 4G --sparse >/dev/null
make_volume "$D/node" lim 2G
start_node "$D/node" || { echo "FAILED: testudod did not start"; exit 1; }
step "a client is served" served
echo "baseline VmRSS $(awk '/^VmRSS/ { print int($2 / 1024) }' /proc/$NODE_PID/status) MiB"

# (a) 64 pipelined 32 MiB reads, no reply read
"$PY" tests/limits_clients.py hostile "$NBD_PORT" lim 64 $((32 << 20)) "$D/hostile.ready" >"$D/hostile.out" 2>&1 &
ATTACK=$!
step "(a) the hostile client sent its 64 reads of 32 MiB" wait_for "hostile client" 10 test -e "$D/hostile.ready"
step "(a) another client is served meanwhile" served
step "(a) VmRSS stays bounded during the attack" rss_under "$NODE_PID" 4
echo "(a) $(cat "$D/rss" 2>/dev/null)"
kill "$ATTACK" 2>/dev/null; wait "$ATTACK" 2>/dev/null; ATTACK=
step "(a) the hostile connection goes once its client does" wait_for "hostile connection closed" 10 \
	bash -c "[ \"\$(curl -sf http://127.0.0.1:$ADMIN_PORT/metrics | awk '/^testudo_nbd_connections_open / { print \$2 }')\" = 0 ]"

# (b) 1000 idle sockets: served anyway, closed after the handshake timeout
"$PY" tests/limits_clients.py idle "$NBD_PORT" 1000 "$D/idle.ready" 25 >"$D/idle.out" 2>&1 &
ATTACK=$!
step "(b) 1000 idle sockets open" wait_for "idle sockets" 20 test -e "$D/idle.ready"
step "(b) another client is served meanwhile" served
step "(b) VmRSS stays bounded with 1000 idle sockets" rss_under "$NODE_PID" 2
echo "(b) $(cat "$D/rss" 2>/dev/null)"
st=0; wait "$ATTACK" || st=$?; ATTACK=
step "(b) every idle socket closed after the handshake timeout" test "$st" = 0
echo "(b) $(tail -1 "$D/idle.out")"
step "(b) served after the idle ones went" served
step "(a, b) SIGTERM: clean exit" stop_node
NODE_PID=

# (c) a cluster node's repl port
start_cluster "$D/cl" 1 || { echo "FAILED: the cluster node did not start"; exit 1; }
"$PY" tests/limits_clients.py peer "${CL_REPL[1]}" 32 "$D/peer.ready" 20 >"$D/peer.out" 2>&1 &
ATTACK=$!
step "(c) 32 sockets on the repl port" wait_for "peer sockets" 30 test -e "$D/peer.ready"
step "(c) VmRSS stays bounded" rss_under "${CL_PID[1]}" 2
echo "(c) $(cat "$D/rss" 2>/dev/null)"
st=0; wait "$ATTACK" || st=$?; ATTACK=
step "(c) every one closed by the handshake timeout" test "$st" = 0
echo "(c) $(tail -1 "$D/peer.out")"
step "(c) SIGTERM: clean exit" stop_cluster

echo "limits: $((n - bad)) of $n checks passed"
[ "$bad" -eq 0 ]
