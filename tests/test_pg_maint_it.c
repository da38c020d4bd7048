/*
 * Recall, kick, erase, retention and the presence sweep on PostgreSQL with
 * several gim-logic instances on one database (issue 17, phase 2): a recall
 * through B of a message sent through A pushes its notices to devices
 * signed in at both; the same recall reaching both instances at once writes
 * one set of notices; a kick through B of a device signed in through A
 * tells its gateway and A stops serving it within the session cache's
 * bound; an erasure through B ends sessions made at A; the presence sweep
 * runs on one instance, counts every instance's traffic, and passes to
 * another when that one dies; retention deletes old messages. Runs only on
 * PostgreSQL (ctest sets GIM_TEST_BACKEND=postgres); every test starts its
 * own database.
 */
#include <criterion/criterion.h>
#include <nng/nng.h>
#include <nng/protocol/pubsub0/sub.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "presence.h"
#include "testlib.h"

static struct tl_server a, b;
static struct gim_client *ca, *cb;
static const struct client_conn ops = {.gateway_id = "ops", .client_addr = "test"};

static void start_both(const char *extra)
{
    tl_start_pair(&a, &b, extra);
    ca = tl_client(&a);
    cb = tl_client(&b);
}

static void teardown(void)
{
    if (cb)
        client_close(cb);
    if (ca)
        client_close(ca);
    cb = ca = NULL;
    tl_cleanup_pair(&a, &b);
}

TestSuite(pg_maint_it, .fini = teardown, .timeout = 90);

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t qi(const char *fmt, long long arg)
{
    char q[512];
    snprintf(q, sizeof q, fmt, arg);
    return tl_query_int(a.db, q);
}

/* Rows of message whose content holds text: what any SQL query (psql too) can still read. */
static int64_t rows_with(const char *text)
{
    char q[256];
    snprintf(q, sizeof q,
             "SELECT count(*) FROM message WHERE position(convert_to('%s', 'UTF8') IN content) > 0",
             text);
    return tl_query_int(a.db, q);
}

static int64_t send_text(struct gim_client *c, const struct client_conn *conn, int64_t to,
                         const char *text, int64_t request_id)
{
    uint8_t content[256];
    Pb__Text t = PB__TEXT__INIT;
    t.text = (char *)text;
    Pb__Message m = PB__MESSAGE__INIT;
    m.receiver_type = PB__RECEIVER_TYPE__RT_USER;
    m.receiver_id = to;
    m.message_type = PB__MESSAGE_TYPE__MT_TEXT;
    m.message_content.data = content;
    m.message_content.len = pb__text__pack(&t, content);
    Pb__MessageSend ms = PB__MESSAGE_SEND__INIT;
    ms.message = &m;
    Pb__Output *out = tl_call(c, conn, PB__PACKAGE_TYPE__PT_MESSAGE, request_id, &ms.base);
    cr_assert_eq(out->code, 0, "send failed: %s", out->message);
    Pb__MessageSend *reply = pb__message_send__unpack(NULL, out->data.len, out->data.data);
    cr_assert(reply && reply->message);
    int64_t seq = reply->message->seq;
    pb__message_send__free_unpacked(reply, NULL);
    pb__output__free_unpacked(out, NULL);
    return seq;
}

static int recall(struct gim_client *c, const struct client_conn *conn, int64_t seq,
                  int64_t request_id)
{
    Pb__RecallInput in = PB__RECALL_INPUT__INIT;
    in.seq = seq;
    return tl_code(c, conn, PB__PACKAGE_TYPE__PT_RECALL, request_id, &in.base);
}

static int heartbeat(struct gim_client *c, const struct client_conn *conn)
{
    return tl_code(c, conn, PB__PACKAGE_TYPE__PT_HEARTBEAT, 2, NULL);
}

static char *op_token(void)
{
    char *t = NULL;
    cr_assert_eq(auth_mint_admin(TL_SECRET, time(NULL) + 600, &t), GIM_OK);
    return t;
}

/* Every topic of an instance's PUB. Close it only after the instances stopped (see sub_close in
 * test_admin_ops_it.c: nng 1.5.2 can hang closing a pipe with a message half read). */
