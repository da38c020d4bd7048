/*
 * gim-bench, output and arguments: the options as one table (name, value,
 * bounds, help line), from which getopt's tables and the usage text are
 * made, the checks between options, and the machine-readable lines on
 * stdout. See bench.h for the whole tool.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "bench.h"

/* ------------------------------------------------------------------ output */

void bench_print_result(const struct bench *b, const struct result *r, const struct result *nng,
                        const struct result *sql)
{
    const struct stats *s = &r->st;
    printf("RESULT workload=%s c=%d ops=%" PRIu64 " ops_per_s=%.1f p50_ms=%.3f p99_ms=%.3f "
           "p999_ms=%.3f errors=%" PRIu64,
           bench_wl_names[r->wl], b->o.conc, s->ok, bench_per_s(r), r->p50, r->p99, r->p999,
           r->errors);
    for (int k = 1; k < CODE_SLOTS; k++)
        if (s->code[k])
            printf(" err_%s=%" PRIu64, k < CODE_SLOTS - 1 ? gim_err_name((gim_err)k) : "other",
                   s->code[k]);
    if (s->timeouts)
        printf(" err_timeout=%" PRIu64, s->timeouts);
    if (s->nng_err)
        printf(" err_nng=%" PRIu64, s->nng_err);
    if (b->o.rate)
        printf(" rate=%lld backlog_max=%lld pacer_wakes=%lld", (long long)b->o.rate,
               (long long)r->backlog_max, (long long)r->pacer_wakes);
    if (b->o.read_rate && r->wl == WL_RW)
        printf(" read_rate=%lld backlog_max=%lld pacer_wakes=%lld", (long long)b->o.read_rate,
               (long long)r->backlog_max, (long long)r->pacer_wakes);
    printf(" checked=%" PRIu64 " check_failed=%" PRIu64, s->checked, s->check_failed);
    /* Mixed loads: each operation's own rate and latency (reads behind saturating sends). */
    static const enum op mixed_ops[] = {OP_SYNC, OP_SEND, OP_ACK};
    static const enum op rw_ops[] = {OP_SEND, OP_SYNC, OP_HEARTBEAT};
    const enum op *ops = r->wl == WL_MIXED ? mixed_ops : r->wl == WL_RW ? rw_ops : NULL;
    for (int i = 0; ops && i < 3; i++) {
        const struct lats *l = &s->lat[ops[i]];
        const char *n = bench_op_names[ops[i]];
        printf(" %s_ops=%" PRIu64 " %s_ops_per_s=%.1f %s_p50_ms=%.3f %s_p99_ms=%.3f "
               "%s_p999_ms=%.3f",
               n, s->ok_op[ops[i]], n, r->secs > 0 ? (double)s->ok_op[ops[i]] / r->secs : 0, n,
               bench_pct_ms(l, 0.50), n, bench_pct_ms(l, 0.99), n, bench_pct_ms(l, 0.999));
    }
    if (r->wl == WL_RW)
        printf(" readers=%d", b->o.readers);
    if (r->wl == WL_SYNC || r->wl == WL_MIXED || r->wl == WL_RW)
        printf(" sync_from=%s", b->o.sync_random ? "random" : "newest");
    if (s->pages)
        printf(" avg_page=%.1f avg_from=%.1f", (double)s->page_msgs / (double)s->pages,
               (double)s->from_sum / (double)s->pages);
    if (r->wl == WL_GROUP)
        printf(" group_size=%lld", (long long)b->o.group_size);
    printf(" users=%lld payload=%d secs=%.1f", (long long)b->o.users, b->o.payload, r->secs);
    if (r->server_cpu_s > 0 && r->ok_all)
        printf(" server_cpu_us_per_op=%.1f server_cpu_s=%.2f",
               r->server_cpu_s * 1e6 / (double)r->ok_all, r->server_cpu_s);
    if (r->bench_cpu_s > 0 && r->ok_all)
        printf(" bench_cpu_us_per_op=%.1f", r->bench_cpu_s * 1e6 / (double)r->ok_all);
    /* Both known: the cores the two kept busy, against the machine's. A run at cpus_busy close
     * to cpus is CPU-bound: a higher rate needs less CPU per request, not more concurrency. */
    if (r->server_cpu_s > 0 && r->bench_cpu_s > 0 && r->wall_all_s > 0)
        printf(" cpus_busy=%.2f cpus=%ld", (r->server_cpu_s + r->bench_cpu_s) / r->wall_all_s,
               sysconf(_SC_NPROCESSORS_ONLN));
    if (nng && bench_per_s(nng) > 0)
        printf(" ratio_vs_nng=%.2f", bench_per_s(r) / bench_per_s(nng));
    if (sql && bench_per_s(sql) > 0 && r->wl == WL_SEND)
        printf(" ratio_vs_sqlite=%.2f", bench_per_s(r) / bench_per_s(sql));
    printf("\n");
}

