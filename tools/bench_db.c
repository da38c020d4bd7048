/*
 * gim-bench, database and limits: what the bench reads from and writes to
 * the service's SQLite file (--db) directly, and the two ceilings --limits
 * measures: a raw nng REQ/REP echo and a raw SQLite group commit. See
 * bench.h for the whole tool.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench.h"
#include "config.h"
#include "gimclient.h"
#include "message.h"
#include "proto.h"
#include "seq.h"
#include "store.h"
#include "storage/sqlite_int.h"

#define DIRECT_BATCH 10000 /* messages per transaction of --preload-direct */

/* A 1:1 text between two different random users (their indexes in *si, *ri). */
static struct message_new random_pair(const struct bench *b, uint64_t *rng, int64_t now,
                                      int64_t *si, int64_t *ri)
{
    *si = bench_rnd_below(rng, b->o.users);
    *ri = bench_rnd_below(rng, b->o.users - 1);
    if (*ri >= *si)
        (*ri)++;
    return (struct message_new){
        .sender_type = PB__SENDER_TYPE__ST_USER,
        .sender_id = bench_uid(b, *si),
        .sender_device_id = bench_uid(b, *si),
        .receiver_type = PB__RECEIVER_TYPE__RT_USER,
        .receiver_id = bench_uid(b, *ri),
        .message_type = PB__MESSAGE_TYPE__MT_TEXT,
        .send_time = now,
    };
}

/* The rows a 1:1 send stores: the message and its two inbox entries. */
static gim_err store_pair(struct store_conn *db, const struct message_new *m, int64_t *out_id)
{
    int64_t id = 0;
    gim_err e = message_insert(db, m, &id);
    *out_id = id;
    if (e == GIM_OK)
        e = message_inbox_add(db, m->sender_id, m->sender_seq, id);
    if (e == GIM_OK)
        e = message_inbox_add(db, m->receiver_id, m->receiver_seq, id);
    return e;
}

/* The first SQL value of a one-row query on db, or -1. */
static int64_t query_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* ------------------------------------------------------------- database */

static const char SQL_GROUP_CLEAR[] = "DELETE FROM group_member WHERE group_id = ?1";
static const char SQL_GROUP_UPSERT[] =
    "INSERT INTO chat_group (group_id, name, owner_id, created_at) VALUES (?1, ?2, ?3, ?4) "
    "ON CONFLICT (group_id) DO UPDATE SET owner_id = excluded.owner_id";
static const char SQL_MEMBER_ADD[] =
    "INSERT INTO group_member (group_id, user_id, role, joined_at) VALUES (?1, ?2, ?3, ?4)";
/* What a 1:1 send with a request id records (handle_message.c, SQL_IDEM_PUT). */
static const char SQL_IDEM_ADD[] =
    "INSERT INTO idempotency (device_id, request_id, message_id) VALUES (?1, ?2, ?3)";
static const char SQL_PAGE_SIZE[] = "PRAGMA page_size";
static const char SQL_PAGE_COUNT[] = "PRAGMA page_count";
static const char SQL_FREELIST[] = "PRAGMA freelist_count";
static const char SQL_MESSAGES[] = "SELECT count(*) FROM message";
static const char SQL_INBOX[] = "SELECT count(*) FROM inbox";

static gim_err open_db(const char *path, bool rw, sqlite3 **out)
{
    int flags = rw ? SQLITE_OPEN_READWRITE : SQLITE_OPEN_READONLY;
    if (sqlite3_open_v2(path, out, flags, NULL) != SQLITE_OK) {
        fprintf(stderr, "gim-bench: cannot open %s: %s\n", path, sqlite3_errmsg(*out));
        sqlite3_close(*out);
        *out = NULL;
        return GIM_EIO;
    }
    sqlite3_busy_timeout(*out, 10000);
    return GIM_OK;
}

