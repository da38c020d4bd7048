/*
 * httptestlib: a raw HTTP/1.1 client for the business API's tests
 * (test_api*_it.c). Raw sockets rather than a client library, so that a
 * test can send exactly the bytes it means (a path nng's client would
 * normalise, a Content-Length that lies, a body that never comes) and keep
 * a connection open across requests (keep-alive).
 *
 * Ownership: ht_resp.body is malloc'ed (ht_resp_free); ht_json() returns a
 * new reference (json_decref) or NULL when the body is not JSON.
 */
#ifndef GIM_HTTPTESTLIB_H
#define GIM_HTTPTESTLIB_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

struct ht_resp {
    int status;         /* 0 when no answer came (the connection closed first) */
    char headers[4096]; /* the header lines, as received */
    char *body;         /* NUL-terminated */
    size_t len;
    bool closed; /* the server closed the connection after this answer */
};

/* A connection to 127.0.0.1:port (aborts the test if it cannot connect). */
int ht_connect(int port);

/* Sends len bytes as they are. */
void ht_send(int fd, const void *buf, size_t len);

/* Reads one answer on fd (waits at most timeout_ms; status 0 if none came). */
void ht_read(int fd, struct ht_resp *r, int timeout_ms);

/*
 * One request on fd: method, path (sent as is), the bearer token (NULL =
 * no Authorization header), Idempotency-Key (NULL = none) and a body (NULL
 * = none); keep-alive. Then reads the answer.
 */
void ht_do(int fd, const char *method, const char *path, const char *token, const char *key,
           const char *body, struct ht_resp *r);

/* ht_do on a fresh connection, closed afterwards. */
void ht_call(int port, const char *method, const char *path, const char *token, const char *key,
             const char *body, struct ht_resp *r);

/* The value of header name in r (case-insensitive), copied into buf; false if absent. */
bool ht_header(const struct ht_resp *r, const char *name, char *buf, size_t len);

json_t *ht_json(const struct ht_resp *r);

/* The "code" of an error body ("" when there is none); points into a static buffer. */
const char *ht_code(const struct ht_resp *r);

void ht_resp_free(struct ht_resp *r);

#endif
