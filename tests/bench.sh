#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# testudo-bench against testudod, nbdkit memory and deliberately broken
# servers: write-then-verify passes where nothing is lost, the witness
# catches a server that drops acknowledged writes or forgets everything,
# a daemon SIGKILLed and restarted mid-run loses nothing, the journal
# survives the bench being killed, limits and errors are reported.
# usage: tests/bench.sh SCRATCHDIR
set -u
cd "$(dirname "$0")/.."
. tests/lib.sh
D=${1:?usage: bench.sh SCRATCHDIR}
rm -rf "$D"
mkdir -p "$D"
B=$BUILD/testudo-bench
n=0 bad=0
# expect STATUS DESCRIPTION COMMAND...: the command must exit with STATUS
expect() {
	local want=$1 what=$2; shift 2
	n=$((n + 1))
	"$@" >"$D/last.out" 2>&1
	local st=$?
	if [ "$st" != "$want" ]; then
		echo "FAILED: $what (exit $st, expected $want)"; tail -15 "$D/last.out" | sed 's/^/    /'
		bad=$((bad + 1))
	fi
}
json() {   # json FILE PYTHON-EXPR-ON-j: the report line of FILE (stderr may be mixed in)
	$PY -c "import json,sys; j=[json.loads(l) for l in open(sys.argv[1]) if l.startswith('{')][-1]; sys.exit(0 if ($2) else 1)" "$1"
}
NK_PIDS=()
cleanup() {
	for p in "${NK_PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
	[ -n "${NODE_PID:-}" ] && kill "$NODE_PID" 2>/dev/null
	return 0
}
trap cleanup EXIT
nbdkit_start() {   # nbdkit_start PORT ARGS...: foreground nbdkit on 127.0.0.1:PORT
	local port=$1; shift
	nbdkit -f -i 127.0.0.1 -p "$port" "$@" 2>>"$D/nbdkit.log" &
	NK=$!
	NK_PIDS+=("$NK")
	wait_for "nbdkit on $port" 20 nbdinfo --size "nbd://127.0.0.1:$port/"
}
nbdkit_stop() { kill "$NK" 2>/dev/null; wait "$NK" 2>/dev/null; return 0; }
free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

"$BUILD"/testudo format "$D/dev.img" --size 1G --sparse >/dev/null
make_volume "$D" vol 256M
start_node "$D" || { echo "FAILED: testudod did not start"; cat "$D/log"; exit 1; }
T=nbd://127.0.0.1:$NBD_PORT/vol

# ---- testudod: write, then verify; mixed load with every read checked
expect 0 "testudod: 3000 verified random writes, QD16" \
	"$B" "$T" --rw randwrite --qd 16 --ops 3000 --verify "$D/j1" --json
cp "$D/last.out" "$D/w1.json"
step "testudod: every write journaled" json "$D/w1.json" 'j["writes"]==3000 and j["journal_records"]==3000'
expect 0 "testudod: verify pass finds nothing lost" "$B" verify "$T" --journal "$D/j1"
step "testudod: verify pass summary" grep -q "0 lost" "$D/last.out"
expect 0 "testudod: randrw 4k:70,64k:30, 2 conns, reads checked in the run" \
	"$B" "$T" --rw randrw --mix 40 --bs 4k:70,64k:30 --qd 8 --conns 2 --time 2 --verify "$D/j2" --json
cp "$D/last.out" "$D/rw.json"
step "testudod: randrw read and wrote both sizes" \
	json "$D/rw.json" 'j["reads"]>100 and j["writes"]>100 and j["write_bytes"]%4096==0 and j["write_bytes"]!=j["writes"]*4096'
expect 0 "testudod: verify after randrw" "$B" verify "$T" --journal "$D/j2"

