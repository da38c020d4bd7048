/*
 * The business API's group and message routes over HTTP (apiroute.c on top
 * of the PT_ADMIN_GROUP_* and PT_ADMIN_SEND handlers): the real binary with
 * api.listen on a free port, raw HTTP/1.1 (httptestlib), the SQLite file
 * read back. Each operation: success with its JSON shape, bad input with its
 * exact code and nothing written, a wrong or missing token, and a retry
 * with the same Idempotency-Key (same answer, nothing new) or with the same
 * key and another request (refused). Every content type's JSON is checked
 * against the protobuf stored in the database, and a notice caused over HTTP
 * is pushed on the member's gateway topic (nng SUB on the PUB socket).
 */
#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <jansson.h>
#include <nng/nng.h>
#include <nng/protocol/pubsub0/sub.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "httptestlib.h"
#include "testlib.h"

static struct tl_server srv;
static int port;
static char *op;

static void start(void)
{
    char extra[256];
    port = tl_free_port();
    snprintf(extra, sizeof extra, "api: {listen: \"http://127.0.0.1:%d\", workers: 2}", port);
    tl_start(&srv, extra);
    cr_assert_eq(auth_mint_admin(TL_SECRET, time(NULL) + 600, &op), GIM_OK);
}

static void teardown(void)
{
    cr_expect_eq(tl_stop(&srv), 0);
    tl_cleanup(&srv);
    free(op);
}

static int64_t q(const char *sql)
{
    return tl_query_int(srv.db, sql);
}

/* Every table a business API write touches, summed: equal before and after = nothing written. */
static int64_t fingerprint(void)
{
    return q(
        "SELECT (SELECT count(*) FROM message) * 1000003 + (SELECT count(*) FROM inbox) * "
        "1009 + (SELECT count(*) FROM chat_group) * 101 + (SELECT count(*) FROM "
        "group_member) * 31 + (SELECT count(*) FROM operator_idempotency) * 7 + (SELECT "
        "count(*) FROM room_message) * 3 + (SELECT coalesce(sum(length(name)), 0) FROM "
        "chat_group) + (SELECT coalesce(sum(CASE role WHEN 'owner' THEN 3 WHEN 'admin' THEN 2 ELSE "
        "1 END), 0) FROM group_member)");
}

/* A call that must succeed with `status`; returns the JSON answer (json_decref), or NULL (204). */
static json_t *ok(int status, const char *method, const char *path, const char *key,
                  const char *body)
{
    struct ht_resp r;
    ht_call(port, method, path, op, key, body, &r);
    cr_assert_eq(r.status, status, "%s %s %s: %d %s", method, path, body ? body : "", r.status,
                 r.body);
    json_t *j = r.len ? ht_json(&r) : NULL;
    cr_assert(r.len == 0 || j, "not JSON: %s", r.body);
    ht_resp_free(&r);
    return j;
}

/* A call that must fail with `status` and `code`, and change nothing. */
static void refused(int status, const char *code, const char *method, const char *path,
                    const char *token, const char *key, const char *body, const char *says)
{
    int64_t before = fingerprint();
    struct ht_resp r;
    ht_call(port, method, path, token, key, body, &r);
    cr_expect_eq(r.status, status, "%s %s %s: %d %s", method, path, body ? body : "", r.status,
                 r.body);
    cr_expect_str_eq(ht_code(&r), code, "%s %s %s: %s", method, path, body ? body : "", r.body);
    if (says)
        cr_expect(strstr(r.body, says), "%s %s %s: want '%s' in %s", method, path, body ? body : "",
                  says, r.body);
    ht_resp_free(&r);
    cr_expect_eq(fingerprint(), before, "%s %s %s changed the database", method, path,
                 body ? body : "");
}

static int64_t jint(const json_t *o, const char *k)
{
    const json_t *v = json_object_get(o, k);
    cr_assert(json_is_integer(v), "%s missing or not an integer", k);
    return (int64_t)json_integer_value(v);
}

static const char *jstr(const json_t *o, const char *k)
{
    const json_t *v = json_object_get(o, k);
    cr_assert(json_is_string(v), "%s missing or not a string", k);
    return json_string_value(v);
}

static void same_json(json_t *a, json_t *b, const char *what)
{
    char *sa = json_dumps(a, JSON_SORT_KEYS), *sb = json_dumps(b, JSON_SORT_KEYS);
    cr_expect_str_eq(sa, sb, "%s", what);
    free(sa);
    free(sb);
}

