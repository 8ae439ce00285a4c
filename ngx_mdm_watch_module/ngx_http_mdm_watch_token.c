
/*
 * Copyright (C) The ngx_mdm_watch_module authors
 */


#include "ngx_http_mdm_watch.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>


#define NGX_HTTP_MDM_WATCH_TOKEN_VERSION  "v1."
#define NGX_HTTP_MDM_WATCH_TOKEN_FIELDS   5
#define NGX_HTTP_MDM_WATCH_MAC_LEN        SHA256_DIGEST_LENGTH


static ngx_int_t ngx_http_mdm_watch_upper(ngx_pool_t *pool, ngx_str_t *in,
    ngx_str_t *out);
static ngx_int_t ngx_http_mdm_watch_pairing_token_verify(ngx_pool_t *pool,
    ngx_str_t *secret, ngx_str_t *text, ngx_str_t *encoded);
static ngx_int_t ngx_http_mdm_watch_pairing_token_fields(ngx_pool_t *pool,
    ngx_str_t *payload, ngx_http_mdm_watch_pairing_token_t *pt);
static ngx_int_t ngx_http_mdm_watch_token_id(ngx_pool_t *pool,
    ngx_str_t *in, ngx_str_t *out);
static ngx_int_t ngx_http_mdm_watch_hmac(ngx_log_t *log, ngx_str_t *secret,
    ngx_str_t *text, u_char *mac);
static EVP_MAC_CTX *ngx_http_mdm_watch_hmac_keyed(ngx_log_t *log,
    ngx_str_t *secret);
static ngx_int_t ngx_http_mdm_watch_base64url_decode(ngx_pool_t *pool,
    ngx_str_t *in, ngx_str_t *out);


/*
 * HMAC() looks up the algorithm and the digest again for every MAC; a
 * process keeps one context keyed with the secret instead, and starts
 * it afresh for each MAC
 */

static EVP_MAC_CTX  *ngx_http_mdm_watch_mac_ctx;
static u_char       *ngx_http_mdm_watch_mac_key;
static size_t        ngx_http_mdm_watch_mac_key_len;


ngx_int_t
ngx_http_mdm_watch_security_token_create(u_char *buf)
{
    u_char         *p;
    ngx_uint_t      i;
    u_char          uuid[16];

    static u_char   hex[] = "0123456789ABCDEF";

    if (RAND_bytes(uuid, sizeof(uuid)) != 1) {
        ngx_http_mdm_watch_openssl_error(NGX_LOG_ALERT, ngx_cycle->log,
                                         "RAND_bytes");
        return NGX_ERROR;
    }

    /* RFC 4122: version 4 (random), variant 10xx */

    uuid[6] = (u_char) ((uuid[6] & 0x0f) | 0x40);
    uuid[8] = (u_char) ((uuid[8] & 0x3f) | 0x80);

    p = buf;

    for (i = 0; i < sizeof(uuid); i++) {

        if (i == 4 || i == 6 || i == 8 || i == 10) {
            *p++ = '-';
        }

        *p++ = hex[uuid[i] >> 4];
        *p++ = hex[uuid[i] & 0x0f];
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_mdm_watch_security_token_canonical(ngx_pool_t *pool, ngx_str_t *in,
    ngx_str_t *out)
{
    u_char  c;
    size_t  i;

    if (in->len != NGX_HTTP_MDM_WATCH_SECURITY_TOKEN_LEN) {
        return NGX_DECLINED;
    }

    for (i = 0; i < in->len; i++) {
        c = in->data[i];

        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-') {
                return NGX_DECLINED;
            }

            continue;
        }

        c = ngx_toupper(c);

        if ((c < '0' || c > '9') && (c < 'A' || c > 'F')) {
            return NGX_DECLINED;
        }
    }

    return ngx_http_mdm_watch_upper(pool, in, out);
}


