
/*
 * Copyright (C) The ngx_mdm_watch_module authors
 */


#include "ngx_http_mdm_watch.h"


static ngx_int_t ngx_http_mdm_watch_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_mdm_watch_preconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_mdm_watch_postconfiguration(ngx_conf_t *cf);
static void *ngx_http_mdm_watch_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_mdm_watch_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_mdm_watch_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_mdm_watch_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_mdm_watch_redis(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_mdm_watch_secret(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_mdm_watch_location(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_mdm_watch_phone_check(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static ngx_int_t ngx_http_mdm_watch_init_process(ngx_cycle_t *cycle);
static void ngx_http_mdm_watch_exit_process(ngx_cycle_t *cycle);


static ngx_command_t  ngx_http_mdm_watch_commands[] = {

    { ngx_string("mdm_watch_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE123,
      ngx_http_mdm_watch_redis,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mdm_watch_redis_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_mdm_watch_main_conf_t, redis_timeout),
      NULL },

    { ngx_string("mdm_watch_secret"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_mdm_watch_secret,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mdm_watch_token_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_mdm_watch_main_conf_t, token_ttl),
      NULL },

    { ngx_string("mdm_watch_trusted_certificate"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_mdm_watch_main_conf_t, trusted_certificate),
      NULL },

    { ngx_string("mdm_watch_verify_machine_info"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_mdm_watch_main_conf_t, verify_machine_info),
      NULL },

    { ngx_string("mdm_watch_require_signature"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_mdm_watch_main_conf_t, require_signature),
      NULL },

    { ngx_string("mdm_watch_phone_check_valid"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_mdm_watch_main_conf_t, phone_check_valid),
      NULL },

    { ngx_string("mdm_watch_enroll"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_mdm_watch_location,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mdm_watch_loc_conf_t, enroll),
      NULL },

    { ngx_string("mdm_watch_checkin"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_mdm_watch_location,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mdm_watch_loc_conf_t, checkin),
      NULL },

    { ngx_string("mdm_watch_pairs"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_mdm_watch_pairs,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mdm_watch_phone_check"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_mdm_watch_phone_check,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mdm_watch_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_mdm_watch_status,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_mdm_watch_module_ctx = {
    ngx_http_mdm_watch_preconfiguration,   /* preconfiguration */
    ngx_http_mdm_watch_postconfiguration,  /* postconfiguration */

    ngx_http_mdm_watch_create_main_conf,   /* create main configuration */
    ngx_http_mdm_watch_init_main_conf,     /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_mdm_watch_create_loc_conf,    /* create location configuration */
    ngx_http_mdm_watch_merge_loc_conf      /* merge location configuration */
};


ngx_module_t  ngx_mdm_watch_module = {
    NGX_MODULE_V1,
    &ngx_http_mdm_watch_module_ctx,        /* module context */
    ngx_http_mdm_watch_commands,           /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_mdm_watch_init_process,       /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_mdm_watch_exit_process,       /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_int_t
ngx_http_mdm_watch_handler(ngx_http_request_t *r)
{
    ngx_http_mdm_watch_loc_conf_t  *mlcf;

    if (r != r->main) {
        return NGX_DECLINED;
    }

    mlcf = ngx_http_get_module_loc_conf(r, ngx_mdm_watch_module);

    if (mlcf->enroll) {
        return ngx_http_mdm_watch_enroll_handler(r);
    }

    if (mlcf->checkin) {
        return ngx_http_mdm_watch_checkin_handler(r);
    }

    return NGX_DECLINED;
}


ngx_int_t
ngx_http_mdm_watch_read_body(ngx_http_request_t *r, ngx_str_t *body,
    size_t max)
{
    off_t         size;
    u_char       *p;
    ssize_t       n;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    body->len = 0;
    body->data = (u_char *) "";

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        return NGX_OK;
    }

    size = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        size += ngx_buf_size(cl->buf);
    }

    if (size > (off_t) max) {
        return NGX_DECLINED;
    }

    cl = r->request_body->bufs;

    if (cl->next == NULL && ngx_buf_in_memory(cl->buf)) {
        body->data = cl->buf->pos;
        body->len = cl->buf->last - cl->buf->pos;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, (size_t) size + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    body->data = p;

    for ( /* void */ ; cl; cl = cl->next) {
        b = cl->buf;

        if (ngx_buf_in_memory(b)) {
            p = ngx_cpymem(p, b->pos, b->last - b->pos);
            continue;
        }

        if (!b->in_file || b->file_last == b->file_pos) {
            continue;
        }

        /* TODO: a blocking read; bodies the module parses are small */

        n = ngx_read_file(b->file, p, (size_t) (b->file_last - b->file_pos),
                          b->file_pos);

        if (n == NGX_ERROR) {
            return NGX_ERROR;
        }

        if (n != b->file_last - b->file_pos) {
            ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                          ngx_read_file_n " read only %z of %O from \"%V\"",
                          n, b->file_last - b->file_pos, &b->file->name);
            return NGX_ERROR;
        }

        p += n;
    }

    body->len = p - body->data;

    return NGX_OK;
}


ngx_int_t
ngx_http_mdm_watch_send(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *content_type, ngx_str_t *body)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    r->headers_out.status = status;
    r->headers_out.content_type = *content_type;
    r->headers_out.content_type_len = content_type->len;
    r->headers_out.content_length_n = body->len;

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = body->data;
    b->last = body->data + body->len;
    b->memory = body->len ? 1 : 0;
    b->last_buf = 1;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_output_filter(r, &out);
}


ngx_int_t
ngx_http_mdm_watch_unavailable(ngx_http_request_t *r)
{
    if (ngx_http_mdm_watch_header(r, "Retry-After",
                                  (u_char *) NGX_HTTP_MDM_WATCH_RETRY_AFTER,
                                  sizeof(NGX_HTTP_MDM_WATCH_RETRY_AFTER) - 1)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return NGX_HTTP_SERVICE_UNAVAILABLE;
}


/* refuses the method, and names the methods the location takes */

ngx_int_t
ngx_http_mdm_watch_not_allowed(ngx_http_request_t *r, char *allow)
{
    if (ngx_http_mdm_watch_header(r, "Allow", (u_char *) allow,
                                  ngx_strlen(allow))
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return NGX_HTTP_NOT_ALLOWED;
}


/* adds a response header; name and value must outlive the request */

ngx_int_t
ngx_http_mdm_watch_header(ngx_http_request_t *r, char *name, u_char *value,
    size_t len)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) name;
    h->key.len = ngx_strlen(name);
    h->value.data = value;
    h->value.len = len;

    return NGX_OK;
}


/*
 * sends a command for a request: NGX_DONE while the reply is awaited,
 * else the status to answer with
 */

ngx_int_t
ngx_http_mdm_watch_redis_call(ngx_http_request_t *r,
    ngx_http_mdm_watch_ctx_t *ctx, ngx_http_mdm_watch_reply_pt handler,
    int argc, const char **argv, const size_t *argvlen)
{
    ngx_int_t  rc;

    rc = ngx_http_mdm_watch_redis_command(r, ctx, handler, argc, argv,
                                          argvlen);

    if (rc == NGX_OK) {
        return NGX_DONE;
    }

    if (rc == NGX_DECLINED) {
        return ngx_http_mdm_watch_unavailable(r);
    }

    return NGX_HTTP_INTERNAL_SERVER_ERROR;
}


/* a number of seconds, or a time, as Redis takes it */

ngx_int_t
ngx_http_mdm_watch_seconds(ngx_pool_t *pool, time_t t, ngx_str_t *s)
{
    s->data = ngx_pnalloc(pool, NGX_TIME_T_LEN);
    if (s->data == NULL) {
        return NGX_ERROR;
    }

    s->len = ngx_sprintf(s->data, "%T", t) - s->data;

    return NGX_OK;
}


void
ngx_http_mdm_watch_decline(ngx_http_request_t *r,
    ngx_http_mdm_watch_ctx_t *ctx)
{
    ngx_http_mdm_watch_loc_conf_t  *mlcf;

    mlcf = ngx_http_get_module_loc_conf(r, ngx_mdm_watch_module);

    if (mlcf->enroll) {
        ngx_http_mdm_watch_count(passed[NGX_HTTP_MDM_WATCH_LOCATION_ENROLL]);

    } else {
        ngx_http_mdm_watch_count(passed[NGX_HTTP_MDM_WATCH_LOCATION_CHECKIN]);
    }

    if (ctx->action == NGX_HTTP_MDM_WATCH_ACTION_NONE) {
        ctx->action = NGX_HTTP_MDM_WATCH_ACTION_PASS;
    }

    ctx->status = NGX_DECLINED;

    r->preserve_body = 1;

    r->write_event_handler = ngx_http_core_run_phases;
    ngx_http_core_run_phases(r);
}


void
ngx_http_mdm_watch_finalize(ngx_http_request_t *r,
    ngx_http_mdm_watch_ctx_t *ctx, ngx_int_t rc)
{
    if (rc == NGX_DONE) {
        return;
    }

    if (rc == NGX_DECLINED) {
        ngx_http_mdm_watch_decline(r, ctx);
        return;
    }

    /*
     * a refusal has its reason set where it was decided; what is left is
     * not the client's doing: Redis or the phone check unavailable, or
     * an internal failure
     */

    if (rc == NGX_HTTP_SERVICE_UNAVAILABLE) {
        ctx->action = NGX_HTTP_MDM_WATCH_ACTION_UNAVAILABLE;
        ngx_http_mdm_watch_count(unavailable);

    } else if (ctx->action == NGX_HTTP_MDM_WATCH_ACTION_NONE) {
        ctx->action = NGX_HTTP_MDM_WATCH_ACTION_ERROR;
        ngx_http_mdm_watch_count(internal_errors);
    }

    ngx_http_finalize_request(r, rc);
}


ngx_int_t
ngx_http_mdm_watch_key(ngx_pool_t *pool, char *prefix, ngx_str_t *id,
    ngx_str_t *key)
{
    size_t  len;

    len = ngx_strlen(prefix);

    key->len = len + id->len;
    key->data = ngx_pnalloc(pool, key->len + 1);
    if (key->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(ngx_cpymem(key->data, prefix, len), id->data, id->len);
    key->data[key->len] = '\0';

    return NGX_OK;
}


static ngx_int_t
ngx_http_mdm_watch_preconfiguration(ngx_conf_t *cf)
{
    return ngx_http_mdm_watch_add_variables(cf);
}


static ngx_int_t
ngx_http_mdm_watch_postconfiguration(ngx_conf_t *cf)
{
    ngx_http_handler_pt             *h;
    ngx_http_core_main_conf_t       *cmcf;
    ngx_http_mdm_watch_main_conf_t  *mmcf;

    mmcf = ngx_http_conf_get_module_main_conf(cf, ngx_mdm_watch_module);

    if ((mmcf->used || mmcf->status)
        && ngx_http_mdm_watch_counters_add(cf) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (!mmcf->used) {
        return NGX_OK;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PRECONTENT_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_mdm_watch_handler;

    return ngx_http_mdm_watch_registry_init(cf);
}


static void *
ngx_http_mdm_watch_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_mdm_watch_main_conf_t  *mmcf;

    mmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_mdm_watch_main_conf_t));
    if (mmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     mmcf->addr = { 0, NULL };
     *     mmcf->host = { 0, NULL };
     *     mmcf->unix_path = { 0, NULL };
     *     mmcf->port = 0;
     *     mmcf->password = { 0, NULL };
     *     mmcf->secret = { 0, NULL };
     *     mmcf->trusted_certificate = { 0, NULL };
     *     mmcf->trusted = NULL;
     *     mmcf->token_ttl_text = { 0, NULL };
     *     mmcf->phone_check_valid_text = { 0, NULL };
     *     mmcf->used = 0;
     *     mmcf->counters = NULL;
     *     mmcf->status = 0;
     *     mmcf->pairs = 0;
     */

    mmcf->db = NGX_CONF_UNSET;
    mmcf->redis_timeout = NGX_CONF_UNSET_MSEC;
    mmcf->token_ttl = NGX_CONF_UNSET;
    mmcf->verify_machine_info = NGX_CONF_UNSET;
    mmcf->require_signature = NGX_CONF_UNSET;
    mmcf->phone_check_valid = NGX_CONF_UNSET;

    return mmcf;
}


static char *
ngx_http_mdm_watch_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_mdm_watch_main_conf_t *mmcf = conf;

    if (mmcf->addr.len == 0) {
        ngx_str_set(&mmcf->addr, "127.0.0.1:6379");
        ngx_str_set(&mmcf->host, "127.0.0.1");
        mmcf->port = 6379;
    }

    ngx_conf_init_value(mmcf->db, 0);
    ngx_conf_init_msec_value(mmcf->redis_timeout, 1000);
    ngx_conf_init_value(mmcf->token_ttl, 600);
    ngx_conf_init_value(mmcf->verify_machine_info, 1);
    ngx_conf_init_value(mmcf->require_signature, 1);
    ngx_conf_init_value(mmcf->phone_check_valid, 3600);

    if (mmcf->token_ttl <= 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"mdm_watch_token_ttl\" must be positive");
        return NGX_CONF_ERROR;
    }

    if (mmcf->phone_check_valid <= 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"mdm_watch_phone_check_valid\" must be positive");
        return NGX_CONF_ERROR;
    }

    if (ngx_http_mdm_watch_seconds(cf->pool, mmcf->token_ttl,
                                   &mmcf->token_ttl_text)
        != NGX_OK
        || ngx_http_mdm_watch_seconds(cf->pool, mmcf->phone_check_valid,
                                      &mmcf->phone_check_valid_text)
           != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (mmcf->redis_timeout == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"mdm_watch_redis_timeout\" must be positive");
        return NGX_CONF_ERROR;
    }

    if (!mmcf->used) {
        return NGX_CONF_OK;
    }

    if (mmcf->secret.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "no \"mdm_watch_secret\" is defined, "
                           "\"mdm_watch_enroll\" and \"mdm_watch_checkin\" "
                           "need it to sign pairing tokens");
        return NGX_CONF_ERROR;
    }

    if (!mmcf->verify_machine_info) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "\"mdm_watch_verify_machine_info\" is off, "
                           "signatures of machine info are not verified "
                           "and any device may enroll a watch");
        return NGX_CONF_OK;
    }

    if (mmcf->trusted_certificate.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "no \"mdm_watch_trusted_certificate\" is defined "
                           "while \"mdm_watch_verify_machine_info\" is on");
        return NGX_CONF_ERROR;
    }

    mmcf->trusted = ngx_http_mdm_watch_cms_trusted(cf,
                                                   &mmcf->trusted_certificate);
    if (mmcf->trusted == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_mdm_watch_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_mdm_watch_loc_conf_t  *mlcf;

    mlcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_mdm_watch_loc_conf_t));
    if (mlcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     mlcf->phone_check = { 0, NULL };
     *     mlcf->pairs = 0;
     */

    mlcf->enroll = NGX_CONF_UNSET;
    mlcf->checkin = NGX_CONF_UNSET;

    return mlcf;
}


