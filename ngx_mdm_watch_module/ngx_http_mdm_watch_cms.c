
/*
 * Copyright (C) The ngx_mdm_watch_module authors
 */


#include "ngx_http_mdm_watch.h"

#include <openssl/bio.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509_vfy.h>

#include <plist/plist.h>


/* machine info is about a kilobyte; this bounds what libplist is given */
#define NGX_HTTP_MDM_WATCH_MACHINE_INFO_MAX  (1024 * 1024)

/* a signature with its certificate is a few kilobytes of base64 */
#define NGX_HTTP_MDM_WATCH_SIGNATURE_MAX     (64 * 1024)


typedef struct {
    const char                      *name;
    size_t                           offset;
} ngx_http_mdm_watch_machine_info_key_t;


static u_char *ngx_http_mdm_watch_openssl_reasons(u_char *p, u_char *last);
static void ngx_http_mdm_watch_cms_trusted_cleanup(void *data);
static CMS_ContentInfo *ngx_http_mdm_watch_cms_parse(ngx_log_t *log,
    const char *subject, ngx_str_t *der);
static ngx_int_t ngx_http_mdm_watch_cms_content(ngx_log_t *log,
    CMS_ContentInfo *cms, ngx_str_t *content);
static ngx_int_t ngx_http_mdm_watch_cms_verify(ngx_log_t *log,
    CMS_ContentInfo *cms, X509_STORE *trusted);
static void ngx_http_mdm_watch_cms_reject(ngx_log_t *log,
    const char *subject, const char *what);
static ngx_int_t ngx_http_mdm_watch_machine_info_fields(ngx_pool_t *pool,
    ngx_log_t *log, plist_t dict, ngx_http_mdm_watch_machine_info_t *mi);
static ngx_int_t ngx_http_mdm_watch_machine_info_string(ngx_pool_t *pool,
    plist_t dict, const char *key, ngx_str_t *out);
static ngx_int_t ngx_http_mdm_watch_machine_info_pairing_token(
    ngx_pool_t *pool, plist_t dict, ngx_str_t *out);
static ngx_int_t ngx_http_mdm_watch_copy(ngx_pool_t *pool, const char *data,
    uint64_t len, ngx_str_t *out);
static ngx_int_t ngx_http_mdm_watch_signature_decode(ngx_pool_t *pool,
    ngx_log_t *log, ngx_str_t *header, ngx_str_t *der);
static ngx_int_t ngx_http_mdm_watch_signature_verify(ngx_pool_t *pool,
    ngx_log_t *log, CMS_ContentInfo *cms, ngx_str_t *body,
    ngx_str_t *identity);
static ngx_int_t ngx_http_mdm_watch_fingerprint(ngx_pool_t *pool,
    ngx_log_t *log, X509 *x509, ngx_str_t *out);


/* the machine info strings the module keeps, besides UDID */

static ngx_http_mdm_watch_machine_info_key_t
    ngx_http_mdm_watch_machine_info_keys[] =
{
    { "SERIAL", offsetof(ngx_http_mdm_watch_machine_info_t, serial) },
    { "PRODUCT", offsetof(ngx_http_mdm_watch_machine_info_t, product) },
    { "VERSION", offsetof(ngx_http_mdm_watch_machine_info_t, version) },
    { "OS_VERSION",
      offsetof(ngx_http_mdm_watch_machine_info_t, os_version) },
    { NULL, 0 }
};


void
ngx_http_mdm_watch_openssl_error(ngx_uint_t level, ngx_log_t *log,
    const char *call)
{
    u_char  *p, *last;
    u_char   errstr[NGX_MAX_CONF_ERRSTR];

    if (log->log_level < level) {
        ERR_clear_error();
        return;
    }

    last = errstr + NGX_MAX_CONF_ERRSTR;

    p = ngx_snprintf(errstr, last - errstr, "%s() failed", call);
    p = ngx_http_mdm_watch_openssl_reasons(p, last);

    ngx_log_error(level, log, 0, "%*s", p - errstr, errstr);
}


/*
 * appends " (SSL: ...)" with every error of the OpenSSL queue, joined
 * by ":", and leaves the queue empty; appends nothing if it was empty
 */

