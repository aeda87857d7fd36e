#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Replication, resync and manual failover on three nodes on loopback, with
# testudo-bench --verify as the witness for lost writes:
#   - a volume on three replicas; every node knows its configuration;
#   - a replica SIGKILLed under load: writes go on, it restarts, resyncs,
#     becomes in-sync, and the replicas compare identical;
#   - a replica that missed much is refused promotion while it catches up;
#   - a replica frozen with SIGSTOP is dropped from the in-sync set after the
#     acknowledgement timeout, writes go on, and after SIGCONT it resyncs;
#   - a wiped node rebuilds its copy from LSN 0;
#   - the primary SIGKILLed under load, a survivor promoted, the bench
#     reconnects to a surviving node and the verify pass finds nothing lost
#     (FAILOVERS times, default 3; `make check-cluster` runs 20);
#   - a stale primary (SIGSTOP, promote another, SIGCONT) steps down and no
#     write it acknowledged is missing;
#   - rollback: the primary dies holding writes its frozen replicas never
#     got; after a promote its copy is rolled back to the new history;
#   - fencing: a write of an older epoch is refused; bad peer messages and a
#     damaged or foreign state file are refused with clear errors.
# usage: [FAILOVERS=N] [REPL_SHORT=1] tests/replication.sh SCRATCHDIR
set -u
cd "$(dirname "$0")/.."
. tests/lib.sh
D=${1:?usage: replication.sh SCRATCHDIR}
FAILOVERS=${FAILOVERS:-3}
rm -rf "$D"
mkdir -p "$D"
n=0 bad=0
STEP_OK=1
cleanup() {
	for p in "${CL_PID[@]}" ${BENCH:-}; do [ -n "$p" ] && kill -CONT "$p" 2>/dev/null && kill "$p" 2>/dev/null; done
	return 0
}
trap cleanup EXIT

# out of the in-sync set: out-of-date, or catching-up (a primary starts the
# resync at once while the connection is still up, even to a frozen node)
left_in_sync() { local st; st=$(state_of "$1" "$2" "$3"); [ "$st" = out-of-date ] || [ "$st" = catching-up ]; }
# the bench's report: no NBD error replies (disconnects of a killed node are allowed), verify clean
bench_clean() {
	local out=$1
	grep -q "errors    none\|errors    disconnect [0-9]* *$" "$out" && grep -q "0 findings in reads" "$out"
}
verify_pass() {   # verify_pass NODE JOURNAL
	"$BUILD"/testudo-bench verify "$(uri "$1" v1)" --journal "$2" --qd 16 >"$D/verify.out" 2>&1
	local rc=$?
	cat "$D/verify.out"
	[ $rc = 0 ] && grep -q "verify: [1-9][0-9]* blocks checked, 0 lost" "$D/verify.out"
}

CL_RATE=(--resync-rate 16M)
start_cluster "$D" 3 "${CL_RATE[@]}" || { echo "FAILED: the cluster did not start"; exit 1; }
wait_for "peers up" 10 bash -c "'$BUILD'/testudo --admin 127.0.0.1:${CL_ADMIN[1]} status | grep -c ' up ' | grep -q 2"

# ---- a replicated volume
step "volume create --replicas 3 places it on every node, n1 primary" bash -c \
	"'$BUILD'/testudo --admin 127.0.0.1:${CL_ADMIN[1]} volume create v1 128M --replicas 3 | grep -q 'primary n1, replicas n1, n2, n3'"
for i in 1 2 3; do
	step "node n$i knows v1: primary n1, epoch 1, three in-sync replicas" bash -c \
		"[ \"\$(curl -sf http://127.0.0.1:${CL_ADMIN[$i]}/v1/volumes/v1 | $PY -c 'import json,sys; v=json.load(sys.stdin); print(v[\"primary\"], v[\"epoch\"], len([r for r in v[\"replicas\"] if r[\"state\"]==\"in-sync\"]))')\" = 'n1 1 3' ]"
done
step "testudo status lists the volume and its replicas" bash -c \
	"'$BUILD'/testudo --admin 127.0.0.1:${CL_ADMIN[2]} status | grep -q 'volume v1 .*epoch 1, primary n1, this node replica'"