ngx_int_t
ngx_http_mdm_watch_udid_canonical(ngx_pool_t *pool, ngx_str_t *in,
    ngx_str_t *out)
{
    u_char  c;
    size_t  i;

    if (in->len == 0 || in->len > NGX_HTTP_MDM_WATCH_UDID_MAX) {
        return NGX_DECLINED;
    }

    for (i = 0; i < in->len; i++) {
        c = ngx_toupper(in->data[i]);

        if ((c < '0' || c > '9') && (c < 'A' || c > 'Z') && c != '-') {
            return NGX_DECLINED;
        }
    }

    return ngx_http_mdm_watch_upper(pool, in, out);
}


/* identifiers are kept and compared in upper case */

static ngx_int_t
ngx_http_mdm_watch_upper(ngx_pool_t *pool, ngx_str_t *in, ngx_str_t *out)
{
    u_char  *p;
    size_t   i;

    p = ngx_pnalloc(pool, in->len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < in->len; i++) {
        p[i] = ngx_toupper(in->data[i]);
    }

    out->len = in->len;
    out->data = p;

    return NGX_OK;
}


ngx_int_t
ngx_http_mdm_watch_pairing_token_create(ngx_pool_t *pool, ngx_str_t *secret,
    ngx_http_mdm_watch_pairing_token_t *pt, ngx_str_t *out)
{
    u_char     *p;
    size_t      len;
    ngx_str_t   payload, encoded, text, mac;
    u_char      id[NGX_HTTP_MDM_WATCH_TOKEN_ID_LEN / 2];
    u_char      md[NGX_HTTP_MDM_WATCH_MAC_LEN];

    if (RAND_bytes(id, sizeof(id)) != 1) {
        ngx_http_mdm_watch_openssl_error(NGX_LOG_ALERT, pool->log,
                                         "RAND_bytes");
        return NGX_ERROR;
    }

    pt->id.data = ngx_pnalloc(pool, NGX_HTTP_MDM_WATCH_TOKEN_ID_LEN);
    if (pt->id.data == NULL) {
        return NGX_ERROR;
    }

    pt->id.len = ngx_hex_dump(pt->id.data, id, sizeof(id)) - pt->id.data;

    len = NGX_TIME_T_LEN + sizeof("|") - 1 + pt->id.len
          + sizeof("|") - 1 + pt->watch_udid.len
          + sizeof("|") - 1 + pt->phone_udid.len
          + sizeof("|") - 1 + pt->security_token.len;

    payload.data = ngx_pnalloc(pool, len);
    if (payload.data == NULL) {
        return NGX_ERROR;
    }

    payload.len = ngx_sprintf(payload.data, "%T|%V|%V|%V|%V", pt->expires,
                              &pt->id, &pt->watch_udid, &pt->phone_udid,
                              &pt->security_token)
                  - payload.data;

    len = sizeof(NGX_HTTP_MDM_WATCH_TOKEN_VERSION) - 1
          + ngx_base64_encoded_length(payload.len)
          + sizeof(".") - 1
          + ngx_base64_encoded_length(NGX_HTTP_MDM_WATCH_MAC_LEN);

    out->data = ngx_pnalloc(pool, len);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(out->data, NGX_HTTP_MDM_WATCH_TOKEN_VERSION,
                   sizeof(NGX_HTTP_MDM_WATCH_TOKEN_VERSION) - 1);

    encoded.data = p;
    ngx_encode_base64url(&encoded, &payload);
    p += encoded.len;

    text.data = out->data;
    text.len = p - out->data;

    if (ngx_http_mdm_watch_hmac(pool->log, secret, &text, md) != NGX_OK) {
        return NGX_ERROR;
    }

    *p++ = '.';

    mac.data = md;
    mac.len = NGX_HTTP_MDM_WATCH_MAC_LEN;

    encoded.data = p;
    ngx_encode_base64url(&encoded, &mac);
    p += encoded.len;

    out->len = p - out->data;

    if (out->len > NGX_HTTP_MDM_WATCH_PAIRING_TOKEN_MAX) {
        ngx_log_error(NGX_LOG_ALERT, pool->log, 0,
                      "mdm watch: pairing token of %uz bytes exceeds %d",
                      out->len, NGX_HTTP_MDM_WATCH_PAIRING_TOKEN_MAX);
        return NGX_ERROR;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, pool->log, 0,
                   "mdm watch pairing token created: id %V, %uz bytes",
                   &pt->id, out->len);

    return NGX_OK;
}


