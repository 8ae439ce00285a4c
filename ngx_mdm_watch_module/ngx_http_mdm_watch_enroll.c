
/*
 * Copyright (C) The ngx_mdm_watch_module authors
 */


#include "ngx_http_mdm_watch.h"


/* machine info is about a kilobyte; its CMS envelope a few more */
#define NGX_HTTP_MDM_WATCH_ENROLL_BODY_MAX  (1024 * 1024)

/* security tokens kept alive per watch */
#define NGX_HTTP_MDM_WATCH_CHALLENGES       "4"


static void ngx_http_mdm_watch_enroll_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_mdm_watch_enroll(ngx_http_request_t *r,
    ngx_http_mdm_watch_ctx_t *ctx);
static ngx_int_t ngx_http_mdm_watch_check_token(ngx_http_request_t *r,
    ngx_http_mdm_watch_ctx_t *ctx);
static ngx_int_t ngx_http_mdm_watch_consume(ngx_http_request_t *r,
    ngx_http_mdm_watch_ctx_t *ctx);
static void ngx_http_mdm_watch_consume_reply(ngx_http_request_t *r,
    ngx_http_mdm_watch_ctx_t *ctx, redisReply *reply);
static ngx_int_t ngx_http_mdm_watch_challenge(ngx_http_request_t *r,
    ngx_http_mdm_watch_ctx_t *ctx);
static void ngx_http_mdm_watch_challenge_reply(ngx_http_request_t *r,
    ngx_http_mdm_watch_ctx_t *ctx, redisReply *reply);


/*
 * consumes a pairing token and records the pair it proves, atomically;
 * a watch paired again with another phone leaves the old phone's set;
 * the pair goes into the index of all pairs, and its serial, in upper
 * case, into the serial index, where it replaces its previous serial;
 * a serial longer than the pairs view looks up is kept in the pair only
 */

static char  ngx_http_mdm_watch_consume_script[] =
    NGX_HTTP_MDM_WATCH_LUA_UNINDEX_SERIAL
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end "
    "redis.call('DEL', KEYS[1]) "
    "local old = redis.call('HGET', KEYS[2], 'phone_udid') "
    "if old and old ~= ARGV[3] then "
        "redis.call('SREM', ARGV[9] .. old, ARGV[2]) "
    "end "
    "unindex_serial(KEYS[2], ARGV[2], ARGV[11]) "
    "redis.call('DEL', KEYS[2]) "
    "redis.call('HSET', KEYS[2], 'watch_udid', ARGV[2], "
        "'phone_udid', ARGV[3], 'serial', ARGV[4], 'product', ARGV[5], "
        "'version', ARGV[6], 'os_version', ARGV[7], 'paired_at', ARGV[8], "
        "'state', 'paired') "
    "redis.call('SADD', KEYS[3], ARGV[2]) "
    "redis.call('ZADD', ARGV[10], 0, ARGV[2]) "
    "if ARGV[4] ~= '' "
        "and #ARGV[4] <= " NGX_HTTP_MDM_WATCH_SERIAL_MAX_LUA " then "
        "redis.call('SET', ARGV[11] .. string.upper(ARGV[4]), ARGV[2]) "
    "end "
    "return 1";


/*
 * stores a new security token for the watch and keeps the last few
 * issued to it: older ones are dropped, so that a replayed machine info
 * cannot fill Redis, while a watch that asked twice may use either
 */

static char  ngx_http_mdm_watch_challenge_script[] =
    "redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) "
    "redis.call('LPUSH', KEYS[2], ARGV[4]) "
    "local old = redis.call('LRANGE', KEYS[2], "
        NGX_HTTP_MDM_WATCH_CHALLENGES ", -1) "
    "for _, token in ipairs(old) do "
        "redis.call('DEL', ARGV[3] .. token) "
    "end "
    "redis.call('LTRIM', KEYS[2], 0, " NGX_HTTP_MDM_WATCH_CHALLENGES " - 1) "
    "redis.call('EXPIRE', KEYS[2], ARGV[2]) "
    "return 1";


static ngx_str_t  ngx_http_mdm_watch_json_type =
    ngx_string("application/json");


