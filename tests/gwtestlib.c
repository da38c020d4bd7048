#include "gwtestlib.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <nng/supplemental/util/platform.h>

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int tcp_connect(int port, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert(fd >= 0);
    if (rcvbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* n distinct free ports: all bound at once, so the kernel cannot hand one out twice. */
static void free_ports(int *out, int n)
{
    int fds[8];
    cr_assert(n <= 8);
    for (int i = 0; i < n; i++) {
        struct sockaddr_in a = {.sin_family = AF_INET};
        socklen_t len = sizeof a;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        cr_assert(fds[i] >= 0);
        cr_assert_eq(bind(fds[i], (struct sockaddr *)&a, sizeof a), 0);
        cr_assert_eq(getsockname(fds[i], (struct sockaddr *)&a, &len), 0);
        out[i] = ntohs(a.sin_port);
    }
    for (int i = 0; i < n; i++)
        close(fds[i]);
}

static bool spawn(struct gw_server *g);

/* tmpl with every "{port1}" and "{port2}" replaced by port[0] and port[1]. */
static void expand_ports(char *out, size_t cap, const char *tmpl, const int port[2])
{
    size_t n = 0;
    for (const char *p = tmpl; *p && n + 8 < cap;) {
        if (strncmp(p, "{port1}", 7) == 0 || strncmp(p, "{port2}", 7) == 0) {
            n += (size_t)snprintf(out + n, cap - n, "%d", port[p[5] - '1']);
            p += 7;
        } else {
            out[n++] = *p++;
        }
    }
    cr_assert(n + 8 < cap, "more_listeners is too long");
    out[n] = '\0';
}

void gwt_start_logic(struct tl_server *logic, const char *extra_yaml)
{
    char url[64];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", tl_free_port());
    tl_start_listen(logic, url, extra_yaml);
}

void gwt_start(struct gw_server *g, const struct tl_server *logic, const char *id,
               const char *logic_keys, const char *extra_yaml)
{
    gwt_start_ex(g, logic, id, logic_keys, extra_yaml, NULL, NULL, NULL);
}

void gwt_start_ex(struct gw_server *g, const struct tl_server *logic, const char *id,
                  const char *logic_keys, const char *extra_yaml, const char *more_listeners,
                  const char *web_root, const char *proto_dir)
{
    memset(g, 0, sizeof *g);
    snprintf(g->id, sizeof g->id, "%s", id);
    snprintf(g->dir, sizeof g->dir, "/tmp/gimgw-XXXXXX");
    cr_assert_not_null(mkdtemp(g->dir));
    snprintf(g->config, sizeof g->config, "%s/gw.yaml", g->dir);
    snprintf(g->log, sizeof g->log, "%s/gw.log", g->dir);
    int ports[6];
    free_ports(ports, 6);
    g->be16_port = ports[0];
    g->uvarint_port = ports[1];
    g->ws_port = ports[2];
    g->http_port = ports[3];
    g->more_port[0] = ports[4];
    g->more_port[1] = ports[5];
    char more[1024] = "";
    if (more_listeners)
        expand_ports(more, sizeof more, more_listeners, g->more_port);
    /* Tests wait for replies, so a shorter request timeout than the default unless set. */
    char lkeys[512];
    snprintf(lkeys, sizeof lkeys, "%s%s%s",
             logic_keys && strstr(logic_keys, "timeout_ms") ? "" : ", timeout_ms: 3000",
             logic_keys ? ", " : "", logic_keys ? logic_keys : "");
    FILE *f = fopen(g->config, "w");
    cr_assert_not_null(f);
    fprintf(f,
            "gateway_id: %s\n"
            "listeners:\n"
            "  - {url: \"tcp://127.0.0.1:%d\", framing: be16}\n"
            "  - {url: \"tcp://127.0.0.1:%d\", framing: uvarint}\n"
            "  - {url: \"ws://:%d/ws\"}\n"
            "%s"
            "http: \"http://127.0.0.1:%d\"\n"
            "logic: {requests: [\"%s\"], publish: [\"%s\"]%s%s}\n"
            "web: {root: \"%s\", proto_dir: \"%s\"}\n"
            "%s\n",
            id, g->be16_port, g->uvarint_port, g->ws_port, more, g->http_port,
            logic->listen_extra[0] ? logic->listen_extra : logic->url, logic->pub_url, lkeys, "",
            web_root ? web_root : "", proto_dir ? proto_dir : "", extra_yaml ? extra_yaml : "");
    fclose(f);
    /* A port picked free may be taken by someone else before the gateway binds it: then
     * it exits during start-up (address in use), and we try again on new ports. */
    for (int attempt = 0; attempt < 3; attempt++) {
        if (spawn(g))
            return;
        char cmd[512];
        snprintf(cmd, sizeof cmd, "grep -q 'in use' %s", g->log);
        cr_assert_eq(system(cmd), 0, "gim-gateway exited during start-up; see %s", g->log);
        free_ports(ports, 6);
        char sed[1024];
        snprintf(sed, sizeof sed,
                 "sed -i 's/:%d\\b/:%d/; s/:%d\\b/:%d/; s/:%d\\b/:%d/; s/:%d\\b/:%d/; "
                 "s/:%d\\b/:%d/; s/:%d\\b/:%d/' %s",
                 g->be16_port, ports[0], g->uvarint_port, ports[1], g->ws_port, ports[2],
                 g->http_port, ports[3], g->more_port[0], ports[4], g->more_port[1], ports[5],
                 g->config);
        cr_assert_eq(system(sed), 0);
        g->be16_port = ports[0];
        g->uvarint_port = ports[1];
        g->ws_port = ports[2];
        g->http_port = ports[3];
        g->more_port[0] = ports[4];
        g->more_port[1] = ports[5];
    }
    cr_assert_fail("gim-gateway could not bind its ports; see %s", g->log);
}

/* Whether the gateway's log has a "ready" line after byte from (where this start's lines begin). */
static bool log_says_ready(const char *log, long from)
{
    FILE *f = fopen(log, "r");
    char line[1024];
    bool ready = false;
    if (f && fseek(f, from, SEEK_SET) != 0) {
        fclose(f);
        f = NULL;
    }
    while (f && !ready && fgets(line, sizeof line, f))
        ready = strstr(line, " msg=\"ready\" ") != NULL;
    if (f)
        fclose(f);
    return ready;
}

/* Starts the binary; false when it exited during start-up. */
static bool spawn(struct gw_server *g)
{
    struct stat before;
    long from = stat(g->log, &before) == 0 ? (long)before.st_size : 0;
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        FILE *log = freopen(g->log, "a", stderr);
        (void)log;
        execl(GIM_GATEWAY_BIN, GIM_GATEWAY_BIN, "--config", g->config, (char *)NULL);
        _exit(127);
    }
    g->pid = pid;
    /*
     * Ready when its log says "ready": that comes after the first lease was answered, every
     * listener was opened (one after the other, be16 first) and the HTTP server started. A
     * connect to the be16 port used to stand for all of them, and a test that went on to the
     * uvarint, ws or wss listener found it not yet open on a loaded machine ("connection
     * refused", one CI run and one bare-machine run).
     */
    for (int i = 0; i < 400; i++) {
        if (log_says_ready(g->log, from))
            return true;
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            g->pid = 0;
            return false;
        }
        nng_msleep(50);
    }
    cr_assert_fail("gim-gateway did not listen within 20 s; see %s", g->log);
    return false;
}