step "--replicas beyond the cluster is a clear error" bash -c \
	"! '$BUILD'/testudo --admin 127.0.0.1:${CL_ADMIN[1]} volume create vx 1M --replicas 4 2>&1 | tee /dev/stderr | grep -q created"
step "a node outside the replica set serves the volume by forwarding" bash -c \
	"'$BUILD'/testudo --admin 127.0.0.1:${CL_ADMIN[1]} volume create v2 16M --replicas 2 >/dev/null &&
	 [ \"\$(curl -sf http://127.0.0.1:${CL_ADMIN[3]}/v1/volumes/v2 | $PY -c 'import json,sys; print(json.load(sys.stdin)[\"role\"])')\" = none ] &&
	 '$BUILD'/testudo-bench $(uri 3 v2) --rw randrw --qd 4 --ops 2000 --verify '$D/v2.j' --quiet >'$D/v2.out' &&
	 '$BUILD'/testudo-bench verify $(uri 1 v2) --journal '$D/v2.j' | grep -q ', 0 lost'"

# ---- a replica SIGKILLed under load
ALL="$(uri 1 v1) $(uri 2 v1) $(uri 3 v1)"
"$BUILD"/testudo-bench $ALL --rw randwrite --qd 16 --time 9 --reconnect 30 --verify "$D/j1" --quiet >"$D/b1.out" 2>&1 &
BENCH=$!
sleep 2
kill_cluster_node 3
step "SIGKILLed replica n3 is out of date on the primary within the timeout" wait_for "n3 out of date" 5 has_state 1 v1 n3 out-of-date
step "and on the surviving replica n2 (the change was recorded there first)" has_state 2 v1 n3 out-of-date
sleep 1
step "n3 restarts" start_cluster_node 3
step "n3 resyncs and is in-sync again" wait_for "n3 in-sync" 40 all_in_sync 1 v1
wait $BENCH; rc=$?; BENCH=
step "bench through n1: writes went on, no errors (exit $rc)" bash -c "[ $rc = 0 ] && grep -q 'errors    none' '$D/b1.out' && grep -q '0 findings' '$D/b1.out'"
step "verify pass: every acknowledged write is there" verify_pass 1 "$D/j1"
step "volume verify: the three replicas are identical" identical 2
grep -h "resync of n3\|n3 in sync" "$D"/n1/log | sed 's/^/    /' | tail -3

# REPL_SHORT=1 (the sanitizer pass) leaves out the catch-up and wipe scenarios
if [ "${REPL_SHORT:-0}" != 1 ]; then
# ---- a replica that missed much cannot be promoted while it catches up
kill_cluster_node 3
wait_for "n3 out of date" 5 has_state 1 v1 n3 out-of-date
"$BUILD"/testudo-bench "$(uri 1 v1)" --rw write --bs 128k --bytes 64M --qd 8 --verify "$D/j2" --quiet >"$D/b2.out" 2>&1
step "64 MiB written while n3 was down" bash -c "grep -q 'errors    none' '$D/b2.out'"
start_cluster_node 3
wait_for "n3 catching up" 10 has_state 1 v1 n3 catching-up
step "promote of the catching-up replica is refused" bash -c \
	"! '$BUILD'/testudo --admin 127.0.0.1:${CL_ADMIN[1]} promote v1 --node n3 2>'$D/p.err'; cat '$D/p.err'; grep -q 'only an in-sync replica' '$D/p.err'"
step "status shows the resync's progress" bash -c \
	"'$BUILD'/testudo --admin 127.0.0.1:${CL_ADMIN[1]} status | grep 'n3 .*catching-up.*resync' || '$BUILD'/testudo --admin 127.0.0.1:${CL_ADMIN[1]} status | grep -q 'n3 *in-sync'"
step "n3 catches up" wait_for "n3 in-sync" 60 all_in_sync 1 v1
step "verify pass after the catch-up, read from n3 (forwarded)" verify_pass 3 "$D/j2"
step "replicas identical" identical 1

fi

# ---- a replica frozen with SIGSTOP
"$BUILD"/testudo-bench "$(uri 1 v1)" --rw randwrite --qd 16 --time 8 --verify "$D/j3" --quiet >"$D/b3.out" 2>&1 &
BENCH=$!
sleep 2
kill -STOP "${CL_PID[2]}"
step "frozen replica n2 leaves the in-sync set after the timeout" wait_for "n2 out of the in-sync set" 6 left_in_sync 1 v1 n2
sleep 2
kill -CONT "${CL_PID[2]}"
step "after SIGCONT n2 resyncs and is in-sync" wait_for "n2 in-sync" 40 all_in_sync 1 v1
wait $BENCH; rc=$?; BENCH=
step "bench through n1 went on with no errors (exit $rc)" bash -c "[ $rc = 0 ] && grep -q 'errors    none' '$D/b3.out'"
grep -h "longest gap" "$D/b3.out" | sed 's/^/    /'
step "verify pass" verify_pass 1 "$D/j3"
step "replicas identical" identical 1

# ---- a wiped node rebuilds from LSN 0
if [ "${REPL_SHORT:-0}" != 1 ]; then
stop_cluster_node 2
rm -f "$D/n2/dev.img" "$D/n2/dev.img.state"
step "wiped n2 starts on a fresh device" start_cluster_node 2
step "it rebuilds its copy and is in-sync" wait_for "n2 in-sync" 60 all_in_sync 1 v1
step "n2 resynced from LSN 0" bash -c "grep -q 'n2 trusted to LSN 0 ' '$D/n1/log'"
step "replicas identical after the rebuild" identical 2
fi

# ---- the primary SIGKILLed, a survivor promoted
P=1
for it in $(seq "$FAILOVERS"); do
	N=$((P % 3 + 1)) O=$(((P + 1) % 3 + 1))
	"$BUILD"/testudo-bench "$(uri "$P" v1)" "$(uri "$N" v1)" "$(uri "$O" v1)" --rw randwrite --qd 16 --time 6 \
		--reconnect 30 --verify "$D/f$it" --quiet >"$D/f$it.out" 2>&1 &
	BENCH=$!
	sleep 2
	kill_cluster_node "$P"
	sleep 0.3
	step "failover $it: promote n$N after n$P was killed" cli "$N" promote v1 --node "n$N"
	wait $BENCH; rc=$?; BENCH=
	step "failover $it: bench reconnected and went on (exit $rc)" bash -c "[ $rc = 0 ] && grep -q 'reconnect *[1-9]' '$D/f$it.out' && grep -q '0 findings' '$D/f$it.out'"
	step "failover $it: verify pass through n$N finds nothing lost" verify_pass "$N" "$D/f$it"
	step "failover $it: n$P restarts" start_cluster_node "$P"
	step "failover $it: every replica in-sync again" wait_for "all in-sync" 60 all_in_sync "$N" v1
	step "failover $it: replicas identical" identical "$N"
	P=$N
done

# ---- a stale primary
N=$((P % 3 + 1))
EPOCH=$(field "$N" v1 epoch)
"$BUILD"/testudo-bench "$(uri "$P" v1)" --rw randwrite --qd 8 --time 8 --io-timeout 60 --verify "$D/s.j" --quiet \
	>"$D/s.out" 2>&1 &
BENCH=$!
sleep 2
kill -STOP "${CL_PID[$P]}"
LOGAT=$(wc -l <"$D/n$P/log")
sleep 1.5
step "stale: n$N is promoted while primary n$P is frozen" cli "$N" promote v1 --node "n$N"
kill -CONT "${CL_PID[$P]}"
step "stale: n$P steps down once it runs again" wait_for "n$P steps down" 10 bash -c \
	"curl -sf http://127.0.0.1:${CL_ADMIN[$P]}/v1/volumes/v1 | grep -q '\"role\": *\"replica\"'"
step "stale: n$P now knows epoch $((EPOCH + 1))" bash -c "[ \"\$(curl -sf http://127.0.0.1:${CL_ADMIN[$P]}/v1/volumes/v1 | $PY -c 'import json,sys; print(json.load(sys.stdin)[\"epoch\"])')\" = $((EPOCH + 1)) ]"
wait $BENCH; rc=$?; BENCH=
cat "$D/s.out" | grep -E "errors|verify" | sed 's/^/    /'
step "stale: no write n$P acknowledged is missing from the new primary" verify_pass "$N" "$D/s.j"
step "stale: no change by n$P at the old epoch came into force after the promote" bash -c \
	"tail -n +$((LOGAT + 1)) '$D/n$P/log' | grep vtier; ! tail -n +$((LOGAT + 1)) '$D/n$P/log' | grep -q 'change in force: epoch $EPOCH '"
step "stale: everything in-sync again" wait_for "all in-sync" 60 all_in_sync "$N" v1
step "stale: replicas identical" identical "$N"

# ---- rollback: replicas hold writes the new primary never had
# Acknowledged writes first (the first half of rb); then both replicas are
# frozen and 4 MiB writes go to the second half: the primary writes them
# locally, but only what fits in the frozen replicas' socket buffers reaches
# them, and none is acknowledged. The primary dies, a replica is promoted,
# and the old primary's copy must be rolled back to the new history.
A=$N B=$((N % 3 + 1)) C=$(((N + 1) % 3 + 1))
step "rollback: volume rb on three replicas, primary n$A" cli "$A" volume create rb 256M --replicas 3
LOGAT=$(wc -l <"$D/n$B/log")
step "rollback: 64 MiB acknowledged in the first half" "$BUILD"/testudo-bench "$(uri "$A" rb)" --rw write --bs 1M \
	--qd 8 --bytes 64M --range 0:128M --verify "$D/rb.j" --quiet
kill -STOP "${CL_PID[$B]}" "${CL_PID[$C]}"
"$BUILD"/testudo-bench "$(uri "$A" rb)" --rw write --bs 4M --qd 16 --time 30 --range 128M:128M --io-timeout 60 \
	--verify "$D/rb2.j" --quiet >"$D/rb.out" 2>&1 &
BENCH=$!
sleep 2
kill_cluster_node "$A"
wait $BENCH; BENCH=
kill -CONT "${CL_PID[$B]}" "${CL_PID[$C]}"
sleep 1
step "rollback: n$B is promoted after primary n$A died with writes only it had" \
	wait_for "promote n$B" 10 "$BUILD"/testudo --admin "127.0.0.1:${CL_ADMIN[$B]}" promote rb --node "n$B"
step "rollback: n$A restarts" start_cluster_node "$A"
step "rollback: every replica in-sync" wait_for "all in-sync" 60 all_in_sync "$B" rb
step "rollback: n$A's writes after the new epoch's start were rolled back" bash -c \
	"tail -n +$((LOGAT + 1)) '$D/n$B/log' | grep 'rb: .*trusted to LSN' | tee /dev/stderr |
	 awk '{ for (i = 1; i < NF; i++) { if (\$i == \"LSN\" && t == \"\") t = \$(i + 1); if (\$i == \"bound\") b = \$(i + 1) }
	        if (b + 0 < t + 0) found = 1; t = \"\" } END { exit !found }'"
"$BUILD"/testudo-bench verify "$(uri "$B" rb)" --journal "$D/rb.j" --qd 16 >"$D/verify.out" 2>&1
step "rollback: verify pass through n$B finds nothing lost" bash -c "cat '$D/verify.out'; grep -q 'verify: [1-9][0-9]* blocks checked, 0 lost' '$D/verify.out'"
step "rollback: replicas identical" bash -c "'$BUILD'/testudo --admin 127.0.0.1:${CL_ADMIN[$B]} volume verify rb | tee /dev/stderr | grep -q ': identical'"
step "v1's replicas are all in-sync with n$A back" wait_for "all in-sync" 60 all_in_sync "$A" v1

# ---- fencing and bad input on the peer protocol, as a fake n1 talking to n3
fake_peer() {   # fake_peer WHAT: connect to n3 as "n1", then send WHAT (stale-write | bad-conf | short-write | sum-region-0)
	$PY - "$1" "${CL_REPL[3]}" "$EPOCH" <<'PYEOF'
import ctypes, socket, struct, sys, time
what, port, old_epoch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
xx = ctypes.CDLL("libxxhash.so.0"); xx.XXH3_64bits.restype = ctypes.c_uint64
xx.XXH3_64bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
def frame(t, pl):
    h = struct.pack("<IHHQI", 0x50524454, 1, t, 0, len(pl))
    return h + struct.pack("<I", xx.XXH3_64bits(h + pl, len(h) + len(pl)) & 0xffffffff) + pl
def recv_frame(s):
    def get(n):
        b = b""
        while len(b) < n:
            c = s.recv(n - len(b))
            if not c: raise EOFError
            b += c
        return b
    h = get(24); t, n = struct.unpack_from("<H", h, 6)[0], struct.unpack_from("<I", h, 16)[0]
    return t, get(n)
s = socket.create_connection(("127.0.0.1", port), timeout=10)
s.sendall(frame(1, struct.pack("<64s32s32sQ", b"testudo", b"n1", b"n3", 42)))
t, pl = recv_frame(s)
assert t == 2, "expected WELCOME, got %d" % t
name = b"v1"
if what == "stale-write":
    io = struct.pack("<64sIHHQQQQ", name, old_epoch, 2, 0, 999999, 0, 0, 4096)
    s.sendall(frame(18, io + b"\xee" * 4096))
    while True:
        t, pl = recv_frame(s)
        if t == 19:
            n, ep, st = struct.unpack_from("<64sIi", pl)
            print("WACK status", st, "epoch", ep)
            assert st == -116, "a write of an older epoch was not refused with ESTALE"
            assert ep > old_epoch
            break
elif what == "sum-region-0":
    # a checksum request with region 0: answered with an error, never a division by zero
    sm = struct.pack("<64sQQQQiI", name, 7, 0, 0, 1, 0, 0)
    s.sendall(frame(30, sm))
    while True:
        t, pl = recv_frame(s)
        if t == 31:
            st = struct.unpack_from("<i", pl, 96)[0]
            print("SUM_REP status", st)
            assert st == -22, "region 0 was not refused with EINVAL"
            break
elif what in ("bad-conf", "short-write"):
    s.sendall(frame(16, name.ljust(64, b"\0") + bytes(432 - 64)) if what == "bad-conf" else frame(18, b"v1\0"))
    try:
        while True:
            recv_frame(s)
    except (EOFError, ConnectionResetError):
        print("dropped")
PYEOF
}
EPOCH=$(($(field "$N" v1 epoch) - 1))
# the real n1 is frozen meanwhile: it redials n3 as soon as the fake takes
# its place, and its connection would replace the fake's mid-handshake
kill -STOP "${CL_PID[1]}"
step "fencing: n3 refuses a write of the older epoch $EPOCH with ESTALE" fake_peer stale-write
step "an invalid volume configuration closes that connection" fake_peer bad-conf
step "a truncated write message closes that connection" fake_peer short-write
step "a checksum request with region 0 is refused, and the node lives" fake_peer sum-region-0
kill -CONT "${CL_PID[1]}"
step "n3 still runs, and it logged why" bash -c "kill -0 ${CL_PID[3]} && grep -q 'an invalid volume configuration' '$D/n3/log' && grep -q 'malformed volume message' '$D/n3/log'"
step "everything in-sync again after the fake peer" wait_for "all in-sync" 60 all_in_sync "$N" v1
step "replicas identical: the refused write changed nothing" identical "$N"

step "every node stops cleanly" stop_cluster

# ---- a damaged or foreign state file is refused with a clear error, and left alone
cp "$D/n1/dev.img.state" "$D/state.orig"
printf '\xff' | dd of="$D/n1/dev.img.state" bs=1 seek=200 conv=notrunc 2>/dev/null
cp "$D/n1/dev.img.state" "$D/state.damaged"
step "a damaged state file stops the node with a clear error" bash -c \
	"! timeout 10 '$BUILD'/testudod --device '$D/n1/dev.img' --nbd 127.0.0.1:0 --admin 127.0.0.1:0 --node-id n1 --repl 127.0.0.1:0 \
	   >/dev/null 2>'$D/bad.err'; cat '$D/bad.err'; grep -q 'state file .* is damaged' '$D/bad.err' && cmp '$D/n1/dev.img.state' '$D/state.damaged'"
cp "$D/state.orig" "$D/n1/dev.img.state"
step "another node's state file is refused" bash -c \
	"! timeout 10 '$BUILD'/testudod --device '$D/n1/dev.img' --nbd 127.0.0.1:0 --admin 127.0.0.1:0 --node-id n9 --repl 127.0.0.1:0 \
	   >/dev/null 2>'$D/bad.err'; cat '$D/bad.err'; grep -q \"belongs to node 'n1'\" '$D/bad.err'"
echo "replication: $((n - bad)) of $n checks passed"
[ $bad = 0 ]
