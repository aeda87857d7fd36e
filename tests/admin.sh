#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The admin endpoint and the online CLI against a running testudod: every
# HTTP endpoint (curl, or python3 urllib without curl), the parser's
# answers to bad input, keep-alive and many clients at once, /metrics as
# Prometheus text with counters that move after NBD I/O, every online CLI
# command and its errors (name taken, too large, in use, daemon down),
# and a clean SIGTERM exit.
#
#   tests/admin.sh SCRATCHDIR          (BUILD=build/asan tests/admin.sh ...)
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
D=${1:?usage: admin.sh SCRATCHDIR}
mkdir -p "$D"
D=$(cd "$D" && pwd)
DEV=$D/dev.img
T=$BUILD/testudo
n=0 bad=0
PID= HOLD=

# ---- helpers ------------------------------------------------------------------

cleanup() {
	# only what this script started, by PID
	[ -n "$HOLD" ] && kill "$HOLD" 2>/dev/null
	[ -n "$PID" ] && kill -KILL "$PID" 2>/dev/null
	rm -f "$D/hold"
}
trap cleanup EXIT

fail() { echo "FAILED: $*"; bad=$((bad + 1)); }
pass() { :; }
check() {   # check DESCRIPTION COMMAND...: must exit 0
	local what=$1; shift
	n=$((n + 1))
	if ! out=$("$@" 2>&1); then
		fail "$what: $* exited non-zero: $out"
	fi
}
fails() {   # fails DESCRIPTION PATTERN COMMAND...: non-zero exit, PATTERN in one line on stderr
	local what=$1 pat=$2; shift 2
	n=$((n + 1))
	if "$@" >"$D/stdout" 2>"$D/stderr"; then
		fail "$what: $* succeeded: $(cat "$D/stdout")"
	elif ! grep -qi -- "$pat" "$D/stderr"; then
		fail "$what: expected '$pat' in: $(cat "$D/stderr")"
	elif [ "$(wc -l <"$D/stderr")" -ne 1 ]; then
		fail "$what: error is not one clear line: $(cat "$D/stderr")"
	fi
}
has() {   # has DESCRIPTION PATTERN TEXT (extended regex)
	n=$((n + 1))
	if ! grep -qE -- "$2" <<<"$3"; then
		fail "$1: '$2' not in: $3"
	fi
}
eq() {   # eq DESCRIPTION EXPECTED ACTUAL
	n=$((n + 1))
	if [ "$2" != "$3" ]; then
		fail "$1: expected '$2', got '$3'"
	fi
}
# poll CONDITION-COMMAND... with a deadline (seconds in $DEADLINE, default 10)
poll() {
	local end=$((SECONDS + ${DEADLINE:-10}))
	until "$@" >/dev/null 2>&1; do
		[ "$SECONDS" -ge "$end" ] && return 1
		sleep 0.05
	done
}