/* Reads the last seq of every bench user into last (zero where the user has none). */
gim_err bench_load_seqs(const struct bench *b, const char *path, int64_t *last)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    gim_err e;
    memset(last, 0, (size_t)b->o.users * sizeof *last);
    if ((e = open_db(path, false, &db)) != GIM_OK)
        return e;
    /* One user at a time, as the service loads a counter: two seeks each. */
    if (sqlite3_prepare_v2(db, SQL_USER_LAST_SEQ, -1, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, "gim-bench: %s: %s (is it a gim-logic database?)\n", path,
                sqlite3_errmsg(db));
        e = GIM_ESCHEMA;
        goto out;
    }
    int rc = SQLITE_ROW;
    for (int i = 0; i < b->o.users && rc == SQLITE_ROW; i++) {
        sqlite3_bind_int64(st, 1, b->o.user_base + i);
        if ((rc = sqlite3_step(st)) == SQLITE_ROW)
            last[i] = sqlite3_column_int64(st, 0);
        sqlite3_reset(st);
    }
    if (rc != SQLITE_ROW) {
        fprintf(stderr, "gim-bench: reading the users' seqs: %s\n", sqlite3_errmsg(db));
        e = GIM_EIO;
    }
out:
    sqlite3_finalize(st);
    sqlite3_close(db);
    return e;
}

/* (Re)creates the bench's groups on the live database: member j of group g is user (g*G+j) % U. */
gim_err bench_setup_groups(const struct bench *b)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *clear = NULL, *grp = NULL, *mem = NULL;
    gim_err e;
    int rc = SQLITE_OK;
    int64_t now = bench_wall_ms();
    if ((e = open_db(b->o.db, true, &db)) != GIM_OK)
        return e;
    if (sqlite3_prepare_v2(db, SQL_GROUP_CLEAR, -1, &clear, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, SQL_GROUP_UPSERT, -1, &grp, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, SQL_MEMBER_ADD, -1, &mem, NULL) != SQLITE_OK ||
        sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        goto fail;
    for (int64_t g = 0; g < b->o.groups; g++) {
        int64_t gid = b->o.group_base + g;
        sqlite3_bind_int64(clear, 1, gid);
        rc = sqlite3_step(clear);
        sqlite3_reset(clear);
        if (rc != SQLITE_DONE)
            goto rollback;
        sqlite3_bind_int64(grp, 1, gid);
        sqlite3_bind_text(grp, 2, "gim-bench", -1, SQLITE_STATIC);
        sqlite3_bind_int64(grp, 3, bench_uid(b, bench_member(b, g, 0)));
        sqlite3_bind_int64(grp, 4, now);
        rc = sqlite3_step(grp);
        sqlite3_reset(grp);
        if (rc != SQLITE_DONE)
            goto rollback;
        for (int64_t j = 0; j < b->o.group_size; j++) {
            sqlite3_bind_int64(mem, 1, gid);
            sqlite3_bind_int64(mem, 2, bench_uid(b, bench_member(b, g, j)));
            sqlite3_bind_text(mem, 3, j == 0 ? "owner" : "member", -1, SQLITE_STATIC);
            sqlite3_bind_int64(mem, 4, now);
            rc = sqlite3_step(mem);
            sqlite3_reset(mem);
            if (rc != SQLITE_DONE)
                goto rollback;
        }
    }
    if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        goto rollback;
    fprintf(stderr, "gim-bench: %lld groups of %lld members ready (ids %lld..%lld)\n",
            (long long)b->o.groups, (long long)b->o.group_size, (long long)b->o.group_base,
            (long long)(b->o.group_base + b->o.groups - 1));
    goto out;
rollback:
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
fail:
    fprintf(stderr, "gim-bench: cannot create groups in %s: %s\n", b->o.db, sqlite3_errmsg(db));
    e = GIM_EIO;
out:
    sqlite3_finalize(clear);
    sqlite3_finalize(grp);
    sqlite3_finalize(mem);
    sqlite3_close(db);
    return e;
}

/* A writer connection through the service's own store code (same pragmas, same migrations). */
static gim_err open_store(const char *path, struct store_conn **out)
{
    struct gim_config cfg;
    char err[256] = "";
    gim_err e = config_load(NULL, &cfg, err, sizeof err);
    if (e == GIM_OK) {
        free(cfg.database.path);
        if (!(cfg.database.path = strdup(path)))
            e = GIM_ENOMEM;
    }
    if (e == GIM_OK)
        e = store_open(&cfg, STORE_WRITER, out, err, sizeof err);
    if (e != GIM_OK)
        fprintf(stderr, "gim-bench: cannot open %s: %s\n", path, err);
    config_free(&cfg);
    return e;
}