void bench_print_limit(const char *kind, const struct bench *b, const struct result *r)
{
    printf("LIMIT kind=%s c=%d ops=%" PRIu64 " ops_per_s=%.1f p50_ms=%.3f p99_ms=%.3f "
           "p999_ms=%.3f errors=%" PRIu64 " checked=%" PRIu64 " check_failed=%" PRIu64 "%s\n",
           kind, b->o.conc, r->st.ok, bench_per_s(r), r->p50, r->p99, r->p999, r->errors,
           r->st.checked, r->st.check_failed,
           strcmp(kind, "sqlite") == 0 ? " latency=per_batch" : "");
}

/* The service's memory: VmRSS counts the mmap'ed database pages too (RssFile), so both show. */
void bench_print_server(long pid)
{
    static const char *const keys[] = {"VmRSS:", "VmHWM:", "RssAnon:", "RssFile:"};
    char path[64], line[256];
    long v[4] = {-1, -1, -1, -1};
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "gim-bench: cannot read %s: %s\n", path, strerror(errno));
        return;
    }
    while (fgets(line, sizeof line, f))
        for (int i = 0; i < 4; i++)
            if (strncmp(line, keys[i], strlen(keys[i])) == 0)
                v[i] = strtol(line + strlen(keys[i]), NULL, 10);
    fclose(f);
    printf("SERVER pid=%ld rss_kib=%ld peak_rss_kib=%ld rss_anon_kib=%ld rss_file_kib=%ld\n", pid,
           v[0], v[1], v[2], v[3]);
}

double bench_self_cpu_s(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return -1;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

double bench_server_cpu_s(long pid)
{
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* Fields after the command (which may hold spaces): state is field 3, utime 14, stime 15. */
    const char *p = strrchr(buf, ')');
    unsigned long long ut, st;
    if (!p ||
        sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    long hz = sysconf(_SC_CLK_TCK);
    return hz > 0 ? (double)(ut + st) / (double)hz : -1;
}

/* --------------------------------------------------------------- arguments */

static bool parse_i64(const char *s, int64_t min, int64_t max, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno || v < min || v > max)
        return false;
    *out = v;
    return true;
}

static bool parse_secs(const char *s, double min, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || !(v >= min) || v > 86400)
        return false;
    *out = v;
    return true;
}

static bool parse_workloads(struct opts *o, const char *list)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", list);
    o->nwl = 0;
    o->wl_given = true;
    if (strcmp(buf, "none") == 0)
        return true;
    for (char *save = NULL, *w = strtok_r(buf, ",", &save); w; w = strtok_r(NULL, ",", &save)) {
        int k = -1;
        for (int i = WL_SEND; i <= WL_RW; i++)
            if (strcmp(w, bench_wl_names[i]) == 0)
                k = i;
        if (k < 0 || o->nwl == MAX_WORKLOADS)
            return false;
        o->wl[o->nwl++] = (enum workload)k;
    }
    return o->nwl > 0;
}

static bool parse_gateway(struct opts *o, const char *a)
{
    o->gateway = a;
    return *a && strlen(a) <= 64 && !strchr(a, '\n');
}

static bool parse_mix(struct opts *o, const char *a)
{
    return sscanf(a, "%d,%d,%d", &o->mix_sync, &o->mix_send, &o->mix_ack) == 3 &&
           o->mix_sync >= 0 && o->mix_send >= 0 && o->mix_ack >= 0 &&
           o->mix_sync + o->mix_send + o->mix_ack > 0;
}

static bool parse_read_mix(struct opts *o, const char *a)
{
    return sscanf(a, "%d,%d", &o->read_sync, &o->read_hb) == 2 && o->read_sync >= 0 &&
           o->read_hb >= 0 && o->read_sync + o->read_hb > 0;
}