static nng_socket subscribe(const char *url)
{
    nng_socket s;
    cr_assert_eq(nng_sub0_open(&s), 0);
    cr_assert_eq(nng_socket_set(s, NNG_OPT_SUB_SUBSCRIBE, "", 0), 0);
    cr_assert_eq(nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 3000), 0);
    cr_assert_eq(nng_dial(s, url, NULL, 0), 0);
    return s;
}

struct delivery {
    char gateway[PRESENCE_GATEWAY_MAX + 1];
    int64_t device;
    int type;             /* Output.type */
    int64_t recalled_seq; /* a recall notice: the seq it names; else -1 */
    int64_t seq;          /* a pushed message's seq */
};

/* The next Delivery on s (one device each here); false when none comes in time. */
static bool next_delivery(nng_socket s, struct delivery *out)
{
    nng_msg *m = NULL;
    if (nng_recvmsg(s, &m, 0) != 0)
        return false;
    const uint8_t *body = nng_msg_body(m);
    size_t len = nng_msg_len(m);
    const uint8_t *nl = memchr(body, '\n', len);
    cr_assert_not_null(nl);
    size_t gl = (size_t)(nl - body);
    cr_assert_leq(gl, PRESENCE_GATEWAY_MAX);
    memset(out, 0, sizeof *out);
    memcpy(out->gateway, body, gl);
    Pb__Delivery *d = pb__delivery__unpack(NULL, len - gl - 1, nl + 1);
    nng_msg_free(m);
    cr_assert(d && d->output && d->n_device_ids == 1);
    out->device = d->device_ids[0];
    out->type = d->output->type;
    out->recalled_seq = -1;
    if (out->type == PB__PACKAGE_TYPE__PT_MESSAGE) {
        Pb__MessageSend *ms =
            pb__message_send__unpack(NULL, d->output->data.len, d->output->data.data);
        cr_assert(ms && ms->message);
        out->seq = ms->message->seq;
        if (ms->message->message_type == PB__MESSAGE_TYPE__MT_COMMAND) {
            Pb__Command *cmd = pb__command__unpack(NULL, ms->message->message_content.len,
                                                   ms->message->message_content.data);
            cr_assert_not_null(cmd);
            Pb__RecallInput *ri =
                cmd->code == 1 ? pb__recall_input__unpack(NULL, cmd->data.len, cmd->data.data)
                               : NULL;
            if (ri) {
                out->recalled_seq = ri->seq;
                pb__recall_input__free_unpacked(ri, NULL);
            }
            pb__command__free_unpacked(cmd, NULL);
        }
        pb__message_send__free_unpacked(ms, NULL);
    }
    pb__delivery__free_unpacked(d, NULL);
    return true;
}

/* Whether the instance's log has a line holding both needles. */
static bool log_has(const struct tl_server *s, const char *n1, const char *n2)
{
    FILE *f = fopen(s->log, "r");
    char line[2048];
    bool hit = false;
    if (!f)
        return false;
    while (!hit && fgets(line, sizeof line, f))
        hit = strstr(line, n1) && strstr(line, n2);
    fclose(f);
    return hit;
}

/*
 * A recall through B of a message sent through A: the content is NULL for every query, the
 * notices take the next seqs of both inboxes, and B pushes them to every device of both users
 * (signed in at A or at B) but the recalling one, to the gateway each is on.
 */
