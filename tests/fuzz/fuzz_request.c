/*
 * fuzz_request: libFuzzer target over the whole request path.
 *
 * Each input is taken as one encoded pb.GatewayRequest and goes exactly where
 * the server would send it: dispatch_begin() (decode, authenticate, prepare,
 * read on a read-only connection) and, for writes, writer_run_batch() on the
 * writer connection of a real SQLite file in a temporary directory; then the
 * reply is packed and the request reset. The database and presence persist
 * across inputs, as in the service, so sequences of sends, acks and recalls
 * build up state the way traffic does.
 *
 * Device 1 of user 1 at gateway "g" always has a session (restored after
 * every input, since a fuzzed sign-out or sign-in may change it), and group 1
 * (owner 1, admin 2, member 3) exists, so mutated seeds reach every handler
 * past authentication. auth.insecure_dev is on: any sign-in token is accepted.
 *
 * Besides the sanitizers, each input checks invariants every reply must keep:
 * a write job's done() ran, the reply decodes as a pb.Output echoing the
 * request's type and id, an error reply carries a message, no transaction is
 * left open and no statement is left unreset (one would pin the WAL).
 *
 * GIM_FUZZ_LOG=debug|info|warn|error (default error) sets the log level, to
 * also exercise the log lines of every path. GIM_FUZZ_TRACE=1 prints each
 * reply's type, code and message (to check that seeds get where they should:
 * `GIM_FUZZ_TRACE=1 fuzz_request -runs=0 tests/fuzz/corpus`).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "dispatch.h"
#include "log.h"
#include "maint.h"
#include "metrics.h"
#include "presence.h"
#include "request.h"
#include "seq.h"
#include "store.h"
#include "writer.h"

#define FUZZ_MAINT_EVERY                                                                           \
    256 /* inputs between maintenance passes, as the writer does between batches */

/* Fixed state the fuzzer relies on; constant SQL, no input data. */
static const char SQL_SEED[] =
    "INSERT OR IGNORE INTO device (device_id, user_id, gateway_id, online, created_at, "
    "signed_in_at, updated_at) VALUES (1, 1, 'g', 1, 0, 0, 0);"
    "INSERT OR IGNORE INTO chat_group (group_id, name, owner_id, created_at) "
    "VALUES (1, 'fuzz', 1, 0);"
    "INSERT OR IGNORE INTO group_member (group_id, user_id, role, joined_at) VALUES "
    "(1, 1, 'owner', 0), (1, 2, 'admin', 0), (1, 3, 'member', 0);";

static struct {
    char dir[256];
    char path[288];
    struct gim_config cfg;
    struct store_conn *db, *ro;
    struct presence *presence;
    struct seq *seq;
    struct metrics *metrics;
    struct wctx w;
    struct dispatch d;
    struct request r;
    int done_calls;
    unsigned long inputs;
    bool trace;
} F;

static const struct session seed_session = {
    .device_id = 1, .user_id = 1, .room_id = 0, .gateway_id = "g"};

static void die(const char *what)
{
    fprintf(stderr, "fuzz_request: %s\n", what);
    abort();
}

static void write_done(struct request *r)
{
    (void)r;
    F.done_calls++;
}

/* Leaves nothing behind in /tmp when libFuzzer exits normally. */
static void remove_dir(void)
{
    static const char *const files[] = {"gim.db", "gim.db-wal", "gim.db-shm", "gim.db-journal"};
    char p[320];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", F.dir, files[i]);
        unlink(p);
    }
    rmdir(F.dir);
}

static void teardown(void)
{
    store_close(F.ro);
    store_close(F.db);
    seq_close(F.seq);
    presence_close(F.presence);
    metrics_free(F.metrics);
    config_free(&F.cfg);
    remove_dir();
}

