
/*
 * Copyright (C) The ngx_mdm_watch_module authors
 */


/*
 * The few nginx functions that the module's parser files call, written
 * for the fuzz targets, which link those files without nginx.  Pools
 * give every allocation its own malloc(), so that AddressSanitizer sees
 * the end of each one; nginx's pools would hide an overrun inside a block.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_shim.h"


static u_char *ngx_fuzz_number(u_char *buf, u_char *last, uint64_t n,
    u_char zero, ngx_uint_t hex, ngx_uint_t width);
static ngx_int_t ngx_fuzz_base64url_value(u_char c);
static void ngx_fuzz_encode(ngx_str_t *dst, ngx_str_t *src,
    const u_char *basis, ngx_uint_t padding);


volatile ngx_cycle_t  *ngx_cycle;
ngx_log_t              ngx_fuzz_log;

static ngx_cycle_t     ngx_fuzz_cycle;
static ngx_uint_t      ngx_fuzz_verbose;

static const char     *ngx_fuzz_levels[] = {
    "stderr", "emerg", "alert", "crit", "error", "warn", "notice", "info",
    "debug"
};

static const u_char    ngx_fuzz_base64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static const u_char    ngx_fuzz_base64url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";


void
ngx_fuzz_init(void)
{
    /* every message is formatted, so that its arguments are checked */

    ngx_fuzz_log.log_level = NGX_LOG_DEBUG_ALL;

    ngx_fuzz_cycle.log = &ngx_fuzz_log;
    ngx_cycle = &ngx_fuzz_cycle;

    ngx_fuzz_verbose = (getenv("FUZZ_VERBOSE") != NULL);
}


ngx_pool_t *
ngx_fuzz_pool(void)
{
    return ngx_create_pool(NGX_DEFAULT_POOL_SIZE, &ngx_fuzz_log);
}


void
ngx_fuzz_check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "fuzz: check failed: %s\n", what);
        abort();
    }
}


/* equal contents, or both absent (data == NULL) */

ngx_int_t
ngx_fuzz_str_eq(ngx_str_t *a, ngx_str_t *b)
{
    if (a->data == NULL || b->data == NULL) {
        return a->data == b->data;
    }

    return a->len == b->len && ngx_memcmp(a->data, b->data, a->len) == 0;
}


ngx_pool_t *
ngx_create_pool(size_t size, ngx_log_t *log)
{
    ngx_pool_t  *pool;

    pool = calloc(1, sizeof(ngx_pool_t));
    if (pool == NULL) {
        return NULL;
    }

    pool->log = log;

    return pool;
}


void
ngx_destroy_pool(ngx_pool_t *pool)
{
    ngx_pool_large_t    *l, *next;
    ngx_pool_cleanup_t  *c;

    for (c = pool->cleanup; c; c = c->next) {
        if (c->handler) {
            c->handler(c->data);
        }
    }

    for (l = pool->large; l; l = next) {
        next = l->next;
        free(l->alloc);
        free(l);
    }

    free(pool);
}


void *
ngx_palloc(ngx_pool_t *pool, size_t size)
{
    void              *p;
    ngx_pool_large_t  *l;

    l = malloc(sizeof(ngx_pool_large_t));
    if (l == NULL) {
        return NULL;
    }

    p = malloc(size);
    if (p == NULL) {
        free(l);
        return NULL;
    }

    l->alloc = p;
    l->next = pool->large;
    pool->large = l;

    return p;
}


void *
ngx_pnalloc(ngx_pool_t *pool, size_t size)
{
    return ngx_palloc(pool, size);
}


void *
ngx_pcalloc(ngx_pool_t *pool, size_t size)
{
    void  *p;

    p = ngx_palloc(pool, size);
    if (p) {
        ngx_memzero(p, size);
    }

    return p;
}


