#!/usr/bin/env bash
# The examples of docs/business-api.md, run as written against a fresh gim-logic.
#
#   tests/test_api_docs_it.sh GIM_LOGIC_BIN GIMCTL_BIN
#
# Each example is an ```sh block after an `<!-- example:NAME -->` marker. All blocks run in
# document order in one bash session (variables and functions carry over), with API set to
# the service's api.listen URL, GIM_TOKEN_SECRET to its secret, and `gimctl` on PATH pointed
# at its nng socket. Within a block, a command is the lines up to its `#   ` lines, which are
# the output it must print (stdout and stderr, blank lines dropped), line for line; `...` in
# them matches anything, and other `# ` lines are prose. A command with no `#   ` lines must
# print nothing. Needs curl and openssl (tools/setup.sh all).
set -uo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DOC=$SRC/docs/business-api.md
. "$SRC/tests/lib.sh"
LOGIC=${1:?usage: $0 GIM_LOGIC_BIN GIMCTL_BIN}
GIMCTL=$(realpath "${2:?usage: $0 GIM_LOGIC_BIN GIMCTL_BIN}")
for tool in curl openssl; do
    command -v $tool >/dev/null || { echo "MISSING $tool: tools/setup.sh all" >&2; exit 1; }
done

dir=$(mktemp -d /tmp/gim-api-docs.XXXXXX)
pid=
cleanup() {
    [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT
fail() {
    echo "test_api_docs_it: FAIL: $*" >&2
    exit 1
}

secret="docs-secret-$$"
# Port 0: the kernel picks a free port, which gim-logic logs.
cat >"$dir/config.yaml" <<EOF
listen: ["ipc://$dir/rep.ipc"]
publish: ["ipc://$dir/pub.ipc"]
http: ""
database: {path: "$dir/gim.db", synchronous: normal}
auth: {secret: "$secret"}
api: {listen: "http://127.0.0.1:0"}
EOF
"$LOGIC" --config "$dir/config.yaml" 2>"$dir/log.txt" &
pid=$!
gim_wait_ready "$dir/log.txt" "$pid" || { cat "$dir/log.txt" >&2; fail "gim-logic did not start"; }
addr=$(sed -n 's/.*msg="api listening".* addr=\([0-9.]*:[0-9]*\).*/\1/p' "$dir/log.txt")
[[ -n $addr ]] || { cat "$dir/log.txt" >&2; fail "gim-logic did not start its API"; }

mkdir "$dir/bin"
printf '#!/bin/sh\nexec "%s" --url "ipc://%s/rep.ipc" "$@"\n' "$GIMCTL" "$dir" >"$dir/bin/gimctl"
chmod +x "$dir/bin/gimctl"

# ---- the doc into one script, one output file per command --------------------------------
script=$dir/examples.sh
{
    echo "export API=http://$addr GIM_TOKEN_SECRET='$secret' PATH='$dir/bin':\$PATH"
} >"$script"
nsteps=0 nblocks=0 armed= inblock=0 cmd= want=()
flush() {
    [[ -z $cmd && ${#want[@]} == 0 ]] && return
    [[ -n $cmd ]] || fail "$armed: output lines with no command before them"
    printf '{\n%s\n} >%s/out.%d 2>&1\n' "$cmd" "$dir" "$nsteps" >>"$script"
    if ((${#want[@]})); then printf '%s\n' "${want[@]}"; fi >"$dir/want.$nsteps"
    echo "$armed" >"$dir/name.$nsteps"
    printf '%s\n' "$cmd" >"$dir/cmd.$nsteps"
    nsteps=$((nsteps + 1))
    cmd= want=()
}
while IFS= read -r line; do
    if ((inblock)); then
        if [[ $line == '```' ]]; then
            flush
            inblock=0 armed=
        elif [[ $line == '#   '* ]]; then
            want+=("${line#\#   }")
        elif [[ $line == '#'* ]]; then
            flush
        else
            ((${#want[@]})) && flush
            cmd+="${cmd:+$'\n'}$line"
        fi
    elif [[ $line =~ ^\<!--\ example:([a-z0-9-]+)\ --\>$ ]]; then
        armed=${BASH_REMATCH[1]}
    elif [[ -n $armed && $line == '```sh' ]]; then
        inblock=1
        nblocks=$((nblocks + 1))
    elif [[ -n $armed && -n $line ]]; then
        fail "example $armed is not followed by an \`\`\`sh block"
    fi
done <"$DOC"
((nblocks >= 10)) || fail "only $nblocks examples found in $DOC"

(cd "$dir" && bash "$script") || true

# ---- compare ------------------------------------------------------------------------------
bad=0
to_regex() { # a wanted line as an anchored ERE: literal, except ... = anything
    local esc
    esc=$(printf '%s' "$1" | sed -e 's/[][\.*^$(){}+?|/\\]/\\&/g' -e 's/\\\.\\\.\\\./.*/g')
    printf '^%s$' "$esc"
}
for ((i = 0; i < nsteps; i++)); do
    mapfile -t got < <(grep -v '^[[:space:]]*$' "$dir/out.$i")
    mapfile -t exp <"$dir/want.$i"
    ok=1
    if ((${#got[@]} != ${#exp[@]})); then
        ok=0
    else
        for ((j = 0; j < ${#exp[@]}; j++)); do
            re=$(to_regex "${exp[j]}")
            [[ ${got[j]} =~ $re ]] || { ok=0; break; }
        done
    fi
    if ((!ok)); then
        bad=$((bad + 1))
        echo "--- example $(cat "$dir/name.$i"), command $i:" >&2
        sed 's/^/    /' "$dir/cmd.$i" >&2
        echo "want:" >&2
        printf '    %s\n' "${exp[@]}" >&2
        echo "got:" >&2
        printf '    %s\n' "${got[@]}" >&2
    fi
done
((bad == 0)) || fail "$bad of $nsteps commands printed something else than the doc shows"

kill -TERM "$pid"
wait "$pid" && rc=0 || rc=$?
pid=
((rc == 0)) || fail "gim-logic exited $rc"
echo "test_api_docs_it: $nsteps commands of $nblocks examples printed what docs/business-api.md shows"
