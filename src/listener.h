/*
 * listener: the nng listeners of one socket, watched so that they come back
 * after nng 1.5.2 stops one.
 *
 * Debian 12's nng 1.5.2 has a bug (nng issue #1518, fixed in 1.6.0): when a
 * client hangs up during the SP handshake and our header write fails with
 * EPIPE, the transport reports NNG_ECLOSED to the listener, which takes it
 * for its own close and never accepts again. Later connections are
 * negotiated and then wait, unread, forever (and nng's epoll thread spins on
 * their hang-ups): one gateway that gives up at the wrong moment, or a port
 * scan, and the service stops answering while it looks healthy (issue 11,
 * scenario 9: the integration tests' start-up probe hit it on a busy machine).
 *
 * A watchdog thread reads each listener's "other" error count (nng's stats;
 * that failure is counted there, with other handshakes cut short) every
 * second; when it moved, it dials the listener from a socket of the peer
 * protocol and waits up to a second for the socket to add a pipe from that
 * listener. A listener that accepts nothing in two tries is closed (its
 * connections drop; clients redial, and idempotency makes resends safe) and
 * opened again on its URL. tls+tcp:// listeners are not dialed (we hold no
 * client certificate), so there the bug remains.
 *
 * Ownership: listeners_start's *out is the caller's, also after a failure;
 * listeners_stop() stops the watchdog and frees it, and must come after the
 * socket is closed (nng calls the pipe callback until then; the listeners
 * themselves close with the socket). The URL strings and the TLS config must
 * outlive it.
 */
#ifndef GIM_LISTENER_H
#define GIM_LISTENER_H

#include <nng/nng.h>
#include <nng/supplemental/tls/tls.h>
#include <stddef.h>

#include "err.h"

struct listeners;

/*
 * Listens on urls[0..n) with sock (logging each URL) and starts the
 * watchdog. tls is used by tls+tcp:// URLs (NULL when there is none).
 * peer_open opens a socket of the protocol that dials sock (nng_req0_open for
 * a REP socket), for the watchdog's own dial. Registers sock's
 * NNG_PIPE_EV_ADD_POST callback. On failure errbuf names the URL, and *out
 * is still set (see above).
 */
gim_err listeners_start(struct listeners **out, nng_socket sock, char *const *urls, unsigned n,
                        nng_tls_config *tls, int (*peer_open)(nng_socket *), char *errbuf,
                        size_t errlen);

/*
 * Stops the watchdog (waits for a check in progress); before the socket's
 * close. A watchdog still running while the socket closed saw its listeners
 * vanish from the statistics, took that for failed handshakes and dialed
 * the closing listener; the shutdown then closed that probe mid-handshake,
 * which leaks the probe's dialer and pipe in nng 1.5.2 (an ASan exit
 * failure of tests that stop the service). Idempotent; NULL is fine.
 */
void listeners_halt(struct listeners *ls);

/* Stops the watchdog if still running and frees ls, after the socket's close; NULL is fine. */
void listeners_stop(struct listeners *ls);

/* How many of the URLs are listening now (a restart that failed does not count). */
int listeners_bound(const struct listeners *ls);

#endif
