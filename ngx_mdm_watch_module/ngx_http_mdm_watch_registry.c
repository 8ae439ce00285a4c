
/*
 * Copyright (C) The ngx_mdm_watch_module authors
 */


#include "ngx_http_mdm_watch.h"


/*
 * The registry of enrolled devices is learned from the check-ins the
 * module passes to the MDM server: an Authenticate or TokenUpdate the
 * server accepts records the device and the certificate it signs with,
 * a CheckOut it accepts removes the device and follows its pairs.  The
 * records are written after the server's answer has been seen, in the
 * header filter, without delaying or changing that answer.
 */


static void ngx_http_mdm_watch_paired_reply(ngx_http_request_t *r,
    ngx_http_mdm_watch_ctx_t *ctx, redisReply *reply);
static ngx_int_t ngx_http_mdm_watch_header_filter(ngx_http_request_t *r);
static void ngx_http_mdm_watch_record(ngx_http_request_t *r,
    ngx_http_mdm_watch_ctx_t *ctx);
static void ngx_http_mdm_watch_record_reply(ngx_str_t *udid,
    redisReply *reply);
static void ngx_http_mdm_watch_check_out(ngx_http_request_t *r,
    ngx_http_mdm_watch_ctx_t *ctx);
static void ngx_http_mdm_watch_check_out_reply(ngx_str_t *udid,
    redisReply *reply);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;


/*
 * Authenticate starts an enrollment: the record is replaced.  A later
 * TokenUpdate may add a certificate to a record without one, but may not
 * replace the certificate on record, nor remove it by being unsigned.
 * 1: recorded, 2: unsigned, record kept, -1: another certificate
 */

static char  ngx_http_mdm_watch_record_script[] =
    "if ARGV[5] == 'Authenticate' then "
        "redis.call('DEL', KEYS[1]) "
    "else "
        "local cur = redis.call('HGET', KEYS[1], 'identity') "
        "if cur and cur ~= '' then "
            "if ARGV[2] == '' then return 2 end "
            "if cur ~= ARGV[2] then return -1 end "
        "end "
    "end "
    "redis.call('HSETNX', KEYS[1], 'enrolled_at', ARGV[4]) "
    "redis.call('HSET', KEYS[1], 'udid', ARGV[1], 'identity', ARGV[2], "
        "'identity_source', ARGV[3], 'message', ARGV[5]) "
    "return 1";


/*
 * the watches of a device that checks out, for $mdm_watch_paired_udids:
 * how many there are, then the first ARGV[1] of them in byte order;
 * only members shaped as the module writes UDIDs, in upper case, count
 */

static char  ngx_http_mdm_watch_paired_script[] =
    "local ws = redis.call('SMEMBERS', KEYS[1]) "
    "local out = {0} "
    "table.sort(ws) "
    "for _, w in ipairs(ws) do "
        "if #w > 0 and #w <= 64 and not string.find(w, '[^%u%d%-]') then "
            "out[1] = out[1] + 1 "
            "if #out <= tonumber(ARGV[1]) then out[#out + 1] = w end "
        "end "
    "end "
    "return out";


/*
 * a device checked out: its record and the phone check's answer about it
 * go; a watch leaves its pair, its phone's set and the indexes of pairs;
 * a phone's watches are marked unpaired; the number of watches marked is
 * returned.  A device with a certificate on record checks out only by a
 * message it signed: -1 otherwise, and nothing changes.
 */

static char  ngx_http_mdm_watch_check_out_script[] =
    NGX_HTTP_MDM_WATCH_LUA_UNINDEX_SERIAL
    "local id = redis.call('HGET', KEYS[1], 'identity') "
    "if id and id ~= '' and id ~= ARGV[4] then return -1 end "
    "redis.call('DEL', KEYS[1], KEYS[4]) "
    "local phone = redis.call('HGET', KEYS[2], 'phone_udid') "
    "if phone then "
        "redis.call('SREM', ARGV[2] .. phone, ARGV[1]) "
        "unindex_serial(KEYS[2], ARGV[1], ARGV[6]) "
        "redis.call('ZREM', ARGV[5], ARGV[1]) "
        "redis.call('DEL', KEYS[2]) "
    "end "
    "local n = 0 "
    "for _, watch in ipairs(redis.call('SMEMBERS', KEYS[3])) do "
        "if redis.call('HGET', ARGV[3] .. watch, 'phone_udid') == ARGV[1] "
        "then "
            "redis.call('HSET', ARGV[3] .. watch, 'state', 'unpaired') "
            "n = n + 1 "
        "end "
    "end "
    "redis.call('DEL', KEYS[3]) "
    "return n";


