
/*
 * Copyright (C) The ngx_mdm_watch_module authors
 */


#include "ngx_http_mdm_watch.h"


/* check-ins are small; larger bodies are passed through unparsed */
#define NGX_HTTP_MDM_WATCH_CHECKIN_BODY_MAX  (1024 * 1024)


static ngx_uint_t ngx_http_mdm_watch_is_checkin(ngx_http_request_t *r);
static ngx_uint_t ngx_http_mdm_watch_message_type_valid(ngx_str_t *type);
static void ngx_http_mdm_watch_checkin_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_mdm_watch_checkin(ngx_http_request_t *r,
    ngx_http_mdm_watch_ctx_t *ctx);
static ngx_int_t ngx_http_mdm_watch_get_token(ngx_http_request_t *r,
    ngx_http_mdm_watch_ctx_t *ctx, ngx_str_t *body);
static ngx_int_t ngx_http_mdm_watch_issue_token(ngx_http_request_t *r,
    ngx_http_mdm_watch_ctx_t *ctx);
static void ngx_http_mdm_watch_issue_reply(ngx_http_request_t *r,
    ngx_http_mdm_watch_ctx_t *ctx, redisReply *reply);
static ngx_int_t ngx_http_mdm_watch_refuse(ngx_http_request_t *r,
    ngx_http_mdm_watch_ctx_t *ctx, long long code);
static ngx_int_t ngx_http_mdm_watch_phone_check(ngx_http_request_t *r,
    ngx_http_mdm_watch_ctx_t *ctx);
static ngx_int_t ngx_http_mdm_watch_phone_check_done(ngx_http_request_t *r,
    void *data, ngx_int_t rc);
static void ngx_http_mdm_watch_phone_checked(ngx_http_request_t *r);


/*
 * answers a GetToken in one step: the security token must be live and
 * issued to the watch, before anything else is looked at; the phone must
 * be enrolled (on record, or said to be by the phone check, whose answer
 * is cached here), and signed by the certificate on record, if any; then
 * the security token is consumed and the one-time id of the pairing
 * token that replaces it is recorded.
 *
 *  1: issued         0: unknown security token   -1: issued to another watch
 * -2: unknown phone  -3: unsigned                -4: signed by another device
 * -5: the phone check said the phone is not enrolled
 */

static char  ngx_http_mdm_watch_issue_script[] =
    "local watch = redis.call('GET', KEYS[1]) "
    "if not watch then return 0 end "
    "if watch ~= ARGV[1] then return -1 end "
    "if ARGV[6] ~= '' then "
        "redis.call('SET', KEYS[4], ARGV[6], 'EX', ARGV[7]) "
    "end "
    "if redis.call('EXISTS', KEYS[3]) == 1 then "
        "local id = redis.call('HGET', KEYS[3], 'identity') "
        "if id and id ~= '' then "
            "if ARGV[4] == '' then "
                "if ARGV[5] == '1' then return -3 end "
            "elseif ARGV[4] ~= id then "
                "return -4 "
            "end "
        "end "
    "else "
        "local check = redis.call('GET', KEYS[4]) "
        "if not check then return -2 end "
        "if check ~= 'enrolled' then return -5 end "
    "end "
    "redis.call('DEL', KEYS[1]) "
    "redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3]) "
    "return 1";


static ngx_str_t  ngx_http_mdm_watch_xml_type = ngx_string("application/xml");


ngx_int_t
ngx_http_mdm_watch_checkin_handler(ngx_http_request_t *r)
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

    ngx_http_set_ctx(r, ctx, ngx_mdm_watch_module);

    /* command traffic and other bodies pass without being read here */

    if (!(r->method & (NGX_HTTP_PUT|NGX_HTTP_POST))
        || !ngx_http_mdm_watch_is_checkin(r))
    {
        ctx->action = NGX_HTTP_MDM_WATCH_ACTION_PASS;
        ctx->status = NGX_DECLINED;
        ngx_http_mdm_watch_count(passed[NGX_HTTP_MDM_WATCH_LOCATION_CHECKIN]);
        return NGX_DECLINED;
    }

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "mdm watch checkin handler");

    ctx->status = NGX_DONE;

    rc = ngx_http_read_client_request_body(r,
                                      ngx_http_mdm_watch_checkin_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    ngx_http_finalize_request(r, NGX_DONE);
    return NGX_DONE;
}