ngx_pool_cleanup_t *
ngx_pool_cleanup_add(ngx_pool_t *p, size_t size)
{
    ngx_pool_cleanup_t  *c;

    c = ngx_palloc(p, sizeof(ngx_pool_cleanup_t));
    if (c == NULL) {
        return NULL;
    }

    if (size) {
        c->data = ngx_palloc(p, size);
        if (c->data == NULL) {
            return NULL;
        }

    } else {
        c->data = NULL;
    }

    c->handler = NULL;
    c->next = p->cleanup;
    p->cleanup = c;

    return c;
}


void
ngx_log_error_core(ngx_uint_t level, ngx_log_t *log, ngx_err_t err,
    const char *fmt, ...)
{
    u_char   *p, *last;
    va_list   args;
    u_char    errstr[NGX_MAX_ERROR_STR];

    last = errstr + NGX_MAX_ERROR_STR;

    va_start(args, fmt);
    p = ngx_vslprintf(errstr, last, fmt, args);
    va_end(args);

    if (err) {
        p = ngx_snprintf(p, last - p, " (%d)", err);
    }

    if (ngx_fuzz_verbose) {
        fprintf(stderr, "[%s] %.*s\n",
                ngx_fuzz_levels[ngx_min(level, NGX_LOG_DEBUG)],
                (int) (p - errstr), errstr);
    }
}


/* ngx_http_mdm_watch_cms_trusted() needs these; the targets never call it */

ngx_int_t
ngx_conf_full_name(ngx_cycle_t *cycle, ngx_str_t *name,
    ngx_uint_t conf_prefix)
{
    fprintf(stderr, "fuzz: ngx_conf_full_name() is not available\n");
    abort();
}


void
ngx_conf_log_error(ngx_uint_t level, ngx_conf_t *cf, ngx_err_t err,
    const char *fmt, ...)
{
    fprintf(stderr, "fuzz: ngx_conf_log_error() is not available\n");
    abort();
}


u_char *
ngx_sprintf(u_char *buf, const char *fmt, ...)
{
    u_char   *p;
    va_list   args;

    va_start(args, fmt);
    p = ngx_vslprintf(buf, (void *) -1, fmt, args);
    va_end(args);

    return p;
}


u_char *
ngx_snprintf(u_char *buf, size_t max, const char *fmt, ...)
{
    u_char   *p;
    va_list   args;

    va_start(args, fmt);
    p = ngx_vslprintf(buf, buf + max, fmt, args);
    va_end(args);

    return p;
}


/*
 * the conversions of nginx's ngx_vslprintf() that the module uses:
 * %[0][width][u][x|X]{d,i,z,l,D,L,O,T,M}, %p, %c, %s, %*s, %V and %%;
 * any other stops the target, so that a new one is not printed wrongly
 */

