
/*
 * Copyright (C) The ngx_mdm_watch_module authors
 */


/*
 * The CMS side of the benchmarks, built by bench/bench.pl from the
 * module's parsing sources and fuzz/ngx_shim.c, with -O2:
 *
 *   cms verify CA BODY SECONDS
 *       parses BODY, a watch's signed machine info, with
 *       ngx_http_mdm_watch_machine_info() and verification against CA,
 *       again and again for SECONDS on one core, as the enrollment
 *       location does for each request, and prints
 *       "verify <count> <seconds> <count per second>";
 *
 *   cms sign CERT KEY IN OUT
 *       signs each plist of IN as a watch signs its machine info
 *       (CMS SignedData, content attached, SHA-256) and writes the
 *       signatures to OUT; both files hold records of a decimal length,
 *       a newline, and that many bytes.
 */


#include "ngx_shim.h"
#include "ngx_http_mdm_watch.h"

#include <sys/time.h>
#include <openssl/cms.h>
#include <openssl/pem.h>
#include <openssl/x509_vfy.h>


static int ngx_bench_verify(char *ca, char *file, char *seconds);
static int ngx_bench_sign(char *cert, char *key, char *in, char *out);
static u_char *ngx_bench_read(char *file, size_t *len);
static double ngx_bench_now(void);


int
main(int argc, char **argv)
{
    ngx_fuzz_init();

    /* an nginx with "error_log ... warn": debug messages are skipped */

    ngx_fuzz_log.log_level = NGX_LOG_WARN;

    if (argc == 5 && strcmp(argv[1], "verify") == 0) {
        return ngx_bench_verify(argv[2], argv[3], argv[4]);
    }

    if (argc == 6 && strcmp(argv[1], "sign") == 0) {
        return ngx_bench_sign(argv[2], argv[3], argv[4], argv[5]);
    }

    fprintf(stderr, "usage: cms verify CA BODY SECONDS\n"
                    "       cms sign CERT KEY IN OUT\n");

    return 2;
}


static int
ngx_bench_verify(char *ca, char *file, char *seconds)
{
    double                              start, end, now;
    ngx_int_t                           rc;
    ngx_str_t                           body;
    ngx_uint_t                          n;
    ngx_pool_t                         *pool;
    X509_STORE                         *store;
    ngx_http_mdm_watch_machine_info_t   mi;

    store = X509_STORE_new();

    if (store == NULL
        || X509_STORE_set_purpose(store, X509_PURPOSE_ANY) != 1
        || X509_STORE_load_file(store, ca) != 1)
    {
        fprintf(stderr, "cms: cannot load the CA \"%s\"\n", ca);
        return 1;
    }

    body.data = ngx_bench_read(file, &body.len);
    if (body.data == NULL) {
        return 1;
    }

    start = ngx_bench_now();
    end = start + atof(seconds);
    now = start;

    /* a pool per request, as nginx gives each request its own */

    for (n = 0; now < end; n++) {

        pool = ngx_fuzz_pool();
        if (pool == NULL) {
            return 1;
        }

        rc = ngx_http_mdm_watch_machine_info(pool, &ngx_fuzz_log, &body,
                                             store, &mi);
        ngx_destroy_pool(pool);

        if (rc != NGX_OK) {
            fprintf(stderr, "cms: the machine info of \"%s\" is refused "
                            "(%d)\n", file, (int) rc);
            return 1;
        }

        if ((n & 15) == 15) {
            now = ngx_bench_now();
        }
    }

    now = ngx_bench_now();

    printf("verify %lu %.3f %.1f\n", (unsigned long) n, now - start,
           n / (now - start));

    X509_STORE_free(store);

    return 0;
}


static int
ngx_bench_sign(char *cert, char *key, char *in, char *out)
{
    int               n;
    BIO              *bio, *data;
    FILE             *f;
    X509             *x509;
    size_t            len, size;
    u_char           *p, *last, *der;
    EVP_PKEY         *pkey;
    CMS_ContentInfo  *cms;

    bio = BIO_new_file(cert, "r");
    x509 = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);

    bio = BIO_new_file(key, "r");
    pkey = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);

    if (x509 == NULL || pkey == NULL) {
        fprintf(stderr, "cms: cannot read \"%s\" and \"%s\"\n", cert, key);
        return 1;
    }

    p = ngx_bench_read(in, &size);
    if (p == NULL) {
        return 1;
    }

    f = fopen(out, "w");
    if (f == NULL) {
        fprintf(stderr, "cms: cannot write \"%s\"\n", out);
        return 1;
    }

    last = p + size;

    while (p < last) {
        len = strtoul((char *) p, (char **) &p, 10);

        if (*p++ != '\n' || len > (size_t) (last - p)) {
            fprintf(stderr, "cms: \"%s\" is not a file of records\n", in);
            return 1;
        }

        data = BIO_new_mem_buf(p, len);
        cms = data ? CMS_sign(x509, pkey, NULL, data, CMS_BINARY) : NULL;
        BIO_free(data);

        der = NULL;
        n = cms ? i2d_CMS_ContentInfo(cms, &der) : -1;
        CMS_ContentInfo_free(cms);

        if (n <= 0) {
            fprintf(stderr, "cms: signing failed\n");
            return 1;
        }

        fprintf(f, "%d\n", n);
        fwrite(der, 1, n, f);
        OPENSSL_free(der);

        p += len;
    }

    if (fclose(f) != 0) {
        fprintf(stderr, "cms: cannot write \"%s\"\n", out);
        return 1;
    }

    return 0;
}


static u_char *
ngx_bench_read(char *file, size_t *len)
{
    FILE    *f;
    long     size;
    u_char  *buf;

    f = fopen(file, "r");
    if (f == NULL || fseek(f, 0, SEEK_END) != 0) {
        fprintf(stderr, "cms: cannot read \"%s\"\n", file);
        return NULL;
    }

    size = ftell(f);
    rewind(f);

    buf = malloc(size + 1);
    if (buf == NULL || fread(buf, 1, size, f) != (size_t) size) {
        fprintf(stderr, "cms: cannot read \"%s\"\n", file);
        return NULL;
    }

    fclose(f);
    *len = size;

    return buf;
}


static double
ngx_bench_now(void)
{
    struct timeval  tv;

    gettimeofday(&tv, NULL);

    return tv.tv_sec + tv.tv_usec / 1e6;
}
