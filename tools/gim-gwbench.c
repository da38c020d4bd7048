/*
 * gim-gwbench: load on gim-gateway from real client sockets (TCP, be16).
 *
 *   gim-gwbench --gateway 127.0.0.1:8080 --gateway-pid PID --conns 19000 --pairs 5000 ...
 *
 * Phases, in one run, one epoll loop:
 *   connect   N sockets, spread over source addresses 127.0.0.2.. (ports per address)
 *   sign-in   every socket signs in (user = device = base + i), at most --window in
 *             flight: the sign-in rate through the gateway, and the gateway's RSS
 *             (/proc/PID/status) before and after, per connection. A sign-in that
 *             gim-logic refuses with "retry later" (EC_UNAVAILABLE: more writes than
 *             its writer.max_queued admits) is sent again, as a client does, and
 *             counted; any other refusal fails the run
 *   e2e       the first --pairs sockets send 1:1 text messages to the next --pairs
 *             (closed loop: one message in flight per sender) for --duration s:
 *             durable replies per second, and pushes the recipients got. A send
 *             refused with "retry later" is counted apart, and the sender's next
 *             message goes in its place; other errors fail the run
 *   direct    the same closed loop straight to gim-logic (--logic, nng REQ contexts, one
 *             per sender, users signed in at gateway "gwbench-direct"): the rate the
 *             gateway is compared with
 *   latency   the senders send --rate messages/s in all for --duration s; for each
 *             message, the time from its sender's reply to the recipient's push
 *             (both read by this process): p50/p99/max
 *
 * Exit status: 0 when every phase ran, 1 on a failure, 2 on bad usage.
 * docs/benchmarks.md has the commands and measured numbers.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "proto.h"

#define PER_SOURCE 25000 /* connections per source address (ephemeral range ~28k) */

struct client {
    int fd;
    uint8_t *in;
    size_t inlen, incap;
    uint8_t *out; /* unsent bytes */
    size_t outlen, outoff, outcap;
    bool signed_in, waiting; /* waiting: a request is in flight */
    int64_t sent_at_ns;
    int64_t sent_id; /* message id in flight */
};

static struct {
    const char *host, *logic, *secret;
    int port, pid;
    long conns, pairs, window, rate, duration, payload;
    int64_t base;
} opt = {.host = "127.0.0.1",
         .port = 8080,
         .logic = "tcp://127.0.0.1:7400",
         .conns = 10000,
         .pairs = 1000,
         .window = 2000,
         .rate = 5000,
         .duration = 10,
         .payload = 100,
         .base = 1000000};

static struct client *cl;
static int ep;
static char *text; /* the message text, with a unique id at its start */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static long rss_kib(int pid)
{
    char path[64], line[256];
    long v = -1;
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &v) == 1)
            break;
    if (f)
        fclose(f);
    return v;
}

