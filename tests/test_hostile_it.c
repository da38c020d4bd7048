/*
 * Hostile input against the real binary over real nng sockets, with a real
 * SQLite file. Every hostile request is a row: raw bytes exactly as a
 * gateway (or an attacker who reached the logic socket) would send them, the
 * exact pb.ErrorCode expected, and, after the reply, a check on the live
 * database file that nothing was written (row counts of every table a
 * request can touch, the sum of all user seqs, a checksum of the device
 * rows). Most tables end with a control: the same kind of request, made
 * valid, succeeds, so a row cannot pass by failing for some other reason.
 *
 * What decoding can and cannot tell (proto3 as protobuf-c 1.4 implements
 * it): truncated bytes, bad varints, bad wire types, field 0, groups and a
 * field whose wire type does not match the expected message's field are
 * undecodable and rejected. Unknown fields are skipped, and a missing field
 * is its zero value, so a message of another type decodes whenever its
 * fields line up (a SyncInput{seq} is a valid RecallInput{seq}); that is
 * undetectable by design and such a request is simply served as the type
 * the gateway named. protobuf-c does not check UTF-8 in string fields: the
 * server does, after decoding (request_check_utf8). A NUL inside a string
 * cuts the C string short, which no check after decoding can see.
 */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <inttypes.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "presence.h"
#include "testlib.h"

#define GW           "gw-hostile"
#define MAX_REQUEST  8192
#define MAX_CONTENT  1024
#define MAX_MENTIONS 8

#define EC_OK     PB__ERROR_CODE__EC_OK
#define EC_BAD    PB__ERROR_CODE__EC_BAD_REQUEST
#define EC_UNAUTH PB__ERROR_CODE__EC_UNAUTHENTICATED

static struct tl_server srv;
static char tcp[64];
static int tcp_port;
static struct gim_client *cli;
static struct client_conn me; /* user 1, device 11, signed in at GW */

static void setup(void)
{
    /* tcp as well: oversized requests break Debian's nng 1.5.2 ipc listener (test_server_it.c). */
    tcp_port = tl_free_port();
    snprintf(tcp, sizeof tcp, "tcp://127.0.0.1:%d", tcp_port);
    tl_start_listen(&srv, tcp,
                    "limits: {max_request_bytes: 8192, max_content_bytes: 1024, max_mentions: 8}");
    cli = tl_client(&srv);
    cr_assert_eq(tl_signin(cli, &me, 1, 11, GW), 0);
}

static void teardown(void)
{
    if (cli)
        client_close(cli);
    cli = NULL;
    tl_cleanup(&srv);
}

TestSuite(hostile, .init = setup, .fini = teardown, .timeout = 120);

/* ---- what "nothing was written" means ------------------------------------ */

static const char *const state_sql[] = {
    "SELECT count(*) FROM message",
    "SELECT count(*) FROM message WHERE status != 1 OR content IS NULL",
    "SELECT count(*) FROM inbox",
    "SELECT count(*) FROM group_copy",
    "SELECT count(*) FROM device",
    /* Any sign-in, sign-out or ack changes one of these. */
    "SELECT coalesce(sum(updated_at + online + ack_seq + length(gateway_id)), 0) FROM device",
    "SELECT count(*) FROM idempotency",
    "SELECT count(*) FROM room_message",
    "SELECT count(*) FROM room_seq",
    "SELECT count(*) FROM chat_group",
    "SELECT count(*) FROM group_member",
    "SELECT coalesce(sum(seq), 0) FROM user_last_seq",
};
#define NSTATE (sizeof state_sql / sizeof state_sql[0])

struct state {
    int64_t v[NSTATE];
};

static void snapshot(struct state *s)
{
    for (size_t i = 0; i < NSTATE; i++)
        s->v[i] = tl_query_int(srv.db, state_sql[i]);
}

static void expect_unchanged(const struct state *before, const char *what)
{
    struct state now;
    snapshot(&now);
    for (size_t i = 0; i < NSTATE; i++)
        cr_assert_eq(now.v[i], before->v[i], "%s wrote to the database: `%s` was %lld, is %lld",
                     what, state_sql[i], (long long)before->v[i], (long long)now.v[i]);
}

/* ---- building raw requests ------------------------------------------------ */

static uint8_t *packed(const ProtobufCMessage *m, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *b = malloc(*len ? *len : 1);
    cr_assert_not_null(b);
    protobuf_c_message_pack(m, b);
    return b;
}

/* Raw request bytes (owned). */
struct req {
    uint8_t *buf;
    size_t len;
};

/* GatewayRequest{conn, Input{type, request_id, data}}. */
static struct req envelope(const struct client_conn *c, int type, int64_t rid, const uint8_t *data,
                           size_t dlen)
{
    Pb__Input in = PB__INPUT__INIT;
    in.type = (Pb__PackageType)type;
    in.request_id = rid;
    in.data.data = (uint8_t *)data;
    in.data.len = dlen;
    Pb__GatewayRequest g = PB__GATEWAY_REQUEST__INIT;
    g.user_id = c->user_id;
    g.device_id = c->device_id;
    g.gateway_id = (char *)(c->gateway_id ? c->gateway_id : "");
    g.client_addr = (char *)(c->client_addr ? c->client_addr : "");
    g.input = &in;
    struct req r;
    r.buf = packed(&g.base, &r.len);
    return r;
}

static struct req envelope_of(const struct client_conn *c, int type, int64_t rid,
                              const ProtobufCMessage *data)
{
    size_t dlen = 0;
    uint8_t *d = data ? packed(data, &dlen) : NULL;
    struct req r = envelope(c, type, rid, d, dlen);
    free(d);
    return r;
}

/* The first n bytes of b. */
static struct req prefix_of(const uint8_t *b, size_t n)
{
    struct req r = {malloc(n ? n : 1), n};
    cr_assert_not_null(r.buf);
    memcpy(r.buf, b, n);
    return r;
}

/* A 1:1 text message from the session's user; fields the rows change are passed in. */
struct send_spec {
    bool raw_types;    /* send receiver_type and message_type as given, 0 included */
    int receiver_type; /* 0 = RT_USER */
    int64_t receiver_id;
    int message_type; /* 0 = MT_TEXT */
    size_t content_len;
    const int64_t *to;
    size_t n_to;
    Pb__Sender *sender;
};

static uint8_t *send_data(const struct send_spec *s, size_t *len)
{
    static uint8_t content[MAX_REQUEST];
    memset(content, 'x', sizeof content);
    Pb__Message m = PB__MESSAGE__INIT;
    m.receiver_type =
        s->receiver_type || s->raw_types ? s->receiver_type : PB__RECEIVER_TYPE__RT_USER;
    m.receiver_id = s->receiver_id;
    m.message_type = s->message_type || s->raw_types ? s->message_type : PB__MESSAGE_TYPE__MT_TEXT;
    m.message_content.data = content;
    m.message_content.len = s->content_len < sizeof content ? s->content_len : sizeof content;
    m.to_user_ids = (int64_t *)s->to;
    m.n_to_user_ids = s->n_to;
    m.sender = s->sender;
    Pb__MessageSend ms = PB__MESSAGE_SEND__INIT;
    ms.message = &m;
    return packed(&ms.base, len);
}

static struct req send_request(const struct client_conn *c, int64_t rid, const struct send_spec *s)
{
    size_t dlen;
    uint8_t *d = send_data(s, &dlen);
    struct req r = envelope(c, PB__PACKAGE_TYPE__PT_MESSAGE, rid, d, dlen);
    free(d);
    return r;
}

static struct req signin_request(const struct client_conn *c, int64_t user, int64_t device,
                                 const char *token)
{
    Pb__SignInInput in = PB__SIGN_IN_INPUT__INIT;
    in.user_id = user;
    in.device_id = device;
    in.token = (char *)token;
    return envelope_of(c, PB__PACKAGE_TYPE__PT_SIGN_IN, 0, &in.base);
}