/* True when something answers a heartbeat at url: the service is running. */
static bool answers(const char *url, int timeout_ms, int attempts)
{
    struct gim_client *c = NULL;
    Pb__Output *out = NULL;
    struct client_conn conn = {.gateway_id = "gim-bench-probe"};
    if (client_open(&c, url, timeout_ms, attempts) != GIM_OK)
        return false;
    bool up = client_request(c, &conn, PB__PACKAGE_TYPE__PT_HEARTBEAT, 1, NULL, &out) == GIM_OK;
    if (out)
        pb__output__free_unpacked(out, NULL);
    client_close(c);
    return up;
}

bool bench_service_answers(const char *urls, int timeout_ms, int attempts)
{
    for (const char *p = urls; *p;) {
        char url[256];
        size_t n = strcspn(p, ",");
        snprintf(url, sizeof url, "%.*s", (int)(n < sizeof url ? n : sizeof url - 1), p);
        if (!answers(url, timeout_ms, attempts))
            return false;
        p += n + (p[n] == ',');
    }
    return true;
}

/* The idempotency record of a send by device (= user) sender with request id rid. */
static gim_err remember_request(struct store_conn *db, int64_t sender, int64_t rid,
                                int64_t message_id)
{
    return STORE_RUN(db, SQL_IDEM_ADD, NULL, STORE_INT(sender), STORE_INT(rid),
                     STORE_INT(message_id));
}

/*
 * The devices that sent the preload (device id = user id), signed out, as the
 * protocol preload's sign-ins leave them: the idempotency sweep prunes the
 * records of a device that has no row (an erased user's, migrations/0009).
 */
static const char SQL_DEVICES_ADD[] =
    "INSERT OR IGNORE INTO device (device_id, user_id, created_at, updated_at) "
    "WITH RECURSIVE k(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM k WHERE i + 1 < ?1 + ?2) "
    "SELECT i, i, ?3, ?3 FROM k";

static gim_err add_devices(struct store_conn *db, int64_t base, int64_t users, int64_t now)
{
    return STORE_RUN(db, SQL_DEVICES_ADD, NULL, STORE_INT(base), STORE_INT(users), STORE_INT(now));
}

/*
 * --preload N --preload-direct: stores N 1:1 messages straight into the
 * SQLite file with the service's own code (message_insert, message_inbox_add,
 * seq counters taken as the writer takes them) plus the
 * idempotency record a send with a request id leaves, and the senders' device
 * rows: exactly the rows the protocol preload writes, with the same content (an encoded Text
 * starting with the request id) and request ids from the same clock. The pairs come from --seed
 * alone, so the same command builds the same rows (times and request ids aside). At the end the WAL
 * is checkpointed and truncated, so the database is the one file and can be copied as it is. The
 * service must be stopped: it caches seq counters in memory.
 */
