#!/usr/bin/env bash
# Developer entry points. Works from any directory: it cds to the repo root.
#
#   tools/dev.sh run [--gateway-config FILE] [gim-logic args...]
#                                          install what running needs (setup.sh run), build,
#                                          run gim-logic, then gim-gateway in front of it
#   tools/dev.sh test [--sanitize] [ctest args...]
#                                          install all deps, build with tests, run ctest (all of
#                                          it, or e.g. `-L unit`: tests/CMakeLists.txt has the labels;
#                                          the `pg` tests' PostgreSQL comes and goes with the run)
#   tools/dev.sh format-check              clang-format --dry-run --Werror on all C sources
#
# run and test are quiet: tools/setup.sh writes to build/setup.log and the build to
# build/build.log (build-asan/build.log with --sanitize); each step prints one line, and only a
# failed step prints its log's tail. `run` starts gim-logic, waits for its "ready", then starts
# gim-gateway from the repo root (its defaults serve web/ and proto/; it waits for gim-logic
# itself). Once both are ready it ends with a short block: the client URLs, gim-logic's, the
# export line for the token secret, a first gimctl command and two web-chat links (alice, bob)
# with tokens minted for the run. Ctrl-C, SIGTERM or SIGHUP stops the gateway first (its
# sign-outs reach gim-logic), then gim-logic; exit 0 when both stopped cleanly. If one fails to
# start or exits, dev.sh says which, stops the other and exits non-zero.
set -euo pipefail

ORIG_PWD=$PWD
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

usage() {
    cat >&2 <<'EOF'
usage: tools/dev.sh run [--gateway-config FILE] [gim-logic args...]
       tools/dev.sh test [--sanitize] [ctest args, e.g. -L unit | -L '^it$' | -LE slow]
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
        cmake --build build -j2 --target gim-logic gim-gateway gimctl
}

# VALUE of KEY=VALUE in a log line.
log_field() {
    local v=${2#* "$1"=}
    printf '%s' "${v%% *}"
}

# copy_log NAME STATE: copies a service's log (stdin) to stderr, its lines prefixed with NAME,
# minus the gateway's dump of its effective configuration (the lines after "starting" that are
# not log lines). What the service binds and its "ready" are appended to the file STATE, which
# cmd_run reads. A signal for dev.sh's process group (Ctrl-C) is cmd_run's to act on; this copy
# ends when the service closes its log, after its last line.
copy_log() {
    local name=$1 state=$2 line dump=0
    trap '' INT TERM HUP
    while IFS= read -r line; do
        case "$line" in
        ts=* | gim-*) dump=0 ;;
        *) ((dump == 0)) || continue ;;
        esac
        if [[ $line == ts=* ]]; then
            printf '%-7s | %s\n' "$name" "$line" >&2
        else
            printf '%s\n' "$line" >&2
        fi
        case "$line" in
        *' msg="starting" '*) dump=1 ;;
        *' msg="listening" '*) echo "listen $(log_field url "$line")" >>"$state" ;;
        *' msg="publishing" '*) echo "publish $(log_field url "$line")" >>"$state" ;;
        *' msg="http listening" '*) echo "http $(log_field url "$line")" >>"$state" ;;
        *' msg="database open" '*) echo "db $(log_field path "$line")" >>"$state" ;;
        *' msg="ready" '*) echo "ready" >>"$state" ;;
        esac
    done
}

# The values of KEY in a STATE file, space-separated.
state_get() {
    sed -n "s/^$2 //p" "$1" | paste -sd' ' -
}

