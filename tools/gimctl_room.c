/*
 * gimctl watch, gimctl room: see pushes as a gateway sees them, and talk in
 * live rooms.
 *
 * watch subscribes an nng SUB socket to gim-logic's PUB socket (--pub) with
 * the topic "<--gateway>\n", the one a gateway of that name subscribes to,
 * and prints each pb.Delivery as it arrives. Device commands sign in at
 * --gateway too, so a watch with the same --gateway shows what the devices
 * of those commands would be pushed.
 *
 * room signs --user/--device in (which moves the device's session to
 * --gateway and drops any room it was in), then subscribes it to a room.
 * The subscription outlives gimctl: the device stays signed in and in the
 * room until it signs in again, signs out or the presence sweeper times it
 * out (presence.timeout_seconds), so a watch on its gateway sees the room's
 * pushes meanwhile.
 *
 * Everything received is owned here and freed before the next message;
 * nothing outlives a command.
 */
#include <nng/nng.h>
#include <nng/protocol/pubsub0/sub.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "gimctl.h"

const char gimctl_usage_watch[] =
    "usage: gimctl [--pub URL] [--gateway G] watch [--count N]\n"
    "  Subscribes to the service's push socket (--pub, default tcp://127.0.0.1:7401)\n"
    "  as gateway G (default \"gimctl\") and prints each delivery to G as it arrives,\n"
    "  until interrupted or N deliveries were printed:\n"
    "    devices=21,22 output=PT_MESSAGE seq=N from=U type=MT_TEXT status=MS_NORMAL "
    "to=RT_ROOM:5 text=\"...\"\n"
    "  Device commands sign in at --gateway too: watch with the same --gateway as the\n"
    "  receiving device's commands to see its pushes. The sending device gets none.\n"
    "  Pushes are best effort: nothing is queued for a watch that was not running.\n";

const char gimctl_usage_room[] =
    "usage: gimctl --user U --device D room subscribe ROOM [--seq N]\n"
    "       gimctl --user U --device D room send ROOM [--request-id N] TEXT\n"
    "       gimctl --user U --device D room leave\n"
    "       gimctl [--db PATH] room log ROOM [--from SEQ] [--limit N]\n"
    "  subscribe: subscribes the device to ROOM (one room per device) and prints the\n"
    "    room's log after room seq N (default 0: all it keeps), one line per message\n"
    "    as sync does; seqs are the room's.\n"
    "  send: subscribes the device to ROOM (a sender must be), then sends TEXT as an\n"
    "    MT_TEXT message; prints `seq=N send_time=T` (N = the room seq).\n"
    "  leave: unsubscribes the device from its room.\n"
    "  log: prints the room's log from room seq SEQ (default 1) on, read from the\n"
    "    database (read-only: no sign-in, no subscription), at most N messages.\n"
    "  Each run signs --user/--device in at gateway --gateway (default \"gimctl\"),\n"
    "  which drops any earlier room; the subscription then lasts until the device\n"
    "  signs in again, signs out, or times out (presence.timeout_seconds) without\n"
    "  requests. `gimctl --gateway G watch` shows the room's pushes to it meanwhile.\n";

/* One published message: "<gateway>\n" + Delivery; the topic was matched by the SUB socket. */
static void print_delivery(const uint8_t *body, size_t len, size_t topic_len)
{
    char b[16];
    Pb__Delivery *d = pb__delivery__unpack(NULL, len - topic_len, body + topic_len);
    if (!d || !d->output) {
        printf("<undecodable delivery of %zu bytes>\n", len - topic_len);
        goto out;
    }
    fputs("devices=", stdout);
    for (size_t i = 0; i < d->n_device_ids; i++)
        printf("%s%lld", i ? "," : "", (long long)d->device_ids[i]);
    const Pb__Output *o = d->output;
    printf(" output=%s", gimctl_enum_name(&pb__package_type__descriptor, o->type, b, sizeof b));
    Pb__MessageSend *ms = NULL;
    if (o->type == PB__PACKAGE_TYPE__PT_MESSAGE &&
        (ms = pb__message_send__unpack(NULL, o->data.len, o->data.data)) && ms->message) {
        putchar(' ');
        gimctl_print_message(ms->message);
    } else {
        printf(" code=%d data=%zu bytes", o->code, o->data.len);
    }
    putchar('\n');
    if (ms)
        pb__message_send__free_unpacked(ms, NULL);
out:
    /* A pipe is block-buffered: a watcher wants each line as it happens. */
    fflush(stdout);
    if (d)
        pb__delivery__free_unpacked(d, NULL);
}

