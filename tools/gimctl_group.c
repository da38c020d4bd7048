/*
 * gimctl group: groups through the running service's business API
 * (PT_ADMIN_GROUP_*, docs/protocol.md "The business API"), with an operator
 * token minted from the secret: create, update, dissolve, add, remove, role,
 * show, members. Going through gim-logic (never the database file) is what
 * makes each change reach the members as a group notice, take its seqs from
 * the writer's counters and respect the service's own limits.
 *
 * `group list` alone reads the --db file, read-only (safe while the service
 * runs; the API has no "every group" request): offline inspection.
 *
 * Writes are idempotent: --key K is the request's idempotency key (a rerun
 * with the same key and arguments changes nothing and prints the first
 * reply); without it each run is a new request.
 */
#include <sqlite3.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "gimctl.h"

/* One page of `group show`/`group members` (the service's maximum). */
#define PAGE 1000

static const char SQL_GROUP_LIST[] =
    "SELECT g.group_id, g.name, g.owner_id, "
    "(SELECT count(*) FROM group_member m WHERE m.group_id = g.group_id) "
    "FROM chat_group g ORDER BY g.group_id";

/* clang-format off */
const char gimctl_usage_group[] =
    "usage: gimctl group create --owner U [--members U1,U2,...] [--name NAME] [--avatar URL] [--extra TEXT] [--key K]\n"
    "       gimctl group update GROUP [--name NAME] [--avatar URL] [--extra TEXT] [--key K]\n"
    "       gimctl group dissolve GROUP [--key K]\n"
    "       gimctl group add GROUP U1[,U2...] [--role admin|member] [--key K]\n"
    "       gimctl group remove GROUP U1[,U2...] [--key K]\n"
    "       gimctl group role GROUP USER owner|admin|member [--key K]\n"
    "       gimctl group show GROUP\n"
    "       gimctl group members GROUP [--after U] [--limit N]\n"
    "       gimctl [--db PATH] group list\n"
    "  Groups through the running service's business API (--url), with an\n"
    "  operator token minted from --secret or $GIM_TOKEN_SECRET; every member\n"
    "  gets a group notice of each change (docs/protocol.md).\n"
    "  create   a group owned by U (role owner); prints only its id\n"
    "  update   changes the fields given; prints the group\n"
    "  dissolve deletes the group and its memberships; prints `dissolved group=G`\n"
    "  add      adds members (default role member; members already in are left\n"
    "           as they are); prints `added=.. already=.. members=N`\n"
    "  remove   removes members (never the owner); prints `removed=.. not_members=.. members=N`\n"
    "  role     sets a member's role; owner transfers ownership (the old owner\n"
    "           becomes admin); prints `group=G user=U role=R`\n"
    "  show     the group, then one line per member: `user=U role=R joined_at=T`\n"
    "  members  the members in user id order (--after U: those after U; --limit N:\n"
    "           one page of N, then `more after=U` when more follow)\n"
    "  list     one line per group, read from the --db file (read-only, offline)\n"
    "  --key K is the idempotency key of a write: the same K with the same\n"
    "  arguments again changes nothing and prints the first reply.\n"
    "Exit status: 0 done, 1 refused by the service or no reply (nothing changed),\n"
    "2 bad usage (nothing sent).\n";
/* clang-format on */

/* Options of every group subcommand; which ones a subcommand accepts is checked after parsing. */
struct gopts {
    const char *sub;
    const char *pos[3]; /* positional arguments after the subcommand */
    int npos;
    int64_t owner, after, limit;
    const char *members, *name, *avatar, *extra, *role, *key;
    int64_t *ids; /* --members of create, pos[1] of add and remove (owned) */
    size_t n_ids;
    int64_t group_id;
};

static int usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage(const char *fmt, ...)
{
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return gimctl_usage_error("group", "%s", msg);
}

/* Parses "U1,U2,..." (positive ids, no empty fields) into a malloc'ed array; 0 on success. */
static int parse_ids(const char *s, int64_t **ids, size_t *n)
{
    size_t cap = 1;
    *ids = NULL;
    *n = 0;
    if (!s || !*s)
        return usage("empty user list");
    for (const char *p = s; *p; p++)
        cap += *p == ',';
    char *copy = strdup(s);
    *ids = calloc(cap, sizeof **ids);
    int rc = 0;
    if (!copy || !*ids) {
        fprintf(stderr, "gimctl group: out of memory\n");
        rc = 1;
        goto out;
    }
    /* strtok_r would skip empty fields; "1,,2" is a typo worth reporting. */
    for (char *field = copy; field;) {
        char *comma = strchr(field, ',');
        if (comma)
            *comma = '\0';
        if (gimctl_parse_id(field, &(*ids)[*n]) != 0) {
            rc = usage("bad user id \"%s\" in \"%s\" (ids are positive integers)", field, s);
            goto out;
        }
        (*n)++;
        field = comma ? comma + 1 : NULL;
    }
out:
    free(copy);
    if (rc != 0) {
        free(*ids);
        *ids = NULL;
        *n = 0;
    }
    return rc;
}

