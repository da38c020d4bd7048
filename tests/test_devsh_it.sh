#!/usr/bin/env bash
# tools/dev.sh run, as a newcomer sees it: quiet steps (the install and build output is in
# build/setup.log and build/build.log, not on the terminal), the service's log, then, once it is
# ready, the block with the URLs it bound, the token secret line and a first gimctl command;
# SIGTERM to dev.sh stops the service cleanly and dev.sh exits 0. A bad URL stops it before
# anything is created, with one line naming the key, exit 2, and no block.
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

cat >"$tmp/gim.yaml" <<YAML
listen: [ipc://$tmp/rep.ipc]
publish: [ipc://$tmp/pub.ipc]
http: ""
database: {path: $tmp/gim.db}
auth: {secret: devsh-test-secret}
YAML

# From another directory, with a relative --config: dev.sh makes it absolute.
(cd "$tmp" && exec env -u GIM_TOKEN_SECRET "$ROOT/tools/dev.sh" run --config gim.yaml) \
    >"$tmp/out" 2>&1 &
dp=$!
for _ in $(seq 240); do
    grep -q "dev.sh: gim-logic is ready" "$tmp/out" && break
    kill -0 "$dp" 2>/dev/null || break
    sleep 0.5
done
out=$(cat "$tmp/out")
for want in "dev.sh: installing/checking Debian packages ... ok" "build/setup.log" \
    "dev.sh: building gim-logic and gimctl ... ok" "build/build.log" 'msg="ready"' \
    "dev.sh: gim-logic is ready" "requests: ipc://$tmp/rep.ipc" "pushes:   ipc://$tmp/pub.ipc" \
    "database: $tmp/gim.db" "export GIM_TOKEN_SECRET=" "auth.secret" \
    "build/tools/gimctl --url ipc://$tmp/rep.ipc --user 1 --device 11 ping"; do
    [[ $out == *"$want"* ]] || fail "dev.sh run output lacks '$want'"
done
# Quiet: none of setup.sh's, cmake's or make's own lines, and no 48-line config dump.
for unwanted in "setup.sh:" "Built target" "-- Configuring" "contexts: " "sync:"; do
    [[ $out != *"$unwanted"* ]] || fail "dev.sh run output shows '$unwanted'"
done
# The block is the last thing printed, after "ready".
last=$(tail -n 1 "$tmp/out")
[[ $last == *"build/tools/gimctl"* ]] || fail "the last line is not the gimctl command: $last"
# What the block says works.
"$ROOT/build/tools/gimctl" --url "ipc://$tmp/rep.ipc" --secret devsh-test-secret \
    --user 1 --device 11 ping | grep -q "code=EC_OK" || fail "the suggested ping did not answer EC_OK"

kill -TERM "$dp"
rc=0
wait "$dp" || rc=$?
dp=""
[[ $rc == 0 ]] || fail "dev.sh run exit $rc after SIGTERM"
grep -q 'msg="stopped" clean' "$tmp/out" || fail "no clean stop in: $(tail -n 3 "$tmp/out")"

# A bad URL: one line naming the key, exit 2, no database, no block.
printf 'listen: [http://127.0.0.1:7600]\ndatabase: {path: %s/bad.db}\n' "$tmp" >"$tmp/bad.yaml"
rc=0
"$ROOT/tools/dev.sh" run --config "$tmp/bad.yaml" >"$tmp/bad.out" 2>&1 || rc=$?
[[ $rc == 2 ]] || fail "bad URL: dev.sh run exit $rc, want 2"
grep -q "^gim-logic: config: listen\[0\]: 'http://127.0.0.1:7600'" "$tmp/bad.out" ||
    fail "bad URL: no one-line error naming listen[0]: $(cat "$tmp/bad.out")"
! grep -q "is ready" "$tmp/bad.out" || fail "bad URL: the ready block was printed"
[[ ! -e $tmp/bad.db ]] || fail "bad URL: the database was created"

((fails == 0)) || {
    echo "---- dev.sh run output:"
    cat "$tmp/out"
    exit 1
}
echo "dev.sh run behaved"
