/*
 * gimctl send, sync, ack, recall: act as one device of one user, over the
 * same gateway protocol a real gateway speaks.
 *
 * Each command signs --user/--device in first (gimctl_session), at gateway
 * g->gateway ("gimctl" unless --gateway says otherwise). A device has one
 * session, so this moves the device's session to that gateway: pushes for
 * the device go to gimctl's topic from then on, and a real connection of the
 * same device would have to sign in again.
 *
 * Replies are owned by the caller of client_request and freed here; nothing
 * outlives a command.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "clock.h"
#include "gimctl.h"

#define RECALL_NOTICE_CODE 1       /* Command.code of a recall notice (connect.ext.proto) */
#define MAX_PAGES          1000000 /* of one log: more is a server bug (gimctl_pages) */

#define SESSION_NOTE                                                                               \
    "Signs --user/--device in first, at gateway \"gimctl\" (or --gateway): this moves\n"           \
    "the device's session there, so a real connection of that device stops getting\n"              \
    "pushes until it signs in again. The token is minted from --secret or\n"                       \
    "$GIM_TOKEN_SECRET (the service's auth.secret).\n"

/* The proto name of an enum value ("MT_TEXT"), or its number when this build does not know it. */
const char *gimctl_enum_name(const ProtobufCEnumDescriptor *d, int v, char *buf, size_t n)
{
    const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(d, v);
    if (ev)
        return ev->name;
    snprintf(buf, n, "%d", v);
    return buf;
}

/* Prints bytes as a double-quoted string: ", \ and control bytes escaped, UTF-8 kept. */
static void print_quoted(const uint8_t *s, size_t n)
{
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"' || s[i] == '\\')
            printf("\\%c", s[i]);
        else if (s[i] == '\n')
            fputs("\\n", stdout);
        else if (s[i] == '\t')
            fputs("\\t", stdout);
        else if (s[i] < 0x20 || s[i] == 0x7f)
            printf("\\x%02x", s[i]);
        else
            putchar(s[i]);
    }
    putchar('"');
}

/*
 * A group notice (Command codes 2-6, docs/protocol.md): ` group-notice=KIND
 * users=U1,U2 [role=R]`; users and role only when the notice names them.
 */
static void print_group_notice(const Pb__Command *cmd)
{
    static const char *const kinds[] = {"added", "removed", "updated", "dissolved", "role"};
    char buf[32];
    Pb__GroupNotice *gn = pb__group_notice__unpack(NULL, cmd->data.len, cmd->data.data);
    if (!gn) {
        printf(" command code=%d data=%zu bytes", cmd->code, cmd->data.len);
        return;
    }
    printf(" group-notice=%s", kinds[cmd->code - 2]);
    for (size_t i = 0; i < gn->n_user_ids; i++)
        printf("%s%lld", i ? "," : " users=", (long long)gn->user_ids[i]);
    if (gn->role != PB__GROUP_ROLE__GR_UNKNOWN)
        printf(" role=%s",
               gimctl_enum_name(&pb__group_role__descriptor, gn->role, buf, sizeof buf));
    pb__group_notice__free_unpacked(gn, NULL);
}

/* The content part of a sync line, by message type. */
static void print_content(const Pb__Message *m)
{
    const ProtobufCBinaryData *c = &m->message_content;
    if (m->status == PB__MESSAGE_STATUS__MS_RECALL)
        return; /* recalled content is erased; there is nothing to show */
    if (m->message_type == PB__MESSAGE_TYPE__MT_TEXT) {
        Pb__Text *t = pb__text__unpack(NULL, c->len, c->data);
        if (!t) {
            printf(" text=<undecodable %zu bytes>", c->len);
            return;
        }
        fputs(" text=", stdout);
        print_quoted((const uint8_t *)t->text, strlen(t->text));
        pb__text__free_unpacked(t, NULL);
        return;
    }
    if (m->message_type == PB__MESSAGE_TYPE__MT_COMMAND) {
        Pb__Command *cmd = pb__command__unpack(NULL, c->len, c->data);
        Pb__RecallInput *ri = NULL;
        if (!cmd)
            printf(" command=<undecodable %zu bytes>", c->len);
        else if (cmd->code == RECALL_NOTICE_CODE &&
                 (ri = pb__recall_input__unpack(NULL, cmd->data.len, cmd->data.data)))
            printf(" recall-notice seq=%lld", (long long)ri->seq);
        else if (cmd->code >= 2 && cmd->code <= 6)
            print_group_notice(cmd);
        else
            printf(" command code=%d data=%zu bytes", cmd->code, cmd->data.len);
        if (ri)
            pb__recall_input__free_unpacked(ri, NULL);
        if (cmd)
            pb__command__free_unpacked(cmd, NULL);
        return;
    }
    printf(" content=%zu bytes", c->len);
}

