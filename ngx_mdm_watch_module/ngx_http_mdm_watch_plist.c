
/*
 * Copyright (C) The ngx_mdm_watch_module authors
 */


#include "ngx_http_mdm_watch.h"

#include <plist/plist.h>


typedef struct {
    const char                      *name;
    size_t                           offset;
} ngx_http_mdm_watch_checkin_key_t;


static ngx_int_t ngx_http_mdm_watch_checkin_fields(ngx_pool_t *pool,
    ngx_log_t *log, plist_t dict, ngx_http_mdm_watch_checkin_t *ci);
static ngx_int_t ngx_http_mdm_watch_checkin_strings(ngx_pool_t *pool,
    plist_t dict, ngx_http_mdm_watch_checkin_key_t *keys,
    ngx_http_mdm_watch_checkin_t *ci);
static ngx_int_t ngx_http_mdm_watch_checkin_string(ngx_pool_t *pool,
    plist_t dict, const char *key, ngx_str_t *out);


static ngx_http_mdm_watch_checkin_key_t  ngx_http_mdm_watch_checkin_keys[] = {
    { "MessageType", offsetof(ngx_http_mdm_watch_checkin_t, message_type) },
    { "UDID", offsetof(ngx_http_mdm_watch_checkin_t, udid) },
    { "TokenServiceType",
      offsetof(ngx_http_mdm_watch_checkin_t, token_service_type) },
    { NULL, 0 }
};


static ngx_http_mdm_watch_checkin_key_t
    ngx_http_mdm_watch_token_parameters_keys[] =
{
    { "SecurityToken",
      offsetof(ngx_http_mdm_watch_checkin_t, security_token) },
    { "PhoneUDID", offsetof(ngx_http_mdm_watch_checkin_t, phone_udid) },
    { "WatchUDID", offsetof(ngx_http_mdm_watch_checkin_t, watch_udid) },
    { NULL, 0 }
};


static u_char  ngx_http_mdm_watch_token_data_head[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" "
    "\"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n"
    "<plist version=\"1.0\">\n"
    "<dict>\n"
    "\t<key>TokenData</key>\n"
    "\t<data>";

static u_char  ngx_http_mdm_watch_token_data_tail[] =
    "</data>\n"
    "</dict>\n"
    "</plist>\n";


ngx_int_t
ngx_http_mdm_watch_checkin_parse(ngx_pool_t *pool, ngx_log_t *log,
    ngx_str_t *body, ngx_http_mdm_watch_checkin_t *ci)
{
    plist_t      plist;
    ngx_int_t    rc;
    const char  *error;

    ngx_memzero(ci, sizeof(ngx_http_mdm_watch_checkin_t));

    /* devices send check-ins as XML: binary plists are passed unparsed */

    if (ngx_http_mdm_watch_plist_parse(body, 0, (void **) &plist, &error)
        != NGX_OK)
    {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, log, 0,
                       "mdm watch check-in not parsed: %s", error);
        return NGX_DECLINED;
    }

    if (plist_get_node_type(plist) != PLIST_DICT) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, log, 0,
                       "mdm watch check-in is not a dictionary");
        plist_free(plist);
        return NGX_DECLINED;
    }

    rc = ngx_http_mdm_watch_checkin_fields(pool, log, plist, ci);

    plist_free(plist);

    return rc;
}


static ngx_int_t
ngx_http_mdm_watch_checkin_fields(ngx_pool_t *pool, ngx_log_t *log,
    plist_t dict, ngx_http_mdm_watch_checkin_t *ci)
{
    plist_t                            node;
    ngx_int_t                          rc;
    ngx_http_mdm_watch_checkin_key_t  *keys;

    node = plist_dict_get_item(dict, "MessageType");

    if (node == NULL || plist_get_node_type(node) != PLIST_STRING) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, log, 0,
                       "mdm watch check-in has no MessageType string");
        return NGX_DECLINED;
    }

    keys = ngx_http_mdm_watch_checkin_keys;

    rc = ngx_http_mdm_watch_checkin_strings(pool, dict, keys, ci);
    if (rc != NGX_OK) {
        return rc;
    }

    node = plist_dict_get_item(dict, "TokenParameters");

    if (node != NULL && plist_get_node_type(node) == PLIST_DICT) {
        ci->token_parameters = 1;

        keys = ngx_http_mdm_watch_token_parameters_keys;

        rc = ngx_http_mdm_watch_checkin_strings(pool, node, keys, ci);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, log, 0,
                   "mdm watch check-in: \"%V\", udid \"%V\", "
                   "token service type \"%V\", token parameters: %ui",
                   &ci->message_type, &ci->udid, &ci->token_service_type,
                   (ngx_uint_t) ci->token_parameters);

    return NGX_OK;
}


static ngx_int_t
ngx_http_mdm_watch_checkin_strings(ngx_pool_t *pool, plist_t dict,
    ngx_http_mdm_watch_checkin_key_t *keys, ngx_http_mdm_watch_checkin_t *ci)
{
    ngx_int_t                          rc;
    ngx_str_t                         *value;
    ngx_http_mdm_watch_checkin_key_t  *key;

    for (key = keys; key->name; key++) {
        value = (ngx_str_t *) ((u_char *) ci + key->offset);

        rc = ngx_http_mdm_watch_checkin_string(pool, dict, key->name, value);
        if (rc != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* a copy of a string value; data == NULL when missing or not a string */

static ngx_int_t
ngx_http_mdm_watch_checkin_string(ngx_pool_t *pool, plist_t dict,
    const char *key, ngx_str_t *out)
{
    plist_t      node;
    uint64_t     len;
    const char  *value;

    ngx_str_null(out);

    node = plist_dict_get_item(dict, key);

    if (node == NULL || plist_get_node_type(node) != PLIST_STRING) {
        return NGX_OK;
    }

    len = 0;

    value = plist_get_string_ptr(node, &len);
    if (value == NULL || len == 0) {
        ngx_str_set(out, "");
        return NGX_OK;
    }

    out->data = ngx_pnalloc(pool, (size_t) len);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(out->data, value, (size_t) len);
    out->len = (size_t) len;

    return NGX_OK;
}


ngx_int_t
ngx_http_mdm_watch_token_data_plist(ngx_pool_t *pool, ngx_str_t *token_data,
    ngx_str_t *out)
{
    u_char     *p;
    size_t      len;
    ngx_str_t   encoded;

    len = sizeof(ngx_http_mdm_watch_token_data_head) - 1
          + ngx_base64_encoded_length(token_data->len)
          + sizeof(ngx_http_mdm_watch_token_data_tail) - 1;

    out->data = ngx_pnalloc(pool, len);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(out->data, ngx_http_mdm_watch_token_data_head,
                   sizeof(ngx_http_mdm_watch_token_data_head) - 1);

    encoded.data = p;
    ngx_encode_base64(&encoded, token_data);
    p += encoded.len;

    p = ngx_cpymem(p, ngx_http_mdm_watch_token_data_tail,
                   sizeof(ngx_http_mdm_watch_token_data_tail) - 1);

    out->len = p - out->data;

    return NGX_OK;
}