/*
 * who sent a check-in: the signer of a valid Mdm-Signature, else the
 * client certificate nginx verified, else nobody known; NGX_DECLINED:
 * a Mdm-Signature that does not verify
 */

ngx_int_t
ngx_http_mdm_watch_sender(ngx_http_request_t *r,
    ngx_http_mdm_watch_ctx_t *ctx, ngx_str_t *body)
{
    ngx_int_t         rc;
    ngx_str_t         name;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h, *signature;
    ngx_uint_t        i;

    ngx_str_set(&name, "Mdm-Signature");

    signature = NULL;
    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == name.len
            && ngx_strncasecmp(h[i].key.data, name.data, name.len) == 0)
        {
            if (signature) {
                ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                              "mdm watch: more than one Mdm-Signature");
                return NGX_DECLINED;
            }

            signature = &h[i];
        }
    }

    if (signature) {
        rc = ngx_http_mdm_watch_mdm_signature(r->pool, r->connection->log,
                                              &signature->value, body,
                                              &ctx->identity);
        if (rc != NGX_OK) {
            return rc;
        }

        ngx_str_set(&ctx->identity_source, "mdm-signature");
        return NGX_OK;
    }

    rc = ngx_http_mdm_watch_client_identity(r, &ctx->identity);

    if (rc == NGX_OK) {
        ngx_str_set(&ctx->identity_source, "tls-client-certificate");
        return NGX_OK;
    }

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    ngx_str_set(&ctx->identity, "");
    ngx_str_set(&ctx->identity_source, "none");

    return NGX_OK;
}


/*
 * Authenticate, TokenUpdate and CheckOut are passed to the MDM server,
 * and remembered to be recorded if it accepts them; a CheckOut first
 * looks up the watches paired with the device, for the operator to pass
 * them on with $mdm_watch_paired_udids
 */

ngx_int_t
ngx_http_mdm_watch_registry_checkin(ngx_http_request_t *r,
    ngx_http_mdm_watch_ctx_t *ctx, ngx_str_t *body)
{
    size_t         argvlen[5];
    ngx_int_t      rc;
    ngx_str_t      key;
    const char    *argv[5];

    if (ctx->checkin.udid.data == NULL
        || ngx_http_mdm_watch_udid_canonical(r->pool, &ctx->checkin.udid,
                                             &ctx->device)
           != NGX_OK)
    {
        /* a user channel or a malformed UDID: not a device to record */
        return NGX_DECLINED;
    }

    rc = ngx_http_mdm_watch_sender(r, ctx, body);

    if (rc == NGX_OK) {
        ctx->record = 1;

    } else if (rc == NGX_DECLINED) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "mdm watch: %V from \"%V\" has a Mdm-Signature "
                      "that does not verify, not recorded",
                      &ctx->message_type, &ctx->device);
    }

    if (!ngx_http_mdm_watch_str_eq(&ctx->message_type, "CheckOut")) {
        return NGX_DECLINED;
    }

    if (ngx_http_mdm_watch_key(r->pool, NGX_HTTP_MDM_WATCH_KEY_PHONE,
                               &ctx->device, &key)
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    argv[0] = "EVAL";
    argvlen[0] = sizeof("EVAL") - 1;
    argv[1] = ngx_http_mdm_watch_paired_script;
    argvlen[1] = sizeof(ngx_http_mdm_watch_paired_script) - 1;
    argv[2] = "1";
    argvlen[2] = 1;
    argv[3] = (char *) key.data;
    argvlen[3] = key.len;
    argv[4] = NGX_HTTP_MDM_WATCH_PAIRED_MAX_TEXT;
    argvlen[4] = sizeof(NGX_HTTP_MDM_WATCH_PAIRED_MAX_TEXT) - 1;

    rc = ngx_http_mdm_watch_redis_command(r, ctx,
                                          ngx_http_mdm_watch_paired_reply,
                                          5, argv, argvlen);

    /* a CheckOut is never refused: without Redis it goes on as it is */

    return (rc == NGX_OK) ? NGX_DONE : NGX_DECLINED;
}