ngx_int_t
ngx_http_mdm_watch_enroll_handler(ngx_http_request_t *r)
{
    ngx_int_t                  rc;
    ngx_http_mdm_watch_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_mdm_watch_module);

    if (ctx) {
        return ctx->status;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_mdm_watch_ctx_t));
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_str_set(&ctx->message_type, "MachineInfo");

    ngx_http_set_ctx(r, ctx, ngx_mdm_watch_module);

    if (!(r->method & (NGX_HTTP_POST|NGX_HTTP_PUT))) {
        ngx_http_mdm_watch_reject(r, ctx, NGX_HTTP_MDM_WATCH_REASON_METHOD);
        ctx->status = ngx_http_mdm_watch_not_allowed(r, "POST, PUT");
        return ctx->status;
    }

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "mdm watch enroll handler");

    ctx->status = NGX_DONE;

    rc = ngx_http_read_client_request_body(r,
                                      ngx_http_mdm_watch_enroll_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    ngx_http_finalize_request(r, NGX_DONE);
    return NGX_DONE;
}


static void
ngx_http_mdm_watch_enroll_body_handler(ngx_http_request_t *r)
{
    ngx_int_t                  rc;
    ngx_http_mdm_watch_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_mdm_watch_module);

    rc = ngx_http_mdm_watch_enroll(r, ctx);

    ngx_http_mdm_watch_finalize(r, ctx, rc);
}


static ngx_int_t
ngx_http_mdm_watch_enroll(ngx_http_request_t *r, ngx_http_mdm_watch_ctx_t *ctx)
{
    ngx_int_t                        rc;
    ngx_str_t                        body;
    X509_STORE                      *trusted;
    ngx_http_mdm_watch_main_conf_t  *mmcf;

    mmcf = ngx_http_get_module_main_conf(r, ngx_mdm_watch_module);

    rc = ngx_http_mdm_watch_read_body(r, &body,
                                      NGX_HTTP_MDM_WATCH_ENROLL_BODY_MAX);

    if (rc == NGX_DECLINED) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "mdm watch: machine info larger than %d bytes",
                      NGX_HTTP_MDM_WATCH_ENROLL_BODY_MAX);
        ngx_http_mdm_watch_reject(r, ctx,
                                  NGX_HTTP_MDM_WATCH_REASON_TOO_LARGE);
        return NGX_HTTP_REQUEST_ENTITY_TOO_LARGE;
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    trusted = mmcf->verify_machine_info ? mmcf->trusted : NULL;

    rc = ngx_http_mdm_watch_machine_info(r->pool, r->connection->log, &body,
                                         trusted, &ctx->machine_info);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc != NGX_OK) {
        ngx_http_mdm_watch_reject(r, ctx, ctx->machine_info.reason);
        return rc;
    }

    ctx->udid = ctx->machine_info.udid;

    if (ctx->machine_info.pairing_token.data == NULL) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "mdm watch enroll: watch \"%V\" has no pairing token",
                       &ctx->udid);

        return ngx_http_mdm_watch_challenge(r, ctx);
    }

    rc = ngx_http_mdm_watch_check_token(r, ctx);

    if (rc == NGX_DECLINED) {
        return ngx_http_mdm_watch_challenge(r, ctx);
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_mdm_watch_consume(r, ctx);
}