void gimctl_print_message(const Pb__Message *m)
{
    char b1[16], b2[16], b3[16], b4[16];
    printf("seq=%lld from=", (long long)m->seq);
    if (m->sender && m->sender->sender_type != PB__SENDER_TYPE__ST_USER)
        printf("%s:", gimctl_enum_name(&pb__sender_type__descriptor, m->sender->sender_type, b1,
                                       sizeof b1));
    printf("%lld type=%s status=%s to=%s:%lld", (long long)(m->sender ? m->sender->sender_id : 0),
           gimctl_enum_name(&pb__message_type__descriptor, m->message_type, b2, sizeof b2),
           gimctl_enum_name(&pb__message_status__descriptor, m->status, b3, sizeof b3),
           gimctl_enum_name(&pb__receiver_type__descriptor, m->receiver_type, b4, sizeof b4),
           (long long)m->receiver_id);
    print_content(m);
}

bool gimctl_wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0)
            return true;
    return false;
}

const char gimctl_usage_send[] =
    "usage: gimctl --user U --device D send --to ID [--group] [--request-id N] TEXT\n"
    "       gimctl send --system|--business B (--to ID [--group|--room] | --users U1,U2,...) "
    "[--key K] TEXT\n"
    "  Sends TEXT as an MT_TEXT message to user ID (or to group ID with --group)\n"
    "  and prints `seq=N send_time=T`: the seq of the sender's own copy and the\n"
    "  server's time in ms. --request-id (default random) is the idempotency key:\n"
    "  the same id again returns the first reply instead of sending twice.\n"
    "  `--` ends the options (for a TEXT that starts with -).\n"
    "  Errors print the code and message on stderr and exit 1.\n" SESSION_NOTE
    "  With --system or --business B it is the business API's send instead\n"
    "  (PT_ADMIN_SEND, an operator token from the secret, no device, no sign-in):\n"
    "  from the system or from business B to user ID, to every member of group\n"
    "  ID (--group; no membership needed), to room ID's log (--room; no\n"
    "  subscription needed) or to each of a list of users (--users, one copy\n"
    "  each). Prints `user=U seq=N` per user copy, then `recipients=N\n"
    "  send_time=T` (a room: `room_seq=N send_time=T`). --key K is its\n"
    "  idempotency key.\n";

int gimctl_send(struct gimctl *g, int argc, char **argv)
{
    struct gimctl_dev d = {0};
    int64_t to = 0, request_id = 0;
    bool group = false;
    const char *text = NULL;
    int rc = 2;
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
        if (strcmp(argv[i], "--system") == 0 || strcmp(argv[i], "--business") == 0)
            return gimctl_send_operator(g, argc, argv);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--group") == 0) {
            group = true;
        } else if (strcmp(a, "--to") == 0 || strcmp(a, "--request-id") == 0) {
            int64_t *dst = a[2] == 't' ? &to : &request_id;
            if (i + 1 >= argc)
                return gimctl_usage_error("send", "%s needs a value", a);
            if (gimctl_parse_id(argv[++i], dst) != 0)
                return gimctl_usage_error("send", "%s: '%s' is not %s (a positive integer)", a,
                                          argv[i], dst == &to ? "an id" : "a request id");
        } else if (strncmp(a, "--", 2) == 0 && strcmp(a, "--") != 0) {
            return gimctl_usage_error("send", "unknown option %s", a);
        } else {
            if (strcmp(a, "--") == 0 && ++i >= argc)
                break;
            if (text)
                return gimctl_usage_error("send", "'%s': one TEXT argument only (quote it)",
                                          argv[i]);
            text = argv[i];
        }
    }
    if (!to || !text)
        return gimctl_usage_error("send", "needs %s", !to ? "--to ID" : "TEXT");
    if (!request_id)
        request_id = gimctl_request_id();
    if ((rc = gimctl_dev_open(g, &d)) == 0)
        rc = gimctl_send_text(&d, "send",
                              group ? PB__RECEIVER_TYPE__RT_GROUP : PB__RECEIVER_TYPE__RT_USER, to,
                              request_id, text);
    gimctl_dev_close(&d);
    return rc;
}