/*
 * what Redis keeps of a pairing token until it is used: "<watch> <phone>",
 * compared by the script that consumes it
 */

ngx_int_t
ngx_http_mdm_watch_pairing_token_record(ngx_pool_t *pool,
    ngx_http_mdm_watch_pairing_token_t *pt, ngx_str_t *record)
{
    record->len = pt->watch_udid.len + 1 + pt->phone_udid.len;

    record->data = ngx_pnalloc(pool, record->len);
    if (record->data == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(record->data, "%V %V", &pt->watch_udid, &pt->phone_udid);

    return NGX_OK;
}


ngx_int_t
ngx_http_mdm_watch_pairing_token_parse(ngx_pool_t *pool, ngx_str_t *secret,
    ngx_str_t *in, ngx_http_mdm_watch_pairing_token_t *pt)
{
    u_char     *dot, *last;
    ngx_int_t   rc;
    ngx_str_t   text, encoded, mac, payload;

    ngx_memzero(pt, sizeof(ngx_http_mdm_watch_pairing_token_t));

    if (in->len > NGX_HTTP_MDM_WATCH_PAIRING_TOKEN_MAX) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, pool->log, 0,
                       "mdm watch pairing token declined: %uz bytes",
                       in->len);
        return NGX_DECLINED;
    }

    if (in->len < sizeof(NGX_HTTP_MDM_WATCH_TOKEN_VERSION) - 1
        || ngx_memcmp(in->data, NGX_HTTP_MDM_WATCH_TOKEN_VERSION,
                      sizeof(NGX_HTTP_MDM_WATCH_TOKEN_VERSION) - 1) != 0)
    {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, pool->log, 0,
                       "mdm watch pairing token declined: unknown version");
        return NGX_DECLINED;
    }

    last = in->data + in->len;

    encoded.data = in->data + sizeof(NGX_HTTP_MDM_WATCH_TOKEN_VERSION) - 1;

    dot = ngx_strlchr(encoded.data, last, '.');

    if (dot == NULL || ngx_strlchr(dot + 1, last, '.') != NULL) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, pool->log, 0,
                       "mdm watch pairing token declined: "
                       "not three dot-separated parts");
        return NGX_DECLINED;
    }

    encoded.len = dot - encoded.data;

    text.data = in->data;
    text.len = dot - in->data;

    mac.data = dot + 1;
    mac.len = last - mac.data;

    /* nothing of the payload is looked at before its MAC is verified */

    rc = ngx_http_mdm_watch_pairing_token_verify(pool, secret, &text, &mac);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_mdm_watch_base64url_decode(pool, &encoded, &payload);

    if (rc == NGX_DECLINED) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, pool->log, 0,
                       "mdm watch pairing token declined: "
                       "payload is not base64url");
        return NGX_DECLINED;
    }

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_mdm_watch_pairing_token_fields(pool, &payload, pt);
}


