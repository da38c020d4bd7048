/*
 * gim-bench: a load generator that plays the gateways of gim-logic.
 *
 * It signs in U users (one device each, device id = user id) with tokens it
 * mints itself (auth_mint, --secret or $GIM_TOKEN_SECRET), then drives one
 * workload at a time for T seconds through ONE nng REQ socket with C
 * contexts. Each context is a small state machine on its own aio (SEND ->
 * RECV -> build the next request), as in nng's async demo: a request's
 * latency runs from the moment it is handed to nng to the moment its reply's
 * callback runs, with no thread hand-off in between to blur it.
 *
 * Only EC_OK replies count as operations, and a sample of them is decoded and
 * checked (check_send/check_sync): a server that answers fast but wrongly
 * fails the run instead of winning it.
 *
 * The tool is split by job, all behind this header:
 *   gim-bench.c  main: the order of the phases, the exit status;
 *   bench_run.c  requests and runs: the contexts, building and checking
 *                requests, timing, sign-in, percentiles;
 *   bench_db.c   database and limits: seqs and groups read from/written to
 *                --db, --preload-direct, storage, the raw nng echo and the
 *                raw SQLite group commit (--limits);
 *   bench_cli.c  output and arguments: the option table, usage, and the
 *                machine-readable lines on stdout.
 *
 * stdout carries only machine-readable lines (PRELOAD, RESULT, LIMIT,
 * STORAGE, SERVER); progress and errors go to stderr. Exit status: 0 when
 * every workload got EC_OK replies and no check failed, 1 otherwise, 2 for
 * bad usage. docs/benchmarks.md has the commands and the measured numbers.
 *
 * Ownership: main() owns every allocation through struct bench and struct
 * result; nng callbacks only touch their own context's state plus atomics.
 */
#ifndef GIM_BENCH_H
#define GIM_BENCH_H

#include <nng/nng.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "err.h"

#define MAX_WORKLOADS 8
#define CODE_SLOTS    10 /* wire codes 0..8, then "any other" */

enum op { OP_SIGNIN, OP_SEND, OP_GROUP, OP_SYNC, OP_ACK, OP_ECHO, OP_HEARTBEAT, OP_COUNT };
extern const char *const bench_op_names[OP_COUNT];

enum workload { WL_SIGNIN, WL_SEND, WL_GROUP, WL_SYNC, WL_MIXED, WL_RW, WL_ECHO };
extern const char *const bench_wl_names[];

/* The command line (bench_cli.c); main() owns it. */
struct opts {
    const char *url, *db, *secret, *gateway, *echo_url;
    enum workload wl[MAX_WORKLOADS];
    int nwl;
    bool wl_given; /* -w was given (else --preload-direct runs no workload) */
    int conc;
    int64_t users, user_base;
    double duration, warmup;
    int payload;
    int64_t group_size, groups, group_base;
    int mix_sync, mix_send, mix_ack;
    int readers;            /* rw: contexts that read; 0 = C / 4 */
    int read_sync, read_hb; /* rw: --read-mix, syncs : heartbeats */
    bool sync_random;       /* --sync-from random: a random seq inside the history */
    int page_size;
    int64_t preload;
    bool preload_direct;
    double preload_max;
    bool limits, report_storage;
    int64_t server_pid;
    int timeout_ms;
    int check_every;
    int64_t seed;
    int64_t rate; /* --rate: requests per second offered (an open loop); 0 = closed loop */
    /* --read-rate: -w rw's readers offered this many requests per second in all (an open
     * loop) while its senders stay a closed loop; 0 = the readers are a closed loop too */
    int64_t read_rate;
};

/* Latencies in ns of EC_OK replies completed inside the window. */
struct lats {
    uint64_t *v;
    size_t n, cap;
};

struct stats {
    struct lats lat[OP_COUNT]; /* by operation */
    uint64_t ok, ok_op[OP_COUNT];
    uint64_t code[CODE_SLOTS]; /* non-OK replies inside the window, by wire code */
    uint64_t timeouts, nng_err;
    uint64_t checked, check_failed;
    uint64_t page_msgs, pages; /* checked sync replies: messages returned */
    uint64_t from_sum;         /* checked sync replies: sum of the seqs they started from */
};

/*
 * One REQ socket and its (re-creatable) dialers, one per URL of --url (a
 * comma list: several gim-logic instances on one database; nng's REQ
 * spreads the requests over every connected pipe).
 */
#define BENCH_MAX_URLS 8
struct link {
    nng_socket sock;
    bool open;
    int n_urls;
    nng_dialer dialer[BENCH_MAX_URLS];
    bool has_dialer[BENCH_MAX_URLS];
    char url[BENCH_MAX_URLS][256];
};

/* One invocation: its options and per-user state; main() owns it and frees it. */
struct bench {
    struct opts o;
    const char *secret;
    char **tokens;        /* per user index */
    int64_t *last_seq;    /* per user index: user_seq when the phase started */
    int64_t *sender_seq;  /* per user index: last seq in a checked own-send reply */
    bool partition;       /* senders split among contexts, so each sender is serialized */
    int64_t content_text; /* text length so an encoded Text is about --payload bytes */
    atomic_llong next_rid;
    int64_t signed_in_ns; /* 0 = not signed in */
    atomic_int reported;
};

