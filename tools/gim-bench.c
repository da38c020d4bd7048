/*
 * gim-bench: a load generator that plays the gateways of gim-logic (see
 * bench.h for what it measures and how the tool is split). This file is the
 * order of an invocation: arguments, a direct preload or a protocol preload,
 * the workloads one after the other, the limits, then the lines on stdout
 * and the exit status.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "bench.h"

#define TOKEN_TTL_S     86400
#define RESIGN_AFTER_NS (45LL * 1000000000) /* well inside presence's default 90 s timeout */

static gim_err mint_tokens(struct bench *b)
{
    int64_t exp = (int64_t)time(NULL) + TOKEN_TTL_S;
    if (!(b->tokens = calloc((size_t)b->o.users, sizeof *b->tokens)))
        return GIM_ENOMEM;
    for (int64_t i = 0; i < b->o.users; i++) {
        gim_err e = auth_mint(b->secret, bench_uid(b, i), bench_uid(b, i), exp, &b->tokens[i]);
        if (e != GIM_OK) {
            fprintf(stderr, "gim-bench: cannot mint a token: %s\n", gim_err_name(e));
            return e;
        }
    }
    return GIM_OK;
}

static gim_err run_phase(struct bench *b, struct link *l, enum workload wl, struct result *res)
{
    gim_err e;
    if (wl == WL_GROUP && (e = bench_setup_groups(b)) != GIM_OK)
        return e;
    if (wl == WL_SYNC || wl == WL_MIXED || wl == WL_RW) {
        if (b->o.db) {
            if ((e = bench_load_seqs(b, b->o.db, b->last_seq)) != GIM_OK)
                return e;
        } else {
            fprintf(stderr, "gim-bench: no --db: syncs start at seq 0 (only order is checked)\n");
        }
    }
    if (!b->signed_in_ns || bench_now_ns() - b->signed_in_ns > RESIGN_AFTER_NS)
        if ((e = bench_sign_in_all(b, l)) != GIM_OK)
            return e;
    /* The service's and the bench's CPU over the whole run (warmup too), per EC_OK reply of
     * the whole run. */
    double cpu0 = b->o.server_pid ? bench_server_cpu_s((long)b->o.server_pid) : -1;
    double self0 = bench_self_cpu_s();
    int64_t t0 = bench_now_ns();
    e = bench_run_workload(b, l, wl, b->o.warmup, b->o.duration, 0, NULL, 0, NULL, res);
    res->wall_all_s = (double)(bench_now_ns() - t0) / 1e9;
    double self1 = bench_self_cpu_s();
    res->bench_cpu_s = self0 >= 0 && self1 >= self0 ? self1 - self0 : 0;
    double cpu1 = cpu0 >= 0 ? bench_server_cpu_s((long)b->o.server_pid) : -1;
    if (e == GIM_OK && cpu0 >= 0 && cpu1 >= cpu0)
        res->server_cpu_s = cpu1 - cpu0;
    if (e == GIM_OK)
        fprintf(stderr, "gim-bench: %s: %.1f ok/s p50 %.3f ms p99 %.3f ms, %" PRIu64 " errors\n",
                bench_wl_names[wl], bench_per_s(res), res->p50, res->p99, res->errors);
    return e;
}

static gim_err preload_protocol(struct bench *b, struct link *l)
{
    struct result res;
    gim_err e = bench_sign_in_all(b, l);
    if (e != GIM_OK)
        return e;
    e = bench_run_workload(b, l, WL_SEND, 0, b->o.preload_max, b->o.preload, NULL, 0, NULL, &res);
    if (e != GIM_OK)
        return e;
    printf("PRELOAD mode=protocol messages=%" PRIu64 " seconds=%.2f messages_per_s=%.0f "
           "errors=%" PRIu64 " check_failed=%" PRIu64 "\n",
           res.st.ok, res.secs, bench_per_s(&res), res.errors, res.st.check_failed);
    fflush(stdout);
    bool short_of = res.st.ok < (uint64_t)b->o.preload || res.st.check_failed;
    bench_result_free(&res);
    if (short_of) {
        fprintf(stderr, "gim-bench: preload stored fewer than %lld messages or failed checks\n",
                (long long)b->o.preload);
        return GIM_EIO;
    }
    return GIM_OK;
}

