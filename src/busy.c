#include "busy.h"

#include <time.h>

#include "clock.h"

/*
 * When the current wait began, per thread: a connection is used by one thread
 * at a time, and SQLite calls the handler on that thread with count 0 at the
 * start of each wait.
 */
static _Thread_local int64_t wait_start_ms;

/* SQLite's own back-off (sqliteDefaultBusyCallback): short sleeps first. */
static const uint8_t delays_ms[] = {1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100};

void busy_wait_init(struct busy_wait *b, uint32_t timeout_ms)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, &ca);
    pthread_condattr_destroy(&ca);
    b->timeout_ms = timeout_ms;
    b->cancelled = false;
}

void busy_wait_destroy(struct busy_wait *b)
{
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
}

int busy_wait_handler(void *arg, int count)
{
    struct busy_wait *b = arg;
    int64_t now = gim_clock_mono_ns() / 1000000;
    if (count == 0)
        wait_start_ms = now;
    int64_t left = wait_start_ms + b->timeout_ms - now;
    int64_t delay = delays_ms[count < (int)sizeof delays_ms ? count : (int)sizeof delays_ms - 1];
    if (delay > left)
        delay = left;
    int again = 0;
    pthread_mutex_lock(&b->mu);
    if (!b->cancelled && delay > 0) {
        int64_t until = now + delay;
        struct timespec ts = {(time_t)(until / 1000), (long)(until % 1000) * 1000000L};
        while (!b->cancelled && pthread_cond_timedwait(&b->cv, &b->mu, &ts) == 0)
            ;
        again = !b->cancelled;
    }
    pthread_mutex_unlock(&b->mu);
    return again;
}

void busy_wait_cancel(struct busy_wait *b)
{
    pthread_mutex_lock(&b->mu);
    b->cancelled = true;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}