static int parse_opts(int argc, char **argv, struct gopts *o)
{
    *o = (struct gopts){.sub = argv[1]};
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0 || strcmp(a, "--") == 0) {
            if (strcmp(a, "--") == 0 && ++i >= argc)
                break;
            if (o->npos == 3)
                return usage("unexpected argument \"%s\"", argv[i]);
            o->pos[o->npos++] = argv[i];
            continue;
        }
        if (i + 1 >= argc)
            return usage("%s needs a value", a);
        const char *v = argv[++i];
        if (strcmp(a, "--owner") == 0) {
            if (gimctl_parse_id(v, &o->owner) != 0)
                return usage("bad owner id \"%s\" (ids are positive integers)", v);
        } else if (strcmp(a, "--after") == 0 || strcmp(a, "--limit") == 0) {
            int64_t *dst = a[2] == 'a' ? &o->after : &o->limit;
            if (gimctl_parse_id(v, dst) != 0)
                return usage("%s needs a positive number, not \"%s\"", a, v);
        } else if (strcmp(a, "--members") == 0) {
            o->members = v;
        } else if (strcmp(a, "--name") == 0) {
            o->name = v;
        } else if (strcmp(a, "--avatar") == 0) {
            o->avatar = v;
        } else if (strcmp(a, "--extra") == 0) {
            o->extra = v;
        } else if (strcmp(a, "--key") == 0) {
            o->key = v;
        } else if (strcmp(a, "--role") == 0) {
            if (strcmp(v, "admin") != 0 && strcmp(v, "member") != 0)
                return usage("--role must be admin or member (`group role` transfers ownership)");
            o->role = v;
        } else {
            return usage("unknown option %s", a);
        }
    }
    return 0;
}

/* Which options and how many positionals each subcommand takes. */
static int check_opts(const struct gopts *o, int npos, const char *allowed)
{
    if (o->npos != npos)
        return usage("group %s takes %d argument%s", o->sub, npos, npos == 1 ? "" : "s");
    struct {
        const char *name;
        bool set;
    } opts[] = {{"--owner", o->owner},   {"--members", o->members}, {"--name", o->name},
                {"--avatar", o->avatar}, {"--extra", o->extra},     {"--role", o->role},
                {"--key", o->key},       {"--after", o->after},     {"--limit", o->limit}};
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++)
        if (opts[i].set && !strstr(allowed, opts[i].name))
            return usage("%s is not an option of group %s", opts[i].name, o->sub);
    return 0;
}

static Pb__GroupRole role_of(const char *s)
{
    if (!s)
        return PB__GROUP_ROLE__GR_UNKNOWN;
    if (strcmp(s, "owner") == 0)
        return PB__GROUP_ROLE__GR_OWNER;
    if (strcmp(s, "admin") == 0)
        return PB__GROUP_ROLE__GR_ADMIN;
    if (strcmp(s, "member") == 0)
        return PB__GROUP_ROLE__GR_MEMBER;
    return PB__GROUP_ROLE__GR_UNKNOWN;
}

static const char *role_name(Pb__GroupRole r)
{
    switch (r) {
    case PB__GROUP_ROLE__GR_OWNER:
        return "owner";
    case PB__GROUP_ROLE__GR_ADMIN:
        return "admin";
    case PB__GROUP_ROLE__GR_MEMBER:
        return "member";
    default:
        return "unknown";
    }
}

/* Prints s as a double-quoted string with ", \ and control bytes escaped. */
static void print_quoted(const unsigned char *s)
{
    putchar('"');
    for (; s && *s; s++) {
        if (*s == '"' || *s == '\\')
            printf("\\%c", *s);
        else if (*s < 0x20 || *s == 0x7f)
            printf("\\x%02x", *s);
        else
            putchar(*s);
    }
    putchar('"');
}