void gwt_freeze(pid_t pid)
{
    char path[64];
    kill(pid, SIGSTOP);
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    for (int i = 0; i < 500; i++) {
        DIR *d = opendir(path);
        struct dirent *e;
        bool all = d != NULL;
        while (d && all && (e = readdir(d)) != NULL) {
            char stat[600], buf[512];
            if (e->d_name[0] == '.')
                continue;
            snprintf(stat, sizeof stat, "%s/%s/stat", path, e->d_name);
            FILE *f = fopen(stat, "r");
            size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
            if (f)
                fclose(f);
            buf[n] = '\0';
            char *rp = strrchr(buf, ')');
            all = rp && rp[1] == ' ' && (rp[2] == 'T' || rp[2] == 't');
        }
        if (d)
            closedir(d);
        if (all)
            return;
        nng_msleep(2);
    }
    cr_assert_fail("process %d did not stop", (int)pid);
}

int gwt_stop(struct gw_server *g)
{
    int st = 0;
    if (g->pid <= 0)
        return -1;
    kill(g->pid, SIGTERM);
    waitpid(g->pid, &st, 0);
    g->pid = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

void gwt_cleanup(struct gw_server *g)
{
    char cmd[256];
    if (g->pid > 0) {
        kill(g->pid, SIGKILL);
        waitpid(g->pid, NULL, 0);
        g->pid = 0;
    }
    if (getenv("GIM_TEST_KEEP") || !g->dir[0])
        return;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", g->dir);
}

char *gwt_http_get(int port, const char *path, int *status)
{
    int fd = tcp_connect(port, 0);
    char *req = NULL, *resp = NULL;
    size_t len = 0, cap = 0;
    *status = 0;
    if (fd < 0)
        return NULL;
    int n = asprintf(&req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", path);
    cr_assert(n > 0);
    cr_assert_eq(write(fd, req, (size_t)n), n);
    free(req);
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            resp = realloc(resp, cap);
            cr_assert_not_null(resp);
        }
        ssize_t r = read(fd, resp + len, cap - len - 1);
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    if (!resp)
        return NULL;
    resp[len] = '\0';
    sscanf(resp, "HTTP/1.1 %d", status);
    char *body = strstr(resp, "\r\n\r\n");
    char *out = strdup(body ? body + 4 : "");
    free(resp);
    return out;
}

long gwt_metric(struct gw_server *g, const char *name)
{
    int status = 0;
    char *body = gwt_http_get(g->http_port, "/metrics", &status);
    long v = -1;
    size_t n = strlen(name);
    for (char *p = body; p && *p;) {
        char *eol = strchr(p, '\n');
        if (strncmp(p, name, n) == 0 && p[n] == ' ') {
            v = strtol(p + n + 1, NULL, 10);
            break;
        }
        p = eol ? eol + 1 : NULL;
    }
    free(body);
    return v;
}

static void ws_on_recv(void *arg)
{
    struct gwc *c = arg;
    pthread_mutex_lock(&c->mu);
    c->rdone = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

void gwc_connect(struct gwc *c, const struct gw_server *g, enum gwc_kind kind, int rcvbuf)
{
    memset(c, 0, sizeof *c);
    c->kind = kind;
    c->fd = -1;
    if (kind != GWC_WS) {
        c->fd = tcp_connect(kind == GWC_BE16 ? g->be16_port : g->uvarint_port, rcvbuf);
        cr_assert(c->fd >= 0, "cannot connect to the gateway");
        return;
    }
    char url[64];
    snprintf(url, sizeof url, "ws://127.0.0.1:%d/ws", g->ws_port);
    cr_assert_eq(nng_stream_dialer_alloc(&c->dialer, url), 0);
    cr_assert_eq(nng_stream_dialer_set_bool(c->dialer, "ws:msgmode", true), 0);
    cr_assert_eq(nng_aio_alloc(&c->aio, NULL, NULL), 0);
    nng_aio_set_timeout(c->aio, 5000);
    nng_stream_dialer_dial(c->dialer, c->aio);
    nng_aio_wait(c->aio);
    cr_assert_eq(nng_aio_result(c->aio), 0, "ws dial: %s", nng_strerror(nng_aio_result(c->aio)));
    c->ws = nng_aio_get_output(c->aio, 0);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    cr_assert_eq(nng_aio_alloc(&c->raio, ws_on_recv, c), 0);
    nng_stream_recv(c->ws, c->raio);
}

void gwc_close(struct gwc *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    if (c->ws) {
        nng_stream_close(c->ws);
        nng_aio_free(c->raio);
        nng_msg *m = c->rdone && nng_aio_result(c->raio) == 0 ? nng_aio_get_msg(c->raio) : NULL;
        if (m)
            nng_msg_free(m);
        pthread_mutex_destroy(&c->mu);
        pthread_cond_destroy(&c->cv);
        nng_stream_free(c->ws);
        c->ws = NULL;
    }
    if (c->aio)
        nng_aio_free(c->aio);
    c->aio = NULL;
    if (c->dialer)
        nng_stream_dialer_free(c->dialer);
    c->dialer = NULL;
    free(c->buf);
    c->buf = NULL;
}

size_t gwc_frame(const struct gwc *c, int type, int64_t request_id, const ProtobufCMessage *data,
                 uint8_t *out, size_t cap)
{
    Pb__Input in = PB__INPUT__INIT;
    uint8_t dbuf[70000];
    in.type = (Pb__PackageType)type;
    in.request_id = request_id;
    if (data) {
        cr_assert(protobuf_c_message_get_packed_size(data) <= sizeof dbuf);
        in.data.len = protobuf_c_message_pack(data, dbuf);
        in.data.data = dbuf;
    }
    size_t n = pb__input__get_packed_size(&in), h = 0;
    cr_assert(n + 10 <= cap);
    if (c->kind == GWC_BE16) {
        out[0] = (uint8_t)(n >> 8);
        out[1] = (uint8_t)n;
        h = 2;
    } else if (c->kind == GWC_UVARINT) {
        for (uint64_t v = n;; v >>= 7) {
            out[h++] = (uint8_t)((v & 0x7f) | (v >> 7 ? 0x80 : 0));
            if (!(v >> 7))
                break;
        }
    }
    pb__input__pack(&in, out + h);
    return h + n;
}

void gwc_write(struct gwc *c, const void *buf, size_t len)
{
    if (c->kind != GWC_WS) {
        const uint8_t *p = buf;
        while (len > 0) {
            ssize_t w = write(c->fd, p, len);
            cr_assert(w > 0, "write: %s", strerror(errno));
            p += w;
            len -= (size_t)w;
        }
        return;
    }
    nng_msg *m = NULL;
    cr_assert_eq(nng_msg_alloc(&m, 0), 0);
    cr_assert_eq(nng_msg_append(m, buf, len), 0);
    nng_aio_set_msg(c->aio, m);
    nng_aio_set_timeout(c->aio, 5000);
    nng_stream_send(c->ws, c->aio);
    nng_aio_wait(c->aio);
    int rv = nng_aio_result(c->aio);
    if (rv != 0)
        nng_msg_free(nng_aio_get_msg(c->aio));
    cr_assert_eq(rv, 0, "ws send: %s", nng_strerror(rv));
}

void gwc_send(struct gwc *c, int type, int64_t request_id, const ProtobufCMessage *data)
{
    static uint8_t buf[70016];
    gwc_write(c, buf, gwc_frame(c, type, request_id, data, buf, sizeof buf));
}

/* Cuts one frame out of c->buf if complete. */
static Pb__Output *tcp_take(struct gwc *c)
{
    uint64_t n = 0;
    size_t h = 0;
    if (c->kind == GWC_BE16) {
        if (c->len < 2)
            return NULL;
        n = (uint64_t)c->buf[0] << 8 | c->buf[1];
        h = 2;
    } else {
        for (;; h++) {
            if (h >= c->len)
                return NULL;
            n |= (uint64_t)(c->buf[h] & 0x7f) << (7 * h);
            if (!(c->buf[h] & 0x80)) {
                h++;
                break;
            }
        }
    }
    if (c->len - h < n)
        return NULL;
    Pb__Output *o = pb__output__unpack(NULL, (size_t)n, c->buf + h);
    cr_assert_not_null(o, "gateway sent a frame that is not a pb.Output");
    memmove(c->buf, c->buf + h + n, c->len - h - n);
    c->len -= h + n;
    return o;
}

Pb__Output *gwc_recv(struct gwc *c, int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    if (c->kind == GWC_WS) {
        if (c->eof)
            return NULL;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += timeout_ms / 1000;
        ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_mutex_lock(&c->mu);
        while (!c->rdone && pthread_cond_timedwait(&c->cv, &c->mu, &ts) == 0)
            ;
        bool done = c->rdone;
        c->rdone = false;
        pthread_mutex_unlock(&c->mu);
        if (!done)
            return NULL;
        int rv = nng_aio_result(c->raio);
        if (rv != 0) {
            c->eof = true;
            return NULL;
        }
        nng_msg *m = nng_aio_get_msg(c->raio);
        nng_aio_set_msg(c->raio, NULL);
        nng_stream_recv(c->ws, c->raio);
        Pb__Output *o = pb__output__unpack(NULL, nng_msg_len(m), nng_msg_body(m));
        nng_msg_free(m);
        cr_assert_not_null(o, "gateway sent a ws message that is not a pb.Output");
        return o;
    }
    for (;;) {
        Pb__Output *o = tcp_take(c);
        if (o)
            return o;
        int left = (int)(deadline - now_ms());
        if (left <= 0 || c->eof)
            return NULL;
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        if (poll(&p, 1, left) <= 0)
            continue;
        if (c->cap - c->len < 65536) {
            c->cap = c->cap ? c->cap * 2 : 131072;
            c->buf = realloc(c->buf, c->cap);
            cr_assert_not_null(c->buf);
        }
        ssize_t r = read(c->fd, c->buf + c->len, c->cap - c->len);
        if (r <= 0) {
            c->eof = true;
            continue;
        }
        c->len += (size_t)r;
    }
}

Pb__Output *gwc_reply(struct gwc *c, int64_t request_id, int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        int left = (int)(deadline - now_ms());
        Pb__Output *o = gwc_recv(c, left > 0 ? left : 1);
        if (!o || o->request_id == request_id)
            return o;
        pb__output__free_unpacked(o, NULL);
        if (left <= 0)
            return NULL;
    }
}

bool gwc_wait_closed(struct gwc *c, int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    while (!c->eof) {
        int left = (int)(deadline - now_ms());
        if (left <= 0)
            return false;
        Pb__Output *o = gwc_recv(c, left);
        if (o)
            pb__output__free_unpacked(o, NULL);
    }
    return true;
}

int gwc_signin(struct gwc *c, int64_t user, int64_t device)
{
    char *tok = tl_token(user, device, 3600);
    Pb__SignInInput in = PB__SIGN_IN_INPUT__INIT;
    in.user_id = user;
    in.device_id = device;
    in.token = tok;
    gwc_send(c, PB__PACKAGE_TYPE__PT_SIGN_IN, 900001, &in.base);
    free(tok);
    Pb__Output *o = gwc_reply(c, 900001, 10000);
    cr_assert_not_null(o, "no reply to sign-in");
    int code = o->code;
    pb__output__free_unpacked(o, NULL);
    return code;
}

Pb__Output *gwc_send_text(struct gwc *c, int receiver_type, int64_t to, const char *text,
                          int64_t request_id)
{
    Pb__Text t = PB__TEXT__INIT;
    Pb__Message m = PB__MESSAGE__INIT;
    Pb__MessageSend ms = PB__MESSAGE_SEND__INIT;
    static uint8_t tbuf[70000];
    t.text = (char *)text;
    m.receiver_type = (Pb__ReceiverType)receiver_type;
    m.receiver_id = to;
    m.message_type = PB__MESSAGE_TYPE__MT_TEXT;
    m.message_content.len = pb__text__pack(&t, tbuf);
    m.message_content.data = tbuf;
    ms.message = &m;
    gwc_send(c, PB__PACKAGE_TYPE__PT_MESSAGE, request_id, &ms.base);
    return gwc_reply(c, request_id, 10000);
}
