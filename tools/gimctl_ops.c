/*
 * gimctl kick --device D | erase --user U --yes: operator actions through the
 * running service (PT_ADMIN_KICK, PT_ADMIN_ERASE), with an operator token
 * minted from the secret. They go through gim-logic, never the database file:
 * its writer owns the sessions and seqs, and only it can tell a gateway to
 * drop a connection.
 *
 * erase without --yes changes nothing: it reads the --db file (read-only,
 * safe while the service runs) and says what would go.
 */
#include <errno.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gimctl.h"

const char gimctl_usage_kick[] =
    "usage: gimctl kick --device D\n"
    "  Signs device D out now, through the service: its session ends (device\n"
    "  offline, room left), its gateway is told to close the connection, and its\n"
    "  next request is refused until it signs in again. Prints\n"
    "  `kicked device=D user=U gateway=G online=yes|no` (online=no: it had no\n"
    "  session; its last gateway is told anyway). A device that never signed in\n"
    "  is EC_NOT_FOUND (exit 1). Needs the service's secret (--secret or\n"
    "  $GIM_TOKEN_SECRET) to mint an operator token.\n";

const char gimctl_usage_erase[] =
    "usage: gimctl erase --user U --yes [--step N]\n"
    "  Erases user U (a right-to-erasure request), through the service: U's\n"
    "  devices (signed out, gateways told), group memberships and inbox; the\n"
    "  content of every message U sent is erased in every inbox and room that\n"
    "  holds it (status MS_RECALL, no notices); messages only U held are deleted.\n"
    "  The content leaves the database and WAL files within seconds. U's seq\n"
    "  counter is kept, so the id can come back without reusing a seq.\n"
    "  Runs in steps of at most N rows (default 500); interrupted, run it again\n"
    "  to finish. Prints one line of totals.\n"
    "  Without --yes nothing changes: it prints what would be erased, counted in\n"
    "  the --db file (read-only), and exits 2.\n";

int gimctl_kick(struct gimctl *g, int argc, char **argv)
{
    int64_t device = g->device_id;
    int rc;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--device") == 0 && i + 1 < argc) {
            if (gimctl_parse_id(argv[++i], &device) != 0)
                return gimctl_usage_error(
                    "kick", "--device: '%s' is not a device id (a positive integer)", argv[i]);
        } else {
            return gimctl_usage_error("kick", "unexpected argument '%s'", argv[i]);
        }
    }
    if (!device)
        return gimctl_usage_error("kick", "needs --device D");

    Pb__Output *out = NULL;
    struct gim_client *c = NULL;
    char *token = gimctl_operator_token(g, "kick", 300);
    if (!token)
        return 2;
    rc = 1;
    if (!(c = gimctl_client(g)))
        goto out;
    Pb__AdminKickInput in = PB__ADMIN_KICK_INPUT__INIT;
    in.token = token;
    in.device_id = device;
    if (gimctl_operator_call(c, g, "kick", PB__PACKAGE_TYPE__PT_ADMIN_KICK, &in.base, &out) != 0)
        goto out;
    Pb__AdminKickOutput *ko = pb__admin_kick_output__unpack(NULL, out->data.len, out->data.data);
    if (!ko) {
        fprintf(stderr, "gimctl kick: the reply is not an AdminKickOutput\n");
        goto out;
    }
    printf("kicked device=%lld user=%lld gateway=%s online=%s\n", (long long)device,
           (long long)ko->user_id, *ko->gateway_id ? ko->gateway_id : "-",
           ko->was_online ? "yes" : "no");
    pb__admin_kick_output__free_unpacked(ko, NULL);
    rc = 0;
out:
    if (out)
        pb__output__free_unpacked(out, NULL);
    client_close(c);
    free(token);
    return rc;
}

