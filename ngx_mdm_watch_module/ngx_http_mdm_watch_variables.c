
/*
 * Copyright (C) The ngx_mdm_watch_module authors
 */


#include "ngx_http_mdm_watch.h"


static ngx_int_t ngx_http_mdm_watch_str_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_mdm_watch_action_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


static ngx_http_variable_t  ngx_http_mdm_watch_vars[] = {

    { ngx_string("mdm_watch_udid"), NULL,
      ngx_http_mdm_watch_str_variable,
      offsetof(ngx_http_mdm_watch_ctx_t, udid),
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("mdm_watch_phone_udid"), NULL,
      ngx_http_mdm_watch_str_variable,
      offsetof(ngx_http_mdm_watch_ctx_t, phone_udid),
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("mdm_watch_message_type"), NULL,
      ngx_http_mdm_watch_str_variable,
      offsetof(ngx_http_mdm_watch_ctx_t, message_type),
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("mdm_watch_paired_udids"), NULL,
      ngx_http_mdm_watch_str_variable,
      offsetof(ngx_http_mdm_watch_ctx_t, paired_udids),
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("mdm_watch_action"), NULL,
      ngx_http_mdm_watch_action_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static ngx_str_t  ngx_http_mdm_watch_actions[] = {
    ngx_null_string,
    ngx_string("challenge"),
    ngx_string("token"),
    ngx_string("paired"),
    ngx_string("pass"),
    ngx_string("reject"),
    ngx_string("unavailable"),
    ngx_string("error")
};


ngx_int_t
ngx_http_mdm_watch_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_mdm_watch_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_mdm_watch_str_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t                 *s;
    ngx_http_mdm_watch_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r->main, ngx_mdm_watch_module);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    s = (ngx_str_t *) ((char *) ctx + data);

    if (s->len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = s->len;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    v->data = s->data;

    return NGX_OK;
}


static ngx_int_t
ngx_http_mdm_watch_action_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                    *p;
    ngx_str_t                 *s, *reason;
    ngx_http_mdm_watch_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r->main, ngx_mdm_watch_module);

    if (ctx == NULL || ctx->action == NGX_HTTP_MDM_WATCH_ACTION_NONE) {
        v->not_found = 1;
        return NGX_OK;
    }

    s = &ngx_http_mdm_watch_actions[ctx->action];

    v->len = s->len;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    v->data = s->data;

    if (ctx->action != NGX_HTTP_MDM_WATCH_ACTION_REJECT) {
        return NGX_OK;
    }

    /* "reject:<reason>" */

    reason = &ngx_http_mdm_watch_reasons[ctx->reason];

    p = ngx_pnalloc(r->pool, s->len + 1 + reason->len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v->data = p;

    p = ngx_cpymem(p, s->data, s->len);
    *p++ = ':';
    p = ngx_cpymem(p, reason->data, reason->len);

    v->len = p - v->data;

    return NGX_OK;
}