static u_char *
ngx_http_mdm_watch_openssl_reasons(u_char *p, u_char *last)
{
    int             flags;
    u_char         *end;
    const char     *data, *sep;
    unsigned long   n;
    char            reason[256];

    /* one byte is kept for the closing parenthesis */

    end = last - 1;
    sep = " (SSL: ";

    for ( ;; ) {
        n = ERR_get_error_all(NULL, NULL, NULL, &data, &flags);
        if (n == 0) {
            break;
        }

        if (p >= end) {
            continue;
        }

        ERR_error_string_n(n, reason, sizeof(reason));

        p = ngx_snprintf(p, end - p, "%s%s", sep, reason);

        if (data != NULL && *data != '\0' && (flags & ERR_TXT_STRING)) {
            p = ngx_snprintf(p, end - p, ":%s", data);
        }

        sep = ":";
    }

    if (sep[0] == ':') {
        *p++ = ')';
    }

    return p;
}


X509_STORE *
ngx_http_mdm_watch_cms_trusted(ngx_conf_t *cf, ngx_str_t *file)
{
    BIO                 *bio;
    X509                *x509;
    u_char              *p, *last;
    ngx_uint_t           n;
    X509_STORE          *store;
    unsigned long        err;
    ngx_pool_cleanup_t  *cln;
    u_char               errstr[NGX_MAX_CONF_ERRSTR];

    if (ngx_conf_full_name(cf->cycle, file, 1) != NGX_OK) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    store = X509_STORE_new();
    if (store == NULL) {
        ngx_http_mdm_watch_openssl_error(NGX_LOG_EMERG, cf->log,
                                         "X509_STORE_new");
        return NULL;
    }

    cln->handler = ngx_http_mdm_watch_cms_trusted_cleanup;
    cln->data = store;

    /* Apple device identity certificates carry no S/MIME key usage */

    if (X509_STORE_set_purpose(store, X509_PURPOSE_ANY) != 1) {
        ngx_http_mdm_watch_openssl_error(NGX_LOG_EMERG, cf->log,
                                         "X509_STORE_set_purpose");
        return NULL;
    }

    last = errstr + NGX_MAX_CONF_ERRSTR;

    bio = BIO_new_file((char *) file->data, "r");
    if (bio == NULL) {
        p = ngx_http_mdm_watch_openssl_reasons(errstr, last);
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "cannot read trusted certificates from \"%s\"%*s",
                           file->data, p - errstr, errstr);
        return NULL;
    }

    for (n = 0; /* void */; n++) {

        x509 = PEM_read_bio_X509(bio, NULL, NULL, NULL);

        if (x509 == NULL) {
            err = ERR_peek_last_error();

            if (ERR_GET_LIB(err) == ERR_LIB_PEM
                && ERR_GET_REASON(err) == PEM_R_NO_START_LINE)
            {
                /* end of file */
                ERR_clear_error();
                break;
            }

            p = ngx_http_mdm_watch_openssl_reasons(errstr, last);
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "cannot read certificate #%ui from \"%s\"%*s",
                               n + 1, file->data, p - errstr, errstr);
            BIO_free(bio);
            return NULL;
        }

        if (X509_STORE_add_cert(store, x509) != 1) {
            p = ngx_http_mdm_watch_openssl_reasons(errstr, last);
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "cannot trust certificate #%ui from \"%s\"%*s",
                               n + 1, file->data, p - errstr, errstr);
            X509_free(x509);
            BIO_free(bio);
            return NULL;
        }

        X509_free(x509);
    }

    BIO_free(bio);

    if (n == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "no certificates in \"%s\"", file->data);
        return NULL;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, cf->log, 0,
                   "mdm watch trusted certificates: %ui from \"%s\"",
                   n, file->data);

    return store;
}


static void
ngx_http_mdm_watch_cms_trusted_cleanup(void *data)
{
    X509_STORE  *store = data;

    X509_STORE_free(store);
}