static void print_group(const Pb__GroupInfo *gi)
{
    printf("id=%lld name=", (long long)gi->group_id);
    print_quoted((const unsigned char *)gi->name);
    printf(" owner=%lld members=%lld avatar_url=", (long long)gi->owner_id,
           (long long)gi->member_count);
    print_quoted((const unsigned char *)gi->avatar_url);
    printf(" extra=");
    print_quoted((const unsigned char *)gi->extra);
    printf(" created_at=%lld updated_at=%lld\n", (long long)gi->created_at,
           (long long)gi->updated_at);
}

static void print_ids(const char *label, const int64_t *ids, size_t n)
{
    printf("%s=", label);
    if (n == 0)
        putchar('-');
    for (size_t i = 0; i < n; i++)
        printf("%s%lld", i ? "," : "", (long long)ids[i]);
}

/* What one run needs to talk to the service. */
struct svc {
    struct gimctl *g;
    struct gim_client *c;
    char *token;
    const char *cmd; /* "group create", ... */
};

static int call(struct svc *s, int type, const ProtobufCMessage *in, Pb__Output **out)
{
    return gimctl_operator_call(s->c, s->g, s->cmd, type, in, out);
}

/* Unpacks the reply data as desc; NULL after saying so. */
static ProtobufCMessage *reply_as(struct svc *s, const Pb__Output *out,
                                  const ProtobufCMessageDescriptor *desc)
{
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, out->data.len, out->data.data);
    if (!m)
        fprintf(stderr, "gimctl %s: the reply is not a %s\n", s->cmd, desc->short_name);
    return m;
}

static int do_create(struct svc *s, const struct gopts *o)
{
    Pb__AdminGroupCreateInput in = PB__ADMIN_GROUP_CREATE_INPUT__INIT;
    Pb__Output *out = NULL;
    in.token = s->token;
    in.owner_id = o->owner;
    in.member_ids = o->ids;
    in.n_member_ids = o->n_ids;
    in.name = (char *)(o->name ? o->name : "");
    in.avatar_url = (char *)(o->avatar ? o->avatar : "");
    in.extra = (char *)(o->extra ? o->extra : "");
    in.idempotency_key = (char *)(o->key ? o->key : "");
    if (call(s, PB__PACKAGE_TYPE__PT_ADMIN_GROUP_CREATE, &in.base, &out) != 0)
        return 1;
    Pb__GroupInfo *gi = (Pb__GroupInfo *)reply_as(s, out, &pb__group_info__descriptor);
    pb__output__free_unpacked(out, NULL);
    if (!gi)
        return 1;
    printf("%lld\n", (long long)gi->group_id);
    pb__group_info__free_unpacked(gi, NULL);
    return 0;
}

static int do_update(struct svc *s, const struct gopts *o)
{
    Pb__AdminGroupUpdateInput in = PB__ADMIN_GROUP_UPDATE_INPUT__INIT;
    Pb__Output *out = NULL;
    char *fields[3];
    size_t n = 0;
    if (o->name)
        fields[n++] = "name";
    if (o->avatar)
        fields[n++] = "avatar_url";
    if (o->extra)
        fields[n++] = "extra";
    if (n == 0)
        return usage("group update needs --name, --avatar or --extra");
    in.token = s->token;
    in.group_id = o->group_id;
    in.fields = fields;
    in.n_fields = n;
    in.name = (char *)(o->name ? o->name : "");
    in.avatar_url = (char *)(o->avatar ? o->avatar : "");
    in.extra = (char *)(o->extra ? o->extra : "");
    in.idempotency_key = (char *)(o->key ? o->key : "");
    if (call(s, PB__PACKAGE_TYPE__PT_ADMIN_GROUP_UPDATE, &in.base, &out) != 0)
        return 1;
    Pb__GroupInfo *gi = (Pb__GroupInfo *)reply_as(s, out, &pb__group_info__descriptor);
    pb__output__free_unpacked(out, NULL);
    if (!gi)
        return 1;
    print_group(gi);
    pb__group_info__free_unpacked(gi, NULL);
    return 0;
}

static int do_dissolve(struct svc *s, const struct gopts *o)
{
    Pb__AdminGroupInput in = PB__ADMIN_GROUP_INPUT__INIT;
    Pb__Output *out = NULL;
    in.token = s->token;
    in.group_id = o->group_id;
    in.idempotency_key = (char *)(o->key ? o->key : "");
    if (call(s, PB__PACKAGE_TYPE__PT_ADMIN_GROUP_DISSOLVE, &in.base, &out) != 0)
        return 1;
    pb__output__free_unpacked(out, NULL);
    printf("dissolved group=%lld\n", (long long)o->group_id);
    return 0;
}