static char *
ngx_http_mdm_watch_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_mdm_watch_loc_conf_t *prev = parent;
    ngx_http_mdm_watch_loc_conf_t *conf = child;

    /* a location that sets one of the two does not inherit the other */

    if (conf->enroll == NGX_CONF_UNSET && conf->checkin == NGX_CONF_UNSET) {
        conf->enroll = prev->enroll;
        conf->checkin = prev->checkin;
    }

    ngx_conf_init_value(conf->enroll, 0);
    ngx_conf_init_value(conf->checkin, 0);

    ngx_conf_merge_str_value(conf->phone_check, prev->phone_check, "");

    return NGX_CONF_OK;
}


static char *
ngx_http_mdm_watch_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_mdm_watch_main_conf_t *mmcf = conf;

    u_char      *p;
    size_t       len;
    ngx_str_t   *value;
    ngx_url_t    u;
    ngx_uint_t   i;

    if (mmcf->addr.len) {
        return "is duplicate";
    }

    value = cf->args->elts;

    mmcf->addr = value[1];

    if (value[1].len > 5 && ngx_strncmp(value[1].data, "unix:", 5) == 0) {
        len = value[1].len - 5;

        p = ngx_pnalloc(cf->pool, len + 1);
        if (p == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memcpy(p, value[1].data + 5, len);
        p[len] = '\0';

        mmcf->unix_path.data = p;
        mmcf->unix_path.len = len;

    } else {
        ngx_memzero(&u, sizeof(ngx_url_t));

        u.url = value[1];
        u.default_port = 6379;

        if (ngx_parse_url(cf->pool, &u) != NGX_OK) {
            if (u.err) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "%s in \"%V\" of the \"mdm_watch_redis\"",
                                   u.err, &u.url);
            }

            return NGX_CONF_ERROR;
        }

        if (u.naddrs == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "no address in \"%V\" of the "
                               "\"mdm_watch_redis\"", &u.url);
            return NGX_CONF_ERROR;
        }

        /*
         * hiredis resolves names with a blocking getaddrinfo(), so it is
         * given the numeric address resolved here, as upstreams are
         */

        p = ngx_pnalloc(cf->pool, NGX_SOCKADDR_STRLEN + 1);
        if (p == NULL) {
            return NGX_CONF_ERROR;
        }

        len = ngx_sock_ntop(u.addrs[0].sockaddr, u.addrs[0].socklen, p,
                            NGX_SOCKADDR_STRLEN, 0);
        p[len] = '\0';

        if (len > 2 && p[0] == '[') {
            p[len - 1] = '\0';
            p++;
            len -= 2;
        }

        mmcf->host.data = p;
        mmcf->host.len = len;
        mmcf->port = ngx_inet_get_port(u.addrs[0].sockaddr);
    }

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "db=", 3) == 0) {
            mmcf->db = ngx_atoi(value[i].data + 3, value[i].len - 3);
            if (mmcf->db == NGX_ERROR) {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "password=", 9) == 0
            && value[i].len > 9)
        {
            mmcf->password.data = value[i].data + 9;
            mmcf->password.len = value[i].len - 9;
            continue;
        }

        goto invalid;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\"", &value[i]);

    return NGX_CONF_ERROR;
}