u_char *
ngx_vslprintf(u_char *buf, u_char *last, const char *fmt, va_list args)
{
    u_char      *p, zero;
    size_t       len, slen;
    int64_t      i64;
    uint64_t     ui64;
    ngx_str_t   *v;
    ngx_uint_t   width, sign, hex;

    while (*fmt && buf < last) {

        if (*fmt != '%') {
            *buf++ = (u_char) *fmt++;
            continue;
        }

        fmt++;

        zero = (u_char) ((*fmt == '0') ? '0' : ' ');
        width = 0;
        sign = 1;
        hex = 0;
        slen = (size_t) -1;

        while (*fmt >= '0' && *fmt <= '9') {
            width = width * 10 + (*fmt++ - '0');
        }

        for ( ;; ) {
            switch (*fmt) {

            case 'u':
                sign = 0;
                fmt++;
                continue;

            case 'x':
                hex = 1;
                sign = 0;
                fmt++;
                continue;

            case 'X':
                hex = 2;
                sign = 0;
                fmt++;
                continue;

            case '*':
                slen = va_arg(args, size_t);
                fmt++;
                continue;

            default:
                break;
            }

            break;
        }

        switch (*fmt) {

        case 'V':
            v = va_arg(args, ngx_str_t *);

            /* an absent value, data == NULL, is printed as "" */

            len = ngx_min((size_t) (last - buf), v->len);

            if (len) {
                buf = ngx_cpymem(buf, v->data, len);
            }

            fmt++;
            continue;

        case 's':
            p = va_arg(args, u_char *);

            if (slen == (size_t) -1) {
                while (*p && buf < last) {
                    *buf++ = *p++;
                }

            } else {
                len = ngx_min((size_t) (last - buf), slen);
                buf = ngx_cpymem(buf, p, len);
            }

            fmt++;
            continue;

        case 'c':
            *buf++ = (u_char) va_arg(args, int);
            fmt++;
            continue;

        case '%':
            *buf++ = '%';
            fmt++;
            continue;

        case 'p':
            ui64 = (uintptr_t) va_arg(args, void *);
            hex = 2;
            sign = 0;
            zero = '0';
            width = 2 * sizeof(void *);
            break;

        case 'O':
            i64 = (int64_t) va_arg(args, off_t);
            sign = 1;
            break;

        case 'T':
            i64 = (int64_t) va_arg(args, time_t);
            sign = 1;
            break;

        case 'M':
            ui64 = (uint64_t) va_arg(args, ngx_msec_t);
            sign = 0;
            break;

        case 'z':
            if (sign) {
                i64 = (int64_t) va_arg(args, ssize_t);
            } else {
                ui64 = (uint64_t) va_arg(args, size_t);
            }
            break;

        case 'i':
            if (sign) {
                i64 = (int64_t) va_arg(args, ngx_int_t);
            } else {
                ui64 = (uint64_t) va_arg(args, ngx_uint_t);
            }
            break;

        case 'd':
            if (sign) {
                i64 = (int64_t) va_arg(args, int);
            } else {
                ui64 = (uint64_t) va_arg(args, u_int);
            }
            break;

        case 'l':
            if (sign) {
                i64 = (int64_t) va_arg(args, long);
            } else {
                ui64 = (uint64_t) va_arg(args, u_long);
            }
            break;

        case 'D':
            if (sign) {
                i64 = (int64_t) va_arg(args, int32_t);
            } else {
                ui64 = (uint64_t) va_arg(args, uint32_t);
            }
            break;

        case 'L':
            if (sign) {
                i64 = va_arg(args, int64_t);
            } else {
                ui64 = va_arg(args, uint64_t);
            }
            break;

        default:
            fprintf(stderr, "fuzz: unsupported format \"%%%s\"\n", fmt);
            abort();
        }

        if (sign) {
            if (i64 < 0) {
                *buf++ = '-';
                ui64 = (uint64_t) -(i64 + 1) + 1;

            } else {
                ui64 = (uint64_t) i64;
            }
        }

        buf = ngx_fuzz_number(buf, last, ui64, zero, hex, width);
        fmt++;
    }

    return buf;
}


static u_char *
ngx_fuzz_number(u_char *buf, u_char *last, uint64_t n, u_char zero,
    ngx_uint_t hex, ngx_uint_t width)
{
    u_char         *p;
    size_t          len;
    const u_char   *digits;
    u_char          tmp[NGX_INT64_LEN + 1];

    static const u_char  lower[] = "0123456789abcdef";
    static const u_char  upper[] = "0123456789ABCDEF";

    digits = (hex == 2) ? upper : lower;
    p = tmp + sizeof(tmp);

    do {
        if (hex) {
            *--p = digits[n & 0xf];
            n >>= 4;

        } else {
            *--p = digits[n % 10];
            n /= 10;
        }

    } while (n);

    len = (tmp + sizeof(tmp)) - p;

    while (len < width-- && buf < last) {
        *buf++ = zero;
    }

    len = ngx_min((size_t) (last - buf), len);

    return ngx_cpymem(buf, p, len);
}


u_char *
ngx_hex_dump(u_char *dst, u_char *src, size_t len)
{
    static const u_char  hex[] = "0123456789abcdef";

    while (len--) {
        *dst++ = hex[*src >> 4];
        *dst++ = hex[*src++ & 0xf];
    }

    return dst;
}


/* a non-negative decimal number; NGX_ERROR when empty, not digits or big */