static bool parse_sync_from(struct opts *o, const char *a)
{
    o->sync_random = strcmp(a, "random") == 0;
    return strcmp(a, "newest") == 0 || o->sync_random;
}

/* How an option's value is read and where it goes. */
enum kind {
    K_STR,  /* const char * at off */
    K_INT,  /* int at off, min..max */
    K_I64,  /* int64_t at off, min..max */
    K_SECS, /* double at off, seconds, at least dmin, at most a day */
    K_FLAG, /* bool at off, no value */
    K_FN,   /* fn(o, value) */
    K_HELP, /* --help */
};

struct optdef {
    const char *name; /* long name */
    char short_name;  /* 0 = none */
    const char *meta; /* the value in the usage line; NULL = no value */
    enum kind kind;
    size_t off;
    int64_t min, max;
    double dmin;
    bool (*fn)(struct opts *o, const char *value);
    const char *help; /* NULL = not listed; "\n" continues on an indented line */
};

#define OFF(f) offsetof(struct opts, f)

/* In usage order. Defaults live in bench_parse_args; each help line names its default. */
static const struct optdef options[] = {
    {"url", 0, "URL", K_STR, OFF(url), 0, 0, 0, NULL,
     "gim-logic REP address, tcp:// or ipc:// (tcp://127.0.0.1:7400); a comma list\n"
     "spreads the requests over several instances on one database"},
    {"db", 0, "PATH", K_STR, OFF(db), 0, 0, 0, NULL,
     "the service's SQLite file: groups, sync seqs, preload, limits"},
    {"secret", 0, "S", K_STR, OFF(secret), 0, 0, 0, NULL, "token secret (else $GIM_TOKEN_SECRET)"},
    {"gateway", 0, "ID", K_FN, 0, 0, 0, 0, parse_gateway,
     "gateway id the bench signs in at (gim-bench)"},
    {"workload", 'w', "LIST", K_FN, 0, 0, 0, 0, parse_workloads,
     "comma list of send,group,sync,mixed,rw, or none (send)"},
    {"concurrency", 'c', "C", K_INT, OFF(conc), 1, 4096, 0, NULL,
     "nng contexts = requests in flight (64)"},
    {"users", 'u', "U", K_I64, OFF(users), 2, 10000000, 0, NULL,
     "users, one device each, ids BASE..BASE+U-1 (1000)"},
    {"user-base", 0, "ID", K_I64, OFF(user_base), 1, INT64_MAX / 2, 0, NULL, "first user id (1)"},
    {"duration", 't', "S", K_SECS, OFF(duration), 0, 0, 0.1, NULL,
     "measured seconds per workload (10)"},
    {"warmup", 0, "S", K_SECS, OFF(warmup), 0, 0, 0, NULL,
     "unmeasured seconds before each workload (1)"},
    {"payload", 0, "BYTES", K_INT, OFF(payload), 20, 1 << 20, 0, NULL,
     "size of a message's content, an encoded Text (100)"},
    {"group-size", 0, "G", K_I64, OFF(group_size), 2, 1000000, 0, NULL,
     "members per group for -w group (500)"},
    {"groups", 0, "N", K_I64, OFF(groups), 1, 1000000, 0, NULL,
     "groups for -w group (max(1, U/G))"},
    {"group-base", 0, "ID", K_I64, OFF(group_base), 1, INT64_MAX / 2, 0, NULL,
     "first group id (1000000000)"},
    {"mix", 0, "S,M,A", K_FN, 0, 0, 0, 0, parse_mix, "percent sync,send,ack of -w mixed (70,25,5)"},
    {"readers", 0, "R", K_INT, OFF(readers), 1, 4095, 0, NULL,
     "contexts of -w rw that read; the other C-R send (C/4)"},
    {"read-mix", 0, "S,H", K_FN, 0, 0, 0, 0, parse_read_mix,
     "percent sync,heartbeat of the readers of -w rw (50,50)"},
    {"sync-from", 0, "WHERE", K_FN, 0, 0, 0, 0, parse_sync_from,
     "newest: the newest page; random: a page at a random seq\ninside each user's history "
     "(newest)"},
    {"page-size", 0, "N", K_INT, OFF(page_size), 1, 10000, 0, NULL,
     "the service's sync.page_size, for seqs and checks (50)"},
    {"preload", 0, "N", K_I64, OFF(preload), 1, INT64_MAX / 4, 0, NULL,
     "first store N 1:1 messages through the protocol"},
    {"preload-direct", 0, NULL, K_FLAG, OFF(preload_direct), 0, 0, 0, NULL,
     "... or write them into --db instead (service stopped;\nrestart it afterwards and run the "
     "workloads separately)"},
    {"preload-max", 0, "S", K_SECS, OFF(preload_max), 0, 0, 1, NULL,
     "time bound of a protocol preload (3600)"},
    {"limits", 0, NULL, K_FLAG, OFF(limits), 0, 0, 0, NULL,
     "also measure a raw nng echo and a raw SQLite group commit"},
    {"echo-url", 0, "URL", K_STR, OFF(echo_url), 0, 0, 0, NULL,
     "where the echo server listens (ipc temp file or tcp port 0)"},
    {"report-storage", 0, NULL, K_FLAG, OFF(report_storage), 0, 0, 0, NULL,
     "print bytes per stored message of --db"},
    {"server-pid", 0, "PID", K_I64, OFF(server_pid), 1, INT32_MAX, 0, NULL,
     "print the service's RSS at the end"},
    {"timeout-ms", 0, "MS", K_INT, OFF(timeout_ms), 10, 600000, 0, NULL,
     "reply timeout; then re-dial (5000)"},
    {"check-every", 0, "N", K_INT, OFF(check_every), 0, INT32_MAX, 0, NULL,
     "decode and check one EC_OK reply in N (10; 0 = none)"},
    {"seed", 0, "N", K_I64, OFF(seed), 0, INT64_MAX, 0, NULL, "random seed (1)"},
    {"rate", 0, "R", K_I64, OFF(rate), 1, 10000000, 0, NULL,
     "offer R requests/s in all, an open loop: -c bounds those in\nflight, latency counts from "
     "when each was due (none:\neach context sends again as soon as it has its reply)"},
    {"read-rate", 0, "R", K_I64, OFF(read_rate), 1, 10000000, 0, NULL,
     "-w rw: offer the readers' R requests/s in all, an\nopen loop as --rate, while the "
     "senders stay a closed\nloop that saturates the writer (none: readers closed too)"},
    {"help", 'h', NULL, K_HELP, 0, 0, 0, 0, NULL, NULL},
};
#define NOPTIONS (sizeof options / sizeof options[0])
#define HELP_COL 23 /* where the help text starts */