static ngx_int_t
ngx_http_mdm_watch_pairing_token_verify(ngx_pool_t *pool, ngx_str_t *secret,
    ngx_str_t *text, ngx_str_t *encoded)
{
    ngx_int_t  rc;
    ngx_str_t  mac;
    u_char     md[NGX_HTTP_MDM_WATCH_MAC_LEN];

    rc = ngx_http_mdm_watch_base64url_decode(pool, encoded, &mac);

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (rc != NGX_OK || mac.len != NGX_HTTP_MDM_WATCH_MAC_LEN) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, pool->log, 0,
                       "mdm watch pairing token declined: malformed mac");
        return NGX_DECLINED;
    }

    if (ngx_http_mdm_watch_hmac(pool->log, secret, text, md) != NGX_OK) {
        return NGX_ERROR;
    }

    if (CRYPTO_memcmp(md, mac.data, NGX_HTTP_MDM_WATCH_MAC_LEN) != 0) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, pool->log, 0,
                       "mdm watch pairing token declined: mac mismatch");
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_mdm_watch_pairing_token_fields(ngx_pool_t *pool,
    ngx_str_t *payload, ngx_http_mdm_watch_pairing_token_t *pt)
{
    u_char      *p, *bar, *last;
    time_t       expires;
    ngx_int_t    rc;
    ngx_uint_t   i;
    ngx_str_t    field[NGX_HTTP_MDM_WATCH_TOKEN_FIELDS];

    p = payload->data;
    last = p + payload->len;

    for (i = 0; i < NGX_HTTP_MDM_WATCH_TOKEN_FIELDS; i++) {
        bar = ngx_strlchr(p, last, '|');

        if (i == NGX_HTTP_MDM_WATCH_TOKEN_FIELDS - 1) {
            if (bar != NULL) {
                goto invalid;
            }

            bar = last;

        } else if (bar == NULL) {
            goto invalid;
        }

        field[i].data = p;
        field[i].len = bar - p;

        p = bar + 1;
    }

    expires = ngx_atotm(field[0].data, field[0].len);
    if (expires == NGX_ERROR) {
        goto invalid;
    }

    rc = ngx_http_mdm_watch_token_id(pool, &field[1], &pt->id);
    if (rc != NGX_OK) {
        goto failed;
    }

    rc = ngx_http_mdm_watch_udid_canonical(pool, &field[2], &pt->watch_udid);
    if (rc != NGX_OK) {
        goto failed;
    }

    rc = ngx_http_mdm_watch_udid_canonical(pool, &field[3], &pt->phone_udid);
    if (rc != NGX_OK) {
        goto failed;
    }

    rc = ngx_http_mdm_watch_security_token_canonical(pool, &field[4],
                                                     &pt->security_token);
    if (rc != NGX_OK) {
        goto failed;
    }

    pt->expires = expires;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, pool->log, 0,
                   "mdm watch pairing token parsed: id %V, expires %T",
                   &pt->id, pt->expires);

    return NGX_OK;

failed:

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

invalid:

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, pool->log, 0,
                   "mdm watch pairing token declined: malformed payload");

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_mdm_watch_token_id(ngx_pool_t *pool, ngx_str_t *in, ngx_str_t *out)
{
    u_char  c;
    size_t  i;

    if (in->len != NGX_HTTP_MDM_WATCH_TOKEN_ID_LEN) {
        return NGX_DECLINED;
    }

    for (i = 0; i < in->len; i++) {
        c = in->data[i];

        if ((c < '0' || c > '9') && (c < 'a' || c > 'f')) {
            return NGX_DECLINED;
        }
    }

    out->data = ngx_pnalloc(pool, in->len);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(out->data, in->data, in->len);
    out->len = in->len;

    return NGX_OK;
}


static ngx_int_t
ngx_http_mdm_watch_hmac(ngx_log_t *log, ngx_str_t *secret, ngx_str_t *text,
    u_char *mac)
{
    size_t        len;
    EVP_MAC_CTX  *ctx;

    ctx = ngx_http_mdm_watch_hmac_keyed(log, secret);
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    if (EVP_MAC_init(ctx, NULL, 0, NULL) != 1
        || EVP_MAC_update(ctx, text->data, text->len) != 1
        || EVP_MAC_final(ctx, mac, &len, NGX_HTTP_MDM_WATCH_MAC_LEN) != 1)
    {
        ngx_http_mdm_watch_openssl_error(NGX_LOG_ALERT, log, "EVP_MAC");
        return NGX_ERROR;
    }

    if (len != NGX_HTTP_MDM_WATCH_MAC_LEN) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "mdm watch: HMAC-SHA256 gave %uz bytes", len);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static EVP_MAC_CTX *
