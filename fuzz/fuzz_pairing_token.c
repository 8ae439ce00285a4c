
/*
 * Copyright (C) The ngx_mdm_watch_module authors
 */


/*
 * Bytes as a pairing token, the PAIRING_TOKEN of the machine info, and
 * as the payload of a token: the payload is only read once its MAC is
 * verified, so the target also signs the bytes with the test secret to
 * reach that code.  Every "|"-separated slice goes through the UDID and
 * security token canonicalisation too.
 */


#include "ngx_shim.h"
#include "ngx_http_mdm_watch.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>


#define NGX_FUZZ_MAC_LEN  32


static void ngx_fuzz_token(ngx_pool_t *pool, ngx_str_t *in);
static void ngx_fuzz_payload(ngx_pool_t *pool, ngx_str_t *payload);
static void ngx_fuzz_parsed(ngx_pool_t *pool,
    ngx_http_mdm_watch_pairing_token_t *pt);
static void ngx_fuzz_slices(ngx_pool_t *pool, ngx_str_t *in);
static void ngx_fuzz_canonical(ngx_pool_t *pool, ngx_str_t *in);
static void ngx_fuzz_upper(ngx_str_t *in, ngx_str_t *out);


static ngx_str_t  ngx_fuzz_secret = ngx_string(NGX_FUZZ_SECRET);


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    ngx_fuzz_init();

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ngx_str_t    in;
    ngx_pool_t  *pool;

    pool = ngx_fuzz_pool();
    if (pool == NULL) {
        return 0;
    }

    in.data = (u_char *) data;
    in.len = size;

    ngx_fuzz_token(pool, &in);
    ngx_fuzz_payload(pool, &in);
    ngx_fuzz_slices(pool, &in);

    ngx_destroy_pool(pool);

    return 0;
}


static void
ngx_fuzz_token(ngx_pool_t *pool, ngx_str_t *in)
{
    ngx_int_t                           rc;
    ngx_http_mdm_watch_pairing_token_t  pt;

    rc = ngx_http_mdm_watch_pairing_token_parse(pool, &ngx_fuzz_secret, in,
                                                &pt);

    ngx_fuzz_check(rc == NGX_OK || rc == NGX_DECLINED,
                   "pairing token parsed or declined");

    if (rc == NGX_OK) {
        ngx_fuzz_parsed(pool, &pt);
    }
}


/* "v1." base64url(payload) "." base64url(HMAC-SHA256(secret, "v1." ...)) */

static void
ngx_fuzz_payload(ngx_pool_t *pool, ngx_str_t *payload)
{
    u_char       *p;
    ngx_str_t     token, encoded, mac;
    unsigned int  len;
    u_char        md[NGX_FUZZ_MAC_LEN];

    token.data = ngx_pnalloc(pool, sizeof("v1..") - 1
                             + ngx_base64_encoded_length(payload->len)
                             + ngx_base64_encoded_length(sizeof(md)));
    if (token.data == NULL) {
        return;
    }

    p = ngx_cpymem(token.data, "v1.", sizeof("v1.") - 1);

    encoded.data = p;
    ngx_encode_base64url(&encoded, payload);
    p += encoded.len;

    if (HMAC(EVP_sha256(), ngx_fuzz_secret.data, (int) ngx_fuzz_secret.len,
             token.data, p - token.data, md, &len)
        == NULL)
    {
        abort();
    }

    *p++ = '.';

    mac.data = md;
    mac.len = len;

    encoded.data = p;
    ngx_encode_base64url(&encoded, &mac);
    p += encoded.len;

    token.len = p - token.data;

    ngx_fuzz_token(pool, &token);
}


/* a token that parses is canonical: issued again, it parses the same */