/* One measured workload or limit; bench_result_free() frees its samples. */
struct result {
    enum workload wl;
    double secs;
    struct stats st; /* merged, lat[] sorted */
    struct lats all; /* every operation's latencies, sorted */
    double p50, p99, p999;
    uint64_t errors;
    uint64_t ok_all;     /* EC_OK replies of the whole run, warmup included */
    double server_cpu_s; /* CPU time (user + system) the service used during the run; 0 = unknown */
    /* The bench's own CPU time and the run's wall time, warmup included: with server_cpu_s they
     * say how many of the machine's cores the two used, the test of a CPU-bound run. */
    double bench_cpu_s;
    double wall_all_s;
    /* --rate: the most requests that were due and waited for a free context at once (0: the
     * contexts always kept up; a growing queue means the service did not). */
    int64_t backlog_max;
    /* --rate: how many times the pacer thread woke up (it sleeps while every context is busy,
     * so a run whose contexts never go idle wakes it about ten times a second, at its timeout). */
    int64_t pacer_wakes;
};

/* ---------------------------------------------- bench_run.c: requests and runs */

int64_t bench_now_ns(void);  /* CLOCK_MONOTONIC */
int64_t bench_wall_ms(void); /* CLOCK_REALTIME */
/* xorshift64* in *s: a number in 0..n-1 (0 when n <= 0). */
int64_t bench_rnd_below(uint64_t *s, int64_t n);
/* The user id of user index idx. */
int64_t bench_uid(const struct bench *b, int64_t idx);
/* The user index of member j of bench group g: (g * G + j) % U. */
int64_t bench_member(const struct bench *b, int64_t g, int64_t j);
/*
 * The content of one text message: an encoded pb.Text whose text starts with
 * rid in hex. *buf (capacity *cap, grown as needed, the caller frees it)
 * holds *len bytes.
 */
gim_err bench_make_content(const struct bench *b, int64_t rid, uint8_t **buf, size_t *cap,
                           size_t *len);
/* Largest text length whose encoded Text fits in payload bytes. */
int64_t bench_text_len(int payload);

/* Opens l (a REQ socket dialing each URL of the comma list urls, non-blocking);
 * bench_link_close() it, on failure too. */
gim_err bench_link_open(struct link *l, const char *url);
void bench_link_close(struct link *l);

/*
 * Runs workload wl on link with C contexts. Time-bound runs measure from
 * warmup to duration; ok_target > 0 runs until that many EC_OK replies (or
 * duration). todo/ntodo: users to sign in (WL_SIGNIN), todo_ok[i] set for
 * each that did. Fills res if not NULL (the caller bench_result_free()s it).
 */
gim_err bench_run_workload(struct bench *b, struct link *l, enum workload wl, double warmup,
                           double duration, int64_t ok_target, const int64_t *todo, int64_t ntodo,
                           uint8_t *todo_ok, struct result *res);
/* Signs in every user (once more for those that failed); GIM_EUNAUTH if any stay out. */
gim_err bench_sign_in_all(struct bench *b, struct link *l);

void bench_push_latency(struct lats *s, uint64_t ns);
/* The q-quantile (0..1) of the sorted s, in ms; 0 when empty. */
double bench_pct_ms(const struct lats *s, double q);
/* Sorts the latencies of each operation and of all together; the percentiles, the errors. */
void bench_finish_result(struct result *res);
void bench_result_free(struct result *res);
/* EC_OK replies per second of r. */
double bench_per_s(const struct result *r);

/* ------------------------------------------------ bench_db.c: database and limits */

/* Reads user_seq of every bench user from path into last (zero where the user has none). */
gim_err bench_load_seqs(const struct bench *b, const char *path, int64_t *last);
/* (Re)creates the bench's groups in --db: member j of group g is bench_member(b, g, j). */
gim_err bench_setup_groups(const struct bench *b);
/* True when something answers a heartbeat at every URL of the comma list urls. */
bool bench_service_answers(const char *url, int timeout_ms, int attempts);
/* --preload N --preload-direct (see bench_db.c); prints the PRELOAD line. */
gim_err bench_preload_direct(struct bench *b);
/* Prints the STORAGE line of the database at path. */
gim_err bench_report_storage(const char *path);
/* --limits: a raw nng REQ/REP echo with C contexts and a send's bytes. */
gim_err bench_nng_limit(struct bench *b, struct result *res);
/* --limits: raw SQLite group commits of C sends on a copy of --db. */
gim_err bench_sqlite_limit(struct bench *b, struct result *res);

/* ----------------------------------------------- bench_cli.c: output and arguments */

/* Fills o from argv. Returns 0 to run, 1 after --help, 2 on bad usage (said on stderr). */
int bench_parse_args(struct opts *o, int argc, char **argv);
/* The RESULT line of r; nng/sql (or NULL): the limits it is compared with. */
void bench_print_result(const struct bench *b, const struct result *r, const struct result *nng,
                        const struct result *sql);
/* The LIMIT line of r (kind "nng" or "sqlite"). */
void bench_print_limit(const char *kind, const struct bench *b, const struct result *r);
/* The SERVER line: the memory of process pid from /proc/PID/status. */
void bench_print_server(long pid);
/* CPU seconds (user + system, all threads) process pid has used, from /proc/PID/stat; -1 if
 * unknown. */
double bench_server_cpu_s(long pid);
/* This process's CPU time (user + system, every thread) in seconds. */
double bench_self_cpu_s(void);

#endif
