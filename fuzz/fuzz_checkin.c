
/*
 * Copyright (C) The ngx_mdm_watch_module authors
 */


/*
 * Bytes as the body of a check-in message.  A GetToken for watch pairing
 * goes on as the check-in phase takes it: its UDIDs and security token
 * are made canonical, a pairing token is issued and wrapped in the
 * TokenData plist, and that plist must give the same token back.
 */


#include "ngx_shim.h"
#include "ngx_http_mdm_watch.h"

#include <plist/plist.h>


#define NGX_FUZZ_EXPIRES  1700000000


static void ngx_fuzz_get_token(ngx_pool_t *pool,
    ngx_http_mdm_watch_checkin_t *ci);
static void ngx_fuzz_token_data(ngx_pool_t *pool, ngx_str_t *token);
static ngx_int_t ngx_fuzz_is(ngx_str_t *s, char *text);


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    ngx_fuzz_init();

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ngx_int_t                      rc;
    ngx_str_t                      body;
    ngx_pool_t                    *pool;
    ngx_http_mdm_watch_checkin_t   ci;

    pool = ngx_fuzz_pool();
    if (pool == NULL) {
        return 0;
    }

    body.data = (u_char *) data;
    body.len = size;

    rc = ngx_http_mdm_watch_checkin_parse(pool, &ngx_fuzz_log, &body, &ci);

    ngx_fuzz_check(rc == NGX_OK || rc == NGX_DECLINED,
                   "check-in parsed or declined");

    if (rc == NGX_OK) {
        ngx_fuzz_check(ci.message_type.data != NULL,
                       "a parsed check-in has a MessageType");

        if (ngx_fuzz_is(&ci.message_type, "GetToken")
            && ngx_fuzz_is(&ci.token_service_type, "com.apple.watch.pairing"))
        {
            ngx_fuzz_get_token(pool, &ci);
        }
    }

    ngx_destroy_pool(pool);

    return 0;
}


static void
ngx_fuzz_get_token(ngx_pool_t *pool, ngx_http_mdm_watch_checkin_t *ci)
{
    ngx_int_t                           rc;
    ngx_str_t                           secret, udid, token;
    ngx_http_mdm_watch_pairing_token_t  pt, parsed;

    if (!ci->token_parameters
        || ci->security_token.data == NULL
        || ci->phone_udid.data == NULL
        || ci->watch_udid.data == NULL
        || ci->udid.data == NULL)
    {
        return;
    }

    ngx_memzero(&pt, sizeof(ngx_http_mdm_watch_pairing_token_t));

    if (ngx_http_mdm_watch_udid_canonical(pool, &ci->phone_udid,
                                          &pt.phone_udid)
        != NGX_OK
        || ngx_http_mdm_watch_udid_canonical(pool, &ci->watch_udid,
                                             &pt.watch_udid)
           != NGX_OK
        || ngx_http_mdm_watch_udid_canonical(pool, &ci->udid, &udid)
           != NGX_OK
        || ngx_http_mdm_watch_security_token_canonical(pool,
                                                       &ci->security_token,
                                                       &pt.security_token)
           != NGX_OK)
    {
        return;
    }

    /* the module answers 403 to a GetToken sent for another phone */

    if (!ngx_fuzz_str_eq(&udid, &pt.phone_udid)) {
        return;
    }

    pt.expires = NGX_FUZZ_EXPIRES;
    ngx_str_set(&secret, NGX_FUZZ_SECRET);

    rc = ngx_http_mdm_watch_pairing_token_create(pool, &secret, &pt, &token);
    ngx_fuzz_check(rc == NGX_OK, "pairing token created");

    rc = ngx_http_mdm_watch_pairing_token_parse(pool, &secret, &token,
                                                &parsed);
    ngx_fuzz_check(rc == NGX_OK, "a pairing token issued parses");

    ngx_fuzz_check(parsed.expires == pt.expires
                   && ngx_fuzz_str_eq(&parsed.id, &pt.id)
                   && ngx_fuzz_str_eq(&parsed.watch_udid, &pt.watch_udid)
                   && ngx_fuzz_str_eq(&parsed.phone_udid, &pt.phone_udid)
                   && ngx_fuzz_str_eq(&parsed.security_token,
                                      &pt.security_token),
                   "a pairing token gives back what it was made of");

    ngx_fuzz_token_data(pool, &token);
}


/* the GetToken response body must give the same TokenData bytes back */

static void
ngx_fuzz_token_data(ngx_pool_t *pool, ngx_str_t *token)
{
    char        *p;
    plist_t      plist, node;
    uint64_t     len;
    ngx_str_t    body;

    ngx_fuzz_check(ngx_http_mdm_watch_token_data_plist(pool, token, &body)
                   == NGX_OK, "TokenData plist made");

    plist = NULL;
    plist_from_memory((char *) body.data, (uint32_t) body.len, &plist);
    ngx_fuzz_check(plist != NULL, "TokenData plist parses");

    node = plist_dict_get_item(plist, "TokenData");
    ngx_fuzz_check(node != NULL && plist_get_node_type(node) == PLIST_DATA,
                   "TokenData is data");

    len = 0;
    p = (char *) plist_get_data_ptr(node, &len);

    ngx_fuzz_check(len == token->len
                   && ngx_memcmp(p, token->data, token->len) == 0,
                   "TokenData holds the pairing token");

    plist_free(plist);
}


static ngx_int_t
ngx_fuzz_is(ngx_str_t *s, char *text)
{
    size_t  len;

    len = ngx_strlen(text);

    return s->data != NULL && s->len == len
           && ngx_memcmp(s->data, text, len) == 0;
}
