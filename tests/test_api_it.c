/*
 * The business API over HTTP (api.c, apiroute.c): the real binary with
 * api.listen on a free port, raw HTTP/1.1 over real TCP (httptestlib), the
 * real SQLite file read back with SQL. Covers the OpenAPI file against the
 * route table and the running server, hostile input, recall/kick/erase over
 * HTTP (success, bad input that writes nothing, wrong or missing token,
 * retries), requests in flight while the writer waits, the api.* config
 * keys, and https:// with api.cert_file/api.key_file (curl as the client).
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "apiroute.h"
#include "auth.h"
#include "config.h"
#include "httptestlib.h"
#include "testlib.h"

#define OPENAPI  GIM_SOURCE_DIR "/docs/openapi.json"
#define MAX_BODY 4096

static struct tl_server srv;
static struct gim_client *cli;
static int port;
static char *op; /* a valid operator token */

static void start(void)
{
    char extra[256];
    port = tl_free_port();
    snprintf(extra, sizeof extra,
             "api: {listen: \"http://127.0.0.1:%d\", max_body_bytes: %d, workers: 2}", port,
             MAX_BODY);
    tl_start(&srv, extra);
    cli = tl_client(&srv);
    cr_assert_eq(auth_mint_admin(TL_SECRET, time(NULL) + 600, &op), GIM_OK);
}

static void teardown(void)
{
    client_close(cli);
    cr_expect_eq(tl_stop(&srv), 0, "gim-logic exits 0 after the API's requests");
    tl_cleanup(&srv);
    free(op);
}

static int64_t qi(const char *fmt, long long arg)
{
    char buf[512];
    snprintf(buf, sizeof buf, fmt, arg);
    return tl_query_int(srv.db, buf);
}

/* Everything that a write could have touched, summed: equal before and after = nothing written. */
static int64_t fingerprint(void)
{
    return tl_query_int(srv.db, "SELECT (SELECT count(*) FROM message) * 1000003 + "
                                "(SELECT count(*) FROM inbox) * 1009 + "
                                "(SELECT count(*) FROM device WHERE online = 1) * 31 + "
                                "(SELECT count(*) FROM message WHERE status = 2) * 7 + "
                                "(SELECT count(*) FROM erasure)");
}

static int64_t send_text(const struct client_conn *conn, int64_t to, const char *text,
                         int64_t request_id)
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
    Pb__Output *out = tl_call(cli, conn, PB__PACKAGE_TYPE__PT_MESSAGE, request_id, &ms.base);
    cr_assert_eq(out->code, 0, "send failed: %s", out->message);
    Pb__MessageSend *reply = pb__message_send__unpack(NULL, out->data.len, out->data.data);
    int64_t seq = reply->message->seq;
    pb__message_send__free_unpacked(reply, NULL);
    pb__output__free_unpacked(out, NULL);
    return seq;
}

static json_t *body_json(const struct ht_resp *r)
{
    json_t *j = ht_json(r);
    cr_assert_not_null(j, "status %d, body not JSON: %s", r->status, r->body);
    return j;
}

static int64_t jint(const json_t *o, const char *k)
{
    const json_t *v = json_object_get(o, k);
    cr_assert(json_is_integer(v), "field %s missing or not an integer", k);
    return (int64_t)json_integer_value(v);
}

static bool jbool(const json_t *o, const char *k)
{
    const json_t *v = json_object_get(o, k);
    cr_assert(json_is_boolean(v), "field %s missing or not a boolean", k);
    return json_is_true(v);
}

/* ---- the OpenAPI file ----------------------------------------------------- */

static json_t *openapi(void)
{
    json_error_t e;
    json_t *doc = json_load_file(OPENAPI, JSON_REJECT_DUPLICATES, &e);
    cr_assert_not_null(doc, "%s: %s (line %d)", OPENAPI, e.text, e.line);
    cr_assert_str_eq(json_string_value(json_object_get(doc, "openapi")), "3.0.3");
    return doc;
}

static void lower(const char *s, char *out, size_t n)
{
    size_t i = 0;
    for (; s[i] && i + 1 < n; i++)
        out[i] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] + 32 : s[i]);
    out[i] = '\0';
}

/* Every route the server serves (its table, not a list of our own) is documented. */
Test(api_openapi, every_served_route_is_documented)
{
    json_t *doc = openapi(), *paths = json_object_get(doc, "paths");
    size_t n = 0;
    const struct apiroute *r = apiroute_table(&n);
    cr_assert_gt(n, 0);
    for (size_t i = 0; i < n; i++) {
        char m[16];
        lower(r[i].method, m, sizeof m);
        const json_t *op_ = json_object_get(json_object_get(paths, r[i].pattern), m);
        cr_expect_not_null(op_, "%s %s is served but not in docs/openapi.json", r[i].method,
                           r[i].pattern);
        /* And it documents the status a success really has. */
        char st[8];
        snprintf(st, sizeof st, "%d", r[i].ok_status);
        cr_expect_not_null(json_object_get(json_object_get(op_, "responses"), st),
                           "%s %s: success status %s not documented", r[i].method, r[i].pattern,
                           st);
    }
    json_decref(doc);
}