Test(pg_maint_it, a_recall_through_b_of_a_message_sent_through_a)
{
    start_both(NULL);
    nng_socket sub_b = subscribe(b.pub_url);
    struct client_conn a11, a12, b21, b22;
    cr_assert_eq(tl_signin(ca, &a11, 1, 11, "gw1"), 0);
    cr_assert_eq(tl_signin(ca, &b21, 2, 21, "gw2"), 0);
    cr_assert_eq(tl_signin(cb, &a12, 1, 12, "gw3"), 0); /* only B has these in memory */
    cr_assert_eq(tl_signin(cb, &b22, 2, 22, "gw4"), 0);
    char secret[64];
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    snprintf(secret, sizeof secret, "PG-SECRET-%08x%08x", (unsigned)rand(), (unsigned)rand());
    cr_assert_eq(send_text(ca, &a11, 1, "note to self", 1), 1);
    cr_assert_eq(send_text(ca, &a11, 2, secret, 2), 2);
    cr_assert_eq(rows_with(secret), 1, "the text is readable before the recall");
    usleep(300 * 1000); /* B's PUB attached; nothing of A's sends came through B */

    cr_assert_eq(recall(cb, &a11, 2, 3), 0, "B serves A's session and recalls");
    cr_assert_eq(rows_with(secret), 0, "a query still reads the recalled text");
    cr_assert_eq(
        qi("SELECT count(*) FROM message WHERE status = 2 AND content IS NULL AND %lld > 0", 1), 1);
    /* Notices: user 1's at seq 3 (naming its copy 2), user 2's at seq 2 (naming its copy 1). */
    cr_assert_eq(qi("SELECT seq FROM user_seq WHERE user_id = %lld", 1), 3);
    cr_assert_eq(qi("SELECT seq FROM user_seq WHERE user_id = %lld", 2), 2);

    bool got12 = false, got21 = false, got22 = false;
    struct delivery d;
    while ((!got12 || !got21 || !got22) && next_delivery(sub_b, &d)) {
        cr_assert_neq(d.device, 11, "the recalling device has its reply, not a push");
        if (d.recalled_seq < 0)
            continue;
        if (d.device == 12) {
            cr_assert_str_eq(d.gateway, "gw3");
            cr_assert_eq(d.recalled_seq, 2);
            cr_assert_eq(d.seq, 3);
            got12 = true;
        } else if (d.device == 21 || d.device == 22) {
            cr_assert_str_eq(d.gateway, d.device == 21 ? "gw2" : "gw4");
            cr_assert_eq(d.recalled_seq, 1);
            cr_assert_eq(d.seq, 2);
            *(d.device == 21 ? &got21 : &got22) = true;
        }
    }
    cr_assert(got12 && got21 && got22, "notices pushed: 12=%d 21=%d 22=%d", got12, got21, got22);

    /* Again through A: already recalled, nothing more written. */
    Pb__RecallInput in = PB__RECALL_INPUT__INIT;
    in.seq = 2;
    Pb__Output *out = tl_call(ca, &a11, PB__PACKAGE_TYPE__PT_RECALL, 4, &in.base);
    cr_assert_eq(out->code, 0, "%s", out->message);
    Pb__RecallOutput *ro = pb__recall_output__unpack(NULL, out->data.len, out->data.data);
    cr_assert(ro && ro->already_recalled);
    pb__recall_output__free_unpacked(ro, NULL);
    pb__output__free_unpacked(out, NULL);
    cr_assert_eq(qi("SELECT count(*) FROM inbox WHERE %lld > 0", 1), 5);
    cr_assert_eq(tl_stop(&b), 0, "see %s", b.log);
    cr_assert_eq(tl_stop(&a), 0, "see %s", a.log);
    nng_close(sub_b);
}

struct recaller {
    const char *url;
    int64_t seq;
    int code;
};

static void *recall_once(void *arg)
{
    struct recaller *r = arg;
    struct gim_client *c = NULL;
    struct client_conn conn = {.user_id = 1, .device_id = 11, .gateway_id = "gw1"};
    Pb__RecallInput in = PB__RECALL_INPUT__INIT;
    Pb__Output *out = NULL;
    in.seq = r->seq;
    r->code = -1;
    if (client_open(&c, r->url, 10000, 1) != GIM_OK)
        return NULL;
    if (client_request(c, &conn, PB__PACKAGE_TYPE__PT_RECALL, 100 + r->seq, &in.base, &out) ==
        GIM_OK)
        r->code = out->code;
    if (out)
        pb__output__free_unpacked(out, NULL);
    client_close(c);
    return NULL;
}

