#!/usr/bin/env bash
# tools/setup.sh's check of the build's dependencies: it passes on this machine, it names a
# package the lists forget even when the machine has that package (libyaml-dev, the one that
# broke a bare Debian 12), and it reads what to check from CMakeLists.txt.
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
fails=0
fail() {
    echo "FAIL: $*"
    fails=$((fails + 1))
}
# expect WANT_STATUS NEEDLE... -- ARGS: runs setup.sh ARGS; checks the status and that the
# output holds every needle.
expect() {
    local want=$1 needles=() out rc
    shift
    while [[ $1 != -- ]]; do
        needles+=("$1")
        shift
    done
    shift
    out=$("$SETUP" "$@" 2>&1)
    rc=$?
    [[ $rc == "$want" ]] || fail "setup.sh $*: exit $rc, want $want: $out"
    for n in "${needles[@]}"; do
        [[ $out == *"$n"* ]] || fail "setup.sh $*: output lacks '$n': $out"
    done
    echo "ok: setup.sh $* (exit $rc)"
}

SETUP=$ROOT/tools/setup.sh
# Everything `all` installs is here (ctest runs after `tools/dev.sh test` set it up).
expect 0 "checked" "build dependencies" -- --check all
# libyaml-dev is on this machine, so -lyaml links; the check still sees that it would not be
# installed on a bare one.
expect 1 "libcyaml uses" "libyaml.so from libyaml-dev" "add libyaml-dev" \
    "CMake package nng uses" "add libnng-dev" "program protoc-c uses" "add protobuf-c-compiler" \
    "3 problem(s)" -- --check --drop libyaml-dev --drop libnng-dev --drop protobuf-c-compiler build
expect 1 "criterion" "add libcriterion-dev" -- --check --drop libcriterion-dev all
# libpq (the PostgreSQL backend) is a build dependency; the PostgreSQL server that
# tools/pgtmp.sh runs for the tests is checked with `all` only.
expect 1 "libpq uses" "libpq.pc from libpq-dev" "add libpq-dev" -- --check --drop libpq-dev build
expect 1 "program initdb (tools/pgtmp.sh)" "from postgresql-15" "add postgresql-15" \
    -- --check --drop postgresql-15 all
# The optional (test) modules are checked only for `all`.
expect 0 "checked" -- --check --drop libcriterion-dev --drop postgresql-15 build

# What is checked comes from the CMakeLists.txt files next to the script.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/tools"
cp "$SETUP" "$tmp/tools/setup.sh"
printf 'pkg_check_modules(NOPE REQUIRED IMPORTED_TARGET gim-no-such-module>=1)\n' >"$tmp/CMakeLists.txt"
SETUP=$tmp/tools/setup.sh
expect 1 "pkg-config module gim-no-such-module" "not found" -- --check build
printf 'pkg_check_modules(Y REQUIRED yaml-0.1)\n' >"$tmp/CMakeLists.txt"
expect 1 "yaml-0.1" "from libyaml-dev" -- --check --drop libyaml-dev build
rm "$tmp/CMakeLists.txt"
expect 1 "no CMakeLists.txt" -- --check build

((fails == 0)) || exit 1
echo "all setup.sh checks behaved"