# The block printed once both services are ready: the client URLs, gim-logic's, the token
# secret line, a first gimctl command and two ready web-chat links. $1 says where the token
# secret comes from (see cmd_run); $2 and $3 are the two STATE files.
announce() {
    local secret=$1 ls=$2 gs=$3 url tcp=() ws=() web="" http req url_opt=""
    for url in $(state_get "$gs" listen); do
        case "$url" in
        ws://* | wss://*)
            ws+=("$url")
            if [[ -z $web ]]; then
                # ws://HOST:PORT/PATH -> http://HOST:PORT/demo/ (an empty host: 127.0.0.1)
                local scheme=http rest=${url#*://} hostport
                [[ $url == wss://* ]] && scheme=https
                hostport=${rest%%/*}
                [[ $hostport == :* || $hostport == 0.0.0.0:* ]] && hostport=127.0.0.1:${hostport##*:}
                web="$scheme://$hostport/demo/"
                [[ /${rest#*/} == /ws ]] || web_ws="&ws=${url/\/\/:/\/\/127.0.0.1:}"
            fi
            ;;
        *) tcp+=("$url") ;;
        esac
    done
    req=$(state_get "$ls" listen)
    [[ ${req%% *} == tcp://127.0.0.1:7400 ]] || url_opt=" --url ${req%% *}"
    {
        echo
        echo "dev.sh: gim-logic and gim-gateway are ready (Ctrl-C stops both)"
        echo "  clients:  TCP (be16 framing) ${tcp[*]:-none}; WebSocket ${ws[*]:-none}"
        [[ -z $web ]] || echo "  web chat: $web"
        http=$(state_get "$gs" http)
        [[ -z $http ]] || echo "  gateway:  ${http%/}/healthz ${http%/}/metrics"
        echo "  gim-logic: requests $req; pushes $(state_get "$ls" publish)"
        http=$(state_get "$ls" http)
        [[ -z $http ]] || echo "             ${http%/}/healthz ${http%/}/metrics"
        echo "             database $(state_get "$ls" db)"
        echo "Next, in another terminal, in $ROOT:"
        case "$secret" in
        from-file) echo "  export GIM_TOKEN_SECRET=\$(cat $ROOT/data/dev.secret)" ;;
        from-env) echo "  export GIM_TOKEN_SECRET=...   # the value set in this terminal" ;;
        *) echo "  export GIM_TOKEN_SECRET=...   # the secret your config file names (auth.secret/auth.secret_env)" ;;
        esac
        echo "  build/tools/gimctl$url_opt --user 1 --device 11 ping   # code=EC_OK; then README.md's conversation"
        if [[ -n $web ]]; then
            if [[ $secret == from-config ]]; then
                echo "Web chat links: build/tools/gimctl token --user 1 --device 11 mints a token (with the exported"
                echo "  secret) for ${web}#user=1&device=11&name=alice&token=TOKEN (docs/web.md)"
            else
                echo "Chat in the browser (two tabs; the tokens are valid for 24 hours):"
                local who t
                for who in "1 11 alice 2" "2 21 bob 1"; do
                    # shellcheck disable=SC2086 # "1 11 alice 2": four words
                    set -- $who
                    t=$(build/tools/gimctl token --user "$1" --device "$2" --ttl 86400) || t=FAILED
                    echo "  $3: ${web}#user=$1&device=$2&name=$3&names=1:alice,2:bob&to=$4${web_ws:-}&token=$t"
                done
            fi
        fi
    } >&2
}

# wait_exit PID: waits until PID has exited (a trapped signal interrupts `wait`) and sets
# WAIT_RC to its exit status.
wait_exit() {
    local rc
    while :; do
        rc=0
        wait "$1" 2>/dev/null || rc=$?
        kill -0 "$1" 2>/dev/null || break
    done
    WAIT_RC=$rc
}