/* The same recall reaching A and B at once: one recall, one notice per inbox. */
Test(pg_maint_it, the_same_recall_at_two_instances_at_once_writes_one_set_of_notices)
{
    start_both(NULL);
    struct client_conn u1;
    cr_assert_eq(tl_signin(ca, &u1, 1, 11, "gw1"), 0);
    enum { N = 12 };
    for (int i = 1; i <= N; i++)
        cr_assert_eq(send_text(ca, &u1, 2, "take it back", i), i);
    for (int64_t seq = 1; seq <= N; seq++) {
        struct recaller r[2] = {{a.url, seq, 0}, {b.url, seq, 0}};
        pthread_t t[2];
        for (int k = 0; k < 2; k++)
            cr_assert_eq(pthread_create(&t[k], NULL, recall_once, &r[k]), 0);
        for (int k = 0; k < 2; k++)
            pthread_join(t[k], NULL);
        cr_assert(r[0].code == 0 && r[1].code == 0, "seq %lld: codes %d %d", (long long)seq,
                  r[0].code, r[1].code);
    }
    /* Each user: N messages + N notices, gap-free. */
    for (long long u = 1; u <= 2; u++) {
        cr_assert_eq(qi("SELECT count(*) FROM inbox WHERE user_id = %lld", u), 2 * N,
                     "user %lld: a recall wrote its notices twice", u);
        cr_assert_eq(qi("SELECT max(seq) FROM inbox WHERE user_id = %lld", u), 2 * N);
    }
    cr_assert_eq(qi("SELECT count(*) FROM message WHERE status = 2 AND %lld > 0", 1), N);
}

/*
 * A kick through B of a device signed in through A: B tells the device's gateway (from the
 * device table: B never had the session) and A, which served the device a moment ago, stops
 * serving it within its session cache's bound (PRESENCE_RECHECK_MS).
 */
Test(pg_maint_it, a_kick_through_b_of_a_device_signed_in_through_a)
{
    start_both(NULL);
    nng_socket sub_b = subscribe(b.pub_url);
    struct client_conn d11, d21;
    cr_assert_eq(tl_signin(ca, &d11, 1, 11, "gw1"), 0);
    cr_assert_eq(tl_signin(ca, &d21, 2, 21, "gw1"), 0);
    cr_assert_eq(heartbeat(ca, &d11), 0);
    usleep(300 * 1000);

    char *token = op_token();
    Pb__AdminKickInput in = PB__ADMIN_KICK_INPUT__INIT;
    in.token = token;
    in.device_id = 11;
    Pb__Output *out = tl_call(cb, &ops, PB__PACKAGE_TYPE__PT_ADMIN_KICK, 1, &in.base);
    int64_t kicked_at = now_ms();
    cr_assert_eq(out->code, 0, "%s", out->message);
    Pb__AdminKickOutput *ko = pb__admin_kick_output__unpack(NULL, out->data.len, out->data.data);
    cr_assert(ko && ko->was_online && ko->user_id == 1);
    cr_assert_str_eq(ko->gateway_id, "gw1");
    pb__admin_kick_output__free_unpacked(ko, NULL);
    pb__output__free_unpacked(out, NULL);
    free(token);

    struct delivery d;
    cr_assert(next_delivery(sub_b, &d), "B told no gateway");
    cr_assert_eq(d.type, PB__PACKAGE_TYPE__PT_SIGN_OUT);
    cr_assert_eq(d.device, 11);
    cr_assert_str_eq(d.gateway, "gw1");
    cr_assert_eq(qi("SELECT online FROM device WHERE device_id = %lld", 11), 0);
    cr_assert_eq(heartbeat(cb, &d11), PB__ERROR_CODE__EC_UNAUTHENTICATED);

    /* A had the session cached and confirmed just before: it ends there within the bound. */
    int64_t ended = 0;
    while (!ended && now_ms() - kicked_at < 5000) {
        if (heartbeat(ca, &d11) == PB__ERROR_CODE__EC_UNAUTHENTICATED)
            ended = now_ms();
        else
            usleep(50 * 1000);
    }
    cr_assert_neq(ended, 0, "A still serves a kicked device after 5 s");
    cr_log_info("A stopped serving the kicked device %lld ms after the kick",
                (long long)(ended - kicked_at));
    cr_assert_leq(ended - kicked_at, PRESENCE_RECHECK_MS + 1000,
                  "A served the kicked device past the bound");
    cr_assert_eq(heartbeat(ca, &d21), 0, "the other device on that gateway is untouched");
    cr_assert_eq(tl_stop(&b), 0, "see %s", b.log);
    cr_assert_eq(tl_stop(&a), 0, "see %s", a.log);
    nng_close(sub_b);
}