static ngx_uint_t
ngx_http_mdm_watch_is_checkin(ngx_http_request_t *r)
{
    size_t      len;
    ngx_str_t  *type;

    if (r->headers_in.content_type == NULL) {
        return 0;
    }

    type = &r->headers_in.content_type->value;
    len = sizeof("application/x-apple-aspen-mdm-checkin") - 1;

    if (type->len < len
        || ngx_strncasecmp(type->data,
                           (u_char *) "application/x-apple-aspen-mdm-checkin",
                           len)
           != 0)
    {
        return 0;
    }

    return type->len == len || type->data[len] == ';'
           || type->data[len] == ' ' || type->data[len] == '\t';
}


/* a MessageType as Apple names them: letters, digits, "." and "_" */

static ngx_uint_t
ngx_http_mdm_watch_message_type_valid(ngx_str_t *type)
{
    u_char  c;
    size_t  i;

    if (type->len == 0 || type->len > NGX_HTTP_MDM_WATCH_MESSAGE_TYPE_MAX) {
        return 0;
    }

    for (i = 0; i < type->len; i++) {
        c = type->data[i];

        if ((c < '0' || c > '9') && (c < 'A' || c > 'Z')
            && (c < 'a' || c > 'z') && c != '.' && c != '_')
        {
            return 0;
        }
    }

    return 1;
}


static void
ngx_http_mdm_watch_checkin_body_handler(ngx_http_request_t *r)
{
    ngx_int_t                  rc;
    ngx_http_mdm_watch_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_mdm_watch_module);

    rc = ngx_http_mdm_watch_checkin(r, ctx);

    if (rc == NGX_DECLINED && ctx->action == NGX_HTTP_MDM_WATCH_ACTION_NONE) {
        ctx->action = NGX_HTTP_MDM_WATCH_ACTION_PASS;
    }

    ngx_http_mdm_watch_finalize(r, ctx, rc);
}


static ngx_int_t
ngx_http_mdm_watch_checkin(ngx_http_request_t *r, ngx_http_mdm_watch_ctx_t *ctx)
{
    ngx_int_t                      rc;
    ngx_str_t                      body;
    ngx_http_mdm_watch_checkin_t  *ci;

    ci = &ctx->checkin;

    rc = ngx_http_mdm_watch_read_body(r, &body,
                                      NGX_HTTP_MDM_WATCH_CHECKIN_BODY_MAX);

    if (rc == NGX_DECLINED) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "mdm watch checkin: large body passed unparsed");
        return NGX_DECLINED;
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_mdm_watch_checkin_parse(r->pool, r->connection->log, &body,
                                          ci);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc != NGX_OK) {
        return NGX_DECLINED;
    }

    /*
     * $mdm_watch_message_type may go into a header to the MDM server:
     * a MessageType that no device sends leaves it empty
     */

    if (ngx_http_mdm_watch_message_type_valid(&ci->message_type)) {
        ctx->message_type = ci->message_type;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "mdm watch checkin: \"%V\"", &ci->message_type);

    if (ngx_http_mdm_watch_str_eq(&ci->message_type, "Authenticate")
        || ngx_http_mdm_watch_str_eq(&ci->message_type, "TokenUpdate")
        || ngx_http_mdm_watch_str_eq(&ci->message_type, "CheckOut"))
    {
        return ngx_http_mdm_watch_registry_checkin(r, ctx, &body);
    }

    if (!ngx_http_mdm_watch_str_eq(&ci->message_type, "GetToken")
        || !ngx_http_mdm_watch_str_eq(&ci->token_service_type,
                                      "com.apple.watch.pairing"))
    {
        return NGX_DECLINED;
    }

    return ngx_http_mdm_watch_get_token(r, ctx, &body);
}