/* Strict RFC 3629, independent of the server's own check. */
static bool utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p, n;
        uint32_t cp, min;
        if (c < 0x80) {
            p++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            n = 1, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        for (unsigned i = 1; i <= n; i++) {
            if ((p[i] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (p[i] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        p += n + 1;
    }
    return true;
}

/* ---- the table ------------------------------------------------------------ */

struct row {
    char name[128];
    struct req req;
    int expect;        /* pb.ErrorCode */
    const char *about; /* a substring of Output.message, or NULL */
};

struct rows {
    struct row *v;
    size_t n, cap;
};

static void row_add(struct rows *rs, int expect, const char *about, struct req req, const char *fmt,
                    ...) __attribute__((format(printf, 5, 6)));
static void row_add(struct rows *rs, int expect, const char *about, struct req req, const char *fmt,
                    ...)
{
    if (rs->n == rs->cap) {
        rs->cap = rs->cap ? rs->cap * 2 : 32;
        rs->v = realloc(rs->v, rs->cap * sizeof *rs->v);
        cr_assert_not_null(rs->v);
    }
    struct row *r = &rs->v[rs->n++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->name, sizeof r->name, fmt, ap);
    va_end(ap);
    r->req = req;
    r->expect = expect;
    r->about = about;
}

/* Each row: its exact code, a message on errors, and no change in the database. */
static void rows_run(struct rows *rs)
{
    struct state before;
    snapshot(&before);
    for (size_t i = 0; i < rs->n; i++) {
        struct row *r = &rs->v[i];
        Pb__Output *out = tl_call_raw(cli, r->req.buf, r->req.len);
        cr_assert_eq(out->code, r->expect, "%s: code %d (%s), expected %d", r->name, out->code,
                     out->message ? out->message : "", r->expect);
        if (r->expect != EC_OK)
            cr_assert(out->message && out->message[0], "%s: an error carries a message", r->name);
        if (r->about)
            cr_assert(out->message && strstr(out->message, r->about), "%s: message '%s' lacks '%s'",
                      r->name, out->message ? out->message : "", r->about);
        /* Output.message is a proto3 string: a strict client would refuse the whole reply. */
        cr_assert(utf8_valid(out->message), "%s: the reply's message is not UTF-8: %s", r->name,
                  out->message);
        pb__output__free_unpacked(out, NULL);
        expect_unchanged(&before, r->name);
        free(r->req.buf);
    }
    free(rs->v);
    *rs = (struct rows){0};
}

/* Sends req (and frees it); returns the reply's code. */
static int code_of(struct req req)
{
    Pb__Output *out = tl_call_raw(cli, req.buf, req.len);
    int code = out->code;
    pb__output__free_unpacked(out, NULL);
    free(req.buf);
    return code;
}

/* The service is alive, answers, and stops cleanly (under ASan: without leaks). */
static void expect_clean_exit(void)
{
    cr_assert_eq(tl_code(cli, &me, PB__PACKAGE_TYPE__PT_HEARTBEAT, 1, NULL), EC_OK);
    client_close(cli);
    cli = NULL;
    cr_assert_eq(tl_stop(&srv), 0, "unclean exit; see %s", srv.log);
}

/* ---- truncated and garbage protobuf --------------------------------------- */

Test(hostile, truncated_requests)
{
    struct rows rs = {0};
    size_t dlen;
    uint8_t *data = send_data(&(struct send_spec){.receiver_id = 2, .content_len = 40}, &dlen);
    struct req full = envelope(&me, PB__PACKAGE_TYPE__PT_MESSAGE, 500, data, dlen);
    /* Input is the envelope's last field: every cut either drops it or leaves it incomplete. */
    for (size_t cut = 0; cut < full.len; cut++)
        row_add(&rs, EC_BAD, NULL, prefix_of(full.buf, cut), "GatewayRequest cut at %zu of %zu",
                cut, full.len);
    for (size_t cut = 0; cut < dlen; cut++)
        row_add(&rs, EC_BAD, NULL,
                envelope(&me, PB__PACKAGE_TYPE__PT_MESSAGE, 600 + (int64_t)cut, data, cut),
                "MessageSend cut at %zu of %zu", cut, dlen);
    char *tok = tl_token(3, 31, 3600);
    struct client_conn fresh = {.gateway_id = GW, .client_addr = "10.0.0.3:5000"};
    struct req sfull = signin_request(&fresh, 3, 31, tok);
    /* The sign-in data alone, to cut it inside a whole envelope. */
    Pb__SignInInput si = PB__SIGN_IN_INPUT__INIT;
    si.user_id = 3;
    si.device_id = 31;
    si.token = tok;
    size_t sdlen;
    uint8_t *sdata = packed(&si.base, &sdlen);
    for (size_t cut = 0; cut < sdlen; cut += 7)
        row_add(&rs, EC_BAD, NULL, envelope(&fresh, PB__PACKAGE_TYPE__PT_SIGN_IN, 0, sdata, cut),
                "SignInInput cut at %zu of %zu", cut, sdlen);
    rows_run(&rs);

    /* Controls: the whole requests succeed, once each. */
    cr_assert_eq(code_of(full), EC_OK);
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM message"), 1);
    cr_assert_eq(code_of(sfull), EC_OK);
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM device WHERE device_id = 31"), 1);
    free(data);
    free(sdata);
    free(tok);
    expect_clean_exit();
}

/* Bytes that no message type decodes. */
static const struct {
    const char *name;
    uint8_t b[12];
    size_t n;
} undecodable[] = {
    {"length past the end", {0x0a, 0x7f, 0x01}, 3},
    {"varint longer than 10 bytes",
     {0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
     12},
    {"wire type 7", {0x0f, 0x00}, 2},
    {"field number 0", {0x00, 0x01}, 2},
    {"group start", {0x0b, 0x0c}, 2},
    {"fixed64 cut short", {0x09, 0x01, 0x02}, 3},
    {"tag varint cut short", {0x80}, 1},
};
#define NUNDECODABLE (sizeof undecodable / sizeof undecodable[0])

Test(hostile, garbage_input_data_for_each_type)
{
    static const int decoded[] = {
        PB__PACKAGE_TYPE__PT_SIGN_IN,     PB__PACKAGE_TYPE__PT_SYNC,
        PB__PACKAGE_TYPE__PT_MESSAGE,     PB__PACKAGE_TYPE__PT_SUBSCRIBE_ROOM,
        PB__PACKAGE_TYPE__PT_MESSAGE_ACK, PB__PACKAGE_TYPE__PT_RECALL,
    };
    struct rows rs = {0};
    for (size_t t = 0; t < sizeof decoded / sizeof decoded[0]; t++)
        for (size_t g = 0; g < NUNDECODABLE; g++)
            row_add(&rs, EC_BAD, "not a valid",
                    envelope(&me, decoded[t], 700 + (int64_t)g, undecodable[g].b, undecodable[g].n),
                    "type %d with %s", decoded[t], undecodable[g].name);
    /* A heartbeat has no data and never decodes any: garbage there is harmless and ignored.
     * (A sign-out likewise ignores its data; it is left out because it does write.) */
    for (size_t g = 0; g < NUNDECODABLE; g++)
        row_add(
            &rs, EC_OK, NULL,
            envelope(&me, PB__PACKAGE_TYPE__PT_HEARTBEAT, 800, undecodable[g].b, undecodable[g].n),
            "heartbeat with %s", undecodable[g].name);
    /* Garbage in the envelope itself. */
    for (size_t g = 0; g < NUNDECODABLE; g++)
        row_add(&rs, EC_BAD, "not a valid pb.GatewayRequest",
                prefix_of(undecodable[g].b, undecodable[g].n), "envelope of %s",
                undecodable[g].name);
    rows_run(&rs);
    expect_clean_exit();
}

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* A string of 0..max random bytes, no NUL, mostly ASCII: often valid UTF-8, often not. */
static char *random_string(uint64_t *s, char *buf, size_t max)
{
    size_t n = xorshift(s) % (max + 1);
    for (size_t i = 0; i < n; i++) {
        uint64_t r = xorshift(s);
        buf[i] = (char)(r % 20 ? 0x20 + r % 0x5f : 0x80 + r % 0x80);
    }
    buf[n] = 0;
    return buf;
}

/*
 * Plain random bytes, or an envelope with random values in its fields (an
 * Input of any type with random data), or such an envelope with one byte
 * changed or cut short.
 */
static size_t random_request(uint64_t *s, uint8_t *buf, size_t cap)
{
    uint64_t kind = xorshift(s) % 3;
    size_t n;
    if (kind == 0) {
        n = 1 + xorshift(s) % 200;
        for (size_t j = 0; j < n; j++)
            buf[j] = (uint8_t)xorshift(s);
        return n;
    }
    uint8_t data[40];
    char gw[16], addr[16];
    size_t dlen = xorshift(s) % sizeof data;
    for (size_t j = 0; j < dlen; j++)
        data[j] = (uint8_t)xorshift(s);
    Pb__Input in = PB__INPUT__INIT;
    in.type = (Pb__PackageType)((int)(xorshift(s) % 12) - 1);
    in.request_id = (int64_t)xorshift(s);
    in.data.data = data;
    in.data.len = dlen;
    Pb__GatewayRequest g = PB__GATEWAY_REQUEST__INIT;
    g.user_id = (int64_t)(xorshift(s) % 4 ? xorshift(s) % 50 : xorshift(s));
    g.device_id = (int64_t)(xorshift(s) % 4 ? xorshift(s) % 50 : xorshift(s));
    g.gateway_id = random_string(s, gw, sizeof gw - 1);
    g.client_addr = random_string(s, addr, sizeof addr - 1);
    g.input = xorshift(s) % 10 ? &in : NULL;
    n = pb__gateway_request__get_packed_size(&g);
    cr_assert_leq(n, cap);
    pb__gateway_request__pack(&g, buf);
    if (kind == 2 && n > 0) {
        if (xorshift(s) % 2)
            buf[xorshift(s) % n] = (uint8_t)xorshift(s);
        else
            n = xorshift(s) % n;
    }
    return n;
}

/*
 * The expected code comes from decoding the bytes here. Undecodable, no
 * Input, or a string that is not UTF-8: EC_BAD_REQUEST. Otherwise no session
 * can match (no random gateway_id is ours), so EC_UNAUTHENTICATED, except for
 * the types that need no session (a sign-in, the operator requests, a gateway
 * lease), which fail on their random data with either. A changed byte can turn
 * the type into any of them: seed 1795941986 made one a PT_ADMIN_ERASE, which
 * the service rightly answered EC_BAD_REQUEST, and seed 1795970351 a
 * PT_ADMIN_GROUP_MEMBERS (the group operator requests of issue 14 were missing
 * here: every PT_ADMIN_* is an operator request).
 */
static bool sessionless(int type)
{
    switch (type) {
    case PB__PACKAGE_TYPE__PT_SIGN_IN:
    case PB__PACKAGE_TYPE__PT_GATEWAY_LEASE:
    case PB__PACKAGE_TYPE__PT_ADMIN_RECALL:
    case PB__PACKAGE_TYPE__PT_ADMIN_KICK:
    case PB__PACKAGE_TYPE__PT_ADMIN_ERASE:
    case PB__PACKAGE_TYPE__PT_ADMIN_GROUP_CREATE:
    case PB__PACKAGE_TYPE__PT_ADMIN_GROUP_UPDATE:
    case PB__PACKAGE_TYPE__PT_ADMIN_GROUP_DISSOLVE:
    case PB__PACKAGE_TYPE__PT_ADMIN_GROUP_ADD_MEMBERS:
    case PB__PACKAGE_TYPE__PT_ADMIN_GROUP_REMOVE_MEMBERS:
    case PB__PACKAGE_TYPE__PT_ADMIN_GROUP_SET_ROLE:
    case PB__PACKAGE_TYPE__PT_ADMIN_GROUP_GET:
    case PB__PACKAGE_TYPE__PT_ADMIN_GROUP_MEMBERS:
    case PB__PACKAGE_TYPE__PT_ADMIN_SEND:
        return true;
    default:
        return false;
    }
}

Test(hostile, random_bytes)
{
    uint64_t seed = (uint64_t)time(NULL);
    const char *env = getenv("GIM_HOSTILE_SEED");
    if (env && *env)
        seed = strtoull(env, NULL, 10);
    printf("random_bytes: GIM_HOSTILE_SEED=%llu\n", (unsigned long long)seed);
    uint64_t s = seed * 2654435761u + 1;
    struct state before;
    snapshot(&before);
    int decodable = 0, unauth = 0;
    for (int i = 0; i < 400; i++) {
        uint8_t buf[512];
        size_t n = random_request(&s, buf, sizeof buf);
        int expect = EC_BAD;
        bool either = false;
        Pb__GatewayRequest *g = pb__gateway_request__unpack(NULL, n, buf);
        if (g && g->input && utf8_valid(g->gateway_id) && utf8_valid(g->client_addr)) {
            decodable++;
            expect = EC_UNAUTH;
            either = sessionless(g->input->type);
            cr_assert_str_neq(g->gateway_id, GW);
        }
        if (g)
            pb__gateway_request__free_unpacked(g, NULL);
        Pb__Output *out = tl_call_raw(cli, buf, n);
        if (either)
            cr_assert(out->code == EC_BAD || out->code == EC_UNAUTH, "seed %llu #%d: code %d (%s)",
                      (unsigned long long)seed, i, out->code, out->message);
        else
            cr_assert_eq(out->code, expect, "seed %llu #%d: code %d (%s), expected %d",
                         (unsigned long long)seed, i, out->code, out->message, expect);
        cr_assert(out->message && out->message[0], "seed %llu #%d: no message",
                  (unsigned long long)seed, i);
        cr_assert(utf8_valid(out->message), "seed %llu #%d: the message is not UTF-8",
                  (unsigned long long)seed, i);
        unauth += out->code == EC_UNAUTH;
        pb__output__free_unpacked(out, NULL);
    }
    expect_unchanged(&before, "random bytes");
    printf("random_bytes: %d of 400 decodable with valid strings, %d unauthenticated\n", decodable,
           unauth);
    expect_clean_exit();
}

/* ---- valid protobuf of the wrong type ------------------------------------- */

Test(hostile, wrong_message_type)
{
    struct rows rs = {0};
    Pb__SyncInput sync = PB__SYNC_INPUT__INIT;
    sync.seq = 5;
    Pb__MessageACK ack = PB__MESSAGE_ACK__INIT;
    ack.device_ack = 3;
    Pb__SignInInput si = PB__SIGN_IN_INPUT__INIT;
    si.user_id = 1;
    si.device_id = 11;
    si.token = "x";
    Pb__Message m = PB__MESSAGE__INIT;
    m.receiver_type = PB__RECEIVER_TYPE__RT_USER;
    m.receiver_id = 2;
    m.message_type = PB__MESSAGE_TYPE__MT_TEXT;
    Pb__MessageSend send = PB__MESSAGE_SEND__INIT;
    send.message = &m;
    Pb__RecallInput recall = PB__RECALL_INPUT__INIT;
    recall.seq = 4;

    /* Detectable: a field's wire type differs from the expected message's. */
    row_add(&rs, EC_BAD, "not a valid pb.MessageSend",
            envelope_of(&me, PB__PACKAGE_TYPE__PT_MESSAGE, 1, &sync.base),
            "SyncInput as MessageSend");
    row_add(&rs, EC_BAD, "not a valid pb.MessageSend",
            envelope_of(&me, PB__PACKAGE_TYPE__PT_MESSAGE, 2, &si.base),
            "SignInInput as MessageSend");
    row_add(&rs, EC_BAD, "not a valid pb.SyncInput",
            envelope_of(&me, PB__PACKAGE_TYPE__PT_SYNC, 3, &send.base), "MessageSend as SyncInput");
    row_add(&rs, EC_BAD, "not a valid pb.RecallInput",
            envelope_of(&me, PB__PACKAGE_TYPE__PT_RECALL, 4, &send.base),
            "MessageSend as RecallInput");
    row_add(&rs, EC_BAD, "not a valid pb.SignInInput",
            envelope_of(&me, PB__PACKAGE_TYPE__PT_SIGN_IN, 5, &send.base),
            "MessageSend as SignInInput");
    /* Decodes (unknown fields skipped) but is caught by validation. */
    /* gim's ack form (PT_MESSAGE + MessageACK) is an ack: this one is above the user's seqs. */
    row_add(&rs, EC_BAD, "above the highest seq",
            envelope_of(&me, PB__PACKAGE_TYPE__PT_MESSAGE, 6, &ack.base),
            "MessageACK as MessageSend: gim's ack form");
    row_add(&rs, EC_BAD, "user_id must be > 0",
            envelope_of(&me, PB__PACKAGE_TYPE__PT_SIGN_IN, 7, &recall.base),
            "RecallInput as SignInInput: no user_id");
    /* Undetectable: the fields line up, so it is a valid request of the named type. */
    row_add(&rs, PB__ERROR_CODE__EC_NOT_FOUND, NULL,
            envelope_of(&me, PB__PACKAGE_TYPE__PT_RECALL, 8, &sync.base),
            "SyncInput{5} as RecallInput{5}: a recall of a seq the user does not have");
    row_add(&rs, EC_OK, NULL, envelope_of(&me, PB__PACKAGE_TYPE__PT_SYNC, 9, &si.base),
            "SignInInput as SyncInput{seq = device_id}");
    row_add(&rs, EC_OK, NULL, envelope_of(&me, PB__PACKAGE_TYPE__PT_MESSAGE_ACK, 10, &send.base),
            "MessageSend as MessageACK{0}: acks nothing");
    rows_run(&rs);
    expect_clean_exit();
}

/* ---- unknown enum values, bad ids ----------------------------------------- */

Test(hostile, unknown_enum_values)
{
    struct rows rs = {0};
    static const int bad_mtypes[] = {99, 0, -1, PB__MESSAGE_TYPE__MT_CUSTOM + 1, INT32_MIN};
    for (size_t i = 0; i < sizeof bad_mtypes / sizeof bad_mtypes[0]; i++)
        row_add(&rs, EC_BAD, "unknown message_type",
                send_request(&me, 10 + (int64_t)i,
                             &(struct send_spec){.raw_types = true,
                                                 .receiver_type = PB__RECEIVER_TYPE__RT_USER,
                                                 .receiver_id = 2,
                                                 .message_type = bad_mtypes[i],
                                                 .content_len = 3}),
                "message_type %d", bad_mtypes[i]);
    static const int bad_rtypes[] = {99, 0, -1, PB__RECEIVER_TYPE__RT_ROOM + 1, INT32_MAX};
    for (size_t i = 0; i < sizeof bad_rtypes / sizeof bad_rtypes[0]; i++)
        row_add(&rs, EC_BAD, "unknown receiver_type",
                send_request(&me, 20 + (int64_t)i,
                             &(struct send_spec){.raw_types = true,
                                                 .receiver_type = bad_rtypes[i],
                                                 .receiver_id = 2,
                                                 .message_type = PB__MESSAGE_TYPE__MT_TEXT,
                                                 .content_len = 3}),
                "receiver_type %d", bad_rtypes[i]);
    static const int bad_ptypes[] = {99,        0,        -1, PB__PACKAGE_TYPE__PT_SIGN_OUT + 1,
                                     INT32_MAX, INT32_MIN};
    for (size_t i = 0; i < sizeof bad_ptypes / sizeof bad_ptypes[0]; i++)
        row_add(&rs, EC_BAD, "unknown package type",
                envelope(&me, bad_ptypes[i], 40 + (int64_t)i, NULL, 0), "PackageType %d",
                bad_ptypes[i]);
    rows_run(&rs);
    /* Control: the same send with known values is stored. */
    cr_assert_eq(
        code_of(send_request(&me, 50, &(struct send_spec){.receiver_id = 2, .content_len = 3})),
        EC_OK);
    expect_clean_exit();
}

Test(hostile, zero_and_negative_ids)
{
    struct rows rs = {0};
    static const int64_t bad[] = {0, -1, INT64_MIN};
    char *tok = tl_token(4, 41, 3600);
    struct client_conn fresh = {.gateway_id = GW, .client_addr = "10.0.0.4:5000"};
    for (size_t i = 0; i < 3; i++) {
        int64_t v = bad[i];
        row_add(&rs, EC_BAD, "receiver_id must be > 0",
                send_request(&me, 100 + (int64_t)i,
                             &(struct send_spec){.receiver_id = v, .content_len = 3}),
                "send to receiver_id %" PRId64, v);
        row_add(&rs, EC_BAD, "receiver_id must be > 0",
                send_request(&me, 110 + (int64_t)i,
                             &(struct send_spec){.receiver_type = PB__RECEIVER_TYPE__RT_GROUP,
                                                 .receiver_id = v,
                                                 .content_len = 3}),
                "send to group %" PRId64, v);
        row_add(&rs, EC_BAD, "receiver_id must be > 0",
                send_request(&me, 170 + (int64_t)i,
                             &(struct send_spec){.receiver_type = PB__RECEIVER_TYPE__RT_ROOM,
                                                 .receiver_id = v,
                                                 .content_len = 3}),
                "send to room %" PRId64, v);
        int64_t to[2] = {2, v};
        row_add(&rs, EC_BAD, "to_user_ids[1] must be > 0",
                send_request(
                    &me, 120 + (int64_t)i,
                    &(struct send_spec){.receiver_id = 2, .content_len = 3, .to = to, .n_to = 2}),
                "mention of user %" PRId64, v);
        row_add(&rs, EC_BAD, "user_id must be > 0", signin_request(&fresh, v, 41, tok),
                "sign-in with user_id %" PRId64, v);
        row_add(&rs, EC_BAD, "device_id must be > 0", signin_request(&fresh, 4, v, tok),
                "sign-in with device_id %" PRId64, v);
        Pb__RecallInput rc = PB__RECALL_INPUT__INIT;
        rc.seq = v;
        row_add(&rs, EC_BAD, "seq must be > 0",
                envelope_of(&me, PB__PACKAGE_TYPE__PT_RECALL, 130 + (int64_t)i, &rc.base),
                "recall of seq %" PRId64, v);
        /* Envelope ids of no session. */
        struct client_conn who = me;
        who.user_id = v;
        row_add(&rs, EC_UNAUTH, "no session",
                envelope(&who, PB__PACKAGE_TYPE__PT_HEARTBEAT, 1, NULL, 0),
                "envelope user_id %" PRId64, v);
        who = me;
        who.device_id = v;
        row_add(&rs, EC_UNAUTH, "no session",
                envelope(&who, PB__PACKAGE_TYPE__PT_HEARTBEAT, 1, NULL, 0),
                "envelope device_id %" PRId64, v);
    }
    for (size_t i = 1; i < 3; i++) { /* seq 0 / ack 0 are valid: "no local state", "nothing" */
        Pb__SyncInput sy = PB__SYNC_INPUT__INIT;
        sy.seq = bad[i];
        row_add(&rs, EC_BAD, "seq must be >= 0",
                envelope_of(&me, PB__PACKAGE_TYPE__PT_SYNC, 140 + (int64_t)i, &sy.base),
                "sync after seq %" PRId64, bad[i]);
        Pb__MessageACK ack = PB__MESSAGE_ACK__INIT;
        ack.device_ack = bad[i];
        row_add(&rs, EC_BAD, "device_ack must be >= 0",
                envelope_of(&me, PB__PACKAGE_TYPE__PT_MESSAGE_ACK, 150 + (int64_t)i, &ack.base),
                "ack of seq %" PRId64, bad[i]);
        Pb__SubscribeRoomInput room = PB__SUBSCRIBE_ROOM_INPUT__INIT;
        room.room_id = bad[i];
        row_add(&rs, EC_BAD, "room_id must be >= 0",
                envelope_of(&me, PB__PACKAGE_TYPE__PT_SUBSCRIBE_ROOM, 180 + (int64_t)i, &room.base),
                "subscribe to room %" PRId64, bad[i]);
        room.room_id = 5;
        room.seq = bad[i];
        row_add(&rs, EC_BAD, "seq must be >= 0",
                envelope_of(&me, PB__PACKAGE_TYPE__PT_SUBSCRIBE_ROOM, 190 + (int64_t)i, &room.base),
                "subscribe to room 5 after seq %" PRId64, bad[i]);
    }
    /* The other end of the range. */
    Pb__MessageACK ack = PB__MESSAGE_ACK__INIT;
    ack.device_ack = INT64_MAX;
    row_add(&rs, EC_BAD, "above the highest seq",
            envelope_of(&me, PB__PACKAGE_TYPE__PT_MESSAGE_ACK, 160, &ack.base),
            "ack of seq INT64_MAX");
    Pb__RecallInput rc = PB__RECALL_INPUT__INIT;
    rc.seq = INT64_MAX;
    row_add(&rs, PB__ERROR_CODE__EC_NOT_FOUND, NULL,
            envelope_of(&me, PB__PACKAGE_TYPE__PT_RECALL, 161, &rc.base),
            "recall of seq INT64_MAX");
    Pb__SyncInput sy = PB__SYNC_INPUT__INIT;
    sy.seq = INT64_MAX;
    row_add(&rs, EC_OK, NULL, envelope_of(&me, PB__PACKAGE_TYPE__PT_SYNC, 162, &sy.base),
            "sync after seq INT64_MAX: an empty page");
    row_add(&rs, PB__ERROR_CODE__EC_NOT_FOUND, "no group",
            send_request(&me, 163,
                         &(struct send_spec){.receiver_type = PB__RECEIVER_TYPE__RT_GROUP,
                                             .receiver_id = INT64_MAX,
                                             .content_len = 3}),
            "send to group INT64_MAX, which does not exist");
    rows_run(&rs);
    /* Control: the same sign-in with good ids succeeds. */
    cr_assert_eq(code_of(signin_request(&fresh, 4, 41, tok)), EC_OK);
    free(tok);
    expect_clean_exit();
}

/* ---- no session, bad tokens ----------------------------------------------- */

Test(hostile, every_type_from_a_device_that_never_signed_in)
{
    struct rows rs = {0};
    struct client_conn stranger = {.user_id = 7, .device_id = 77, .gateway_id = GW};
    Pb__SyncInput sy = PB__SYNC_INPUT__INIT;
    Pb__MessageACK ack = PB__MESSAGE_ACK__INIT;
    Pb__RecallInput rc = PB__RECALL_INPUT__INIT;
    rc.seq = 1;
    Pb__SubscribeRoomInput room = PB__SUBSCRIBE_ROOM_INPUT__INIT;
    room.room_id = 5;
    size_t dlen;
    uint8_t *send = send_data(&(struct send_spec){.receiver_id = 1, .content_len = 3}, &dlen);
    const struct {
        int type;
        const ProtobufCMessage *data;
    } types[] = {
        {PB__PACKAGE_TYPE__PT_SYNC, &sy.base},
        {PB__PACKAGE_TYPE__PT_HEARTBEAT, NULL},
        {PB__PACKAGE_TYPE__PT_SUBSCRIBE_ROOM, &room.base},
        {PB__PACKAGE_TYPE__PT_MESSAGE_ACK, &ack.base},
        {PB__PACKAGE_TYPE__PT_RECALL, &rc.base},
        {PB__PACKAGE_TYPE__PT_SIGN_OUT, NULL},
        {PB__PACKAGE_TYPE__PT_UNKNOWN, NULL},
        {99, NULL},
        {-1, NULL},
    };
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        row_add(&rs, EC_UNAUTH, "no session",
                envelope_of(&stranger, types[i].type, 1, types[i].data), "type %d from a stranger",
                types[i].type);
    row_add(&rs, EC_UNAUTH, "no session",
            envelope(&stranger, PB__PACKAGE_TYPE__PT_MESSAGE, 2, send, dlen),
            "send from a stranger");
    /* The signed-in device, presented with the wrong user or gateway, or none. */
    struct client_conn other = me;
    other.user_id = 2;
    row_add(&rs, EC_UNAUTH, "no session",
            envelope(&other, PB__PACKAGE_TYPE__PT_MESSAGE, 3, send, dlen),
            "send as user 2 from user 1's device");
    other = me;
    other.gateway_id = "gw-other";
    row_add(&rs, EC_UNAUTH, "no session",
            envelope(&other, PB__PACKAGE_TYPE__PT_MESSAGE, 4, send, dlen),
            "send through another gateway");
    other.gateway_id = NULL;
    row_add(&rs, EC_UNAUTH, "no session",
            envelope(&other, PB__PACKAGE_TYPE__PT_MESSAGE, 5, send, dlen),
            "send with no gateway_id");
    other = me;
    other.gateway_id = GW "\n";
    row_add(&rs, EC_UNAUTH, "no session",
            envelope(&other, PB__PACKAGE_TYPE__PT_SIGN_OUT, 6, NULL, 0),
            "sign-out with a gateway_id one byte longer");
    rows_run(&rs);
    /* Control: the send itself is fine from the session. */
    cr_assert_eq(code_of(envelope(&me, PB__PACKAGE_TYPE__PT_MESSAGE, 7, send, dlen)), EC_OK);
    free(send);
    expect_clean_exit();
}

/* base64url without padding */
static void b64url(const char *in, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t n = strlen(in), o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)(unsigned char)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)(unsigned char)in[i + 1] << 8;
        if (i + 2 < n)
            v |= (unsigned char)in[i + 2];
        out[o++] = tab[v >> 18 & 63];
        out[o++] = tab[v >> 12 & 63];
        if (i + 1 < n)
            out[o++] = tab[v >> 6 & 63];
        if (i + 2 < n)
            out[o++] = tab[v & 63];
    }
    out[o] = 0;
}

Test(hostile, bad_tokens)
{
    struct rows rs = {0};
    struct client_conn fresh = {.gateway_id = GW, .client_addr = "10.0.0.5:5000"};
    char *expired = tl_token(5, 51, -60);
    char *other_user = tl_token(6, 51, 3600);
    char *other_device = tl_token(5, 52, 3600);
    char *good = tl_token(5, 51, 3600);
    char *wrong_key = NULL;
    cr_assert_eq(auth_mint("not-the-secret", 5, 51, (int64_t)time(NULL) + 3600, &wrong_key),
                 GIM_OK);
    /* alg none: a header and claims that would pass if the signature were not required. */
    char hdr[64], claims[160], payload[256], none[400];
    b64url("{\"alg\":\"none\",\"typ\":\"JWT\"}", hdr);
    snprintf(claims, sizeof claims, "{\"sub\":\"5\",\"did\":51,\"exp\":%lld}",
             (long long)time(NULL) + 3600);
    b64url(claims, payload);
    snprintf(none, sizeof none, "%s.%s.", hdr, payload);
    /* A good token with its signature taken from another. */
    char spliced[1024];
    snprintf(spliced, sizeof spliced, "%.*s%s", (int)(strrchr(good, '.') - good), good,
             strrchr(wrong_key, '.'));
    char *huge = malloc(AUTH_TOKEN_MAX + 2);
    cr_assert_not_null(huge);
    memset(huge, 'a', AUTH_TOKEN_MAX + 1);
    huge[AUTH_TOKEN_MAX + 1] = 0;

    row_add(&rs, EC_UNAUTH, "expired", signin_request(&fresh, 5, 51, expired), "expired");
    row_add(&rs, EC_UNAUTH, "malformed", signin_request(&fresh, 5, 51, "not-a-token"), "not a JWT");
    row_add(&rs, EC_UNAUTH, "malformed", signin_request(&fresh, 5, 51, "a.b.c"),
            "three junk parts");
    row_add(&rs, EC_UNAUTH, NULL, signin_request(&fresh, 5, 51, ".."), "three empty parts");
    row_add(&rs, EC_UNAUTH, "bad signature", signin_request(&fresh, 5, 51, wrong_key),
            "signed with another secret");
    row_add(&rs, EC_UNAUTH, "bad signature", signin_request(&fresh, 5, 51, spliced),
            "signature of another token");
    row_add(&rs, EC_UNAUTH, NULL, signin_request(&fresh, 5, 51, none), "alg none");
    row_add(&rs, EC_UNAUTH, "another user/device", signin_request(&fresh, 5, 51, other_user),
            "token of another user");
    row_add(&rs, EC_UNAUTH, "another user/device", signin_request(&fresh, 5, 51, other_device),
            "token of another device");
    row_add(&rs, EC_BAD, "token is empty", signin_request(&fresh, 5, 51, ""), "empty token");
    row_add(&rs, EC_UNAUTH, "longer than", signin_request(&fresh, 5, 51, huge),
            "token over AUTH_TOKEN_MAX");
    rows_run(&rs);
    /* Control: the good token signs the device in. */
    cr_assert_eq(code_of(signin_request(&fresh, 5, 51, good)), EC_OK);
    cr_assert_eq(tl_query_int(srv.db, "SELECT online FROM device WHERE device_id = 51"), 1);
    free(expired);
    free(other_user);
    free(other_device);
    free(good);
    free(wrong_key);
    free(huge);
    expect_clean_exit();
}

/* ---- limits ---------------------------------------------------------------- */

Test(hostile, content_and_mentions_over_their_limits)
{
    struct rows rs = {0};
    int64_t to[MAX_MENTIONS + 1];
    for (int i = 0; i <= MAX_MENTIONS; i++)
        to[i] = 100 + i;
    row_add(
        &rs, PB__ERROR_CODE__EC_TOO_LARGE, "content is 1025 bytes",
        send_request(&me, 1, &(struct send_spec){.receiver_id = 2, .content_len = MAX_CONTENT + 1}),
        "content one byte over");
    row_add(&rs, PB__ERROR_CODE__EC_TOO_LARGE, "content",
            send_request(&me, 2, &(struct send_spec){.receiver_id = 2, .content_len = 4000}),
            "content of 4000 bytes, under the request limit");
    row_add(
        &rs, PB__ERROR_CODE__EC_TOO_LARGE, "9 mentions",
        send_request(&me, 3,
                     &(struct send_spec){
                         .receiver_id = 2, .content_len = 3, .to = to, .n_to = MAX_MENTIONS + 1}),
        "one mention over");
    row_add(&rs, PB__ERROR_CODE__EC_TOO_LARGE, "content",
            send_request(&me, 4,
                         &(struct send_spec){.receiver_type = PB__RECEIVER_TYPE__RT_GROUP,
                                             .receiver_id = 9,
                                             .content_len = MAX_CONTENT + 1}),
            "group send one byte over");
    rows_run(&rs);
    /* Controls: exactly at the limits is accepted. */
    cr_assert_eq(code_of(send_request(
                     &me, 5, &(struct send_spec){.receiver_id = 2, .content_len = MAX_CONTENT})),
                 EC_OK);
    cr_assert_eq(code_of(send_request(
                     &me, 6,
                     &(struct send_spec){
                         .receiver_id = 2, .content_len = 3, .to = to, .n_to = MAX_MENTIONS})),
                 EC_OK);
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM message"), 2);
    expect_clean_exit();
}

/* ---- valid requests that ask for what the caller may not do ---------------- */

static void sql(const char *stmt)
{
    sqlite3 *h = NULL;
    cr_assert_eq(sqlite3_open(srv.db, &h), SQLITE_OK);
    sqlite3_busy_timeout(h, 5000);
    cr_assert_eq(sqlite3_exec(h, stmt, NULL, NULL, NULL), SQLITE_OK, "%s: %s", stmt,
                 sqlite3_errmsg(h));
    sqlite3_close(h);
}

static struct req command_send(int64_t rid, const uint8_t *content, size_t len)
{
    Pb__Message m = PB__MESSAGE__INIT;
    m.receiver_type = PB__RECEIVER_TYPE__RT_USER;
    m.receiver_id = 2;
    m.message_type = PB__MESSAGE_TYPE__MT_COMMAND;
    m.message_content.data = (uint8_t *)content;
    m.message_content.len = len;
    Pb__MessageSend ms = PB__MESSAGE_SEND__INIT;
    ms.message = &m;
    return envelope_of(&me, PB__PACKAGE_TYPE__PT_MESSAGE, rid, &ms.base);
}

static struct req command_code(int64_t rid, int32_t code)
{
    Pb__Command cmd = PB__COMMAND__INIT;
    cmd.code = code;
    size_t len;
    uint8_t *b = packed(&cmd.base, &len);
    struct req r = command_send(rid, b, len);
    free(b);
    return r;
}

Test(hostile, requests_beyond_the_callers_rights)
{
    struct rows rs = {0};
    struct client_conn other;
    cr_assert_eq(tl_signin(cli, &other, 2, 21, GW), 0);
    /* A message from user 2 in user 1's inbox (seq 1), and a group user 1 is not in. */
    cr_assert_eq(
        code_of(send_request(&other, 1, &(struct send_spec){.receiver_id = 1, .content_len = 3})),
        EC_OK);
    sql("INSERT INTO chat_group (group_id, name, owner_id, created_at) VALUES (9, 'g', 2, 0);"
        "INSERT INTO group_member (group_id, user_id, role, joined_at) VALUES "
        "(9, 2, 'owner', 0), (9, 3, 'member', 0);");

    /* Command codes below 1000 are the IM's: code 1 would forge a recall notice. */
    row_add(&rs, PB__ERROR_CODE__EC_FORBIDDEN, "reserved", command_code(10, 1),
            "a forged recall notice");
    row_add(&rs, PB__ERROR_CODE__EC_FORBIDDEN, "reserved", command_code(11, 0), "command code 0");
    row_add(&rs, PB__ERROR_CODE__EC_FORBIDDEN, "reserved", command_code(12, -1), "command code -1");
    row_add(&rs, PB__ERROR_CODE__EC_FORBIDDEN, "reserved", command_code(13, 999),
            "command code 999");
    for (size_t g = 0; g < NUNDECODABLE; g++)
        row_add(&rs, EC_BAD, "not a pb.Command",
                command_send(20 + (int64_t)g, undecodable[g].b, undecodable[g].n),
                "MT_COMMAND content of %s", undecodable[g].name);
    row_add(&rs, PB__ERROR_CODE__EC_FORBIDDEN, "not a member",
            send_request(&me, 30,
                         &(struct send_spec){.receiver_type = PB__RECEIVER_TYPE__RT_GROUP,
                                             .receiver_id = 9,
                                             .content_len = 3}),
            "a send to a group of others");
    Pb__RecallInput rc = PB__RECALL_INPUT__INIT;
    rc.seq = 1;
    row_add(&rs, PB__ERROR_CODE__EC_FORBIDDEN, "only the sender",
            envelope_of(&me, PB__PACKAGE_TYPE__PT_RECALL, 31, &rc.base),
            "a recall of a message someone else sent");
    /* Strings the push path and the device table cannot take. */
    char *tok = tl_token(8, 81, 3600);
    char longest[PRESENCE_GATEWAY_MAX + 2], addr[300];
    memset(longest, 'g', sizeof longest - 1);
    longest[sizeof longest - 1] = 0;
    memset(addr, 'a', sizeof addr - 1);
    addr[sizeof addr - 1] = 0;
    struct client_conn c = {.gateway_id = longest, .client_addr = "10.0.0.8:5000"};
    row_add(&rs, EC_BAD, "gateway_id longer than", signin_request(&c, 8, 81, tok),
            "sign-in, gateway_id of %zu bytes", strlen(longest));
    c.gateway_id = "gw\nother";
    row_add(&rs, EC_BAD, "newline", signin_request(&c, 8, 81, tok),
            "sign-in, gateway_id with a newline (the push topic separator)");
    c.gateway_id = "";
    row_add(&rs, EC_BAD, "gateway_id is empty", signin_request(&c, 8, 81, tok),
            "sign-in, empty gateway_id");
    c = (struct client_conn){.gateway_id = GW, .client_addr = addr};
    row_add(&rs, EC_BAD, "client_addr longer than", signin_request(&c, 8, 81, tok),
            "sign-in, client_addr of %zu bytes", strlen(addr));
    rows_run(&rs);

    /* Controls: a business command, and the gateway_id at its longest, are fine. */
    cr_assert_eq(code_of(command_code(40, 1000)), EC_OK);
    longest[PRESENCE_GATEWAY_MAX] = 0;
    c = (struct client_conn){.gateway_id = longest, .client_addr = "10.0.0.8:5000"};
    cr_assert_eq(code_of(signin_request(&c, 8, 81, tok)), EC_OK);
    free(tok);
    expect_clean_exit();
}

/* ---- strings that are not UTF-8 ------------------------------------------- */

static const char *const not_utf8[] = {
    "\xff",             /* never in UTF-8 */
    "\x80",             /* a lone continuation byte */
    "\xc3",             /* a two-byte sequence cut short */
    "\xe2\x82",         /* a three-byte sequence cut short */
    "\xc0\xaf",         /* overlong '/' */
    "\xe0\x80\xaf",     /* overlong '/' in three bytes */
    "\xed\xa0\x80",     /* a UTF-16 surrogate */
    "\xf4\x90\x80\x80", /* above U+10FFFF */
    "\xf8\x88\x80\x80\x80",
};
#define NNOTUTF8 (sizeof not_utf8 / sizeof not_utf8[0])

Test(hostile, strings_that_are_not_utf8)
{
    struct rows rs = {0};
    char *tok = tl_token(8, 81, 3600);
    for (size_t i = 0; i < NNOTUTF8; i++) {
        char s[64], bad_tok[2048];
        snprintf(s, sizeof s, "gw-%s-x", not_utf8[i]);
        struct client_conn c = {.gateway_id = s, .client_addr = "10.0.0.8:5000"};
        row_add(&rs, EC_BAD, "UTF-8", signin_request(&c, 8, 81, tok), "sign-in, gateway_id #%zu",
                i);
        c = (struct client_conn){.gateway_id = GW, .client_addr = s};
        row_add(&rs, EC_BAD, "UTF-8", signin_request(&c, 8, 81, tok), "sign-in, client_addr #%zu",
                i);
        snprintf(bad_tok, sizeof bad_tok, "%s%s", tok, not_utf8[i]);
        c = (struct client_conn){.gateway_id = GW, .client_addr = "10.0.0.8:5000"};
        row_add(&rs, EC_BAD, "UTF-8", signin_request(&c, 8, 81, bad_tok), "sign-in, token #%zu", i);
        /* From the signed-in device: the envelope is checked before the session. */
        c = me;
        c.client_addr = s;
        row_add(&rs, EC_BAD, "UTF-8", envelope(&c, PB__PACKAGE_TYPE__PT_HEARTBEAT, 1, NULL, 0),
                "heartbeat, client_addr #%zu", i);
        c = me;
        c.gateway_id = s;
        row_add(&rs, EC_BAD, "UTF-8", envelope(&c, PB__PACKAGE_TYPE__PT_HEARTBEAT, 1, NULL, 0),
                "heartbeat, gateway_id #%zu", i);
        /* Sender is overwritten by the server, but a bad string is a bad request all the same. */
        Pb__Sender snd = PB__SENDER__INIT;
        snd.nickname = s;
        row_add(
            &rs, EC_BAD, "UTF-8",
            send_request(&me, 10 + (int64_t)i,
                         &(struct send_spec){.receiver_id = 2, .content_len = 3, .sender = &snd}),
            "send, Sender.nickname #%zu", i);
        snd = (Pb__Sender)PB__SENDER__INIT;
        snd.extra = s;
        row_add(
            &rs, EC_BAD, "UTF-8",
            send_request(&me, 30 + (int64_t)i,
                         &(struct send_spec){.receiver_id = 2, .content_len = 3, .sender = &snd}),
            "send, Sender.extra #%zu", i);
    }
    /* Long valid UTF-8 that the reply's message quotes: cut short, it must stay UTF-8. */
    static const char *const wide[] = {"\xc3\xa9", "\xe2\x9c\x93", "\xf0\x9f\x98\x80"};
    static char gws[3][4][400];
    for (size_t w = 0; w < 3; w++)
        for (size_t k = 0; k < 4; k++) {
            char *g = gws[w][k];
            size_t len = 0;
            for (size_t j = 0; j < k; j++)
                g[len++] = 'x';
            while (len + strlen(wide[w]) < sizeof gws[w][k])
                len += (size_t)sprintf(g + len, "%s", wide[w]);
            struct client_conn c = {.user_id = 7, .device_id = 77, .gateway_id = g};
            row_add(&rs, EC_UNAUTH, "no session",
                    envelope(&c, PB__PACKAGE_TYPE__PT_HEARTBEAT, 1, NULL, 0),
                    "a stranger at a gateway of %zu-byte characters after %zu ASCII",
                    strlen(wide[w]), k);
        }
    rows_run(&rs);

    /* Controls: real UTF-8 (2, 3 and 4 byte sequences) is accepted everywhere. */
    struct client_conn c = {.gateway_id = "gw-\xc3\xbc-\xe2\x9c\x93-\xf0\x9f\x98\x80",
                            .client_addr = "h\xc3\xb4te:1"};
    cr_assert_eq(code_of(signin_request(&c, 8, 81, tok)), EC_OK);
    c.user_id = 8;
    c.device_id = 81;
    cr_assert_eq(tl_code(cli, &c, PB__PACKAGE_TYPE__PT_HEARTBEAT, 1, NULL), EC_OK);
    Pb__Sender snd = PB__SENDER__INIT;
    snd.nickname = "Zo\xc3\xab \xf0\x9f\x98\x80";
    cr_assert_eq(
        code_of(send_request(
            &me, 99, &(struct send_spec){.receiver_id = 2, .content_len = 3, .sender = &snd})),
        EC_OK);
    free(tok);
    expect_clean_exit();
}

/* ---- over the receive limit ------------------------------------------------ */

/* A send from me of exactly n bytes on the wire (the content grows to fit). */
static struct req send_of_size(size_t n)
{
    for (size_t c = n > 64 ? n - 64 : 0; c < n; c++) {
        struct req r =
            send_request(&me, 77, &(struct send_spec){.receiver_id = 2, .content_len = c});
        if (r.len == n)
            return r;
        free(r.buf);
    }
    cr_assert_fail("cannot build a request of %zu bytes", n);
    return (struct req){0};
}

/* Reads exactly n bytes: 1, or 0 when the peer closed the connection, or -1 (timeout). */
static int read_full(int fd, uint8_t *b, size_t n)
{
    for (size_t got = 0; got < n;) {
        ssize_t k = recv(fd, b + got, n - got, 0);
        if (k == 0 || (k < 0 && errno == ECONNRESET))
            return 0;
        if (k < 0)
            return -1;
        got += (size_t)k;
    }
    return 1;
}

/*
 * One request over tcp in nng's SP framing, spoken by hand: a connection the
 * server drops is then seen as dropped (nng's REQ would just time out, and
 * Debian's nng 1.5.2 can hang closing such a socket). Handshake: "\0SP\0",
 * the protocol (REQ 0x30, REP 0x31) big-endian, two zero bytes. A message:
 * its length as 8 bytes big-endian, the REQ header (a request id with the top
 * bit set, 4 bytes), the body. Returns the reply's code, or -1 when the
 * server closed the connection without one.
 */
static int raw_tcp_code(struct req r)
{
    static const uint8_t hello[8] = {0, 'S', 'P', 0, 0x00, 0x30, 0, 0};
    static const uint8_t rep[8] = {0, 'S', 'P', 0, 0x00, 0x31, 0, 0};
    static const uint8_t id[4] = {0x80, 0, 0, 1};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)tcp_port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0, "connect: %s", strerror(errno));
    uint8_t peer[8];
    cr_assert_eq(send(fd, hello, sizeof hello, MSG_NOSIGNAL), (ssize_t)sizeof hello);
    cr_assert_eq(read_full(fd, peer, sizeof peer), 1, "no SP handshake from the server");
    cr_assert(memcmp(peer, rep, sizeof rep) == 0, "the server is not an SP REP socket");

    size_t flen = sizeof id + r.len;
    uint8_t *frame = malloc(8 + flen);
    cr_assert_not_null(frame);
    for (int i = 0; i < 8; i++)
        frame[i] = (uint8_t)((uint64_t)flen >> (56 - 8 * i));
    memcpy(frame + 8, id, sizeof id);
    memcpy(frame + 8 + sizeof id, r.buf, r.len);
    /* The server may close before it has all of a large frame: stop sending then. */
    for (size_t sent = 0; sent < 8 + flen;) {
        ssize_t k = send(fd, frame + sent, 8 + flen - sent, MSG_NOSIGNAL);
        if (k <= 0)
            break;
        sent += (size_t)k;
    }
    free(frame);
    free(r.buf);

    int code = -1;
    uint8_t hdr[8];
    int rc = read_full(fd, hdr, sizeof hdr);
    cr_assert_neq(rc, -1, "neither a reply nor a closed connection within 10 s");
    if (rc == 1) {
        uint64_t len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | hdr[i];
        cr_assert(len >= sizeof id && len < (1u << 20), "reply of %llu bytes",
                  (unsigned long long)len);
        uint8_t *body = malloc(len);
        cr_assert_not_null(body);
        cr_assert_eq(read_full(fd, body, len), 1, "the reply was cut short");
        cr_assert(memcmp(body, id, sizeof id) == 0, "the reply is for another request");
        Pb__Output *out = pb__output__unpack(NULL, len - sizeof id, body + sizeof id);
        cr_assert_not_null(out, "the reply is not a pb.Output");
        code = out->code;
        pb__output__free_unpacked(out, NULL);
        free(body);
    }
    close(fd);
    return code;
}