static void die(const char *what)
{
    fprintf(stderr, "gim-gwbench: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* ---- frames ------------------------------------------------------------------------- */

static void queue_bytes(struct client *c, const uint8_t *b, size_t n)
{
    if (c->outlen + n > c->outcap) {
        c->outcap = (c->outlen + n) * 2;
        if (!(c->out = realloc(c->out, c->outcap)))
            die("realloc");
    }
    memcpy(c->out + c->outlen, b, n);
    c->outlen += n;
}

static void queue_input(struct client *c, int type, int64_t rid, const ProtobufCMessage *data)
{
    static uint8_t dbuf[70000], buf[70100];
    Pb__Input in = PB__INPUT__INIT;
    in.type = (Pb__PackageType)type;
    in.request_id = rid;
    if (data) {
        in.data.len = protobuf_c_message_pack(data, dbuf);
        in.data.data = dbuf;
    }
    size_t n = pb__input__pack(&in, buf + 2);
    buf[0] = (uint8_t)(n >> 8);
    buf[1] = (uint8_t)n;
    queue_bytes(c, buf, n + 2);
}

static void flush(struct client *c)
{
    while (c->outoff < c->outlen) {
        ssize_t w = write(c->fd, c->out + c->outoff, c->outlen - c->outoff);
        if (w < 0 && (errno == EAGAIN || errno == EINTR))
            break;
        if (w < 0)
            die("write");
        c->outoff += (size_t)w;
    }
    if (c->outoff == c->outlen)
        c->outoff = c->outlen = 0;
    struct epoll_event ev = {.events = EPOLLIN | (c->outlen ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Reads what is there; calls fn for each whole Output. Returns false at EOF. */
static bool drain(struct client *c, void (*fn)(struct client *, Pb__Output *))
{
    for (;;) {
        if (c->incap - c->inlen < 65540) {
            c->incap = c->incap ? c->incap * 2 : 131072;
            if (!(c->in = realloc(c->in, c->incap)))
                die("realloc");
        }
        ssize_t r = read(c->fd, c->in + c->inlen, c->incap - c->inlen);
        if (r == 0)
            return false;
        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR)
                break;
            return false;
        }
        c->inlen += (size_t)r;
    }
    size_t off = 0;
    while (c->inlen - off >= 2) {
        size_t n = (size_t)c->in[off] << 8 | c->in[off + 1];
        if (c->inlen - off - 2 < n)
            break;
        Pb__Output *o = pb__output__unpack(NULL, n, c->in + off + 2);
        if (o) {
            fn(c, o);
            pb__output__free_unpacked(o, NULL);
        }
        off += 2 + n;
    }
    memmove(c->in, c->in + off, c->inlen - off);
    c->inlen -= off;
    return true;
}

/* ---- phases ------------------------------------------------------------------------- */

static long signed_in, signin_failed, replies, pushes, fails, refused;
/* Sign-ins refused with "retry later", to send again (indexes into cl), and how many were. */
static long *retry_q;
static long nretry, signin_retried;
static int64_t *lat; /* ns, per measured push */
static long nlat, latcap, negative;
static int64_t *reply_at; /* message id -> reply time */
static long nids;
static bool measuring;

static void on_output(struct client *c, Pb__Output *o)
{
    if (o->type == PB__PACKAGE_TYPE__PT_SIGN_IN) {
        c->waiting = false;
        if (o->code == 0) {
            c->signed_in = true;
            signed_in++;
        } else if (o->code == PB__ERROR_CODE__EC_UNAVAILABLE) {
            retry_q[nretry++] = c - cl;
            signin_retried++;
        } else {
            if (signin_failed++ == 0)
                fprintf(stderr, "gim-gwbench: sign-in refused: code %d %s\n", o->code,
                        o->message ? o->message : "");
        }
        return;
    }
    if (o->type != PB__PACKAGE_TYPE__PT_MESSAGE)
        return;
    if (o->request_id != 0 && c->waiting && o->request_id == c->sent_id) {
        /* A reply to this client's own send (pushes carry request_id 0 here). */
        c->waiting = false;
        if (o->code == PB__ERROR_CODE__EC_UNAVAILABLE) {
            refused++; /* "retry later": the sender's next message goes as a retry would */
            return;
        }
        if (o->code != 0) {
            fails++;
            return;
        }
        if (measuring)
            replies++;
        if (reply_at && c->sent_id < nids)
            reply_at[c->sent_id] = now_ns();
        return;
    }
    int64_t t = now_ns();
    if (measuring)
        pushes++;
    if (!reply_at)
        return;
    Pb__MessageSend *ms = pb__message_send__unpack(NULL, o->data.len, o->data.data);
    if (ms && ms->message) {
        Pb__Text *tx = pb__text__unpack(NULL, ms->message->message_content.len,
                                        ms->message->message_content.data);
        long id = tx ? strtol(tx->text, NULL, 10) : -1;
        if (id > 0 && id < nids && measuring) {
            int64_t d = reply_at[id] ? t - reply_at[id] : 0;
            if (!reply_at[id] || d < 0)
                negative++; /* the push came first: latency 0 */
            if (nlat < latcap)
                lat[nlat++] = d > 0 ? d : 0;
        }
        if (tx)
            pb__text__free_unpacked(tx, NULL);
    }
    if (ms)
        pb__message_send__free_unpacked(ms, NULL);
}

static void poll_once(int ms)
{
    struct epoll_event evs[512];
    int n = epoll_wait(ep, evs, 512, ms);
    for (int i = 0; i < n; i++) {
        struct client *c = evs[i].data.ptr;
        if (evs[i].events & EPOLLOUT)
            flush(c);
        if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
            if (!drain(c, on_output)) {
                fprintf(stderr, "gim-gwbench: connection %ld closed by the gateway\n",
                        (long)(c - cl));
                exit(1);
            }
    }
}

static void connect_all(void)
{
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port)};
    inet_pton(AF_INET, opt.host, &dst.sin_addr);
    for (long i = 0; i < opt.conns; i++) {
        struct client *c = &cl[i];
        int one = 1;
        c->fd = socket(AF_INET, SOCK_STREAM, 0);
        if (c->fd < 0)
            die("socket (raise the fd limit)");
        setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(0x7f000002u + (uint32_t)(i / PER_SOURCE));
        if (bind(c->fd, (struct sockaddr *)&src, sizeof src) != 0)
            die("bind");
        fcntl(c->fd, F_SETFL, O_NONBLOCK);
        if (connect(c->fd, (struct sockaddr *)&dst, sizeof dst) != 0 && errno != EINPROGRESS)
            die("connect");
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
        if (i % 500 == 499)
            poll_once(1); /* pace: the gateway's accept queue (backlog 128) */
    }
}

static void signin_all(void)
{
    long next = 0;
    retry_q = calloc((size_t)opt.conns, sizeof *retry_q); /* a client is queued at most once */
    if (!retry_q)
        die("calloc");
    /* A sign-in without a reply, or refused again and again (gim-logic stopped), would keep
     * this loop going for good: after 30 s without one more sign-in done, the run ends
     * with a message instead. */
    int64_t progress_at = now_ns();
    long done = 0;
    while (signed_in + signin_failed < opt.conns) {
        if (signed_in + signin_failed != done) {
            done = signed_in + signin_failed;
            progress_at = now_ns();
        } else if (now_ns() - progress_at > 30000000000LL) {
            fprintf(stderr, "gim-gwbench: no sign-in done for 30 s (%ld of %ld signed in)\n",
                    signed_in, opt.conns);
            exit(1);
        }
        long inflight = next - signed_in - signin_failed - nretry;
        while (inflight < opt.window && (nretry > 0 || next < opt.conns)) {
            long i = nretry > 0 ? retry_q[--nretry] : next++;
            struct client *c = &cl[i];
            int64_t id = opt.base + i;
            char *tok = NULL;
            if (auth_mint(opt.secret, id, id, time(NULL) + 86400, &tok) != GIM_OK)
                die("auth_mint");
            Pb__SignInInput si = PB__SIGN_IN_INPUT__INIT;
            si.user_id = id;
            si.device_id = id;
            si.token = tok;
            queue_input(c, PB__PACKAGE_TYPE__PT_SIGN_IN, 1, &si.base);
            free(tok);
            c->waiting = true;
            flush(c);
            inflight++;
        }
        poll_once(10);
    }
    free(retry_q);
    retry_q = NULL;
}

static void send_one(struct client *c, long recipient, int64_t id)
{
    Pb__Text t = PB__TEXT__INIT;
    Pb__Message m = PB__MESSAGE__INIT;
    Pb__MessageSend ms = PB__MESSAGE_SEND__INIT;
    static uint8_t tbuf[70000];
    int n = snprintf(text, 24, "%lld", (long long)id);
    text[n] = ' ';
    t.text = text;
    m.receiver_type = PB__RECEIVER_TYPE__RT_USER;
    m.receiver_id = opt.base + recipient;
    m.message_type = PB__MESSAGE_TYPE__MT_TEXT;
    m.message_content.len = pb__text__pack(&t, tbuf);
    m.message_content.data = tbuf;
    ms.message = &m;
    c->sent_id = id;
    c->sent_at_ns = now_ns();
    c->waiting = true;
    queue_input(c, PB__PACKAGE_TYPE__PT_MESSAGE, id, &ms.base);
    flush(c);
}

/* Closed loop (rate 0) or paced at rate messages/s over all senders. */
static double run_sends(long rate, long seconds, int64_t *next_id)
{
    int64_t start = now_ns(), end = start + seconds * 1000000000LL;
    long sent = 0, rr = 0;
    replies = pushes = 0;
    measuring = true;
    while (now_ns() < end) {
        if (rate == 0) {
            for (long i = 0; i < opt.pairs; i++)
                if (!cl[i].waiting)
                    send_one(&cl[i], opt.pairs + i, (*next_id)++);
        } else {
            long due = (long)((double)(now_ns() - start) / 1e9 * (double)rate);
            for (long k = 0; k < opt.pairs && sent < due; k++, rr = (rr + 1) % opt.pairs) {
                if (cl[rr].waiting)
                    continue;
                send_one(&cl[rr], opt.pairs + rr, (*next_id)++);
                sent++;
            }
        }
        poll_once(1);
    }
    double secs = (double)(now_ns() - start) / 1e9;
    /* Let the last pushes arrive, unmeasured for the rate but counted for latency. */
    int64_t tail = now_ns() + 1000000000LL;
    while (now_ns() < tail)
        poll_once(10);
    measuring = false;
    return secs;
}

/* The same closed loop straight to gim-logic: one REQ context per sender. */
struct dsender {
    nng_ctx ctx;
    nng_aio *aio;
    int64_t user;
    long recipient;
    bool recv;
    long *done;
};

static Pb__GatewayRequest *env_for(int64_t user, int type, int64_t rid, const ProtobufCMessage *d,
                                   uint8_t **buf, size_t *len)
{
    static Pb__Input in;
    static Pb__GatewayRequest req;
    static uint8_t dbuf[70000];
    pb__input__init(&in);
    pb__gateway_request__init(&req);
    in.type = (Pb__PackageType)type;
    in.request_id = rid;
    if (d) {
        in.data.len = protobuf_c_message_pack(d, dbuf);
        in.data.data = dbuf;
    }
    req.user_id = user;
    req.device_id = user;
    req.gateway_id = "gwbench-direct";
    req.client_addr = "bench";
    req.input = &in;
    *len = pb__gateway_request__get_packed_size(&req);
    *buf = malloc(*len);
    pb__gateway_request__pack(&req, *buf);
    return &req;
}

static volatile bool direct_measuring;
/* Set before the phase's aios are stopped: a callback then sends nothing more. */
static _Atomic bool direct_stopping;
/* Measured replies refused with "retry later" (writes beyond writer.max_queued), and other errors.
 */
static long direct_refused, direct_failed;
static int64_t direct_id = 1;
static pthread_mutex_t direct_mu = PTHREAD_MUTEX_INITIALIZER;

static void direct_send(struct dsender *s)
{
    Pb__Text t = PB__TEXT__INIT;
    Pb__Message m = PB__MESSAGE__INIT;
    Pb__MessageSend ms = PB__MESSAGE_SEND__INIT;
    uint8_t tbuf[70000], *buf;
    size_t len;
    t.text = text;
    m.receiver_type = PB__RECEIVER_TYPE__RT_USER;
    m.receiver_id = opt.base + s->recipient;
    m.message_type = PB__MESSAGE_TYPE__MT_TEXT;
    m.message_content.len = pb__text__pack(&t, tbuf);
    m.message_content.data = tbuf;
    ms.message = &m;
    pthread_mutex_lock(&direct_mu);
    int64_t rid = direct_id++;
    env_for(s->user, PB__PACKAGE_TYPE__PT_MESSAGE, rid, &ms.base, &buf, &len);
    pthread_mutex_unlock(&direct_mu);
    nng_msg *msg;
    nng_msg_alloc(&msg, len);
    memcpy(nng_msg_body(msg), buf, len);
    free(buf);
    nng_aio_set_msg(s->aio, msg);
    s->recv = false;
    nng_ctx_send(s->ctx, s->aio);
}

static void direct_cb(void *arg)
{
    struct dsender *s = arg;
    /* A message this callback frees is taken off the aio: run_direct frees what is left. */
    if (nng_aio_result(s->aio) != 0) {
        if (!s->recv) {
            nng_msg_free(nng_aio_get_msg(s->aio));
            nng_aio_set_msg(s->aio, NULL);
        }
        return; /* closed at the end */
    }
    if (atomic_load(&direct_stopping)) {
        if (s->recv) {
            nng_msg_free(nng_aio_get_msg(s->aio));
            nng_aio_set_msg(s->aio, NULL);
        }
        return;
    }
    if (!s->recv) {
        s->recv = true;
        nng_ctx_recv(s->ctx, s->aio);
        return;
    }
    /* Only a durable send counts, as in e2e: under load gim-logic refuses writes beyond
     * writer.max_queued with EC_UNAVAILABLE, and those replies come back fast. */
    nng_msg *reply = nng_aio_get_msg(s->aio);
    nng_aio_set_msg(s->aio, NULL);
    Pb__Output *o = pb__output__unpack(NULL, nng_msg_len(reply), nng_msg_body(reply));
    long *count = !o                                          ? &direct_failed
                  : o->code == PB__ERROR_CODE__EC_OK          ? s->done
                  : o->code == PB__ERROR_CODE__EC_UNAVAILABLE ? &direct_refused
                                                              : &direct_failed;
    if (o)
        pb__output__free_unpacked(o, NULL);
    nng_msg_free(reply);
    if (direct_measuring)
        __atomic_add_fetch(count, 1, __ATOMIC_RELAXED);
    direct_send(s);
}

static double run_direct(long seconds, long *done)
{
    nng_socket sock;
    /* The sign-ins below wait for their replies: a bound, so a lost one ends the run with
     * a message instead of a hang. */
    if (nng_req0_open(&sock) != 0 || nng_socket_set_ms(sock, NNG_OPT_RECVTIMEO, 30000) != 0 ||
        nng_socket_set_ms(sock, NNG_OPT_SENDTIMEO, 30000) != 0 ||
        nng_dial(sock, opt.logic, NULL, 0) != 0) {
        fprintf(stderr, "gim-gwbench: cannot dial %s\n", opt.logic);
        exit(1);
    }
    struct dsender *s = calloc((size_t)opt.pairs, sizeof *s);
    /* Sign the direct senders in (users base+conns.., at gateway gwbench-direct). */
    for (long i = 0; i < opt.pairs; i++) {
        int64_t u = opt.base + opt.conns + i;
        char *tok = NULL;
        auth_mint(opt.secret, u, u, time(NULL) + 86400, &tok);
        Pb__SignInInput si = PB__SIGN_IN_INPUT__INIT;
        si.user_id = u;
        si.device_id = u;
        si.token = tok;
        uint8_t *buf;
        size_t len;
        env_for(u, PB__PACKAGE_TYPE__PT_SIGN_IN, 1, &si.base, &buf, &len);
        free(tok);
        void *r = NULL;
        size_t rl = 0;
        if (nng_send(sock, buf, len, 0) != 0 || nng_recv(sock, &r, &rl, NNG_FLAG_ALLOC) != 0)
            die("direct sign-in");
        nng_free(r, rl);
        free(buf);
        s[i].user = u;
        s[i].recipient = opt.pairs + i;
        s[i].done = done;
        nng_ctx_open(&s[i].ctx, sock);
        nng_aio_alloc(&s[i].aio, direct_cb, &s[i]);
    }
    direct_measuring = true;
    int64_t start = now_ns();
    for (long i = 0; i < opt.pairs; i++)
        direct_send(&s[i]);
    /* Keep the gateway's recipients read meanwhile (their pushes must not pile up). */
    while (now_ns() - start < seconds * 1000000000LL)
        poll_once(5);
    direct_measuring = false;
    double secs = (double)(now_ns() - start) / 1e9;
    /* Stop every aio: a callback then sends nothing more. nng_aio_stop waits for a running
     * callback. */
    atomic_store(&direct_stopping, true);
    for (long i = 0; i < opt.pairs; i++)
        nng_aio_stop(s[i].aio);
    /* A callback that was running when its aio stopped may have started a send, which
     * nng 1.5.2 then refuses without calling back: its message is still on the aio. */
    for (long i = 0; i < opt.pairs; i++) {
        nng_msg *left = nng_aio_get_msg(s[i].aio);
        if (left)
            nng_msg_free(left);
        nng_aio_set_msg(s[i].aio, NULL);
        nng_aio_free(s[i].aio);
    }
    /* The socket is left open until the process exits: with nng 1.5.2 its nng_close could
     * wait for good (its reaper thread stuck in a wait: 3 runs of 12 with 2,000 contexts over
     * ipc, 2026-11-30), also with every aio stopped and every context closed first. */
    free(s);
    return secs;
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: gim-gwbench [options]\n"
               "  --gateway HOST:PORT   a be16 TCP listener of gim-gateway (127.0.0.1:8080)\n"
               "  --gateway-pid PID     its pid, for RSS (none: RSS not measured)\n"
               "  --logic URL           gim-logic REP, for the direct comparison "
               "(tcp://127.0.0.1:7400)\n"
               "  --secret S            token secret (else $GIM_TOKEN_SECRET)\n"
               "  --conns N             connections (10000)\n"
               "  --pairs P             senders (and as many recipients) (1000)\n"
               "  --window W            sign-ins in flight (2000)\n"
               "  --rate R              messages/s of the latency phase (5000)\n"
               "  --duration S          seconds per measured phase (10)\n"
               "  --payload BYTES       text length (100)\n"
               "  --user-base ID        first user id (1000000)\n");
}