ngx_int_t
ngx_http_mdm_watch_machine_info(ngx_pool_t *pool, ngx_log_t *log,
    ngx_str_t *body, X509_STORE *trusted,
    ngx_http_mdm_watch_machine_info_t *mi)
{
    plist_t           plist;
    ngx_int_t         rc;
    ngx_str_t         content;
    const char       *error;
    CMS_ContentInfo  *cms;

    ngx_memzero(mi, sizeof(ngx_http_mdm_watch_machine_info_t));

    mi->reason = NGX_HTTP_MDM_WATCH_REASON_BAD_CMS;

    cms = ngx_http_mdm_watch_cms_parse(log, "machine info", body);
    if (cms == NULL) {
        return NGX_HTTP_BAD_REQUEST;
    }

    rc = ngx_http_mdm_watch_cms_content(log, cms, &content);

    if (rc == NGX_OK && trusted != NULL) {
        mi->reason = NGX_HTTP_MDM_WATCH_REASON_UNTRUSTED_SIGNER;
        rc = ngx_http_mdm_watch_cms_verify(log, cms, trusted);
    }

    if (rc == NGX_OK) {
        mi->reason = NGX_HTTP_MDM_WATCH_REASON_BAD_PLIST;
    }

    plist = NULL;

    if (rc == NGX_OK
        && ngx_http_mdm_watch_plist_parse(&content, 1, (void **) &plist,
                                          &error)
           != NGX_OK)
    {
        ngx_log_error(NGX_LOG_INFO, log, 0,
                      "mdm watch: machine info refused: %s", error);
        rc = NGX_HTTP_BAD_REQUEST;
    }

    CMS_ContentInfo_free(cms);

    if (rc != NGX_OK) {
        return rc;
    }

    if (plist_get_node_type(plist) != PLIST_DICT) {
        ngx_log_error(NGX_LOG_INFO, log, 0,
                      "mdm watch: machine info is not a dictionary");
        plist_free(plist);
        return NGX_HTTP_BAD_REQUEST;
    }

    rc = ngx_http_mdm_watch_machine_info_fields(pool, log, plist, mi);

    plist_free(plist);

    return rc;
}


/* CMS SignedData from a client; subject names it in the log */

static CMS_ContentInfo *
ngx_http_mdm_watch_cms_parse(ngx_log_t *log, const char *subject,
    ngx_str_t *der)
{
    const u_char     *p;
    CMS_ContentInfo  *cms;

    if (der->len > NGX_MAX_INT32_VALUE) {
        ngx_http_mdm_watch_cms_reject(log, subject, "is too large");
        return NULL;
    }

    p = der->data;

    cms = d2i_CMS_ContentInfo(NULL, &p, (long) der->len);
    if (cms == NULL) {
        ngx_http_mdm_watch_cms_reject(log, subject, "is not DER or BER CMS");
        return NULL;
    }

    if (p != der->data + der->len) {
        ngx_http_mdm_watch_cms_reject(log, subject, "has data after its CMS");
        CMS_ContentInfo_free(cms);
        return NULL;
    }

    if (OBJ_obj2nid(CMS_get0_type(cms)) != NID_pkcs7_signed) {
        ngx_http_mdm_watch_cms_reject(log, subject, "is not CMS SignedData");
        CMS_ContentInfo_free(cms);
        return NULL;
    }

    return cms;
}


static ngx_int_t
ngx_http_mdm_watch_cms_content(ngx_log_t *log, CMS_ContentInfo *cms,
    ngx_str_t *content)
{
    int                  len;
    ASN1_OCTET_STRING  **pos;

    pos = CMS_get0_content(cms);

    if (pos == NULL || *pos == NULL) {
        ngx_http_mdm_watch_cms_reject(log, "machine info",
                                      "has no attached content");
        return NGX_HTTP_BAD_REQUEST;
    }

    len = ASN1_STRING_length(*pos);

    if (len <= 0) {
        ngx_http_mdm_watch_cms_reject(log, "machine info",
                                      "has empty content");
        return NGX_HTTP_BAD_REQUEST;
    }

    if (len > NGX_HTTP_MDM_WATCH_MACHINE_INFO_MAX) {
        ngx_http_mdm_watch_cms_reject(log, "machine info",
                                      "content is too large");
        return NGX_HTTP_BAD_REQUEST;
    }

    content->data = (u_char *) ASN1_STRING_get0_data(*pos);
    content->len = len;

    return NGX_OK;
}


static ngx_int_t
ngx_http_mdm_watch_cms_verify(ngx_log_t *log, CMS_ContentInfo *cms,
    X509_STORE *trusted)
{
    if (CMS_verify(cms, NULL, trusted, NULL, NULL, CMS_BINARY) != 1) {
        ngx_http_mdm_watch_cms_reject(log, "machine info",
                                      "signature is not trusted");
        return NGX_HTTP_FORBIDDEN;
    }

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, log, 0,
                   "mdm watch machine info signature verified");

    return NGX_OK;
}