gim_err bench_preload_direct(struct bench *b)
{
    struct store_conn *db = NULL;
    struct seq *seq = NULL;
    uint8_t *content = NULL;
    size_t cap = 0, clen = 0;
    uint64_t rng = b->o.seed + 7;
    gim_err e;
    bool in_tx = false;
    int64_t t0 = bench_now_ns(), now = bench_wall_ms(), done = 0;

    if (bench_service_answers(b->o.url, 500, 1)) {
        fprintf(stderr,
                "gim-bench: gim-logic answers at %s: stop it before --preload-direct "
                "(it keeps seq counters in memory), then restart it afterwards\n",
                b->o.url);
        return GIM_EUNAVAILABLE;
    }
    if ((e = open_store(b->o.db, &db)) != GIM_OK)
        goto out;
    if ((e = seq_open(&seq)) != GIM_OK)
        goto out;
    while (done < b->o.preload) {
        if ((e = store_exec(db, "BEGIN IMMEDIATE")) != GIM_OK)
            goto out;
        in_tx = true;
        now = bench_wall_ms(); /* the writer's clock: one time per transaction */
        int64_t end = done + DIRECT_BATCH < b->o.preload ? done + DIRECT_BATCH : b->o.preload;
        for (; done < end; done++) {
            int64_t si, ri;
            struct message_new m = random_pair(b, &rng, now, &si, &ri);
            int64_t rid = atomic_fetch_add(&b->next_rid, 1), id = 0;
            if ((e = bench_make_content(b, rid, &content, &cap, &clen)) != GIM_OK ||
                (e = seq_next(seq, db, SEQ_USER, m.sender_id, &m.sender_seq)) != GIM_OK ||
                (e = seq_next(seq, db, SEQ_USER, m.receiver_id, &m.receiver_seq)) != GIM_OK)
                goto out;
            m.content = content;
            m.content_len = clen;
            if ((e = store_pair(db, &m, &id)) != GIM_OK ||
                (e = remember_request(db, m.sender_id, rid, id)) != GIM_OK)
                goto out;
        }
        if ((e = seq_flush(seq, db)) != GIM_OK || (e = store_exec(db, "COMMIT")) != GIM_OK)
            goto out;
        in_tx = false;
        seq_committed(seq);
        if (done % (DIRECT_BATCH * 20) == 0)
            fprintf(stderr, "gim-bench: preload: %lld of %lld\n", (long long)done,
                    (long long)b->o.preload);
    }
    if ((e = add_devices(db, b->o.user_base, b->o.users, now)) != GIM_OK ||
        (e = store_exec(db, "PRAGMA wal_checkpoint(TRUNCATE)")) != GIM_OK)
        goto out;
    double secs = (double)(bench_now_ns() - t0) / 1e9;
    printf("PRELOAD mode=direct messages=%lld seconds=%.2f messages_per_s=%.0f\n", (long long)done,
           secs, (double)done / (secs > 0 ? secs : 1));
    fflush(stdout);
out:
    if (in_tx) {
        store_exec(db, "ROLLBACK");
        seq_reset(seq);
        fprintf(stderr, "gim-bench: preload failed (%s); the last batch was rolled back\n",
                gim_err_name(e));
    }
    seq_close(seq);
    store_close(db);
    free(content);
    return e;
}

static int64_t file_size(const char *path, const char *suffix)
{
    char p[1024];
    struct stat sb;
    snprintf(p, sizeof p, "%s%s", path, suffix);
    return stat(p, &sb) == 0 ? (int64_t)sb.st_size : 0;
}

/* Bytes the database uses (pages in use, WAL frames included) per stored message. */
gim_err bench_report_storage(const char *path)
{
    sqlite3 *db = NULL;
    gim_err e = open_db(path, false, &db);
    if (e != GIM_OK)
        return e;
    int64_t psize = query_int(db, SQL_PAGE_SIZE), pages = query_int(db, SQL_PAGE_COUNT);
    int64_t freel = query_int(db, SQL_FREELIST), msgs = query_int(db, SQL_MESSAGES);
    int64_t inbox = query_int(db, SQL_INBOX);
    sqlite3_close(db);
    if (psize <= 0 || pages < 0 || msgs < 0) {
        fprintf(stderr, "gim-bench: cannot read the size of %s\n", path);
        return GIM_EIO;
    }
    int64_t used = (pages - (freel > 0 ? freel : 0)) * psize;
    printf("STORAGE messages=%lld inbox_rows=%lld used_bytes=%lld file_bytes=%lld wal_bytes=%lld "
           "bytes_per_message=%.1f\n",
           (long long)msgs, (long long)inbox, (long long)used, (long long)file_size(path, ""),
           (long long)file_size(path, "-wal"), msgs ? (double)used / (double)msgs : 0.0);
    return GIM_OK;
}

/* ----------------------------------------------------------------- limits */

struct echo_ctx {
    nng_ctx ctx;
    nng_aio *aio;
    bool sending;
};

struct echo {
    nng_socket sock;
    bool open;
    int n;
    struct echo_ctx *c;
    char dial_url[256];
};

static void echo_cb(void *arg)
{
    struct echo_ctx *e = arg;
    int rv = nng_aio_result(e->aio);
    if (e->sending) {
        e->sending = false;
        if (rv != 0)
            nng_msg_free(nng_aio_get_msg(e->aio));
    } else if (rv == 0) {
        nng_msg *m = nng_aio_get_msg(e->aio);
        nng_aio_set_msg(e->aio, m);
        e->sending = true;
        nng_ctx_send(e->ctx, e->aio);
        return;
    }
    if (rv == NNG_ECLOSED || rv == NNG_ECANCELED)
        return;
    nng_ctx_recv(e->ctx, e->aio);
}

