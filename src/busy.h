/*
 * busy: how a connection waits for a lock another connection holds, in a
 * way a stop can cut short.
 *
 * SQLite's busy_timeout sleeps in a loop nothing can interrupt (not even
 * sqlite3_interrupt), so a writer waiting on a lock held by the sqlite3 CLI
 * held up a stop for as long as database.busy_timeout_ms, up to 10 minutes.
 * busy_wait_handler() replaces busy_timeout on a connection (installed by
 * the storage layer: storage(c)->tx->wait_locks) with a handler that waits
 * the same total time on a condition variable, and
 * busy_wait_cancel() wakes every waiter and makes this and every later wait
 * give up at once. A wait that gives up fails its statement with
 * SQLITE_BUSY, exactly as a timeout does (EC_UNAVAILABLE, nothing written).
 *
 * Ownership: the caller owns struct busy_wait (busy_wait_init and
 * busy_wait_destroy), which must outlive every connection it is installed on.
 */
#ifndef GIM_BUSY_H
#define GIM_BUSY_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct busy_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* on CLOCK_MONOTONIC */
    uint32_t timeout_ms;
    bool cancelled;
};

void busy_wait_init(struct busy_wait *b, uint32_t timeout_ms);
void busy_wait_destroy(struct busy_wait *b);

/*
 * The busy handler (arg is a struct busy_wait; count: how many times it was
 * called in this wait, 0 at the start): nonzero = try the lock again after
 * the nap it took, 0 = give up (SQLITE_BUSY). The writer's connection gets it
 * through storage(c)->tx->wait_locks (storage.h).
 */
int busy_wait_handler(void *arg, int count);

/* Ends every wait in progress and every later one at once; cannot be undone. */
void busy_wait_cancel(struct busy_wait *b);

#endif