int main(int argc, char **argv)
{
    static const struct option longs[] = {{"gateway", 1, 0, 'g'},
                                          {"gateway-pid", 1, 0, 'p'},
                                          {"logic", 1, 0, 'l'},
                                          {"secret", 1, 0, 's'},
                                          {"conns", 1, 0, 'n'},
                                          {"pairs", 1, 0, 'P'},
                                          {"window", 1, 0, 'w'},
                                          {"rate", 1, 0, 'r'},
                                          {"duration", 1, 0, 't'},
                                          {"payload", 1, 0, 'b'},
                                          {"user-base", 1, 0, 'u'},
                                          {"help", 0, 0, 'h'},
                                          {0, 0, 0, 0}};
    int ch;
    opt.secret = getenv("GIM_TOKEN_SECRET");
    while ((ch = getopt_long(argc, argv, "h", longs, NULL)) != -1) {
        switch (ch) {
        case 'g': {
            static char host[64];
            if (sscanf(optarg, "%63[^:]:%d", host, &opt.port) != 2) {
                usage(stderr);
                return 2;
            }
            opt.host = host;
            break;
        }
        case 'p':
            opt.pid = atoi(optarg);
            break;
        case 'l':
            opt.logic = optarg;
            break;
        case 's':
            opt.secret = optarg;
            break;
        case 'n':
            opt.conns = atol(optarg);
            break;
        case 'P':
            opt.pairs = atol(optarg);
            break;
        case 'w':
            opt.window = atol(optarg);
            break;
        case 'r':
            opt.rate = atol(optarg);
            break;
        case 't':
            opt.duration = atol(optarg);
            break;
        case 'b':
            opt.payload = atol(optarg);
            break;
        case 'u':
            opt.base = atoll(optarg);
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!opt.secret || opt.conns < 2 || opt.pairs < 1 || 2 * opt.pairs > opt.conns ||
        opt.payload < 24 || opt.payload > 16000) {
        fprintf(stderr,
                "gim-gwbench: need a secret, --conns >= 2 * --pairs, --payload 24..16000\n");
        return 2;
    }
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if ((rlim_t)opt.conns + 64 > rl.rlim_cur) {
        fprintf(stderr, "gim-gwbench: --conns %ld needs more descriptors than the limit %llu\n",
                opt.conns, (unsigned long long)rl.rlim_cur);
        return 2;
    }
    text = malloc((size_t)opt.payload + 1);
    memset(text, 'x', (size_t)opt.payload);
    text[opt.payload] = '\0';
    cl = calloc((size_t)opt.conns, sizeof *cl);
    if ((ep = epoll_create1(0)) < 0 || !cl)
        die("setup");

    long rss0 = opt.pid ? rss_kib(opt.pid) : -1;
    int64_t t0 = now_ns();
    connect_all();
    int64_t t1 = now_ns();
    /* Let the gateway accept everything before measuring. */
    for (int i = 0; i < 100; i++)
        poll_once(10);
    long rss1 = opt.pid ? rss_kib(opt.pid) : -1;
    int64_t t2 = now_ns();
    signin_all();
    int64_t t3 = now_ns();
    long rss2 = opt.pid ? rss_kib(opt.pid) : -1;
    printf("connections        %ld (connect %.2f s)\n", opt.conns, (double)(t1 - t0) / 1e9);
    printf("sign-in            %ld ok, %ld failed, %.2f s = %.0f sign-ins/s (window %ld; %ld "
           "refused with retry later, sent again)\n",
           signed_in, signin_failed, (double)(t3 - t2) / 1e9,
           (double)signed_in / ((double)(t3 - t2) / 1e9), opt.window, signin_retried);
    if (opt.pid)
        printf("gateway RSS        %ld KiB idle, %ld KiB connected, %ld KiB signed in: "
               "%.2f KiB per connection\n",
               rss0, rss1, rss2, (double)(rss2 - rss0) / (double)opt.conns);
    if (signin_failed)
        return 1;

    int64_t next_id = 1;
    double secs = run_sends(0, opt.duration, &next_id);
    long e2e = replies, e2e_pushes = pushes;
    printf("e2e closed loop    %ld senders: %ld replies in %.2f s = %.0f msg/s; %ld pushes "
           "received; %ld refused with retry later; %ld failed\n",
           opt.pairs, e2e, secs, (double)e2e / secs, e2e_pushes, refused, fails);
    long done = 0;
    secs = run_direct(opt.duration, &done);
    printf("direct closed loop %ld contexts: %ld replies in %.2f s = %.0f msg/s; %ld refused with "
           "retry later; %ld failed\n",
           opt.pairs, done, secs, (double)done / secs, direct_refused, direct_failed);
    printf("gateway / direct   %.0f %%\n",
           100.0 * ((double)e2e / (double)opt.duration) / ((double)done / secs));

    nids = next_id + opt.rate * (opt.duration + 2) + 1000;
    reply_at = calloc((size_t)nids, sizeof *reply_at);
    latcap = nids;
    lat = calloc((size_t)latcap, sizeof *lat);
    /* Let the pushes of the direct phase drain first. */
    int64_t q = now_ns() + 2000000000LL;
    while (now_ns() < q)
        poll_once(10);
    secs = run_sends(opt.rate, opt.duration, &next_id);
    qsort(lat, (size_t)nlat, sizeof *lat, cmp64);
    printf("latency phase      target %ld msg/s: %ld replies in %.2f s = %.0f msg/s, %ld pushes\n",
           opt.rate, replies, secs, (double)replies / secs, pushes);
    if (nlat)
        printf("push latency       reply -> recipient's socket: p50 %.3f ms, p99 %.3f ms, max "
               "%.3f ms (%ld samples, %ld pushes before their reply)\n",
               (double)lat[nlat / 2] / 1e6, (double)lat[(long)((double)nlat * 0.99)] / 1e6,
               (double)lat[nlat - 1] / 1e6, nlat, negative);
    if (opt.pid)
        printf("gateway RSS        %ld KiB at the end\n", rss_kib(opt.pid));
    return fails ? 1 : 0;
}