static ngx_int_t
ngx_http_mdm_watch_get_token(ngx_http_request_t *r,
    ngx_http_mdm_watch_ctx_t *ctx, ngx_str_t *body)
{
    ngx_int_t                      rc;
    ngx_str_t                      udid;
    ngx_http_mdm_watch_checkin_t  *ci;

    ci = &ctx->checkin;

    if (!ci->token_parameters
        || ci->security_token.data == NULL
        || ci->phone_udid.data == NULL
        || ci->watch_udid.data == NULL)
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "mdm watch: GetToken without TokenParameters "
                      "SecurityToken, PhoneUDID and WatchUDID strings");
        ngx_http_mdm_watch_reject(r, ctx,
                                  NGX_HTTP_MDM_WATCH_REASON_BAD_PARAMETERS);
        return NGX_HTTP_BAD_REQUEST;
    }

    if (ngx_http_mdm_watch_udid_canonical(r->pool, &ci->phone_udid,
                                          &ctx->phone_udid)
        != NGX_OK
        || ngx_http_mdm_watch_udid_canonical(r->pool, &ci->watch_udid,
                                             &ctx->udid)
           != NGX_OK)
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "mdm watch: GetToken with an invalid PhoneUDID "
                      "or WatchUDID");
        ngx_str_null(&ctx->phone_udid);
        ngx_str_null(&ctx->udid);
        ngx_http_mdm_watch_reject(r, ctx, NGX_HTTP_MDM_WATCH_REASON_BAD_UDID);
        return NGX_HTTP_BAD_REQUEST;
    }

    if (ci->udid.data == NULL
        || ngx_http_mdm_watch_udid_canonical(r->pool, &ci->udid, &udid)
           != NGX_OK
        || udid.len != ctx->phone_udid.len
        || ngx_strncmp(udid.data, ctx->phone_udid.data, udid.len) != 0)
    {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "mdm watch: GetToken for phone \"%V\" sent by "
                      "another device", &ctx->phone_udid);
        ngx_http_mdm_watch_reject(r, ctx,
                                  NGX_HTTP_MDM_WATCH_REASON_UDID_MISMATCH);
        return NGX_HTTP_FORBIDDEN;
    }

    rc = ngx_http_mdm_watch_security_token_canonical(r->pool,
                                                     &ci->security_token,
                                                     &ctx->security_token);
    if (rc == NGX_DECLINED) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "mdm watch: GetToken from phone \"%V\" with "
                      "a malformed security token", &ctx->phone_udid);
        ngx_http_mdm_watch_reject(r, ctx,
                                  NGX_HTTP_MDM_WATCH_REASON_BAD_SECURITY_TOKEN);
        return NGX_HTTP_FORBIDDEN;
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_str_set(&ctx->phone_check, "");

    /* 400, not 401: a device is not unenrolled for a bad signature */

    rc = ngx_http_mdm_watch_sender(r, ctx, body);

    if (rc == NGX_DECLINED) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "mdm watch: GetToken from phone \"%V\" has "
                      "a Mdm-Signature that does not verify",
                      &ctx->phone_udid);
        ngx_http_mdm_watch_reject(r, ctx,
                                  NGX_HTTP_MDM_WATCH_REASON_BAD_SIGNATURE);
        return NGX_HTTP_BAD_REQUEST;
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_mdm_watch_issue_token(r, ctx);
}