static void
ngx_http_mdm_watch_paired_reply(ngx_http_request_t *r,
    ngx_http_mdm_watch_ctx_t *ctx, redisReply *reply)
{
    u_char      *p;
    size_t       len, i;
    redisReply  *e;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements == 0
        || reply->element[0]->type != REDIS_REPLY_INTEGER)
    {
        ngx_http_mdm_watch_finalize(r, ctx, NGX_DECLINED);
        return;
    }

    if (reply->element[0]->integer > (long long) reply->elements - 1) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "mdm watch: CheckOut of \"%V\", paired with %L "
                      "watches: $mdm_watch_paired_udids names the first %uz",
                      &ctx->device, (int64_t) reply->element[0]->integer,
                      reply->elements - 1);
    }

    len = 0;

    for (i = 1; i < reply->elements; i++) {
        e = reply->element[i];

        if (e->type != REDIS_REPLY_STRING) {
            ngx_http_mdm_watch_finalize(r, ctx, NGX_DECLINED);
            return;
        }

        len += e->len + 1;
    }

    if (len == 0) {
        ngx_http_mdm_watch_finalize(r, ctx, NGX_DECLINED);
        return;
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        ngx_http_mdm_watch_finalize(r, ctx, NGX_DECLINED);
        return;
    }

    ctx->paired_udids.data = p;

    for (i = 1; i < reply->elements; i++) {
        e = reply->element[i];

        if (i > 1) {
            *p++ = ',';
        }

        p = ngx_cpymem(p, e->str, e->len);
    }

    ctx->paired_udids.len = p - ctx->paired_udids.data;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "mdm watch checkout of \"%V\": paired \"%V\"",
                   &ctx->device, &ctx->paired_udids);

    ngx_http_mdm_watch_finalize(r, ctx, NGX_DECLINED);
}


ngx_int_t
ngx_http_mdm_watch_registry_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_mdm_watch_header_filter;

    return NGX_OK;
}


static ngx_int_t
ngx_http_mdm_watch_header_filter(ngx_http_request_t *r)
{
    ngx_http_mdm_watch_ctx_t  *ctx;

    if (r != r->main) {
        return ngx_http_next_header_filter(r);
    }

    ctx = ngx_http_get_module_ctx(r, ngx_mdm_watch_module);

    if (ctx == NULL || !ctx->record) {
        return ngx_http_next_header_filter(r);
    }

    ctx->record = 0;

    if (r->headers_out.status < 200 || r->headers_out.status > 299) {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "mdm watch: %V of \"%V\" not accepted, not recorded",
                       &ctx->message_type, &ctx->device);
        return ngx_http_next_header_filter(r);
    }

    if (ngx_http_mdm_watch_str_eq(&ctx->message_type, "CheckOut")) {
        ngx_http_mdm_watch_check_out(r, ctx);

    } else {
        ngx_http_mdm_watch_record(r, ctx);
    }

    return ngx_http_next_header_filter(r);
}


static void
ngx_http_mdm_watch_record(ngx_http_request_t *r, ngx_http_mdm_watch_ctx_t *ctx)
{
    size_t       argvlen[9];
    ngx_str_t    key, now;
    const char  *argv[9];

    if (ngx_http_mdm_watch_key(r->pool, NGX_HTTP_MDM_WATCH_KEY_DEVICE,
                               &ctx->device, &key)
        != NGX_OK)
    {
        return;
    }

    if (ngx_http_mdm_watch_seconds(r->pool, ngx_time(), &now) != NGX_OK) {
        return;
    }

    argv[0] = "EVAL";
    argvlen[0] = sizeof("EVAL") - 1;
    argv[1] = ngx_http_mdm_watch_record_script;
    argvlen[1] = sizeof(ngx_http_mdm_watch_record_script) - 1;
    argv[2] = "1";
    argvlen[2] = 1;
    argv[3] = (char *) key.data;
    argvlen[3] = key.len;
    argv[4] = (char *) ctx->device.data;
    argvlen[4] = ctx->device.len;
    argv[5] = (char *) ctx->identity.data;
    argvlen[5] = ctx->identity.len;
    argv[6] = (char *) ctx->identity_source.data;
    argvlen[6] = ctx->identity_source.len;
    argv[7] = (char *) now.data;
    argvlen[7] = now.len;
    argv[8] = (char *) ctx->message_type.data;
    argvlen[8] = ctx->message_type.len;

    (void) ngx_http_mdm_watch_redis_background(r->connection->log,
                                          ngx_http_mdm_watch_record_reply,
                                          &ctx->device, 9, argv, argvlen);
}