static void usage(FILE *f)
{
    fprintf(f, "usage: gim-bench [options]\n");
    for (size_t i = 0; i < NOPTIONS; i++) {
        const struct optdef *d = &options[i];
        char head[64];
        if (!d->help)
            continue;
        int n = d->short_name ? snprintf(head, sizeof head, "-%c, --%s", d->short_name, d->name)
                              : snprintf(head, sizeof head, "--%s", d->name);
        if (d->meta)
            snprintf(head + n, sizeof head - (size_t)n, " %s", d->meta);
        fprintf(f, "  %-*s", HELP_COL - 2, head);
        for (const char *p = d->help; *p; p++) {
            fputc(*p, f);
            if (*p == '\n')
                fprintf(f, "%*s", HELP_COL, "");
        }
        fputc('\n', f);
    }
}

/* Applies option d with value a to o; false when the value is bad. */
static bool apply(const struct optdef *d, struct opts *o, const char *a)
{
    char *field = (char *)o + d->off;
    int64_t v;
    switch (d->kind) {
    case K_STR:
        *(const char **)(void *)field = a;
        return true;
    case K_INT:
        if (!parse_i64(a, d->min, d->max, &v))
            return false;
        *(int *)(void *)field = (int)v;
        return true;
    case K_I64:
        return parse_i64(a, d->min, d->max, (int64_t *)(void *)field);
    case K_SECS:
        return parse_secs(a, d->dmin, (double *)(void *)field);
    case K_FLAG:
        *(bool *)(void *)field = true;
        return true;
    case K_FN:
        return d->fn(o, a);
    case K_HELP:
        return true;
    }
    return false;
}