static ngx_int_t
ngx_http_mdm_watch_check_token(ngx_http_request_t *r,
    ngx_http_mdm_watch_ctx_t *ctx)
{
    ngx_int_t                            rc;
    ngx_http_mdm_watch_main_conf_t      *mmcf;
    ngx_http_mdm_watch_pairing_token_t  *pt;

    mmcf = ngx_http_get_module_main_conf(r, ngx_mdm_watch_module);
    pt = &ctx->pairing_token;

    rc = ngx_http_mdm_watch_pairing_token_parse(r->pool, &mmcf->secret,
                                        &ctx->machine_info.pairing_token, pt);

    if (rc == NGX_DECLINED) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "mdm watch: forged pairing token from watch \"%V\"",
                      &ctx->udid);
        ngx_http_mdm_watch_reject(r, ctx, NGX_HTTP_MDM_WATCH_REASON_BAD_TOKEN);
        return NGX_DECLINED;
    }

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    if (pt->expires < ngx_time()) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "mdm watch: pairing token from watch \"%V\" "
                      "expired %T s ago",
                      &ctx->udid, ngx_time() - pt->expires);
        ngx_http_mdm_watch_reject(r, ctx, NGX_HTTP_MDM_WATCH_REASON_BAD_TOKEN);
        return NGX_DECLINED;
    }

    if (pt->watch_udid.len != ctx->udid.len
        || ngx_strncmp(pt->watch_udid.data, ctx->udid.data, ctx->udid.len)
           != 0)
    {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "mdm watch: pairing token from watch \"%V\" "
                      "was issued for watch \"%V\"",
                      &ctx->udid, &pt->watch_udid);
        ngx_http_mdm_watch_reject(r, ctx,
                                  NGX_HTTP_MDM_WATCH_REASON_UDID_MISMATCH);
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_mdm_watch_consume(ngx_http_request_t *r,
    ngx_http_mdm_watch_ctx_t *ctx)
{
    size_t                               argvlen[17];
    ngx_str_t                            token_key, pair_key, phone_key;
    ngx_str_t                            value, paired_at;
    const char                          *argv[17];
    ngx_http_mdm_watch_machine_info_t   *mi;
    ngx_http_mdm_watch_pairing_token_t  *pt;

    mi = &ctx->machine_info;
    pt = &ctx->pairing_token;

    if (ngx_http_mdm_watch_key(r->pool, NGX_HTTP_MDM_WATCH_KEY_PAIRING_TOKEN,
                               &pt->id, &token_key)
        != NGX_OK
        || ngx_http_mdm_watch_key(r->pool, NGX_HTTP_MDM_WATCH_KEY_PAIR,
                                  &pt->watch_udid, &pair_key)
           != NGX_OK
        || ngx_http_mdm_watch_key(r->pool, NGX_HTTP_MDM_WATCH_KEY_PHONE,
                                  &pt->phone_udid, &phone_key)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_mdm_watch_pairing_token_record(r->pool, pt, &value)
        != NGX_OK
        || ngx_http_mdm_watch_seconds(r->pool, ngx_time(), &paired_at)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    argv[0] = "EVAL";
    argvlen[0] = sizeof("EVAL") - 1;
    argv[1] = ngx_http_mdm_watch_consume_script;
    argvlen[1] = sizeof(ngx_http_mdm_watch_consume_script) - 1;
    argv[2] = "3";
    argvlen[2] = 1;

    argv[3] = (char *) token_key.data;
    argvlen[3] = token_key.len;
    argv[4] = (char *) pair_key.data;
    argvlen[4] = pair_key.len;
    argv[5] = (char *) phone_key.data;
    argvlen[5] = phone_key.len;

    argv[6] = (char *) value.data;
    argvlen[6] = value.len;
    argv[7] = (char *) pt->watch_udid.data;
    argvlen[7] = pt->watch_udid.len;
    argv[8] = (char *) pt->phone_udid.data;
    argvlen[8] = pt->phone_udid.len;
    argv[9] = (char *) mi->serial.data;
    argvlen[9] = mi->serial.len;
    argv[10] = (char *) mi->product.data;
    argvlen[10] = mi->product.len;
    argv[11] = (char *) mi->version.data;
    argvlen[11] = mi->version.len;
    argv[12] = (char *) mi->os_version.data;
    argvlen[12] = mi->os_version.len;
    argv[13] = (char *) paired_at.data;
    argvlen[13] = paired_at.len;
    argv[14] = NGX_HTTP_MDM_WATCH_KEY_PHONE;
    argvlen[14] = sizeof(NGX_HTTP_MDM_WATCH_KEY_PHONE) - 1;
    argv[15] = NGX_HTTP_MDM_WATCH_KEY_PAIRS;
    argvlen[15] = sizeof(NGX_HTTP_MDM_WATCH_KEY_PAIRS) - 1;
    argv[16] = NGX_HTTP_MDM_WATCH_KEY_SERIAL;
    argvlen[16] = sizeof(NGX_HTTP_MDM_WATCH_KEY_SERIAL) - 1;

    return ngx_http_mdm_watch_redis_call(r, ctx,
                                         ngx_http_mdm_watch_consume_reply,
                                         17, argv, argvlen);
}


static void
ngx_http_mdm_watch_consume_reply(ngx_http_request_t *r,
    ngx_http_mdm_watch_ctx_t *ctx, redisReply *reply)
{
    ngx_int_t  rc;

    if (reply == NULL) {
        rc = ngx_http_mdm_watch_unavailable(r);

    } else if (reply->type != REDIS_REPLY_INTEGER) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "mdm watch: unexpected redis reply of type %d "
                      "to pairing token consumption", reply->type);
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;

    } else if (reply->integer == 1) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "mdm watch: watch \"%V\" paired with phone \"%V\"",
                      &ctx->udid, &ctx->pairing_token.phone_udid);

        ctx->phone_udid = ctx->pairing_token.phone_udid;
        ctx->action = NGX_HTTP_MDM_WATCH_ACTION_PAIRED;
        ngx_http_mdm_watch_count(paired);
        rc = NGX_DECLINED;

    } else {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "mdm watch: pairing token from watch \"%V\" "
                      "was already used", &ctx->udid);
        ngx_http_mdm_watch_reject(r, ctx, NGX_HTTP_MDM_WATCH_REASON_REPLAYED);
        rc = ngx_http_mdm_watch_challenge(r, ctx);
    }

    ngx_http_mdm_watch_finalize(r, ctx, rc);
}


