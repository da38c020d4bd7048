/*
 * gimctl: the operator's and developer's command-line tool.
 *
 * Each subcommand is a function `int gimctl_<name>(struct gimctl *g, int argc, char **argv)`
 * returning the process exit status (0 ok, 1 the request failed or what it
 * names does not exist, 2 bad usage), with argv[0] being the subcommand name,
 * and a help text `gimctl_usage_<name>`: its synopsis lines first (the first
 * starts with "usage: ", the others with spaces and "gimctl"), then what it
 * does. Both go into the command table in gimctl.c, one line per command;
 * main() answers `COMMAND --help`, `COMMAND -h` and `help COMMAND` from the
 * text without running the command, and gimctl_usage_error() prints the
 * synopsis alone after a usage error. Subcommands that act as a device sign
 * in first (gimctl_session) at gateway g->gateway, with a token minted from
 * GIM_TOKEN_SECRET (or --secret). The read-only operator commands
 * (gimctl_read.c) open --db read-only and never sign in.
 */
#ifndef GIM_GIMCTL_H
#define GIM_GIMCTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gimclient.h"
#include "store.h"

struct gimctl {
    const char *url;     /* --url, default tcp://127.0.0.1:7400 */
    const char *db;      /* --db, default data/gim.db */
    const char *gateway; /* --gateway, default "gimctl" */
    const char *pub;     /* --pub, default tcp://127.0.0.1:7401 (watch) */
    const char *secret;  /* --secret, default $GIM_TOKEN_SECRET */
    int64_t user_id;     /* --user */
    int64_t device_id;   /* --device */
    int timeout_ms;      /* --timeout, default 5000 */
};

/* Opens a client to g->url; prints the error and returns NULL on failure. */
struct gim_client *gimctl_client(const struct gimctl *g);

/* Signs g->user_id/g->device_id in at g->gateway; 0 on success (else prints why). */
int gimctl_session(const struct gimctl *g, struct gim_client *c, struct client_conn *conn);

/*
 * A random positive request id. Sends are idempotent by (device, request_id),
 * so two sends from separate gimctl runs must not share an id by accident.
 */
int64_t gimctl_request_id(void);

/* A signed-in device for one command: the client and the identity every request carries. */
struct gimctl_dev {
    const struct gimctl *g;
    struct gim_client *c;
    struct client_conn conn;
    int64_t next_request_id; /* random (gimctl_request_id), counting up */
};

/* Opens a client to g->url and signs the device in (gimctl_session); 0, or the exit status. */
int gimctl_dev_open(const struct gimctl *g, struct gimctl_dev *d);
void gimctl_dev_close(struct gimctl_dev *d);

/*
 * Sends one request on c as conn. 0 with *out set (the caller frees it)
 * when the reply is EC_OK; otherwise prints `gimctl CMD: EC_X: message` (and
 * gimctl_secret_hint) or that no reply came on stderr, and returns 1.
 */
int gimctl_call(const struct gimctl *g, struct gim_client *c, const struct client_conn *conn,
                const char *cmd, int type, int64_t request_id, const ProtobufCMessage *in,
                Pb__Output **out);

/* An operator token (auth_mint_admin) valid for ttl_s; NULL after printing why (exit 2). */
char *gimctl_operator_token(const struct gimctl *g, const char *cmd, int64_t ttl_s);

/* One operator request (no session, a fresh gimctl_request_id) at gateway g->gateway; see
 * gimctl_call. */
int gimctl_operator_call(struct gim_client *c, const struct gimctl *g, const char *cmd, int type,
                         const ProtobufCMessage *in, Pb__Output **out);

/* gimctl_call as device d, with request id d->next_request_id++ unless request_id is given. */
int gimctl_dev_call(struct gimctl_dev *d, const char *cmd, int type, int64_t request_id,
                    const ProtobufCMessage *in, Pb__Output **out);

/* Prints an Output as one line: `code=EC_OK request_id=N [message="..."] [data=N bytes]`. */
void gimctl_print_output(const Pb__Output *out);

/* Parses a positive 64-bit decimal id; 0 on success. */
int gimctl_parse_id(const char *s, int64_t *out);

/*
 * After a usage error in command cmd: prints `gimctl CMD: <fmt...>`, the
 * command's synopsis lines and where the full help is, on stderr; returns 2
 * (the exit status of bad usage).
 */
int gimctl_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Ends a "no secret" error: where `tools/dev.sh run` keeps its secret. */
#define GIMCTL_DEV_SECRET_NOTE                                                                     \
    " (the service's auth.secret;\n  `tools/dev.sh run` keeps it in data/dev.secret: "             \
    "export GIM_TOKEN_SECRET=$(cat data/dev.secret))\n"

/*
 * After a reply of code/message to a token minted by gimctl: when the service
 * says the signature is bad, prints on stderr where each side's secret comes
 * from (they probably differ). Prints nothing otherwise.
 */
void gimctl_secret_hint(const struct gimctl *g, int code, const char *message);

/*
 * Prepares sql on db into *st and binds v[0..n) to ?1..?n (store_bind, so a
 * failed bind is caught like a failed prepare): SQLITE_OK, or the failing
 * call's code (sqlite3_errmsg(db) says why). The caller finalizes *st
 * either way.
 */
int gimctl_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st, const struct store_val *v,
                   size_t n);