static char *
ngx_http_mdm_watch_secret(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_mdm_watch_main_conf_t *mmcf = conf;

    u_char           *p;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_str_t        *value, name;
    ngx_file_info_t   fi;

    if (mmcf->secret.data) {
        return "is duplicate";
    }

    value = cf->args->elts;
    name = value[1];

    if (ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    fd = ngx_open_file(name.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " \"%s\" failed", name.data);
        return NGX_CONF_ERROR;
    }

    p = NULL;
    n = 0;

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_fd_info_n " \"%s\" failed", name.data);
        goto failed;
    }

    if (ngx_file_size(&fi) < NGX_HTTP_MDM_WATCH_SECRET_MIN
        || ngx_file_size(&fi) > 4096)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "secret file \"%s\" must hold %d to 4096 bytes, "
                           "it holds %O",
                           name.data, NGX_HTTP_MDM_WATCH_SECRET_MIN,
                           ngx_file_size(&fi));
        goto failed;
    }

    p = ngx_pnalloc(cf->pool, (size_t) ngx_file_size(&fi));
    if (p == NULL) {
        goto failed;
    }

    n = ngx_read_fd(fd, p, (size_t) ngx_file_size(&fi));

    if (n == -1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_read_fd_n " \"%s\" failed", name.data);
        goto failed;
    }

    if (n < NGX_HTTP_MDM_WATCH_SECRET_MIN) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "secret file \"%s\" is shorter than %d bytes",
                           name.data, NGX_HTTP_MDM_WATCH_SECRET_MIN);
        goto failed;
    }

    if (ngx_close_file(fd) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_ALERT, cf, ngx_errno,
                           ngx_close_file_n " \"%s\" failed", name.data);
    }

    mmcf->secret.data = p;
    mmcf->secret.len = n;

    return NGX_CONF_OK;