Test(api_groups, lifecycle, .init = start, .fini = teardown)
{
    const char *create = "{\"name\": \"ops\", \"avatar_url\": \"https://x/a.png\", \"extra\": "
                         "\"{\\\"tier\\\":1}\", \"owner_id\": 1, \"member_ids\": [2, 3]}";
    /* Bad input first: nothing may be written. */
    refused(401, "EC_UNAUTHENTICATED", "POST", "/v1/groups", NULL, NULL, create, NULL);
    refused(401, "EC_UNAUTHENTICATED", "POST", "/v1/groups", "x.y.z", NULL, create, NULL);
    refused(400, "EC_BAD_REQUEST", "POST", "/v1/groups", op, NULL, "{\"name\": \"a\"}",
            "owner_id must be > 0");
    refused(400, "EC_BAD_REQUEST", "POST", "/v1/groups", op, NULL, "{\"name\": 5, \"owner_id\": 1}",
            "field 'name' must be a string");
    refused(400, "EC_BAD_REQUEST", "POST", "/v1/groups", op, NULL,
            "{\"name\": \"a\", \"owner_id\": 1, \"members\": [2]}", "'members'");
    refused(400, "EC_BAD_REQUEST", "POST", "/v1/groups", op, NULL,
            "{\"name\": \"a\", \"owner_id\": 1, \"member_ids\": [2, \"3\"]}", "member_ids");
    refused(400, "EC_BAD_REQUEST", "POST", "/v1/groups", op, NULL,
            "{\"name\": \"a\", \"owner_id\": 1, \"member_ids\": [2, -3]}", NULL);

    json_t *g = ok(201, "POST", "/v1/groups", "create-1", create);
    int64_t id = jint(g, "group_id");
    cr_expect_gt(id, 0);
    cr_expect_str_eq(jstr(g, "name"), "ops");
    cr_expect_str_eq(jstr(g, "avatar_url"), "https://x/a.png");
    cr_expect_str_eq(jstr(g, "extra"), "{\"tier\":1}");
    cr_expect_eq(jint(g, "owner_id"), 1);
    cr_expect_eq(jint(g, "member_count"), 3);
    cr_expect_gt(jint(g, "created_at"), 0);
    /* The retry with the key: the same answer, no second group. */
    int64_t before = fingerprint();
    json_t *again = ok(201, "POST", "/v1/groups", "create-1", create);
    same_json(g, again, "a retry answers the first reply");
    json_decref(again);
    cr_expect_eq(fingerprint(), before);
    /* The key with another request: refused. */
    refused(400, "EC_BAD_REQUEST", "POST", "/v1/groups", op, "create-1",
            "{\"name\": \"other\", \"owner_id\": 1}", "idempotency key");
    json_decref(g);

    char path[128], mpath[128], qpath[160];
    snprintf(path, sizeof path, "/v1/groups/%lld", (long long)id);
    snprintf(mpath, sizeof mpath, "/v1/groups/%lld/members", (long long)id);
    g = ok(200, "GET", path, NULL, NULL);
    cr_expect_str_eq(jstr(g, "name"), "ops");
    json_decref(g);
    refused(404, "EC_NOT_FOUND", "GET", "/v1/groups/999", op, NULL, NULL, "no group 999");
    refused(401, "EC_UNAUTHENTICATED", "GET", path, NULL, NULL, NULL, NULL);

    /* PATCH: only the fields given change. */
    refused(400, "EC_BAD_REQUEST", "PATCH", path, op, NULL, "{\"owner_id\": 2}", "'owner_id'");
    refused(400, "EC_BAD_REQUEST", "PATCH", path, op, NULL, "{\"name\": null}", "string");
    refused(401, "EC_UNAUTHENTICATED", "PATCH", path, NULL, NULL, "{\"name\": \"x\"}", NULL);
    refused(404, "EC_NOT_FOUND", "PATCH", "/v1/groups/999", op, NULL, "{\"name\": \"x\"}", NULL);
    g = ok(200, "PATCH", path, "patch-1", "{\"name\": \"ops two\"}");
    cr_expect_str_eq(jstr(g, "name"), "ops two");
    cr_expect_str_eq(jstr(g, "avatar_url"), "https://x/a.png", "untouched");
    json_decref(g);
    before = fingerprint();
    json_decref(ok(200, "PATCH", path, "patch-1", "{\"name\": \"ops two\"}"));
    cr_expect_eq(fingerprint(), before);

    /* Members: batch add with a role, batch remove by body and by query. */
    refused(400, "EC_BAD_REQUEST", "POST", mpath, op, NULL,
            "{\"user_ids\": [4], \"role\": \"boss\"}", "role");
    refused(400, "EC_BAD_REQUEST", "POST", mpath, op, NULL, "{\"user_ids\": 4}", "array");
    refused(400, "EC_BAD_REQUEST", "POST", mpath, op, NULL, "{\"user_ids\": []}", "empty");
    refused(401, "EC_UNAUTHENTICATED", "POST", mpath, NULL, NULL, "{\"user_ids\": [4]}", NULL);
    json_t *m = ok(200, "POST", mpath, "add-1", "{\"user_ids\": [4, 5, 2], \"role\": \"admin\"}");
    cr_expect_eq(json_array_size(json_object_get(m, "changed")), 2);
    cr_expect_eq(json_integer_value(json_array_get(json_object_get(m, "unchanged"), 0)), 2);
    cr_expect_eq(jint(m, "member_count"), 5);
    json_decref(m);
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM group_member WHERE group_id = %lld AND user_id = 5 AND "
             "role = 'admin'",
             (long long)id);
    cr_expect_eq(q(sql), 1, "added as admin");
    /* The added members hold a notice (code 2) in their inbox. */
    cr_expect_gt(q("SELECT count(*) FROM inbox i JOIN message m ON m.id = i.message_id WHERE "
                   "i.user_id = 4 AND m.message_type = 7"),
                 0);
    before = fingerprint();
    json_decref(ok(200, "POST", mpath, "add-1", "{\"user_ids\": [4, 5, 2], \"role\": \"admin\"}"));
    cr_expect_eq(fingerprint(), before, "a retried add adds nothing and notifies nobody");

    refused(400, "EC_BAD_REQUEST", "DELETE", mpath, op, NULL, "{\"user_ids\": [4], \"role\": 1}",
            "'role'");
    snprintf(qpath, sizeof qpath, "%s?user_ids=4", mpath);
    refused(400, "EC_BAD_REQUEST", "DELETE", qpath, op, NULL, "{\"user_ids\": [5]}", "not both");
    snprintf(qpath, sizeof qpath, "%s?user_ids=4,x", mpath);
    refused(400, "EC_BAD_REQUEST", "DELETE", qpath, op, NULL, NULL, "user_ids");
    snprintf(qpath, sizeof qpath, "%s?users=4", mpath);
    refused(400, "EC_BAD_REQUEST", "DELETE", qpath, op, NULL, NULL, "unknown query parameter");
    snprintf(qpath, sizeof qpath, "%s?user_ids=4,9", mpath);
    m = ok(200, "DELETE", qpath, NULL, NULL);
    cr_expect_eq(json_integer_value(json_array_get(json_object_get(m, "changed"), 0)), 4);
    cr_expect_eq(json_integer_value(json_array_get(json_object_get(m, "unchanged"), 0)), 9);
    json_decref(m);
    m = ok(200, "DELETE", mpath, NULL, "{\"user_ids\": [5]}");
    cr_expect_eq(jint(m, "member_count"), 3);
    json_decref(m);

    /* Roles. */
    char rpath[160];
    snprintf(rpath, sizeof rpath, "%s/3/role", mpath);
    refused(400, "EC_BAD_REQUEST", "PUT", rpath, op, NULL, "{\"role\": 2}", "role");
    refused(400, "EC_BAD_REQUEST", "PUT", rpath, op, NULL, "{}", NULL);
    refused(401, "EC_UNAUTHENTICATED", "PUT", rpath, "", NULL, "{\"role\": \"admin\"}", NULL);
    snprintf(qpath, sizeof qpath, "%s/77/role", mpath);
    refused(404, "EC_NOT_FOUND", "PUT", qpath, op, NULL, "{\"role\": \"admin\"}", NULL);
    m = ok(200, "PUT", rpath, "role-1", "{\"role\": \"owner\"}");
    cr_expect_eq(jint(m, "user_id"), 3);
    cr_expect_str_eq(jstr(m, "role"), "owner");
    json_decref(m);
    g = ok(200, "GET", path, NULL, NULL);
    cr_expect_eq(jint(g, "owner_id"), 3, "ownership moved");
    json_decref(g);

    /* Pages in user_id order. */
    snprintf(qpath, sizeof qpath, "%s?limit=2", mpath);
    m = ok(200, "GET", qpath, NULL, NULL);
    json_t *list = json_object_get(m, "members");
    cr_expect_eq(json_array_size(list), 2);
    cr_expect_eq(jint(json_array_get(list, 0), "user_id"), 1);
    cr_expect_str_eq(jstr(json_array_get(list, 0), "role"), "admin", "the old owner");
    cr_expect(json_is_true(json_object_get(m, "has_more")));
    json_decref(m);
    snprintf(qpath, sizeof qpath, "%s?after=2&limit=2", mpath);
    m = ok(200, "GET", qpath, NULL, NULL);
    list = json_object_get(m, "members");
    cr_expect_eq(json_array_size(list), 1);
    cr_expect_eq(jint(json_array_get(list, 0), "user_id"), 3);
    cr_expect(json_is_false(json_object_get(m, "has_more")));
    json_decref(m);
    snprintf(qpath, sizeof qpath, "%s?after=-1", mpath);
    refused(400, "EC_BAD_REQUEST", "GET", qpath, op, NULL, NULL, "after");
    snprintf(qpath, sizeof qpath, "%s?limit=100000", mpath);
    refused(400, "EC_BAD_REQUEST", "GET", qpath, op, NULL, NULL, "limit");

    /* Dissolve: 204, then the group is gone; a retry with the key answers the same. */
    refused(401, "EC_UNAUTHENTICATED", "DELETE", path, NULL, NULL, NULL, NULL);
    cr_expect_null(ok(204, "DELETE", path, "dissolve-1", NULL));
    cr_expect_null(ok(204, "DELETE", path, "dissolve-1", NULL));
    refused(404, "EC_NOT_FOUND", "DELETE", path, op, "dissolve-2", NULL, NULL);
    refused(404, "EC_NOT_FOUND", "GET", path, op, NULL, NULL, NULL);
}

