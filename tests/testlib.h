/*
 * testlib: what the integration tests share. tl_start() runs the real
 * gim-logic binary on a fresh directory (its own SQLite file, ipc:// sockets
 * and config), and the tl_* calls talk to it over real nng sockets through
 * gimclient, the same code gimctl uses.
 *
 * Backends: with GIM_TEST_BACKEND=postgres in the environment (ctest's "pg"
 * registrations set it), tl_start runs the service on a fresh PostgreSQL
 * database of its own (pgtestlib: pgt_create_db) instead of a SQLite file,
 * tl_query_int/tl_exec on s->db run on that database, and tl_cleanup drops
 * it. tl_start_shared starts another instance on the same database (the
 * multi-instance tests). Tests that use SQLite itself (PRAGMAs, the file,
 * the sqlite3 CLI) check tl_pg() and skip what does not apply.
 *
 * Functions that return pointers return memory the caller owns (Outputs:
 * pb__output__free_unpacked; strings: free).
 */
#ifndef GIM_TESTLIB_H
#define GIM_TESTLIB_H

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdint.h>
#include <sys/types.h>

#include "gimclient.h"
#include "pgtestlib.h"

#define TL_SECRET "integration-test-secret"

struct tl_server {
    pid_t pid;
    char dir[128];
    char url[192];     /* REP, ipc:// */
    char pub_url[192]; /* PUB, ipc:// */
    char db[192];
    char config[192];
    char log[192];
    char extra[2048];         /* extra YAML given to tl_start, kept for restarts */
    char listen_extra[256];   /* a second listen URL (tl_start_listen) */
    char db_extra[256];       /* more keys of the database mapping (tl_reconfigure) */
    char http[96];            /* the /metrics and /healthz URL; "" (the default) = off */
    char pg_url[PGT_URL_MAX]; /* postgres: the database's URL; "" on SQLite */
    bool pg_shared;           /* postgres: started by tl_start_shared (the first one drops it) */
};

/* The tests run on PostgreSQL (GIM_TEST_BACKEND=postgres). */
bool tl_pg(void);

/*
 * Starts another instance like first (same extra YAML) on first's database:
 * on PostgreSQL the same database, with sockets, config and log of its own
 * (several gim-logic on one database). Only on PostgreSQL (a SQLite file has
 * one gim-logic): skips the test otherwise.
 */
void tl_start_shared(struct tl_server *s, const struct tl_server *first, const char *extra_yaml);

/* Two instances on one PostgreSQL database (tl_start, then tl_start_shared), for suites that
 * run only there: skips the test on SQLite. tl_cleanup_pair() stops and removes both (b
 * first: a drops the database) and zeroes them for the next test. */
void tl_start_pair(struct tl_server *a, struct tl_server *b, const char *extra_yaml);
void tl_cleanup_pair(struct tl_server *a, struct tl_server *b);

/* Runs sql (no result) on s's database, either backend; fails the test on error. */
void tl_exec(const struct tl_server *s, const char *sql);

/* Writes group group_id straight into s's database (no request, no notice): members[0] owns
 * it, and every one of members[0..n) is a member with the role 'member'. */
void tl_make_group(const struct tl_server *s, int64_t group_id, const int64_t *members, int n);

/* Writes a config (base + extra_yaml lines) into a new temp dir, starts the
 * binary and waits until it answers. Aborts the test on failure. */
void tl_start(struct tl_server *s, const char *extra_yaml);

/* Like tl_start, also listening on listen_url (e.g. a tls+tcp:// URL). */
void tl_start_listen(struct tl_server *s, const char *listen_url, const char *extra_yaml);

/* A free TCP port on 127.0.0.1 (bound and released; fine for tests). */
int tl_free_port(void);

/* Whether the file at path holds needle anywhere (a raw byte search: erased content must be
 * gone from gim.db and gim.db-wal); a missing file holds nothing. */
bool tl_file_has(const char *path, const char *needle);
/*
 * Whether needle is in the SQLite file db or in its WAL (db-wal). The WAL is
 * read first: a checkpoint copies a page into the database file before the WAL
 * is cut (a scrub) or written over, so text in either file for the whole call
 * is found; reading the database file first could miss it while it moves.
 */
bool tl_db_files_have(const char *db, const char *needle);