static void warm_up(void);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char err[512] = "";
    const char *lvl = getenv("GIM_FUZZ_LOG");
    log_set_level(lvl && log_level_parse(lvl) >= 0 ? (enum log_level)log_level_parse(lvl)
                                                   : LOG_LEVEL_ERROR);

    F.trace = getenv("GIM_FUZZ_TRACE") != NULL;
    const char *tmp = getenv("TMPDIR");
    if (snprintf(F.dir, sizeof F.dir, "%s/gimfuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp") >=
        (int)sizeof F.dir)
        die("TMPDIR is too long");
    if (!mkdtemp(F.dir))
        die("mkdtemp failed");
    snprintf(F.path, sizeof F.path, "%s/gim.db", F.dir);
    if (config_load(NULL, &F.cfg, err, sizeof err) != GIM_OK)
        die(err);
    free(F.cfg.database.path);
    free(F.cfg.database.synchronous);
    free(F.cfg.auth.secret_env);
    F.cfg.database.path = strdup(F.path);
    /* Durability is the crash test's subject; here it would only slow every input down. */
    F.cfg.database.synchronous = strdup("off");
    /* A GIM_TOKEN_SECRET in the environment would make fuzzed sign-ins fail at the token. */
    F.cfg.auth.secret_env = strdup("GIM_FUZZ_NO_SECRET");
    F.cfg.auth.insecure_dev = true;
    if (!F.cfg.database.path || !F.cfg.database.synchronous || !F.cfg.auth.secret_env)
        die("out of memory");

    if (store_open(&F.cfg, STORE_WRITER, &F.db, err, sizeof err) != GIM_OK)
        die(err);
    if (store_open(&F.cfg, STORE_READER, &F.ro, err, sizeof err) != GIM_OK)
        die(err);
    if (sqlite3_exec(F.db->db, SQL_SEED, NULL, NULL, NULL) != SQLITE_OK)
        die(sqlite3_errmsg(F.db->db));
    if (presence_open(&F.presence) != GIM_OK || seq_open(&F.seq) != GIM_OK)
        die("cannot open presence or seq");
    if (!(F.metrics = metrics_new()))
        die("out of memory");
    F.w = (struct wctx){.db = F.db,
                        .seq = F.seq,
                        .cfg = &F.cfg,
                        .presence = F.presence,
                        .push = NULL,
                        .metrics = F.metrics,
                        .clock = {gim_clock_real_ms, NULL}};
    F.d = (struct dispatch){.cfg = &F.cfg,
                            .presence = F.presence,
                            .clock = {gim_clock_real_ms, NULL},
                            .metrics = F.metrics,
                            .write_done = write_done};
    atexit(teardown);
    warm_up();
    return 0;
}

/* A statement left mid-step keeps its read snapshot and blocks checkpoints forever. */
static void check_conn(struct store_conn *c, const char *name)
{
    if (!sqlite3_get_autocommit(c->db)) {
        fprintf(stderr, "fuzz_request: %s connection left inside a transaction\n", name);
        abort();
    }
    for (sqlite3_stmt *st = sqlite3_next_stmt(c->db, NULL); st; st = sqlite3_next_stmt(c->db, st))
        if (sqlite3_stmt_busy(st)) {
            fprintf(stderr, "fuzz_request: %s statement not reset: %s\n", name, sqlite3_sql(st));
            abort();
        }
}

static void check_reply(const struct request *r, const uint8_t *buf, size_t len)
{
    Pb__Output *out = pb__output__unpack(NULL, len, buf);
    if (!out)
        die("reply is not a valid pb.Output");
    if (out->code != gim_err_wire(r->code) || out->request_id != r->request_id ||
        (int)out->type != r->type)
        die("reply does not echo the request's type, id and code");
    if (out->code != PB__ERROR_CODE__EC_OK && (!out->message || !*out->message))
        die("error reply without a message");
    if (out->code < 0 || out->code > GIM_ERR_WIRE_MAX)
        die("reply code outside pb.ErrorCode");
    pb__output__free_unpacked(out, NULL);
}