Test(hostile, request_over_the_receive_limit)
{
    struct state before;
    snapshot(&before);
    /* At the limit: read and answered (the content is too large, not the request). */
    cr_assert_eq(raw_tcp_code(send_of_size(MAX_REQUEST)), PB__ERROR_CODE__EC_TOO_LARGE,
                 "a request of exactly limits.max_request_bytes is read and answered");
    /* Over it: nng drops the connection before reading the request, and no reply comes. */
    cr_assert_eq(raw_tcp_code(send_of_size(MAX_REQUEST + 1)), -1, "one byte over is answered");
    struct req huge = {calloc(1, 1 << 20), 1 << 20};
    cr_assert_not_null(huge.buf);
    cr_assert_eq(raw_tcp_code(huge), -1, "1 MiB is answered");
    expect_unchanged(&before, "oversized requests");
    /* Still serving over tcp (and over ipc: expect_clean_exit). */
    cr_assert_eq(raw_tcp_code(send_request(
                     &me, 78, &(struct send_spec){.receiver_id = 2, .content_len = 10})),
                 EC_OK);
    expect_clean_exit();
}

/* ---- a burst from one device ----------------------------------------------- */

#define BURST_SENDS   3000
#define BURST_THREADS 8
#define BURST_USER    100
#define BURST_DEVICE  1001
#define BURST_TO      101
#define WATCH_USER    102
#define WATCH_DEVICE  1021
#define WATCH_MAX_MS  3000