/* Every documented operation answers on the running server: never 404 or 405 from the router. */
Test(api_openapi, every_documented_route_answers, .init = start, .fini = teardown)
{
    json_t *doc = openapi(), *paths = json_object_get(doc, "paths");
    const char *path;
    json_t *item;
    int ops = 0;
    json_object_foreach(paths, path, item)
    {
        /* The path with each {param} as 1. */
        char real[256] = "";
        for (const char *p = path; *p;) {
            if (*p == '{') {
                strncat(real, "1", sizeof real - strlen(real) - 1);
                p = strchr(p, '}') + 1;
            } else {
                strncat(real, p, 1);
                p++;
            }
        }
        const char *method;
        json_t *o;
        json_object_foreach(item, method, o)
        {
            char up[16];
            size_t i = 0;
            for (; method[i] && i < sizeof up - 1; i++)
                up[i] = (char)(method[i] - 32);
            up[i] = '\0';
            struct ht_resp r;
            /* No token and an empty object: the route is found, the handler refuses the caller. */
            ht_call(port, up, real, NULL, NULL, "{}", &r);
            cr_expect_eq(r.status, 401, "%s %s answered %d %s (documented: want the handler's 401)",
                         up, real, r.status, r.body);
            cr_expect_str_eq(ht_code(&r), "EC_UNAUTHENTICATED", "%s %s", up, real);
            ht_resp_free(&r);
            ops++;
        }
    }
    size_t n = 0;
    apiroute_table(&n);
    cr_expect_eq((size_t)ops, n, "docs/openapi.json has %d operations, the server serves %zu", ops,
                 n);
    json_decref(doc);
}

/* ---- hostile input -------------------------------------------------------- */

/*
 * After hostile input, the API still answers a request that reaches the
 * writer: the erase of a user with nothing to erase (200).
 */
static void expect_still_serving(const char *what)
{
    struct ht_resp r;
    ht_call(port, "POST", "/v1/users/1/erase", op, NULL, "{}", &r);
    cr_expect_eq(r.status, 200, "%s: %d %s", what, r.status, r.body);
    cr_expect_str_eq(ht_code(&r), "", "%s: %s", what, r.body);
    ht_resp_free(&r);
}

Test(api_hostile, malformed_json_wrong_types_unknown_fields, .init = start, .fini = teardown)
{
    static const struct {
        const char *body, *says;
    } cases[] = {
        {"{", "malformed JSON"},
        {"{\"max_rows\": 1,}", "malformed JSON"},
        {"[1,2]", "must be a JSON object"},
        {"\"x\"", "malformed JSON"}, /* jansson decodes only objects and arrays by default */
        {"{\"max_rows\": \"10\"}", "field 'max_rows' must be an integer"},
        {"{\"max_rows\": 1.5}", "field 'max_rows' must be an integer"},
        {"{\"max_rows\": true}", "field 'max_rows' must be an integer"},
        {"{\"max_rows\": 99999999999}", "32-bit"},
        {"{\"max_rows\": 1, \"max_rows\": 2}", "malformed JSON"},
        {"{\"max_rowz\": 1, \"sneaky\": {}}", "unknown fields in body: 'max_rowz', 'sneaky'"},
        {"{\"max_rows\": 123456789012345678901234567890}", "malformed JSON"},
        {"{\"a\": \"\\u0000\"}", "malformed JSON"},
        {"{\"a\": \"\xff\"}", "malformed JSON"},
    };
    int64_t before = fingerprint();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct ht_resp r;
        ht_call(port, "POST", "/v1/users/1/erase", op, NULL, cases[i].body, &r);
        cr_expect_eq(r.status, 400, "%s: status %d %s", cases[i].body, r.status, r.body);
        cr_expect_str_eq(ht_code(&r), "EC_BAD_REQUEST", "%s", cases[i].body);
        cr_expect(strstr(r.body, cases[i].says), "%s: want '%s' in %s", cases[i].body,
                  cases[i].says, r.body);
        ht_resp_free(&r);
    }
    cr_expect_eq(fingerprint(), before, "a refused request wrote nothing");
}