cmd_run() {
    step "installing/checking Debian packages and the web client's npm packages" build/setup.log tools/setup.sh run
    step "building gim-logic, gim-gateway and gimctl" build/build.log build_service
    mkdir -p data

    # Rewrite --config/--gateway-config paths relative to the caller's directory;
    # --gateway-config is the gateway's, everything else gim-logic's.
    local args=() gw_args=() have_config=0
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
        --gateway-config)
            (($# > 1)) || usage
            gw_args=(--config "$(abspath "$2")")
            shift
            ;;
        --gateway-config=*) gw_args=(--config "$(abspath "${1#--gateway-config=}")") ;;
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

    RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/gim-dev.XXXXXX")
    local ls=$RUN_DIR/logic gs=$RUN_DIR/gateway lpid="" gpid="" stop=0 lrc=0 grc=0 rc=0
    : >"$ls"
    : >"$gs"
    # A signal stops the gateway first (its sign-outs reach gim-logic), then gim-logic. Each
    # service runs in a session of its own (setsid), so that Ctrl-C reaches only dev.sh, which
    # decides the order; a SIGTERM or SIGHUP sent to dev.sh does the same.
    trap 'stop=1' INT TERM HUP
    # pause: sleeps a little; a trapped signal ends it at once.
    pause() {
        sleep 0.1 &
        wait $! 2>/dev/null || true
    }
    # start NAME STATE PID_VAR: waits until the service NAME logs "ready", exits or dev.sh is
    # told to stop; returns 1 if it exited.
    started() {
        while ! grep -qx ready "$2"; do
            kill -0 "$3" 2>/dev/null || return 1
            ((stop == 0)) || return 0
            pause
        done
    }

    # Each log copy is opened on its own first, to know its pid: a bare `wait` waits for a
    # process substitution only when it is $!, and with `service 2> >(copy_log) &` $! is the
    # service, so dev.sh could exit before the copy had printed the service's last lines
    # (test_devsh_it's bad-URL check found the error line missing, once in 5 loaded repeats).
    local lfd gfd lcopy gcopy=""
    exec {lfd}> >(copy_log logic "$ls")
    lcopy=$!
    setsid build/gim-logic "${args[@]}" 2>&"$lfd" &
    lpid=$!
    exec {lfd}>&- # the service holds the only writer now: the copy ends when it exits
    if ! started gim-logic "$ls" "$lpid"; then
        wait_exit "$lpid"
        lrc=$WAIT_RC
        wait "$lcopy" || true
        echo "dev.sh: gim-logic failed to start (exit $lrc)" >&2
        exit "$((lrc == 0 ? 1 : lrc))"
    fi
    if ((stop == 0)); then
        # From the repository root, so that its defaults web.root=web and web.proto_dir=proto
        # resolve; with no --gateway-config, it needs no file (docs/gateway.md).
        exec {gfd}> >(copy_log gateway "$gs")
        gcopy=$!
        setsid build/gim-gateway "${gw_args[@]}" 2>&"$gfd" &
        gpid=$!
        exec {gfd}>&-
        if ! started gim-gateway "$gs" "$gpid"; then
            wait_exit "$gpid"
            grc=$WAIT_RC
            gpid=""
            echo "dev.sh: gim-gateway failed to start (exit $grc); stopping gim-logic" >&2
            rc=$((grc == 0 ? 1 : grc))
            stop=1
        elif ((stop == 0)); then
            announce "$secret" "$ls" "$gs"
        fi
    fi

    # Both run until a signal or until one of them exits.
    while ((stop == 0)); do
        kill -0 "$lpid" 2>/dev/null || break
        kill -0 "$gpid" 2>/dev/null || break
        sleep 0.5 &
        wait $! 2>/dev/null || true
    done
    # From here on INT, TERM and HUP are ignored, not trapped: a second Ctrl-C does not cut the
    # drain short, and no signal interrupts wait_exit's `wait`. A trapped one did: `wait` then
    # returns 128+n, the signal's number, and when the service had exited in that instant
    # dev.sh reported it as the service's status ("gim-gateway exited with status 143" after a
    # clean stop, once in test_devsh_it under ctest -j6; 7 of 8 runs with a burst of HUPs).
    trap '' INT TERM HUP
    if ((stop == 0)); then
        # One of them exited by itself: stop the other, and say so.
        if kill -0 "$lpid" 2>/dev/null; then
            echo "dev.sh: gim-gateway stopped unexpectedly; stopping gim-logic" >&2
        else
            echo "dev.sh: gim-logic stopped unexpectedly; stopping gim-gateway" >&2
        fi
        rc=1
    fi
    if [[ -n $gpid ]]; then
        kill -TERM "$gpid" 2>/dev/null || true
        wait_exit "$gpid"
        grc=$WAIT_RC
        ((grc == 0)) || echo "dev.sh: gim-gateway exited with status $grc" >&2
        ((rc != 0 || grc == 0)) || rc=$grc
    fi
    kill -TERM "$lpid" 2>/dev/null || true
    wait_exit "$lpid"
    lrc=$WAIT_RC
    ((lrc == 0)) || echo "dev.sh: gim-logic exited with status $lrc" >&2
    ((rc != 0 || lrc == 0)) || rc=$lrc
    # for the log copies, so that the last lines come before the prompt
    wait "$lcopy" ${gcopy:+"$gcopy"} 2>/dev/null || true
    rm -rf "$RUN_DIR"
    exit "$rc"
}

# build_tests DIR [cmake args...]
build_tests() {
    local dir=$1
    shift
    configure "$dir" ON "$@" && cmake --build "$dir" -j2
}

cmd_test() {
    local sanitize=0 ctest_args=()
    while (($# > 0)); do
        case "$1" in
        --sanitize) sanitize=1 ;;
        *) ctest_args+=("$1") ;;
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
    # ctest's pg fixture starts the tests' PostgreSQL (tools/pgtmp.sh, in $dir/pgtmp) and its
    # pg_stop stops it; a ctest cut short (Ctrl-C) never runs pg_stop, so stop it here too (a
    # no-op when pg_stop ran).
    # shellcheck disable=SC2064 # $dir now, not when the trap runs
    trap "tools/pgtmp.sh stop '$ROOT/$dir/pgtmp' >/dev/null 2>&1 || true" EXIT
    local rc=0
    ctest --test-dir "$dir" --output-on-failure -j2 "${ctest_args[@]}" || rc=$?
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