static int erase_step(struct gim_client *c, const char *token, int64_t user, int max_rows,
                      Pb__AdminEraseOutput **eo)
{
    Pb__AdminEraseInput in = PB__ADMIN_ERASE_INPUT__INIT;
    in.token = (char *)token;
    in.user_id = user;
    in.max_rows = max_rows;
    Pb__Output *out = tl_call(c, &ops, PB__PACKAGE_TYPE__PT_ADMIN_ERASE, 3, &in.base);
    int code = out->code;
    *eo = code == 0 ? pb__admin_erase_output__unpack(NULL, out->data.len, out->data.data) : NULL;
    cr_assert(code != 0 || *eo);
    pb__output__free_unpacked(out, NULL);
    return code;
}

/*
 * An erasure through B, in small steps, of a user signed in at both instances: her devices go
 * (their gateways told, A stops serving them), her inbox goes, what she sent is NULL in the
 * other inbox, what only she held is deleted, and no query reads her texts; a step that fails
 * half-way is undone whole.
 */
Test(pg_maint_it, an_erasure_through_b_of_a_user_signed_in_at_both)
{
    start_both(NULL);
    nng_socket sub_b = subscribe(b.pub_url);
    struct client_conn a11, a12, b21;
    cr_assert_eq(tl_signin(ca, &a11, 1, 11, "gwA"), 0);
    cr_assert_eq(tl_signin(cb, &a12, 1, 12, "gwB"), 0);
    cr_assert_eq(tl_signin(ca, &b21, 2, 21, "gwA"), 0);
    char secret[2][64];
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    for (int i = 0; i < 2; i++)
        snprintf(secret[i], sizeof secret[i], "ERASE-ME-%d-%08x", i, (unsigned)rand());
    send_text(ca, &a11, 2, secret[0], 1);         /* alice 1, bob 1 */
    send_text(ca, &b21, 1, "bob's own words", 1); /* alice 2, bob 2 */
    send_text(cb, &a12, 1, secret[1], 2);         /* alice 3: a note to self */
    cr_assert_eq(heartbeat(ca, &a11), 0);
    cr_assert_eq(rows_with(secret[0]) + rows_with(secret[1]), 2);
    usleep(300 * 1000);

    /* A step failing half-way (her note cannot be deleted) changes nothing. */
    tl_exec(&a,
            "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN RAISE EXCEPTION 'injected failure'; END$$;"
            "CREATE TRIGGER boom BEFORE DELETE ON message FOR EACH ROW EXECUTE FUNCTION boom()");
    char *token = op_token();
    Pb__AdminEraseOutput *eo = NULL;
    cr_assert_eq(erase_step(cb, token, 1, 0, &eo), PB__ERROR_CODE__EC_INTERNAL);
    cr_assert_eq(qi("SELECT count(*) FROM device WHERE user_id = %lld", 1), 2);
    cr_assert_eq(qi("SELECT count(*) FROM inbox WHERE user_id = %lld", 1), 3);
    cr_assert_eq(qi("SELECT count(*) FROM erasure WHERE %lld > 0", 1), 0);
    cr_assert_eq(heartbeat(ca, &a11), 0);
    tl_exec(&a, "DROP TRIGGER boom ON message");

    int steps = 0;
    int64_t devices = 0, inbox = 0, erased = 0, deleted = 0;
    for (bool done = false; !done; steps++) {
        cr_assert_lt(steps, 20);
        cr_assert_eq(erase_step(cb, token, 1, 2, &eo), 0);
        done = eo->done;
        devices += eo->devices;
        inbox += eo->inbox_entries;
        erased += eo->messages_erased;
        deleted += eo->messages_deleted;
        pb__admin_erase_output__free_unpacked(eo, NULL);
    }
    free(token);
    cr_assert_gt(steps, 2, "two rows a step");
    cr_assert_eq(devices, 2);
    cr_assert_eq(inbox, 3);
    cr_assert_eq(erased, 1, "her text in bob's inbox");
    cr_assert_eq(deleted, 1, "her note to self");
    cr_assert_eq(rows_with(secret[0]) + rows_with(secret[1]), 0, "a query reads her text");
    cr_assert_eq(qi("SELECT count(*) FROM device WHERE user_id = %lld", 1), 0);
    cr_assert_eq(qi("SELECT count(*) FROM inbox WHERE user_id = %lld", 1), 0);
    cr_assert_eq(
        qi("SELECT count(*) FROM message WHERE content IS NOT NULL AND sender_id = %lld", 2), 1,
        "bob's own words stay");
    cr_assert_eq(qi("SELECT finished_at > 0 FROM erasure WHERE user_id = %lld", 1), 1);

    /* Both devices' gateways told by B; A stops serving its session within the bound. */
    bool told11 = false, told12 = false;
    struct delivery d;
    while ((!told11 || !told12) && next_delivery(sub_b, &d))
        if (d.type == PB__PACKAGE_TYPE__PT_SIGN_OUT) {
            cr_assert_str_eq(d.gateway, d.device == 11 ? "gwA" : "gwB");
            *(d.device == 11 ? &told11 : &told12) = true;
        }
    cr_assert(told11 && told12, "told: 11=%d 12=%d", told11, told12);
    usleep((PRESENCE_RECHECK_MS + 200) * 1000);
    cr_assert_eq(heartbeat(ca, &a11), PB__ERROR_CODE__EC_UNAUTHENTICATED);
    cr_assert_eq(heartbeat(cb, &a12), PB__ERROR_CODE__EC_UNAUTHENTICATED);
    cr_assert_eq(heartbeat(ca, &b21), 0);

    /* gimctl erase --yes goes through the service (its preview reads a SQLite file). */
    char cmd[1024], outbuf[1024];
    snprintf(cmd, sizeof cmd, "%s --url '%s' --secret " TL_SECRET " erase --user 2 --yes 2>&1",
             GIMCTL_BIN, a.url);
    FILE *pp = popen(cmd, "r");
    cr_assert_not_null(pp);
    size_t got = fread(outbuf, 1, sizeof outbuf - 1, pp);
    outbuf[got] = 0;
    cr_assert_eq(pclose(pp), 0, "%s", outbuf);
    cr_assert(strncmp(outbuf, "erased user=2 devices=1 ", 24) == 0, "%s", outbuf);
    cr_assert_eq(qi("SELECT count(*) FROM inbox WHERE user_id = %lld", 2), 0);
    cr_assert_eq(tl_stop(&b), 0, "see %s", b.log);
    cr_assert_eq(tl_stop(&a), 0, "see %s", a.log);
    nng_close(sub_b);
}