/* True when no one can take db's write lock right now. */
bool tl_write_locked(const char *db);

/*
 * Another process holding db's write lock, as an operator would: the sqlite3 CLI in
 * BEGIN <mode> (IMMEDIATE or EXCLUSIVE) with one write, open until the caller writes
 * ROLLBACK/COMMIT and pcloses the returned pipe (the caller owns it). Returns only once the
 * CLI itself reports that it holds the lock. Skips the test when the sqlite3 CLI is missing.
 */
FILE *tl_hold_write_lock(const char *db, const char *mode);

/* Starts the binary again on the same directory and config. */
void tl_restart(struct tl_server *s);

/* Restarts s (its config rewritten, tl_reconfigure) with /metrics and /healthz on a free
 * port, and waits until that HTTP listener accepts: it starts after the REP socket
 * tl_restart waits for. Returns the port. */
int tl_enable_http(struct tl_server *s);

/* Rewrites the config for the next tl_restart: database_keys go into the
 * database mapping (e.g. "busy_timeout_ms: 300"), extra_yaml replaces the
 * extra YAML; NULL means none. */
void tl_reconfigure(struct tl_server *s, const char *database_keys, const char *extra_yaml);

/* SIGTERM and wait; returns the exit status (or 128+signal). */
int tl_stop(struct tl_server *s);

/* SIGKILL and reap. */
void tl_kill9(struct tl_server *s);

/* Removes the directory (call after stopping). */
void tl_cleanup(struct tl_server *s);

/* A client for s (timeout 5 s, 3 attempts). */
struct gim_client *tl_client(const struct tl_server *s);

/* A token for (user, device) valid for ttl seconds (negative = already expired). */
char *tl_token(int64_t user, int64_t device, int64_t ttl);

/* Sends one request; aborts the test when no reply comes. */
Pb__Output *tl_call(struct gim_client *c, const struct client_conn *conn, int type,
                    int64_t request_id, const ProtobufCMessage *data);

/* Signs (user, device) in at gateway and fills *conn; returns the reply code. */
int tl_signin(struct gim_client *c, struct client_conn *conn, int64_t user, int64_t device,
              const char *gateway);

/* Like tl_call but returns only the code, freeing the reply. */
int tl_code(struct gim_client *c, const struct client_conn *conn, int type, int64_t request_id,
            const ProtobufCMessage *data);

/* Runs `sqlite3 DB SQL` style queries in-process: the first column of the first row as int64
 * (-1 without a row). On PostgreSQL db is a tl_server's db path and the query runs on its
 * database. */
int64_t tl_query_int(const char *db, const char *sql);

/* tl_query_int with the query formatted printf-style (numbers only: never quote strings in). */
int64_t tl_query_intf(const char *db, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Crash tests' senders: a thread each, sending 1:1 messages with request ids 1, 2, ...
 * through its own client (short timeouts, many attempts: a request lost in a crash is resent
 * with the same bytes) until stopped, recording every acknowledged send. tl_senders_start
 * signs n devices in through c (users 10.., devices 100.., each sending to the next user)
 * and starts the threads on s; tl_senders_stop joins them; tl_senders_check asserts on s's
 * database that every acknowledged send is stored once, at the seq its reply named, with
 * both copies; that every sender's inbox is 1..N = user_seq; that no session was lost (no
 * EC_UNAUTHENTICATED) and no answer but OK or EC_UNAVAILABLE came; and returns how many
 * sends were acknowledged (at least one, or it fails). ws must stay alive until stopped.
 */
#define TL_SENDER_MAX 4096
struct tl_sender {
    const char *url;
    int64_t user, device, to;
    int64_t ids[TL_SENDER_MAX], seqs[TL_SENDER_MAX]; /* acknowledged sends */
    int n, unauth, other;
    _Atomic bool stop;
    pthread_t thread;
};
void tl_senders_start(const struct tl_server *s, struct gim_client *c, struct tl_sender *ws, int n);
void tl_senders_stop(struct tl_sender *ws, int n);
int tl_senders_check(const struct tl_server *s, const struct tl_sender *ws, int n);

/* Sends raw bytes (not a GatewayRequest) and returns the decoded Output. */
Pb__Output *tl_call_raw(struct gim_client *c, const void *buf, size_t len);

#endif
