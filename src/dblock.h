/*
 * dblock: one gim-logic per database file.
 *
 * Seqs are handed out from counters the writer keeps in memory (seq.h), so
 * a second gim-logic writing the same file breaks them: both hand out the
 * same seq (UNIQUE constraint failed: inbox.user_id, inbox.seq) and
 * overwrite each other's user_seq rows. SQLite's own locks cannot prevent
 * it: they serialize transactions, not processes. So gim-logic holds an
 * exclusive lock on a sidecar file, "<database.path>.lock", for its whole
 * life, and a second process refuses to start, naming the holder.
 *
 * The lock is an open-file-description fcntl lock (F_OFD_SETLK, Linux 3.15;
 * plain F_SETLK where that is missing) on the whole sidecar file: the
 * kernel drops it when the process dies in any way (kill -9 included), so
 * there is never a stale lock to clean up; the file itself stays. It is
 * advisory, so gimctl, gim-bench and the sqlite3 CLI, which never look at
 * it, keep working. It works between containers that share a volume (one
 * kernel), where the holder's pid is the one in its own container, hence
 * the host name beside it. Over NFS, fcntl locks go to the server's lock
 * manager; but SQLite's WAL mode needs shared memory on one host anyway,
 * so the database must not live on a network file system (docs/admin.md).
 *
 * Ownership: dblock_acquire's *out is the caller's; dblock_release() frees it.
 */
#ifndef GIM_DBLOCK_H
#define GIM_DBLOCK_H

#include <stddef.h>

#include "err.h"

struct dblock;

/*
 * Takes the lock of the database at db_path without waiting. GIM_OK: *out
 * holds it, and the sidecar file names this process (pid, host, start
 * time). GIM_ELOCKED: another process holds it; errbuf says which file and
 * which process. GIM_EIO: the sidecar file cannot be opened or locked;
 * errbuf says why.
 */
gim_err dblock_acquire(const char *db_path, struct dblock **out, char *errbuf, size_t errlen);

/* Releases the lock and frees l. NULL is a no-op. */
void dblock_release(struct dblock *l);

#endif
