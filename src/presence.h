/*
 * presence: who is signed in where, in memory, shared by all threads.
 *
 * Every request but sign-in is authenticated here (device -> user, gateway),
 * so lookups must be cheap and concurrent: a reader-writer lock guards the
 * table, and last_seen is refreshed without taking the write lock. The
 * device table mirrors sign-in/sign-out transitions (not every heartbeat)
 * and is reloaded at start-up (storage.h, device->load_sessions), so a
 * restart signs no one out.
 *
 * Only the writer thread adds and removes sessions, after the commit that
 * records the change; any thread may look up.
 *
 * Gateway leases (PT_GATEWAY_LEASE): a gateway that leases keeps every
 * session signed in at it alive. Each session points at its gateway's
 * record, so a lease is one store into that record, and the sweeper counts
 * a session as seen at the later of its last request and its gateway's last
 * lease. Sessions of gateways that never lease live by their own requests.
 */
#ifndef GIM_PRESENCE_H
#define GIM_PRESENCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "store.h"

#define PRESENCE_GATEWAY_MAX 64 /* longest gateway_id accepted, bytes (without NUL) */

struct session {
    int64_t device_id;
    int64_t user_id;
    int64_t room_id; /* subscribed room, 0 = none */
    int64_t last_seen_ms;
    char gateway_id[PRESENCE_GATEWAY_MAX + 1];
};

struct presence;

/* On success *out is owned by the caller; free with presence_close(). */
gim_err presence_open(struct presence **out);
void presence_close(struct presence *p);

/* Loads every device marked online in the device table, last_seen = now_ms. */
gim_err presence_load(struct presence *p, struct store_conn *db, int64_t now_ms);

/* Adds or replaces the session of s->device_id. */
gim_err presence_put(struct presence *p, const struct session *s);

/* Removes the session of device_id; if old is not NULL and one existed, copies it there. */
bool presence_remove(struct presence *p, int64_t device_id, struct session *old);

/*
 * Authenticates a request: GIM_OK when device_id has a session for exactly
 * (user_id, gateway_id); then refreshes its last_seen to now_ms and copies the
 * session to *out (if not NULL). GIM_EUNAUTH otherwise.
 */
gim_err presence_check(struct presence *p, int64_t user_id, int64_t device_id,
                       const char *gateway_id, int64_t now_ms, struct session *out);

/*
 * PostgreSQL (several instances, storage.h's shared_sessions): presence is
 * a cache of the device table. As presence_check, but a session this
 * instance does not hold (signed in through another instance), or has not
 * seen confirmed by the database for PRESENCE_RECHECK_MS, is looked up in
 * the device table on db (the caller's read connection; device->session):
 * online there with the same user and gateway, it is cached and served;
 * else a cached copy is dropped (a sign-out or kick committed at another
 * instance) and the answer is GIM_EUNAUTH. So a session ended elsewhere is
 * served here for at most PRESENCE_RECHECK_MS more. With the database
 * away, a cached session is served (the request itself then fails at the
 * database) and an unknown one gets GIM_EUNAVAILABLE, not GIM_EUNAUTH: the
 * client must not sign in again.
 * Unlike presence_put's other callers, any thread calls this.
 */
#define PRESENCE_RECHECK_MS 1000
gim_err presence_check_shared(struct presence *p, struct store_conn *db, int64_t user_id,
                              int64_t device_id, const char *gateway_id, int64_t now_ms,
                              struct session *out);

/* Sets the room of a signed-in device; false if it has no session. */
bool presence_set_room(struct presence *p, int64_t device_id, int64_t room_id);

/*
 * Copies up to max sessions of user_id into out; returns how many the user has
 * (which may exceed max).
 */
size_t presence_user_sessions(struct presence *p, int64_t user_id, struct session *out, size_t max);

/* Like presence_user_sessions, for the devices subscribed to room_id. */
size_t presence_room_sessions(struct presence *p, int64_t room_id, struct session *out, size_t max);

/*
 * Device ids of up to max sessions seen (own request or gateway lease) before
 * cutoff_ms; returns the count copied. Also forgets the leases older than
 * cutoff_ms of gateways that hold no session.
 */
size_t presence_expired(struct presence *p, int64_t cutoff_ms, int64_t *device_ids, size_t max);

/*
 * PostgreSQL (maint.c writes them to the device table, so the instance that
 * sweeps sees every instance's traffic): copies up to max sessions whose
 * own last request (not their gateway's lease) is at or after since_ms,
 * their device ids into ids and those times into seen; returns how many
 * there are (which may exceed max).
 */
size_t presence_active(struct presence *p, int64_t since_ms, int64_t *ids, int64_t *seen,
                       size_t max);

/*
 * Likewise for gateway leases: up to max gateways whose last lease is at or
 * after since_ms, their ids into gw and lease times into at; returns how
 * many there are.
 */
size_t presence_leased(struct presence *p, int64_t since_ms, char (*gw)[PRESENCE_GATEWAY_MAX + 1],
                       int64_t *at, size_t max);

/*
 * A lease from gateway_id: when presence already holds its lease for exactly
 * boot_id, refreshes it to now_ms and returns true (any thread). false: the
 * gateway is unknown here or its boot_id differs; the writer must compare
 * with the stored boot and then call presence_lease_set().
 */
bool presence_lease_refresh(struct presence *p, const char *gateway_id, int64_t boot_id,
                            int64_t now_ms);

/* Records gateway_id's lease (boot_id, at now_ms). Writer thread, after the commit. */
gim_err presence_lease_set(struct presence *p, const char *gateway_id, int64_t boot_id,
                           int64_t now_ms);

/* Removes every session at gateway_id (its process restarted); returns how many. Writer thread. */
size_t presence_gateway_remove(struct presence *p, const char *gateway_id);

/* Copies the session of device_id into *out; false if it has none. */
bool presence_get(struct presence *p, int64_t device_id, struct session *out);

/* Number of sessions, and of those subscribed to a room. */
void presence_counts(struct presence *p, size_t *sessions, size_t *in_rooms);

#endif
