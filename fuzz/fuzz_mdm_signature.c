
/*
 * Copyright (C) The ngx_mdm_watch_module authors
 */


/*
 * A Mdm-Signature header and the check-in body it signs.  The first two
 * bytes give the length of the header, big-endian, and the bytes after
 * the header are the body.  When the top bit of the length is set, the
 * header bytes are the CMS itself, which the target encodes in base64
 * first: most mutations of base64 text only break the base64, while
 * mutations of the DER reach the CMS parser and CMS_verify().
 */


#include "ngx_shim.h"
#include "ngx_http_mdm_watch.h"

#include <openssl/err.h>


#define NGX_FUZZ_DER  (size_t) 0x8000


static ngx_int_t ngx_fuzz_signature(ngx_pool_t *pool, ngx_str_t *header,
    ngx_str_t *body, ngx_str_t *identity);
static void ngx_fuzz_verified(ngx_pool_t *pool, ngx_str_t *header,
    ngx_str_t *body, ngx_str_t *identity);


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    ngx_fuzz_init();

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t       n, len;
    ngx_int_t    rc;
    ngx_str_t    header, body, der, identity;
    ngx_pool_t  *pool;

    if (size < 2) {
        return 0;
    }

    n = ((size_t) data[0] << 8) | data[1];
    len = n & (NGX_FUZZ_DER - 1);

    data += 2;
    size -= 2;

    der.data = (u_char *) data;
    der.len = ngx_min(len, size);

    body.data = (u_char *) data + der.len;
    body.len = size - der.len;

    pool = ngx_fuzz_pool();
    if (pool == NULL) {
        return 0;
    }

    if (n & NGX_FUZZ_DER) {
        header.data = ngx_pnalloc(pool, ngx_base64_encoded_length(der.len));
        if (header.data == NULL) {
            ngx_destroy_pool(pool);
            return 0;
        }

        ngx_encode_base64(&header, &der);

    } else {
        header = der;
    }

    rc = ngx_fuzz_signature(pool, &header, &body, &identity);

    if (rc == NGX_OK) {
        ngx_fuzz_verified(pool, &header, &body, &identity);
    }

    ngx_destroy_pool(pool);

    return 0;
}


static ngx_int_t
ngx_fuzz_signature(ngx_pool_t *pool, ngx_str_t *header, ngx_str_t *body,
    ngx_str_t *identity)
{
    size_t     i;
    ngx_int_t  rc;

    ngx_str_null(identity);

    rc = ngx_http_mdm_watch_mdm_signature(pool, &ngx_fuzz_log, header, body,
                                          identity);

    ngx_fuzz_check(rc == NGX_OK || rc == NGX_DECLINED,
                   "Mdm-Signature verified or declined");

    ngx_fuzz_check(ERR_peek_error() == 0,
                   "the OpenSSL error queue left empty");

    if (rc != NGX_OK) {
        return rc;
    }

    ngx_fuzz_check(identity->len == 64, "identity of 64 characters");

    for (i = 0; i < identity->len; i++) {
        ngx_fuzz_check((identity->data[i] >= '0' && identity->data[i] <= '9')
                       || (identity->data[i] >= 'a'
                           && identity->data[i] <= 'f'),
                       "identity in lower-case hex");
    }

    return NGX_OK;
}


/*
 * a signature that verifies gives the same identity again, and does not
 * verify another body: here the body with its last byte changed, or one
 * byte when it was empty
 */

static void
ngx_fuzz_verified(ngx_pool_t *pool, ngx_str_t *header, ngx_str_t *body,
    ngx_str_t *identity)
{
    ngx_int_t  rc;
    ngx_str_t  other, again;

    rc = ngx_fuzz_signature(pool, header, body, &again);

    ngx_fuzz_check(rc == NGX_OK && ngx_fuzz_str_eq(&again, identity),
                   "a signature verifies again with the same identity");

    other.len = body->len ? body->len : 1;

    other.data = ngx_pnalloc(pool, other.len);
    if (other.data == NULL) {
        return;
    }

    if (body->len) {
        ngx_memcpy(other.data, body->data, body->len);
        other.data[other.len - 1] ^= 0x01;

    } else {
        other.data[0] = '\0';
    }

    rc = ngx_fuzz_signature(pool, header, &other, &again);

    ngx_fuzz_check(rc == NGX_DECLINED,
                   "a signature does not verify another body");
}