Test(api_hostile, oversized_and_lying_bodies, .init = start, .fini = teardown)
{
    /* Announced larger than api.max_body_bytes: 413 before the body is read, connection closed. */
    int fd = ht_connect(port);
    char req[512];
    int n = snprintf(req, sizeof req,
                     "POST /v1/users/1/erase HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                     "Content-Length: %d\r\n\r\n",
                     op, MAX_BODY + 1);
    ht_send(fd, req, (size_t)n);
    struct ht_resp r;
    ht_read(fd, &r, 5000);
    cr_expect_eq(r.status, 413, "%d %s", r.status, r.body);
    cr_expect_str_eq(ht_code(&r), "EC_TOO_LARGE");
    cr_expect(r.closed, "the unread body must not be taken for the next request");
    ht_resp_free(&r);
    close(fd);

    /* A real oversized body, sent whole. */
    char *big = malloc(MAX_BODY * 4);
    memset(big, ' ', MAX_BODY * 4 - 1);
    big[0] = '{';
    big[MAX_BODY * 4 - 2] = '}';
    big[MAX_BODY * 4 - 1] = '\0';
    ht_call(port, "POST", "/v1/users/1/erase", op, NULL, big, &r);
    cr_expect_eq(r.status, 413);
    ht_resp_free(&r);
    free(big);

    /* A Content-Length of 2^64 and one that is not a number. */
    static const char *const lengths[] = {"18446744073709551616", "-1", "12abc", "0x10"};
    for (size_t i = 0; i < sizeof lengths / sizeof lengths[0]; i++) {
        fd = ht_connect(port);
        n = snprintf(req, sizeof req,
                     "POST /v1/users/1/erase HTTP/1.1\r\nHost: x\r\nContent-Length: %s\r\n\r\n",
                     lengths[i]);
        ht_send(fd, req, (size_t)n);
        ht_read(fd, &r, 5000);
        cr_expect(r.status == 400 || r.status == 413, "Content-Length %s: %d", lengths[i],
                  r.status);
        ht_resp_free(&r);
        close(fd);
    }

    /* Chunked: refused (nng 1.5.2 reads no chunked bodies), connection closed. */
    fd = ht_connect(port);
    n = snprintf(req, sizeof req,
                 "POST /v1/users/1/erase HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "2\r\n{}\r\n0\r\n\r\n");
    ht_send(fd, req, (size_t)n);
    ht_read(fd, &r, 5000);
    cr_expect_eq(r.status, 400, "%d %s", r.status, r.body);
    cr_expect(r.closed);
    ht_resp_free(&r);
    close(fd);

    /* A body announced but never sent: the connection is dropped after the timeout, and the
     * server answers others meanwhile. */
    int slow = ht_connect(port);
    n = snprintf(req, sizeof req,
                 "POST /v1/users/1/erase HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{");
    ht_send(slow, req, (size_t)n);
    ht_call(port, "POST", "/v1/users/1/erase", NULL, NULL, "{}", &r);
    cr_expect_eq(r.status, 401);
    ht_resp_free(&r);
    close(slow);
}

Test(api_hostile, path_tricks, .init = start, .fini = teardown)
{
    static const struct {
        const char *method, *path;
        int status;
    } cases[] = {
        {"GET", "/v1/groups/../x", 404},
        {"GET", "/v1/groups/..%2Fx", 400},
        {"GET", "/v1/groups/1abc", 400},
        {"GET", "/v1/groups/-1", 400},
        {"GET", "/v1/groups/0", 400},
        {"GET", "/v1/groups/01", 400},
        {"GET", "/v1/groups/+1", 400},
        {"GET", "/v1/groups/9223372036854775808", 400},
        {"GET", "/v1/groups/99999999999999999999999999999999", 400},
        {"GET", "/v1/groups/1%00", 400},
        {"GET", "/v1/groups/%00", 400},
        {"GET", "/v1//groups/1", 404},
        {"GET", "/v1/groups//1", 404},
        {"GET", "/v1/groups/1/", 404},
        {"GET", "/v1/", 404},
        {"GET", "/v1", 404},
        {"GET", "/v1/nope", 404},
        {"DELETE", "/v1/devices/1/session/extra", 404},
        {"PUT", "/v1/groups/1/members/abc/role", 400},
        {"GET", "/v1/devices/1/session", 405},
        {"HEAD", "/v1/groups/1/members", 405},
        {"BREW", "/v1/messages", 405},
        {"POST", "/v1/users/1/messages/0/recall", 400},
    };
    int64_t before = fingerprint();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct ht_resp r;
        ht_call(port, cases[i].method, cases[i].path, op, NULL, NULL, &r);
        cr_expect_eq(r.status, cases[i].status, "%s %s: %d %s", cases[i].method, cases[i].path,
                     r.status, r.body);
        if (strcmp(cases[i].method, "HEAD") != 0)
            cr_expect_neq(ht_code(&r)[0], '\0', "%s %s: a JSON error body", cases[i].method,
                          cases[i].path);
        if (r.status == 405) {
            char allow[64];
            cr_expect(ht_header(&r, "Allow", allow, sizeof allow), "405 names the methods");
        }
        ht_resp_free(&r);
    }
    cr_expect_eq(fingerprint(), before);
    expect_still_serving("after path tricks");
}