static ngx_int_t
ngx_http_mdm_watch_issue_token(ngx_http_request_t *r,
    ngx_http_mdm_watch_ctx_t *ctx)
{
    size_t                               argvlen[14];
    ngx_str_t                            st_key, pt_key, device_key;
    ngx_str_t                            check_key, value;
    const char                          *argv[14];
    ngx_http_mdm_watch_main_conf_t      *mmcf;
    ngx_http_mdm_watch_pairing_token_t  *pt;

    mmcf = ngx_http_get_module_main_conf(r, ngx_mdm_watch_module);
    pt = &ctx->pairing_token;

    pt->expires = ngx_time() + mmcf->token_ttl;
    pt->watch_udid = ctx->udid;
    pt->phone_udid = ctx->phone_udid;
    pt->security_token = ctx->security_token;

    if (ngx_http_mdm_watch_pairing_token_create(r->pool, &mmcf->secret, pt,
                                                &ctx->token_data)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_mdm_watch_key(r->pool, NGX_HTTP_MDM_WATCH_KEY_SECURITY_TOKEN,
                               &ctx->security_token, &st_key)
        != NGX_OK
        || ngx_http_mdm_watch_key(r->pool,
                                  NGX_HTTP_MDM_WATCH_KEY_PAIRING_TOKEN,
                                  &pt->id, &pt_key)
           != NGX_OK
        || ngx_http_mdm_watch_key(r->pool, NGX_HTTP_MDM_WATCH_KEY_DEVICE,
                                  &ctx->phone_udid, &device_key)
           != NGX_OK
        || ngx_http_mdm_watch_key(r->pool,
                                  NGX_HTTP_MDM_WATCH_KEY_PHONE_CHECK,
                                  &ctx->phone_udid, &check_key)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_mdm_watch_pairing_token_record(r->pool, pt, &value)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    argv[0] = "EVAL";
    argvlen[0] = sizeof("EVAL") - 1;
    argv[1] = ngx_http_mdm_watch_issue_script;
    argvlen[1] = sizeof(ngx_http_mdm_watch_issue_script) - 1;
    argv[2] = "4";
    argvlen[2] = 1;
    argv[3] = (char *) st_key.data;
    argvlen[3] = st_key.len;
    argv[4] = (char *) pt_key.data;
    argvlen[4] = pt_key.len;
    argv[5] = (char *) device_key.data;
    argvlen[5] = device_key.len;
    argv[6] = (char *) check_key.data;
    argvlen[6] = check_key.len;
    argv[7] = (char *) pt->watch_udid.data;
    argvlen[7] = pt->watch_udid.len;
    argv[8] = (char *) value.data;
    argvlen[8] = value.len;
    argv[9] = (char *) mmcf->token_ttl_text.data;
    argvlen[9] = mmcf->token_ttl_text.len;
    argv[10] = (char *) ctx->identity.data;
    argvlen[10] = ctx->identity.len;
    argv[11] = mmcf->require_signature ? "1" : "0";
    argvlen[11] = 1;
    argv[12] = (char *) ctx->phone_check.data;
    argvlen[12] = ctx->phone_check.len;
    argv[13] = (char *) mmcf->phone_check_valid_text.data;
    argvlen[13] = mmcf->phone_check_valid_text.len;

    return ngx_http_mdm_watch_redis_call(r, ctx,
                                         ngx_http_mdm_watch_issue_reply,
                                         14, argv, argvlen);
}


static void
ngx_http_mdm_watch_issue_reply(ngx_http_request_t *r,
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
                      "to issuing a pairing token", reply->type);
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        goto done;
    }

    if (reply->integer != 1) {
        rc = ngx_http_mdm_watch_refuse(r, ctx, reply->integer);
        goto done;
    }

    if (ngx_http_mdm_watch_token_data_plist(r->pool, &ctx->token_data, &body)
        != NGX_OK)
    {
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        goto done;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "mdm watch: pairing token issued to phone \"%V\" "
                  "for watch \"%V\"", &ctx->phone_udid, &ctx->udid);

    ctx->action = NGX_HTTP_MDM_WATCH_ACTION_TOKEN;
    ngx_http_mdm_watch_count(tokens);

    rc = ngx_http_mdm_watch_send(r, NGX_HTTP_OK, &ngx_http_mdm_watch_xml_type,
                                 &body);

done:

    ngx_http_mdm_watch_finalize(r, ctx, rc);
}