static void echo_stop(struct echo *s)
{
    if (s->open)
        nng_close(s->sock);
    for (int i = 0; s->c && i < s->n; i++)
        if (s->c[i].aio)
            nng_aio_free(s->c[i].aio);
    free(s->c);
    s->c = NULL;
    s->open = false;
}

/* An in-process REP echo server with n contexts listening on url (tcp port 0 = any free port). */
static gim_err echo_start(struct echo *s, const char *url, int n)
{
    nng_listener l;
    int rv;
    memset(s, 0, sizeof *s);
    if ((rv = nng_rep0_open(&s->sock)) != 0)
        goto fail;
    s->open = true;
    nng_socket_set_size(s->sock, NNG_OPT_RECVMAXSZ, 16 << 20);
    if ((rv = nng_listener_create(&l, s->sock, url)) != 0 || (rv = nng_listener_start(l, 0)) != 0)
        goto fail;
    snprintf(s->dial_url, sizeof s->dial_url, "%s", url);
    size_t ul = strlen(url);
    if (strncmp(url, "tcp://", 6) == 0 && ul >= 2 && strcmp(url + ul - 2, ":0") == 0) {
        nng_sockaddr sa;
        if ((rv = nng_listener_get_addr(l, NNG_OPT_LOCADDR, &sa)) != 0)
            goto fail;
        snprintf(s->dial_url, sizeof s->dial_url, "%.*s:%u", (int)(ul - 2), url,
                 (unsigned)ntohs(sa.s_in.sa_port));
    }
    if (!(s->c = calloc((size_t)n, sizeof *s->c))) {
        rv = NNG_ENOMEM;
        goto fail;
    }
    s->n = n;
    for (int i = 0; i < n; i++) {
        if ((rv = nng_aio_alloc(&s->c[i].aio, echo_cb, &s->c[i])) != 0 ||
            (rv = nng_ctx_open(&s->c[i].ctx, s->sock)) != 0)
            goto fail;
        nng_ctx_recv(s->c[i].ctx, s->c[i].aio);
    }
    return GIM_OK;
fail:
    fprintf(stderr, "gim-bench: echo server on %s: %s\n", url, nng_strerror(rv));
    echo_stop(s);
    return GIM_EIO;
}

gim_err bench_nng_limit(struct bench *b, struct result *res)
{
    struct echo srv;
    struct link l;
    char url[256];
    gim_err e;
    if (b->o.echo_url)
        snprintf(url, sizeof url, "%s", b->o.echo_url);
    else if (strncmp(b->o.url, "ipc://", 6) == 0)
        snprintf(url, sizeof url, "ipc:///tmp/gim-bench-echo-%ld.ipc", (long)getpid());
    else
        snprintf(url, sizeof url, "tcp://127.0.0.1:0");
    if ((e = echo_start(&srv, url, b->o.conc)) != GIM_OK)
        return e;
    if ((e = bench_link_open(&l, srv.dial_url)) == GIM_OK)
        e = bench_run_workload(b, &l, WL_ECHO, b->o.warmup, b->o.duration, 0, NULL, 0, NULL, res);
    bench_link_close(&l);
    echo_stop(&srv);
    if (strncmp(url, "ipc://", 6) == 0)
        unlink(url + 6);
    return e;
}

static void remove_db(const char *path)
{
    char p[1024];
    static const char *const suffix[] = {"", "-wal", "-shm", "-journal"};
    for (size_t i = 0; i < sizeof suffix / sizeof suffix[0]; i++) {
        snprintf(p, sizeof p, "%s%s", path, suffix[i]);
        unlink(p);
    }
}