int gimctl_send_text(struct gimctl_dev *d, const char *cmd, int receiver_type, int64_t receiver_id,
                     int64_t request_id, const char *text)
{
    Pb__Output *out = NULL;
    Pb__MessageSend *reply = NULL;
    int rc = 1;
    Pb__Text t = PB__TEXT__INIT;
    t.text = (char *)text;
    size_t len = pb__text__get_packed_size(&t);
    uint8_t *content = malloc(len ? len : 1);
    if (!content) {
        fprintf(stderr, "gimctl %s: out of memory\n", cmd);
        return 1;
    }
    pb__text__pack(&t, content);
    Pb__Message m = PB__MESSAGE__INIT;
    m.receiver_type = receiver_type;
    m.receiver_id = receiver_id;
    m.message_type = PB__MESSAGE_TYPE__MT_TEXT;
    m.message_content = (ProtobufCBinaryData){.len = len, .data = content};
    Pb__MessageSend in = PB__MESSAGE_SEND__INIT;
    in.message = &m;
    if ((rc = gimctl_dev_call(d, cmd, PB__PACKAGE_TYPE__PT_MESSAGE, request_id, &in.base, &out)) !=
        0)
        goto out;
    reply = pb__message_send__unpack(NULL, out->data.len, out->data.data);
    if (!reply || !reply->message) {
        /* Sent, but the reply is not what this gimctl expects: say what came back. */
        fprintf(stderr, "gimctl %s: the reply carries no message; raw reply follows\n", cmd);
        gimctl_print_output(out);
        rc = 1;
        goto out;
    }
    printf("seq=%lld send_time=%lld\n", (long long)reply->message->seq,
           (long long)reply->message->send_time);
out:
    if (reply)
        pb__message_send__free_unpacked(reply, NULL);
    if (out)
        pb__output__free_unpacked(out, NULL);
    free(content);
    return rc;
}

int gimctl_print_page(const char *cmd, const Pb__Output *out, bool print, int64_t *seq, bool *more)
{
    Pb__SyncOutput *page = pb__sync_output__unpack(NULL, out->data.len, out->data.data);
    if (!page) {
        fprintf(stderr, "gimctl %s: the reply is not a SyncOutput\n", cmd);
        return 1;
    }
    for (size_t i = 0; print && i < page->n_messages; i++) {
        gimctl_print_message(page->messages[i]);
        putchar('\n');
        if (page->messages[i]->seq > *seq)
            *seq = page->messages[i]->seq;
    }
    *more = print && page->has_more;
    pb__sync_output__free_unpacked(page, NULL);
    return 0;
}

const char gimctl_usage_sync[] =
    "usage: gimctl --user U --device D sync [--seq N]\n"
    "  Pulls the user's inbox after seq N, page by page until the server says\n"
    "  there is no more. N is the highest seq the device holds; the default, 0,\n"
    "  means none: the server starts after the highest seq any device of the\n"
    "  user acknowledged (ack), so a sync cannot show what came before an ack:\n"
    "  `gimctl history --user U` reads the whole inbox from the database. One line\n"
    "  per message:\n"
    "    seq=N from=U type=MT_TEXT status=MS_NORMAL to=RT_USER:ID text=\"...\"\n"
    "  A recall notice prints `type=MT_COMMAND ... recall-notice seq=S` (S = the\n"
    "  recalled copy's seq); a recalled message prints status=MS_RECALL, no text.\n"
    "  A group notice prints `type=MT_COMMAND ... group-notice=KIND [users=U1,U2]\n"
    "  [role=GR_X]`, KIND one of added, removed, updated, dissolved, role.\n" SESSION_NOTE;