Test(api_hostile, missing_wrong_and_user_tokens, .init = start, .fini = teardown)
{
    char *user = tl_token(1, 11, 600), *expired = NULL, *other = NULL;
    cr_assert_eq(auth_mint_admin(TL_SECRET, time(NULL) - 10, &expired), GIM_OK);
    cr_assert_eq(auth_mint_admin("another-secret", time(NULL) + 600, &other), GIM_OK);
    struct client_conn a = {.gateway_id = "gwA", .client_addr = "t"};
    cr_assert_eq(tl_signin(cli, &a, 1, 11, "gwA"), 0);
    const char *tokens[] = {NULL, "", "garbage", user, expired, other};
    int64_t before = fingerprint();
    for (size_t i = 0; i < sizeof tokens / sizeof tokens[0]; i++) {
        struct ht_resp r;
        ht_call(port, "DELETE", "/v1/devices/11/session", tokens[i], NULL, NULL, &r);
        cr_expect_eq(r.status, 401, "token %zu: %d %s", i, r.status, r.body);
        cr_expect_str_eq(ht_code(&r), "EC_UNAUTHENTICATED");
        char www[32];
        cr_expect(ht_header(&r, "WWW-Authenticate", www, sizeof www));
        ht_resp_free(&r);
    }
    /* "Basic" is not a bearer token. */
    int fd = ht_connect(port);
    const char *basic = "DELETE /v1/devices/11/session HTTP/1.1\r\nHost: x\r\n"
                        "Authorization: Basic Z2ltOmdpbQ==\r\n\r\n";
    ht_send(fd, basic, strlen(basic));
    struct ht_resp r;
    ht_read(fd, &r, 5000);
    cr_expect_eq(r.status, 401);
    ht_resp_free(&r);
    close(fd);
    cr_expect_eq(fingerprint(), before, "device 11 is still online: nothing was written");
    cr_expect_eq(qi("SELECT online FROM device WHERE device_id = %lld", 11), 1);
    free(user);
    free(expired);
    free(other);
}

/*
 * Bytes outside ASCII in the request line or a header: nng's parser drops the connection
 * before the API sees the request (so nothing can be run or quoted back), and the service
 * goes on serving.
 */
Test(api_hostile, non_ascii_request_is_dropped, .init = start, .fini = teardown)
{
    static const char *const reqs[] = {
        "GET /v1/groups/1/members?\xff\xfe=1 HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /v1/groups/1\xff HTTP/1.1\r\nHost: x\r\n\r\n",
        "POST /v1/groups HTTP/1.1\r\nHost: x\r\nIdempotency-Key: \xff\xfe\r\n"
        "Content-Length: 2\r\n\r\n{}",
    };
    int64_t before = fingerprint();
    for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++) {
        int fd = ht_connect(port);
        ht_send(fd, reqs[i], strlen(reqs[i]));
        struct ht_resp r;
        ht_read(fd, &r, 5000);
        cr_expect(r.status == 0 || r.status == 400, "request %zu: %d %s", i, r.status, r.body);
        ht_resp_free(&r);
        close(fd);
    }
    cr_expect_eq(fingerprint(), before);
    expect_still_serving("after non-ASCII requests");
}

/* A client that sends "Expect: 100-continue" (curl does above 1 KiB) gets the interim answer
 * and then its real one, instead of waiting out its own timer. */
Test(api_hostile, expect_100_continue, .init = start, .fini = teardown)
{
    int fd = ht_connect(port);
    char req[512];
    int n = snprintf(req, sizeof req,
                     "POST /v1/users/1/erase HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                     "Content-Length: 2\r\nExpect: 100-continue\r\n\r\n",
                     op);
    ht_send(fd, req, (size_t)n);
    struct ht_resp r;
    ht_read(fd, &r, 5000);
    cr_expect_eq(r.status, 100, "want the interim answer before the body is sent: %d", r.status);
    ht_resp_free(&r);
    ht_send(fd, "{}", 2);
    ht_read(fd, &r, 5000);
    cr_expect_eq(r.status, 200, "%d %s", r.status, r.body);
    ht_resp_free(&r);
    close(fd);
}