/* The maintenance lock: held by exactly one session of this database (advisory locks are per
 * database; other tests' databases on the same server hold their own). */
static int64_t maint_lock_holders(void)
{
    /* PGSTORE_LOCK_MAINT = 0x67696d0002: classid is its high 32 bits, objid its low ones. */
    return tl_query_int(a.db,
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND "
                        "classid = 103 AND objid = 1768751106 AND objsubid = 1 AND granted AND "
                        "database = (SELECT oid FROM pg_database "
                        "WHERE datname = current_database())");
}

/*
 * The presence sweep with a one-second timeout: one instance sweeps; a device that only talks
 * to the other instance stays online (its traffic reaches the table), a silent one goes, never
 * before the timeout; when the sweeping instance dies the other one takes the sweep over.
 */
Test(pg_maint_it, the_sweep_runs_on_one_instance_and_sees_every_instances_traffic)
{
    start_both("presence: {timeout_seconds: 1}");
    struct client_conn quiet, busy;
    cr_assert_eq(tl_signin(ca, &quiet, 1, 11, "gw1"), 0);
    cr_assert_eq(tl_signin(ca, &busy, 2, 21, "gw2"), 0);
    int64_t last_quiet = now_ms();
    cr_assert_eq(heartbeat(ca, &quiet), 0);

    /* busy talks to B only, every 200 ms; A (maybe the sweeper) never sees it again. */
    int64_t offline_at = 0;
    while (now_ms() - last_quiet < 6000) {
        cr_assert_eq(heartbeat(cb, &busy), 0, "a device busy at B was signed out");
        if (!offline_at && qi("SELECT online FROM device WHERE device_id = %lld", 11) == 0)
            offline_at = now_ms();
        usleep(200 * 1000);
    }
    cr_assert_neq(offline_at, 0, "the silent device was never signed out");
    cr_assert_geq(offline_at - last_quiet, 1000, "signed out before the timeout");
    cr_log_info("signed out %lld ms after its last request", (long long)(offline_at - last_quiet));
    cr_assert_eq(qi("SELECT online FROM device WHERE device_id = %lld", 21), 1);
    cr_assert_eq(heartbeat(ca, &quiet), PB__ERROR_CODE__EC_UNAUTHENTICATED);
    cr_assert_eq(heartbeat(cb, &quiet), PB__ERROR_CODE__EC_UNAUTHENTICATED);

    cr_assert_eq(maint_lock_holders(), 1);
    bool by_a = log_has(&a, "msg=\"presence timeout\"", "device=11 ");
    bool by_b = log_has(&b, "msg=\"presence timeout\"", "device=11 ");
    cr_assert(by_a != by_b, "swept by A=%d B=%d: exactly one instance sweeps", by_a, by_b);

    /* The sweeper dies; the survivor takes its lock and its sweep over. */
    struct tl_server *dead = by_a ? &a : &b, *alive = by_a ? &b : &a;
    struct gim_client *c_alive = by_a ? cb : ca;
    tl_kill9(dead);
    struct client_conn late;
    cr_assert_eq(tl_signin(c_alive, &late, 3, 31, "gw3"), 0);
    int64_t signed_in = now_ms();
    while (now_ms() - signed_in < 6000 &&
           qi("SELECT online FROM device WHERE device_id = %lld", 31) == 1) {
        cr_assert_eq(heartbeat(c_alive, &busy), 0);
        usleep(200 * 1000);
    }
    cr_assert_eq(qi("SELECT online FROM device WHERE device_id = %lld", 31), 0,
                 "nobody sweeps after the sweeper died");
    cr_assert(log_has(alive, "msg=\"presence timeout\"", "device=31 "));
    cr_assert_eq(qi("SELECT online FROM device WHERE device_id = %lld", 21), 1);
    cr_assert_eq(maint_lock_holders(), 1);
}