/* Reads one BLOB (the first column of the first row), from either backend. */
static size_t blob(const char *sql, uint8_t *out, size_t cap)
{
    if (tl_pg()) {
        PGconn *pc = PQconnectdb(srv.pg_url);
        cr_assert_eq(PQstatus(pc), CONNECTION_OK, "%s", PQerrorMessage(pc));
        PGresult *res = PQexecParams(pc, sql, 0, NULL, NULL, NULL, NULL, 1);
        cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(pc));
        cr_assert_gt(PQntuples(res), 0, "%s: no row", sql);
        size_t len = (size_t)PQgetlength(res, 0, 0);
        cr_assert_leq(len, cap);
        memcpy(out, PQgetvalue(res, 0, 0), len);
        PQclear(res);
        PQfinish(pc);
        return len;
    }
    sqlite3 *h = NULL;
    sqlite3_stmt *st = NULL;
    size_t n = 0;
    cr_assert_eq(sqlite3_open_v2(srv.db, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_prepare_v2(h, sql, -1, &st, NULL), SQLITE_OK, "%s", sqlite3_errmsg(h));
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW, "%s: no row", sql);
    n = (size_t)sqlite3_column_bytes(st, 0);
    cr_assert_leq(n, cap);
    memcpy(out, sqlite3_column_blob(st, 0), n);
    sqlite3_finalize(st);
    sqlite3_close(h);
    return n;
}