/* The first row's first column of sql with ?1 = user; -1 on error (printed). */
static int64_t count(sqlite3 *db, const char *sql, int64_t user)
{
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    if (GIMCTL_PREPARE(db, sql, &st, STORE_INT(user)) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    if (v < 0)
        fprintf(stderr, "gimctl erase: cannot read %s: %s\n", sqlite3_db_filename(db, "main"),
                sqlite3_errmsg(db));
    sqlite3_finalize(st);
    return v;
}

static const char *const PREVIEW[][2] = {
    {"devices (signed out)", "SELECT count(*) FROM device WHERE user_id = ?1"},
    {"group memberships", "SELECT count(*) FROM group_member WHERE user_id = ?1"},
    {"inbox entries", "SELECT count(*) FROM inbox WHERE user_id = ?1"},
    {"  of which sent by the user (content erased everywhere)",
     "SELECT count(*) FROM inbox i JOIN message m ON m.id = i.message_id "
     "WHERE i.user_id = ?1 AND m.sender_type = 2 AND m.sender_id = ?1"},
    {"room messages (content erased)",
     "SELECT count(*) FROM room_message WHERE sender_type = 2 AND sender_id = ?1 "
     "AND content IS NOT NULL"},
};

/* What erase would delete, read from the --db file in one snapshot. Always 2. */
static int preview(const struct gimctl *g, int64_t user)
{
    sqlite3 *db = NULL;
    bool ok = sqlite3_open_v2(g->db, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
              sqlite3_busy_timeout(db, 5000) == SQLITE_OK &&
              sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) == SQLITE_OK;
    printf("would erase user %lld:\n", (long long)user);
    for (size_t i = 0; ok && i < sizeof PREVIEW / sizeof PREVIEW[0]; i++) {
        int64_t n = count(db, PREVIEW[i][1], user);
        if (n < 0)
            ok = false;
        else
            printf("  %-56s %lld\n", PREVIEW[i][0], (long long)n);
    }
    if (!ok)
        printf("  (no counts: cannot read the database %s; pass --db PATH)\n", g->db);
    sqlite3_close(db);
    fprintf(stderr,
            "gimctl erase: nothing was erased: add --yes to erase user %lld (it cannot be "
            "undone)\n",
            (long long)user);
    return 2;
}

int gimctl_erase(struct gimctl *g, int argc, char **argv)
{
    int64_t user = g->user_id, step = 0;
    bool yes = false;
    int rc;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--yes") == 0) {
            yes = true;
        } else if (strcmp(argv[i], "--user") == 0 && i + 1 < argc) {
            if (gimctl_parse_id(argv[++i], &user) != 0)
                return gimctl_usage_error(
                    "erase", "--user: '%s' is not a user id (a positive integer)", argv[i]);
        } else if (strcmp(argv[i], "--step") == 0 && i + 1 < argc) {
            if (gimctl_parse_id(argv[++i], &step) != 0 || step > 10000)
                return gimctl_usage_error(
                    "erase", "--step: '%s' is not a number of rows from 1 to 10000", argv[i]);
        } else {
            return gimctl_usage_error("erase", "unexpected argument '%s'", argv[i]);
        }
    }
    if (!user)
        return gimctl_usage_error("erase", "needs --user U");
    if (!yes)
        return preview(g, user);

    Pb__AdminEraseOutput sum = PB__ADMIN_ERASE_OUTPUT__INIT;
    Pb__Output *out = NULL;
    struct gim_client *c = NULL;
    long steps = 0;
    char *token = gimctl_operator_token(g, "erase", 3600);
    if (!token)
        return 2;
    rc = 1;
    if (!(c = gimctl_client(g)))
        goto out;
    Pb__AdminEraseInput in = PB__ADMIN_ERASE_INPUT__INIT;
    in.token = token;
    in.user_id = user;
    in.max_rows = (int32_t)step;
    while (!sum.done) {
        if (gimctl_operator_call(c, g, "erase", PB__PACKAGE_TYPE__PT_ADMIN_ERASE, &in.base, &out) !=
            0)
            goto stopped;
        Pb__AdminEraseOutput *eo =
            pb__admin_erase_output__unpack(NULL, out->data.len, out->data.data);
        pb__output__free_unpacked(out, NULL);
        out = NULL;
        if (!eo) {
            fprintf(stderr, "gimctl erase: the reply is not an AdminEraseOutput\n");
            goto stopped;
        }
        steps++;
        sum.done = eo->done;
        sum.devices += eo->devices;
        sum.memberships += eo->memberships;
        sum.inbox_entries += eo->inbox_entries;
        sum.messages_erased += eo->messages_erased;
        sum.messages_deleted += eo->messages_deleted;
        sum.room_messages_erased += eo->room_messages_erased;
        pb__admin_erase_output__free_unpacked(eo, NULL);
    }
    printf("erased user=%lld devices=%lld memberships=%lld inbox_entries=%lld "
           "messages_erased=%lld messages_deleted=%lld room_messages_erased=%lld steps=%ld\n",
           (long long)user, (long long)sum.devices, (long long)sum.memberships,
           (long long)sum.inbox_entries, (long long)sum.messages_erased,
           (long long)sum.messages_deleted, (long long)sum.room_messages_erased, steps);
    rc = 0;
    goto out;
stopped:
    fprintf(stderr,
            "gimctl erase: stopped after %ld step(s); what they did is committed: run the same "
            "command again to finish\n",
            steps);
out:
    client_close(c);
    free(token);
    return rc;
}

/*
 * `gimctl send --system|--business B ...`: PT_ADMIN_SEND. The target is
 * --to ID (a user; with --group a group, every member, no membership
 * needed; with --room a room's log) or --users U1,U2 (each one copy).
 */