/* Retention on PostgreSQL: messages past retention.days go with their inbox entries and
 * idempotency records; the rest stays and seqs go on. */
Test(pg_maint_it, retention_deletes_old_messages)
{
    if (!tl_pg())
        cr_skip_test("runs on PostgreSQL only (GIM_TEST_BACKEND=postgres)");
    tl_start(&a, "retention: {days: 1}");
    ca = tl_client(&a);
    struct client_conn u1;
    cr_assert_eq(tl_signin(ca, &u1, 1, 11, "gw1"), 0);
    for (int i = 1; i <= 4; i++)
        cr_assert_eq(send_text(ca, &u1, 2, "old or new", i), i);
    cr_assert_eq(tl_stop(&a), 0, "see %s", a.log);
    /* Two of them two days old; retention's first pass runs at start. */
    tl_exec(&a, "UPDATE message SET send_time = send_time - 2 * 86400000 WHERE sender_seq <= 2");
    tl_restart(&a);
    int64_t started = now_ms();
    while (qi("SELECT count(*) FROM message WHERE %lld > 0", 1) != 2 && now_ms() - started < 5000)
        usleep(100 * 1000);
    cr_assert_eq(qi("SELECT count(*) FROM message WHERE %lld > 0", 1), 2, "see %s", a.log);
    cr_assert_eq(qi("SELECT min(sender_seq) FROM message WHERE %lld > 0", 1), 3);
    cr_assert_eq(qi("SELECT count(*) FROM inbox WHERE user_id = %lld", 1), 2);
    cr_assert_eq(qi("SELECT count(*) FROM inbox WHERE user_id = %lld", 2), 2);
    cr_assert_eq(qi("SELECT min(seq) FROM inbox WHERE user_id = %lld", 2), 3);
    cr_assert_eq(qi("SELECT count(*) FROM idempotency WHERE device_id = %lld", 11), 2);
    cr_assert(log_has(&a, "msg=\"retention pruned\"", "messages=2 "));
    /* Seqs are never reused. */
    cr_assert_eq(send_text(ca, &u1, 2, "after", 9), 5);
}