# ---- limits and knobs
expect 0 "--ops 1000" "$B" "$T" --rw randread --qd 4 --ops 1000 --json
step "--ops: exactly 1000 operations" json "$D/last.out" 'j["ops"]==1000 and j["reads"]==1000'
expect 0 "--bytes 4M at 64k" "$B" "$T" --rw write --bs 64k --qd 4 --bytes 4M --json
step "--bytes: exactly 64 writes" json "$D/last.out" 'j["writes"]==64 and j["write_bytes"]==4<<20'
expect 0 "--flush-every 10 --fua" "$B" "$T" --rw randwrite --ops 100 --flush-every 10 --fua --json
step "--flush-every: 10 flushes for 100 writes" json "$D/last.out" 'j["writes"]==100 and j["flushes"]==10'
expect 0 "--flush-every 10 at QD8" "$B" "$T" --rw randwrite --qd 8 --ops 400 --flush-every 10 --json
step "--flush-every at QD8: every 10 writes of a connection drain into one FLUSH" \
	json "$D/last.out" 'j["writes"]==400 and j["flushes"]==40'
expect 0 "--rate 400 for 2 s" "$B" "$T" --rw randread --qd 4 --rate 400 --time 2 --json
step "--rate: 800 operations within 10%" json "$D/last.out" '720<=j["ops"]<=880'
step "--progress: a line a second" bash -c \
	"'$B' '$T' --rw randread --time 2.5 --progress 2>&1 >/dev/null | grep -c ' IOPS .* MB/s .* p99 ' | grep -qx 2"
step "not a terminal: quiet" bash -c "[ -z \"\$('$B' '$T' --rw randread --time 1.5 2>&1 >/dev/null)\" ]"
expect 0 "--range 1M:64k sequential" "$B" "$T" --rw read --bs 16k --ops 10 --range 1M:64k --json
step "--seed: the same seed gives the same result" bash -c \
	"'$B' '$T' --rw randwrite --ops 50 --seed 7 --verify '$D/s1' --quiet >/dev/null && '$B' '$T' --rw randwrite --ops 50 --seed 7 --verify '$D/s2' --quiet >/dev/null &&
	 cmp <(tail -c +65 '$D/s1' | od -An -tx8 -w24 | awk '{print \$1}' | sort) <(tail -c +65 '$D/s2' | od -An -tx8 -w24 | awk '{print \$1}' | sort)"

# ---- bad input: clear errors, exit status 2
expect 2 "unknown export" "$B" "nbd://127.0.0.1:$NBD_PORT/nope" --ops 1
step "unknown export: said so" grep -q "unknown export" "$D/last.out"
DEAD=$(free_port)
expect 2 "nothing listening" "$B" "nbd://127.0.0.1:$DEAD/vol" --ops 1
step "nothing listening: said so" grep -qi "refused" "$D/last.out"
expect 2 "not an NBD URI" "$B" "http://127.0.0.1/x"
expect 2 "bad --bs" "$B" "$T" --bs 1000
expect 2 "bad --bs distribution" "$B" "$T" --bs 4k:70,64k:x
expect 2 "--verify needs 4k blocks" "$B" "$T" --bs 512 --verify "$D/jx"
expect 2 "--range past the end" "$B" "$T" --range 255M:2M --ops 1
step "--range past the end: said so" grep -q "does not fit" "$D/last.out"
expect 2 "verify without --journal" "$B" verify "$T"
expect 2 "verify with a file that is not a journal" "$B" verify "$T" --journal "$D/dev.img"
expect 2 "bad --mix" "$B" "$T" --rw randrw --mix 101

# ---- several URIs: the first is down, a reconnect tries the next
expect 0 "two URIs, first down: --reconnect moves on" \
	"$B" "nbd://127.0.0.1:$DEAD/vol" "$T" --reconnect 5 --rw randread --ops 200 --json
step "two URIs: ran on the second" json "$D/last.out" 'j["ops"]==200 and j["connect_failures"]>=1'