/* One request through the whole path, as the server would run it; returns its code. */
static gim_err run_one(const uint8_t *data, size_t size)
{
    struct request *r = &F.r;
    uint8_t *buf = NULL;
    size_t len = 0;

    /* Whatever the previous input did to it, the seed session authenticates this one. */
    struct session s = seed_session;
    s.last_seen_ms = gim_clock_real_ms(NULL);
    if (presence_put(F.presence, &s) != GIM_OK)
        die("presence_put failed");

    F.done_calls = 0;
    if (dispatch_begin(&F.d, r, data, size, F.ro) == DISPATCH_WRITE) {
        struct write_job *job = &r->job;
        writer_run_batch(&F.w, &job, 1);
        if (F.done_calls != 1)
            die("a write job's done() did not run exactly once");
    } else if (F.done_calls != 0) {
        die("done() ran for a request that was not written");
    }
    metrics_request(F.metrics, r->type, gim_err_wire(r->code), 0);
    if (request_pack_output(r, &buf, &len) != GIM_OK)
        die("request_pack_output failed");
    check_reply(r, buf, len);
    free(buf);
    if (F.trace)
        fprintf(stderr, "fuzz_request: type=%d request_id=%lld code=%s message=\"%s\"\n", r->type,
                (long long)r->request_id, gim_err_name(r->code), r->code ? r->errmsg : "");

    /* Sessions of fuzzed sign-ins would pile up in memory over a long run. */
    if (r->type == PB__PACKAGE_TYPE__PT_SIGN_IN && r->code == GIM_OK && r->sess.device_id != 1)
        presence_remove(F.presence, r->sess.device_id, NULL);
    gim_err code = r->code;
    request_reset(r);

    check_conn(F.db, "writer");
    check_conn(F.ro, "reader");
    if (++F.inputs % FUZZ_MAINT_EVERY == 0) {
        maint_run(&F.w);
        check_conn(F.db, "writer (after maintenance)");
    }
    return code;
}

/*
 * A few messages in user 1's inbox (seqs 1..3) before the first input, so
 * that mutated acks, recalls and syncs of low seqs find something from the
 * start instead of only once some input happened to send.
 */
static void warm_up(void)
{
    static const struct {
        Pb__ReceiverType rt;
        int64_t to;
        const char *text;
    } sends[] = {{PB__RECEIVER_TYPE__RT_USER, 2, "warm-up to user 2"},
                 {PB__RECEIVER_TYPE__RT_GROUP, 1, "warm-up to group 1"},
                 {PB__RECEIVER_TYPE__RT_USER, 1, "warm-up to self"}};
    for (size_t i = 0; i < sizeof sends / sizeof sends[0]; i++) {
        uint8_t content[64], data[128], req[256];
        Pb__Text t = PB__TEXT__INIT;
        t.text = (char *)sends[i].text;
        Pb__Message m = PB__MESSAGE__INIT;
        m.receiver_type = sends[i].rt;
        m.receiver_id = sends[i].to;
        m.message_type = PB__MESSAGE_TYPE__MT_TEXT;
        m.message_content.data = content;
        m.message_content.len = pb__text__pack(&t, content);
        Pb__MessageSend ms = PB__MESSAGE_SEND__INIT;
        ms.message = &m;
        Pb__Input in = PB__INPUT__INIT;
        in.type = PB__PACKAGE_TYPE__PT_MESSAGE;
        in.request_id = -1 - (int64_t)i; /* seeds and most mutants use positive ids */
        in.data.data = data;
        in.data.len = pb__message_send__pack(&ms, data);
        Pb__GatewayRequest env = PB__GATEWAY_REQUEST__INIT;
        env.user_id = seed_session.user_id;
        env.device_id = seed_session.device_id;
        env.gateway_id = (char *)seed_session.gateway_id;
        env.input = &in;
        if (run_one(req, pb__gateway_request__pack(&env, req)) != GIM_OK)
            die("warm-up send failed (GIM_FUZZ_TRACE=1 shows why)");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    run_one(data, size);
    return 0;
}
