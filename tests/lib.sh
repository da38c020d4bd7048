# tests/lib.sh: what the shell tests share, sourced by them (bash).
#
# gim_wait_ready LOG PID: waits until the gim-logic process PID has logged msg="ready" to
# LOG (it logs that once every listener is bound and the database is open). Returns 0 then,
# 1 as soon as the process has exited (a bind it lost, a bad config: LOG says which) or
# after 10 s. Polls every 50 ms: the start takes well under a second here.
gim_wait_ready() {
    local log=$1 pid=$2
    for _ in $(seq 200); do
        grep -q 'msg="ready"' "$log" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}