# ---- kill test: SIGKILL testudod mid-run, restart it on the same port
"$B" "$T" --rw randrw --mix 30 --qd 16 --conns 2 --time 6 --verify "$D/jk" --reconnect 30 --json \
	>"$D/kill.json" 2>"$D/kill.err" &
BP=$!
wait_for "journal records" 10 bash -c "[ \$(stat -c %s '$D/jk') -gt 50000 ]"
kill_node
sleep 0.5
"$BUILD"/testudod --device "$D/dev.img" --nbd "127.0.0.1:$NBD_PORT" --admin 127.0.0.1:0 >"$D/out" 2>>"$D/log" &
NODE_PID=$!
wait_for "testudod back" 20 grep -q "listening admin" "$D/out"
wait "$BP"
st=$?
n=$((n + 1))
if [ $st -ne 0 ]; then echo "FAILED: bench across a SIGKILL: exit $st"; cat "$D/kill.err"; bad=$((bad + 1)); fi
step "kill test: reconnected, the pause and the requests lost with the connections reported" \
	json "$D/kill.json" 'j["reconnects"]>=1 and j["longest_gap_s"]>0.4 and j["pauses"]>=1 and j["errors"]["disconnect"]>=1 and j["in_doubt"]>=1'
expect 0 "kill test: the verify pass finds nothing lost" "$B" verify "$T" --journal "$D/jk"
cp "$D/last.out" "$D/kill.verify"
step "kill test: verified every journaled block" grep -Eq "verify: [1-9][0-9]* blocks checked, 0 lost" "$D/kill.verify"

# ---- testudod frozen (SIGSTOP), then gone when the run ends
restart_node() {
	"$BUILD"/testudod --device "$D/dev.img" --nbd "127.0.0.1:$NBD_PORT" --admin 127.0.0.1:0 >"$D/out" 2>>"$D/log" &
	NODE_PID=$!
	wait_for "testudod back" 20 grep -q "listening admin" "$D/out"
}
"$B" "$T" --rw randread --qd 4 --time 6 --reconnect 10 --io-timeout 1 --connect-timeout 1000 --json \
	>"$D/stop.json" 2>"$D/stop.err" &
BP=$!
sleep 1; kill -STOP "$NODE_PID"; sleep 2.5; kill -CONT "$NODE_PID"
wait "$BP"; st=$?
n=$((n + 1))
[ $st -eq 0 ] || { echo "FAILED: testudod SIGSTOPped: bench exit $st"; tail -5 "$D/stop.err"; bad=$((bad + 1)); }
step "testudod SIGSTOPped: --io-timeout dropped the connection, the bench came back" \
	json "$D/stop.json" 'j["reconnects"]>=1 and j["errors"]["disconnect"]>=1 and j["longest_gap_s"]>1.5 and j["ops"]>100'
step "... and said why" grep -q "no reply for" "$D/stop.err"
"$B" "$T" --rw randread --time 3 --reconnect 30 --json >"$D/gone.json" 2>"$D/gone.err" &
BP=$!
sleep 1; kill_node
wait "$BP"; st=$?
n=$((n + 1))
[ $st -eq 0 ] || { echo "FAILED: time ran out while reconnecting: exit $st, expected 0"; tail -5 "$D/gone.err"; bad=$((bad + 1)); }
step "time ran out while reconnecting: the open outage is the longest pause" \
	json "$D/gone.json" 'not j["aborted"] and j["gap_open_at_end"] and j["longest_gap_s"]>1.5 and j["pauses"]>=1'
restart_node

# ---- the journal survives the bench being killed
"$B" "$T" --rw randwrite --qd 8 --time 20 --verify "$D/jb" --quiet >/dev/null 2>&1 &
BP=$!
wait_for "journal records" 10 bash -c "[ \$(stat -c %s '$D/jb') -gt 100000 ]"
kill -KILL "$BP"; wait "$BP" 2>/dev/null
expect 0 "bench SIGKILLed: its journal verifies" "$B" verify "$T" --journal "$D/jb"
step "bench SIGKILLed: journal had records" grep -Eq "journal [1-9][0-9]* records" "$D/last.out"
step "SIGTERM at the end: clean exit" stop_node
NODE_PID=

