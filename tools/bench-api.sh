#!/usr/bin/env bash
# POST /v1/messages throughput: wrk against the business API (docs/business-api.md), with
# keep-alive connections, every message to one user, on a fresh database with the durable
# defaults (database.synchronous: full). Recorded in docs/benchmarks.md.
#
#   tools/bench-api.sh [-c CONNECTIONS] [-t WRK_THREADS] [-d SECONDS] [-w API_WORKERS] [-k]
#
# -k: every request carries its own Idempotency-Key (as a backend that retries would send), so
# every message also writes its idempotency record.
# Starts build/gim-logic on a temporary directory with api.listen on a free port, mints an
# operator token with openssl (the JWT format of docs/business-api.md), runs wrk with a Lua
# script that POSTs one text message per request, stops the service (SIGTERM: it answers what
# it holds, then exits 0) and checks the result: every request wrk saw answered 201 must be in
# user 2's inbox, and no request may have failed. Exit status 0 only then. Needs wrk and
# openssl (tools/setup.sh all).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${GIM_LOGIC_BIN:-$ROOT/build/gim-logic}
conns=64 threads=2 secs=10 workers=4 keys=0
while getopts "c:t:d:w:k" o; do
    case $o in
    c) conns=$OPTARG ;;
    t) threads=$OPTARG ;;
    d) secs=$OPTARG ;;
    w) workers=$OPTARG ;;
    k) keys=1 ;;
    *) sed -n '2,15p' "$0" >&2; exit 2 ;;
    esac
done
command -v wrk >/dev/null || { echo "bench-api: wrk is missing (apt-get install wrk)" >&2; exit 2; }
[[ -x $BIN ]] || { echo "bench-api: $BIN is missing (build first)" >&2; exit 2; }

dir=$(mktemp -d /tmp/gim-bench-api.XXXXXX)
pid=
cleanup() {
    [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT

# A free port: bind port 0 and read what the kernel gave.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
    shuf -i 20000-60000 -n 1)
secret=bench-api-secret
cat >"$dir/config.yaml" <<EOF
listen: ["ipc://$dir/rep.ipc"]
publish: ["ipc://$dir/pub.ipc"]
http: ""
database: {path: "$dir/gim.db"}
auth: {secret: "$secret"}
api: {listen: "http://127.0.0.1:$port", workers: $workers}
EOF

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
header=$(printf '{"alg":"HS256","typ":"JWT"}' | b64url)
claims=$(printf '{"sub":"gim-admin","adm":1,"exp":%d}' $(($(date +%s) + 3600)) | b64url)
sig=$(printf '%s.%s' "$header" "$claims" | openssl dgst -sha256 -hmac "$secret" -binary | b64url)
token="$header.$claims.$sig"

cat >"$dir/post.lua" <<EOF
wrk.method = "POST"
wrk.body = '{"sender":{"type":"business","id":9001},"to":{"user":2},"type":"text","content":{"text":"order 42 shipped"}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $token"
EOF
if ((keys)); then
    # Each wrk thread has a Lua state of its own: the thread number keeps the keys apart.
    cat >>"$dir/post.lua" <<'EOF'
local threads = 0
function setup(thread)
    threads = threads + 1
    thread:set("tid", threads)
end
local n = 0
function request()
    n = n + 1
    -- wrk.format's headers replace wrk.headers: pass them all.
    local h = {}
    for k, v in pairs(wrk.headers) do h[k] = v end
    h["Idempotency-Key"] = "bench-" .. tid .. "-" .. n
    return wrk.format(nil, nil, h, nil)
end
EOF
fi

"$BIN" --config "$dir/config.yaml" 2>"$dir/log.txt" &
pid=$!
for _ in $(seq 50); do
    grep -q 'msg="ready"' "$dir/log.txt" 2>/dev/null && break
    sleep 0.1
done
grep -q 'msg="ready"' "$dir/log.txt" || { cat "$dir/log.txt" >&2; exit 1; }
sync_mode=$("$BIN" --config "$dir/config.yaml" --print-config | sed -n 's/^  synchronous: "\(.*\)"/\1/p')

echo "bench-api: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), synchronous=$sync_mode, wrk -t$threads -c$conns -d${secs}s, api.workers=$workers, idempotency keys=$keys"
wrk -t"$threads" -c"$conns" -d"${secs}s" -s "$dir/post.lua" "http://127.0.0.1:$port/v1/messages" | tee "$dir/wrk.txt"
echo "bench-api: load average after $(cut -d' ' -f1-3 /proc/loadavg)"

kill -TERM "$pid"
wait "$pid" && rc=0 || rc=$?
pid=
[[ $rc == 0 ]] || { echo "bench-api: gim-logic exited $rc" >&2; tail "$dir/log.txt" >&2; exit 1; }

done_reqs=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$dir/wrk.txt")
bad=$(sed -n 's/^ *Non-2xx or 3xx responses: *\([0-9]*\)/\1/p' "$dir/wrk.txt")
errs=$(sed -n 's/^ *Socket errors: .*read \([0-9]*\), write \([0-9]*\), timeout \([0-9]*\)/\1+\2+\3/p' "$dir/wrk.txt")
stored=$(sqlite3 "$dir/gim.db" "SELECT count(*) FROM inbox WHERE user_id = 2")
records=$(sqlite3 "$dir/gim.db" "SELECT count(*) FROM operator_idempotency")
echo "bench-api: wrk completed $done_reqs requests, non-2xx ${bad:-0}, socket errors ${errs:-0}; user 2's inbox holds $stored messages, $records idempotency records"
if [[ -n ${bad:-} && $bad != 0 ]]; then
    echo "bench-api: FAIL: $bad requests were not answered 201" >&2
    exit 1
fi
if ((keys && records != stored)); then
    echo "bench-api: FAIL: $records idempotency records for $stored messages" >&2
    exit 1
fi
if ((stored < done_reqs)); then
    echo "bench-api: FAIL: fewer messages stored than answered" >&2
    exit 1
fi
echo "bench-api: ok"