CURL=${CURL-$(command -v curl || true)}   # CURL= forces the python3 urllib client
PY=python3
# http METHOD PATH [BODY]: sets CODE, BODY and HDRS (headers, lower-cased names)
http() {
	local m=$1 p=$2
	rm -f "$D/body" "$D/hdrs"
	if [ -n "$CURL" ]; then
		local args=(-sS -o "$D/body" -D "$D/hdrs" -w '%{http_code}')
		if [ "$m" = HEAD ]; then args+=(--head); else args+=(-X "$m"); fi
		[ $# -ge 3 ] && args+=(-H 'Content-Type: application/json' --data-binary "$3")
		CODE=$(curl "${args[@]}" "http://$ADMIN$p" 2>"$D/curl.err") || CODE=000
	else
		CODE=$("$PY" - "$m" "http://$ADMIN$p" "$D/body" "$D/hdrs" "${3-}" $# <<'EOF'
import sys, urllib.request, urllib.error
m, url, bodyf, hdrf, data, argc = sys.argv[1:7]
req = urllib.request.Request(url, method=m, data=data.encode() if int(argc) >= 3 else None,
                             headers={"Content-Type": "application/json"} if int(argc) >= 3 else {})
try:
    r = urllib.request.urlopen(req, timeout=30)
except urllib.error.HTTPError as e:
    r = e
except Exception:
    print("000"); sys.exit(0)
open(bodyf, "wb").write(r.read())
open(hdrf, "w").write("".join("%s: %s\r\n" % kv for kv in r.headers.items()))
print(r.status if hasattr(r, "status") else r.code)
EOF
)
	fi
	BODY=$(cat "$D/body" 2>/dev/null)
	HDRS=$(tr 'A-Z' 'a-z' <"$D/hdrs" 2>/dev/null | tr -d '\r')
}
# json EXPR: evaluate a Python expression on the JSON in $BODY (as j)
json() { "$PY" -c 'import json,sys; j=json.loads(sys.stdin.read()); print(eval(sys.argv[1]))' "$1" <<<"$BODY"; }

# raw BYTES-AS-PYTHON-STRING: send them on one connection, print what comes back until close or 3 s
raw() {
	"$PY" - "$ADMIN" "$1" <<'EOF'
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
data = eval(sys.argv[2])
s = socket.create_connection((host, int(port)), timeout=5)
s.sendall(data if isinstance(data, bytes) else data.encode())
out = b""
end = time.time() + 3
s.settimeout(0.5)
while time.time() < end:
    try:
        b = s.recv(65536)
    except socket.timeout:
        continue
    except ConnectionResetError:
        break
    if not b:
        out += b"<EOF>"
        break
    out += b
sys.stdout.write(out.decode("latin-1"))
EOF
}

# Prometheus text checker: "check FILE" validates the format; "get FILE SERIES" prints a value
cat >"$D/prom.py" <<'EOF'
import re, sys
mode, path = sys.argv[1], sys.argv[2]
text = open(path).read()
name_re = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
label_re = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\["\\n])*"'
sample = re.compile(r"^(%s)(\{(?:%s(?:,%s)*)?\})? ([-+]?(?:[0-9.]+(?:[eE][-+]?[0-9]+)?|NaN|\+Inf|-Inf))$" % (name_re, label_re, label_re))
values, types, errors, seen = {}, {}, [], set()
current = None
for i, line in enumerate(text.split("\n")[:-1], 1):
    if line.startswith("# HELP ") or line.startswith("# TYPE "):
        parts = line.split(" ", 3)
        if len(parts) < 4 or not re.fullmatch(name_re, parts[2]):
            errors.append("%d: bad comment %r" % (i, line)); continue
        if line.startswith("# TYPE "):
            if parts[2] in types:
                errors.append("%d: second TYPE for %s" % (i, parts[2]))
            if parts[3] not in ("counter", "gauge", "histogram", "summary", "untyped"):
                errors.append("%d: bad type %r" % (i, parts[3]))
            types[parts[2]] = parts[3]
            current = parts[2]
        continue
    if line.startswith("#"):
        continue
    m = sample.match(line)
    if not m:
        errors.append("%d: not a sample line %r" % (i, line)); continue
    name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
    family = re.sub(r"_(bucket|sum|count)$", "", name) if types.get(re.sub(r"_(bucket|sum|count)$", "", name)) == "histogram" else name
    if family != current:
        errors.append("%d: %s outside its family's block (TYPE %s)" % (i, name, current))
    if (name + labels) in seen:
        errors.append("%d: duplicate series %s" % (i, name + labels))
    seen.add(name + labels)
    if types.get(family) == "counter" and value < 0:
        errors.append("%d: negative counter" % i)
    values[name + labels] = value
# histograms: buckets rise with le, +Inf equals _count
hist = {}
for k, v in values.items():
    m = re.match(r'^(.*)_bucket\{(.*),le="([^"]*)"\}$', k)
    if m:
        hist.setdefault((m.group(1), m.group(2)), []).append((float(m.group(3).replace("+Inf", "inf")), v))
for (fam, lab), bs in hist.items():
    bs.sort()
    if any(b[1] > c[1] for b, c in zip(bs, bs[1:])):
        errors.append("%s{%s}: buckets not cumulative" % (fam, lab))
    if bs[-1][0] != float("inf") or values.get("%s_count{%s}" % (fam, lab)) != bs[-1][1]:
        errors.append("%s{%s}: +Inf bucket missing or not equal to _count" % (fam, lab))
    if "%s_sum{%s}" % (fam, lab) not in values:
        errors.append("%s{%s}: no _sum" % (fam, lab))
if mode == "check":
    for e in errors[:20]:
        print(e)
    print("%d samples, %d families, %d histograms" % (len(values), len(types), len(hist)))
    sys.exit(1 if errors else 0)
if sys.argv[3] not in values:
    sys.exit(1)
v = values[sys.argv[3]]
print(int(v) if v.is_integer() else v)
EOF
metrics() {   # metrics FILE: fetch /metrics into FILE
	http GET /metrics
	printf '%s\n' "$BODY" >"$1"
}
metric() { "$PY" "$D/prom.py" get "$1" "$2"; }

daemon_up() { grep -q '^listening admin ' "$D/daemon.out" && grep -q '^listening nbd ' "$D/daemon.out"; }
start_daemon() {
	: >"$D/daemon.out"
	"$BUILD/testudod" --device "$DEV" --nbd 127.0.0.1:0 --admin 127.0.0.1:0 >"$D/daemon.out" 2>"$D/daemon.err" &
	PID=$!
	n=$((n + 1))
	if ! DEADLINE=20 poll daemon_up; then
		fail "testudod did not print its listening lines: $(cat "$D/daemon.out" "$D/daemon.err")"
		exit 1
	fi
	NBD=$(awk '/^listening nbd /{print $3}' "$D/daemon.out")
	ADMIN=$(awk '/^listening admin /{print $3}' "$D/daemon.out")
}
stop_daemon() {   # SIGTERM by PID, then a clean exit status 0
	kill -TERM "$PID"
	n=$((n + 1))
	if ! DEADLINE=30 poll eval '! kill -0 '"$PID"; then
		fail "testudod did not exit within 30 s of SIGTERM"
		kill -KILL "$PID"
	fi
	wait "$PID"
	local st=$?
	PID=
	if [ "$st" -ne 0 ]; then
		fail "testudod exited with status $st after SIGTERM: $(tail -5 "$D/daemon.err")"
	fi
}

# nbdsh runs "python3 -m nbd": use a python3 that has the libnbd bindings
NBDSH_PATH=$PATH
for py in python3 /usr/bin/python3; do
	if command -v "$py" >/dev/null && "$py" -c 'import nbd' 2>/dev/null; then
		NBDSH_PATH="$(dirname "$(command -v "$py")"):$PATH"
		break
	fi
done

# ---- start ----------------------------------------------------------------------

check "format the device" "$T" format "$DEV" --size 256M --segment-size 1M
start_daemon
echo "testudod: pid $PID, nbd $NBD, admin $ADMIN"

# ---- endpoints, with curl ------------------------------------------------------------

http GET /v1/volumes
eq "GET /v1/volumes" 200 "$CODE"
eq "no volumes yet" "[]" "$BODY"
has "JSON content type" "content-type: application/json" "$HDRS"

http POST /v1/volumes '{"name":"alpha","size":16777216,"compress":"lz4"}'
eq "POST /v1/volumes creates" 201 "$CODE"
eq "created volume's fields" "alpha 16777216 lz4 0" "$(json '" ".join(str(x) for x in (j["name"], j["size"], j["compress"], j["connections"]))')"
has "Location header" "location: /v1/volumes/alpha" "$HDRS"
for k in name size compress used lsn epoch version primary role replicas connections; do
	has "volume JSON has $k" "\"$k\":" "$BODY"
done
http POST /v1/volumes '{"name":"beta","size":8388608}'
eq "POST without compress" 201 "$CODE"
eq "compress defaults to none" none "$(json 'j["compress"]')"
http POST /v1/volumes '{"name":"alpha","size":1048576}'
eq "name taken: 409" 409 "$CODE"
has "name taken: message" "already exists" "$(json 'j["error"]')"
http POST /v1/volumes '{"name":"huge","size":10737418240}'
eq "too large for the device: 507" 507 "$CODE"
has "too large: message" "not enough space" "$(json 'j["error"]')"
http POST /v1/volumes '{"name":"../etc","size":1048576}'
eq "bad name: 400" 400 "$CODE"
http POST /v1/volumes '{"name":"odd","size":1000}'
eq "size not a multiple of 512: 400" 400 "$CODE"
http POST /v1/volumes '{"name":"neg","size":-512}'
eq "negative size: 400" 400 "$CODE"
http POST /v1/volumes '{"name":"str","size":"1G"}'
eq "size as a string: 400" 400 "$CODE"
http POST /v1/volumes '{"name":"zip","size":1048576,"compress":"gzip"}'
eq "unknown compression: 400" 400 "$CODE"
http POST /v1/volumes '{"name":"x","size":1048576,"colour":"red"}'
eq "unknown field: 400" 400 "$CODE"
http POST /v1/volumes '{"name":"x","size":1048576'
eq "truncated JSON: 400" 400 "$CODE"
has "JSON error body" '^\{"error":"' "$BODY"
http POST /v1/volumes '{"name":"x","name":"y","size":1048576}'
eq "duplicate JSON keys: 400" 400 "$CODE"
http POST /v1/volumes '[1,2]'
eq "JSON that is not an object: 400" 400 "$CODE"

http GET /v1/volumes
eq "list after creates" "alpha,beta" "$(json '",".join(v["name"] for v in j)')"
http GET /v1/volumes/alpha
eq "GET one volume" "200 alpha" "$CODE $(json 'j["name"]')"
http GET /v1/volumes/nope
eq "GET a missing volume: 404" 404 "$CODE"
o=$(raw '"HEAD /v1/volumes/alpha HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"')
has "HEAD one volume: 200 with the GET's Content-Length" '^HTTP/1.1 200 .*Content-Length: [1-9]' "$(tr -d '\r\n' <<<"$o")"
eq "HEAD has no body" "<EOF>" "${o#*$'\r\n\r\n'}"

http PUT /v1/volumes/alpha '{"size":33554432}'
eq "PUT resizes" "200 33554432" "$CODE $(json 'j["size"]')"
http PUT /v1/volumes/nope '{"size":1048576}'
eq "resize a missing volume: 404" 404 "$CODE"
http PUT /v1/volumes/alpha '{"size":10737418240}'
eq "resize beyond the device: 507" 507 "$CODE"
http PUT /v1/volumes/alpha '{"size":12345}'
eq "resize to a bad size: 400" 400 "$CODE"
http PUT /v1/volumes/alpha '{}'
eq "resize without a size: 400" 400 "$CODE"
http PATCH /v1/volumes/alpha '{"size":1048576}'
eq "PATCH a volume: 405" 405 "$CODE"
has "405 names what is allowed" "allow: get, head, put, delete" "$HDRS"
http DELETE /v1/volumes
eq "DELETE the collection: 405" 405 "$CODE"
http GET /v1/nothing
eq "unknown endpoint: 404" 404 "$CODE"
http GET /v1/volumes/a/b
eq "path below a volume: 404" 404 "$CODE"
http GET /v1/volumes/.hidden
eq "invalid name in the path: 400" 400 "$CODE"

http DELETE /v1/volumes/beta
eq "DELETE a volume" "200 True" "$CODE $(json 'j["deleted"]')"
http DELETE /v1/volumes/beta
eq "DELETE it again: 404" 404 "$CODE"

http GET /v1/status
eq "GET /v1/status" 200 "$CODE"
eq "status: device and listeners" "$DEV $NBD $ADMIN" "$(json '" ".join((j["device"], j["listeners"]["nbd"], j["listeners"]["admin"]))')"
eq "status: volume count and connections" "1 0" "$(json '"%d %d" % (j["volumes"], j["connections"])')"
has "status: uptime" '"uptime_seconds":[0-9]+' "$BODY"
for k in capacity volume_bytes live_bytes segments write_amplification checkpoints cleaner_bytes segments_cleaned batches; do
	has "status: engine $k" "\"$k\":" "$BODY"
done
eq "status: segments used + free = total" True "$(json 'j["engine"]["segments"]["used"] + j["engine"]["segments"]["free"] == j["engine"]["segments"]["total"]')"

# ---- /metrics ---------------------------------------------------------------------------

http GET /metrics
eq "GET /metrics" 200 "$CODE"
has "Prometheus 0.0.4 content type" "content-type: text/plain; version=0.0.4" "$HDRS"
printf '%s\n' "$BODY" >"$D/m0"
check "/metrics parses as Prometheus text" "$PY" "$D/prom.py" check "$D/m0"
for m in testudo_volume_ops_total testudo_volume_errors_total testudo_volume_read_bytes_total \
	testudo_volume_written_bytes_total testudo_engine_batches_total testudo_engine_batch_records_total \
	testudo_engine_cleaner_bytes_total testudo_engine_segments_cleaned_total testudo_engine_write_amplification \
	testudo_engine_user_bytes_total testudo_engine_log_bytes_total testudo_engine_checkpoints_total \
	testudo_engine_live_bytes testudo_engine_index_bytes testudo_engine_read_checksum_errors_total \
	testudo_nbd_connections_total testudo_nbd_connections_open; do
	has "/metrics has $m" "^# TYPE $m " "$BODY"
done

# NBD traffic moves the counters
head -c 8M /dev/urandom >"$D/in.bin"
check "nbdcopy into alpha" nbdcopy "$D/in.bin" "nbd://$NBD/alpha"
check "nbdcopy out of alpha" nbdcopy "nbd://$NBD/alpha" "$D/out.bin"
check "nbdinfo alpha" nbdinfo "nbd://$NBD/alpha"
eq "data read back equals data written" "$(head -c 8M "$D/out.bin" | sha256sum | cut -d' ' -f1)" "$(sha256sum <"$D/in.bin" | cut -d' ' -f1)"
metrics "$D/m1"
check "/metrics after I/O parses" "$PY" "$D/prom.py" check "$D/m1"
has "latency histogram present" 'testudo_volume_request_duration_seconds_bucket\{volume="alpha",op="write",le="\+Inf"\}' "$(cat "$D/m1")"
for s in 'testudo_volume_ops_total{volume="alpha",op="write"}' 'testudo_volume_ops_total{volume="alpha",op="read"}' \
	'testudo_engine_batches_total' 'testudo_engine_batch_records_total' 'testudo_engine_user_bytes_total' \
	'testudo_nbd_connections_total'; do
	a=$(metric "$D/m0" "$s") b=$(metric "$D/m1" "$s")
	n=$((n + 1))
	[ "${b:-0}" -gt "${a:-0}" ] 2>/dev/null || fail "$s did not increase: ${a:-none} -> ${b:-none}"
done
w=$(metric "$D/m1" 'testudo_volume_written_bytes_total{volume="alpha"}')
r=$(metric "$D/m1" 'testudo_volume_read_bytes_total{volume="alpha"}')
n=$((n + 1)); [ "${w:-0}" -ge 8388608 ] || fail "written bytes $w < 8 MiB"
n=$((n + 1)); [ "${r:-0}" -ge 8388608 ] || fail "read bytes $r < 8 MiB"
eq "write histogram +Inf equals count" \
	"$(metric "$D/m1" 'testudo_volume_request_duration_seconds_count{volume="alpha",op="write"}')" \
	"$(metric "$D/m1" 'testudo_volume_request_duration_seconds_bucket{volume="alpha",op="write",le="+Inf"}')"
eq "ops_total equals the histogram count" \
	"$(metric "$D/m1" 'testudo_volume_ops_total{volume="alpha",op="write"}')" \
	"$(metric "$D/m1" 'testudo_volume_request_duration_seconds_count{volume="alpha",op="write"}')"
http GET /v1/volumes/alpha
n=$((n + 1)); [ "$(json 'j["used"]')" -gt 0 ] || fail "used bytes still 0 after writes: $BODY"

# ---- the parser: bad input gets a JSON error, framing, keep-alive ---------------------------

o=$(raw '"GARBAGE\r\n\r\n"')
has "malformed request line: 400" '^HTTP/1.1 400 ' "$o"
has "400 has a JSON error and closes" '\{"error":".*"\}.*<EOF>' "$(tr -d '\r\n' <<<"$o")"
o=$(raw '"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Big: " + "a" * 20000 + "\r\n\r\n"')
has "headers over 16 KiB: 431" '^HTTP/1.1 431 ' "$o"
o=$(raw '"GET /v1/" + "a" * 17000 + " HTTP/1.1\r\nHost: x\r\n\r\n"')
has "request line over 16 KiB: 431" '^HTTP/1.1 431 ' "$o"
o=$(raw '"POST /v1/volumes HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n"')
has "body over 64 KiB: 413" '^HTTP/1.1 413 ' "$o"
o=$(raw '"POST /v1/volumes HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n"')
has "absurd Content-Length: 413" '^HTTP/1.1 413 ' "$o"
o=$(raw '"POST /v1/volumes HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n"')
has "malformed Content-Length: 400" '^HTTP/1.1 400 ' "$o"
o=$(raw '"POST /v1/volumes HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}"')
has "two Content-Lengths: 400" '^HTTP/1.1 400 ' "$o"
o=$(raw '"POST /v1/volumes HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"')
has "chunked body: 501" '^HTTP/1.1 501 ' "$o"
o=$(raw '"GET /v1/status HTTP/1.1\r\n\r\n"')
has "HTTP/1.1 without Host: 400" '^HTTP/1.1 400 ' "$o"
o=$(raw '"GET /v1/status HTTP/2.0\r\nHost: x\r\n\r\n"')
has "HTTP/2.0: 505" '^HTTP/1.1 505 ' "$o"
o=$(raw '"GET /v1/status HTTP/1.1\nHost: x\n\n"')
has "bare LF line ends: 400" '^HTTP/1.1 400 ' "$o"
o=$(raw '"GET /v1/status HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n"')
has "obsolete line folding: 400" '^HTTP/1.1 400 ' "$o"
o=$(raw '"GET  /v1/status HTTP/1.1\r\nHost: x\r\n\r\n"')
has "two spaces in the request line: 400" '^HTTP/1.1 400 ' "$o"
o=$(raw '"GET http://x/v1/status HTTP/1.1\r\nHost: x\r\n\r\n"')
has "absolute-form target: 400" '^HTTP/1.1 400 ' "$o"
o=$(raw '"GET /v1/status HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n"')
has "space in a header name: 400" '^HTTP/1.1 400 ' "$o"
o=$(raw '"GET /v1/status HTTP/1.1\r\nHost: x\r\n" + "".join("X-%d: y\r\n" % i for i in range(200)) + "\r\n"')
has "too many headers: 431" '^HTTP/1.1 431 ' "$o"
o=$(raw '"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + "\x00" * 64 + "\r\n\r\n"')
has "binary garbage (a TLS hello): 400" '^HTTP/1.1 400 ' "$o"
o=$(raw '"GET /v1/status HTTP/1.1\r\nHost: x\r\nExpect: something\r\n\r\n"')
has "unknown Expect: 417" '^HTTP/1.1 417 ' "$o"

o=$(raw '"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/volumes HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"')
eq "pipelined requests: three replies in order" "200 200 200" "$(grep -ao '^HTTP/1.1 [0-9]*' <<<"$o" | awk '{printf "%s%s", s, $2; s=" "}')"
has "pipelined: JSON, then JSON, then Prometheus" '"device".*\[\{"name":"alpha".*# TYPE' "$(tr -d '\r\n' <<<"$o")"
has "Connection: close honoured (closed after the reply)" '<EOF>$' "$o"
o=$(raw '"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n"')
has "keep-alive: the connection stays open" 'connection: keep-alive' "$(tr 'A-Z' 'a-z' <<<"$o")"
n=$((n + 1)); grep -q '<EOF>' <<<"$o" && fail "keep-alive connection was closed: $o"
o=$(raw '"GET /v1/status HTTP/1.0\r\n\r\n"')
has "HTTP/1.0 closes by default" '<EOF>$' "$o"
o=$(raw '"POST /v1/volumes HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 39\r\n\r\n"')
has "Expect: 100-continue gets 100 Continue" '^HTTP/1.1 100 Continue' "$o"
o=$(raw '(lambda b: "\r\nPOST /v1/volumes HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%sGET /v1/volumes/gamma HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % (len(b), b))(__import__("json").dumps({"name": "gamma", "size": 4194304}))')
eq "leading blank line ignored, body framed by Content-Length" "201 200" "$(grep -ao '^HTTP/1.1 [0-9]*' <<<"$o" | awk '{printf "%s%s", s, $2; s=" "}')"
http DELETE /v1/volumes/gamma
eq "DELETE gamma" 200 "$CODE"

# a body sent in pieces, and many clients at once
n=$((n + 1))
if ! "$PY" - "$ADMIN" >"$D/py.out" 2>&1 <<'EOF'; then fail "slow body / many clients: $(cat "$D/py.out")"; fi
import socket, sys, threading, time, json
host, port = sys.argv[1].rsplit(":", 1); port = int(port)
def reply(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        b = s.recv(65536)
        if not b: raise SystemExit("closed early: %r" % buf)
        buf += b
    head, rest = buf.split(b"\r\n\r\n", 1)
    cl = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0])
    while len(rest) < cl:
        rest += s.recv(65536)
    return int(head.split()[1]), rest[:cl]
# body in three pieces with pauses
s = socket.create_connection((host, port), timeout=10)
body = json.dumps({"name": "slow", "size": 1048576}).encode()
s.sendall(b"POST /v1/volumes HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:5])
time.sleep(0.2); s.sendall(body[5:10]); time.sleep(0.2); s.sendall(body[10:])
st, b = reply(s)
assert st == 201, (st, b)
# same connection: delete it (keep-alive)
s.sendall(b"DELETE /v1/volumes/slow HTTP/1.1\r\nHost: x\r\n\r\n")
st, b = reply(s)
assert st == 200, (st, b)
# 100 idle connections open while 50 clients ask at once
idle = [socket.create_connection((host, port), timeout=10) for _ in range(100)]
errors = []
def client(i):
    try:
        c = socket.create_connection((host, port), timeout=10)
        for _ in range(5):
            c.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
            st, b = reply(c)
            assert st == 200 and json.loads(b)["volumes"] >= 1, (st, b)
        c.close()
    except BaseException as e:
        errors.append(repr(e))
ts = [threading.Thread(target=client, args=(i,)) for i in range(50)]
[t.start() for t in ts]; [t.join() for t in ts]
for c in idle: c.close()
assert not errors, errors[:3]
print("ok")
EOF
http GET /v1/status
eq "the daemon still answers after the bad input" 200 "$CODE"

# ---- the CLI, online ---------------------------------------------------------------------

C=("$T" --admin "$ADMIN")
check "cli: volume create" "${C[@]}" volume create delta 8M
check "cli: volume create --compress lz4" "${C[@]}" volume create epsilon 4M --compress lz4
has "cli: create printed the volume" "created volume epsilon \(4194304 bytes, lz4\)" "$out"
fails "cli: name taken" "already exists" "${C[@]}" volume create delta 1M
fails "cli: size too large for the device" "not enough space" "${C[@]}" volume create huge 10G
fails "cli: bad size" "invalid size" "${C[@]}" volume create z 12Q
fails "cli: bad name" "invalid volume name" "${C[@]}" volume create ../z 1M
check "cli: volume list" "${C[@]}" volume list
has "cli: list is a table" "^NAME +SIZE +USED +LZ4 +LSN +CONNS" "$out"
has "cli: list shows delta" "^delta +8.0 MiB" "$out"
has "cli: list shows epsilon with lz4" "^epsilon +4.0 MiB +[0-9.]+ [KMG]?i?B +yes" "$out"
check "cli: volume list --json" "${C[@]}" volume list --json
BODY=$out
eq "cli: --json is the daemon's JSON" "alpha,delta,epsilon" "$(json '",".join(v["name"] for v in j)')"
check "cli: volume resize" "${C[@]}" volume resize delta 16M
has "cli: resize printed" "resized volume delta to 16777216 bytes" "$out"
fails "cli: resize too large" "not enough space" "${C[@]}" volume resize delta 10G
fails "cli: resize a missing volume" "no volume named 'nope'" "${C[@]}" volume resize nope 1M
check "cli: status" "${C[@]}" status
for k in device nbd admin uptime volumes 'nbd connections' capacity segments 'write amplification' checkpoints cleaner; do
	has "cli: status shows $k" "^$k: +[^ ]" "$out"
done
has "cli: status names the device" "^device: +$DEV$" "$out"
check "cli: status --json" "${C[@]}" status --json
BODY=$out
eq "cli: status --json is JSON" "$ADMIN" "$(json 'j["listeners"]["admin"]')"
fails "cli: import is offline only" "offline" "${C[@]}" volume import delta "$D/in.bin"
fails "cli: export is offline only" "offline" "${C[@]}" volume export delta "$D/x.bin"
fails "cli: --device refused while the daemon holds it" "in use" "$T" --device "$DEV" volume list

# several CLI clients at once
pids=()
for i in 1 2 3 4 5 6; do
	"${C[@]}" volume create "par$i" 1M >"$D/par$i.out" 2>&1 &
	pids+=($!)
done
for i in "${!pids[@]}"; do
	n=$((n + 1))
	wait "${pids[$i]}" || fail "parallel create par$((i + 1)): $(cat "$D/par$((i + 1)).out")"
done
http GET /v1/volumes
eq "parallel creates all listed" 6 "$(json 'len([v for v in j if v["name"].startswith("par")])')"

# in use: an NBD client attached while we delete and shrink
touch "$D/hold"
PATH=$NBDSH_PATH nbdsh -u "nbd://$NBD/delta" -c "
import os, time
end = time.time() + 30
while os.path.exists('$D/hold') and time.time() < end:
    time.sleep(0.05)
" >"$D/nbdsh.out" 2>&1 &
HOLD=$!
attached() { http GET /v1/volumes/delta && [ "$(json 'j["connections"]')" = 1 ]; }
n=$((n + 1))
if ! poll attached; then
	fail "nbdsh did not attach to delta: $(cat "$D/nbdsh.out")"
fi
fails "cli: delete a volume in use" "in use" "${C[@]}" volume delete delta
fails "cli: shrink a volume in use" "in use" "${C[@]}" volume resize delta 4M
http DELETE /v1/volumes/delta
eq "DELETE a volume in use: 409" 409 "$CODE"
has "409 says in use" "in use" "$(json 'j["error"]')"
http PUT /v1/volumes/delta '{"size":4194304}'
eq "shrink a volume in use: 409" 409 "$CODE"
check "cli: growing a volume in use is allowed" "${C[@]}" volume resize delta 20M
http GET /v1/status
eq "status counts the NBD connection" 1 "$(json 'j["connections"]')"
rm -f "$D/hold"
n=$((n + 1))
wait "$HOLD" || fail "nbdsh holding delta failed: $(cat "$D/nbdsh.out")"
HOLD=
detached() { http GET /v1/volumes/delta && [ "$(json 'j["connections"]')" = 0 ]; }
n=$((n + 1))
poll detached || fail "the connection to delta did not go away"
check "cli: delete once detached" "${C[@]}" volume delete delta
has "cli: delete printed" "deleted volume delta" "$out"
fails "cli: delete a missing volume" "no volume named 'delta'" "${C[@]}" volume delete delta
check "cli: delete --json" "${C[@]}" volume delete epsilon --json
BODY=$out
eq "cli: delete --json is JSON" True "$(json 'j["deleted"]')"

# forced delete: ?force=1 hangs up the attached client, then deletes
check "cli: create zeta" "${C[@]}" volume create zeta 4M
PATH=$NBDSH_PATH nbdsh -u "nbd://$NBD/zeta" -c "
import time
end = time.time() + 30
while time.time() < end:
    try:
        h.pwrite(b'z' * 4096, 0)
    except Exception as e:
        print('dropped:', e)
        break
    time.sleep(0.01)
" >"$D/nbdsh.out" 2>&1 &
HOLD=$!
attached_z() { http GET /v1/volumes/zeta && [ "$(json 'j["connections"]')" = 1 ]; }
n=$((n + 1))
poll attached_z || fail "nbdsh did not attach to zeta: $(cat "$D/nbdsh.out")"
http DELETE "/v1/volumes/zeta?force=0"
eq "DELETE ?force=0 of a volume in use: 409" 409 "$CODE"
forced() { http DELETE "/v1/volumes/zeta?x=1&force=1" && [ "$CODE" = 200 ]; }   # 409 while a write is in flight
n=$((n + 1))
poll forced || fail "DELETE ?force=1 of a volume in use: got $CODE $BODY"
n=$((n + 1))
wait "$HOLD" || fail "nbdsh on zeta failed: $(cat "$D/nbdsh.out")"
HOLD=
has "the forced-off client saw its connection die" "dropped" "$(cat "$D/nbdsh.out")"
http GET /v1/volumes/zeta
eq "zeta is gone: 404" 404 "$CODE"
has "the daemon logs the forced close" "volume deleted \\(forced\\)" "$(cat "$D/daemon.err")"

metrics "$D/m2"
check "/metrics at the end parses" "$PY" "$D/prom.py" check "$D/m2"
n=$((n + 1)); grep -q 'volume="delta"' "$D/m2" && fail "a deleted volume is still in /metrics"

# ---- stop, then the daemon is down ---------------------------------------------------------

stop_daemon
fails "cli: daemon down (list)" "cannot reach testudod at $ADMIN: Connection refused" "${C[@]}" volume list
fails "cli: daemon down (status)" "cannot reach testudod at $ADMIN: Connection refused" "${C[@]}" status
fails "cli: daemon down (create)" "cannot reach testudod" "${C[@]}" volume create x 1M
fails "cli: bad --admin" "invalid --admin" "$T" --admin nonsense status
check "offline again: the device is free and clean" "$T" check "$DEV"
check "offline list sees the online changes" "$T" --device "$DEV" volume list
has "offline list: alpha resized online" "^alpha +32.0 MiB" "$out"

echo "admin: $((n - bad)) of $n checks passed"
[ "$bad" -eq 0 ]
