#!/usr/bin/env bash
# Installs the Debian 12 (bookworm) packages gim-logic needs, only those missing.
#
#   tools/setup.sh build   what the service needs to build and run (used by the Dockerfile)
#   tools/setup.sh [all]   the above plus the test, lint and CI extras
#
# Idempotent: when everything is installed it runs no apt command at all.
set -euo pipefail

BUILD_PKGS=(
    build-essential
    cmake
    pkg-config
    libsqlite3-dev
    sqlite3
    libprotobuf-c-dev
    protobuf-c-compiler
    libnng-dev
    libcyaml-dev
    libjwt-dev
    ca-certificates
)

TEST_PKGS=(
    libcriterion-dev
    protobuf-compiler
    nng-utils
    clang
    libclang-rt-14-dev
    clang-format
    valgrind
    docker-compose
    curl
)

usage() {
    echo "usage: $0 [build|all]" >&2
    exit 2
}

group=${1:-all}
case "$group" in
build) wanted=("${BUILD_PKGS[@]}") ;;
all) wanted=("${BUILD_PKGS[@]}" "${TEST_PKGS[@]}") ;;
-h | --help) usage ;;
*)
    echo "setup.sh: unknown group '$group'" >&2
    usage
    ;;
esac

missing=()
for pkg in "${wanted[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [[ "$status" != "install ok installed" ]]; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]} == 0)); then
    echo "setup.sh: all ${#wanted[@]} '$group' packages already installed"
    exit 0
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "setup.sh: not root and no sudo; install these by hand: ${missing[*]}" >&2
        exit 1
    fi
fi

echo "setup.sh: installing ${missing[*]}"
"${SUDO[@]}" apt-get update
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${missing[@]}"