static int do_members_change(struct svc *s, const struct gopts *o, bool add)
{
    Pb__AdminGroupMembersInput in = PB__ADMIN_GROUP_MEMBERS_INPUT__INIT;
    Pb__Output *out = NULL;
    in.token = s->token;
    in.group_id = o->group_id;
    in.user_ids = o->ids;
    in.n_user_ids = o->n_ids;
    in.role = add ? role_of(o->role) : PB__GROUP_ROLE__GR_UNKNOWN;
    in.idempotency_key = (char *)(o->key ? o->key : "");
    if (call(s,
             add ? PB__PACKAGE_TYPE__PT_ADMIN_GROUP_ADD_MEMBERS
                 : PB__PACKAGE_TYPE__PT_ADMIN_GROUP_REMOVE_MEMBERS,
             &in.base, &out) != 0)
        return 1;
    Pb__AdminGroupMembersOutput *mo = (Pb__AdminGroupMembersOutput *)reply_as(
        s, out, &pb__admin_group_members_output__descriptor);
    pb__output__free_unpacked(out, NULL);
    if (!mo)
        return 1;
    print_ids(add ? "added" : "removed", mo->changed, mo->n_changed);
    putchar(' ');
    print_ids(add ? "already" : "not_members", mo->unchanged, mo->n_unchanged);
    printf(" members=%lld\n", (long long)mo->member_count);
    pb__admin_group_members_output__free_unpacked(mo, NULL);
    return 0;
}

static int do_role(struct svc *s, const struct gopts *o)
{
    Pb__AdminGroupRoleInput in = PB__ADMIN_GROUP_ROLE_INPUT__INIT;
    Pb__Output *out = NULL;
    int64_t user = 0;
    if (gimctl_parse_id(o->pos[1], &user) != 0)
        return usage("bad user id \"%s\" (ids are positive integers)", o->pos[1]);
    in.role = role_of(o->pos[2]);
    if (in.role == PB__GROUP_ROLE__GR_UNKNOWN)
        return usage("the role is owner, admin or member, not \"%s\"", o->pos[2]);
    in.token = s->token;
    in.group_id = o->group_id;
    in.user_id = user;
    in.idempotency_key = (char *)(o->key ? o->key : "");
    if (call(s, PB__PACKAGE_TYPE__PT_ADMIN_GROUP_SET_ROLE, &in.base, &out) != 0)
        return 1;
    Pb__GroupMember *gm = (Pb__GroupMember *)reply_as(s, out, &pb__group_member__descriptor);
    pb__output__free_unpacked(out, NULL);
    if (!gm)
        return 1;
    printf("group=%lld user=%lld role=%s\n", (long long)o->group_id, (long long)gm->user_id,
           role_name(gm->role));
    pb__group_member__free_unpacked(gm, NULL);
    return 0;
}

/* Prints members after `after`, one page of `limit`, or every page when limit is 0. */
static int print_members(struct svc *s, int64_t group_id, int64_t after, int64_t limit)
{
    for (;;) {
        Pb__AdminGroupMemberListInput in = PB__ADMIN_GROUP_MEMBER_LIST_INPUT__INIT;
        Pb__Output *out = NULL;
        in.token = s->token;
        in.group_id = group_id;
        in.after_user_id = after;
        in.limit = (int32_t)(limit ? limit : PAGE);
        if (call(s, PB__PACKAGE_TYPE__PT_ADMIN_GROUP_MEMBERS, &in.base, &out) != 0)
            return 1;
        Pb__AdminGroupMemberListOutput *lo = (Pb__AdminGroupMemberListOutput *)reply_as(
            s, out, &pb__admin_group_member_list_output__descriptor);
        pb__output__free_unpacked(out, NULL);
        if (!lo)
            return 1;
        for (size_t i = 0; i < lo->n_members; i++) {
            printf("user=%lld role=%s joined_at=%lld\n", (long long)lo->members[i]->user_id,
                   role_name(lo->members[i]->role), (long long)lo->members[i]->joined_at);
            after = lo->members[i]->user_id;
        }
        bool more = lo->has_more && lo->n_members > 0;
        pb__admin_group_member_list_output__free_unpacked(lo, NULL);
        if (!more)
            return 0;
        if (limit) {
            printf("more after=%lld\n", (long long)after);
            return 0;
        }
    }
}