/* The newest message's content and type, as stored. */
static size_t last_content(uint8_t *out, size_t cap, int *type)
{
    *type = (int)q("SELECT message_type FROM message ORDER BY id DESC LIMIT 1");
    return blob("SELECT content FROM message ORDER BY id DESC LIMIT 1", out, cap);
}

static void send_to_user(const char *type, const char *content)
{
    char body[1024];
    snprintf(body, sizeof body,
             "{\"sender\": {\"type\": \"business\", \"id\": 9001, \"nickname\": \"Shop\"}, "
             "\"to\": {\"user\": 2}, \"type\": \"%s\", \"content\": %s}",
             type, content);
    json_t *j = ok(201, "POST", "/v1/messages", NULL, body);
    cr_expect_eq(json_array_size(json_object_get(j, "copies")), 1);
    json_decref(j);
}

Test(api_messages, every_content_type_is_stored_as_its_protobuf, .init = start, .fini = teardown)
{
    uint8_t buf[4096];
    int type;
    size_t n;

    send_to_user("text", "{\"text\": \"order 42 shipped\"}");
    n = last_content(buf, sizeof buf, &type);
    cr_expect_eq(type, PB__MESSAGE_TYPE__MT_TEXT);
    Pb__Text *t = pb__text__unpack(NULL, n, buf);
    cr_assert_not_null(t);
    cr_expect_str_eq(t->text, "order 42 shipped");
    pb__text__free_unpacked(t, NULL);
    cr_expect_eq(q("SELECT sender_type FROM message ORDER BY id DESC LIMIT 1"),
                 PB__SENDER_TYPE__ST_BUSINESS);
    cr_expect_eq(q("SELECT sender_id FROM message ORDER BY id DESC LIMIT 1"), 9001);

    send_to_user("face", "{\"face_id\": 7, \"face_url\": \"f\"}");
    n = last_content(buf, sizeof buf, &type);
    cr_expect_eq(type, PB__MESSAGE_TYPE__MT_FACE);
    Pb__Face *f = pb__face__unpack(NULL, n, buf);
    cr_expect(f && f->face_id == 7 && strcmp(f->face_url, "f") == 0);
    pb__face__free_unpacked(f, NULL);

    send_to_user("voice", "{\"id\": \"v1\", \"size\": 1000, \"duration\": 3, \"url\": \"u\"}");
    n = last_content(buf, sizeof buf, &type);
    cr_expect_eq(type, PB__MESSAGE_TYPE__MT_VOICE);
    Pb__Voice *v = pb__voice__unpack(NULL, n, buf);
    cr_expect(v && strcmp(v->id, "v1") == 0 && v->size == 1000 && v->duration == 3 &&
              strcmp(v->url, "u") == 0);
    pb__voice__free_unpacked(v, NULL);

    send_to_user("image", "{\"id\": \"i\", \"width\": 640, \"height\": 480, \"url\": \"u\", "
                          "\"thumbnail_url\": \"t\"}");
    n = last_content(buf, sizeof buf, &type);
    cr_expect_eq(type, PB__MESSAGE_TYPE__MT_IMAGE);
    Pb__Image *im = pb__image__unpack(NULL, n, buf);
    cr_expect(im && im->width == 640 && im->height == 480 && strcmp(im->thumbnail_url, "t") == 0);
    pb__image__free_unpacked(im, NULL);

    send_to_user("file",
                 "{\"id\": 5000000000, \"name\": \"a.pdf\", \"size\": 123, \"url\": \"u\"}");
    n = last_content(buf, sizeof buf, &type);
    cr_expect_eq(type, PB__MESSAGE_TYPE__MT_FILE);
    Pb__File *fi = pb__file__unpack(NULL, n, buf);
    cr_expect(fi && fi->id == 5000000000LL && fi->size == 123 && strcmp(fi->name, "a.pdf") == 0);
    pb__file__free_unpacked(fi, NULL);

    send_to_user("location", "{\"desc\": \"depot\", \"latitude\": 48.85, \"longitude\": 2}");
    n = last_content(buf, sizeof buf, &type);
    cr_expect_eq(type, PB__MESSAGE_TYPE__MT_LOCATION);
    Pb__Location *l = pb__location__unpack(NULL, n, buf);
    cr_expect(l && l->latitude == 48.85 && l->longitude == 2.0 && strcmp(l->desc, "depot") == 0);
    pb__location__free_unpacked(l, NULL);

    send_to_user("command", "{\"code\": 1001, \"data\": \"{\\\"order\\\":42}\"}");
    n = last_content(buf, sizeof buf, &type);
    cr_expect_eq(type, PB__MESSAGE_TYPE__MT_COMMAND);
    Pb__Command *c = pb__command__unpack(NULL, n, buf);
    cr_expect(c && c->code == 1001 && c->data.len == 12 &&
              memcmp(c->data.data, "{\"order\":42}", 12) == 0);
    pb__command__free_unpacked(c, NULL);

    send_to_user("custom", "{\"data\": \"anything\"}");
    n = last_content(buf, sizeof buf, &type);
    cr_expect_eq(type, PB__MESSAGE_TYPE__MT_CUSTOM);
    Pb__Custom *cu = pb__custom__unpack(NULL, n, buf);
    cr_expect(cu && strcmp(cu->data, "anything") == 0);
    pb__custom__free_unpacked(cu, NULL);
}