static gim_err copy_db(const char *from, const char *to)
{
    sqlite3 *src = NULL, *dst = NULL;
    gim_err e = open_db(from, false, &src);
    if (e != GIM_OK)
        return e;
    remove_db(to);
    if (sqlite3_open(to, &dst) != SQLITE_OK) {
        fprintf(stderr, "gim-bench: cannot create %s: %s\n", to, sqlite3_errmsg(dst));
        e = GIM_EIO;
        goto out;
    }
    sqlite3_backup *bk = sqlite3_backup_init(dst, "main", src, "main");
    int rc = bk ? sqlite3_backup_step(bk, -1) : SQLITE_ERROR;
    if (bk)
        sqlite3_backup_finish(bk);
    if (rc != SQLITE_DONE) {
        fprintf(stderr, "gim-bench: cannot copy %s: %s\n", from, sqlite3_errmsg(dst));
        e = GIM_EIO;
    }
out:
    sqlite3_close(dst);
    sqlite3_close(src);
    return e;
}

/*
 * The SQLite ceiling of 1:1 sends: on a backup copy of --db opened with the
 * service's pragmas (WAL, synchronous=FULL), transactions of C sends, each
 * the rows a send with a request id stores: a message row, two inbox rows and
 * the idempotency record (request ids from the protocol run's counter), for
 * the same warmup and duration. No user_seq write: the service keeps a user's
 * counter in memory and loads it from the inbox (migration 0008). Latency is
 * the time of a whole batch (BEGIN..COMMIT).
 */
gim_err bench_sqlite_limit(struct bench *b, struct result *res)
{
    char path[1024];
    struct store_conn *db = NULL;
    int64_t *last = NULL;
    uint8_t *content = NULL;
    size_t cap = 0, clen = 0;
    uint64_t rng = b->o.seed + 11;
    bool in_tx = false;
    gim_err e;

    memset(res, 0, sizeof *res);
    res->wl = WL_SEND;
    snprintf(path, sizeof path, "%s.bench-copy", b->o.db);
    int64_t t_copy = bench_now_ns();
    if ((e = copy_db(b->o.db, path)) != GIM_OK)
        goto out;
    fprintf(stderr, "gim-bench: copied %s to %s in %.2f s\n", b->o.db, path,
            (double)(bench_now_ns() - t_copy) / 1e9);
    if (!(last = malloc((size_t)b->o.users * sizeof *last))) {
        e = GIM_ENOMEM;
        goto out;
    }
    if ((e = bench_load_seqs(b, path, last)) != GIM_OK || (e = open_store(path, &db)) != GIM_OK)
        goto out;
    int64_t t_begin = bench_now_ns();
    int64_t t_measure = t_begin + (int64_t)(b->o.warmup * 1e9);
    int64_t t_end = t_measure + (int64_t)(b->o.duration * 1e9);
    int64_t now = bench_wall_ms();
    for (int64_t t0 = bench_now_ns(); t0 < t_end; t0 = bench_now_ns()) {
        if ((e = store_exec(db, "BEGIN IMMEDIATE")) != GIM_OK)
            goto out;
        in_tx = true;
        for (int i = 0; i < b->o.conc; i++) {
            int64_t si, ri;
            struct message_new m = random_pair(b, &rng, now, &si, &ri);
            m.sender_seq = ++last[si];
            m.receiver_seq = ++last[ri];
            int64_t rid = atomic_fetch_add(&b->next_rid, 1), id;
            if ((e = bench_make_content(b, rid, &content, &cap, &clen)) != GIM_OK)
                goto out;
            m.content = content;
            m.content_len = clen;
            if ((e = store_pair(db, &m, &id)) != GIM_OK ||
                (e = remember_request(db, m.sender_id, rid, id)) != GIM_OK)
                goto out;
        }
        if ((e = store_exec(db, "COMMIT")) != GIM_OK)
            goto out;
        in_tx = false;
        int64_t t1 = bench_now_ns();
        if (t1 >= t_measure && t1 <= t_end) {
            res->st.ok += (uint64_t)b->o.conc;
            res->st.ok_op[OP_SEND] += (uint64_t)b->o.conc;
            bench_push_latency(&res->st.lat[OP_SEND], (uint64_t)(t1 - t0));
        }
    }
    res->secs = (double)(t_end - t_measure) / 1e9;
    bench_finish_result(res);
out:
    if (in_tx) {
        store_exec(db, "ROLLBACK");
        fprintf(stderr, "gim-bench: SQLite limit failed: %s\n", gim_err_name(e));
    }
    store_close(db);
    remove_db(path);
    free(last);
    free(content);
    return e;
}
