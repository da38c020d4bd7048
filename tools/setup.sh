#!/usr/bin/env bash
# Installs the Debian 12 (bookworm) packages gim-logic needs, only those missing, then checks
# that every library the build asks for is really there and comes from those packages.
#
#   tools/setup.sh build    what the services need to build and run (the Dockerfile's group)
#   tools/setup.sh run      build, plus nodejs and npm, then `npm ci --omit=dev` in web/ (the
#                           web client's protobufjs and long, no browser): `tools/dev.sh run`
#   tools/setup.sh [all]    build plus the test, lint, CI and web-client extras (chromium, the
#                           tests' PostgreSQL 15 server for tools/pgtmp.sh); then
#                           `npm ci` in web/ with the dev dependencies (the browser tests')
#                           npm ci runs only when web/node_modules is missing, older than the
#                           lock file, or installed without the dev dependencies `all` needs.
#   options: --no-check     install only (the Dockerfile's first layer, before the sources)
#            --check        check only, and always (no apt, no root needed)
#            --drop PKG     check as if PKG were not in the lists (to test the check itself)
#
# Idempotent: when everything is installed it runs no apt command at all. A passed check is
# remembered in build/.setup-check-GROUP until dpkg's database, this script, tools/pgtmp.sh or
# a CMakeLists.txt changes, so that `tools/dev.sh run` does not pay for it on every start.
#
# The check is derived from the CMakeLists.txt files, not from the lists below, so a package
# the lists forget cannot hide behind a machine that happens to have it. For every
# pkg_check_modules() module (the REQUIRED ones; the optional ones, i.e. the test libraries,
# with `all`), every find_package(NAME CONFIG) package and every find_program(... REQUIRED),
# and with `all` the PostgreSQL server programs the tests run (`tools/pgtmp.sh bins`):
#   1. it is found (pkg-config, CMake, PATH);
#   2. a program compiles and links with its flags (cc $(pkg-config --cflags --libs M), or
#      CMake linking NAME's NAME::targets), which is what failed with "cannot find -lyaml";
#   3. every file that link used (the .pc or CMake config file, each library the linker
#      opened beyond what an empty program opens, each program) belongs to a package in the
#      lists or to one they depend on (dpkg's own records). On a machine that carries
#      libyaml-dev for other reasons, libcyaml's -lyaml is found, but libyaml.so belongs to
#      libyaml-dev, which nothing listed depends on: the check names it.
# A failure prints one line per problem, naming the library and the package to install, and
# exits 1.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

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
    libyaml-dev # libcyaml.pc links -lyaml, but libcyaml-dev does not depend on libyaml-dev
    libjwt-dev
    libjansson-dev # the business API's JSON (src/api*.c)
    libpq-dev      # PostgreSQL's client library (database.backend: postgres)
    ca-certificates
)

# What `run` adds to `build`: Node's npm, to install the web client's packages (the files are
# served statically; node itself does not run).
RUN_PKGS=(
    nodejs
    npm
)

TEST_PKGS=(
    libcriterion-dev
    libssl-dev # test_auth signs tokens with OpenSSL's HMAC that libjwt would not write
    protobuf-compiler
    nng-utils
    clang
    libclang-rt-14-dev
    clang-format
    valgrind
    docker-compose
    curl
    wrk # tools/bench-api.sh: POST /v1/messages throughput (docs/benchmarks.md)
    postgresql-15 # the tests' throw-away server (tools/pgtmp.sh); the services need only libpq
    # the web client (web/): Debian 12's Node 18, npm, and a browser for its tests
    nodejs
    npm
    chromium
)

usage() {
    echo "usage: $0 [build|run|all] [--no-check | --check] [--drop PKG]..." >&2
    exit 2
}

group=build group_set=0 install=1 check=1 drop=()
while (($# > 0)); do
    case "$1" in
    build | run | all)
        ((group_set == 0)) || usage
        group=$1 group_set=1
        ;;
    --check) install=0 ;;
    --no-check) check=0 ;;
    --drop)
        (($# > 1)) || usage
        drop+=("$2")
        shift
        ;;
    -h | --help) usage ;;
    *)
        echo "setup.sh: unknown argument '$1'" >&2
        usage
        ;;
    esac
    shift
