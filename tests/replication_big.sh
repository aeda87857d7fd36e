#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Replication at the edges of the peer protocol's limits, on three nodes on
# loopback:
#   - large trims and write-zeroes: a 1 GiB TRIM and a 1 GiB WRITE_ZEROES
#     (without NO_HOLE, and once with it) of a 1.5 GiB volume on three
#     replicas, longer than a peer message's payload limit, through the
#     primary and through a node that forwards them: each is answered within
#     a few seconds, reads back as zeros where it fell and as the data
#     around it, no replica leaves the in-sync set, no link is dropped as
#     malformed, and the replicas compare identical;
#   - an epoch history outrun: the primary (n3) dies holding writes no other
#     node got; while it is down the primary role moves between n1 and n2
#     ten times, more than the configuration's epoch history keeps (8), with
#     a write at each epoch. n3 comes back: since its epoch is no longer in
#     the history its whole log is suspect (bound 0, a full resync); it ends
#     in-sync, the replicas compare identical, and promoted, it serves every
#     epoch's write.
# usage: tests/replication_big.sh SCRATCHDIR
set -u
cd "$(dirname "$0")/.."
. tests/lib.sh
D=${1:?usage: replication_big.sh SCRATCHDIR}
rm -rf "$D"
mkdir -p "$D"
n=0 bad=0
STEP_OK=1
BENCH=
cleanup() {
	for p in "${CL_PID[@]}" $BENCH; do [ -n "$p" ] && kill -CONT "$p" 2>/dev/null && kill "$p" 2>/dev/null; done
	return 0
}
trap cleanup EXIT