int gimctl_pages(struct gimctl_dev *d, const char *cmd, int type, ProtobufCMessage *in,
                 int64_t *in_seq, int64_t seq, bool print)
{
    Pb__Output *out = NULL;
    int rc = 0;
    for (int pages = 0;; pages++) {
        *in_seq = print ? seq : INT64_MAX;
        if ((rc = gimctl_dev_call(d, cmd, type, 0, in, &out)) != 0)
            return rc;
        int64_t before = seq;
        bool more = false;
        rc = gimctl_print_page(cmd, out, print, &seq, &more);
        pb__output__free_unpacked(out, NULL);
        if (rc != 0)
            return rc;
        if (!more)
            break;
        /* A server bug must not turn into an endless loop of the same page. */
        if (seq == before || pages >= MAX_PAGES) {
            fprintf(stderr, "gimctl %s: has_more without progress after seq %lld\n", cmd,
                    (long long)seq);
            return 1;
        }
    }
    fflush(stdout);
    return 0;
}

int gimctl_sync(struct gimctl *g, int argc, char **argv)
{
    struct gimctl_dev d = {0};
    int64_t seq = 0;
    int rc = 2;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seq") != 0)
            return gimctl_usage_error("sync", "unexpected argument '%s'", argv[i]);
        if (++i >= argc)
            return gimctl_usage_error("sync", "--seq needs a value");
        if (strcmp(argv[i], "0") != 0 && gimctl_parse_id(argv[i], &seq) != 0)
            return gimctl_usage_error("sync", "--seq: '%s' is not a seq (0 or a positive integer)",
                                      argv[i]);
    }
    if ((rc = gimctl_dev_open(g, &d)) == 0) {
        Pb__SyncInput in = PB__SYNC_INPUT__INIT;
        rc = gimctl_pages(&d, "sync", PB__PACKAGE_TYPE__PT_SYNC, &in.base, &in.seq, seq, true);
    }
    gimctl_dev_close(&d);
    return rc;
}

/* Parses the one SEQ argument of ack and recall; 0 on success, else 2 after a usage error. */
static int parse_seq_arg(int argc, char **argv, int64_t *seq)
{
    int at = argc == 3 && strcmp(argv[1], "--") == 0 ? 2 : 1;
    if (argc != at + 1)
        return gimctl_usage_error(argv[0], "needs one SEQ, a positive integer");
    if (gimctl_parse_id(argv[at], seq) != 0)
        return gimctl_usage_error(argv[0], "'%s' is not a seq (a positive integer)", argv[at]);
    return 0;
}

const char gimctl_usage_ack[] =
    "usage: gimctl --user U --device D ack SEQ\n"
    "  Tells the server the device has received everything up to SEQ (its inbox\n"
    "  seq); prints `ack=SEQ`.\n" SESSION_NOTE;

int gimctl_ack(struct gimctl *g, int argc, char **argv)
{
    struct gimctl_dev d = {0};
    Pb__Output *out = NULL;
    int64_t seq = 0;
    int rc;
    if ((rc = parse_seq_arg(argc, argv, &seq)) != 0)
        return rc;
    Pb__MessageACK in = PB__MESSAGE_ACK__INIT;
    in.device_ack = seq;
    in.receive_time = gim_clock_real_ms(NULL);
    if ((rc = gimctl_dev_open(g, &d)) != 0)
        goto out;
    if ((rc = gimctl_dev_call(&d, "ack", PB__PACKAGE_TYPE__PT_MESSAGE_ACK, 0, &in.base, &out)) != 0)
        goto out;
    printf("ack=%lld\n", (long long)seq);
out:
    if (out)
        pb__output__free_unpacked(out, NULL);
    gimctl_dev_close(&d);
    return rc;
}