done
((install || check)) || usage
# No group named: `all`, as before (the README's `tools/setup.sh all` and plain `tools/setup.sh`).
((group_set)) || group=all

case "$group" in
build) wanted=("${BUILD_PKGS[@]}") ;;
run) wanted=("${BUILD_PKGS[@]}" "${RUN_PKGS[@]}") ;;
all) wanted=("${BUILD_PKGS[@]}" "${TEST_PKGS[@]}") ;;
esac
if ((${#drop[@]} > 0)); then
    kept=()
    for pkg in "${wanted[@]}"; do
        [[ " ${drop[*]} " == *" $pkg "* ]] || kept+=("$pkg")
    done
    wanted=("${kept[@]}")
fi

# ---- install ------------------------------------------------------------------------------

# A package counts as present when it is installed or an installed package provides it (e.g.
# NodeSource's nodejs provides, and conflicts with, Debian's npm).
install_missing() {
    local missing=() pkg status provides parts name
    local -A present=()
    while IFS=$'\t' read -r pkg status provides; do
        [[ $status == "install ok installed" ]] || continue
        present[$pkg]=1
        IFS=',' read -ra parts <<<"$provides"
        for name in "${parts[@]}"; do
            name=${name%%(*}
            name=${name//[[:space:]]/}
            [[ -z $name ]] || present[$name]=1
        done
    done < <(dpkg-query -W -f='${Package}\t${Status}\t${Provides}\n')
    for pkg in "${wanted[@]}"; do
        [[ -n ${present[$pkg]:-} ]] || missing+=("$pkg")
    done

    if ((${#missing[@]} == 0)); then
        echo "setup.sh: all ${#wanted[@]} '$group' packages already installed"
        return 0
    fi

    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo)
        else
            echo "setup.sh: not root and no sudo; install these by hand: ${missing[*]}" >&2
            exit 1
        fi
    fi

    echo "setup.sh: installing ${missing[*]}"
    "${sudo[@]}" apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing[@]}"
}

# npm ci only when needed: it deletes node_modules first. web/node_modules/.gim-setup says
# what the last npm ci installed ("full", or "omit-dev" for `run`); `all` needs "full".
web_deps() {
    [[ $group != build && -f "$ROOT/web/package-lock.json" ]] || return 0
    local stamp=$ROOT/web/node_modules/.gim-setup have="" want=full opts=()
    [[ -f $stamp ]] && have=$(cat "$stamp")
    # A full install made by hand (npm ci without this script) has the dev packages: `run` must
    # not take them away (the browser tests would lose puppeteer-core under ctest -j).
    if [[ -z $have && -d $ROOT/web/node_modules/puppeteer-core ]] &&
        [[ ! "$ROOT/web/package-lock.json" -nt "$ROOT/web/node_modules/.package-lock.json" ]]; then
        echo full >"$stamp" && have=full
    fi
    if [[ $group == run ]]; then
        want=omit-dev opts=(--omit=dev)
    fi
    if [[ -n $have && ! "$ROOT/web/package-lock.json" -nt "$stamp" ]] &&
        [[ $have == full || $have == "$want" ]]; then
        return 0
    fi
    echo "setup.sh: npm ci${opts[*]:+ ${opts[*]}} in web/"
    (cd "$ROOT/web" && npm ci "${opts[@]}" --no-audit --no-fund --loglevel=error >/dev/null)
    # Newer than the lock file even when there was nothing to install.
    mkdir -p "$ROOT/web/node_modules" && echo "$want" >"$stamp"
}

# ---- check --------------------------------------------------------------------------------

problems=0
problem() {
    echo "setup.sh: $*" >&2
    problems=$((problems + 1))
}

# The Debian package probably shipping library or module $1 (libyaml-dev for yaml, libcyaml,
# libyaml.so): named when apt knows it, else a hint.
guess_pkg() {
    local name=${1##*/}
    name=${name%%.so*}
    name=${name%.a}
    name=${name%.pc}
    name=lib${name#lib}-dev
    if apt-cache show "$name" >/dev/null 2>&1; then
        echo "install $name (apt-get install $name) and add it to tools/setup.sh"
    else
        echo "install the Debian -dev package that ships it (perhaps $name) and add it to tools/setup.sh"
    fi
}

# Every package in the lists and everything they depend on, from dpkg's records (offline).
declare -A CLOSURE=()
closure() {
    local -A deps=() providers=()
    local pkg status pre dep provides parts name p
    while IFS=$'\t' read -r pkg status pre dep provides; do
        [[ $status == "install ok installed" ]] || continue
        deps[$pkg]+="$pre, $dep, "
        IFS=',' read -ra parts <<<"$provides"
        for name in "${parts[@]}"; do
            name=${name%%(*}
            name=${name//[[:space:]]/}
            [[ -n $name ]] && providers[$name]+=" $pkg"
        done
    done < <(dpkg-query -W -f='${Package}\t${Status}\t${Pre-Depends}\t${Depends}\t${Provides}\n')
    local queue=("${wanted[@]}")
    for name in "${wanted[@]}"; do
        for p in ${providers[$name]:-}; do queue+=("$p"); done
    done
    while ((${#queue[@]} > 0)); do
        pkg=${queue[-1]}
        unset 'queue[-1]'
        [[ -z ${CLOSURE[$pkg]:-} && -n ${deps[$pkg]+x} ]] || continue
        CLOSURE[$pkg]=1
        # "a (>= 1), b | c, d:any": every alternative that is installed counts.
        IFS=',|' read -ra parts <<<"${deps[$pkg]}"
        for name in "${parts[@]}"; do
            name=${name%%(*}
            name=${name%%:*}
            name=${name//[[:space:]]/}
            [[ -n $name ]] || continue
            queue+=("$name")
            for p in ${providers[$name]:-}; do queue+=("$p"); done
        done
    done
}

# The package owning file $1 ("" if none); merged /usr means a file may be recorded under
# /lib or /usr/lib.
owner() {
    local f alt out
    f=$(realpath -s "$1")
    case "$f" in
    /usr/lib/*) alt=${f#/usr} ;;
    /lib/*) alt=/usr$f ;;
    *) alt=$f ;;
    esac
    out=$(dpkg -S "$f" 2>/dev/null || dpkg -S "$alt" 2>/dev/null || true)
    out=$(grep -v '^diversion' <<<"$out" | head -n 1)
    out=${out%%: /*}
    out=${out%%,*}
    echo "${out%%:*}"
}

# Problem if file $2 (used by $1) does not come from the lists or what they depend on.
check_owner() {
    local what=$1 file=$2 pkg
    pkg=$(owner "$file")
    if [[ -z $pkg ]]; then
        problem "$what uses $file, which belongs to no Debian package (installed by hand?);" \
            "$(guess_pkg "$file")"
    elif [[ -z ${CLOSURE[$pkg]:-} ]]; then
        problem "$what uses $file from $pkg, which tools/setup.sh '$group' does not install" \
            "(nor does anything it installs depend on it): add $pkg to tools/setup.sh"
    fi
}

TMP=""
# shellcheck disable=SC2317 # called by the trap
cleanup() { [[ -z $TMP ]] || rm -rf "$TMP"; }
trap cleanup EXIT

# Libraries a link opened (ld --trace), minus those an empty program opens anyway.
linked_libs() {
    grep -E '\.(so[.0-9]*|a)$' "$1" | while IFS= read -r f; do realpath -s "$f"; done |
        sort -u | comm -23 - "$TMP/base.libs"
}

# pkg_check_modules(PREFIX [REQUIRED] [QUIET] [IMPORTED_TARGET] [GLOBAL] module...): module
# names, one a line, prefixed "req " or "opt ". Version constraints (mod>=1) are cut.
cmake_modules() {
    sed -n 's/^[[:space:]]*pkg_check_modules[[:space:]]*(\([^)]*\)).*/\1/p' "$@" |
        while read -r _prefix rest; do
            local kind=opt word
            [[ " $rest " == *" REQUIRED "* ]] && kind=req
            for word in $rest; do
                case $word in
                REQUIRED | QUIET | IMPORTED_TARGET | GLOBAL | NO_CMAKE_PATH | NO_CMAKE_ENVIRONMENT_PATH) ;;
                *) echo "$kind ${word%%[<>=]*}" ;;
                esac
            done
        done
}

check_pkg_config_module() {
    local m=$1 pc
    if ! pkg-config --exists "$m" 2>/dev/null; then
        problem "pkg-config module $m (pkg_check_modules in CMakeLists.txt) not found; $(guess_pkg "$m")"
        return
    fi
    # shellcheck disable=SC2046 # pkg-config's flags are meant to be split
    if ! echo 'int main(void) { return 0; }' |
        cc -x c - -o "$TMP/a.out" $(pkg-config --cflags --libs "$m") -Wl,--trace \
            >"$TMP/$m.trace" 2>&1; then
        local lib
        lib=$(grep -o 'cannot find -l[^: ]*' "$TMP/$m.trace" | head -n 1 | sed 's/.*-l//')
        if [[ -n $lib ]]; then
            problem "$m does not link: ld cannot find -l$lib; $(guess_pkg "$lib")"
        else
            problem "$m does not compile and link: $(grep -m1 -iE 'error|cannot' "$TMP/$m.trace")"
        fi
        return
    fi
    # One line per dependency: its libraries' owners matter only once its own files are right.
    local before=$problems f
    pc=$(pkg-config --variable=pcfiledir "$m")/$m.pc
    [[ -f $pc ]] && check_owner "pkg-config module $m" "$pc"
    ((problems == before)) || return 0
    while IFS= read -r f; do check_owner "$m" "$f"; done < <(linked_libs "$TMP/$m.trace")
}

# find_package(NAME CONFIG ...): CMake finds it and a program links with the NAME:: targets
# CMakeLists.txt uses (NAME::NAME when it names none).
check_cmake_package() {
    local p=$1 targets d="$TMP/cmake-$1"
    targets=$(grep -ohE "\\b$p::[A-Za-z0-9_]+" "${cmakelists[@]}" | sort -u | tr '\n' ' ')
    [[ -n $targets ]] || targets="$p::$p"
    mkdir -p "$d"
    echo 'int main(void) { return 0; }' >"$d/t.c"
    cat >"$d/CMakeLists.txt" <<EOF
cmake_minimum_required(VERSION 3.18)
project(setup_check C)
find_package($p CONFIG REQUIRED)
file(WRITE \${CMAKE_BINARY_DIR}/config_dir "\${${p}_DIR}")
add_executable(t t.c)
target_link_libraries(t PRIVATE $targets)
target_link_options(t PRIVATE -Wl,--trace)
EOF
    if ! cmake -S "$d" -B "$d/b" >"$d/configure.log" 2>&1; then
        problem "CMake package $p (find_package($p CONFIG) in CMakeLists.txt) not found; $(guess_pkg "$p")"
        return
    fi
    if ! cmake --build "$d/b" >"$d/build.log" 2>&1; then
        local lib
        lib=$(grep -o 'cannot find -l[^: ]*' "$d/build.log" | head -n 1 | sed 's/.*-l//')
        problem "CMake package $p does not link${lib:+: ld cannot find -l$lib}; $(guess_pkg "${lib:-$p}")"
        return
    fi
    local f dir before=$problems
    dir=$(cat "$d/b/config_dir")
    for f in "$dir"/*onfig.cmake; do
        [[ -f $f ]] && check_owner "CMake package $p" "$f"
    done
    ((problems == before)) || return 0
    while IFS= read -r f; do check_owner "$p" "$f"; done < <(linked_libs "$d/build.log")
}

check_build_deps() {
    cmakelists=()
    local f
    while IFS= read -r -d '' f; do cmakelists+=("$f"); done < <(
        find "$ROOT" \( -name 'build*' -o -name node_modules -o -name .git \) -prune -o \
            -name CMakeLists.txt -print0 2>/dev/null
    )
    if ((${#cmakelists[@]} == 0)); then
        echo "setup.sh: no CMakeLists.txt under $ROOT: cannot derive what the build needs" >&2
        exit 1
    fi
    for f in cc pkg-config cmake dpkg-query; do
        command -v "$f" >/dev/null 2>&1 || problem "$f not found: install build-essential, cmake and pkg-config"
    done
    ((problems == 0)) || return 0
    closure
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/gim-setup.XXXXXX")
    echo 'int main(void) { return 0; }' | cc -x c - -o "$TMP/a.out" -Wl,--trace >"$TMP/base.trace" 2>&1
    grep -E '\.(so[.0-9]*|a)$' "$TMP/base.trace" | while IFS= read -r f; do realpath -s "$f"; done |
        sort -u >"$TMP/base.libs"

    local kind m n=0
    while read -r kind m; do
        [[ $kind == req || $group == all ]] || continue
        check_pkg_config_module "$m"
        n=$((n + 1))
    done < <(cmake_modules "${cmakelists[@]}" | sort -u)
    while read -r m; do
        check_cmake_package "$m"
        n=$((n + 1))
    done < <(grep -ohE 'find_package\([A-Za-z0-9_]+ CONFIG' "${cmakelists[@]}" | sed 's/find_package(//; s/ CONFIG//' | sort -u)
    while read -r m; do
        n=$((n + 1))
        if ! f=$(command -v "$m"); then
            problem "program $m (find_program in CMakeLists.txt) not found; install the package that ships it and add it to tools/setup.sh"
            continue
        fi
        check_owner "program $m" "$(readlink -f "$f")"
    done < <(grep -ohE 'find_program\([A-Za-z0-9_]+ [^ )]+ [^)]*REQUIRED' "${cmakelists[@]}" | awk '{print $2}' | sort -u)
    # The tests' throw-away PostgreSQL server: the programs tools/pgtmp.sh runs (not on PATH,
    # so no find_program can name them).
    if [[ $group == all && -f $ROOT/tools/pgtmp.sh ]]; then
        while read -r f; do
            n=$((n + 1))
            if [[ ! -x $f ]]; then
                problem "program $f (tools/pgtmp.sh, the tests' PostgreSQL server) not found;" \
                    "install postgresql-15 (apt-get install postgresql-15) and add it to tools/setup.sh"
                continue
            fi
            check_owner "program ${f##*/} (tools/pgtmp.sh)" "$(readlink -f "$f")"
        done < <(bash "$ROOT/tools/pgtmp.sh" bins)
    fi
    if ((problems == 0)); then
        echo "setup.sh: checked $n build dependencies of CMakeLists.txt: found, link, and come from the '$group' packages"
    fi
}

# What a passed check depended on: the packages installed, this script, the CMakeLists.txt
# files and the group.
check_key() {
    {
        echo "$group ${drop[*]}"
        stat -c '%Y %s' /var/lib/dpkg/status
        cat "${BASH_SOURCE[0]}"
        cat "$ROOT/tools/pgtmp.sh" 2>/dev/null || true
        find "$ROOT" \( -name 'build*' -o -name node_modules -o -name .git \) -prune -o \
            -name CMakeLists.txt -print0 2>/dev/null | sort -z | xargs -0 cat
    } | sha256sum | cut -d' ' -f1
}

((install)) && install_missing
if ((check)); then
    stamp=$ROOT/build/.setup-check-$group key=$(check_key)
    if ((install)) && ((${#drop[@]} == 0)) && [[ -f $stamp && $(cat "$stamp") == "$key" ]]; then
        echo "setup.sh: build dependencies unchanged since the last check ($stamp)"
    else
        ((${#drop[@]} > 0)) || rm -f "$stamp"
        check_build_deps
        if ((problems > 0)); then
            echo "setup.sh: $problems problem(s) with the build's dependencies (see above)" >&2
            exit 1
        fi
        if ((${#drop[@]} == 0)) && mkdir -p "$ROOT/build" 2>/dev/null; then
            echo "$key" >"$stamp" 2>/dev/null || true
        fi
    fi
fi
((install)) && web_deps
exit 0