/* The checks between options, once all are read. 0 or 2 (said on stderr). */
static int check_args(struct opts *o)
{
    if (o->preload_direct && !o->wl_given)
        o->nwl = 0;
    if (!o->groups)
        o->groups = o->users / o->group_size > 0 ? o->users / o->group_size : 1;
    const char *need_db = NULL;
    for (int i = 0; i < o->nwl; i++)
        if (o->wl[i] == WL_GROUP)
            need_db = "-w group";
    if (o->preload_direct)
        need_db = "--preload-direct";
    if (o->report_storage)
        need_db = "--report-storage";
    if (need_db && !o->db) {
        fprintf(stderr, "gim-bench: %s needs --db PATH (the service's SQLite file)\n", need_db);
        return 2;
    }
    if (o->preload_direct && (!o->preload || o->nwl || o->limits)) {
        fprintf(stderr, "gim-bench: --preload-direct needs --preload N and runs alone: restart "
                        "gim-logic afterwards, then run the workloads in a second invocation\n");
        return 2;
    }
    if (!o->readers)
        o->readers = o->conc / 4 > 0 ? o->conc / 4 : 1;
    for (int i = 0; i < o->nwl; i++)
        if (o->wl[i] == WL_RW && o->readers >= o->conc) {
            fprintf(stderr,
                    "gim-bench: -w rw needs --readers R below -c C (%d), so that some "
                    "contexts send\n",
                    o->conc);
            return 2;
        }
    if (o->read_rate && o->rate) {
        fprintf(stderr, "gim-bench: --read-rate paces -w rw's readers alone; it excludes --rate\n");
        return 2;
    }
    for (int i = 0; o->read_rate && i < o->nwl; i++)
        if (o->wl[i] != WL_RW) {
            fprintf(stderr, "gim-bench: --read-rate applies to -w rw only (got -w %s)\n",
                    bench_wl_names[o->wl[i]]);
            return 2;
        }
    for (int i = 0; i < o->nwl; i++)
        if (o->wl[i] == WL_GROUP && o->group_size > o->users) {
            fprintf(stderr, "gim-bench: --group-size %lld is larger than --users %lld\n",
                    (long long)o->group_size, (long long)o->users);
            return 2;
        }
    return 0;
}

int bench_parse_args(struct opts *o, int argc, char **argv)
{
    struct option longopts[NOPTIONS + 1];
    char shorts[2 * NOPTIONS + 1];
    size_t ns = 0;
    for (size_t i = 0; i < NOPTIONS; i++) {
        const struct optdef *d = &options[i];
        /* getopt returns the short letter, or 256 + the table index. */
        int val = d->short_name ? d->short_name : 256 + (int)i;
        longopts[i] =
            (struct option){d->name, d->meta ? required_argument : no_argument, NULL, val};
        if (d->short_name) {
            shorts[ns++] = d->short_name;
            if (d->meta)
                shorts[ns++] = ':';
        }
    }
    longopts[NOPTIONS] = (struct option){NULL, 0, NULL, 0};
    shorts[ns] = '\0';
    *o = (struct opts){
        .url = "tcp://127.0.0.1:7400",
        .gateway = "gim-bench",
        .nwl = 1,
        .wl = {WL_SEND},
        .conc = 64,
        .users = 1000,
        .user_base = 1,
        .duration = 10,
        .warmup = 1,
        .payload = 100,
        .group_size = 500,
        .group_base = 1000000000,
        .mix_sync = 70,
        .mix_send = 25,
        .mix_ack = 5,
        .read_sync = 50,
        .read_hb = 50,
        .page_size = 50,
        .preload_max = 3600,
        .timeout_ms = 5000,
        .check_every = 10,
        .seed = 1,
    };
    opterr = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, shorts, longopts, NULL)) != -1) {
        const struct optdef *d = NULL;
        for (size_t i = 0; i < NOPTIONS && !d; i++)
            if (opt == (options[i].short_name ? options[i].short_name : 256 + (int)i))
                d = &options[i];
        if (!d) {
            fprintf(stderr, "gim-bench: unknown option or missing value: %s\n", argv[optind - 1]);
            return 2;
        }
        if (d->kind == K_HELP) {
            usage(stdout);
            return 1;
        }
        if (!apply(d, o, optarg)) {
            fprintf(stderr, "gim-bench: bad value \"%s\" for --%s (see --help)\n", optarg, d->name);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "gim-bench: unexpected argument %s\n", argv[optind]);
        return 2;
    }
    return check_args(o);
}