static ngx_int_t
ngx_http_mdm_watch_challenge(ngx_http_request_t *r,
    ngx_http_mdm_watch_ctx_t *ctx)
{
    u_char                          *p;
    size_t                           argvlen[9];
    ngx_str_t                        key, watch_key;
    const char                      *argv[9];
    ngx_http_mdm_watch_main_conf_t  *mmcf;

    mmcf = ngx_http_get_module_main_conf(r, ngx_mdm_watch_module);

    p = ngx_pnalloc(r->pool, NGX_HTTP_MDM_WATCH_SECURITY_TOKEN_LEN);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_mdm_watch_security_token_create(p) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->security_token.data = p;
    ctx->security_token.len = NGX_HTTP_MDM_WATCH_SECURITY_TOKEN_LEN;

    if (ngx_http_mdm_watch_key(r->pool, NGX_HTTP_MDM_WATCH_KEY_SECURITY_TOKEN,
                               &ctx->security_token, &key)
        != NGX_OK
        || ngx_http_mdm_watch_key(r->pool, NGX_HTTP_MDM_WATCH_KEY_CHALLENGES,
                                  &ctx->udid, &watch_key)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    argv[0] = "EVAL";
    argvlen[0] = sizeof("EVAL") - 1;
    argv[1] = ngx_http_mdm_watch_challenge_script;
    argvlen[1] = sizeof(ngx_http_mdm_watch_challenge_script) - 1;
    argv[2] = "2";
    argvlen[2] = 1;
    argv[3] = (char *) key.data;
    argvlen[3] = key.len;
    argv[4] = (char *) watch_key.data;
    argvlen[4] = watch_key.len;
    argv[5] = (char *) ctx->udid.data;
    argvlen[5] = ctx->udid.len;
    argv[6] = (char *) mmcf->token_ttl_text.data;
    argvlen[6] = mmcf->token_ttl_text.len;
    argv[7] = NGX_HTTP_MDM_WATCH_KEY_SECURITY_TOKEN;
    argvlen[7] = sizeof(NGX_HTTP_MDM_WATCH_KEY_SECURITY_TOKEN) - 1;
    argv[8] = (char *) ctx->security_token.data;
    argvlen[8] = ctx->security_token.len;

    return ngx_http_mdm_watch_redis_call(r, ctx,
                                         ngx_http_mdm_watch_challenge_reply,
                                         9, argv, argvlen);
}


static void
ngx_http_mdm_watch_challenge_reply(ngx_http_request_t *r,
    ngx_http_mdm_watch_ctx_t *ctx, redisReply *reply)
{
    ngx_int_t  rc;
    ngx_str_t  body;

    if (reply == NULL) {
        rc = ngx_http_mdm_watch_unavailable(r);
        goto done;
    }

    if (reply->type != REDIS_REPLY_INTEGER) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "mdm watch: unexpected redis reply of type %d "
                      "to storing a security token", reply->type);
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        goto done;
    }

    body.len = sizeof("{\"code\":\"com.apple.watch.pairing.token.missing\","
                      "\"description\":\"pairing token required\","
                      "\"details\":{\"security-token\":\"\"}}") - 1
               + ctx->security_token.len;

    body.data = ngx_pnalloc(r->pool, body.len);
    if (body.data == NULL) {
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        goto done;
    }

    ngx_sprintf(body.data,
                "{\"code\":\"com.apple.watch.pairing.token.missing\","
                "\"description\":\"pairing token required\","
                "\"details\":{\"security-token\":\"%V\"}}",
                &ctx->security_token);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "mdm watch enroll: challenge for watch \"%V\"",
                   &ctx->udid);

    /* a challenge that answers a refused pairing token keeps its reason */

    if (ctx->action == NGX_HTTP_MDM_WATCH_ACTION_NONE) {
        ctx->action = NGX_HTTP_MDM_WATCH_ACTION_CHALLENGE;
    }

    ngx_http_mdm_watch_count(challenges);

    rc = ngx_http_mdm_watch_send(r, NGX_HTTP_FORBIDDEN,
                                 &ngx_http_mdm_watch_json_type, &body);

done:

    ngx_http_mdm_watch_finalize(r, ctx, rc);
}