struct burst {
    int idx;
    pthread_t thread;
    int64_t seqs[BURST_SENDS / BURST_THREADS];
    int n, failed;
    char why[160];
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* No cr_assert off the test's thread: results are checked after the join. */
static void *burst_main(void *arg)
{
    struct burst *b = arg;
    struct gim_client *c = NULL;
    struct client_conn conn = {.user_id = BURST_USER,
                               .device_id = BURST_DEVICE,
                               .gateway_id = GW,
                               .client_addr = "10.0.0.100:5000"};
    if (client_open(&c, srv.url, 10000, 3) != GIM_OK) {
        snprintf(b->why, sizeof b->why, "cannot open a client");
        b->failed++;
        return NULL;
    }
    Pb__Message m = PB__MESSAGE__INIT;
    m.receiver_type = PB__RECEIVER_TYPE__RT_USER;
    m.receiver_id = BURST_TO;
    m.message_type = PB__MESSAGE_TYPE__MT_TEXT;
    uint8_t content[32];
    Pb__MessageSend ms = PB__MESSAGE_SEND__INIT;
    ms.message = &m;
    for (int i = 0; i < BURST_SENDS / BURST_THREADS; i++) {
        int64_t rid = 1 + (int64_t)b->idx * 100000 + i;
        int n = snprintf((char *)content, sizeof content, "burst %d/%d", b->idx, i);
        m.message_content.data = content;
        m.message_content.len = (size_t)n;
        Pb__Output *out = NULL;
        gim_err e = client_request(c, &conn, PB__PACKAGE_TYPE__PT_MESSAGE, rid, &ms.base, &out);
        if (e != GIM_OK || out->code != EC_OK) {
            if (!b->failed++)
                snprintf(b->why, sizeof b->why, "request %lld: %s %s", (long long)rid,
                         gim_err_name(e), out && out->message ? out->message : "");
        } else {
            Pb__MessageSend *r = pb__message_send__unpack(NULL, out->data.len, out->data.data);
            if (r && r->message)
                b->seqs[b->n++] = r->message->seq;
            else if (!b->failed++)
                snprintf(b->why, sizeof b->why, "request %lld: reply has no message",
                         (long long)rid);
            if (r)
                pb__message_send__free_unpacked(r, NULL);
        }
        if (out)
            pb__output__free_unpacked(out, NULL);
    }
    client_close(c);
    return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

Test(hostile, burst_from_one_device)
{
    struct client_conn sender, watcher;
    cr_assert_eq(tl_signin(cli, &sender, BURST_USER, BURST_DEVICE, GW), 0);
    cr_assert_eq(tl_signin(cli, &watcher, WATCH_USER, WATCH_DEVICE, GW), 0);
    static struct burst b[BURST_THREADS];
    memset(b, 0, sizeof b);
    int64_t t0 = now_ms();
    for (int i = 0; i < BURST_THREADS; i++) {
        b[i].idx = i;
        cr_assert_eq(pthread_create(&b[i].thread, NULL, burst_main, &b[i]), 0);
    }
    /* Meanwhile another device's heartbeats and syncs. */
    int64_t worst = 0;
    int polls = 0, joined = 0;
    bool done[BURST_THREADS] = {false};
    for (;;) {
        for (int i = 0; i < BURST_THREADS; i++)
            if (!done[i] && pthread_tryjoin_np(b[i].thread, NULL) == 0)
                done[i] = true, joined++;
        if (joined == BURST_THREADS)
            break;
        int64_t s = now_ms();
        cr_assert_eq(tl_code(cli, &watcher, PB__PACKAGE_TYPE__PT_HEARTBEAT, 1, NULL), EC_OK);
        Pb__SyncInput sy = PB__SYNC_INPUT__INIT;
        cr_assert_eq(tl_code(cli, &watcher, PB__PACKAGE_TYPE__PT_SYNC, 2, &sy.base), EC_OK);
        int64_t d = now_ms() - s;
        worst = d > worst ? d : worst;
        polls++;
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    int64_t took = now_ms() - t0;
    printf("burst: %d sends in %lld ms; %d heartbeat+sync polls meanwhile, slowest %lld ms\n",
           BURST_SENDS, (long long)took, polls, (long long)worst);

    static int64_t all[BURST_SENDS];
    int n = 0;
    for (int i = 0; i < BURST_THREADS; i++) {
        cr_assert_eq(b[i].failed, 0, "thread %d: %d failed, first: %s", i, b[i].failed, b[i].why);
        memcpy(all + n, b[i].seqs, (size_t)b[i].n * sizeof *all);
        n += b[i].n;
    }
    cr_assert_eq(n, BURST_SENDS);
    qsort(all, (size_t)n, sizeof *all, cmp_i64);
    for (int i = 0; i < n; i++)
        cr_assert_eq(all[i], i + 1, "the sender's seqs have a gap or a repeat at %d: %lld", i,
                     (long long)all[i]);
    cr_assert(polls > 0, "the burst ended before any poll");
    cr_assert_lt(worst, WATCH_MAX_MS, "a heartbeat+sync took %lld ms during the burst",
                 (long long)worst);
    char q[160];
    snprintf(q, sizeof q, "SELECT count(*) FROM inbox WHERE user_id = %d", BURST_TO);
    cr_assert_eq(tl_query_int(srv.db, q), BURST_SENDS);
    snprintf(q, sizeof q, "SELECT max(seq) FROM inbox WHERE user_id = %d", BURST_TO);
    cr_assert_eq(tl_query_int(srv.db, q), BURST_SENDS);
    snprintf(q, sizeof q, "SELECT seq FROM user_last_seq WHERE user_id = %d", BURST_USER);
    cr_assert_eq(tl_query_int(srv.db, q), BURST_SENDS);
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM message"), BURST_SENDS);
    snprintf(q, sizeof q, "SELECT count(*) FROM idempotency WHERE device_id = %d", BURST_DEVICE);
    cr_assert_eq(tl_query_int(srv.db, q), BURST_SENDS);
    expect_clean_exit();
}