# nbd NODE VOLUME OP...: one NBD connection to NODE, the OPs in order, each
# bounded in time (a whole call within 60 s):
#   write:OFF:LEN:BYTE   LEN bytes of BYTE at OFF
#   read:OFF:LEN:BYTE    they read back as BYTE (0: zeros)
#   trim:OFF:LEN  zero:OFF:LEN  zeronh:OFF:LEN (NO_HOLE)
#                        answered without error within $OP_SECS seconds
# Sizes take K, M and G.
OP_SECS=5
nbd() {
	timeout 60 $PY - "$(uri "$1" "$2")" "$OP_SECS" "${@:3}" <<'PYEOF'
import nbd, sys, time
uri, limit, ops = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
def size(s):
    m = {'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30}
    return int(s[:-1]) * m[s[-1]] if s[-1] in m else int(s)
h = nbd.NBD()
h.connect_uri(uri)
for op in ops:
    f = op.split(':')
    what, off, ln = f[0], size(f[1]), size(f[2])
    t0 = time.monotonic()
    if what == 'write':
        for o in range(0, ln, 1 << 20):
            h.pwrite(bytes([int(f[3])]) * min(1 << 20, ln - o), off + o)
    elif what == 'read':
        for o in range(0, ln, 1 << 20):
            got = h.pread(min(1 << 20, ln - o), off + o)
            if got != bytes([int(f[3])]) * len(got):
                sys.exit('read at %d: not all %s' % (off + o, f[3]))
    else:
        try:
            if what == 'trim':
                h.trim(ln, off)
            else:
                h.zero(ln, off, nbd.CMD_FLAG_NO_HOLE if what == 'zeronh' else 0)
        except nbd.Error as e:
            sys.exit('%s of %d at %d: %s after %.2f s' % (what, ln, off, e, time.monotonic() - t0))
        dt = time.monotonic() - t0
        print('%s of %d at %d answered in %.2f s' % (what, ln, off, dt))
        if dt > limit:
            sys.exit('%s took %.2f s, more than %.0f' % (what, dt, limit))
h.shutdown()
PYEOF
}

# data at every 64 MiB of the volume (1 MiB each, byte B): "data B" for nbd's ops
data() { local b=$1 op=$2 i; for i in $(seq 0 23); do echo "$op:$((i * 64))M:1M:$b"; done; }
# the chunks of `data` after [OFF, OFF+LEN) (in MiB) became zeros: what nbd must read
after_zero() {
	local b=$1 lo=$2 hi=$(($2 + $3)) i o
	for i in $(seq 0 23); do
		o=$((i * 64))
		if [ $o -ge "$lo" ] && [ $o -lt "$hi" ]; then echo "read:${o}M:1M:0"; else echo "read:${o}M:1M:$b"; fi
	done
}
no_malformed() { ! grep -m2 -H "malformed volume message" "$D"/n1/log "$D"/n2/log "$D"/n3/log; }

DEV_SIZE=2G start_cluster "$D" 3 || { echo "FAILED: the cluster did not start"; exit 1; }
wait_for "peers up" 10 all_up

# ---- large TRIM and WRITE_ZEROES, longer than a peer message can carry
step "big: volume big (1.5 GiB) on three replicas, primary n1" bash -c \
	"'$BUILD'/testudo --admin 127.0.0.1:${CL_ADMIN[1]} volume create big 1536M --replicas 3 | grep -q 'primary n1'"
step "big: all in-sync" wait_for "big in-sync" 10 all_in_sync 1 big
B=1
# big_op NODE OP OFF LEN (MiB), as a client of NODE, on fresh data
big_op() {
	local node=$1 op=$2 off=$3 len=$4
	B=$((B + 1))
	step "big: 24 MiB written through n$node" nbd "$node" big $(data $B write)
	step "big: a $((len / 1024)) GiB $op at ${off}M through n$node is answered" nbd "$node" big "$op:${off}M:${len}M"
	grep -h answered "$D/step.out" | sed 's/^/    /'
	step "big: no replica left the in-sync set" all_in_sync 1 big
	step "big: zeros where the $op fell, the data around it (read through n$node)" nbd "$node" big \
		$(after_zero $B "$off" "$len")
}
big_op 1 trim 0 1024
big_op 1 zero 512 1024
big_op 1 zeronh 256 1024
big_op 3 trim 512 1024
big_op 2 zero 0 1024
step "big: no peer link was dropped as malformed" no_malformed
step "big: every replica in-sync as n2 sees it" wait_for "big in-sync on n2" 5 all_in_sync 2 big
step "big: and as n3 sees it" wait_for "big in-sync on n3" 5 all_in_sync 3 big
step "big: volume verify: the replicas are identical" identical 2 big

# ---- an epoch history outrun by promotes
# n3 is primary; n1 and n2 are frozen while n3 writes 4 MiB blocks: n3
# writes them locally, n1 and n2 get only what fits in their socket
# buffers, none is acknowledged. n3 dies with writes only it has.
step "epochs: volume ep on three replicas, primary n3" bash -c \
	"'$BUILD'/testudo --admin 127.0.0.1:${CL_ADMIN[1]} volume create ep 64M --replicas 3 --primary n3 | grep -q 'primary n3'"
step "epochs: all in-sync" wait_for "ep in-sync" 10 all_in_sync 3 ep
step "epochs: 8 MiB acknowledged through n3" nbd 3 ep write:0:8M:1
kill -STOP "${CL_PID[1]}" "${CL_PID[2]}"
"$BUILD"/testudo-bench "$(uri 3 ep)" --rw write --bs 4M --qd 16 --time 30 --range 32M:32M --io-timeout 60 \
	--quiet >"$D/ep.out" 2>&1 &
BENCH=$!
sleep 2
kill_cluster_node 3
wait $BENCH; BENCH=
kill -CONT "${CL_PID[1]}" "${CL_PID[2]}"
# promote whichever of n1 and n2 can be (n3's proposals in their socket
# buffers may have taken one out of the in-sync set)
promote_any() {
	local i
	for i in 1 2; do cli "$i" promote ep --node "n$i" >/dev/null 2>&1 && { echo "$i" >"$D/P"; return 0; }; done
	return 1
}
step "epochs: n1 or n2 is promoted after primary n3 died" wait_for "a promote" 15 promote_any
P=$(cat "$D/P" 2>/dev/null || echo 1)
EPOCH0=$(field "$P" ep epoch)
step "epochs: a write at epoch $EPOCH0 through n$P" nbd "$P" ep "write:$((16 + EPOCH0 % 16))M:64K:$EPOCH0"
# then the role moves between n1 and n2, a write at each new epoch
PROMOTES=10
for k in $(seq 2 "$PROMOTES"); do
	Q=$((3 - P))
	step "epochs: n$Q in-sync" wait_for "n$Q in-sync" 30 has_state "$P" ep "n$Q" in-sync
	step "epochs: promote $k: n$Q" cli "$Q" promote ep --node "n$Q"
	P=$Q
	E=$(field "$P" ep epoch)
	step "epochs: a write at epoch $E through n$P" nbd "$P" ep "write:$((16 + E % 16))M:64K:$E"
done
step "epochs: $PROMOTES promotes: epoch $((EPOCH0 + PROMOTES - 1))" bash -c "[ \"\$(curl -sf http://127.0.0.1:${CL_ADMIN[$P]}/v1/volumes/ep | $PY -c 'import json,sys; print(json.load(sys.stdin)[\"epoch\"])')\" = $((EPOCH0 + PROMOTES - 1)) ]"
LOGAT=$(wc -l <"$D/n$P/log")
step "epochs: n3 restarts" start_cluster_node 3
step "epochs: n3 resyncs and is in-sync" wait_for "ep in-sync" 60 all_in_sync "$P" ep
step "epochs: n3's epoch is older than the history: a full resync (bound 0)" bash -c \
	"tail -n +$((LOGAT + 1)) '$D/n$P/log' | grep 'ep: n3 ' | tee /dev/stderr | grep -q 'ep: n3 trusted to LSN [1-9][0-9]* epoch 1; bound 0 '"
step "epochs: volume verify: the replicas are identical" identical "$P" ep
step "epochs: n$((3 - P)) in-sync" wait_for "in-sync" 30 all_in_sync "$P" ep
step "epochs: n3 is promoted" cli 3 promote ep --node n3
reads=(read:0:8M:1)
for e in $(seq "$EPOCH0" $((EPOCH0 + PROMOTES - 1))); do reads+=("read:$((16 + e % 16))M:64K:$e"); done
step "epochs: through n3, every epoch's write and the first 8 MiB read back" nbd 3 ep "${reads[@]}"

step "every node stops cleanly" stop_cluster
echo "replication_big: $((n - bad)) of $n checks passed"
[ $bad = 0 ]
