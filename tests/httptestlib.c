#include "httptestlib.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

int ht_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0, "connect :%d: %s", port,
                 strerror(errno));
    return fd;
}

void ht_send(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return; /* the server closed: the read says so */
        p += n;
        len -= (size_t)n;
    }
}

/* Reads until buf holds `want` bytes or EOF; false on timeout. */
static ssize_t read_some(int fd, char *buf, size_t cap, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int rv = poll(&p, 1, timeout_ms);
    if (rv <= 0)
        return -2;
    ssize_t n = recv(fd, buf, cap, 0);
    return n;
}

void ht_read(int fd, struct ht_resp *r, int timeout_ms)
{
    memset(r, 0, sizeof *r);
    size_t cap = 8192, len = 0;
    char *buf = malloc(cap + 1);
    char *end = NULL;
    cr_assert_not_null(buf);
    /* The header. */
    while (!end) {
        if (len == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
            cr_assert_not_null(buf);
        }
        ssize_t n = read_some(fd, buf + len, cap - len, timeout_ms);
        if (n <= 0) {
            r->closed = n == 0;
            free(buf);
            r->body = calloc(1, 1);
            return;
        }
        len += (size_t)n;
        buf[len] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    size_t hlen = (size_t)(end - buf) + 4;
    cr_assert_eq(sscanf(buf, "HTTP/1.%*d %d", &r->status), 1, "bad status line: %.80s", buf);
    snprintf(r->headers, sizeof r->headers, "%.*s", (int)hlen, buf);
    char v[64];
    long want = -1;
    if (ht_header(r, "Content-Length", v, sizeof v))
        want = atol(v);
    else if (r->status == 204 || r->status == 304)
        want = 0;
    /* The body: Content-Length bytes, or everything until the server closes. */
    size_t blen = len - hlen;
    memmove(buf, buf + hlen, blen);
    while (want < 0 || blen < (size_t)want) {
        if (blen == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
            cr_assert_not_null(buf);
        }
        ssize_t n = read_some(fd, buf + blen, cap - blen, timeout_ms);
        if (n <= 0) {
            r->closed = true;
            break;
        }
        blen += (size_t)n;
    }
    buf[blen] = '\0';
    r->body = buf;
    r->len = blen;
    if (ht_header(r, "Connection", v, sizeof v) && strcasecmp(v, "close") == 0)
        r->closed = true;
}

void ht_do(int fd, const char *method, const char *path, const char *token, const char *key,
           const char *body, struct ht_resp *r)
{
    size_t blen = body ? strlen(body) : 0;
    size_t cap = blen + strlen(path) + (token ? strlen(token) : 0) + (key ? strlen(key) : 0) + 512;
    char *req = malloc(cap);
    cr_assert_not_null(req);
    int n = snprintf(req, cap, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n", method, path);
    if (token)
        n += snprintf(req + n, cap - (size_t)n, "Authorization: Bearer %s\r\n", token);
    if (key)
        n += snprintf(req + n, cap - (size_t)n, "Idempotency-Key: %s\r\n", key);
    if (body)
        n += snprintf(req + n, cap - (size_t)n,
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n", blen);
    n += snprintf(req + n, cap - (size_t)n, "\r\n");
    if (body)
        memcpy(req + n, body, blen);
    ht_send(fd, req, (size_t)n + blen);
    free(req);
    ht_read(fd, r, 10000);
}

void ht_call(int port, const char *method, const char *path, const char *token, const char *key,
             const char *body, struct ht_resp *r)
{
    int fd = ht_connect(port);
    ht_do(fd, method, path, token, key, body, r);
    close(fd);
}

bool ht_header(const struct ht_resp *r, const char *name, char *buf, size_t len)
{
    size_t nlen = strlen(name);
    for (const char *p = strstr(r->headers, "\r\n"); p && p[2]; p = strstr(p + 2, "\r\n")) {
        const char *line = p + 2;
        if (strncasecmp(line, name, nlen) == 0 && line[nlen] == ':') {
            const char *v = line + nlen + 1;
            while (*v == ' ')
                v++;
            size_t vlen = strcspn(v, "\r\n");
            snprintf(buf, len, "%.*s", (int)vlen, v);
            return true;
        }
    }
    return false;
}

json_t *ht_json(const struct ht_resp *r)
{
    return r->body ? json_loadb(r->body, r->len, 0, NULL) : NULL;
}

const char *ht_code(const struct ht_resp *r)
{
    static char code[64];
    json_t *j = ht_json(r);
    const char *c = j ? json_string_value(json_object_get(j, "code")) : NULL;
    snprintf(code, sizeof code, "%s", c ? c : "");
    json_decref(j);
    return code;
}

void ht_resp_free(struct ht_resp *r)
{
    free(r->body);
    r->body = NULL;
}
