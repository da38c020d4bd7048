#include "dispatch.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "config.h"
#include "handlers.h"
#include "log.h"
#include "metrics.h"
#include "storage.h"

/* Indexed by PackageType; NULL = not served. */
static const struct handler *const table[] = {
    [PB__PACKAGE_TYPE__PT_SIGN_IN] = &handle_signin,
    [PB__PACKAGE_TYPE__PT_SYNC] = &handle_sync,
    [PB__PACKAGE_TYPE__PT_HEARTBEAT] = &handle_heartbeat,
    [PB__PACKAGE_TYPE__PT_MESSAGE] = &handle_message,
    [PB__PACKAGE_TYPE__PT_SUBSCRIBE_ROOM] = &handle_subscribe_room,
    [PB__PACKAGE_TYPE__PT_MESSAGE_ACK] = &handle_message_ack,
    [PB__PACKAGE_TYPE__PT_RECALL] = &handle_recall,
    [PB__PACKAGE_TYPE__PT_SIGN_OUT] = &handle_signout,
    [PB__PACKAGE_TYPE__PT_ADMIN_RECALL] = &handle_admin_recall,
    [PB__PACKAGE_TYPE__PT_GATEWAY_LEASE] = &handle_gateway_lease,
    [PB__PACKAGE_TYPE__PT_ADMIN_KICK] = &handle_admin_kick,
    [PB__PACKAGE_TYPE__PT_ADMIN_ERASE] = &handle_admin_erase,
    [PB__PACKAGE_TYPE__PT_ADMIN_GROUP_CREATE] = &handle_admin_group_create,
    [PB__PACKAGE_TYPE__PT_ADMIN_GROUP_UPDATE] = &handle_admin_group_update,
    [PB__PACKAGE_TYPE__PT_ADMIN_GROUP_DISSOLVE] = &handle_admin_group_dissolve,
    [PB__PACKAGE_TYPE__PT_ADMIN_GROUP_ADD_MEMBERS] = &handle_admin_group_add,
    [PB__PACKAGE_TYPE__PT_ADMIN_GROUP_REMOVE_MEMBERS] = &handle_admin_group_remove,
    [PB__PACKAGE_TYPE__PT_ADMIN_GROUP_SET_ROLE] = &handle_admin_group_role,
    [PB__PACKAGE_TYPE__PT_ADMIN_GROUP_GET] = &handle_admin_group_get,
    [PB__PACKAGE_TYPE__PT_ADMIN_GROUP_MEMBERS] = &handle_admin_group_members,
    [PB__PACKAGE_TYPE__PT_ADMIN_SEND] = &handle_admin_send,
};

const struct handler *dispatch_handler(int type)
{
    if (type < 0 || (size_t)type >= sizeof table / sizeof table[0])
        return NULL;
    return table[type];
}

#define job_request(j) ((struct request *)((char *)(j)-offsetof(struct request, job)))

static gim_err job_exec(struct write_job *job, struct wctx *w)
{
    struct request *r = job_request(job);
    gim_err e = r->h->write(r, w);
    if (e != GIM_OK && r->code == GIM_OK)
        request_fail(r, e, "%s", gim_err_name(e));
    return e;
}

/* Before a write runs again (a retried PostgreSQL batch): its last reply and error go. */
static void job_reset(struct write_job *job)
{
    struct request *r = job_request(job);
    r->code = GIM_OK;
    r->errmsg[0] = 0;
    free(r->out);
    r->out = NULL;
    r->out_len = 0;
}

static gim_err job_locks(struct write_job *job, struct wctx *w, struct writer_locks *l)
{
    struct request *r = job_request(job);
    return r->h->locks(r, w, l);
}

static void job_done(struct write_job *job, struct wctx *w, gim_err err)
{
    struct request *r = job_request(job);
    if (err == GIM_OK) {
        if (r->h->committed)
            r->h->committed(r, w);
    } else if (r->code == GIM_OK || err != r->code) {
        /* The batch failed around this request: its own work was rolled back too. */
        request_fail(
            r, err, err == GIM_EUNAVAILABLE ? "database unavailable, retry later" : "write failed");
        free(r->out);
        r->out = NULL;
        r->out_len = 0;
    }
    r->disp->write_done(r);
}