/*
 * logs why the machine info or a Mdm-Signature, the subject, was refused
 * at the info level, as a client mistake, with the reasons OpenSSL gave,
 * and empties the error queue
 */

static void
ngx_http_mdm_watch_cms_reject(ngx_log_t *log, const char *subject,
    const char *what)
{
    u_char  *p, *last;
    u_char   errstr[NGX_MAX_CONF_ERRSTR];

    if (log->log_level < NGX_LOG_INFO) {
        ERR_clear_error();
        return;
    }

    last = errstr + NGX_MAX_CONF_ERRSTR;

    p = ngx_snprintf(errstr, last - errstr, "mdm watch: %s %s", subject,
                     what);
    p = ngx_http_mdm_watch_openssl_reasons(p, last);

    ngx_log_error(NGX_LOG_INFO, log, 0, "%*s", p - errstr, errstr);
}


static ngx_int_t
ngx_http_mdm_watch_machine_info_fields(ngx_pool_t *pool, ngx_log_t *log,
    plist_t dict, ngx_http_mdm_watch_machine_info_t *mi)
{
    plist_t                                 node;
    uint64_t                                len;
    ngx_int_t                               rc;
    ngx_str_t                               udid, *value;
    const char                             *p;
    ngx_http_mdm_watch_machine_info_key_t  *key;

    node = plist_dict_get_item(dict, "UDID");

    mi->reason = NGX_HTTP_MDM_WATCH_REASON_BAD_UDID;

    if (node == NULL || plist_get_node_type(node) != PLIST_STRING) {
        ngx_log_error(NGX_LOG_INFO, log, 0,
                      "mdm watch: machine info has no UDID string");
        return NGX_HTTP_BAD_REQUEST;
    }

    len = 0;
    p = plist_get_string_ptr(node, &len);

    udid.data = (u_char *) p;
    udid.len = (p != NULL) ? (size_t) len : 0;

    rc = ngx_http_mdm_watch_udid_canonical(pool, &udid, &mi->udid);

    if (rc == NGX_DECLINED) {
        ngx_log_error(NGX_LOG_INFO, log, 0,
                      "mdm watch: machine info UDID is malformed");
        return NGX_HTTP_BAD_REQUEST;
    }

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    for (key = ngx_http_mdm_watch_machine_info_keys; key->name; key++) {
        value = (ngx_str_t *) ((u_char *) mi + key->offset);

        rc = ngx_http_mdm_watch_machine_info_string(pool, dict, key->name,
                                                    value);
        if (rc != NGX_OK) {
            return NGX_ERROR;
        }
    }

    rc = ngx_http_mdm_watch_machine_info_pairing_token(pool, dict,
                                                       &mi->pairing_token);
    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, log, 0,
                   "mdm watch machine info: udid \"%V\", product \"%V\", "
                   "os \"%V\", pairing token: %uz bytes",
                   &mi->udid, &mi->product, &mi->os_version,
                   mi->pairing_token.len);

    return NGX_OK;
}


/* a string value, or an empty string when missing or of another type */

static ngx_int_t
ngx_http_mdm_watch_machine_info_string(ngx_pool_t *pool, plist_t dict,
    const char *key, ngx_str_t *out)
{
    plist_t      node;
    uint64_t     len;
    const char  *value;

    node = plist_dict_get_item(dict, key);

    if (node == NULL || plist_get_node_type(node) != PLIST_STRING) {
        ngx_str_set(out, "");
        return NGX_OK;
    }

    len = 0;
    value = plist_get_string_ptr(node, &len);

    return ngx_http_mdm_watch_copy(pool, value, len, out);
}


/*
 * PAIRING_TOKEN is data, but a string is taken as well; a value of
 * another type gives an empty, non-NULL token that no check accepts
 */

static ngx_int_t
ngx_http_mdm_watch_machine_info_pairing_token(ngx_pool_t *pool,
    plist_t dict, ngx_str_t *out)
{
    plist_t      node;
    uint64_t     len;
    const char  *value;

    node = plist_dict_get_item(dict, "PAIRING_TOKEN");

    if (node == NULL) {
        ngx_str_null(out);
        return NGX_OK;
    }

    len = 0;

    switch (plist_get_node_type(node)) {

    case PLIST_DATA:
        value = plist_get_data_ptr(node, &len);
        break;

    case PLIST_STRING:
        value = plist_get_string_ptr(node, &len);
        break;

    default:
        value = NULL;
    }

    return ngx_http_mdm_watch_copy(pool, value, len, out);
}


