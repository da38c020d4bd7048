#include "apiroute.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

/* ---- reading the JSON body ------------------------------------------------ */

/*
 * Every object the API reads is checked against the names it takes first,
 * so that a misspelt field ("membr_ids") is refused by name instead of being
 * silently ignored. `where` names the object in the message ("body",
 * "content", "to").
 */
static gim_err only_fields(const json_t *obj, const char *const *allowed, const char *where,
                           char *why, size_t whylen)
{
    char bad[200] = "";
    size_t nbad = 0;
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)obj, key, v)
    {
        bool ok = false;
        for (const char *const *a = allowed; *a && !ok; a++)
            ok = strcmp(*a, key) == 0;
        if (ok)
            continue;
        size_t used = strlen(bad);
        if (used + 4 < sizeof bad)
            snprintf(bad + used, sizeof bad - used, "%s'%s'", nbad ? ", " : "", key);
        nbad++;
    }
    (void)v;
    if (nbad == 0)
        return GIM_OK;
    char names[200] = "";
    for (const char *const *a = allowed; *a; a++) {
        size_t used = strlen(names);
        snprintf(names + used, sizeof names - used, "%s%s", a == allowed ? "" : ", ", *a);
    }
    gim_err_why(why, whylen, "unknown field%s in %s: %s (it takes %s)", nbad > 1 ? "s" : "", where,
                bad, allowed[0] ? names : "no fields");
    return GIM_EBADREQ;
}

static gim_err want_object(const json_t *v, const char *name, char *why, size_t whylen)
{
    if (json_is_object(v))
        return GIM_OK;
    gim_err_why(why, whylen, "field '%s' must be an object", name);
    return GIM_EBADREQ;
}

/* Absent: *out stays as it is (the proto3 default). */
static gim_err get_str(const json_t *obj, const char *key, const char **out, char *why,
                       size_t whylen)
{
    const json_t *v = json_object_get(obj, key);
    if (!v)
        return GIM_OK;
    if (!json_is_string(v)) {
        gim_err_why(why, whylen, "field '%s' must be a string", key);
        return GIM_EBADREQ;
    }
    *out = json_string_value(v);
    return GIM_OK;
}

static gim_err get_i64(const json_t *obj, const char *key, int64_t *out, char *why, size_t whylen)
{
    const json_t *v = json_object_get(obj, key);
    if (!v)
        return GIM_OK;
    if (!json_is_integer(v)) {
        gim_err_why(why, whylen, "field '%s' must be an integer", key);
        return GIM_EBADREQ;
    }
    *out = (int64_t)json_integer_value(v);
    return GIM_OK;
}

static gim_err get_i32(const json_t *obj, const char *key, int32_t *out, char *why, size_t whylen)
{
    int64_t x = *out;
    gim_err e = get_i64(obj, key, &x, why, whylen);
    if (e != GIM_OK)
        return e;
    if (x < INT32_MIN || x > INT32_MAX) {
        gim_err_why(why, whylen, "field '%s' must be a 32-bit integer, got %lld", key,
                    (long long)x);
        return GIM_EBADREQ;
    }
    *out = (int32_t)x;
    return GIM_OK;
}

static gim_err get_double(const json_t *obj, const char *key, double *out, char *why, size_t whylen)
{
    const json_t *v = json_object_get(obj, key);
    if (!v)
        return GIM_OK;
    if (!json_is_number(v)) {
        gim_err_why(why, whylen, "field '%s' must be a number", key);
        return GIM_EBADREQ;
    }
    *out = json_number_value(v);
    return GIM_OK;
}

/* An array of integers; *ids is malloc'ed (NULL when empty or absent), the caller frees it. */
static gim_err get_ids(const json_t *obj, const char *key, int64_t **ids, size_t *n, char *why,
                       size_t whylen)
{
    const json_t *v = json_object_get(obj, key);
    *ids = NULL;
    *n = 0;
    if (!v)
        return GIM_OK;
    if (!json_is_array(v)) {
        gim_err_why(why, whylen, "field '%s' must be an array of integers", key);
        return GIM_EBADREQ;
    }
    size_t count = json_array_size(v);
    if (count == 0)
        return GIM_OK;
    if (!(*ids = malloc(count * sizeof **ids))) {
        gim_err_why(why, whylen, "out of memory");
        return GIM_EINTERNAL;
    }
    for (size_t i = 0; i < count; i++) {
        const json_t *x = json_array_get(v, i);
        if (!json_is_integer(x)) {
            free(*ids);
            *ids = NULL;
            gim_err_why(why, whylen, "field '%s' must be an array of integers (item %zu is not)",
                        key, i);
            return GIM_EBADREQ;
        }
        (*ids)[i] = (int64_t)json_integer_value(x);
    }
    *n = count;
    return GIM_OK;
}

static const char *const role_names[] = {
    [PB__GROUP_ROLE__GR_UNKNOWN] = "unknown",
    [PB__GROUP_ROLE__GR_MEMBER] = "member",
    [PB__GROUP_ROLE__GR_ADMIN] = "admin",
    [PB__GROUP_ROLE__GR_OWNER] = "owner",
};

