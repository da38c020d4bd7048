/*
 * scheduling: the Linux scheduling policy of gim-logic's threads, the
 * `scheduling` config key.
 *
 * `batch` (the default): every thread of the process but the writer runs
 * under SCHED_BATCH. Such a thread, once woken, waits for the running one to
 * block or use up its slice instead of taking its CPU at once. A request
 * crosses several threads (nng's, a worker, the writer, nng's again), and
 * each hand-off used to preempt the thread that made it, on 2 cores mostly
 * the writer in the middle of a batch: with the policy the service's CPU per
 * send fell 8-23 % in every alternated pair, the writer went from one
 * preemption per send to one in 30, and near capacity the open loop's queue
 * stopped running away (docs/benchmarks.md, "Issue 15: SCHED_BATCH"). The
 * serial stages keep SCHED_OTHER: the writer and the thread that sends the
 * writes' replies (server.c) should run as soon as they are woken, every
 * send waits for both. `normal`: every thread SCHED_OTHER.
 *
 * Neither policy needs a privilege (the priority is 0). If the system
 * refuses one anyway (a seccomp filter), a warning is logged and the thread
 * runs as it was: nothing here can fail the start.
 */
#ifndef GIM_SCHEDULING_H
#define GIM_SCHEDULING_H

#include "config.h"

/*
 * Called by main on its own thread before any other thread exists: a thread
 * inherits the policy of the thread that creates it, and every thread of
 * gim-logic, nng's included, descends from main's.
 */
void scheduling_apply_process(const struct gim_config *cfg);

/*
 * Called by each serial stage on its own thread as it starts (the writer, and
 * the thread that sends the writes' replies, server.c): back to SCHED_OTHER
 * under `batch`.
 */
void scheduling_apply_serial(const struct gim_config *cfg);

#endif
