#include "scheduling.h"

#include <pthread.h>
#include <sched.h>
#include <string.h>

#include "log.h"

/* Sets the calling thread's policy, priority 0; logs what was refused. */
static void set_policy(int policy, const char *refused)
{
    struct sched_param none = {.sched_priority = 0};
    int rc = pthread_setschedparam(pthread_self(), policy, &none);
    if (rc != 0)
        log_warn(refused, "err=%s", strerror(rc));
}

void scheduling_apply_process(const struct gim_config *cfg)
{
    if (strcmp(cfg->scheduling, "batch") == 0)
        set_policy(SCHED_BATCH, "scheduling: batch not applied, running as normal");
}

void scheduling_apply_serial(const struct gim_config *cfg)
{
    if (strcmp(cfg->scheduling, "batch") == 0)
        set_policy(SCHED_OTHER, "scheduling: a serial stage stays SCHED_BATCH");
}