/*
 * gim's seed-era clients ack with PT_MESSAGE and a pb.MessageACK as data (its
 * connect layer forwarded that to logic as an ack, with no reply). The two
 * forms cannot be confused: a send's MessageSend has only field 1 (message),
 * while MessageACK has only fields 2 (device_ack) and 3 (receive_time). So a
 * PT_MESSAGE whose data has no field 1 but has field 2 or 3 is an ack, served
 * by the PT_MESSAGE_ACK handler. Field 3 counts too: proto3 omits a zero
 * device_ack, and a seed client whose first sync was empty acks seq 0.
 * Anything else (field 1 present, empty data, only unknown fields) stays a
 * send, and the send handler answers it as before.
 */
static bool seed_ack_form(const ProtobufCBinaryData *data)
{
    bool ack = false;
    if (data->len == 0)
        return false;
    Pb__MessageSend *ms = pb__message_send__unpack(NULL, data->len, data->data);
    if (!ms)
        return false; /* undecodable: the send handler says why */
    for (unsigned i = 0; !ms->message && i < ms->base.n_unknown_fields; i++)
        if (ms->base.unknown_fields[i].tag == 2 || ms->base.unknown_fields[i].tag == 3)
            ack = true;
    pb__message_send__free_unpacked(ms, NULL);
    return ack;
}

/* Decodes the envelope; on failure r->code says why and request_id is echoed if readable. */
static gim_err decode(struct request *r, const uint8_t *buf, size_t len)
{
    r->env = pb__gateway_request__unpack(NULL, len, buf);
    if (!r->env)
        return request_fail(r, GIM_EBADREQ, "request is not a valid pb.GatewayRequest");
    if (!r->env->input)
        return request_fail(r, GIM_EBADREQ, "request has no input");
    r->type = r->env->input->type;
    r->request_id = r->env->input->request_id;
    r->client_addr = r->env->client_addr;
    /* Before authentication: the strings reach the device table, push topics, logs and replies. */
    return request_check_utf8(r, &r->env->base);
}

static gim_err authenticate(const struct dispatch *d, struct request *r, struct store_conn *ro)
{
    const Pb__GatewayRequest *env = r->env;
    int64_t now = gim_clock_now(&d->clock);
    /* Shared sessions (storage.h; PostgreSQL): a session another instance made is looked up on
     * ro. Without ro (in-process tests that read nothing), presence alone answers. */
    gim_err e = ro && storage(ro)->shared_sessions
                    ? presence_check_shared(d->presence, ro, env->user_id, env->device_id,
                                            env->gateway_id, now, &r->sess)
                    : presence_check(d->presence, env->user_id, env->device_id, env->gateway_id,
                                     now, &r->sess);
    if (e == GIM_EUNAVAILABLE)
        return request_fail(r, e, "database unavailable, retry later");
    if (e != GIM_OK)
        return request_fail(r, GIM_EUNAUTH, "no session for device %lld of user %lld at gateway %s",
                            (long long)env->device_id, (long long)env->user_id, env->gateway_id);
    return GIM_OK;
}

enum dispatch_next dispatch_begin(const struct dispatch *d, struct request *r, const uint8_t *buf,
                                  size_t len, struct store_conn *ro)
{
    r->cfg = d->cfg;
    r->start_ns = gim_clock_mono_ns();
    if (decode(r, buf, len) != GIM_OK) {
        metrics_rejected(d->metrics);
        return DISPATCH_REPLY;
    }
    const struct handler *h = dispatch_handler(r->type);
    /* Authentication comes first: an unknown type from a stranger is unauthenticated. */
    if ((!h || h->needs_session) && authenticate(d, r, ro) != GIM_OK)
        return DISPATCH_REPLY;
    if (!h) {
        request_fail(r, GIM_EBADREQ, "unknown package type %d", r->type);
        return DISPATCH_REPLY;
    }
    /* Both need a session, so authenticating as a send authenticated the ack. */
    if (h == &handle_message && seed_ack_form(&r->env->input->data))
        h = &handle_message_ack;
    r->h = h;
    r->disp = d;
    if (h->prepare && h->prepare(r) != GIM_OK) {
        if (r->code == GIM_OK)
            r->code = GIM_EINTERNAL;
        return DISPATCH_REPLY;
    }
    if (r->answered)
        return DISPATCH_REPLY;
    if (h->write) {
        r->job.exec = job_exec;
        r->job.done = job_done;
        r->job.reset = job_reset;
        r->job.locks = h->locks ? job_locks : NULL;
        return DISPATCH_WRITE;
    }
    if (h->read && h->read(r, ro) != GIM_OK && r->code == GIM_OK)
        r->code = GIM_EINTERNAL;
    return DISPATCH_REPLY;
}