static int do_show(struct svc *s, const struct gopts *o)
{
    Pb__AdminGroupInput in = PB__ADMIN_GROUP_INPUT__INIT;
    Pb__Output *out = NULL;
    in.token = s->token;
    in.group_id = o->group_id;
    if (call(s, PB__PACKAGE_TYPE__PT_ADMIN_GROUP_GET, &in.base, &out) != 0)
        return 1;
    Pb__GroupInfo *gi = (Pb__GroupInfo *)reply_as(s, out, &pb__group_info__descriptor);
    pb__output__free_unpacked(out, NULL);
    if (!gi)
        return 1;
    print_group(gi);
    pb__group_info__free_unpacked(gi, NULL);
    return print_members(s, o->group_id, 0, 0);
}

static int do_members(struct svc *s, const struct gopts *o)
{
    return print_members(s, o->group_id, o->after, o->limit);
}

/* `group list`: the --db file, read-only. */
static int do_list(const struct gimctl *g)
{
    sqlite3 *db = gimctl_open_ro(g->db);
    sqlite3_stmt *st = NULL;
    int rc, status = 0;
    if (!db)
        return 1;
    if (sqlite3_prepare_v2(db, SQL_GROUP_LIST, -1, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, "gimctl group list: %s\n", sqlite3_errmsg(db));
        sqlite3_close(db);
        return 1;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        printf("id=%lld name=", (long long)sqlite3_column_int64(st, 0));
        print_quoted(sqlite3_column_text(st, 1));
        printf(" owner=%lld members=%lld\n", (long long)sqlite3_column_int64(st, 2),
               (long long)sqlite3_column_int64(st, 3));
    }
    if (rc != SQLITE_DONE) {
        fprintf(stderr, "gimctl group list: %s\n", sqlite3_errmsg(db));
        status = 1;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return status;
}

typedef int (*group_fn)(struct svc *s, const struct gopts *o);

int gimctl_group(struct gimctl *g, int argc, char **argv)
{
    static const struct {
        const char *name;
        int npos;
        const char *options;
        group_fn fn;
    } subs[] = {
        {"create", 0, "--owner --members --name --avatar --extra --key", do_create},
        {"update", 1, "--name --avatar --extra --key", do_update},
        {"dissolve", 1, "--key", do_dissolve},
        {"add", 2, "--role --key", NULL}, /* do_members_change */
        {"remove", 2, "--key", NULL},
        {"role", 3, "--key", do_role},
        {"show", 1, "", do_show},
        {"members", 1, "--after --limit", do_members},
        {"list", 0, "", NULL},
    };
    struct gopts o;
    struct svc s = {.g = g};
    char cmd[32];
    int rc;
    if (argc < 2)
        return usage("needs a command (create, update, dissolve, add, remove, role, show, "
                     "members, list)");
    if ((rc = parse_opts(argc, argv, &o)) != 0)
        return rc;
    size_t k = 0;
    while (k < sizeof subs / sizeof subs[0] && strcmp(subs[k].name, argv[1]) != 0)
        k++;
    if (k == sizeof subs / sizeof subs[0])
        return usage("unknown command \"%s\" (create, update, dissolve, add, remove, role, show, "
                     "members, list)",
                     argv[1]);
    if ((rc = check_opts(&o, subs[k].npos, subs[k].options)) != 0)
        return rc;
    if (strcmp(argv[1], "list") == 0)
        return do_list(g);
    /* Everything is parsed before anything is sent: bad usage never reaches the service. */
    bool create = strcmp(argv[1], "create") == 0;
    if (create && !o.owner)
        return usage("group create needs --owner U");
    if (!create && gimctl_parse_id(o.pos[0], &o.group_id) != 0)
        return usage("bad group id \"%s\" (ids are positive integers)", o.pos[0]);
    if (create && o.members && (rc = parse_ids(o.members, &o.ids, &o.n_ids)) != 0)
        return rc;
    if (!create && subs[k].npos == 2 && (rc = parse_ids(o.pos[1], &o.ids, &o.n_ids)) != 0)
        return rc;

    snprintf(cmd, sizeof cmd, "group %s", argv[1]);
    s.cmd = cmd;
    rc = 1;
    if (!(s.token = gimctl_operator_token(g, cmd, 300))) {
        rc = 2;
        goto out;
    }
    if (!(s.c = gimctl_client(g)))
        goto out;
    if (subs[k].fn)
        rc = subs[k].fn(&s, &o);
    else
        rc = do_members_change(&s, &o, strcmp(argv[1], "add") == 0);
out:
    client_close(s.c);
    free(s.token);
    free(o.ids);
    return rc;
}
