#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# A replica that dies in the middle of its resync's copy phase, again and
# again (issue 16 item 7): three nodes on loopback, a volume on three
# replicas, a slow resync (--resync-rate 8M). n3 stops and 96 MiB are
# written through the primary n1; then, while clients read from n1 (so
# its engine's worker threads are busy and the resync's copy reads wait
# in their queue), ROUNDS times: 8 MiB more are written, n3 restarts, and
# once n1 reports its resync copying, after a random pause of up to a
# second, n3 is SIGKILLed. The primary's copy reads are often in flight
# then: it must neither crash nor touch the resync it freed (before
# ae7be1a it did, a heap-use-after-free in rs_copy_read_done). At the end
# n3 catches up and is in-sync, the replicas compare identical, every
# node stops cleanly, and no node's log holds a sanitizer report (run it
# with BUILD=build/asan to look for one).
# usage: [ROUNDS=N] tests/resync_kill.sh SCRATCHDIR   (default 3; make check-cluster: 20)
set -u
cd "$(dirname "$0")/.."
. tests/lib.sh
D=${1:?usage: resync_kill.sh SCRATCHDIR}
ROUNDS=${ROUNDS:-3}
rm -rf "$D"
mkdir -p "$D"
n=0 bad=0
STEP_OK=1
BENCH=
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
cleanup() {
	for p in "${CL_PID[@]}" $BENCH; do [ -n "$p" ] && kill -CONT "$p" 2>/dev/null && kill "$p" 2>/dev/null; done
	return 0
}
trap cleanup EXIT

# what node $1 says of replica $3 of volume $2: "STATE PHASE" (PHASE "-" without a resync)
rep_of() {
	curl -sf "http://127.0.0.1:${CL_ADMIN[$1]}/v1/volumes/$2" | $PY -c "import json,sys
for r in json.load(sys.stdin)['replicas']:
    if r['node'] == '$3':
        print(r['state'], r.get('resync', {}).get('phase', '-'))"
}
copying() { [ "$(rep_of 1 v n3 | cut -d' ' -f2)" = copying ]; }
primary_alive() { kill -0 "${CL_PID[1]}" && curl -sf "http://127.0.0.1:${CL_ADMIN[1]}/v1/volumes/v" >/dev/null; }
no_sanitizer_report() { ! grep -E -m3 -H "ERROR: (Address|Leak|Thread|Memory)Sanitizer|runtime error:" "$D"/n*/log; }
# SIZE of 64 KiB writes at random places in the volume's first 192 MiB,
# through n1 (n3 is down: it falls behind). Runs of dirty blocks are long
# then, and their blocks scattered over the log: the primary's copy reads
# go through the engine's worker threads, so they are often in flight
# when n3 dies.
write_behind() {
	"$BUILD"/testudo-bench "$(uri 1 v)" --rw randwrite --bs 64k --qd 16 --bytes "$1" --range 0:192M --quiet \
		>"$D/b.out" 2>&1 && grep -q "errors    none" "$D/b.out"
}

start_cluster "$D" 3 --resync-rate "${RESYNC_RATE:-8M}" || { echo "FAILED: the cluster did not start"; exit 1; }
wait_for "peers up" 10 all_up
step "volume v (256 MiB) on three replicas, primary n1" bash -c \
	"'$BUILD'/testudo --admin 127.0.0.1:${CL_ADMIN[1]} volume create v 256M --replicas 3 | grep -q 'primary n1'"
step "64 MiB written while all three are in-sync" "$BUILD"/testudo-bench "$(uri 1 v)" --rw write --bs 1M --qd 8 \
	--bytes 64M --quiet
step "n3 stops" stop_cluster_node 3
# n3 keeps its newest trusted LSN from here on until a resync ends: every
# resync below copies all that was written since, this and each round's
step "96 MiB written through n1 while n3 is down" write_behind 96M

# clients read meanwhile: large scattered reads keep the engine's worker
# threads busy, so the resync's copy reads wait in their queue and are
# in flight for longer
"$BUILD"/testudo-bench "$(uri 1 v)" --rw randread --bs 1M --qd 8 --conns 2 --range 0:192M --time 3600 --quiet \
	>"$D/reads.out" 2>&1 &
BENCH=$!
for r in $(seq "$ROUNDS"); do
	step "round $r: 8 MiB more written through n1 while n3 is down" write_behind 8M
	step "round $r: n3 restarts" start_cluster_node 3
	step "round $r: n1 copies to n3" wait_for "n3's resync copying" 30 copying
	sleep "0.$((RANDOM % 10))"
	st=$(rep_of 1 v n3)
	kill_cluster_node 3
	echo "    round $r: n3 SIGKILLed ($st)"
	step "round $r: the primary n1 lives and answers" primary_alive
	kill -0 "${CL_PID[1]}" 2>/dev/null || { echo "    the primary died: no more rounds"; break; }
done
kill "$BENCH"; wait "$BENCH" 2>/dev/null; BENCH=

if kill -0 "${CL_PID[1]}" 2>/dev/null; then
	step "n3 restarts a last time" start_cluster_node 3
	step "n3 resyncs and is in-sync" wait_for "n3 in-sync" 90 all_in_sync 1 v
	step "volume verify: the replicas are identical" identical 2 v
	grep -h "resync of n3" "$D"/n1/log | tail -2 | sed 's/^/    /'
fi
step "every node stops cleanly" stop_cluster
step "no sanitizer report in any node's log" no_sanitizer_report
echo "resync_kill: $((n - bad)) of $n checks passed"
[ $bad = 0 ]
