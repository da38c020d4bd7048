#!/usr/bin/env bash
# tools/dev.sh run, as a newcomer sees it: quiet steps (the install and build output is in
# build/setup.log and build/build.log, not on the terminal), the services' logs, then, once
# gim-logic and gim-gateway are both ready, the block with the client URLs, gim-logic's URLs,
# the token secret line, a first gimctl command and two web-chat links whose tokens sign in.
# The gateway answers: /healthz, the linked page, /proto/, the web client's npm packages, and a
# TCP be16 client signs in with the alice link's token. SIGTERM to dev.sh stops the gateway
# first, then gim-logic, both cleanly, and dev.sh exits 0, also under a burst of HUPs. A bad
# URL stops it before anything is created, with one line naming the key, exit 2, and no block;
# a gateway that cannot start is named, gim-logic is stopped, and dev.sh exits non-zero.
#
# usage: test_devsh_it.sh BUILD_DIR. dev.sh always builds in the repo's build/, so this runs
# only when ctest runs there (`tools/dev.sh test`); elsewhere (build-asan/) it is skipped (77).
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ $(cd "$1" && pwd) != "$ROOT/build" ]]; then
    echo "skipped: tools/dev.sh builds in $ROOT/build, not in $1"
    exit 77
fi
fails=0
fail() {
    echo "FAIL: $*"
    fails=$((fails + 1))
}
tmp=$(mktemp -d)
dp=""
cleanup() {
    [[ -z $dp ]] || kill -KILL "$dp" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT

# Three free TCP ports for the gateway (the defaults 8080/8081/8480 may be taken on a shared
# machine): nothing answers a connect on them. Below the kernel's ephemeral range and below
# tools/pgtmp.sh's (20000-31999): a port in the ephemeral range can be held by another test's
# client socket, which no connect finds, and the gateway then failed with "Address in use"
# (seen once in CI with port 42510).
ports=()
p=$((10000 + RANDOM % 9000))
while ((${#ports[@]} < 3)); do
    p=$((p + 1))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || ports+=("$p")
done
tcp_port=${ports[0]} ws_port=${ports[1]} http_port=${ports[2]}

cat >"$tmp/gim.yaml" <<YAML
listen: [ipc://$tmp/rep.ipc]
publish: [ipc://$tmp/pub.ipc]
http: ""
database: {path: $tmp/gim.db}
YAML
cat >"$tmp/gw.yaml" <<YAML
gateway_id: devsh
listeners:
  - url: "tcp://127.0.0.1:$tcp_port"
  - url: "ws://127.0.0.1:$ws_port/ws"
http: "http://127.0.0.1:$http_port"
logic: {requests: ["ipc://$tmp/rep.ipc"], publish: ["ipc://$tmp/pub.ipc"]}
YAML

# From another directory, with relative --config and --gateway-config: dev.sh makes them
# absolute. The secret comes from the environment (gim-logic's default auth.secret_env).
(cd "$tmp" && exec env GIM_TOKEN_SECRET=devsh-test-secret "$ROOT/tools/dev.sh" run \
    --config gim.yaml --gateway-config gw.yaml) >"$tmp/out" 2>&1 &
dp=$!
for _ in $(seq 240); do
    grep -q "^  bob: " "$tmp/out" && break
    kill -0 "$dp" 2>/dev/null || break
    sleep 0.5
done
out=$(cat "$tmp/out")
web=http://127.0.0.1:$ws_port/demo/
for want in "dev.sh: installing/checking Debian packages and the web client's npm packages ... ok" \
    "build/setup.log" "dev.sh: building gim-logic, gim-gateway and gimctl ... ok" "build/build.log" \
    'logic   | ts=' 'gateway | ts=' "dev.sh: gim-logic and gim-gateway are ready" \
    "clients:  TCP (be16 framing) tcp://127.0.0.1:$tcp_port; WebSocket ws://127.0.0.1:$ws_port/ws" \
    "web chat: $web" "gateway:  http://127.0.0.1:$http_port/healthz" \
    "requests ipc://$tmp/rep.ipc; pushes ipc://$tmp/pub.ipc" "database $tmp/gim.db" \
    "export GIM_TOKEN_SECRET=" "build/tools/gimctl --url ipc://$tmp/rep.ipc --user 1 --device 11 ping" \
    "  alice: $web#user=1&device=11&name=alice&names=1:alice,2:bob&to=2&token=ey" \
    "  bob: $web#user=2&device=21&name=bob&names=1:alice,2:bob&to=1&token=ey"; do
    [[ $out == *"$want"* ]] || fail "dev.sh run output lacks '$want'"
done
# Quiet: none of setup.sh's, cmake's or make's own lines, no config dump (the gateway prints
# its effective configuration after "starting").
for unwanted in "setup.sh:" "Built target" "-- Configuring" "contexts: " "sync:" "queue_soft_frames"; do
    [[ $out != *"$unwanted"* ]] || fail "dev.sh run output shows '$unwanted'"
done
# The block is the last thing printed, after both "ready" lines.
[[ $(tail -n 1 "$tmp/out") == "  bob: "* ]] || fail "the last line is not bob's link: $(tail -n 1 "$tmp/out")"
# What the block says works: the ping, the gateway's /healthz, the linked page with the
# protocol and the npm packages it loads.
"$ROOT/build/tools/gimctl" --url "ipc://$tmp/rep.ipc" --secret devsh-test-secret \
    --user 1 --device 11 ping | grep -q "code=EC_OK" || fail "the suggested ping did not answer EC_OK"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$http_port/healthz")
[[ $code == 200 ]] || fail "the gateway's /healthz answered $code"
link=$(sed -n 's/^  alice: //p' "$tmp/out")
curl -fsS "${link%%#*}" | grep -q '<script' || fail "the alice link's page ${link%%#*} is not served"
curl -fsS "http://127.0.0.1:$ws_port/proto/connect.ext.proto" | grep -q 'message SignInInput' ||
    fail "/proto/connect.ext.proto is not served"
for f in $(grep -o 'node_modules/[^"]*\.js' "$ROOT/web/index.html" "$ROOT"/web/*.js "$ROOT"/web/js/*.js 2>/dev/null |
    sed 's/^[^:]*://' | sort -u); do
    curl -fsS -o /dev/null "$web$f" || fail "the page's $f is not served (npm ci --omit=dev in web/?)"
done
# A TCP client with gim's be16 framing signs in as alice with the link's token.
token=${link##*&token=}
data=$(printf 'user_id: 1 device_id: 11 token: "%s"' "$token" |
    protoc --encode=pb.SignInInput -I "$ROOT/proto" connect.ext.proto | od -An -v -tx1 | tr -d ' \n' |
    sed 's/../\\x&/g')
printf 'type: PT_SIGN_IN request_id: 7 data: "%s"' "$data" |
    protoc --encode=pb.Input -I "$ROOT/proto" connect.ext.proto >"$tmp/in.bin"
n=$(stat -c %s "$tmp/in.bin")
reply=$(
    exec 3<>"/dev/tcp/127.0.0.1/$tcp_port" || exit 1
    { printf "\\x$(printf %02x $((n >> 8)))\\x$(printf %02x $((n & 255)))"; cat "$tmp/in.bin"; } >&3
    len=$(timeout 5 head -c 2 <&3 | od -An -tu1)
    set -- $len
    timeout 5 head -c $(($1 * 256 + $2)) <&3 | protoc --decode=pb.Output -I "$ROOT/proto" connect.ext.proto
)
[[ $reply == *"type: PT_SIGN_IN"* && $reply == *"request_id: 7"* && $reply != *"code:"* ]] ||
    fail "a be16 sign-in with alice's link token through the gateway got: $reply"

kill -TERM "$dp"
# Stray signals during the drain (a second Ctrl-C, a HUP) must change nothing: HUPs until
# dev.sh exits. With the drain's signals trapped instead of ignored, dev.sh reported the
# interrupted wait's 129 as a service's exit status in 7 of 8 such runs. The loop is unpaced on
# purpose: it spins only for the drain (50 and 89 ms, 500 and 1,764 HUPs, measured), and paced at
# one HUP per 5 ms (5 to 9 HUPs) it caught the old dev.sh in 1 of 3 runs instead of 3 of 3.
while kill -0 "$dp" 2>/dev/null; do kill -HUP "$dp" 2>/dev/null; done
rc=0
wait "$dp" || rc=$?
dp=""
[[ $rc == 0 ]] || fail "dev.sh run exit $rc after SIGTERM"
# The gateway stops first (so its sign-outs reach gim-logic), then gim-logic; both cleanly.
# By the lines' own times (ISO 8601 UTC, ms: they compare as strings), not by their order in
# the output: the two processes' lines reach it through two pipes, and a "stopped" of the
# gateway was seen printed after gim-logic's "stopping" that came 1 ms later.
at() { grep -m1 -oE "^$1 +\| ts=[^ ]+ level=info msg=\"$2\"" "$tmp/out" | sed -E 's/.*ts=([^ ]+).*/\1/'; }
t1=$(at gateway stopping) t2=$(at gateway stopped) t3=$(at logic stopping) t4=$(at logic stopped)
[[ -n $t1 && -n $t2 && -n $t3 && -n $t4 && ! $t2 < $t1 && ! $t3 < $t2 && ! $t4 < $t3 ]] ||
    fail "stop order: gateway stopping $t1, stopped $t2; gim-logic stopping $t3, stopped $t4"
grep -q '^gateway | .*msg="stopped" clean' "$tmp/out" || fail "the gateway did not stop cleanly"
grep -q '^logic   | .*msg="stopped" clean' "$tmp/out" || fail "gim-logic did not stop cleanly"

# A bad URL: one line naming the key, exit 2, no database, no block.
printf 'listen: [http://127.0.0.1:7600]\ndatabase: {path: %s/bad.db}\n' "$tmp" >"$tmp/bad.yaml"
rc=0
"$ROOT/tools/dev.sh" run --config "$tmp/bad.yaml" >"$tmp/bad.out" 2>&1 || rc=$?
[[ $rc == 2 ]] || fail "bad URL: dev.sh run exit $rc, want 2"
grep -q "^gim-logic: config: listen\[0\]: 'http://127.0.0.1:7600'" "$tmp/bad.out" ||
    fail "bad URL: no one-line error naming listen[0]: $(cat "$tmp/bad.out")"
! grep -q "is ready" "$tmp/bad.out" || fail "bad URL: the ready block was printed"
[[ ! -e $tmp/bad.db ]] || fail "bad URL: the database was created"
grep -q "dev.sh: gim-logic failed to start (exit 2)" "$tmp/bad.out" ||
    fail "bad URL: dev.sh did not say gim-logic failed: $(cat "$tmp/bad.out")"

# A gateway that cannot start (its TCP port is gim-logic's HTTP port, taken): dev.sh names it,
# stops gim-logic (cleanly) and exits non-zero, with no block.
cat >"$tmp/gim2.yaml" <<YAML
listen: [ipc://$tmp/rep2.ipc]
publish: [ipc://$tmp/pub2.ipc]
http: "http://127.0.0.1:$http_port"
database: {path: $tmp/gim2.db}
YAML
sed "s/tcp:\/\/127.0.0.1:$tcp_port/tcp:\/\/127.0.0.1:$http_port/; s/rep.ipc/rep2.ipc/; s/pub.ipc/pub2.ipc/" \
    "$tmp/gw.yaml" >"$tmp/gw2.yaml"
rc=0
GIM_TOKEN_SECRET=x timeout 60 "$ROOT/tools/dev.sh" run --config "$tmp/gim2.yaml" \
    --gateway-config "$tmp/gw2.yaml" >"$tmp/gw2.out" 2>&1 || rc=$?
[[ $rc != 0 && $rc != 124 ]] || fail "gateway cannot start: dev.sh run exit $rc, want non-zero"
grep -q "dev.sh: gim-gateway failed to start (exit [1-9][0-9]*); stopping gim-logic" "$tmp/gw2.out" ||
    fail "gateway cannot start: not named: $(tail -n 5 "$tmp/gw2.out")"
grep -q '^logic   | .*msg="stopped" clean' "$tmp/gw2.out" || fail "gateway cannot start: gim-logic not stopped"
! grep -q "are ready" "$tmp/gw2.out" || fail "gateway cannot start: the ready block was printed"

((fails == 0)) || {
    echo "---- dev.sh run output:"
    cat "$tmp/out"
    exit 1
}
echo "dev.sh run behaved"