static const char *role_name(Pb__GroupRole r)
{
    return r >= 0 && (size_t)r < sizeof role_names / sizeof role_names[0] ? role_names[r]
                                                                          : "unknown";
}

static gim_err get_role(const json_t *obj, const char *key, Pb__GroupRole *out, char *why,
                        size_t whylen)
{
    const char *s = NULL;
    gim_err e = get_str(obj, key, &s, why, whylen);
    if (e != GIM_OK || !s)
        return e;
    for (int r = PB__GROUP_ROLE__GR_MEMBER; r <= PB__GROUP_ROLE__GR_OWNER; r++)
        if (strcmp(s, role_names[r]) == 0) {
            *out = (Pb__GroupRole)r;
            return GIM_OK;
        }
    gim_err_why(why, whylen, "field '%s' must be \"member\", \"admin\" or \"owner\"", key);
    return GIM_EBADREQ;
}

/* ---- the query string ----------------------------------------------------- */

/*
 * name=value pairs separated by '&'. Values are ids or lists of ids, so
 * nothing is percent-decoded: a '%' anywhere makes the value wrong, and the
 * caller says so. Calls fn for each pair; an unknown name is refused here.
 */
typedef gim_err (*query_fn)(void *arg, const char *name, size_t nlen, const char *val, size_t vlen,
                            char *why, size_t whylen);

static gim_err each_query(const char *q, const char *const *allowed, query_fn fn, void *arg,
                          char *why, size_t whylen)
{
    while (q && *q) {
        const char *end = strchr(q, '&');
        size_t len = end ? (size_t)(end - q) : strlen(q);
        const char *eq = memchr(q, '=', len);
        size_t nlen = eq ? (size_t)(eq - q) : len;
        bool known = false;
        for (const char *const *a = allowed; *a && !known; a++)
            known = strlen(*a) == nlen && memcmp(*a, q, nlen) == 0;
        if (len > 0 && !known) {
            gim_err_why(why, whylen, "unknown query parameter '%.*s'", (int)(nlen > 64 ? 64 : nlen),
                        q);
            return GIM_EBADREQ;
        }
        if (len > 0) {
            const char *val = eq ? eq + 1 : q + len;
            gim_err e = fn(arg, q, nlen, val, (size_t)(q + len - val), why, whylen);
            if (e != GIM_OK)
                return e;
        }
        q = end ? end + 1 : NULL;
    }
    return GIM_OK;
}