time_t
ngx_atotm(u_char *line, size_t n)
{
    time_t  value, cutoff, cutlim;

    if (n == 0) {
        return NGX_ERROR;
    }

    cutoff = NGX_MAX_TIME_T_VALUE / 10;
    cutlim = NGX_MAX_TIME_T_VALUE % 10;

    for (value = 0; n--; line++) {
        if (*line < '0' || *line > '9') {
            return NGX_ERROR;
        }

        if (value > cutoff || (value == cutoff && *line - '0' > cutlim)) {
            return NGX_ERROR;
        }

        value = value * 10 + (*line - '0');
    }

    return value;
}


void
ngx_encode_base64(ngx_str_t *dst, ngx_str_t *src)
{
    ngx_fuzz_encode(dst, src, ngx_fuzz_base64, 1);
}


void
ngx_encode_base64url(ngx_str_t *dst, ngx_str_t *src)
{
    ngx_fuzz_encode(dst, src, ngx_fuzz_base64url, 0);
}


static void
ngx_fuzz_encode(ngx_str_t *dst, ngx_str_t *src, const u_char *basis,
    ngx_uint_t padding)
{
    u_char      *d, *s;
    size_t       len;
    ngx_uint_t   v;

    s = src->data;
    d = dst->data;

    for (len = src->len; len >= 3; len -= 3, s += 3) {
        v = ((ngx_uint_t) s[0] << 16) | ((ngx_uint_t) s[1] << 8) | s[2];

        *d++ = basis[(v >> 18) & 0x3f];
        *d++ = basis[(v >> 12) & 0x3f];
        *d++ = basis[(v >> 6) & 0x3f];
        *d++ = basis[v & 0x3f];
    }

    if (len) {
        v = (ngx_uint_t) s[0] << 16;

        if (len == 2) {
            v |= (ngx_uint_t) s[1] << 8;
        }

        *d++ = basis[(v >> 18) & 0x3f];
        *d++ = basis[(v >> 12) & 0x3f];

        if (len == 2) {
            *d++ = basis[(v >> 6) & 0x3f];

        } else if (padding) {
            *d++ = '=';
        }

        if (padding) {
            *d++ = '=';
        }
    }

    dst->len = d - dst->data;
}


/*
 * as nginx's: decoding stops at the first "=", any other character out
 * of the alphabet is an error, and so is a single trailing character;
 * the bits that do not fill a byte are dropped
 */

ngx_int_t
ngx_decode_base64url(ngx_str_t *dst, ngx_str_t *src)
{
    u_char      *d, *s;
    size_t       len;
    ngx_uint_t   v;

    for (len = 0; len < src->len; len++) {
        if (src->data[len] == '=') {
            break;
        }

        if (ngx_fuzz_base64url_value(src->data[len]) == NGX_ERROR) {
            return NGX_ERROR;
        }
    }

    if (len % 4 == 1) {
        return NGX_ERROR;
    }

    s = src->data;
    d = dst->data;

    for ( /* void */ ; len >= 4; len -= 4, s += 4) {
        v = (ngx_fuzz_base64url_value(s[0]) << 18)
            | (ngx_fuzz_base64url_value(s[1]) << 12)
            | (ngx_fuzz_base64url_value(s[2]) << 6)
            | ngx_fuzz_base64url_value(s[3]);

        *d++ = (u_char) (v >> 16);
        *d++ = (u_char) (v >> 8);
        *d++ = (u_char) v;
    }

    if (len > 1) {
        v = (ngx_fuzz_base64url_value(s[0]) << 18)
            | (ngx_fuzz_base64url_value(s[1]) << 12);

        if (len == 3) {
            v |= ngx_fuzz_base64url_value(s[2]) << 6;
        }

        *d++ = (u_char) (v >> 16);

        if (len == 3) {
            *d++ = (u_char) (v >> 8);
        }
    }

    dst->len = d - dst->data;

    return NGX_OK;
}


static ngx_int_t
ngx_fuzz_base64url_value(u_char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }

    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }

    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }

    if (c == '-') {
        return 62;
    }

    if (c == '_') {
        return 63;
    }

    return NGX_ERROR;
}