static void
ngx_http_mdm_watch_record_reply(ngx_str_t *udid, redisReply *reply)
{
    if (reply->type != REDIS_REPLY_INTEGER) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "mdm watch: unexpected redis reply of type %d "
                      "to recording device \"%V\"", reply->type, udid);
        return;
    }

    if (reply->integer == -1) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "mdm watch: TokenUpdate of device \"%V\" signed by "
                      "another certificate than the one on record, "
                      "not recorded", udid);
        return;
    }

    if (reply->integer == 2) {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "mdm watch: TokenUpdate of device \"%V\" unsigned, "
                      "its record and certificate kept unchanged", udid);
        return;
    }

    ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                  "mdm watch: device \"%V\" recorded as enrolled", udid);
}


static void
ngx_http_mdm_watch_check_out(ngx_http_request_t *r,
    ngx_http_mdm_watch_ctx_t *ctx)
{
    size_t       argvlen[13];
    ngx_str_t    device_key, pair_key, phone_key, check_key;
    const char  *argv[13];

    if (ngx_http_mdm_watch_key(r->pool, NGX_HTTP_MDM_WATCH_KEY_DEVICE,
                               &ctx->device, &device_key)
        != NGX_OK
        || ngx_http_mdm_watch_key(r->pool, NGX_HTTP_MDM_WATCH_KEY_PAIR,
                                  &ctx->device, &pair_key)
           != NGX_OK
        || ngx_http_mdm_watch_key(r->pool, NGX_HTTP_MDM_WATCH_KEY_PHONE,
                                  &ctx->device, &phone_key)
           != NGX_OK
        || ngx_http_mdm_watch_key(r->pool,
                                  NGX_HTTP_MDM_WATCH_KEY_PHONE_CHECK,
                                  &ctx->device, &check_key)
           != NGX_OK)
    {
        return;
    }

    argv[0] = "EVAL";
    argvlen[0] = sizeof("EVAL") - 1;
    argv[1] = ngx_http_mdm_watch_check_out_script;
    argvlen[1] = sizeof(ngx_http_mdm_watch_check_out_script) - 1;
    argv[2] = "4";
    argvlen[2] = 1;
    argv[3] = (char *) device_key.data;
    argvlen[3] = device_key.len;
    argv[4] = (char *) pair_key.data;
    argvlen[4] = pair_key.len;
    argv[5] = (char *) phone_key.data;
    argvlen[5] = phone_key.len;
    argv[6] = (char *) check_key.data;
    argvlen[6] = check_key.len;
    argv[7] = (char *) ctx->device.data;
    argvlen[7] = ctx->device.len;
    argv[8] = NGX_HTTP_MDM_WATCH_KEY_PHONE;
    argvlen[8] = sizeof(NGX_HTTP_MDM_WATCH_KEY_PHONE) - 1;
    argv[9] = NGX_HTTP_MDM_WATCH_KEY_PAIR;
    argvlen[9] = sizeof(NGX_HTTP_MDM_WATCH_KEY_PAIR) - 1;
    argv[10] = (char *) ctx->identity.data;
    argvlen[10] = ctx->identity.len;
    argv[11] = NGX_HTTP_MDM_WATCH_KEY_PAIRS;
    argvlen[11] = sizeof(NGX_HTTP_MDM_WATCH_KEY_PAIRS) - 1;
    argv[12] = NGX_HTTP_MDM_WATCH_KEY_SERIAL;
    argvlen[12] = sizeof(NGX_HTTP_MDM_WATCH_KEY_SERIAL) - 1;

    (void) ngx_http_mdm_watch_redis_background(r->connection->log,
                                          ngx_http_mdm_watch_check_out_reply,
                                          &ctx->device, 13, argv, argvlen);
}


static void
ngx_http_mdm_watch_check_out_reply(ngx_str_t *udid, redisReply *reply)
{
    if (reply->type != REDIS_REPLY_INTEGER) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "mdm watch: unexpected redis reply of type %d "
                      "to the check-out of device \"%V\"", reply->type, udid);
        return;
    }

    if (reply->integer < 0) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "mdm watch: CheckOut of device \"%V\" not signed by "
                      "the certificate on record, not followed", udid);
        return;
    }

    ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                  "mdm watch: device \"%V\" checked out, %L watches marked "
                  "unpaired", udid, (int64_t) reply->integer);
}