/* an empty or missing value gives "", so that data == NULL means absent */

static ngx_int_t
ngx_http_mdm_watch_copy(ngx_pool_t *pool, const char *data, uint64_t len,
    ngx_str_t *out)
{
    if (data == NULL || len == 0) {
        ngx_str_set(out, "");
        return NGX_OK;
    }

    out->data = ngx_pnalloc(pool, (size_t) len);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(out->data, data, (size_t) len);
    out->len = (size_t) len;

    return NGX_OK;
}


/*
 * Mdm-Signature: base64 of CMS SignedData over the request body, which
 * is detached, with the signer's certificate; it proves only who signed,
 * the caller compares the signer with the certificate the device
 * enrolled with; identity: the signer's SHA-256 fingerprint
 */

ngx_int_t
ngx_http_mdm_watch_mdm_signature(ngx_pool_t *pool, ngx_log_t *log,
    ngx_str_t *header, ngx_str_t *body, ngx_str_t *identity)
{
    ngx_int_t         rc;
    ngx_str_t         der;
    CMS_ContentInfo  *cms;

    rc = ngx_http_mdm_watch_signature_decode(pool, log, header, &der);
    if (rc != NGX_OK) {
        return rc;
    }

    cms = ngx_http_mdm_watch_cms_parse(log, "Mdm-Signature", &der);
    if (cms == NULL) {
        return NGX_DECLINED;
    }

    rc = ngx_http_mdm_watch_signature_verify(pool, log, cms, body, identity);

    CMS_ContentInfo_free(cms);

    return rc;
}


/*
 * base64 with the standard alphabet and its padding, around which only
 * spaces and line ends are skipped
 */

static ngx_int_t
ngx_http_mdm_watch_signature_decode(ngx_pool_t *pool, ngx_log_t *log,
    ngx_str_t *header, ngx_str_t *der)
{
    int      n;
    u_char   c, *p;
    size_t   len, pad, i;

    if (header->len > NGX_HTTP_MDM_WATCH_SIGNATURE_MAX) {
        ngx_http_mdm_watch_cms_reject(log, "Mdm-Signature", "is too long");
        return NGX_DECLINED;
    }

    p = header->data;
    len = header->len;

    while (len && (p[0] == ' ' || p[0] == '\t' || p[0] == CR || p[0] == LF)) {
        p++;
        len--;
    }

    while (len
           && (p[len - 1] == ' ' || p[len - 1] == '\t' || p[len - 1] == CR
               || p[len - 1] == LF))
    {
        len--;
    }

    if (len == 0) {
        ngx_http_mdm_watch_cms_reject(log, "Mdm-Signature", "is empty");
        return NGX_DECLINED;
    }

    if (len % 4) {
        goto invalid;
    }

    pad = 0;

    if (p[len - 1] == '=') {
        pad = (p[len - 2] == '=') ? 2 : 1;
    }

    for (i = 0; i < len - pad; i++) {
        c = p[i];

        if ((c < 'A' || c > 'Z') && (c < 'a' || c > 'z')
            && (c < '0' || c > '9') && c != '+' && c != '/')
        {
            goto invalid;
        }
    }

    der->data = ngx_pnalloc(pool, len / 4 * 3);
    if (der->data == NULL) {
        return NGX_ERROR;
    }

    /* the padding is decoded as zero bytes, which are dropped */

    n = EVP_DecodeBlock(der->data, p, (int) len);

    if (n < 0 || (size_t) n != len / 4 * 3) {
        ngx_http_mdm_watch_openssl_error(NGX_LOG_ALERT, log,
                                         "EVP_DecodeBlock");
        return NGX_ERROR;
    }

    der->len = n - pad;

    return NGX_OK;

invalid:

    ngx_http_mdm_watch_cms_reject(log, "Mdm-Signature", "is not base64");

    return NGX_DECLINED;
}


/*
 * verifies the signature over the body with the certificates the CMS
 * carries, without a chain: no signer is trusted here; every signer must
 * verify, and the first one is the identity
 */