/* A stop does not wait for a body that is still on its way. */
Test(api_hostile, stop_does_not_wait_for_a_body, .init = start)
{
    int fd = ht_connect(port);
    const char *req = "POST /v1/users/1/erase HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{";
    ht_send(fd, req, strlen(req));
    usleep(200 * 1000); /* the service has read the header and waits for the body */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cr_expect_eq(tl_stop(&srv), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    /* The body's own timeout is 10 s (api.c, BODY_TIMEOUT_MS): well under it, it was not waited
     * for. */
    cr_expect_lt(s, 8.0, "the stop took %.1f s", s);
    close(fd);
    tl_cleanup(&srv);
    free(op);
}

/* ---- the operations ------------------------------------------------------- */

Test(api_ops, kick, .init = start, .fini = teardown)
{
    struct client_conn a = {.gateway_id = "gwA", .client_addr = "t"};
    cr_assert_eq(tl_signin(cli, &a, 7, 71, "gwA"), 0);
    struct ht_resp r;
    ht_call(port, "DELETE", "/v1/devices/71/session", op, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "%d %s", r.status, r.body);
    json_t *j = body_json(&r);
    cr_expect_eq(jint(j, "user_id"), 7);
    cr_expect(jbool(j, "was_online"));
    cr_expect_str_eq(json_string_value(json_object_get(j, "gateway_id")), "gwA");
    json_decref(j);
    ht_resp_free(&r);
    cr_expect_eq(qi("SELECT online FROM device WHERE device_id = %lld", 71), 0);
    /* The device's session is gone: its next request is unauthenticated. */
    cr_expect_eq(tl_code(cli, &a, PB__PACKAGE_TYPE__PT_HEARTBEAT, 5, NULL),
                 PB__ERROR_CODE__EC_UNAUTHENTICATED);
    /* A retry succeeds and changes nothing. */
    ht_call(port, "DELETE", "/v1/devices/71/session", op, "k1", NULL, &r);
    cr_assert_eq(r.status, 200);
    j = body_json(&r);
    cr_expect_not(jbool(j, "was_online"));
    json_decref(j);
    ht_resp_free(&r);
    /* Never signed in: 404. A body where none is taken: 400. */
    ht_call(port, "DELETE", "/v1/devices/999/session", op, NULL, NULL, &r);
    cr_expect_eq(r.status, 404);
    cr_expect_str_eq(ht_code(&r), "EC_NOT_FOUND");
    ht_resp_free(&r);
    cr_assert_eq(tl_signin(cli, &a, 7, 71, "gwA"), 0);
    int64_t before = fingerprint();
    ht_call(port, "DELETE", "/v1/devices/71/session", op, NULL, "{\"force\": true}", &r);
    cr_expect_eq(r.status, 400);
    cr_expect(strstr(r.body, "'force'"), "%s", r.body);
    ht_resp_free(&r);
    cr_expect_eq(fingerprint(), before);
    cr_expect_eq(qi("SELECT online FROM device WHERE device_id = %lld", 71), 1);
}

Test(api_ops, recall, .init = start, .fini = teardown)
{
    struct client_conn a = {.gateway_id = "gwA", .client_addr = "t"};
    cr_assert_eq(tl_signin(cli, &a, 1, 11, "gwA"), 0);
    send_text(&a, 2, "first", 1);
    int64_t seq = send_text(&a, 2, "to take back", 2);
    char path[128];
    /* Bob's copy is his seq 2. */
    snprintf(path, sizeof path, "/v1/users/2/messages/%lld/recall", (long long)seq);
    int64_t before = fingerprint();
    struct ht_resp r;
    ht_call(port, "POST", path, "not-a-token", NULL, NULL, &r);
    cr_expect_eq(r.status, 401);
    ht_resp_free(&r);
    ht_call(port, "POST", path, op, NULL, "{\"why\": \"x\"}", &r);
    cr_expect_eq(r.status, 400);
    ht_resp_free(&r);
    cr_expect_eq(fingerprint(), before, "nothing recalled yet");

    ht_call(port, "POST", path, op, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "%d %s", r.status, r.body);
    json_t *j = body_json(&r);
    cr_expect_not(jbool(j, "already_recalled"));
    json_decref(j);
    ht_resp_free(&r);
    cr_expect_eq(tl_query_int(srv.db, "SELECT count(*) FROM message WHERE status = 2 AND "
                                      "content IS NULL"),
                 1);
    /* A retry: already recalled, nothing changes. */
    int64_t after = fingerprint();
    ht_call(port, "POST", path, op, NULL, "{}", &r);
    cr_assert_eq(r.status, 200);
    j = body_json(&r);
    cr_expect(jbool(j, "already_recalled"));
    json_decref(j);
    ht_resp_free(&r);
    cr_expect_eq(fingerprint(), after);
    /* A seq nobody has. */
    ht_call(port, "POST", "/v1/users/2/messages/77/recall", op, NULL, NULL, &r);
    cr_expect_eq(r.status, 404, "%d %s", r.status, r.body);
    ht_resp_free(&r);
}

Test(api_ops, erase, .init = start, .fini = teardown)
{
    struct client_conn a = {.gateway_id = "gwA", .client_addr = "t"};
    cr_assert_eq(tl_signin(cli, &a, 5, 51, "gwA"), 0);
    for (int i = 0; i < 12; i++)
        send_text(&a, 6, "erase me", 100 + i);
    struct ht_resp r;
    int64_t before = fingerprint();
    ht_call(port, "POST", "/v1/users/5/erase", op, NULL, "{\"max_rows\": -1}", &r);
    cr_expect_eq(r.status, 400, "%d %s", r.status, r.body);
    ht_resp_free(&r);
    ht_call(port, "POST", "/v1/users/5/erase", op, NULL, "{\"max_rows\": 10001}", &r);
    cr_expect_eq(r.status, 400);
    ht_resp_free(&r);
    ht_call(port, "POST", "/v1/users/5/erase", NULL, NULL, "{\"max_rows\": 5}", &r);
    cr_expect_eq(r.status, 401);
    ht_resp_free(&r);
    cr_expect_eq(fingerprint(), before);
    /* Steps of 5 rows until done. */
    bool done = false;
    int steps = 0;
    while (!done && steps < 50) {
        ht_call(port, "POST", "/v1/users/5/erase", op, NULL, "{\"max_rows\": 5}", &r);
        cr_assert_eq(r.status, 200, "%d %s", r.status, r.body);
        json_t *j = body_json(&r);
        done = jbool(j, "done");
        json_decref(j);
        ht_resp_free(&r);
        steps++;
    }
    cr_expect(done);
    cr_expect_gt(steps, 2, "5 rows at a time takes several steps");
    cr_expect_eq(tl_query_int(srv.db, "SELECT count(*) FROM device WHERE user_id = 5"), 0);
    cr_expect_eq(tl_query_int(srv.db, "SELECT count(*) FROM inbox WHERE user_id = 5"), 0);
    cr_expect_eq(tl_query_int(srv.db, "SELECT count(*) FROM message WHERE sender_id = 5 AND "
                                      "content IS NOT NULL"),
                 0);
    /* A step after the end: done, nothing to do. */
    ht_call(port, "POST", "/v1/users/5/erase", op, NULL, NULL, &r);
    cr_expect_eq(r.status, 200);
    json_t *j = body_json(&r);
    cr_expect(jbool(j, "done"));
    cr_expect_eq(jint(j, "devices"), 0);
    json_decref(j);
    ht_resp_free(&r);
}

/*
 * Many requests in flight on keep-alive connections while the writer waits
 * for a lock another process holds: nng's HTTP threads are not blocked (a
 * request that needs no write is answered meanwhile), and every write is
 * answered once the lock goes.
 */
#define INFLIGHT 40

Test(api_async, requests_wait_for_the_writer_without_blocking_nng, .init = start, .fini = teardown)
{
    if (tl_pg())
        cr_skip_test("holds SQLite's write lock through the sqlite3 CLI (on postgres: "
                     "test_pg_it's a_lock_held_elsewhere_fails_after_busy_timeout)");
    struct client_conn a = {.gateway_id = "gwA", .client_addr = "t"};
    for (int i = 0; i < INFLIGHT; i++)
        cr_assert_eq(tl_signin(cli, &a, 1000 + i, 5000 + i, "gwA"), 0);
    FILE *lock = tl_hold_write_lock(srv.db, "IMMEDIATE");
    int fds[INFLIGHT];
    for (int i = 0; i < INFLIGHT; i++) {
        char req[512];
        fds[i] = ht_connect(port);
        int n = snprintf(req, sizeof req,
                         "DELETE /v1/devices/%d/session HTTP/1.1\r\nHost: x\r\n"
                         "Authorization: Bearer %s\r\n\r\n",
                         5000 + i, op);
        ht_send(fds[i], req, (size_t)n);
    }
    /* None is answered while the lock is held... */
    struct ht_resp r;
    ht_read(fds[0], &r, 300);
    cr_expect_eq(r.status, 0, "a write was answered while the database was locked: %d %s", r.status,
                 r.body);
    ht_resp_free(&r);
    /* ...yet the server answers what needs no write, at once. */
    ht_call(port, "POST", "/v1/users/1/erase", op, NULL, "{\"bad\": 1}", &r);
    cr_expect_eq(r.status, 400);
    ht_resp_free(&r);
    fputs("ROLLBACK;\n", lock);
    pclose(lock);
    int ok = 0;
    for (int i = 0; i < INFLIGHT; i++) {
        ht_read(fds[i], &r, 10000);
        ok += r.status == 200;
        /* Keep-alive: the same connection takes the next request. */
        if (r.status == 200 && !r.closed) {
            struct ht_resp again;
            char path[64];
            snprintf(path, sizeof path, "/v1/devices/%d/session", 5000 + i);
            ht_do(fds[i], "DELETE", path, op, NULL, NULL, &again);
            cr_expect_eq(again.status, 200);
            ht_resp_free(&again);
        }
        ht_resp_free(&r);
        close(fds[i]);
    }
    cr_expect_eq(ok, INFLIGHT);
    cr_expect_eq(tl_query_int(srv.db, "SELECT count(*) FROM device WHERE online = 1"), 0);
}

/* ---- config and TLS ------------------------------------------------------- */

/* Loads yaml from a temp file; returns the result and the message. */
static gim_err load(const char *yaml, char *err, size_t errlen)
{
    char path[] = "/tmp/gim-api-config.XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, yaml, strlen(yaml)), (ssize_t)strlen(yaml));
    close(fd);
    struct gim_config cfg;
    gim_err e = config_load(path, &cfg, err, errlen);
    config_free(&cfg);
    unlink(path);
    return e;
}

Test(api_config, off_by_default_and_checked)
{
    char err[512];
    struct gim_config cfg;
    cr_assert_eq(config_load(NULL, &cfg, err, sizeof err), GIM_OK);
    cr_expect_str_eq(cfg.api.listen, "", "the API is off by default");
    cr_expect_eq(cfg.api.max_body_bytes, 1048576);
    config_free(&cfg);
    static const struct {
        const char *yaml, *says;
    } bad[] = {
        {"api: {listen: \"ftp://127.0.0.1:1\"}", "api.listen: 'ftp://127.0.0.1:1': scheme"},
        {"api: {listen: \"http://127.0.0.1:1/v1\"}",
         "api.listen: 'http://127.0.0.1:1/v1' has a path"},
        {"api: {listen: \"https://127.0.0.1:1\"}", "needs api.cert_file and api.key_file"},
        {"api: {cert_file: \"/x.pem\"}", "api.key_file: required when api.cert_file is set"},
        {"http: \"http://127.0.0.1:7480\"\napi: {listen: \"http://127.0.0.1:7480\"}",
         "its own address"},
        {"api: {max_body_bytes: 10}", "api.max_body_bytes"},
        {"api: {workers: 0}", "api.workers"},
        {"api: {listn: \"http://127.0.0.1:1\"}", "listn"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_expect_eq(load(bad[i].yaml, err, sizeof err), GIM_ECONFIG, "%s", bad[i].yaml);
        cr_expect(strstr(err, bad[i].says), "%s: want '%s' in: %s", bad[i].yaml, bad[i].says, err);
    }
    cr_expect_eq(load("api: {listen: \"http://127.0.0.1:7490\"}", err, sizeof err), GIM_OK, "%s",
                 err);
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* https:// with api.cert_file and api.key_file: curl, trusting only that certificate, is served. */
Test(api_tls, https_serves_the_api)
{
    char dir[] = "/tmp/gim-api-tls.XXXXXX", extra[1024], out[300];
    cr_assert_not_null(mkdtemp(dir));
    cr_assert_eq(
        sh("cd %s && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost "
           "-addext subjectAltName=IP:127.0.0.1 -keyout api.key -out api.crt "
           ">/dev/null 2>&1",
           dir),
        0, "openssl could not make a certificate");
    port = tl_free_port();
    snprintf(extra, sizeof extra,
             "api: {listen: \"https://127.0.0.1:%d\", cert_file: \"%s/api.crt\", key_file: "
             "\"%s/api.key\"}",
             port, dir, dir);
    tl_start(&srv, extra);
    cr_assert_eq(auth_mint_admin(TL_SECRET, time(NULL) + 600, &op), GIM_OK);
    snprintf(out, sizeof out, "%s/out", dir);
    cr_expect_eq(sh("curl -sS --cacert %s/api.crt -H 'Authorization: Bearer %s' "
                    "https://127.0.0.1:%d/v1/groups/1 -o %s -w '%%{http_code}' > %s.code",
                    dir, op, port, out, out),
                 0, "curl over TLS failed");
    char code[16] = "", body[256] = "";
    FILE *f = fopen(out, "r");
    cr_assert_not_null(f);
    size_t n = fread(body, 1, sizeof body - 1, f);
    body[n] = '\0';
    fclose(f);
    snprintf(out + strlen(out), sizeof out - strlen(out), ".code");
    f = fopen(out, "r");
    cr_assert_not_null(f);
    n = fread(code, 1, sizeof code - 1, f);
    code[n] = '\0';
    fclose(f);
    cr_expect_str_eq(code, "404");
    cr_expect_str_eq(body, "{\"code\":\"EC_NOT_FOUND\",\"message\":\"group get: no group 1\"}");
    /* Plain HTTP on the TLS port gets no API answer. */
    struct ht_resp r;
    ht_call(port, "GET", "/v1/groups/1", op, NULL, NULL, &r);
    cr_expect_neq(r.status, 404);
    ht_resp_free(&r);
    cr_expect_eq(tl_stop(&srv), 0);
    tl_cleanup(&srv);
    free(op);
    sh("rm -rf %s", dir);
}

/*
 * A stop while writes wait behind another process's lock (reliability.md, scenario 1, over
 * HTTP), with database.busy_timeout_ms at its maximum (10 minutes): the service exits 0
 * while the lock is still held (a stop that waited for the lock would outlast the test's
 * timeout), every request in flight is answered 503 EC_UNAVAILABLE, and nothing was written.
 */
/* The gauge gim_writer_pending_jobs from the metrics endpoint on port; -1 until it answers. */
static int writer_pending_jobs(int mport)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)mport)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0), v = -1;
    cr_assert(fd >= 0);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) { /* starts after the REP socket */
        close(fd);
        return -1;
    }
    static const char get[] = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    ht_send(fd, get, sizeof get - 1);
    struct ht_resp m;
    ht_read(fd, &m, 5000);
    const char *at = strstr(m.body, "\ngim_writer_pending_jobs ");
    if (m.status == 200 && at)
        v = atoi(at + strlen("\ngim_writer_pending_jobs "));
    ht_resp_free(&m);
    close(fd);
    return v;
}

