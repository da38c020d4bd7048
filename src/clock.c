#include "clock.h"

#include <time.h>

int64_t gim_clock_real_ms(void *arg)
{
    (void)arg;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t gim_clock_now(const struct gim_clock *c)
{
    return c->now_ms ? c->now_ms(c->arg) : gim_clock_real_ms(NULL);
}

int64_t gim_clock_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