ngx_http_mdm_watch_hmac_keyed(ngx_log_t *log, ngx_str_t *secret)
{
    u_char       *key;
    EVP_MAC      *hmac;
    EVP_MAC_CTX  *ctx;
    OSSL_PARAM    params[2];

    if (ngx_http_mdm_watch_mac_ctx != NULL
        && ngx_http_mdm_watch_mac_key_len == secret->len
        && CRYPTO_memcmp(ngx_http_mdm_watch_mac_key, secret->data,
                         secret->len)
           == 0)
    {
        return ngx_http_mdm_watch_mac_ctx;
    }

    hmac = EVP_MAC_fetch(NULL, OSSL_MAC_NAME_HMAC, NULL);
    if (hmac == NULL) {
        ngx_http_mdm_watch_openssl_error(NGX_LOG_ALERT, log,
                                         "EVP_MAC_fetch");
        return NULL;
    }

    ctx = EVP_MAC_CTX_new(hmac);
    EVP_MAC_free(hmac);

    if (ctx == NULL) {
        ngx_http_mdm_watch_openssl_error(NGX_LOG_ALERT, log,
                                         "EVP_MAC_CTX_new");
        return NULL;
    }

    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
                                                 (char *) "SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();

    key = OPENSSL_memdup(secret->data, secret->len);

    if (key == NULL
        || EVP_MAC_init(ctx, secret->data, secret->len, params) != 1)
    {
        ngx_http_mdm_watch_openssl_error(NGX_LOG_ALERT, log, "EVP_MAC_init");
        OPENSSL_clear_free(key, secret->len);
        EVP_MAC_CTX_free(ctx);
        return NULL;
    }

    /* a new secret, after a reload: the context of the old one goes */

    EVP_MAC_CTX_free(ngx_http_mdm_watch_mac_ctx);
    OPENSSL_clear_free(ngx_http_mdm_watch_mac_key,
                       ngx_http_mdm_watch_mac_key_len);

    ngx_http_mdm_watch_mac_ctx = ctx;
    ngx_http_mdm_watch_mac_key = key;
    ngx_http_mdm_watch_mac_key_len = secret->len;

    return ctx;
}


static ngx_int_t
ngx_http_mdm_watch_base64url_decode(ngx_pool_t *pool, ngx_str_t *in,
    ngx_str_t *out)
{
    ngx_str_t  check;

    out->data = ngx_pnalloc(pool, ngx_base64_decoded_length(in->len));
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    if (ngx_decode_base64url(out, in) != NGX_OK) {
        return NGX_DECLINED;
    }

    /*
     * the decoder stops at the first "=" and ignores unused low bits,
     * so several texts decode to the same bytes: accept only the one
     * the encoder writes
     */

    check.data = ngx_pnalloc(pool, ngx_base64_encoded_length(out->len));
    if (check.data == NULL) {
        return NGX_ERROR;
    }

    ngx_encode_base64url(&check, out);

    if (check.len != in->len
        || ngx_memcmp(check.data, in->data, in->len) != 0)
    {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/*
 * the context is kept for the life of the worker; nginx unloads the
 * module when the worker exits, which would leave it unreachable
 */

void
ngx_http_mdm_watch_hmac_free(void)
{
    EVP_MAC_CTX_free(ngx_http_mdm_watch_mac_ctx);
    OPENSSL_clear_free(ngx_http_mdm_watch_mac_key,
                       ngx_http_mdm_watch_mac_key_len);

    ngx_http_mdm_watch_mac_ctx = NULL;
    ngx_http_mdm_watch_mac_key = NULL;
    ngx_http_mdm_watch_mac_key_len = 0;
}