/* Decimal digits only, within int64 (the form of every id and count in the API). */
static bool parse_i64(const char *s, size_t len, int64_t *out)
{
    int64_t v = 0;
    if (len == 0 || len > 19)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        int d = s[i] - '0';
        if (v > (INT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

/* ---- packing -------------------------------------------------------------- */

static gim_err pack(const ProtobufCMessage *m, uint8_t **data, size_t *len, char *why,
                    size_t whylen)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    *data = malloc(n ? n : 1);
    if (!*data) {
        gim_err_why(why, whylen, "out of memory");
        return GIM_EINTERNAL;
    }
    *len = protobuf_c_message_pack(m, *data);
    return GIM_OK;
}

/* The strings protobuf-c packs are only read: the JSON's own strings are lent to it. */
#define LEND(s) ((char *)(s))

/* ---- groups --------------------------------------------------------------- */

static gim_err enc_group_create(const struct apiroute_in *in, uint8_t **data, size_t *len,
                                char *why, size_t whylen)
{
    static const char *const fields[] = {"name",     "avatar_url", "extra",
                                         "owner_id", "member_ids", NULL};
    Pb__AdminGroupCreateInput m = PB__ADMIN_GROUP_CREATE_INPUT__INIT;
    const char *name = "", *avatar = "", *extra = "";
    gim_err e;
    if ((e = only_fields(in->body, fields, "body", why, whylen)) != GIM_OK ||
        (e = get_str(in->body, "name", &name, why, whylen)) != GIM_OK ||
        (e = get_str(in->body, "avatar_url", &avatar, why, whylen)) != GIM_OK ||
        (e = get_str(in->body, "extra", &extra, why, whylen)) != GIM_OK ||
        (e = get_i64(in->body, "owner_id", &m.owner_id, why, whylen)) != GIM_OK ||
        (e = get_ids(in->body, "member_ids", &m.member_ids, &m.n_member_ids, why, whylen)) !=
            GIM_OK)
        return e;
    m.token = LEND(in->token);
    m.idempotency_key = LEND(in->idempotency_key);
    m.name = LEND(name);
    m.avatar_url = LEND(avatar);
    m.extra = LEND(extra);
    e = pack(&m.base, data, len, why, whylen);
    free(m.member_ids);
    return e;
}

static gim_err enc_group_update(const struct apiroute_in *in, uint8_t **data, size_t *len,
                                char *why, size_t whylen)
{
    static const char *const fields[] = {"name", "avatar_url", "extra", NULL};
    Pb__AdminGroupUpdateInput m = PB__ADMIN_GROUP_UPDATE_INPUT__INIT;
    const char *name = "", *avatar = "", *extra = "";
    char *present[3];
    gim_err e;
    if ((e = only_fields(in->body, fields, "body", why, whylen)) != GIM_OK ||
        (e = get_str(in->body, "name", &name, why, whylen)) != GIM_OK ||
        (e = get_str(in->body, "avatar_url", &avatar, why, whylen)) != GIM_OK ||
        (e = get_str(in->body, "extra", &extra, why, whylen)) != GIM_OK)
        return e;
    /* The fields named in the body are the ones that change (PATCH). */
    for (int i = 0; fields[i]; i++)
        if (json_object_get(in->body, fields[i]))
            present[m.n_fields++] = LEND(fields[i]);
    m.fields = present;
    m.token = LEND(in->token);
    m.idempotency_key = LEND(in->idempotency_key);
    m.group_id = in->params[0];
    m.name = LEND(name);
    m.avatar_url = LEND(avatar);
    m.extra = LEND(extra);
    return pack(&m.base, data, len, why, whylen);
}

/* GET and DELETE /v1/groups/{id}: no body. */
static gim_err enc_group(const struct apiroute_in *in, uint8_t **data, size_t *len, char *why,
                         size_t whylen)
{
    static const char *const fields[] = {NULL};
    Pb__AdminGroupInput m = PB__ADMIN_GROUP_INPUT__INIT;
    gim_err e = only_fields(in->body, fields, "body", why, whylen);
    if (e != GIM_OK)
        return e;
    m.token = LEND(in->token);
    m.idempotency_key = LEND(in->idempotency_key);
    m.group_id = in->params[0];
    return pack(&m.base, data, len, why, whylen);
}

static gim_err enc_members_add(const struct apiroute_in *in, uint8_t **data, size_t *len, char *why,
                               size_t whylen)
{
    static const char *const fields[] = {"user_ids", "role", NULL};
    Pb__AdminGroupMembersInput m = PB__ADMIN_GROUP_MEMBERS_INPUT__INIT;
    gim_err e;
    if ((e = only_fields(in->body, fields, "body", why, whylen)) != GIM_OK ||
        (e = get_role(in->body, "role", &m.role, why, whylen)) != GIM_OK ||
        (e = get_ids(in->body, "user_ids", &m.user_ids, &m.n_user_ids, why, whylen)) != GIM_OK)
        return e;
    m.token = LEND(in->token);
    m.idempotency_key = LEND(in->idempotency_key);
    m.group_id = in->params[0];
    e = pack(&m.base, data, len, why, whylen);
    free(m.user_ids);
    return e;
}

struct id_list {
    int64_t *ids;
    size_t n, cap;
};

/* ?user_ids=1,2,3 (or repeated: user_ids=1&user_ids=2). */
static gim_err query_user_ids(void *arg, const char *name, size_t nlen, const char *val,
                              size_t vlen, char *why, size_t whylen)
{
    struct id_list *l = arg;
    (void)name;
    (void)nlen;
    while (vlen > 0) {
        const char *comma = memchr(val, ',', vlen);
        size_t n = comma ? (size_t)(comma - val) : vlen;
        int64_t id;
        if (!parse_i64(val, n, &id)) {
            gim_err_why(why, whylen, "query parameter 'user_ids' must be ids separated by commas");
            return GIM_EBADREQ;
        }
        if (l->n == l->cap) {
            size_t cap = l->cap ? l->cap * 2 : 16;
            int64_t *ids = realloc(l->ids, cap * sizeof *ids);
            if (!ids) {
                gim_err_why(why, whylen, "out of memory");
                return GIM_EINTERNAL;
            }
            l->ids = ids;
            l->cap = cap;
        }
        l->ids[l->n++] = id;
        if (!comma)
            break;
        vlen -= n + 1;
        val = comma + 1;
        if (vlen == 0) {
            gim_err_why(why, whylen, "query parameter 'user_ids' ends with a comma");
            return GIM_EBADREQ;
        }
    }
    return GIM_OK;
}

/* DELETE /v1/groups/{id}/members: the ids in the body or in the query, not both. */
static gim_err enc_members_remove(const struct apiroute_in *in, uint8_t **data, size_t *len,
                                  char *why, size_t whylen)
{
    static const char *const fields[] = {"user_ids", NULL};
    static const char *const params[] = {"user_ids", NULL};
    Pb__AdminGroupMembersInput m = PB__ADMIN_GROUP_MEMBERS_INPUT__INIT;
    struct id_list q = {0};
    gim_err e;
    if ((e = only_fields(in->body, fields, "body", why, whylen)) != GIM_OK ||
        (e = each_query(in->query, params, query_user_ids, &q, why, whylen)) != GIM_OK)
        goto out;
    if (q.n > 0 && json_object_get(in->body, "user_ids")) {
        gim_err_why(why, whylen, "give user_ids in the body or in the query, not both");
        e = GIM_EBADREQ;
        goto out;
    }
    if (q.n > 0) {
        m.user_ids = q.ids;
        m.n_user_ids = q.n;
        q.ids = NULL;
    } else if ((e = get_ids(in->body, "user_ids", &m.user_ids, &m.n_user_ids, why, whylen)) !=
               GIM_OK) {
        goto out;
    }
    m.token = LEND(in->token);
    m.idempotency_key = LEND(in->idempotency_key);
    m.group_id = in->params[0];
    e = pack(&m.base, data, len, why, whylen);
out:
    free(m.user_ids);
    free(q.ids);
    return e;
}

static gim_err enc_set_role(const struct apiroute_in *in, uint8_t **data, size_t *len, char *why,
                            size_t whylen)
{
    static const char *const fields[] = {"role", NULL};
    Pb__AdminGroupRoleInput m = PB__ADMIN_GROUP_ROLE_INPUT__INIT;
    gim_err e;
    if ((e = only_fields(in->body, fields, "body", why, whylen)) != GIM_OK ||
        (e = get_role(in->body, "role", &m.role, why, whylen)) != GIM_OK)
        return e;
    m.token = LEND(in->token);
    m.idempotency_key = LEND(in->idempotency_key);
    m.group_id = in->params[0];
    m.user_id = in->params[1];
    return pack(&m.base, data, len, why, whylen);
}

struct page_query {
    int64_t after;
    int64_t limit;
};

static gim_err query_page(void *arg, const char *name, size_t nlen, const char *val, size_t vlen,
                          char *why, size_t whylen)
{
    struct page_query *p = arg;
    bool after = nlen == 5 && memcmp(name, "after", 5) == 0;
    int64_t v;
    if (!parse_i64(val, vlen, &v) || (!after && v > INT32_MAX)) {
        gim_err_why(why, whylen, "query parameter '%s' must be a non-negative integer%s",
                    after ? "after" : "limit", after ? "" : " (32-bit)");
        return GIM_EBADREQ;
    }
    if (after)
        p->after = v;
    else
        p->limit = v;
    return GIM_OK;
}

static gim_err enc_member_list(const struct apiroute_in *in, uint8_t **data, size_t *len, char *why,
                               size_t whylen)
{
    static const char *const fields[] = {NULL};
    static const char *const params[] = {"after", "limit", NULL};
    Pb__AdminGroupMemberListInput m = PB__ADMIN_GROUP_MEMBER_LIST_INPUT__INIT;
    struct page_query q = {0, 0};
    gim_err e;
    if ((e = only_fields(in->body, fields, "body", why, whylen)) != GIM_OK ||
        (e = each_query(in->query, params, query_page, &q, why, whylen)) != GIM_OK)
        return e;
    m.token = LEND(in->token);
    m.group_id = in->params[0];
    m.after_user_id = q.after;
    m.limit = (int32_t)q.limit;
    return pack(&m.base, data, len, why, whylen);
}

/* ---- messages ------------------------------------------------------------- */

/* "to": exactly one of {"user": id}, {"users": [ids]}, {"group": id}, {"room": id}. */
static gim_err enc_to(const json_t *to, Pb__Message *msg, Pb__AdminSendInput *m, char *why,
                      size_t whylen)
{
    static const char *const fields[] = {"user", "users", "group", "room", NULL};
    static const Pb__ReceiverType types[] = {PB__RECEIVER_TYPE__RT_USER, PB__RECEIVER_TYPE__RT_USER,
                                             PB__RECEIVER_TYPE__RT_GROUP,
                                             PB__RECEIVER_TYPE__RT_ROOM};
    gim_err e;
    if ((e = want_object(to, "to", why, whylen)) != GIM_OK ||
        (e = only_fields(to, fields, "to", why, whylen)) != GIM_OK)
        return e;
    if (json_object_size(to) != 1) {
        gim_err_why(why, whylen, "'to' must name exactly one of user, users, group or room");
        return GIM_EBADREQ;
    }
    for (int i = 0; fields[i]; i++) {
        if (!json_object_get(to, fields[i]))
            continue;
        msg->receiver_type = types[i];
        if (i == 1) /* a list: receiver_id 0 and the ids in user_ids */
            return get_ids(to, "users", &m->user_ids, &m->n_user_ids, why, whylen);
        return get_i64(to, fields[i], &msg->receiver_id, why, whylen);
    }
    return GIM_OK;
}

static gim_err enc_sender(const json_t *s, Pb__Sender *snd, char *why, size_t whylen)
{
    static const char *const fields[] = {"type", "id", "nickname", "avatar_url", "extra", NULL};
    const char *type = NULL, *nick = "", *avatar = "", *extra = "";
    gim_err e;
    if ((e = want_object(s, "sender", why, whylen)) != GIM_OK ||
        (e = only_fields(s, fields, "sender", why, whylen)) != GIM_OK ||
        (e = get_str(s, "type", &type, why, whylen)) != GIM_OK ||
        (e = get_i64(s, "id", &snd->sender_id, why, whylen)) != GIM_OK ||
        (e = get_str(s, "nickname", &nick, why, whylen)) != GIM_OK ||
        (e = get_str(s, "avatar_url", &avatar, why, whylen)) != GIM_OK ||
        (e = get_str(s, "extra", &extra, why, whylen)) != GIM_OK)
        return e;
    if (type && strcmp(type, "system") == 0)
        snd->sender_type = PB__SENDER_TYPE__ST_SYSTEM;
    else if (type && strcmp(type, "business") == 0)
        snd->sender_type = PB__SENDER_TYPE__ST_BUSINESS;
    else if (type) {
        gim_err_why(why, whylen, "field 'type' of sender must be \"system\" or \"business\"");
        return GIM_EBADREQ;
    }
    snd->nickname = LEND(nick);
    snd->avatar_url = LEND(avatar);
    snd->extra = LEND(extra);
    return GIM_OK;
}

/* The content of each message type: the JSON fields are the protobuf message's. */
static gim_err enc_content(const char *type, const json_t *c, Pb__Message *msg, char *why,
                           size_t whylen)
{
    gim_err e = want_object(c, "content", why, whylen);
    if (e != GIM_OK)
        return e;
#define FIELDS(...)                                                                                \
    do {                                                                                           \
        static const char *const f_[] = {__VA_ARGS__, NULL};                                       \
        if ((e = only_fields(c, f_, "content", why, whylen)) != GIM_OK)                            \
            return e;                                                                              \
    } while (0)
#define TRY(x)                                                                                     \
    do {                                                                                           \
        if ((e = (x)) != GIM_OK)                                                                   \
            return e;                                                                              \
    } while (0)
    uint8_t **out = &msg->message_content.data;
    size_t *outlen = &msg->message_content.len;
    if (strcmp(type, "text") == 0) {
        Pb__Text m = PB__TEXT__INIT;
        const char *text = "";
        FIELDS("text");
        TRY(get_str(c, "text", &text, why, whylen));
        m.text = LEND(text);
        msg->message_type = PB__MESSAGE_TYPE__MT_TEXT;
        return pack(&m.base, out, outlen, why, whylen);
    }
    if (strcmp(type, "face") == 0) {
        Pb__Face m = PB__FACE__INIT;
        const char *url = "";
        FIELDS("face_id", "face_url");
        TRY(get_i64(c, "face_id", &m.face_id, why, whylen));
        TRY(get_str(c, "face_url", &url, why, whylen));
        m.face_url = LEND(url);
        msg->message_type = PB__MESSAGE_TYPE__MT_FACE;
        return pack(&m.base, out, outlen, why, whylen);
    }
    if (strcmp(type, "voice") == 0) {
        Pb__Voice m = PB__VOICE__INIT;
        const char *id = "", *url = "";
        FIELDS("id", "size", "duration", "url");
        TRY(get_str(c, "id", &id, why, whylen));
        TRY(get_i32(c, "size", &m.size, why, whylen));
        TRY(get_i32(c, "duration", &m.duration, why, whylen));
        TRY(get_str(c, "url", &url, why, whylen));
        m.id = LEND(id);
        m.url = LEND(url);
        msg->message_type = PB__MESSAGE_TYPE__MT_VOICE;
        return pack(&m.base, out, outlen, why, whylen);
    }
    if (strcmp(type, "image") == 0) {
        Pb__Image m = PB__IMAGE__INIT;
        const char *id = "", *url = "", *thumb = "";
        FIELDS("id", "width", "height", "url", "thumbnail_url");
        TRY(get_str(c, "id", &id, why, whylen));
        TRY(get_i32(c, "width", &m.width, why, whylen));
        TRY(get_i32(c, "height", &m.height, why, whylen));
        TRY(get_str(c, "url", &url, why, whylen));
        TRY(get_str(c, "thumbnail_url", &thumb, why, whylen));
        m.id = LEND(id);
        m.url = LEND(url);
        m.thumbnail_url = LEND(thumb);
        msg->message_type = PB__MESSAGE_TYPE__MT_IMAGE;
        return pack(&m.base, out, outlen, why, whylen);
    }
    if (strcmp(type, "file") == 0) {
        Pb__File m = PB__FILE__INIT;
        const char *name = "", *url = "";
        FIELDS("id", "name", "size", "url");
        TRY(get_i64(c, "id", &m.id, why, whylen));
        TRY(get_str(c, "name", &name, why, whylen));
        TRY(get_i64(c, "size", &m.size, why, whylen));
        TRY(get_str(c, "url", &url, why, whylen));
        m.name = LEND(name);
        m.url = LEND(url);
        msg->message_type = PB__MESSAGE_TYPE__MT_FILE;
        return pack(&m.base, out, outlen, why, whylen);
    }
    if (strcmp(type, "location") == 0) {
        Pb__Location m = PB__LOCATION__INIT;
        const char *desc = "";
        FIELDS("desc", "latitude", "longitude");
        TRY(get_str(c, "desc", &desc, why, whylen));
        TRY(get_double(c, "latitude", &m.latitude, why, whylen));
        TRY(get_double(c, "longitude", &m.longitude, why, whylen));
        m.desc = LEND(desc);
        msg->message_type = PB__MESSAGE_TYPE__MT_LOCATION;
        return pack(&m.base, out, outlen, why, whylen);
    }
    if (strcmp(type, "command") == 0) {
        /* data: a string (a business's commands are usually JSON); its UTF-8 bytes are sent. */
        Pb__Command m = PB__COMMAND__INIT;
        const char *d = "";
        FIELDS("code", "data");
        TRY(get_i32(c, "code", &m.code, why, whylen));
        TRY(get_str(c, "data", &d, why, whylen));
        m.data.data = (uint8_t *)LEND(d);
        m.data.len = strlen(d);
        msg->message_type = PB__MESSAGE_TYPE__MT_COMMAND;
        return pack(&m.base, out, outlen, why, whylen);
    }
    if (strcmp(type, "custom") == 0) {
        Pb__Custom m = PB__CUSTOM__INIT;
        const char *d = "";
        FIELDS("data");
        TRY(get_str(c, "data", &d, why, whylen));
        m.data = LEND(d);
        msg->message_type = PB__MESSAGE_TYPE__MT_CUSTOM;
        return pack(&m.base, out, outlen, why, whylen);
    }
#undef FIELDS
#undef TRY
    gim_err_why(why, whylen,
                "field 'type' must be one of text, face, voice, image, file, location, command, "
                "custom");
    return GIM_EBADREQ;
}

static gim_err enc_send(const struct apiroute_in *in, uint8_t **data, size_t *len, char *why,
                        size_t whylen)
{
    static const char *const fields[] = {"sender", "to", "type", "content", "mentions", NULL};
    Pb__AdminSendInput m = PB__ADMIN_SEND_INPUT__INIT;
    Pb__Message msg = PB__MESSAGE__INIT;
    Pb__Sender snd = PB__SENDER__INIT;
    const json_t *b = in->body, *v;
    const char *type = NULL;
    gim_err e;
    if ((e = only_fields(b, fields, "body", why, whylen)) != GIM_OK)
        goto out;
    if ((v = json_object_get(b, "sender")) && (e = enc_sender(v, &snd, why, whylen)) != GIM_OK)
        goto out;
    msg.sender = &snd;
    if ((v = json_object_get(b, "to")) && (e = enc_to(v, &msg, &m, why, whylen)) != GIM_OK)
        goto out;
    if ((e = get_ids(b, "mentions", &msg.to_user_ids, &msg.n_to_user_ids, why, whylen)) != GIM_OK ||
        (e = get_str(b, "type", &type, why, whylen)) != GIM_OK)
        goto out;
    v = json_object_get(b, "content");
    if (type && !v) {
        gim_err_why(why, whylen, "a message of type '%s' needs a 'content' object", type);
        e = GIM_EBADREQ;
        goto out;
    }
    if (v && !type) {
        gim_err_why(why, whylen, "'content' needs a 'type' saying what it is");
        e = GIM_EBADREQ;
        goto out;
    }
    if (type && (e = enc_content(type, v, &msg, why, whylen)) != GIM_OK)
        goto out;
    m.token = LEND(in->token);
    m.idempotency_key = LEND(in->idempotency_key);
    m.message = &msg;
    e = pack(&m.base, data, len, why, whylen);
out:
    free(m.user_ids);
    free(msg.to_user_ids);
    free(msg.message_content.data);
    return e;
}

/* ---- recall, kick, erase -------------------------------------------------- */

static gim_err enc_recall(const struct apiroute_in *in, uint8_t **data, size_t *len, char *why,
                          size_t whylen)
{
    static const char *const fields[] = {NULL};
    Pb__AdminRecallInput m = PB__ADMIN_RECALL_INPUT__INIT;
    gim_err e = only_fields(in->body, fields, "body", why, whylen);
    if (e != GIM_OK)
        return e;
    m.token = LEND(in->token);
    m.user_id = in->params[0];
    m.seq = in->params[1];
    return pack(&m.base, data, len, why, whylen);
}

static gim_err enc_kick(const struct apiroute_in *in, uint8_t **data, size_t *len, char *why,
                        size_t whylen)
{
    static const char *const fields[] = {NULL};
    Pb__AdminKickInput m = PB__ADMIN_KICK_INPUT__INIT;
    gim_err e = only_fields(in->body, fields, "body", why, whylen);
    if (e != GIM_OK)
        return e;
    m.token = LEND(in->token);
    m.device_id = in->params[0];
    return pack(&m.base, data, len, why, whylen);
}

static gim_err enc_erase(const struct apiroute_in *in, uint8_t **data, size_t *len, char *why,
                         size_t whylen)
{
    static const char *const fields[] = {"max_rows", NULL};
    Pb__AdminEraseInput m = PB__ADMIN_ERASE_INPUT__INIT;
    gim_err e;
    if ((e = only_fields(in->body, fields, "body", why, whylen)) != GIM_OK ||
        (e = get_i32(in->body, "max_rows", &m.max_rows, why, whylen)) != GIM_OK)
        return e;
    m.token = LEND(in->token);
    m.user_id = in->params[0];
    return pack(&m.base, data, len, why, whylen);
}

/* ---- answers -------------------------------------------------------------- */

/* json_pack: "I" is a json_int_t (long long), "b" an int, "s" a string. */
static json_t *group_json(const Pb__GroupInfo *g)
{
    return json_pack("{s:I, s:s, s:s, s:s, s:I, s:I, s:I, s:I}", "group_id",
                     (json_int_t)g->group_id, "name", g->name, "avatar_url", g->avatar_url, "extra",
                     g->extra, "owner_id", (json_int_t)g->owner_id, "member_count",
                     (json_int_t)g->member_count, "created_at", (json_int_t)g->created_at,
                     "updated_at", (json_int_t)g->updated_at);
}

static json_t *member_json(const Pb__GroupMember *m)
{
    return json_pack("{s:I, s:s, s:I}", "user_id", (json_int_t)m->user_id, "role",
                     role_name(m->role), "joined_at", (json_int_t)m->joined_at);
}

static json_t *ids_json(const int64_t *ids, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        json_array_append_new(a, json_integer((json_int_t)ids[i]));
    return a;
}

static json_t *dec_group(const ProtobufCMessage *reply)
{
    const Pb__GroupInfo *g = (const Pb__GroupInfo *)reply;
    return group_json(g);
}

static json_t *dec_members(const ProtobufCMessage *reply)
{
    const Pb__AdminGroupMembersOutput *o = (const Pb__AdminGroupMembersOutput *)reply;
    return json_pack("{s:o, s:o, s:I}", "changed", ids_json(o->changed, o->n_changed), "unchanged",
                     ids_json(o->unchanged, o->n_unchanged), "member_count",
                     (json_int_t)o->member_count);
}

static json_t *dec_member(const ProtobufCMessage *reply)
{
    const Pb__GroupMember *m = (const Pb__GroupMember *)reply;
    return member_json(m);
}

static json_t *dec_member_list(const ProtobufCMessage *reply)
{
    const Pb__AdminGroupMemberListOutput *o = (const Pb__AdminGroupMemberListOutput *)reply;
    json_t *a = json_array();
    for (size_t i = 0; a && i < o->n_members; i++)
        json_array_append_new(a, member_json(o->members[i]));
    return json_pack("{s:o, s:b}", "members", a, "has_more", (int)o->has_more);
}

static json_t *dec_send(const ProtobufCMessage *reply)
{
    const Pb__AdminSendOutput *o = (const Pb__AdminSendOutput *)reply;
    json_t *copies = json_array();
    for (size_t i = 0; copies && i < o->n_copies; i++)
        json_array_append_new(copies,
                              json_pack("{s:I, s:I}", "user_id", (json_int_t)o->copies[i]->user_id,
                                        "seq", (json_int_t)o->copies[i]->seq));
    return json_pack("{s:o, s:I, s:I, s:I}", "copies", copies, "recipients",
                     (json_int_t)o->recipients, "room_seq", (json_int_t)o->room_seq, "send_time",
                     (json_int_t)o->send_time);
}

static json_t *dec_recall(const ProtobufCMessage *reply)
{
    const Pb__RecallOutput *o = (const Pb__RecallOutput *)reply;
    return json_pack("{s:b}", "already_recalled", (int)o->already_recalled);
}

static json_t *dec_kick(const ProtobufCMessage *reply)
{
    const Pb__AdminKickOutput *o = (const Pb__AdminKickOutput *)reply;
    return json_pack("{s:I, s:b, s:s}", "user_id", (json_int_t)o->user_id, "was_online",
                     (int)o->was_online, "gateway_id", o->gateway_id);
}

static json_t *dec_erase(const ProtobufCMessage *reply)
{
    const Pb__AdminEraseOutput *o = (const Pb__AdminEraseOutput *)reply;
    return json_pack("{s:b, s:I, s:I, s:I, s:I, s:I, s:I}", "done", (int)o->done, "devices",
                     (json_int_t)o->devices, "memberships", (json_int_t)o->memberships,
                     "inbox_entries", (json_int_t)o->inbox_entries, "messages_erased",
                     (json_int_t)o->messages_erased, "messages_deleted",
                     (json_int_t)o->messages_deleted, "room_messages_erased",
                     (json_int_t)o->room_messages_erased);
}

/* ---- the table ------------------------------------------------------------ */

#define PT(x) PB__PACKAGE_TYPE__PT_##x

static const struct apiroute routes[] = {
    {"POST", "/v1/groups", PT(ADMIN_GROUP_CREATE), 201, enc_group_create,
     &pb__group_info__descriptor, dec_group},
    {"GET", "/v1/groups/{group_id}", PT(ADMIN_GROUP_GET), 200, enc_group,
     &pb__group_info__descriptor, dec_group},
    {"PATCH", "/v1/groups/{group_id}", PT(ADMIN_GROUP_UPDATE), 200, enc_group_update,
     &pb__group_info__descriptor, dec_group},
    {"DELETE", "/v1/groups/{group_id}", PT(ADMIN_GROUP_DISSOLVE), 204, enc_group, NULL, NULL},
    {"POST", "/v1/groups/{group_id}/members", PT(ADMIN_GROUP_ADD_MEMBERS), 200, enc_members_add,
     &pb__admin_group_members_output__descriptor, dec_members},
    {"DELETE", "/v1/groups/{group_id}/members", PT(ADMIN_GROUP_REMOVE_MEMBERS), 200,
     enc_members_remove, &pb__admin_group_members_output__descriptor, dec_members},
    {"GET", "/v1/groups/{group_id}/members", PT(ADMIN_GROUP_MEMBERS), 200, enc_member_list,
     &pb__admin_group_member_list_output__descriptor, dec_member_list},
    {"PUT", "/v1/groups/{group_id}/members/{user_id}/role", PT(ADMIN_GROUP_SET_ROLE), 200,
     enc_set_role, &pb__group_member__descriptor, dec_member},
    {"POST", "/v1/messages", PT(ADMIN_SEND), 201, enc_send, &pb__admin_send_output__descriptor,
     dec_send},
    {"POST", "/v1/users/{user_id}/messages/{seq}/recall", PT(ADMIN_RECALL), 200, enc_recall,
     &pb__recall_output__descriptor, dec_recall},
    {"DELETE", "/v1/devices/{device_id}/session", PT(ADMIN_KICK), 200, enc_kick,
     &pb__admin_kick_output__descriptor, dec_kick},
    {"POST", "/v1/users/{user_id}/erase", PT(ADMIN_ERASE), 200, enc_erase,
     &pb__admin_erase_output__descriptor, dec_erase},
};

#define NROUTES (sizeof routes / sizeof routes[0])

const struct apiroute *apiroute_table(size_t *n)
{
    *n = NROUTES;
    return routes;
}

/* The next segment of a path (after a '/'): [*s, *s + len); false at the end. */
static bool next_segment(const char **p, const char **s, size_t *len)
{
    if (**p != '/')
        return false;
    *s = *p + 1;
    *len = strcspn(*s, "/");
    *p = *s + *len;
    return true;
}

enum fit { FIT_NO, FIT_YES, FIT_BAD_ID };

/* Whether path has pattern's shape; ids parsed into params, a bad one named in why. */
static enum fit fit(const char *pattern, const char *path, int64_t params[APIROUTE_MAX_PARAMS],
                    char *why, size_t whylen)
{
    const char *pp = pattern, *xp = path, *ps, *xs;
    size_t plen, xlen;
    int np = 0;
    enum fit result = FIT_YES;
    for (;;) {
        bool more_p = next_segment(&pp, &ps, &plen);
        bool more_x = next_segment(&xp, &xs, &xlen);
        if (!more_p || !more_x)
            return more_p == more_x && *xp == '\0' ? result : FIT_NO;
        if (ps[0] != '{') {
            if (plen != xlen || memcmp(ps, xs, plen) != 0)
                return FIT_NO;
            continue;
        }
        int64_t id = 0;
        /* Positive, decimal, no sign, no leading zero: one spelling per id. */
        if (xlen == 0)
            return FIT_NO;
        if (result == FIT_YES && (!parse_i64(xs, xlen, &id) || id <= 0 || xs[0] == '0')) {
            gim_err_why(why, whylen, "%.*s '%.*s' in the path is not a positive 64-bit integer",
                        (int)plen - 2, ps + 1, (int)(xlen > 40 ? 40 : xlen), xs);
            result = FIT_BAD_ID;
        }
        if (np < APIROUTE_MAX_PARAMS)
            params[np++] = id;
    }
}

enum apiroute_miss apiroute_match(const char *method, const char *path,
                                  const struct apiroute **route,
                                  int64_t params[APIROUTE_MAX_PARAMS], char *allow, size_t allowlen,
                                  char *why, size_t whylen)
{
    enum apiroute_miss miss = APIROUTE_NO_PATH;
    char bad[160] = "";
    if (allowlen)
        allow[0] = '\0';
    *route = NULL;
    for (size_t i = 0; i < NROUTES; i++) {
        int64_t p[APIROUTE_MAX_PARAMS] = {0, 0};
        enum fit f = fit(routes[i].pattern, path, p, bad, sizeof bad);
        if (f == FIT_NO)
            continue;
        if (strcmp(routes[i].method, method) != 0) {
            size_t used = strlen(allow);
            if (used < allowlen)
                snprintf(allow + used, allowlen - used, "%s%s", used ? ", " : "", routes[i].method);
            if (miss == APIROUTE_NO_PATH)
                miss = APIROUTE_NO_METHOD;
            continue;
        }
        if (f == FIT_BAD_ID) {
            gim_err_why(why, whylen, "%s", bad);
            return APIROUTE_BAD_PARAM;
        }
        *route = &routes[i];
        memcpy(params, p, sizeof p);
        return APIROUTE_FOUND;
    }
    return miss;
}