#define GIMCTL_PREPARE(db, sql, st, ...) gimctl_prepare((db), (sql), (st), STORE_VALS(__VA_ARGS__))

/* Opens --db read-only (NULL after printing why, when it is not a gim-logic database). */
struct sqlite3 *gimctl_open_ro(const char *path);

/* ms since the epoch as "2024-01-02T03:04:05.678Z" in buf, or "-" for 0. */
const char *gimctl_utc(int64_t ms, char *buf, size_t len);

int gimctl_ping(struct gimctl *g, int argc, char **argv);
int gimctl_token(struct gimctl *g, int argc, char **argv);
int gimctl_group(struct gimctl *g, int argc, char **argv);  /* gimctl_group.c */
int gimctl_send(struct gimctl *g, int argc, char **argv);   /* gimctl_msg.c */
int gimctl_sync(struct gimctl *g, int argc, char **argv);   /* gimctl_msg.c */
int gimctl_ack(struct gimctl *g, int argc, char **argv);    /* gimctl_msg.c */
int gimctl_recall(struct gimctl *g, int argc, char **argv); /* gimctl_msg.c */
int gimctl_stats(struct gimctl *g, int argc, char **argv);  /* gimctl_admin.c */
int gimctl_user(struct gimctl *g, int argc, char **argv);   /* gimctl_admin.c */
int gimctl_backup(struct gimctl *g, int argc, char **argv); /* gimctl_admin.c */
int gimctl_watch(struct gimctl *g, int argc, char **argv);  /* gimctl_room.c */
int gimctl_room(struct gimctl *g, int argc, char **argv);   /* gimctl_room.c */
int gimctl_kick(struct gimctl *g, int argc, char **argv);   /* gimctl_ops.c */
int gimctl_erase(struct gimctl *g, int argc, char **argv);  /* gimctl_ops.c */
/* `send --system|--business B ...` (gimctl_send hands over): PT_ADMIN_SEND (gimctl_ops.c). */
int gimctl_send_operator(struct gimctl *g, int argc, char **argv);
/* The read-only operator commands (gimctl_read.c). */
int gimctl_online(struct gimctl *g, int argc, char **argv);
int gimctl_devices(struct gimctl *g, int argc, char **argv);
int gimctl_history(struct gimctl *g, int argc, char **argv);
int gimctl_export(struct gimctl *g, int argc, char **argv);
/* SQLite to PostgreSQL (gimctl_pg.c). */
int gimctl_pg_import(struct gimctl *g, int argc, char **argv);
int gimctl_pg_verify(struct gimctl *g, int argc, char **argv);
/* `room log R ...`: the room's log read from --db (argv[0] = "log"). */
int gimctl_room_log(struct gimctl *g, int argc, char **argv);

/* Each command's help text (see above), next to the command's code. */
extern const char gimctl_usage_ping[];
extern const char gimctl_usage_token[];
extern const char gimctl_usage_group[];
extern const char gimctl_usage_send[];
extern const char gimctl_usage_sync[];
extern const char gimctl_usage_ack[];
extern const char gimctl_usage_recall[];
extern const char gimctl_usage_stats[];
extern const char gimctl_usage_user[];
extern const char gimctl_usage_backup[];
extern const char gimctl_usage_watch[];
extern const char gimctl_usage_room[];
extern const char gimctl_usage_online[];
extern const char gimctl_usage_devices[];
extern const char gimctl_usage_history[];
extern const char gimctl_usage_export[];
extern const char gimctl_usage_kick[];
extern const char gimctl_usage_erase[];
extern const char gimctl_usage_pg_import[];
extern const char gimctl_usage_pg_verify[];

/* Shared printing for the device commands (gimctl_msg.c). */
/* The proto name of an enum value ("MT_TEXT"), or its number in buf when unknown. */
const char *gimctl_enum_name(const ProtobufCEnumDescriptor *d, int v, char *buf, size_t n);
/* `seq=N from=U type=.. status=.. to=RT_X:ID [text=".."]`, without the newline (docs/gimctl.md). */
void gimctl_print_message(const Pb__Message *m);
/*
 * Prints the messages of the SyncOutput in out (when print), advances *seq to
 * the highest seq printed and sets *more to has_more (false when not
 * printing). 0, or 1 after a message when out holds no SyncOutput.
 */
int gimctl_print_page(const char *cmd, const Pb__Output *out, bool print, int64_t *seq, bool *more);
/*
 * Pages through a log, PT_SYNC (an inbox) or PT_SUBSCRIBE_ROOM (a room's),
 * until the server says there is no more: in is the request of that type and
 * in_seq its seq field, set before each request to the highest seq printed
 * so far (from seq on), or, when print is false, to INT64_MAX: none of the
 * log (a room sender needs the subscription only). 0, or 1 after printing
 * why; a page that makes no progress is an error, not an endless loop.
 */
int gimctl_pages(struct gimctl_dev *d, const char *cmd, int type, ProtobufCMessage *in,
                 int64_t *in_seq, int64_t seq, bool print);
/*
 * Sends TEXT as MT_TEXT to receiver_type/receiver_id under request_id and
 * prints `seq=N send_time=T` from the reply; 0, or 1 after printing why.
 */
int gimctl_send_text(struct gimctl_dev *d, const char *cmd, int receiver_type, int64_t receiver_id,
                     int64_t request_id, const char *text);
/* True when argv[1..] holds --help. */
bool gimctl_wants_help(int argc, char **argv);

#endif