int gimctl_watch(struct gimctl *g, int argc, char **argv)
{
    nng_socket sock = NNG_SOCKET_INITIALIZER;
    char topic[256];
    int64_t count = 0, printed = 0;
    int rv, rc = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--count") != 0)
            return gimctl_usage_error("watch", "unexpected argument '%s'", argv[i]);
        if (++i >= argc)
            return gimctl_usage_error("watch", "--count needs a value");
        if (gimctl_parse_id(argv[i], &count) != 0)
            return gimctl_usage_error("watch", "--count: '%s' is not a count (a positive integer)",
                                      argv[i]);
    }
    size_t tlen = strlen(g->gateway);
    if (tlen == 0 || tlen + 1 >= sizeof topic || strchr(g->gateway, '\n')) {
        fprintf(stderr, "gimctl watch: --gateway must be 1..%zu bytes without a newline\n",
                sizeof topic - 2);
        return 2;
    }
    memcpy(topic, g->gateway, tlen);
    topic[tlen++] = '\n'; /* with the newline: gw1 must not also get gw10's pushes */

    if ((rv = nng_sub0_open(&sock)) != 0 ||
        (rv = nng_socket_set(sock, NNG_OPT_SUB_SUBSCRIBE, topic, tlen)) != 0) {
        fprintf(stderr, "gimctl watch: cannot open a SUB socket: %s\n", nng_strerror(rv));
        goto out;
    }
    if ((rv = nng_dial(sock, g->pub, NULL, 0)) != 0) {
        /* Not up yet (or restarting): keep redialing in the background and wait. */
        fprintf(stderr, "gimctl watch: %s: %s; waiting for it\n", g->pub, nng_strerror(rv));
        if ((rv = nng_dial(sock, g->pub, NULL, NNG_FLAG_NONBLOCK)) != 0) {
            fprintf(stderr, "gimctl watch: cannot dial %s: %s\n", g->pub, nng_strerror(rv));
            rc = 2;
            goto out;
        }
    }
    fprintf(stderr, "gimctl watch: gateway=%s pub=%s\n", g->gateway, g->pub);
    while (count == 0 || printed < count) {
        nng_msg *m = NULL;
        if ((rv = nng_recvmsg(sock, &m, 0)) != 0) {
            fprintf(stderr, "gimctl watch: %s\n", nng_strerror(rv));
            goto out;
        }
        print_delivery(nng_msg_body(m), nng_msg_len(m), tlen);
        nng_msg_free(m);
        printed++;
    }
    rc = 0;
out:
    if (nng_socket_id(sock) > 0)
        nng_close(sock);
    return rc;
}

/*
 * Subscribes d to room (0 = leave) and, when print is set, prints its log
 * after seq page by page. Otherwise asks for none of the log: a sender needs
 * the subscription only.
 */
static int subscribe(struct gimctl_dev *d, int64_t room, int64_t seq, bool print)
{
    Pb__SubscribeRoomInput in = PB__SUBSCRIBE_ROOM_INPUT__INIT;
    in.room_id = room;
    return gimctl_pages(d, "room", PB__PACKAGE_TYPE__PT_SUBSCRIBE_ROOM, &in.base, &in.seq, seq,
                        print);
}

int gimctl_room(struct gimctl *g, int argc, char **argv)
{
    struct gimctl_dev d = {0};
    const char *verb = argc > 1 ? argv[1] : "";
    const char *text = NULL;
    int64_t room = 0, seq = 0, request_id = 0;
    bool sub = strcmp(verb, "subscribe") == 0, send = strcmp(verb, "send") == 0;
    bool leave = strcmp(verb, "leave") == 0;
    int rc;
    if (strcmp(verb, "log") == 0)
        return gimctl_room_log(g, argc - 1, argv + 1);
    if (!*verb)
        return gimctl_usage_error("room", "needs a command (subscribe, send, leave, log)");
    if (!sub && !send && !leave)
        return gimctl_usage_error("room", "unknown command '%s' (subscribe, send, leave, log)",
                                  verb);
    int i = 2;
    if (!leave && i >= argc)
        return gimctl_usage_error("room", "%s needs ROOM", verb);
    if (!leave && gimctl_parse_id(argv[i++], &room) != 0)
        return gimctl_usage_error("room", "ROOM: '%s' is not a room id (a positive integer)",
                                  argv[i - 1]);
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (sub && strcmp(a, "--seq") == 0 && i + 1 < argc &&
            (strcmp(argv[i + 1], "0") == 0 || gimctl_parse_id(argv[i + 1], &seq) == 0)) {
            i++;
        } else if (send && strcmp(a, "--request-id") == 0 && i + 1 < argc &&
                   gimctl_parse_id(argv[i + 1], &request_id) == 0) {
            i++;
        } else if (send && !text && (strncmp(a, "--", 2) != 0 || strcmp(a, "--") == 0)) {
            if (strcmp(a, "--") == 0 && ++i >= argc)
                break;
            text = argv[i];
        } else {
            return gimctl_usage_error("room", "%s: unexpected or bad argument '%s'", verb, a);
        }
    }
    if (send && !text)
        return gimctl_usage_error("room", "send needs TEXT");
    if (!g->user_id || !g->device_id) {
        fprintf(stderr, "gimctl room: needs --user U --device D\n");
        return 2;
    }
    if ((rc = gimctl_dev_open(g, &d)) != 0)
        return rc;
    if (sub)
        rc = subscribe(&d, room, seq, true);
    else if (leave)
        rc = subscribe(&d, 0, 0, false);
    else if ((rc = subscribe(&d, room, 0, false)) == 0)
        rc = gimctl_send_text(&d, "room", PB__RECEIVER_TYPE__RT_ROOM, room,
                              request_id ? request_id : gimctl_request_id(), text);
    gimctl_dev_close(&d);
    return rc;
}
