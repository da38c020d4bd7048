#!/usr/bin/env bash
# Developer entry points. Works from any directory: it cds to the repo root.
#
#   tools/dev.sh run [gim-logic args...]   install build deps, build, run the service
#   tools/dev.sh test [--sanitize]         install all deps, build with tests, run ctest
#   tools/dev.sh format-check              clang-format --dry-run --Werror on all C sources
set -euo pipefail

ORIG_PWD=$PWD
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

usage() {
    cat >&2 <<'EOF'
usage: tools/dev.sh run [gim-logic args...]
       tools/dev.sh test [--sanitize]
       tools/dev.sh format-check
EOF
    exit 2
}

# configure DIR TESTING [cmake args...]: configures DIR when it has never been
# configured (or its last configure failed), or when TESTING is ON and DIR was
# configured without tests. Otherwise the build itself re-runs cmake as needed.
configure() {
    local dir=$1 testing=$2
    shift 2
    if [[ -f "$dir/CMakeCache.txt" ]] && [[ -f "$dir/Makefile" || -f "$dir/build.ninja" ]]; then
        if [[ $testing == OFF ]] || grep -qx "BUILD_TESTING:BOOL=ON" "$dir/CMakeCache.txt"; then
            return 0
        fi
    fi
    cmake -S . -B "$dir" -DBUILD_TESTING="$testing" "$@"
}

# Makes a relative path given on the command line absolute against the
# directory the user ran dev.sh from (we have cd'ed to the repo root).
abspath() {
    case "$1" in
    /*) printf '%s' "$1" ;;
    *) printf '%s' "$ORIG_PWD/$1" ;;
    esac
}

cmd_run() {
    tools/setup.sh build
    configure build OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo
    cmake --build build -j2 --target gim-logic gimctl
    mkdir -p data

    # Rewrite --config paths relative to the caller's directory.
    local args=() have_config=0
    while (($# > 0)); do
        case "$1" in
        --config)
            have_config=1
            args+=("$1")
            if (($# > 1)); then
                args+=("$(abspath "$2")")
                shift
            fi
            ;;
        --config=*)
            have_config=1
            args+=("--config=$(abspath "${1#--config=}")")
            ;;
        *) args+=("$1") ;;
        esac
        shift
    done

    if [[ -z "${GIM_TOKEN_SECRET:-}" && $have_config -eq 0 ]]; then
        if [[ ! -s data/dev.secret ]]; then
            (
                umask 077
                od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >data/dev.secret
            )
        fi
        GIM_TOKEN_SECRET=$(cat data/dev.secret)
        export GIM_TOKEN_SECRET
        echo "dev.sh: token secret is in $ROOT/data/dev.secret;" \
            "gimctl token reads it from GIM_TOKEN_SECRET:" \
            "export GIM_TOKEN_SECRET=\$(cat $ROOT/data/dev.secret)" >&2
    fi

    exec build/gim-logic "${args[@]}"
}

cmd_test() {
    local sanitize=0
    while (($# > 0)); do
        case "$1" in
        --sanitize) sanitize=1 ;;
        *) usage ;;
        esac
        shift
    done

    tools/setup.sh all
    local dir
    if ((sanitize)); then
        dir=build-asan
        configure "$dir" ON -DGIM_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
        export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
        export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    else
        dir=build
        configure "$dir" ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
    fi
    cmake --build "$dir" -j2
    local rc=0
    ctest --test-dir "$dir" --output-on-failure -j2 || rc=$?
    exit "$rc"
}

cmd_format_check() {
    if ! command -v clang-format >/dev/null 2>&1; then
        tools/setup.sh all
    fi
    local files=()
    while IFS= read -r -d '' f; do
        files+=("$f")
    done < <(find src tools tests -type f \( -name '*.c' -o -name '*.h' \) -print0 2>/dev/null | sort -z)
    if ((${#files[@]} == 0)); then
        echo "dev.sh: format-check: no C sources found"
        return 0
    fi
    clang-format --dry-run --Werror "${files[@]}"
    echo "dev.sh: format-check: ${#files[@]} files formatted correctly"
}

(($# > 0)) || usage
command=$1
shift
case "$command" in
run) cmd_run "$@" ;;
test) cmd_test "$@" ;;
format-check) cmd_format_check "$@" ;;
-h | --help | help) usage ;;
*) usage ;;
esac