int main(int argc, char **argv)
{
    static struct bench b;
    struct link l = {0};
    struct result res[MAX_WORKLOADS], lim_nng, lim_sql;
    bool have_nng = false, have_sql = false;
    int nres = 0, status = 1;
    gim_err e = GIM_OK;

    memset(res, 0, sizeof res);
    memset(&lim_nng, 0, sizeof lim_nng);
    memset(&lim_sql, 0, sizeof lim_sql);
    int pr = bench_parse_args(&b.o, argc, argv);
    if (pr)
        return pr == 1 ? 0 : 2;
    b.content_text = bench_text_len(b.o.payload);
    b.partition = b.o.users >= b.o.conc;
    atomic_store(&b.next_rid,
                 bench_wall_ms() * 1000000); /* fresh ids: no idempotent replay of old runs */

    if (b.o.preload_direct) {
        e = bench_preload_direct(&b);
        if (e == GIM_OK && b.o.report_storage)
            e = bench_report_storage(b.o.db);
        return e == GIM_OK ? 0 : 1;
    }

    b.secret = b.o.secret ? b.o.secret : getenv("GIM_TOKEN_SECRET");
    if ((b.o.nwl || b.o.preload) && (!b.secret || !*b.secret)) {
        fprintf(stderr, "gim-bench: no secret: pass --secret S or set GIM_TOKEN_SECRET\n");
        return 2;
    }
    b.last_seq = calloc((size_t)b.o.users, sizeof *b.last_seq);
    b.sender_seq = calloc((size_t)b.o.users, sizeof *b.sender_seq);
    if (!b.last_seq || !b.sender_seq) {
        e = GIM_ENOMEM;
        goto out;
    }
    if (b.o.nwl || b.o.preload) {
        /* Fail fast and plainly when nothing listens, rather than after a run of timeouts. */
        if (!bench_service_answers(b.o.url, 2000, 3)) {
            fprintf(stderr, "gim-bench: no reply from gim-logic at %s\n", b.o.url);
            e = GIM_EIO;
            goto out;
        }
        if ((e = mint_tokens(&b)) != GIM_OK || (e = bench_link_open(&l, b.o.url)) != GIM_OK)
            goto out;
    }
    if (b.o.preload && (e = preload_protocol(&b, &l)) != GIM_OK)
        goto out;
    for (int i = 0; i < b.o.nwl; i++) {
        if ((e = run_phase(&b, &l, b.o.wl[i], &res[nres])) != GIM_OK)
            goto out;
        nres++;
    }
    if (b.o.limits) {
        if ((e = bench_nng_limit(&b, &lim_nng)) != GIM_OK)
            goto out;
        have_nng = true;
        if (b.o.db) {
            if ((e = bench_sqlite_limit(&b, &lim_sql)) != GIM_OK)
                goto out;
            have_sql = true;
        } else {
            fprintf(stderr, "gim-bench: no --db: the SQLite limit is skipped\n");
        }
    }
    status = 0;
    for (int i = 0; i < nres; i++) {
        bench_print_result(&b, &res[i], have_nng ? &lim_nng : NULL, have_sql ? &lim_sql : NULL);
        if (!res[i].st.ok || res[i].st.check_failed)
            status = 1;
    }
    if (have_nng) {
        bench_print_limit("nng", &b, &lim_nng);
        if (lim_nng.st.check_failed)
            status = 1;
    }
    if (have_sql)
        bench_print_limit("sqlite", &b, &lim_sql);
    if (b.o.report_storage && bench_report_storage(b.o.db) != GIM_OK)
        status = 1;
    if (b.o.server_pid)
        bench_print_server(b.o.server_pid);
out:
    if (e != GIM_OK)
        fprintf(stderr, "gim-bench: stopped: %s\n", gim_err_name(e));
    fflush(stdout);
    bench_link_close(&l);
    for (int i = 0; i < MAX_WORKLOADS; i++)
        bench_result_free(&res[i]);
    bench_result_free(&lim_nng);
    bench_result_free(&lim_sql);
    for (int64_t i = 0; b.tokens && i < b.o.users; i++)
        free(b.tokens[i]);
    free(b.tokens);
    free(b.last_seq);
    free(b.sender_seq);
    return status;
}
