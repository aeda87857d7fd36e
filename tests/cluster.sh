#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The cluster's peer layer: three nodes on loopback find each other and
# stay connected; a SIGKILLed, restarted or SIGSTOPped node is seen going
# down and coming back; a node of another cluster, garbage on the peer
# port and bad settings are refused with clear messages.
# usage: tests/cluster.sh SCRATCHDIR
set -u
cd "$(dirname "$0")/.."
. tests/lib.sh
D=${1:?usage: cluster.sh SCRATCHDIR}
rm -rf "$D"
mkdir -p "$D"
n=0 bad=0
OTHER_PID=
cleanup() {
	for p in "${CL_PID[@]}" $OTHER_PID; do [ -n "$p" ] && kill -CONT "$p" 2>/dev/null && kill "$p" 2>/dev/null; done
	return 0
}
trap cleanup EXIT
is() { [ "$(peer_state "$1" "$2")" = "$3" ]; }

start_cluster "$D" 3 || { echo "FAILED: the cluster did not start"; exit 1; }
step "three nodes print their repl listeners" grep -q "listening repl 127.0.0.1:${CL_REPL[2]}" "$D/n2/out"
step "every node sees both peers up" wait_for "all peers up" 10 all_up
step "testudo status shows the cluster and its peers" bash -c \
	"'$BUILD'/testudo --admin 127.0.0.1:${CL_ADMIN[1]} status | grep -q 'cluster: *testudo, node n1' &&
	 '$BUILD'/testudo --admin 127.0.0.1:${CL_ADMIN[1]} status | grep -Eq 'peer n2 .* up '"

kill_cluster_node 3
step "SIGKILL n3: n1 and n2 see it down" wait_for "n3 down" 5 bash -c \
	"[ \"\$(curl -sf http://127.0.0.1:${CL_ADMIN[1]}/v1/status | grep -o '\"id\": *\"n3\"[^}]*\"state\": *\"down\"')\" ] && true"
step "n3 down on n1 and n2" wait_for "n3 down" 5 bash -c ". tests/lib.sh; CL_ADMIN=(x ${CL_ADMIN[1]} ${CL_ADMIN[2]}); [ \$(peer_state 1 n3) = down ] && [ \$(peer_state 2 n3) = down ]"
step "n1 logs n3 going down" wait_for "log line" 5 grep -q "peer: n3 down" "$D/n1/log"
start_cluster_node 3
step "n3 restarted: all up again" wait_for "all peers up" 10 all_up
step "n1 noticed the restart" wait_for "restart noticed" 5 grep -Eq "peer: n3 up \(.*it restarted\)" "$D/n1/log"

kill -STOP "${CL_PID[2]}"
step "SIGSTOP n2: n1 declares it down after its silence" wait_for "n2 down" 5 is 1 n2 down
step "... and says why" bash -c "curl -sf http://127.0.0.1:${CL_ADMIN[1]}/v1/status | grep -q 'silent for'"
kill -CONT "${CL_PID[2]}"
step "SIGCONT n2: all up again" wait_for "all peers up" 10 all_up

# garbage on the peer port: that connection is closed, nothing else changes
dropped() {   # dropped PYTHON-BYTES-EXPR: n1 closes a connection that sends them
	$PY -c "
import socket, struct
s = socket.create_connection(('127.0.0.1', ${CL_REPL[1]}), timeout=5)
s.sendall($1)
s.settimeout(5)
try:
    assert s.recv(100) == b''
except ConnectionResetError:
    pass
"
}
step "garbage on n1's peer port is dropped" dropped "b'GET / HTTP/1.0\r\n\r\n' + bytes(range(256)) * 4"
step "a frame with a bad checksum is dropped" dropped "struct.pack('<IHHQII', 0x50524454, 1, 1, 0, 136, 12345) + b'x' * 136"
step "an absurd length is refused before any allocation" dropped "struct.pack('<IHHQII', 0x50524454, 1, 1, 0, 0xffffffff, 0)"
step "still all up after the garbage" all_up

# a node of another cluster that names n1 as its peer is refused
mkdir -p "$D/other"
"$BUILD"/testudo format "$D/other/dev.img" --size 256M --sparse >/dev/null
"$BUILD"/testudod --device "$D/other/dev.img" --nbd 127.0.0.1:0 --admin 127.0.0.1:0 --node-id n0 \
	--cluster elsewhere --repl 127.0.0.1:0 --peer "n1=127.0.0.1:${CL_REPL[1]}" >"$D/other/out" 2>"$D/other/log" &
OTHER_PID=$!
step "another cluster's node is refused, and n1 says why" wait_for "refusal" 10 \
	grep -q "refused a peer connection: cluster 'elsewhere' is not this node's 'testudo'" "$D/n1/log"
step "... and the refused node says why" wait_for "refusal" 10 grep -q "n1 refused us: cluster 'elsewhere'" "$D/other/log"
kill "$OTHER_PID"; wait "$OTHER_PID"; OTHER_PID=
step "still all up" all_up

# bad settings: one line, exit status 2
DEV=$D/n1/dev.img
bad_setting() {   # bad_setting EXPECTED-TEXT ARGS...
	local want=$1; shift
	! "$BUILD"/testudod --device "$DEV" --nbd 127.0.0.1:0 --admin 127.0.0.1:0 "$@" 2>"$D/e" >/dev/null
	local st=$?
	[ $st -eq 0 ] && grep -q "$want" "$D/e" && [ "$(wc -l <"$D/e")" = 1 ] || { cat "$D/e"; return 1; }
}
cp "$D/n1/dev.img" "$D/spare.img"; DEV=$D/spare.img
step "--peer without an address" bad_setting "expected ID=IP:PORT" --node-id a --peer b
step "--peer with a host name" bad_setting "expected ID=IP:PORT" --node-id a --peer b=localhost:1
step "--peer with this node's id" bad_setting "has this node's own id" --node-id a --repl 127.0.0.1:0 --peer a=127.0.0.1:1
step "--peer twice" bad_setting "named twice" --node-id a --repl 127.0.0.1:0 --peer b=127.0.0.1:1 --peer b=127.0.0.1:2
step "--repl without --node-id" bad_setting "need --node-id" --repl 127.0.0.1:0
step "a bad node id" bad_setting "node-id" --node-id "no spaces"
step "a repl port in use" bash -c "! '$BUILD'/testudod --device '$DEV' --nbd 127.0.0.1:0 --admin 127.0.0.1:0 --node-id z --repl 127.0.0.1:${CL_REPL[1]} 2>'$D/e' && grep -q 'cannot listen for peers' '$D/e'"
printf 'device = %s\nnbd = 127.0.0.1:0\nadmin = 127.0.0.1:0\nnode_id = solo\nrepl = 127.0.0.1:0\npeer = n1=127.0.0.1:%s\npeer = bad\n' \
	"$DEV" "${CL_REPL[1]}" >"$D/bad.ini"
step "config with a bad peer line" bash -c "! '$BUILD'/testudod --config '$D/bad.ini' 2>'$D/e' && grep -q 'unknown key or bad value .peer.' '$D/e'"

step "SIGTERM: every node exits cleanly" stop_cluster
echo "cluster: $((n - bad)) of $n checks passed"
[ "$bad" -eq 0 ]