# ---- nbdkit memory, over TCP and a unix socket
P1=$(free_port)
nbdkit_start "$P1" memory 128M
M=nbd://127.0.0.1:$P1/
expect 0 "nbdkit memory: verified writes" "$B" "$M" --rw randwrite --qd 8 --ops 2000 --verify "$D/jm"
expect 0 "nbdkit memory: verify pass" "$B" verify "$M" --journal "$D/jm"
# nbdkit memory forgets everything when restarted: the witness must see it
nbdkit_stop
nbdkit_start "$P1" memory 128M
expect 1 "nbdkit memory restarted: the loss is found" "$B" verify "$M" --journal "$D/jm"
step "nbdkit memory restarted: blocks reported missing" grep -q "LOST offset .*missing" "$D/last.out"
nbdkit_stop
nbdkit -f -U "$D/nk.sock" memory 64M 2>>"$D/nbdkit.log" &
NK=$!; NK_PIDS+=("$NK")
U="nbd+unix:///?socket=$D/nk.sock"
wait_for "nbdkit unix socket" 20 nbdinfo --size "$U"
expect 0 "nbd+unix: verified writes" "$B" "$U" --rw randwrite --qd 4 --ops 500 --verify "$D/ju"
expect 0 "nbd+unix: verify pass" "$B" verify "$U" --journal "$D/ju"
nbdkit_stop

# ---- a server stopped cleanly, frozen, or gone when the run ends
P4=$(free_port)
nbdkit_start "$P4" memory 64M
"$B" "nbd://127.0.0.1:$P4/" --rw randwrite --bs 64k --qd 16 --conns 2 --time 4 --reconnect 10 --json \
	>"$D/term.json" 2>"$D/term.err" &
BP=$!
sleep 1; nbdkit_stop; sleep 0.5
nbdkit_start "$P4" memory 64M
wait "$BP"; st=$?
n=$((n + 1))
# 0, or 3 when nbdkit answered requests in flight with ESHUTDOWN; never 141 (SIGPIPE)
[ $st -eq 0 ] || [ $st -eq 3 ] || { echo "FAILED: server SIGTERMed mid-write: bench exit $st"; tail -5 "$D/term.err"; bad=$((bad + 1)); }
step "server SIGTERMed mid-write: the bench reconnected" json "$D/term.json" 'j["reconnects"]>=1 and j["writes"]>0'
nbdkit_stop

# ---- broken servers
P2=$(free_port)
truncate -s 8M "$D/drop.img"
DROP_IMG="$D/drop.img" nbdkit_start "$P2" sh tests/servers/dropwrite.sh
X=nbd://127.0.0.1:$P2/
expect 0 "write-dropping server: writes are acknowledged" "$B" "$X" --rw randwrite --ops 200 --range 0:1M --verify "$D/jd"
expect 1 "write-dropping server: verify finds the loss" "$B" verify "$X" --journal "$D/jd"
step "write-dropping server: offsets printed" grep -Eq "^LOST offset [0-9]+ " "$D/last.out"
expect 1 "write-dropping server: reads in the run catch it too" \
	"$B" "$X" --rw randrw --ops 300 --range 0:256k --verify "$D/jd2"
nbdkit_stop
P3=$(free_port)
nbdkit_start "$P3" --filter=error memory 64M error=EIO error-pwrite-rate=20%
expect 3 "EIO on 20% of writes: counted, exit 3" "$B" "nbd://127.0.0.1:$P3/" --rw randwrite --ops 500 --json
step "EIO counted by kind" json "$D/last.out" '50<j["errors"]["EIO"]<200 and j["writes"]+j["errors"]["EIO"]==500'
nbdkit_stop

echo "bench: $((n - bad)) of $n checks passed"
[ "$bad" -eq 0 ]