Test(api_messages, targets_bad_input_tokens_and_retries, .init = start, .fini = teardown)
{
    const char *to_user = "{\"sender\": {\"type\": \"system\", \"id\": 0}, \"to\": {\"user\": 2}, "
                          "\"type\": \"text\", \"content\": {\"text\": \"hi\"}}";
    static const struct {
        const char *body, *says;
    } bad[] = {
        {"{\"sender\": {\"type\": \"user\", \"id\": 1}, \"to\": {\"user\": 2}, \"type\": "
         "\"text\", \"content\": {\"text\": \"x\"}}",
         "sender must be"},
        {"{\"sender\": {\"type\": \"system\"}, \"to\": {\"user\": 2, \"group\": 1}, \"type\": "
         "\"text\", \"content\": {\"text\": \"x\"}}",
         "exactly one"},
        {"{\"sender\": {\"type\": \"system\"}, \"to\": {}, \"type\": \"text\", \"content\": "
         "{\"text\": \"x\"}}",
         "exactly one"},
        {"{\"sender\": {\"type\": \"system\"}, \"to\": {\"channel\": 2}, \"type\": \"text\", "
         "\"content\": {\"text\": \"x\"}}",
         "'channel'"},
        {"{\"sender\": {\"type\": \"system\"}, \"to\": {\"user\": 2}, \"type\": \"video\", "
         "\"content\": {}}",
         "field 'type' must be one of"},
        {"{\"sender\": {\"type\": \"system\"}, \"to\": {\"user\": 2}, \"type\": \"text\", "
         "\"content\": {\"txt\": \"x\"}}",
         "unknown field in content: 'txt'"},
        {"{\"sender\": {\"type\": \"system\"}, \"to\": {\"user\": 2}, \"type\": \"text\"}",
         "needs a 'content'"},
        {"{\"sender\": {\"type\": \"system\"}, \"to\": {\"user\": 2}, \"type\": \"text\", "
         "\"content\": \"hi\"}",
         "'content' must be an object"},
        {"{\"sender\": {\"type\": \"system\"}, \"to\": {\"user\": \"2\"}, \"type\": \"text\", "
         "\"content\": {\"text\": \"x\"}}",
         "field 'user' must be an integer"},
        {"{\"sender\": {\"type\": \"system\"}, \"to\": {\"users\": [2, 3.5]}, \"type\": \"text\", "
         "\"content\": {\"text\": \"x\"}}",
         "users"},
        {"{\"sender\": {\"type\": \"system\"}, \"to\": {\"user\": 2}, \"type\": \"location\", "
         "\"content\": {\"latitude\": \"48\"}}",
         "must be a number"},
        {"{\"sender\": {\"type\": \"system\"}, \"to\": {\"user\": 2}, \"type\": \"text\", "
         "\"content\": {\"text\": \"x\"}, \"mentions\": 3}",
         "mentions"},
        {"{\"to\": {\"user\": 2}, \"type\": \"text\", \"content\": {\"text\": \"x\"}}", NULL},
        {"{\"sender\": {\"type\": \"system\"}, \"to\": {\"user\": 0}, \"type\": \"text\", "
         "\"content\": {\"text\": \"x\"}}",
         "RT_USER needs"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        refused(400, "EC_BAD_REQUEST", "POST", "/v1/messages", op, NULL, bad[i].body, bad[i].says);
    refused(401, "EC_UNAUTHENTICATED", "POST", "/v1/messages", NULL, NULL, to_user, NULL);
    char *user = tl_token(1, 11, 600);
    refused(401, "EC_UNAUTHENTICATED", "POST", "/v1/messages", user, NULL, to_user, NULL);
    free(user);
    refused(404, "EC_NOT_FOUND", "POST", "/v1/messages", op, NULL,
            "{\"sender\": {\"type\": \"system\"}, \"to\": {\"group\": 404}, \"type\": \"text\", "
            "\"content\": {\"text\": \"x\"}}",
            NULL);

    /* A user; the retry with the key answers the same seq and stores nothing more. */
    json_t *a = ok(201, "POST", "/v1/messages", "send-1", to_user);
    cr_expect_eq(jint(json_array_get(json_object_get(a, "copies"), 0), "user_id"), 2);
    int64_t before = fingerprint();
    json_t *b = ok(201, "POST", "/v1/messages", "send-1", to_user);
    same_json(a, b, "a retried send answers the first reply");
    cr_expect_eq(fingerprint(), before, "and stores nothing");
    json_decref(a);
    json_decref(b);
    /* Without a key, the same body is a second message. */
    json_decref(ok(201, "POST", "/v1/messages", NULL, to_user));
    cr_expect_eq(q("SELECT count(*) FROM inbox WHERE user_id = 2"), 2);

    /* A list: one copy each. */
    a = ok(201, "POST", "/v1/messages", NULL,
           "{\"sender\": {\"type\": \"business\", \"id\": 7}, \"to\": {\"users\": [3, 4, 5]}, "
           "\"type\": \"text\", \"content\": {\"text\": \"sale\"}}");
    cr_expect_eq(jint(a, "recipients"), 3);
    cr_expect_eq(json_array_size(json_object_get(a, "copies")), 3);
    json_decref(a);

    /* A group: every member. */
    json_t *g = ok(201, "POST", "/v1/groups", NULL,
                   "{\"name\": \"g\", \"owner_id\": 1, \"member_ids\": [2, 3]}");
    char body[512];
    snprintf(body, sizeof body,
             "{\"sender\": {\"type\": \"system\"}, \"to\": {\"group\": %lld}, \"type\": \"text\", "
             "\"content\": {\"text\": \"welcome\"}, \"mentions\": [2]}",
             (long long)jint(g, "group_id"));
    json_decref(g);
    a = ok(201, "POST", "/v1/messages", NULL, body);
    cr_expect_eq(jint(a, "recipients"), 3);
    json_decref(a);

    /* A room: its own seq. */
    const char *room = "{\"sender\": {\"type\": \"system\"}, \"to\": {\"room\": 8}, \"type\": "
                       "\"text\", \"content\": {\"text\": \"live\"}}";
    a = ok(201, "POST", "/v1/messages", NULL, room);
    cr_expect_eq(jint(a, "room_seq"), 1);
    json_decref(a);
    cr_expect_eq(q("SELECT count(*) FROM room_message WHERE room_id = 8"), 1);
}

/* The large group, through the API: created with 10,000 members in one request, messaged,
 * and a removed member gets nothing more. */
Test(api_groups, ten_thousand_members, .init = start, .fini = teardown)
{
    size_t cap = 10000 * 8 + 128;
    char *body = malloc(cap);
    size_t n =
        (size_t)snprintf(body, cap, "{\"name\": \"big\", \"owner_id\": 1, \"member_ids\": [");
    for (int i = 2; i <= 10000; i++)
        n += (size_t)snprintf(body + n, cap - n, "%s%d", i > 2 ? "," : "", i);
    snprintf(body + n, cap - n, "]}");
    json_t *g = ok(201, "POST", "/v1/groups", NULL, body);
    free(body);
    cr_expect_eq(jint(g, "member_count"), 10000);
    long long id = (long long)jint(g, "group_id");
    json_decref(g);
    char msg[256], path[128];
    snprintf(msg, sizeof msg,
             "{\"sender\": {\"type\": \"business\", \"id\": 1}, \"to\": {\"group\": %lld}, "
             "\"type\": \"text\", \"content\": {\"text\": \"all hands\"}}",
             id);
    json_t *a = ok(201, "POST", "/v1/messages", NULL, msg);
    cr_expect_eq(jint(a, "recipients"), 10000);
    json_decref(a);
    snprintf(path, sizeof path, "/v1/groups/%lld/members?user_ids=777", id);
    json_decref(ok(200, "DELETE", path, NULL, NULL));
    int64_t inbox = q("SELECT count(*) FROM inbox WHERE user_id = 777");
    a = ok(201, "POST", "/v1/messages", NULL, msg);
    cr_expect_eq(jint(a, "recipients"), 9999);
    json_decref(a);
    cr_expect_eq(q("SELECT count(*) FROM inbox WHERE user_id = 777"), inbox,
                 "a removed member gets no more group messages");
}

/* The next PT_MESSAGE delivery on s; NULL when none comes in time (the caller frees it). */
static Pb__Delivery *next_message(nng_socket s)
{
    for (;;) {
        nng_msg *m = NULL;
        if (nng_recvmsg(s, &m, 0) != 0)
            return NULL;
        const uint8_t *body = nng_msg_body(m);
        size_t len = nng_msg_len(m);
        const uint8_t *nl = memchr(body, '\n', len);
        cr_assert_not_null(nl);
        Pb__Delivery *d = pb__delivery__unpack(NULL, len - (size_t)(nl + 1 - body), nl + 1);
        nng_msg_free(m);
        cr_assert(d && d->output);
        if (d->output->type == PB__PACKAGE_TYPE__PT_MESSAGE)
            return d;
        pb__delivery__free_unpacked(d, NULL);
    }
}

/*
 * The notices of an HTTP request are pushed to the members' online devices, as over nng:
 * a member added with POST .../members gets the code 2 notice on its gateway's topic at once,
 * with the GroupNotice naming it; a retry with the same key pushes nothing more.
 */
Test(api_groups, notices_are_pushed, .init = start)
{
    struct gim_client *cli = tl_client(&srv);
    struct client_conn c4 = {.gateway_id = "gwP", .client_addr = "t"};
    cr_assert_eq(tl_signin(cli, &c4, 4, 41, "gwP"), 0);
    nng_socket sub;
    cr_assert_eq(nng_sub0_open(&sub), 0);
    cr_assert_eq(nng_socket_set(sub, NNG_OPT_SUB_SUBSCRIBE, "gwP\n", 4), 0);
    cr_assert_eq(nng_socket_set_ms(sub, NNG_OPT_RECVTIMEO, 5000), 0);
    cr_assert_eq(nng_dial(sub, srv.pub_url, NULL, 0), 0);
    usleep(200 * 1000); /* SUB joins before anything is published */
    json_t *g = ok(201, "POST", "/v1/groups", NULL, "{\"name\": \"p\", \"owner_id\": 1}");
    char path[128];
    snprintf(path, sizeof path, "/v1/groups/%lld/members", (long long)jint(g, "group_id"));
    json_decref(ok(200, "POST", path, "add-4", "{\"user_ids\": [4]}"));
    Pb__Delivery *d = next_message(sub);
    cr_assert_not_null(d, "no push for the added member");
    cr_expect_eq(d->n_device_ids, 1);
    cr_expect_eq(d->device_ids[0], 41);
    Pb__MessageSend *ms = pb__message_send__unpack(NULL, d->output->data.len, d->output->data.data);
    cr_assert(ms && ms->message);
    cr_expect_eq(ms->message->message_type, PB__MESSAGE_TYPE__MT_COMMAND);
    cr_expect_eq(ms->message->receiver_type, PB__RECEIVER_TYPE__RT_GROUP);
    cr_expect_eq(ms->message->receiver_id, jint(g, "group_id"));
    Pb__Command *cmd = pb__command__unpack(NULL, ms->message->message_content.len,
                                           ms->message->message_content.data);
    cr_assert_not_null(cmd);
    cr_expect_eq(cmd->code, 2, "members added");
    Pb__GroupNotice *n = pb__group_notice__unpack(NULL, cmd->data.len, cmd->data.data);
    cr_assert_not_null(n);
    cr_expect_eq(n->n_user_ids, 1);
    cr_expect_eq(n->user_ids[0], 4);
    cr_expect_eq(n->group->member_count, 2);
    pb__group_notice__free_unpacked(n, NULL);
    pb__command__free_unpacked(cmd, NULL);
    pb__message_send__free_unpacked(ms, NULL);
    pb__delivery__free_unpacked(d, NULL);
    /* A retry is answered from the record: no second notice. */
    json_decref(ok(200, "POST", path, "add-4", "{\"user_ids\": [4]}"));
    cr_assert_eq(nng_socket_set_ms(sub, NNG_OPT_RECVTIMEO, 500), 0);
    d = next_message(sub);
    cr_expect_null(d, "a retried add pushed again");
    if (d)
        pb__delivery__free_unpacked(d, NULL);
    json_decref(g);
    client_close(cli);
    /* The SUB socket closes after the service (test_admin_ops_it.c, sub_close, says why). */
    teardown();
    nng_close(sub);
}