static ngx_int_t
ngx_http_mdm_watch_refuse(ngx_http_request_t *r, ngx_http_mdm_watch_ctx_t *ctx,
    long long code)
{
    char                           *why;
    ngx_http_mdm_watch_reason_e     reason;
    ngx_http_mdm_watch_loc_conf_t  *mlcf;

    mlcf = ngx_http_get_module_loc_conf(r, ngx_mdm_watch_module);

    switch (code) {

    case 0:
        why = "an unknown, expired or used security token";
        reason = NGX_HTTP_MDM_WATCH_REASON_UNKNOWN_SECURITY_TOKEN;
        break;

    case -1:
        why = "a security token issued to another watch";
        reason = NGX_HTTP_MDM_WATCH_REASON_UDID_MISMATCH;
        break;

    case -2:
        if (mlcf->phone_check.len && ctx->phone_check.len == 0) {
            return ngx_http_mdm_watch_phone_check(r, ctx);
        }

        why = "unknown phone, not enrolled";
        reason = NGX_HTTP_MDM_WATCH_REASON_UNKNOWN_PHONE;
        break;

    case -3:
        why = "unsigned, while the phone's certificate is on record";
        reason = NGX_HTTP_MDM_WATCH_REASON_UNSIGNED;
        break;

    case -4:
        why = "signed by another device than the one on record";
        reason = NGX_HTTP_MDM_WATCH_REASON_WRONG_IDENTITY;
        break;

    case -5:
        why = "unknown phone, not enrolled says the phone check";
        reason = NGX_HTTP_MDM_WATCH_REASON_UNKNOWN_PHONE;
        break;

    default:
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "mdm watch: unexpected redis answer %L "
                      "to issuing a pairing token", (int64_t) code);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "mdm watch: GetToken from phone \"%V\" for watch \"%V\" "
                  "refused: %s", &ctx->phone_udid, &ctx->udid, why);

    ngx_http_mdm_watch_reject(r, ctx, reason);

    return NGX_HTTP_FORBIDDEN;
}


/*
 * asks the operator's location whether a phone the module has not seen
 * is enrolled, as auth_request does: 2xx yes, 4xx no, both cached; any
 * other answer is a failure of the check, and not cached
 */

static ngx_int_t
ngx_http_mdm_watch_phone_check(ngx_http_request_t *r,
    ngx_http_mdm_watch_ctx_t *ctx)
{
    ngx_http_request_t             *sr;
    ngx_http_post_subrequest_t     *ps;
    ngx_http_mdm_watch_loc_conf_t  *mlcf;

    mlcf = ngx_http_get_module_loc_conf(r, ngx_mdm_watch_module);

    ps = ngx_palloc(r->pool, sizeof(ngx_http_post_subrequest_t));
    if (ps == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ps->handler = ngx_http_mdm_watch_phone_check_done;
    ps->data = ctx;

    if (ngx_http_subrequest(r, &mlcf->phone_check, NULL, &sr, ps,
                            NGX_HTTP_SUBREQUEST_WAITED)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    sr->header_only = 1;

    r->write_event_handler = ngx_http_mdm_watch_phone_checked;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "mdm watch phone check of \"%V\": \"%V\"",
                   &ctx->phone_udid, &mlcf->phone_check);

    return NGX_DONE;
}


static ngx_int_t
ngx_http_mdm_watch_phone_check_done(ngx_http_request_t *r, void *data,
    ngx_int_t rc)
{
    ngx_http_mdm_watch_ctx_t *ctx = data;

    ctx->phone_check_done = 1;
    ctx->phone_check_status = r->headers_out.status;

    if (ctx->phone_check_status == 0 && rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        ctx->phone_check_status = rc;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "mdm watch phone check done: %ui, rc %i",
                   ctx->phone_check_status, rc);

    return rc;
}


static void
ngx_http_mdm_watch_phone_checked(ngx_http_request_t *r)
{
    ngx_int_t                  rc;
    ngx_uint_t                 status;
    ngx_http_mdm_watch_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_mdm_watch_module);

    if (ctx == NULL || !ctx->phone_check_done) {
        return;
    }

    r->write_event_handler = ngx_http_request_empty_handler;

    status = ctx->phone_check_status;

    if (status >= 200 && status < 300) {
        ngx_str_set(&ctx->phone_check, "enrolled");
        rc = ngx_http_mdm_watch_issue_token(r, ctx);

    } else if (status >= 400 && status < 500) {
        ngx_str_set(&ctx->phone_check, "unknown");
        rc = ngx_http_mdm_watch_issue_token(r, ctx);

    } else {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "mdm watch: phone check of \"%V\" failed "
                      "with status %ui", &ctx->phone_udid, status);
        rc = ngx_http_mdm_watch_unavailable(r);
    }

    ngx_http_mdm_watch_finalize(r, ctx, rc);
}