static ngx_int_t
ngx_http_mdm_watch_signature_verify(ngx_pool_t *pool, ngx_log_t *log,
    CMS_ContentInfo *cms, ngx_str_t *body, ngx_str_t *identity)
{
    BIO                 *bio;
    int                  ok;
    ngx_int_t            rc;
    STACK_OF(X509)      *signers;
    ASN1_OCTET_STRING  **pos;

    pos = CMS_get0_content(cms);

    if (pos != NULL && *pos != NULL && ASN1_STRING_length(*pos) > 0) {
        ngx_http_mdm_watch_cms_reject(log, "Mdm-Signature",
                                      "has attached content");
        return NGX_DECLINED;
    }

    if (sk_CMS_SignerInfo_num(CMS_get0_SignerInfos(cms)) <= 0) {
        ngx_http_mdm_watch_cms_reject(log, "Mdm-Signature", "has no signers");
        return NGX_DECLINED;
    }

    if (body->len > NGX_MAX_INT32_VALUE) {
        ngx_http_mdm_watch_cms_reject(log, "Mdm-Signature",
                                      "signs a body too large");
        return NGX_DECLINED;
    }

    bio = BIO_new_mem_buf(body->len ? body->data : (u_char *) "",
                          (int) body->len);
    if (bio == NULL) {
        ngx_http_mdm_watch_openssl_error(NGX_LOG_ALERT, log,
                                         "BIO_new_mem_buf");
        return NGX_ERROR;
    }

    ok = CMS_verify(cms, NULL, NULL, bio, NULL,
                    CMS_DETACHED|CMS_BINARY|CMS_NO_SIGNER_CERT_VERIFY);

    BIO_free(bio);

    if (ok != 1) {
        ngx_http_mdm_watch_cms_reject(log, "Mdm-Signature",
                                      "does not verify");
        return NGX_DECLINED;
    }

    /* CMS_verify() found the certificate of every signer */

    signers = CMS_get0_signers(cms);
    if (signers == NULL) {
        ngx_http_mdm_watch_openssl_error(NGX_LOG_ALERT, log,
                                         "CMS_get0_signers");
        return NGX_ERROR;
    }

    if (sk_X509_num(signers) > 0) {
        rc = ngx_http_mdm_watch_fingerprint(pool, log,
                                            sk_X509_value(signers, 0),
                                            identity);

    } else {
        ngx_http_mdm_watch_cms_reject(log, "Mdm-Signature",
                                      "has no signer certificate");
        rc = NGX_DECLINED;
    }

    sk_X509_free(signers);

    if (rc == NGX_OK) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, log, 0,
                       "mdm watch Mdm-Signature verified, signer %V",
                       identity);
    }

    return rc;
}


/* the client certificate that nginx verified */

ngx_int_t
ngx_http_mdm_watch_client_identity(ngx_http_request_t *r,
    ngx_str_t *identity)
{
#if (NGX_HTTP_SSL)

    long               verify;
    X509              *cert;
    ngx_int_t          rc;
    ngx_connection_t  *c;

    c = r->connection;

    if (c->ssl == NULL) {
        return NGX_DECLINED;
    }

    /* X509_V_OK as well when the client sent no certificate */

    verify = SSL_get_verify_result(c->ssl->connection);

    if (verify != X509_V_OK) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                       "mdm watch client certificate not verified: %l",
                       verify);
        return NGX_DECLINED;
    }

    cert = SSL_get_peer_certificate(c->ssl->connection);
    if (cert == NULL) {
        return NGX_DECLINED;
    }

    rc = ngx_http_mdm_watch_fingerprint(r->pool, c->log, cert, identity);

    X509_free(cert);

    if (rc == NGX_OK) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                       "mdm watch client certificate %V", identity);
    }

    return rc;

#else

    return NGX_DECLINED;

#endif
}


/* the SHA-256 of the certificate's DER, in lower-case hex */

static ngx_int_t
ngx_http_mdm_watch_fingerprint(ngx_pool_t *pool, ngx_log_t *log, X509 *x509,
    ngx_str_t *out)
{
    u_char        *p;
    unsigned int   len;
    u_char         md[EVP_MAX_MD_SIZE];

    if (X509_digest(x509, EVP_sha256(), md, &len) != 1) {
        ngx_http_mdm_watch_openssl_error(NGX_LOG_ALERT, log, "X509_digest");
        return NGX_ERROR;
    }

    p = ngx_pnalloc(pool, 2 * len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    out->len = ngx_hex_dump(p, md, len) - p;
    out->data = p;

    return NGX_OK;
}
