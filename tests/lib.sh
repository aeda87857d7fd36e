# SPDX-License-Identifier: Apache-2.0
# Shared helpers for the daemon's integration tests (source it).
#   start_node DIR [testudod args...]   format DIR/dev.img (unless it exists), start
#                                       testudod on port 0; sets NODE_PID, NBD_PORT,
#                                       ADMIN_PORT, NODE_DIR
#   stop_node                           SIGTERM, assert a clean exit (status 0)
#   kill_node                           SIGKILL
#   wait_for DESCRIPTION SECONDS CMD... poll CMD until it succeeds or time runs out
#   step DESCRIPTION CMD...             one counted check (n, bad), FAILED with its output
BUILD=${BUILD:-build}
PY=/usr/bin/python3     # Debian's python, which has libnbd's module

# step DESCRIPTION COMMAND...: run a check (in this shell: variables it sets
# survive), count it in n and bad (the caller sets n=0 bad=0 and D), print
# FAILED with the output's tail, or "ok: ..." when STEP_OK=1
step() {
	local what=$1; shift
	n=$((n + 1))
	if ! "$@" >"$D/step.out" 2>&1; then
		echo "FAILED: $what"; tail -15 "$D/step.out" | sed 's/^/    /'
		bad=$((bad + 1))
	elif [ "${STEP_OK:-0}" = 1 ]; then
		echo "ok: $what"
	fi
}

wait_for() {
	local what=$1 secs=$2; shift 2
	local deadline=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		if [ $SECONDS -ge $deadline ]; then
			echo "timed out after ${secs}s waiting for: $what" >&2
			return 1
		fi
		sleep 0.05
	done
}

# Test devices stay sparse files: filling them with zeros (what format does
# by default) would cost seconds per node. Benchmarks set FORMAT_FILL=1.
format_args() { [ "${FORMAT_FILL:-0}" = 1 ] || echo --sparse; }

start_node() {
	NODE_DIR=$1; shift
	mkdir -p "$NODE_DIR"
	[ -e "$NODE_DIR/dev.img" ] || "$BUILD"/testudo format "$NODE_DIR/dev.img" --size "${DEV_SIZE:-2G}" $(format_args) >/dev/null || return 1
	: >"$NODE_DIR/out"
	"$BUILD"/testudod --device "$NODE_DIR/dev.img" --nbd 127.0.0.1:0 --admin 127.0.0.1:0 "$@" \
		>"$NODE_DIR/out" 2>>"$NODE_DIR/log" &
	NODE_PID=$!
	wait_for "testudod to listen" 20 grep -q "listening admin" "$NODE_DIR/out" || return 1
	NBD_PORT=$(sed -n 's/^listening nbd .*:\([0-9]*\)$/\1/p' "$NODE_DIR/out")
	ADMIN_PORT=$(sed -n 's/^listening admin .*:\([0-9]*\)$/\1/p' "$NODE_DIR/out")
	[ -n "$NBD_PORT" ] && [ -n "$ADMIN_PORT" ]
}

# term_and_check PID LOG NAME: SIGTERM, then the exit status must be 0
term_and_check() {
	local st=0
	kill -TERM "$1" 2>/dev/null
	wait "$1" || st=$?
	if [ "$st" -ne 0 ]; then
		echo "$3 exited with status $st after SIGTERM" >&2
		tail -20 "$2" >&2
		return 1
	fi
}

stop_node() {
	term_and_check "$NODE_PID" "$NODE_DIR/log" testudod
}

kill_node() {
	kill -KILL "$NODE_PID" 2>/dev/null
	wait "$NODE_PID" 2>/dev/null
	return 0
}

# volume creation without the daemon's admin API: the offline CLI, before start
make_volume() {   # make_volume DIR NAME SIZE [--compress lz4]
	local dir=$1; shift
	"$BUILD"/testudo --device "$dir/dev.img" volume create "$@" >/dev/null
}