const char gimctl_usage_recall[] =
    "usage: gimctl --user U --device D recall SEQ\n"
    "       gimctl --user U recall --admin SEQ\n"
    "  With --admin, an operator recall of the message at SEQ in user U's inbox,\n"
    "  whoever sent it and however old it is (no device, no sign-in: an operator\n"
    "  token is minted from the secret).\n"
    "  Recalls the message whose copy in the user's own inbox has seq SEQ (the seq\n"
    "  `send` printed): its content is erased everywhere and every holder gets a\n"
    "  recall notice. Prints `recalled seq=SEQ` (with --admin `recalled user=U\n"
    "  seq=SEQ`), or `already recalled ...` when it had been recalled before: then\n"
    "  nothing changed and no notice went out.\n" SESSION_NOTE;

/* Whether a recall's reply (RecallOutput) says the message had been recalled before. */
static bool already_recalled(const Pb__Output *out)
{
    Pb__RecallOutput *ro = pb__recall_output__unpack(NULL, out->data.len, out->data.data);
    bool already = ro && ro->already_recalled;
    if (ro)
        pb__recall_output__free_unpacked(ro, NULL);
    return already;
}

/* The operator's recall: PT_ADMIN_RECALL through the service, which owns the seqs. */
static int admin_recall(struct gimctl *g, int64_t seq)
{
    char *token = NULL;
    Pb__Output *out = NULL;
    struct gim_client *c = NULL;
    int rc = 1;
    if (!g->user_id) {
        fprintf(stderr, "gimctl recall --admin: needs --user U (whose inbox SEQ is in)\n");
        return 2;
    }
    if (!(token = gimctl_operator_token(g, "recall --admin", 300)))
        return 2;
    if (!(c = gimctl_client(g)))
        goto out;
    Pb__AdminRecallInput in = PB__ADMIN_RECALL_INPUT__INIT;
    in.token = token;
    in.user_id = g->user_id;
    in.seq = seq;
    struct client_conn conn = {.gateway_id = g->gateway, .client_addr = "gimctl"};
    if (gimctl_call(g, c, &conn, "recall --admin", PB__PACKAGE_TYPE__PT_ADMIN_RECALL,
                    gimctl_request_id(), &in.base, &out) != 0)
        goto out;
    printf("%s user=%lld seq=%lld\n", already_recalled(out) ? "already recalled" : "recalled",
           (long long)g->user_id, (long long)seq);
    rc = 0;
out:
    if (out)
        pb__output__free_unpacked(out, NULL);
    client_close(c);
    free(token);
    return rc;
}

int gimctl_recall(struct gimctl *g, int argc, char **argv)
{
    struct gimctl_dev d = {0};
    Pb__Output *out = NULL;
    int64_t seq = 0;
    int rc;
    if (argc >= 2 && strcmp(argv[1], "--admin") == 0) {
        if (argc != 3)
            return gimctl_usage_error("recall", "--admin needs one SEQ, a positive integer");
        if (gimctl_parse_id(argv[2], &seq) != 0)
            return gimctl_usage_error("recall", "--admin: '%s' is not a seq (a positive integer)",
                                      argv[2]);
        return admin_recall(g, seq);
    }
    if ((rc = parse_seq_arg(argc, argv, &seq)) != 0)
        return rc;
    Pb__RecallInput in = PB__RECALL_INPUT__INIT;
    in.seq = seq;
    if ((rc = gimctl_dev_open(g, &d)) != 0)
        goto out;
    if ((rc = gimctl_dev_call(&d, "recall", PB__PACKAGE_TYPE__PT_RECALL, 0, &in.base, &out)) != 0)
        goto out;
    printf("%s seq=%lld\n", already_recalled(out) ? "already recalled" : "recalled",
           (long long)seq);
out:
    if (out)
        pb__output__free_unpacked(out, NULL);
    gimctl_dev_close(&d);
    return rc;
}