int gimctl_send_operator(struct gimctl *g, int argc, char **argv)
{
    int64_t business = 0, to = 0;
    bool system = false, group = false, room = false;
    const char *users = NULL, *text = NULL, *key = "";
    int64_t *ids = NULL;
    size_t n_ids = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--system") == 0 || strcmp(a, "--group") == 0 || strcmp(a, "--room") == 0) {
            *(a[2] == 's' ? &system : a[2] == 'g' ? &group : &room) = true;
        } else if (strcmp(a, "--business") == 0 || strcmp(a, "--to") == 0) {
            int64_t *dst = a[2] == 'b' ? &business : &to;
            if (i + 1 >= argc)
                return gimctl_usage_error("send", "%s needs a value", a);
            if (gimctl_parse_id(argv[++i], dst) != 0)
                return gimctl_usage_error("send", "%s: '%s' is not an id (a positive integer)", a,
                                          argv[i]);
        } else if (strcmp(a, "--users") == 0 || strcmp(a, "--key") == 0) {
            if (i + 1 >= argc)
                return gimctl_usage_error("send", "%s needs a value", a);
            *(a[2] == 'u' ? &users : &key) = argv[++i];
        } else if (strncmp(a, "--", 2) == 0 && strcmp(a, "--") != 0) {
            return gimctl_usage_error("send", "unknown option %s (with --system/--business)", a);
        } else {
            if (strcmp(a, "--") == 0 && ++i >= argc)
                break;
            if (text)
                return gimctl_usage_error("send", "'%s': one TEXT argument only (quote it)",
                                          argv[i]);
            text = argv[i];
        }
    }
    if (system == (business != 0))
        return gimctl_usage_error("send", "either --system or --business B, not both");
    if ((to != 0) == (users != NULL) || (users && (group || room)) || (group && room))
        return gimctl_usage_error("send", "--to ID [--group | --room], or --users U1,U2,...");
    if (!text)
        return gimctl_usage_error("send", "needs TEXT");
    if (users) {
        size_t cap = 1;
        for (const char *p = users; *p; p++)
            cap += *p == ',';
        char *copy = strdup(users);
        ids = calloc(cap, sizeof *ids);
        int bad = !copy || !ids;
        for (char *f = copy; !bad && f;) {
            char *comma = strchr(f, ',');
            if (comma)
                *comma = '\0';
            bad = gimctl_parse_id(f, &ids[n_ids]) != 0;
            n_ids += !bad;
            f = comma ? comma + 1 : NULL;
        }
        free(copy);
        if (bad) {
            free(ids);
            return gimctl_usage_error("send", "--users: '%s' is not a list of ids", users);
        }
    }

    Pb__Text t = PB__TEXT__INIT;
    t.text = (char *)text;
    size_t len = pb__text__get_packed_size(&t);
    uint8_t *content = malloc(len ? len : 1);
    Pb__Output *out = NULL;
    struct gim_client *c = NULL;
    char *token = NULL;
    int rc = 1;
    if (!content) {
        fprintf(stderr, "gimctl send: out of memory\n");
        goto out;
    }
    pb__text__pack(&t, content);
    Pb__Sender snd = PB__SENDER__INIT;
    snd.sender_type = system ? PB__SENDER_TYPE__ST_SYSTEM : PB__SENDER_TYPE__ST_BUSINESS;
    snd.sender_id = business;
    Pb__Message m = PB__MESSAGE__INIT;
    m.sender = &snd;
    m.receiver_type = group  ? PB__RECEIVER_TYPE__RT_GROUP
                      : room ? PB__RECEIVER_TYPE__RT_ROOM
                             : PB__RECEIVER_TYPE__RT_USER;
    m.receiver_id = to;
    m.message_type = PB__MESSAGE_TYPE__MT_TEXT;
    m.message_content = (ProtobufCBinaryData){.len = len, .data = content};
    Pb__AdminSendInput in = PB__ADMIN_SEND_INPUT__INIT;
    in.message = &m;
    in.user_ids = ids;
    in.n_user_ids = n_ids;
    in.idempotency_key = (char *)key;
    if (!(token = gimctl_operator_token(g, "send", 300))) {
        rc = 2;
        goto out;
    }
    in.token = token;
    if (!(c = gimctl_client(g)) ||
        gimctl_operator_call(c, g, "send", PB__PACKAGE_TYPE__PT_ADMIN_SEND, &in.base, &out) != 0)
        goto out;
    Pb__AdminSendOutput *so = pb__admin_send_output__unpack(NULL, out->data.len, out->data.data);
    if (!so) {
        fprintf(stderr, "gimctl send: the reply is not an AdminSendOutput\n");
        goto out;
    }
    for (size_t i = 0; i < so->n_copies; i++)
        printf("user=%lld seq=%lld\n", (long long)so->copies[i]->user_id,
               (long long)so->copies[i]->seq);
    if (room)
        printf("room_seq=%lld send_time=%lld\n", (long long)so->room_seq, (long long)so->send_time);
    else
        printf("recipients=%lld send_time=%lld\n", (long long)so->recipients,
               (long long)so->send_time);
    pb__admin_send_output__free_unpacked(so, NULL);
    rc = 0;
out:
    if (out)
        pb__output__free_unpacked(out, NULL);
    client_close(c);
    free(token);
    free(content);
    free(ids);
    return rc;
}
