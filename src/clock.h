/*
 * clock: the wall clock that stamps messages, sessions and maintenance, in
 * a form tests can replace, and the monotonic clock that measures durations.
 *
 * Whatever is stored or compared with stored times (send_time, updated_at,
 * presence deadlines, the recall window) reads a struct gim_clock, so that a
 * test can move time without sleeping. Durations (request latency, a
 * stop's drain, log rate limits) read gim_clock_mono_ns(), which never jumps.
 */
#ifndef GIM_CLOCK_H
#define GIM_CLOCK_H

#include <stdint.h>

/* A wall clock in milliseconds since the epoch; now_ms NULL = the real one. */
struct gim_clock {
    int64_t (*now_ms)(void *arg);
    void *arg;
};

/* The real wall clock (CLOCK_REALTIME) in ms; arg is ignored (it fits gim_clock.now_ms). */
int64_t gim_clock_real_ms(void *arg);

/* c's time in ms. */
int64_t gim_clock_now(const struct gim_clock *c);

/* CLOCK_MONOTONIC in ns: for durations, never for stored times. */
int64_t gim_clock_mono_ns(void);

#endif
