#!/usr/bin/env bash
# Developer entry points. Works from any directory: it cds to the repo root.
#
#   tools/dev.sh run [gim-logic args...]   install build deps, build, run the service
#   tools/dev.sh test [--sanitize]         install all deps, build with tests, run ctest
#   tools/dev.sh format-check              clang-format --dry-run --Werror on all C sources
#
# run and test are quiet: tools/setup.sh writes to build/setup.log and the build to
# build/build.log (build-asan/build.log with --sanitize); each step prints one line, and only a
# failed step prints its log's tail. `run` ends, once the service is ready, with a short block:
# the URLs, the export line for the token secret and a first gimctl command.
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

# step WHAT LOG CMD...: runs CMD with all its output in LOG (relative to the repo root), on
# one line of progress; when it fails, prints the tail of LOG and its path, and exits.
step() {
    local what=$1 log=$2 t0=$SECONDS rc=0
    shift 2
    mkdir -p "$(dirname "$log")"
    printf 'dev.sh: %s ... ' "$what" >&2
    "$@" >"$log" 2>&1 </dev/null || rc=$?
    if ((rc != 0)); then
        printf 'FAILED (exit %d)\n---- last 40 lines of %s:\n' "$rc" "$log" >&2
        tail -n 40 "$log" >&2
        printf -- '---- the whole log: %s\n' "$ROOT/$log" >&2
        exit "$rc"
    fi
    printf 'ok (%ds, %s)\n' "$((SECONDS - t0))" "$log" >&2
}

build_service() {
    configure build OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo &&
        cmake --build build -j2 --target gim-logic gimctl
}

# VALUE of KEY=VALUE in a gim-logic log line.
log_field() {
    local v=${2#* "$1"=}
    printf '%s' "${v%% *}"
}

# Copies gim-logic's log (stdin) to stderr, noting what it binds; on "ready" it prints what a
# newcomer needs next. $1 says where the token secret comes from (see cmd_run).
announce() {
    local secret=$1 line listen=() publish=() http="" db=""
    # A signal for the process group (Ctrl-C, timeout) is gim-logic's to act on; this copy
    # ends when gim-logic closes its log, after its last line.
    trap '' INT TERM HUP
    while IFS= read -r line; do
        printf '%s\n' "$line" >&2
        case "$line" in
        *' msg="listening" '*) listen+=("$(log_field url "$line")") ;;
        *' msg="publishing" '*) publish+=("$(log_field url "$line")") ;;
        *' msg="http listening" '*) http=$(log_field url "$line") ;;
        *' msg="database open" '*) db=$(log_field path "$line") ;;
        *' msg="ready" '*)
            local url_opt=""
            [[ ${listen[0]:-} == tcp://127.0.0.1:7400 ]] || url_opt=" --url ${listen[0]:-}"
            http=${http%/}
            {
                echo
                echo "dev.sh: gim-logic is ready (Ctrl-C stops it)"
                echo "  requests: ${listen[*]}"
                echo "  pushes:   ${publish[*]}"
                [[ -z $http ]] || echo "  http:     $http/healthz $http/metrics"
                echo "  database: $db"
                echo "Next, in another terminal, in $ROOT:"
                case "$secret" in
                from-file) echo "  export GIM_TOKEN_SECRET=\$(cat $ROOT/data/dev.secret)" ;;
                from-env) echo "  export GIM_TOKEN_SECRET=...   # the value set in this terminal" ;;
                *) echo "  export GIM_TOKEN_SECRET=...   # the secret your config file names (auth.secret/auth.secret_env)" ;;
                esac
                echo "  build/tools/gimctl$url_opt --user 1 --device 11 ping   # code=EC_OK; then README.md's conversation"
            } >&2
            ;;
        esac
    done
}

cmd_run() {
    step "installing/checking Debian packages" build/setup.log tools/setup.sh build
    step "building gim-logic and gimctl" build/build.log build_service
    mkdir -p data

    # Rewrite --config paths relative to the caller's directory.
    local args=() have_config=0
    while (($# > 0)); do
        case "$1" in
        --config)
            have_config=1
            args+=("$1")
            if (($# > 1)) && [[ $2 != --* ]]; then
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

    local secret=from-config
    if [[ -n "${GIM_TOKEN_SECRET:-}" ]]; then
        secret=from-env
    elif [[ $have_config -eq 0 ]]; then
        if [[ ! -s data/dev.secret ]]; then
            (
                umask 077
                od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >data/dev.secret
            )
        fi
        GIM_TOKEN_SECRET=$(cat data/dev.secret)
        export GIM_TOKEN_SECRET
        secret=from-file
    fi

    # In the background, so that its log can be watched for "ready"; bash would start it with
    # SIGINT ignored, hence env --default-signal. Ctrl-C reaches gim-logic from the terminal
    # (dev.sh only waits); a SIGTERM or SIGHUP sent to dev.sh is passed on. Either way
    # gim-logic drains and exits 0, and so does dev.sh.
    # announce is opened on its own first, to know its pid: a bare `wait` waits for a process
    # substitution only when it is $!, and with `gim-logic 2> >(announce) &` $! is gim-logic,
    # so dev.sh could exit before announce had printed gim-logic's last lines (test_devsh_it's
    # bad-URL check found the error line missing, once in 5 loaded repeats).
    local log_fd apid
    exec {log_fd}> >(announce "$secret")
    apid=$!
    env --default-signal=INT,QUIT build/gim-logic "${args[@]}" 2>&"$log_fd" &
    local pid=$! rc rc2
    exec {log_fd}>&- # gim-logic holds the only writer now: announce ends when it exits
    trap 'kill -TERM "$pid" 2>/dev/null || true' TERM HUP
    trap ':' INT
    while :; do
        rc=0
        wait "$pid" || rc=$?
        ((rc > 128)) || break # gim-logic's own status (0, 1, 2), not an interrupted wait
        kill -0 "$pid" 2>/dev/null && continue
        rc2=0
        wait "$pid" || rc2=$?
        ((rc2 == 127)) || rc=$rc2
        break
    done
    wait "$apid" || true # for announce, so that gim-logic's last lines come before the prompt
    exit "$rc"
}

# build_tests DIR [cmake args...]
build_tests() {
    local dir=$1
    shift
    configure "$dir" ON "$@" && cmake --build "$dir" -j2
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

    step "installing/checking Debian packages" build/setup.log tools/setup.sh all
    local dir
    if ((sanitize)); then
        dir=build-asan
        step "building with tests, ASan and UBSan" "$dir/build.log" build_tests "$dir" \
            -DGIM_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
        export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
        export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    else
        dir=build
        step "building with tests" "$dir/build.log" build_tests "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo
    fi
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
