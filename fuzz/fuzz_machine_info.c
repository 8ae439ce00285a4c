
/*
 * Copyright (C) The ngx_mdm_watch_module authors
 */


/*
 * Bytes as the body of a watch enrollment request: CMS SignedData with
 * the machine info plist.  Every input is parsed twice, with signature
 * verification against the test CA of fuzz/fixtures and without it
 * ("mdm_watch_verify_machine_info off"); a pairing token found in the
 * machine info is then parsed as the enrollment phase does.
 */


#include "ngx_shim.h"
#include "ngx_http_mdm_watch.h"

#include <openssl/pem.h>
#include <openssl/x509_vfy.h>


#ifndef NGX_FUZZ_TEST_CA
#define NGX_FUZZ_TEST_CA  "fuzz/fixtures/test-only-ca.pem"
#endif


static X509_STORE *ngx_fuzz_trusted(void);
static ngx_int_t ngx_fuzz_machine_info(ngx_str_t *body, X509_STORE *trusted,
    ngx_http_mdm_watch_machine_info_t *mi, ngx_pool_t *pool);


static X509_STORE  *ngx_fuzz_store;


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    ngx_fuzz_init();

    ngx_fuzz_store = ngx_fuzz_trusted();
    if (ngx_fuzz_store == NULL) {
        abort();
    }

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ngx_int_t                           rc, rc_trusted;
    ngx_str_t                           body;
    ngx_pool_t                         *pool;
    ngx_http_mdm_watch_machine_info_t   mi, mi_trusted;

    pool = ngx_fuzz_pool();
    if (pool == NULL) {
        return 0;
    }

    body.data = (u_char *) data;
    body.len = size;

    rc = ngx_fuzz_machine_info(&body, NULL, &mi, pool);
    rc_trusted = ngx_fuzz_machine_info(&body, ngx_fuzz_store, &mi_trusted,
                                       pool);

    /* verification only refuses more: what it accepts parses the same */

    if (rc_trusted == NGX_OK) {
        ngx_fuzz_check(rc == NGX_OK, "verified machine info parses without "
                                     "verification");
        ngx_fuzz_check(ngx_fuzz_str_eq(&mi.udid, &mi_trusted.udid),
                       "same UDID with and without verification");
        ngx_fuzz_check(ngx_fuzz_str_eq(&mi.pairing_token,
                                       &mi_trusted.pairing_token),
                       "same pairing token with and without verification");
    }

    ngx_destroy_pool(pool);

    return 0;
}


/* as ngx_http_mdm_watch_cms_trusted() builds it from a PEM file */

static X509_STORE *
ngx_fuzz_trusted(void)
{
    BIO         *bio;
    X509        *x509;
    X509_STORE  *store;

    store = X509_STORE_new();
    if (store == NULL) {
        return NULL;
    }

    if (X509_STORE_set_purpose(store, X509_PURPOSE_ANY) != 1) {
        goto failed;
    }

    bio = BIO_new_file(NGX_FUZZ_TEST_CA, "r");
    if (bio == NULL) {
        fprintf(stderr, "fuzz: cannot read \"%s\"\n", NGX_FUZZ_TEST_CA);
        goto failed;
    }

    x509 = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    BIO_free(bio);

    if (x509 == NULL) {
        fprintf(stderr, "fuzz: no certificate in \"%s\"\n", NGX_FUZZ_TEST_CA);
        goto failed;
    }

    if (X509_STORE_add_cert(store, x509) != 1) {
        X509_free(x509);
        goto failed;
    }

    X509_free(x509);

    return store;

failed:

    X509_STORE_free(store);

    return NULL;
}


static ngx_int_t
ngx_fuzz_machine_info(ngx_str_t *body, X509_STORE *trusted,
    ngx_http_mdm_watch_machine_info_t *mi, ngx_pool_t *pool)
{
    size_t                               i;
    ngx_int_t                            rc;
    ngx_str_t                            secret;
    ngx_http_mdm_watch_pairing_token_t   pt;

    rc = ngx_http_mdm_watch_machine_info(pool, &ngx_fuzz_log, body, trusted,
                                         mi);
    if (rc != NGX_OK) {
        ngx_fuzz_check(rc == NGX_HTTP_BAD_REQUEST
                       || rc == NGX_HTTP_FORBIDDEN,
                       "machine info refused with 400 or 403");
        return rc;
    }

    ngx_fuzz_check(mi->udid.len > 0
                   && mi->udid.len <= NGX_HTTP_MDM_WATCH_UDID_MAX,
                   "UDID of 1 to 64 characters");

    for (i = 0; i < mi->udid.len; i++) {
        ngx_fuzz_check(mi->udid.data[i] < 'a' || mi->udid.data[i] > 'z',
                       "UDID in upper case");
    }

    if (mi->pairing_token.data == NULL) {
        return NGX_OK;
    }

    ngx_str_set(&secret, NGX_FUZZ_SECRET);

    rc = ngx_http_mdm_watch_pairing_token_parse(pool, &secret,
                                                &mi->pairing_token, &pt);

    ngx_fuzz_check(rc == NGX_OK || rc == NGX_DECLINED,
                   "pairing token parsed or declined");

    return NGX_OK;
}