Test(api_async, stop_with_writes_behind_a_lock_answers_each, .init = start)
{
    if (tl_pg()) {
        teardown(); /* no .fini here: the test stops the service itself */
        cr_skip_test("holds SQLite's write lock through the sqlite3 CLI (on postgres: "
                     "test_pg_it's a_stop_does_not_wait_for_a_lock_held_elsewhere)");
    }
    struct client_conn a = {.gateway_id = "gwA", .client_addr = "t"};
    enum { N = 10 };
    for (int i = 0; i < N; i++)
        cr_assert_eq(tl_signin(cli, &a, 2000 + i, 6000 + i, "gwA"), 0);
    client_close(cli);
    cr_assert_eq(tl_stop(&srv), 0);
    /* The metrics endpoint tells when all N are at the writer: only then does the stop find
     * each of them in flight (a request nng has not read yet when it closes its listener is
     * dropped unanswered, as by any HTTP server; the client retries it). */
    char extra[sizeof srv.extra];
    int mport = tl_free_port();
    snprintf(extra, sizeof extra, "%s", srv.extra);
    snprintf(srv.http, sizeof srv.http, "http://127.0.0.1:%d", mport);
    tl_reconfigure(&srv, "busy_timeout_ms: 600000", extra);
    tl_restart(&srv);
    FILE *lock = tl_hold_write_lock(srv.db, "IMMEDIATE");
    int fds[N];
    for (int i = 0; i < N; i++) {
        char req[512];
        fds[i] = ht_connect(port);
        int n = snprintf(req, sizeof req,
                         "DELETE /v1/devices/%d/session HTTP/1.1\r\nHost: x\r\n"
                         "Authorization: Bearer %s\r\n\r\n",
                         6000 + i, op);
        ht_send(fds[i], req, (size_t)n);
    }
    int pending = -1;
    for (int tries = 0; tries < 1000 && pending != N; tries++) {
        pending = writer_pending_jobs(mport);
        if (pending != N)
            usleep(10 * 1000);
    }
    cr_assert_eq(pending, N, "the writer holds every kick behind the lock");
    struct ht_resp r;
    ht_read(fds[0], &r, 0);
    cr_expect_eq(r.status, 0, "answered while the database was locked: %d %s", r.status, r.body);
    ht_resp_free(&r);
    cr_expect_eq(tl_stop(&srv), 0, "gim-logic exits 0 while the lock is held");
    for (int i = 0; i < N; i++) {
        ht_read(fds[i], &r, 5000);
        cr_expect_eq(r.status, 503, "request %d: %d %s", i, r.status, r.body);
        cr_expect_str_eq(ht_code(&r), "EC_UNAVAILABLE");
        ht_resp_free(&r);
        close(fds[i]);
    }
    fputs("ROLLBACK;\n", lock);
    pclose(lock);
    cr_expect_eq(tl_query_int(srv.db, "SELECT count(*) FROM device WHERE online = 1"), N,
                 "no kick was written");
    tl_cleanup(&srv);
    free(op);
}
