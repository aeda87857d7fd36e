#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Volumes across restarts, mode switches, deletes and stops: each step
# was found failing by an adversarial review of "a single node is a
# cluster of one" (0a0703e) and is kept as a regression test.
#   A1  single node: a volume deleted and re-created (epoch 2) keeps its
#       epoch across a restart (it came back at epoch 1)
#   A2  a cluster node's device (DEVICE.state beside it) is refused
#       without --node-id, with a clear error, and loses nothing (served
#       alone, its changes were undone by the state file later: a deleted
#       volume came back, a resize was reverted and data lost)
#   A4  cluster: a volume deleted through n1 while a client is attached on
#       n3 (which holds no copy): n3 hangs up that client, and the
#       re-created volume is not counted as in use
#   A5  cluster: SIGTERM stops a primary whose write waits for a majority
#       that is unreachable (both peers SIGSTOPped): the write fails after
#       the stop's deadline, instead of the node running for ever
# usage: tests/lifecycle.sh SCRATCHDIR   (BUILD=build/asan for the sanitizers)
set -u
cd "$(dirname "$0")/.."
. tests/lib.sh
D=${1:?usage: lifecycle.sh SCRATCHDIR}
rm -rf "$D"
mkdir -p "$D"
n=0 bad=0
B=$BUILD/testudo
CLI=
cleanup() {
	for p in "${CL_PID[@]}" ${NODE_PID:-} $CLI; do [ -n "$p" ] && kill -CONT "$p" 2>/dev/null && kill "$p" 2>/dev/null; done
	return 0
}
trap cleanup EXIT
# stop_bounded I: SIGTERM cluster node I; false (and SIGKILL) if it is still
# running 20 s later
stop_bounded() {
	local pid=${CL_PID[$1]}
	CL_PID[$1]=
	kill -TERM "$pid" 2>/dev/null
	for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }; sleep 0.2; done
	kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
	return 1
}
vfield() {   # vfield ADMINPORT VOLUME KEY: one field of GET /v1/volumes/VOLUME
	curl -s "127.0.0.1:$1/v1/volumes/$2" | $PY -c "import json,sys; print(json.load(sys.stdin).get('$3'))"
}

# ---- A1: the epoch of a single node's volume goes down across a restart ----
start_node "$D/a1" || { echo "FAILED: testudod did not start"; exit 1; }
$B --admin 127.0.0.1:$ADMIN_PORT volume create e 8M >/dev/null
$B --admin 127.0.0.1:$ADMIN_PORT volume delete e >/dev/null
$B --admin 127.0.0.1:$ADMIN_PORT volume create e 8M >/dev/null
EP=$(vfield $ADMIN_PORT e epoch)
stop_node
start_node "$D/a1" || { echo "FAILED: testudod did not restart"; exit 1; }
step "A1: re-created volume at epoch $EP keeps it after a restart (got $(vfield $ADMIN_PORT e epoch))" \
	test "$(vfield $ADMIN_PORT e epoch)" -ge "$EP"
stop_node
NODE_PID=

# ---- A2: a cluster node's device served without --node-id ----
start_node "$D/a2" --node-id n1 --repl 127.0.0.1:0 || { echo "FAILED: start"; exit 1; }
$B --admin 127.0.0.1:$ADMIN_PORT volume create keep 4M >/dev/null
$PY -c "
import nbd; h=nbd.NBD(); h.connect_uri('nbd://127.0.0.1:$NBD_PORT/keep'); h.pwrite(b'\x42'*4096, 1<<20); h.flush(); h.shutdown()"
stop_node
NODE_PID=
step "A2: without --node-id the device of a cluster node is refused, naming its state file" bash -c \
	"! timeout 10 '$BUILD'/testudod --device '$D/a2/dev.img' --nbd 127.0.0.1:0 --admin 127.0.0.1:0 >/dev/null 2>'$D/a2/refused.err';
	 cat '$D/a2/refused.err'; grep -q 'dev.img.state holds the cluster configuration' '$D/a2/refused.err'"
start_node "$D/a2" --node-id n1 --repl 127.0.0.1:0 || { echo "FAILED: start"; exit 1; }
step "A2: with its --node-id again, the volume and its data are there" $PY -c "
import nbd; h=nbd.NBD(); h.connect_uri('nbd://127.0.0.1:$NBD_PORT/keep')
assert h.get_size() == 4 << 20, h.get_size(); assert h.pread(4096, 1 << 20) == b'\x42' * 4096"
stop_node
NODE_PID=

# ---- A4: a delete through another node while a client is attached ----
CL_PID=() CL_NBD=() CL_ADMIN=() CL_REPL=()
start_cluster "$D/a4" 3 || { echo "FAILED: the cluster did not start"; exit 1; }
step "A4: the cluster's peers are up" wait_for "peers up" 10 all_up
step "A4: rv created on n1 and n2" $B --admin 127.0.0.1:${CL_ADMIN[1]} volume create rv 8M --replicas 2
$PY -u - "${CL_NBD[3]}" >"$D/a4/cli.out" 2>&1 <<'EOF' &
import socket, struct, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30)
s.recv(18); s.sendall(struct.pack(">I", 3))
s.sendall(struct.pack(">QII", 0x49484156454F5054, 7, 4 + 2 + 2) + struct.pack(">I", 2) + b"rv" + struct.pack(">H", 0))
print("attached", flush=True)
time.sleep(8)
EOF
CLI=$!
step "A4: a client attached to rv through n3" wait_for "client attached" 10 grep -q attached "$D/a4/cli.out"
step "A4: rv deleted through n1" $B --admin 127.0.0.1:${CL_ADMIN[1]} volume delete rv
step "A4: rv created again" $B --admin 127.0.0.1:${CL_ADMIN[1]} volume create rv 8M --replicas 2
sleep 1
step "A4: n3 does not count the old volume's client as attached to the new one" \
	test "$(vfield ${CL_ADMIN[3]} rv connections)" = 0
step "A4: the re-created volume can be deleted through n3" $B --admin 127.0.0.1:${CL_ADMIN[3]} volume delete rv
kill $CLI 2>/dev/null; wait $CLI 2>/dev/null; CLI=
stop_cluster || echo "FAILED: A4 cluster did not stop cleanly"

# ---- A5: SIGTERM while a write waits for a majority that is gone ----
CL_PID=() CL_NBD=() CL_ADMIN=() CL_REPL=()
start_cluster "$D/a5" 3 || { echo "FAILED: the cluster did not start"; exit 1; }
step "A5: the cluster's peers are up" wait_for "peers up" 10 all_up
step "A5: th created" $B --admin 127.0.0.1:${CL_ADMIN[1]} volume create th 8M
kill -STOP "${CL_PID[2]}" "${CL_PID[3]}"
timeout 40 $PY -c "
import nbd; h=nbd.NBD(); h.connect_uri('nbd://127.0.0.1:${CL_NBD[1]}/th'); h.pwrite(b'x'*4096, 0)" >/dev/null 2>&1 &
CLI=$!
sleep 3
step "A5: a primary whose write waits for an unreachable majority stops within 20 s of SIGTERM" stop_bounded 1
kill -CONT "${CL_PID[2]}" "${CL_PID[3]}"
kill $CLI 2>/dev/null; wait $CLI 2>/dev/null; CLI=
stop_bounded 2; stop_bounded 3

echo "lifecycle: $((n - bad)) of $n checks passed"
[ "$bad" = 0 ]