# ---- clusters: N nodes n1..nN on loopback, each a peer of every other ----
#   start_cluster DIR N [testudod args...]  sets CL_PID[i], CL_NBD[i], CL_ADMIN[i], CL_REPL[i]
#   start_cluster_node I                    (re)start node I on its own ports
#   stop_cluster_node I                     SIGTERM, assert a clean exit
#   kill_cluster_node I                     SIGKILL
#   stop_cluster                            SIGTERM every live node, assert clean exits
#   peer_state I PEER                       what node I's /v1/status says of PEER
CL_PID=() CL_NBD=() CL_ADMIN=() CL_REPL=()
start_cluster() {
	CL_DIR=$1 CL_N=$2
	shift 2
	CL_ARGS=("$@")
	local ports
	# repl ports below the kernel's ephemeral range: a port picked there and
	# released could be handed to another node's NBD or admin listener
	# (port 0) before this node binds it
	ports=($($PY -c "import random, socket
low = int(open('/proc/sys/net/ipv4/ip_local_port_range').read().split()[0])
got = []
while len(got) < $CL_N:
    p = random.randrange(max(1024, low - 12000), low)
    s = socket.socket()
    try:
        s.bind(('127.0.0.1', p))
    except OSError:
        continue
    finally:
        s.close()
    if p not in got:
        got.append(p)
print(' '.join(map(str, got)))"))
	for i in $(seq "$CL_N"); do CL_REPL[$i]=${ports[$((i - 1))]}; CL_NBD[$i]=0; done
	for i in $(seq "$CL_N"); do start_cluster_node "$i" || return 1; done
}

start_cluster_node() {
	local i=$1 d=$CL_DIR/n$1 peers=()
	for k in $(seq "$CL_N"); do
		[ "$k" = "$i" ] || peers+=(--peer "n$k=127.0.0.1:${CL_REPL[$k]}")
	done
	mkdir -p "$d"
	[ -e "$d/dev.img" ] || "$BUILD"/testudo format "$d/dev.img" --size "${DEV_SIZE:-1G}" $(format_args) >/dev/null || return 1
	: >"$d/out"
	"$BUILD"/testudod --device "$d/dev.img" --nbd "127.0.0.1:${CL_NBD[$i]}" --admin 127.0.0.1:0 \
		--node-id "n$i" --repl "127.0.0.1:${CL_REPL[$i]}" "${peers[@]}" "${CL_ARGS[@]}" >"$d/out" 2>>"$d/log" &
	CL_PID[$i]=$!
	wait_for "node n$i to listen" 20 grep -q "listening repl" "$d/out" || { tail -5 "$d/log" >&2; return 1; }
	CL_NBD[$i]=$(sed -n 's/^listening nbd .*:\([0-9]*\)$/\1/p' "$d/out")
	CL_ADMIN[$i]=$(sed -n 's/^listening admin .*:\([0-9]*\)$/\1/p' "$d/out")
}

stop_cluster_node() {
	local pid=${CL_PID[$1]}
	CL_PID[$1]=
	term_and_check "$pid" "$CL_DIR/n$1/log" "node n$1"
}

kill_cluster_node() {
	kill -KILL "${CL_PID[$1]}" 2>/dev/null
	wait "${CL_PID[$1]}" 2>/dev/null
	CL_PID[$1]=
	return 0
}

stop_cluster() {
	local bad=0
	for i in $(seq "${CL_N:-0}"); do
		[ -n "${CL_PID[$i]:-}" ] || continue
		kill -CONT "${CL_PID[$i]}" 2>/dev/null
		stop_cluster_node "$i" || bad=1
	done
	return $bad
}

peer_state() {
	curl -sf "http://127.0.0.1:${CL_ADMIN[$1]}/v1/status" |
		$PY -c "import json,sys; print([p['state'] for p in json.load(sys.stdin)['cluster']['peers'] if p['id']=='$2'][0])"
}

# all_up: every node of a 3-node cluster sees both its peers up
all_up() {
	local i k
	for i in 1 2 3; do for k in 1 2 3; do
		[ "$i" = "$k" ] || [ "$(peer_state "$i" "n$k")" = up ] || return 1
	done; done
}

# ---- a cluster's volumes, as node I's admin API shows them (start_cluster's arrays)
cli() { local i=$1; shift; "$BUILD"/testudo --admin "127.0.0.1:${CL_ADMIN[$i]}" "$@"; }
uri() { echo "nbd://127.0.0.1:${CL_NBD[$1]}/$2"; }
# the replica states of volume $2 as node $1 sees them, sorted: "n1=in-sync n2=in-sync n3=out-of-date"
states() {
	curl -sf "http://127.0.0.1:${CL_ADMIN[$1]}/v1/volumes/$2" | $PY -c "import json,sys
v = json.load(sys.stdin)
print(' '.join(sorted('%s=%s' % (r['node'], r['state']) for r in v['replicas'])))"
}
field() {   # field I VOLUME KEY
	curl -sf "http://127.0.0.1:${CL_ADMIN[$1]}/v1/volumes/$2" | $PY -c "import json,sys; print(json.load(sys.stdin)['$3'])"
}
all_in_sync() { [ "$(states "$1" "$2")" = "n1=in-sync n2=in-sync n3=in-sync" ]; }
state_of() { states "$1" "$2" | tr ' ' '\n' | sed -n "s/^$3=//p"; }
has_state() { [ "$(state_of "$1" "$2" "$3")" = "$4" ]; }
# identical I [VOLUME]: volume verify through node I says the replicas are identical (VOLUME: v1)
identical() { cli "$1" volume verify "${2:-v1}" | tee "$D/vv.out" && grep -q ": identical" "$D/vv.out"; }