static void
ngx_fuzz_parsed(ngx_pool_t *pool, ngx_http_mdm_watch_pairing_token_t *pt)
{
    ngx_int_t                           rc;
    ngx_str_t                           token, upper;
    ngx_http_mdm_watch_pairing_token_t  again;

    ngx_fuzz_check(pt->id.len == NGX_HTTP_MDM_WATCH_TOKEN_ID_LEN,
                   "token id of 32 characters");
    ngx_fuzz_check(pt->security_token.len
                   == NGX_HTTP_MDM_WATCH_SECURITY_TOKEN_LEN,
                   "security token of 36 characters");

    upper.data = ngx_pnalloc(pool, NGX_HTTP_MDM_WATCH_UDID_MAX);
    if (upper.data == NULL) {
        return;
    }

    ngx_fuzz_upper(&pt->watch_udid, &upper);
    ngx_fuzz_check(ngx_fuzz_str_eq(&upper, &pt->watch_udid),
                   "watch UDID in upper case");

    ngx_fuzz_upper(&pt->phone_udid, &upper);
    ngx_fuzz_check(ngx_fuzz_str_eq(&upper, &pt->phone_udid),
                   "phone UDID in upper case");

    rc = ngx_http_mdm_watch_pairing_token_create(pool, &ngx_fuzz_secret, pt,
                                                 &token);
    ngx_fuzz_check(rc == NGX_OK, "pairing token issued again");

    rc = ngx_http_mdm_watch_pairing_token_parse(pool, &ngx_fuzz_secret,
                                                &token, &again);
    ngx_fuzz_check(rc == NGX_OK, "a pairing token issued parses");

    ngx_fuzz_check(again.expires == pt->expires
                   && ngx_fuzz_str_eq(&again.id, &pt->id)
                   && ngx_fuzz_str_eq(&again.watch_udid, &pt->watch_udid)
                   && ngx_fuzz_str_eq(&again.phone_udid, &pt->phone_udid)
                   && ngx_fuzz_str_eq(&again.security_token,
                                      &pt->security_token),
                   "a pairing token gives back what it was made of");
}


static void
ngx_fuzz_slices(ngx_pool_t *pool, ngx_str_t *in)
{
    u_char     *p, *bar, *last;
    ngx_str_t   slice;

    ngx_fuzz_canonical(pool, in);

    p = in->data;
    last = in->data + in->len;

    while (p < last) {
        bar = ngx_strlchr(p, last, '|');
        if (bar == NULL) {
            bar = last;
        }

        slice.data = p;
        slice.len = bar - p;

        ngx_fuzz_canonical(pool, &slice);

        p = bar + 1;
    }
}


/* canonical forms are the input in upper case, and canonical themselves */

static void
ngx_fuzz_canonical(ngx_pool_t *pool, ngx_str_t *in)
{
    ngx_int_t  rc;
    ngx_str_t  out, again, upper;

    upper.data = ngx_pnalloc(pool, in->len);
    if (upper.data == NULL) {
        return;
    }

    ngx_fuzz_upper(in, &upper);

    rc = ngx_http_mdm_watch_udid_canonical(pool, in, &out);
    ngx_fuzz_check(rc == NGX_OK || rc == NGX_DECLINED,
                   "UDID canonical or declined");

    if (rc == NGX_OK) {
        ngx_fuzz_check(ngx_fuzz_str_eq(&out, &upper), "UDID in upper case");

        rc = ngx_http_mdm_watch_udid_canonical(pool, &out, &again);
        ngx_fuzz_check(rc == NGX_OK && ngx_fuzz_str_eq(&again, &out),
                       "a canonical UDID is canonical");
    }

    rc = ngx_http_mdm_watch_security_token_canonical(pool, in, &out);
    ngx_fuzz_check(rc == NGX_OK || rc == NGX_DECLINED,
                   "security token canonical or declined");

    if (rc == NGX_OK) {
        ngx_fuzz_check(ngx_fuzz_str_eq(&out, &upper),
                       "security token in upper case");

        rc = ngx_http_mdm_watch_security_token_canonical(pool, &out, &again);
        ngx_fuzz_check(rc == NGX_OK && ngx_fuzz_str_eq(&again, &out),
                       "a canonical security token is canonical");
    }
}


static void
ngx_fuzz_upper(ngx_str_t *in, ngx_str_t *out)
{
    size_t  i;

    for (i = 0; i < in->len; i++) {
        out->data[i] = ngx_toupper(in->data[i]);
    }

    out->len = in->len;
}