failed:

    if (p) {
        ngx_explicit_memzero(p, n > 0 ? (size_t) n : 0);
    }

    if (ngx_close_file(fd) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_ALERT, cf, ngx_errno,
                           ngx_close_file_n " \"%s\" failed", name.data);
    }

    return NGX_CONF_ERROR;
}


static char *
ngx_http_mdm_watch_location(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_mdm_watch_loc_conf_t *mlcf = conf;

    ngx_flag_t                      *fp;
    ngx_http_mdm_watch_main_conf_t  *mmcf;

    fp = (ngx_flag_t *) ((char *) conf + cmd->offset);

    if (*fp != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    if (mlcf->enroll == 1 || mlcf->checkin == 1 || mlcf->pairs) {
        return "cannot be combined with another mdm_watch location "
               "directive in one location";
    }

    *fp = 1;

    mmcf = ngx_http_conf_get_module_main_conf(cf, ngx_mdm_watch_module);
    mmcf->used = 1;

    return NGX_CONF_OK;
}


static char *
ngx_http_mdm_watch_phone_check(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_mdm_watch_loc_conf_t *mlcf = conf;

    ngx_str_t  *value;

    if (mlcf->phone_check.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        ngx_str_set(&mlcf->phone_check, "");
        return NGX_CONF_OK;
    }

    if (value[1].data[0] != '/') {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid URI \"%V\" in \"mdm_watch_phone_check\"",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    /* the location checked gets the UDID as $mdm_watch_phone_udid */

    if (ngx_strlchr(value[1].data, value[1].data + value[1].len, '$')
        != NULL)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"mdm_watch_phone_check\" takes a fixed URI, "
                           "\"%V\" has a variable; use "
                           "$mdm_watch_phone_udid in the location it names",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    mlcf->phone_check = value[1];

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_mdm_watch_init_process(ngx_cycle_t *cycle)
{
    ngx_http_mdm_watch_counters_init_process(cycle);

    return ngx_http_mdm_watch_redis_init_process(cycle);
}


static void
ngx_http_mdm_watch_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_mdm_watch_redis_exit_process(cycle);
    ngx_http_mdm_watch_counters_exit_process(cycle);
    ngx_http_mdm_watch_hmac_free();
}
