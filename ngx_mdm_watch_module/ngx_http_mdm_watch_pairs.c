
/*
 * Copyright (C) The ngx_mdm_watch_module authors
 */


#include "ngx_http_mdm_watch.h"

#include <openssl/evp.h>


/*
 * The administrators' view of the pairs: a content handler that reads a
 * page of pairs, or the pairs one filter finds, with one Redis script,
 * and answers with JSON or with a self-contained HTML page.
 */


#define NGX_HTTP_MDM_WATCH_PAIRS_LIMIT       100
#define NGX_HTTP_MDM_WATCH_PAIRS_LIMIT_MAX   1000
#define NGX_HTTP_MDM_WATCH_PAIRS_ARG_MAX     256
#define NGX_HTTP_MDM_WATCH_PAIRS_CURSOR_MAX  128
#define NGX_HTTP_MDM_WATCH_PAIRS_SERIAL_MAX  64
#define NGX_HTTP_MDM_WATCH_PAIRS_BUF_SIZE    16384
#define NGX_HTTP_MDM_WATCH_PAIRS_CSP_MAX     512

/* a time as RFC 3339 writes it, up to the year 9999 */
#define NGX_HTTP_MDM_WATCH_PAIRS_TIME_LEN    sizeof("2026-12-04T18:00:00Z")
#define NGX_HTTP_MDM_WATCH_PAIRS_TIME_MAX    253402300799


/* the fields of a pair, in the order the scripts return them */

enum {
    NGX_HTTP_MDM_WATCH_PAIR_MEMBER = 0,
    NGX_HTTP_MDM_WATCH_PAIR_WATCH,
    NGX_HTTP_MDM_WATCH_PAIR_PHONE,
    NGX_HTTP_MDM_WATCH_PAIR_SERIAL,
    NGX_HTTP_MDM_WATCH_PAIR_PRODUCT,
    NGX_HTTP_MDM_WATCH_PAIR_OS_VERSION,
    NGX_HTTP_MDM_WATCH_PAIR_PAIRED_AT,
    NGX_HTTP_MDM_WATCH_PAIR_STATE,
    NGX_HTTP_MDM_WATCH_PAIR_FIELDS
};


typedef enum {
    NGX_HTTP_MDM_WATCH_PAIRS_ALL = 0,
    NGX_HTTP_MDM_WATCH_PAIRS_WATCH,
    NGX_HTTP_MDM_WATCH_PAIRS_PHONE,
    NGX_HTTP_MDM_WATCH_PAIRS_SERIAL,
    NGX_HTTP_MDM_WATCH_PAIRS_ANY
} ngx_http_mdm_watch_pairs_filter_e;


/* a pair as read from Redis; data == NULL: the field is absent */

typedef struct {
    ngx_str_t                           field[NGX_HTTP_MDM_WATCH_PAIR_FIELDS];
} ngx_http_mdm_watch_pair_t;


typedef struct {
    /* first: the Redis layer hands this back as the module's context */
    ngx_http_mdm_watch_ctx_t            base;

    ngx_http_mdm_watch_pairs_filter_e   filter;
    ngx_str_t                           id;
    ngx_str_t                           q;
    ngx_str_t                           start;
    ngx_uint_t                          limit;
    const char                         *error;

    ngx_array_t                         pairs;
    ngx_str_t                           next;

    unsigned                            json:1;
} ngx_http_mdm_watch_pairs_ctx_t;


/* the answer, written into a chain of pool buffers */

typedef struct {
    ngx_pool_t                         *pool;
    ngx_chain_t                        *first;
    ngx_chain_t                       **last;
    ngx_buf_t                          *buf;
    off_t                               size;
} ngx_http_mdm_watch_pairs_out_t;


typedef struct {
    ngx_str_t                           name;
    ngx_uint_t                          field;
} ngx_http_mdm_watch_pairs_field_t;


static ngx_int_t ngx_http_mdm_watch_pairs_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_mdm_watch_pairs_args(ngx_http_request_t *r,
    ngx_http_mdm_watch_pairs_ctx_t *ctx);
static ngx_int_t ngx_http_mdm_watch_pairs_filter(ngx_http_request_t *r,
    ngx_http_mdm_watch_pairs_ctx_t *ctx);
static ngx_int_t ngx_http_mdm_watch_pairs_arg(ngx_http_request_t *r,
    char *name, ngx_str_t *value);
static ngx_uint_t ngx_http_mdm_watch_pairs_accepts_json(
    ngx_http_request_t *r);
static ngx_int_t ngx_http_mdm_watch_pairs_query(ngx_http_request_t *r,
    ngx_http_mdm_watch_pairs_ctx_t *ctx);
static void ngx_http_mdm_watch_pairs_reply(ngx_http_request_t *r,
    ngx_http_mdm_watch_ctx_t *base, redisReply *reply);
static ngx_int_t ngx_http_mdm_watch_pairs_read(ngx_http_request_t *r,
    ngx_http_mdm_watch_pairs_ctx_t *ctx, redisReply *reply);
static ngx_int_t ngx_http_mdm_watch_pairs_read_pair(ngx_pool_t *pool,
    redisReply *reply, ngx_http_mdm_watch_pair_t *pair);
static ngx_int_t ngx_http_mdm_watch_pairs_time(ngx_pool_t *pool,
    ngx_str_t *t);
static ngx_int_t ngx_http_mdm_watch_pairs_json(
    ngx_http_mdm_watch_pairs_ctx_t *ctx, ngx_http_mdm_watch_pairs_out_t *out);
static ngx_int_t ngx_http_mdm_watch_pairs_html(
    ngx_http_mdm_watch_pairs_ctx_t *ctx, ngx_http_mdm_watch_pairs_out_t *out);
static ngx_int_t ngx_http_mdm_watch_pairs_html_head(
    ngx_http_mdm_watch_pairs_ctx_t *ctx, ngx_http_mdm_watch_pairs_out_t *out);
static ngx_int_t ngx_http_mdm_watch_pairs_html_groups(
    ngx_http_mdm_watch_pairs_ctx_t *ctx, ngx_http_mdm_watch_pairs_out_t *out);
static ngx_int_t ngx_http_mdm_watch_pairs_html_tail(
    ngx_http_mdm_watch_pairs_ctx_t *ctx, ngx_http_mdm_watch_pairs_out_t *out);
static ngx_int_t ngx_http_mdm_watch_pairs_html_pair(
    ngx_http_mdm_watch_pairs_out_t *out, ngx_http_mdm_watch_pair_t *pair);
static ngx_int_t ngx_http_mdm_watch_pairs_by_phone(const void *one,
    const void *two);
static ngx_int_t ngx_http_mdm_watch_pairs_respond(ngx_http_request_t *r,
    ngx_http_mdm_watch_pairs_ctx_t *ctx, ngx_uint_t status);
static ngx_int_t ngx_http_mdm_watch_pairs_error(ngx_http_request_t *r,
    ngx_http_mdm_watch_pairs_ctx_t *ctx, ngx_int_t status);
static ngx_int_t ngx_http_mdm_watch_pairs_send(ngx_http_request_t *r,
    ngx_http_mdm_watch_pairs_ctx_t *ctx, ngx_uint_t status,
    ngx_http_mdm_watch_pairs_out_t *out);
static ngx_int_t ngx_http_mdm_watch_pairs_header(ngx_http_request_t *r,
    char *name, u_char *value, size_t len);
static ngx_int_t ngx_http_mdm_watch_pairs_csp_init(ngx_conf_t *cf);
static u_char *ngx_http_mdm_watch_pairs_csp_hash(u_char *p, char *text);
static ngx_int_t ngx_http_mdm_watch_pairs_append(
    ngx_http_mdm_watch_pairs_out_t *out, u_char *data, size_t len);
static ngx_int_t ngx_http_mdm_watch_pairs_append_escaped(
    ngx_http_mdm_watch_pairs_out_t *out, ngx_str_t *s, ngx_uint_t html);
static u_char *ngx_http_mdm_watch_pairs_reserve(
    ngx_http_mdm_watch_pairs_out_t *out, size_t len);
static size_t ngx_http_mdm_watch_pairs_escape(u_char *dst, ngx_str_t *src,
    ngx_uint_t html);
static size_t ngx_http_mdm_watch_pairs_escape_char(u_char c,
    ngx_uint_t html, u_char *buf);
static size_t ngx_http_mdm_watch_pairs_utf8(u_char *p, u_char *last);


#define ngx_http_mdm_watch_pairs_literal(out, s)                              \
    ngx_http_mdm_watch_pairs_append(out, (u_char *) s, sizeof(s) - 1)


/*
 * adds the pair of watch w to the array out: its UDID as indexed, then
 * the fields of its record, each cut to 128 bytes, so that a page of
 * 1000 pairs stays within the Redis layer's reply limits; a pair whose
 * record is gone is left out
 */

#define NGX_HTTP_MDM_WATCH_PAIRS_LUA_ADD                                      \
    "local function add(out, w) "                                             \
        "local key = ARGV[3] .. w "                                           \
        "if redis.call('EXISTS', key) == 0 then return end "                  \
        "local h = redis.call('HMGET', key, 'watch_udid', 'phone_udid', "     \
            "'serial', 'product', 'os_version', 'paired_at', 'state') "       \
        "local p = {string.sub(w, 1, 128)} "                                  \
        "for i = 1, 7 do "                                                    \
            "local v = h[i] "                                                 \
            "if v then v = string.sub(v, 1, 128) end "                        \
            "p[i + 1] = v "                                                   \
        "end "                                                                \
        "out[#out + 1] = p "                                                  \
    "end "


/*
 * a page: the pairs after ARGV[1] ("-" or "(" and the last watch UDID
 * of the previous page) in the index of all pairs, at most ARGV[2];
 * the first element is the last watch UDID of the page if more follow,
 * else nil
 */

static char  ngx_http_mdm_watch_pairs_page_script[] =
    NGX_HTTP_MDM_WATCH_PAIRS_LUA_ADD
    "local n = tonumber(ARGV[2]) "
    "local ids = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], '+', "
        "'LIMIT', 0, n + 1) "
    "local out = {false} "
    "if #ids > n then "
        "ids[n + 1] = nil "
        "out[1] = ids[n] "
    "end "
    "for _, w in ipairs(ids) do add(out, w) end "
    "return out";


/*
 * the pairs one filter finds: the pair of watch ARGV[2], the pairs of
 * the watches of phone ARGV[2], or the pair of the watch with serial
 * ARGV[2]; "any" tries the three in this order
 */

static char  ngx_http_mdm_watch_pairs_lookup_script[] =
    NGX_HTTP_MDM_WATCH_PAIRS_LUA_ADD
    "local mode, id = ARGV[1], ARGV[2] "
    "local out = {false} "
    "if mode == 'watch' or mode == 'any' then add(out, id) end "
    "if #out == 1 and (mode == 'phone' or mode == 'any') then "
        "local ws = redis.call('SMEMBERS', ARGV[4] .. id) "
        "table.sort(ws) "
        "for i = 1, math.min(#ws, tonumber(ARGV[6])) do "
            "add(out, ws[i]) "
        "end "
    "end "
    "if #out == 1 and (mode == 'serial' or mode == 'any') then "
        "local w = redis.call('GET', ARGV[5] .. id) "
        "if w then add(out, w) end "
    "end "
    "return out";


static char  *ngx_http_mdm_watch_pairs_modes[] = {
    "", "watch", "phone", "serial", "any"
};


static ngx_http_mdm_watch_pairs_field_t  ngx_http_mdm_watch_pairs_fields[] = {
    { ngx_string("{\"watch_udid\":"), NGX_HTTP_MDM_WATCH_PAIR_WATCH },
    { ngx_string(",\"watch_serial\":"), NGX_HTTP_MDM_WATCH_PAIR_SERIAL },
    { ngx_string(",\"watch_product\":"), NGX_HTTP_MDM_WATCH_PAIR_PRODUCT },
    { ngx_string(",\"watch_os_version\":"),
      NGX_HTTP_MDM_WATCH_PAIR_OS_VERSION },
    { ngx_string(",\"phone_udid\":"), NGX_HTTP_MDM_WATCH_PAIR_PHONE },
    { ngx_string(",\"paired_at\":"), NGX_HTTP_MDM_WATCH_PAIR_PAIRED_AT },
    { ngx_string(",\"state\":"), NGX_HTTP_MDM_WATCH_PAIR_STATE },
    { ngx_null_string, 0 }
};


static ngx_http_mdm_watch_pairs_field_t  ngx_http_mdm_watch_pairs_cells[] = {
    { ngx_string("<td data-label=\"Serial\">"),
      NGX_HTTP_MDM_WATCH_PAIR_SERIAL },
    { ngx_string("</td><td data-label=\"Product\">"),
      NGX_HTTP_MDM_WATCH_PAIR_PRODUCT },
    { ngx_string("</td><td data-label=\"watchOS\">"),
      NGX_HTTP_MDM_WATCH_PAIR_OS_VERSION },
    { ngx_string("</td><td data-label=\"Paired at\"><time>"),
      NGX_HTTP_MDM_WATCH_PAIR_PAIRED_AT },
    { ngx_string("</time></td><td data-label=\"State\">"),
      NGX_HTTP_MDM_WATCH_PAIR_STATE },
    { ngx_null_string, 0 }
};


/* the page's only style and script, allowed by their hashes */

static char  ngx_http_mdm_watch_pairs_style[] =
    "\n"
    ":root{color-scheme:light dark;font-family:system-ui,sans-serif}\n"
    "body{margin:0 auto;max-width:64rem;padding:1rem;line-height:1.4}\n"
    "h1{font-size:1.4rem;margin:0 0 1rem}\n"
    "h2{font-size:1rem;margin:1.5rem 0 .5rem;overflow-wrap:anywhere}\n"
    "form{display:flex;gap:.5rem;margin-bottom:1rem}\n"
    "input{flex:1;min-width:0;font-size:1rem;padding:.5rem}\n"
    "button{font-size:1rem;padding:.5rem 1rem}\n"
    "table{width:100%;border-collapse:collapse}\n"
    "th,td{text-align:left;padding:.4rem .5rem;"
        "border-bottom:1px solid #8886;overflow-wrap:anywhere}\n"
    "code{font-family:ui-monospace,monospace;font-size:.9em}\n"
    ".unpaired{color:#c2410c}\n"
    "[hidden]{display:none!important}\n"
    "@media (max-width:40rem){\n"
    "thead{display:none}\n"
    "table,tbody,tr,td{display:block}\n"
    "tr{border:1px solid #8886;border-radius:.5rem;margin-bottom:.75rem}\n"
    "td{display:flex;gap:.5rem;border:0;padding:.2rem .5rem}\n"
    "td::before{content:attr(data-label);font-weight:600;"
        "min-width:6.5rem;flex:none}\n"
    "}\n";


static char  ngx_http_mdm_watch_pairs_script[] =
    "\n"
    "var q = document.getElementById('q');\n"
    "q.addEventListener('input', function () {\n"
    "    var s = q.value.trim().toLowerCase();\n"
    "    document.querySelectorAll('section').forEach(function (g) {\n"
    "        var shown = 0;\n"
    "        g.querySelectorAll('tbody tr').forEach(function (tr) {\n"
    "            var key = tr.getAttribute('data-search').toLowerCase();\n"
    "            tr.hidden = key.indexOf(s) < 0;\n"
    "            shown += tr.hidden ? 0 : 1;\n"
    "        });\n"
    "        g.hidden = shown === 0;\n"
    "    });\n"
    "});\n";


static u_char  ngx_http_mdm_watch_pairs_csp[NGX_HTTP_MDM_WATCH_PAIRS_CSP_MAX];
static size_t  ngx_http_mdm_watch_pairs_csp_len;


static ngx_str_t  ngx_http_mdm_watch_pairs_json_type =
    ngx_string("application/json");
static ngx_str_t  ngx_http_mdm_watch_pairs_html_type =
    ngx_string("text/html; charset=utf-8");


char *
ngx_http_mdm_watch_pairs(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_mdm_watch_loc_conf_t *mlcf = conf;

    ngx_http_core_loc_conf_t        *clcf;
    ngx_http_mdm_watch_main_conf_t  *mmcf;

    if (mlcf->pairs) {
        return "is duplicate";
    }

    if (mlcf->enroll == 1 || mlcf->checkin == 1) {
        return "cannot be combined with another mdm_watch location "
               "directive in one location";
    }

    mlcf->pairs = 1;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_mdm_watch_pairs_handler;

    mmcf = ngx_http_conf_get_module_main_conf(cf, ngx_mdm_watch_module);
    mmcf->pairs = 1;

    if (ngx_http_mdm_watch_pairs_csp_init(cf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_mdm_watch_pairs_handler(ngx_http_request_t *r)
{
    ngx_int_t                        rc;
    ngx_http_mdm_watch_pairs_ctx_t  *ctx;

    if (ngx_http_mdm_watch_pairs_header(r, "Vary", (u_char *) "Accept", 6)
        != NGX_OK
        || ngx_http_mdm_watch_pairs_header(r, "Cache-Control",
                                           (u_char *) "no-store", 8)
           != NGX_OK
        || ngx_http_mdm_watch_pairs_header(r, "X-Content-Type-Options",
                                           (u_char *) "nosniff", 7)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        if (ngx_http_mdm_watch_pairs_header(r, "Allow",
                                            (u_char *) "GET, HEAD", 9)
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_mdm_watch_pairs_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->base.large_reply = 1;
    ctx->error = "internal error";

    ngx_http_set_ctx(r, &ctx->base, ngx_mdm_watch_module);

    rc = ngx_http_mdm_watch_pairs_args(r, ctx);

    if (rc == NGX_HTTP_BAD_REQUEST) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "mdm watch: pairs request refused: %s", ctx->error);
    }

    if (rc != NGX_OK) {
        return ngx_http_mdm_watch_pairs_error(r, ctx, rc);
    }

    rc = ngx_http_mdm_watch_pairs_query(r, ctx);

    if (rc != NGX_DONE) {
        ctx->error = "the pairs cannot be read now";
        return ngx_http_mdm_watch_pairs_error(r, ctx, rc);
    }

    r->main->count++;

    return NGX_DONE;
}


/* the format, the page and the filter the request asks for */

static ngx_int_t
ngx_http_mdm_watch_pairs_args(ngx_http_request_t *r,
    ngx_http_mdm_watch_pairs_ctx_t *ctx)
{
    u_char     *p;
    ngx_int_t   rc, n;
    ngx_str_t   value, cursor;

    ctx->json = ngx_http_mdm_watch_pairs_accepts_json(r);

    rc = ngx_http_mdm_watch_pairs_arg(r, "format", &value);

    if (rc == NGX_OK) {
        if (ngx_http_mdm_watch_str_eq(&value, "json")) {
            ctx->json = 1;

        } else if (ngx_http_mdm_watch_str_eq(&value, "html")) {
            ctx->json = 0;

        } else {
            rc = NGX_ABORT;
        }
    }

    if (rc == NGX_ABORT) {
        ctx->error = "format must be json or html";
        return NGX_HTTP_BAD_REQUEST;
    }

    ctx->limit = NGX_HTTP_MDM_WATCH_PAIRS_LIMIT;

    rc = ngx_http_mdm_watch_pairs_arg(r, "limit", &value);

    if (rc == NGX_OK) {
        n = ngx_atoi(value.data, value.len);

        if (n < 1 || n > NGX_HTTP_MDM_WATCH_PAIRS_LIMIT_MAX) {
            rc = NGX_ABORT;

        } else {
            ctx->limit = n;
        }
    }

    if (rc == NGX_ABORT) {
        ctx->error = "limit must be a number from 1 to 1000";
        return NGX_HTTP_BAD_REQUEST;
    }

    ngx_str_set(&ctx->start, "-");

    rc = ngx_http_mdm_watch_pairs_arg(r, "cursor", &value);

    if (rc == NGX_OK) {
        p = ngx_pnalloc(r->pool, ngx_base64_decoded_length(value.len) + 1);
        if (p == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        cursor.data = p + 1;

        if (ngx_decode_base64url(&cursor, &value) != NGX_OK
            || cursor.len == 0
            || cursor.len > NGX_HTTP_MDM_WATCH_PAIRS_CURSOR_MAX)
        {
            rc = NGX_ABORT;

        } else {
            *p = '(';
            ctx->start.data = p;
            ctx->start.len = cursor.len + 1;
        }
    }

    if (rc == NGX_ABORT) {
        ctx->error = "invalid cursor";
        return NGX_HTTP_BAD_REQUEST;
    }

    return ngx_http_mdm_watch_pairs_filter(r, ctx);
}


/*
 * at most one of watch=, phone=, serial= and q=; UDIDs and serials are
 * looked up in upper case, as the module stores them
 */

static ngx_int_t
ngx_http_mdm_watch_pairs_filter(ngx_http_request_t *r,
    ngx_http_mdm_watch_pairs_ctx_t *ctx)
{
    size_t                              i;
    ngx_int_t                           rc;
    ngx_str_t                           value;
    ngx_uint_t                          f;
    ngx_http_mdm_watch_pairs_filter_e   filter;

    static char  *names[] = { NULL, "watch", "phone", "serial", "q" };

    for (f = NGX_HTTP_MDM_WATCH_PAIRS_WATCH;
         f <= NGX_HTTP_MDM_WATCH_PAIRS_ANY;
         f++)
    {
        rc = ngx_http_mdm_watch_pairs_arg(r, names[f], &value);

        if (rc == NGX_DECLINED) {
            continue;
        }

        if (rc != NGX_OK || ctx->filter != NGX_HTTP_MDM_WATCH_PAIRS_ALL) {
            ctx->error = "one filter at most, of watch, phone, serial "
                         "and q, no longer than 256 bytes";
            return NGX_HTTP_BAD_REQUEST;
        }

        ctx->filter = f;
        ctx->id = value;
    }

    filter = ctx->filter;

    if (filter == NGX_HTTP_MDM_WATCH_PAIRS_ALL) {
        return NGX_OK;
    }

    if (filter == NGX_HTTP_MDM_WATCH_PAIRS_ANY) {
        ctx->q = ctx->id;

        while (ctx->id.len && ctx->id.data[0] == ' ') {
            ctx->id.data++;
            ctx->id.len--;
        }

        while (ctx->id.len && ctx->id.data[ctx->id.len - 1] == ' ') {
            ctx->id.len--;
        }

        if (ctx->id.len == 0) {
            ctx->filter = NGX_HTTP_MDM_WATCH_PAIRS_ALL;
            return NGX_OK;
        }
    }

    if (filter != NGX_HTTP_MDM_WATCH_PAIRS_SERIAL) {
        rc = ngx_http_mdm_watch_udid_canonical(r->pool, &ctx->id, &value);

        if (rc == NGX_OK) {
            ctx->id = value;
            return NGX_OK;
        }

        if (rc == NGX_ERROR) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (filter != NGX_HTTP_MDM_WATCH_PAIRS_ANY) {
            ctx->error = "invalid UDID";
            return NGX_HTTP_BAD_REQUEST;
        }

        /* not a UDID: the search box's text can only be a serial */

        ctx->filter = NGX_HTTP_MDM_WATCH_PAIRS_SERIAL;
    }

    if (ctx->id.len > NGX_HTTP_MDM_WATCH_PAIRS_SERIAL_MAX) {
        ctx->error = "serial longer than 64 bytes";
        return NGX_HTTP_BAD_REQUEST;
    }

    value.data = ngx_pnalloc(r->pool, ctx->id.len);
    if (value.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 0; i < ctx->id.len; i++) {
        value.data[i] = ngx_toupper(ctx->id.data[i]);
    }

    ctx->id.data = value.data;

    return NGX_OK;
}


/*
 * NGX_OK: the argument, decoded into memory of its own; NGX_DECLINED:
 * absent or empty; NGX_ABORT: too long or not decodable
 */

static ngx_int_t
ngx_http_mdm_watch_pairs_arg(ngx_http_request_t *r, char *name,
    ngx_str_t *value)
{
    u_char     *src, *dst;
    size_t      i;
    ngx_str_t   raw;

    if (ngx_http_arg(r, (u_char *) name, ngx_strlen(name), &raw) != NGX_OK
        || raw.len == 0)
    {
        return NGX_DECLINED;
    }

    if (raw.len > NGX_HTTP_MDM_WATCH_PAIRS_ARG_MAX) {
        return NGX_ABORT;
    }

    value->data = ngx_pnalloc(r->pool, raw.len);
    if (value->data == NULL) {
        return NGX_ABORT;
    }

    /* a form sends spaces as "+" */

    for (i = 0; i < raw.len; i++) {
        value->data[i] = (raw.data[i] == '+') ? ' ' : raw.data[i];
    }

    src = value->data;
    dst = value->data;

    ngx_unescape_uri(&dst, &src, raw.len, 0);

    if (src != value->data + raw.len) {
        return NGX_ABORT;
    }

    value->len = dst - value->data;

    return value->len ? NGX_OK : NGX_DECLINED;
}


/* whether an Accept header names application/json before text/html */

static ngx_uint_t
ngx_http_mdm_watch_pairs_accepts_json(ngx_http_request_t *r)
{
    u_char           *json, *html, *last;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return 0;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len != sizeof("Accept") - 1
            || ngx_strncasecmp(h[i].key.data, (u_char *) "Accept",
                               sizeof("Accept") - 1)
               != 0)
        {
            continue;
        }

        last = h[i].value.data + h[i].value.len;

        json = ngx_strlcasestrn(h[i].value.data, last,
                                (u_char *) "application/json",
                                sizeof("application/json") - 2);
        html = ngx_strlcasestrn(h[i].value.data, last,
                                (u_char *) "text/html",
                                sizeof("text/html") - 2);

        if (json && (html == NULL || json < html)) {
            return 1;
        }
    }
}


static ngx_int_t
ngx_http_mdm_watch_pairs_query(ngx_http_request_t *r,
    ngx_http_mdm_watch_pairs_ctx_t *ctx)
{
    u_char      *p;
    size_t       argvlen[9];
    ngx_str_t    limit;
    const char  *argv[9];

    argv[0] = "EVAL";
    argvlen[0] = sizeof("EVAL") - 1;

    if (ctx->filter == NGX_HTTP_MDM_WATCH_PAIRS_ALL) {
        p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
        if (p == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        limit.data = p;
        limit.len = ngx_sprintf(p, "%ui", ctx->limit) - p;

        argv[1] = ngx_http_mdm_watch_pairs_page_script;
        argvlen[1] = sizeof(ngx_http_mdm_watch_pairs_page_script) - 1;
        argv[2] = "1";
        argvlen[2] = 1;
        argv[3] = NGX_HTTP_MDM_WATCH_KEY_PAIRS;
        argvlen[3] = sizeof(NGX_HTTP_MDM_WATCH_KEY_PAIRS) - 1;
        argv[4] = (char *) ctx->start.data;
        argvlen[4] = ctx->start.len;
        argv[5] = (char *) limit.data;
        argvlen[5] = limit.len;
        argv[6] = NGX_HTTP_MDM_WATCH_KEY_PAIR;
        argvlen[6] = sizeof(NGX_HTTP_MDM_WATCH_KEY_PAIR) - 1;

        return ngx_http_mdm_watch_redis_call(r, &ctx->base,
                                             ngx_http_mdm_watch_pairs_reply,
                                             7, argv, argvlen);
    }

    argv[1] = ngx_http_mdm_watch_pairs_lookup_script;
    argvlen[1] = sizeof(ngx_http_mdm_watch_pairs_lookup_script) - 1;
    argv[2] = "0";
    argvlen[2] = 1;
    argv[3] = ngx_http_mdm_watch_pairs_modes[ctx->filter];
    argvlen[3] = ngx_strlen(argv[3]);
    argv[4] = (char *) ctx->id.data;
    argvlen[4] = ctx->id.len;
    argv[5] = NGX_HTTP_MDM_WATCH_KEY_PAIR;
    argvlen[5] = sizeof(NGX_HTTP_MDM_WATCH_KEY_PAIR) - 1;
    argv[6] = NGX_HTTP_MDM_WATCH_KEY_PHONE;
    argvlen[6] = sizeof(NGX_HTTP_MDM_WATCH_KEY_PHONE) - 1;
    argv[7] = NGX_HTTP_MDM_WATCH_KEY_SERIAL;
    argvlen[7] = sizeof(NGX_HTTP_MDM_WATCH_KEY_SERIAL) - 1;
    argv[8] = "1000";
    argvlen[8] = sizeof("1000") - 1;

    return ngx_http_mdm_watch_redis_call(r, &ctx->base,
                                         ngx_http_mdm_watch_pairs_reply,
                                         9, argv, argvlen);
}


static void
ngx_http_mdm_watch_pairs_reply(ngx_http_request_t *r,
    ngx_http_mdm_watch_ctx_t *base, redisReply *reply)
{
    ngx_int_t                        rc;
    ngx_http_mdm_watch_pairs_ctx_t  *ctx;

    ctx = (ngx_http_mdm_watch_pairs_ctx_t *) base;

    if (reply == NULL) {
        ctx->error = "the pairs cannot be read now";
        rc = ngx_http_mdm_watch_pairs_error(r, ctx,
                                            ngx_http_mdm_watch_unavailable(r));
        ngx_http_finalize_request(r, rc);
        return;
    }

    if (ngx_http_mdm_watch_pairs_read(r, ctx, reply) != NGX_OK) {
        rc = ngx_http_mdm_watch_pairs_error(r, ctx,
                                            NGX_HTTP_INTERNAL_SERVER_ERROR);

    } else if (ctx->filter != NGX_HTTP_MDM_WATCH_PAIRS_ALL
               && ctx->pairs.nelts == 0)
    {
        ctx->error = "no pair matches";
        rc = ngx_http_mdm_watch_pairs_error(r, ctx, NGX_HTTP_NOT_FOUND);

    } else {
        rc = ngx_http_mdm_watch_pairs_respond(r, ctx, NGX_HTTP_OK);
    }

    ngx_http_finalize_request(r, rc);
}


/* the reply: the cursor of the next page or nil, then the pairs */

static ngx_int_t
ngx_http_mdm_watch_pairs_read(ngx_http_request_t *r,
    ngx_http_mdm_watch_pairs_ctx_t *ctx, redisReply *reply)
{
    size_t                      i;
    ngx_str_t                   last;
    redisReply                 *e;
    ngx_http_mdm_watch_pair_t  *pair;

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements == 0) {
        goto unexpected;
    }

    e = reply->element[0];

    if (e->type == REDIS_REPLY_STRING) {
        last.data = (u_char *) e->str;
        last.len = e->len;

        ctx->next.len = ngx_base64_encoded_length(last.len);
        ctx->next.data = ngx_pnalloc(r->pool, ctx->next.len);
        if (ctx->next.data == NULL) {
            return NGX_ERROR;
        }

        ngx_encode_base64url(&ctx->next, &last);

    } else if (e->type != REDIS_REPLY_NIL) {
        goto unexpected;
    }

    if (ngx_array_init(&ctx->pairs, r->pool, reply->elements,
                       sizeof(ngx_http_mdm_watch_pair_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    for (i = 1; i < reply->elements; i++) {
        pair = ngx_array_push(&ctx->pairs);
        if (pair == NULL) {
            return NGX_ERROR;
        }

        switch (ngx_http_mdm_watch_pairs_read_pair(r->pool, reply->element[i],
                                                   pair))
        {
        case NGX_OK:
            break;

        case NGX_DECLINED:
            goto unexpected;

        default:
            return NGX_ERROR;
        }
    }

    return NGX_OK;

unexpected:

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "mdm watch: unexpected redis reply of type %d "
                  "to reading pairs", reply->type);

    return NGX_ERROR;
}


/*
 * the fields point into the reply, which lives as long as the reply
 * handler runs; the answer is written before it returns
 */

static ngx_int_t
ngx_http_mdm_watch_pairs_read_pair(ngx_pool_t *pool, redisReply *reply,
    ngx_http_mdm_watch_pair_t *pair)
{
    size_t       i;
    ngx_str_t   *f;
    redisReply  *e;

    if (reply->type != REDIS_REPLY_ARRAY
        || reply->elements != NGX_HTTP_MDM_WATCH_PAIR_FIELDS)
    {
        return NGX_DECLINED;
    }

    f = pair->field;

    for (i = 0; i < NGX_HTTP_MDM_WATCH_PAIR_FIELDS; i++) {
        e = reply->element[i];

        if (e->type == REDIS_REPLY_STRING) {
            f[i].data = (u_char *) e->str;
            f[i].len = e->len;

        } else if (e->type == REDIS_REPLY_NIL) {
            f[i].data = NULL;
            f[i].len = 0;

        } else {
            return NGX_DECLINED;
        }
    }

    if (f[NGX_HTTP_MDM_WATCH_PAIR_WATCH].data == NULL) {
        f[NGX_HTTP_MDM_WATCH_PAIR_WATCH] = f[NGX_HTTP_MDM_WATCH_PAIR_MEMBER];
    }

    return ngx_http_mdm_watch_pairs_time(pool,
                                     &f[NGX_HTTP_MDM_WATCH_PAIR_PAIRED_AT]);
}


/* Unix seconds as RFC 3339 in UTC; anything else as absent */

static ngx_int_t
ngx_http_mdm_watch_pairs_time(ngx_pool_t *pool, ngx_str_t *t)
{
    time_t     sec;
    ngx_tm_t   tm;

    if (t->data == NULL) {
        return NGX_OK;
    }

    sec = ngx_atotm(t->data, t->len);

    if (sec == NGX_ERROR || sec > NGX_HTTP_MDM_WATCH_PAIRS_TIME_MAX) {
        t->data = NULL;
        t->len = 0;
        return NGX_OK;
    }

    t->data = ngx_pnalloc(pool, NGX_HTTP_MDM_WATCH_PAIRS_TIME_LEN);
    if (t->data == NULL) {
        return NGX_ERROR;
    }

    ngx_gmtime(sec, &tm);

    t->len = ngx_sprintf(t->data, "%4d-%02d-%02dT%02d:%02d:%02dZ",
                         tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                         tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec)
             - t->data;

    return NGX_OK;
}


static ngx_int_t
ngx_http_mdm_watch_pairs_respond(ngx_http_request_t *r,
    ngx_http_mdm_watch_pairs_ctx_t *ctx, ngx_uint_t status)
{
    ngx_int_t                       rc;
    ngx_http_mdm_watch_pairs_out_t  out;

    ngx_memzero(&out, sizeof(ngx_http_mdm_watch_pairs_out_t));

    out.pool = r->pool;
    out.last = &out.first;

    if (ctx->json) {
        rc = ngx_http_mdm_watch_pairs_json(ctx, &out);

    } else {
        rc = ngx_http_mdm_watch_pairs_html(ctx, &out);
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_mdm_watch_pairs_send(r, ctx, status, &out);
}


/* an error: {"error":"..."} in JSON, nginx's own page in HTML */

static ngx_int_t
ngx_http_mdm_watch_pairs_error(ngx_http_request_t *r,
    ngx_http_mdm_watch_pairs_ctx_t *ctx, ngx_int_t status)
{
    ngx_http_mdm_watch_pairs_out_t  out;

    if (status < NGX_HTTP_SPECIAL_RESPONSE) {
        return status;
    }

    if (!ctx->json) {

        /* a search that finds nothing still shows the search box */

        if (status == NGX_HTTP_NOT_FOUND) {
            return ngx_http_mdm_watch_pairs_respond(r, ctx, status);
        }

        return status;
    }

    ngx_memzero(&out, sizeof(ngx_http_mdm_watch_pairs_out_t));

    out.pool = r->pool;
    out.last = &out.first;

    if (ngx_http_mdm_watch_pairs_literal(&out, "{\"error\":\"") != NGX_OK
        || ngx_http_mdm_watch_pairs_append(&out, (u_char *) ctx->error,
                                           ngx_strlen(ctx->error))
           != NGX_OK
        || ngx_http_mdm_watch_pairs_literal(&out, "\"}") != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_mdm_watch_pairs_send(r, ctx, status, &out);
}


static ngx_int_t
ngx_http_mdm_watch_pairs_json(ngx_http_mdm_watch_pairs_ctx_t *ctx,
    ngx_http_mdm_watch_pairs_out_t *out)
{
    ngx_str_t                         *v;
    ngx_uint_t                         i;
    ngx_http_mdm_watch_pair_t         *pair;
    ngx_http_mdm_watch_pairs_field_t  *f;

    if (ngx_http_mdm_watch_pairs_literal(out, "{\"pairs\":[") != NGX_OK) {
        return NGX_ERROR;
    }

    pair = ctx->pairs.elts;

    for (i = 0; i < ctx->pairs.nelts; i++) {

        if (i && ngx_http_mdm_watch_pairs_literal(out, ",") != NGX_OK) {
            return NGX_ERROR;
        }

        for (f = ngx_http_mdm_watch_pairs_fields; f->name.len; f++) {
            v = &pair[i].field[f->field];

            if (ngx_http_mdm_watch_pairs_append(out, f->name.data,
                                                f->name.len)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            if (v->data == NULL) {
                if (ngx_http_mdm_watch_pairs_literal(out, "null") != NGX_OK) {
                    return NGX_ERROR;
                }

                continue;
            }

            if (ngx_http_mdm_watch_pairs_literal(out, "\"") != NGX_OK
                || ngx_http_mdm_watch_pairs_append_escaped(out, v, 0)
                   != NGX_OK
                || ngx_http_mdm_watch_pairs_literal(out, "\"") != NGX_OK)
            {
                return NGX_ERROR;
            }
        }

        if (ngx_http_mdm_watch_pairs_literal(out, "}") != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (ngx_http_mdm_watch_pairs_literal(out, "],\"next\":") != NGX_OK) {
        return NGX_ERROR;
    }

    if (ctx->next.data == NULL) {
        return ngx_http_mdm_watch_pairs_literal(out, "null}");
    }

    if (ngx_http_mdm_watch_pairs_literal(out, "\"") != NGX_OK
        || ngx_http_mdm_watch_pairs_append(out, ctx->next.data,
                                           ctx->next.len)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_mdm_watch_pairs_literal(out, "\"}");
}


/*
 * the page: a search box, the pairs grouped by phone, and a link to the
 * next page; every value from Redis or the request is escaped
 */

static ngx_int_t
ngx_http_mdm_watch_pairs_html(ngx_http_mdm_watch_pairs_ctx_t *ctx,
    ngx_http_mdm_watch_pairs_out_t *out)
{
    if (ngx_http_mdm_watch_pairs_html_head(ctx, out) != NGX_OK
        || ngx_http_mdm_watch_pairs_html_groups(ctx, out) != NGX_OK
        || ngx_http_mdm_watch_pairs_html_tail(ctx, out) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_mdm_watch_pairs_html_head(ngx_http_mdm_watch_pairs_ctx_t *ctx,
    ngx_http_mdm_watch_pairs_out_t *out)
{
    if (ngx_http_mdm_watch_pairs_literal(out,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n"
            "<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" "
            "content=\"width=device-width, initial-scale=1\">\n"
            "<title>Watch pairs</title>\n<style>")
        != NGX_OK
        || ngx_http_mdm_watch_pairs_literal(out,
                                          ngx_http_mdm_watch_pairs_style)
           != NGX_OK
        || ngx_http_mdm_watch_pairs_literal(out,
            "</style>\n</head>\n<body>\n<h1>Watch pairs</h1>\n"
            "<form method=\"get\" role=\"search\">"
            "<input id=\"q\" name=\"q\" type=\"search\" "
            "placeholder=\"UDID or serial\" "
            "aria-label=\"Watch or phone UDID, or serial\" "
            "autocomplete=\"off\" spellcheck=\"false\" value=\"")
           != NGX_OK
        || ngx_http_mdm_watch_pairs_append_escaped(out, &ctx->q, 1) != NGX_OK
        || ngx_http_mdm_watch_pairs_literal(out,
            "\"><button type=\"submit\">Look up</button></form>\n")
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ctx->pairs.nelts == 0) {
        return ngx_http_mdm_watch_pairs_literal(out,
                                                "<p>No pairs found.</p>\n");
    }

    return NGX_OK;
}


/* a section per phone, with a table of its watches */

static ngx_int_t
ngx_http_mdm_watch_pairs_html_groups(ngx_http_mdm_watch_pairs_ctx_t *ctx,
    ngx_http_mdm_watch_pairs_out_t *out)
{
    ngx_str_t                  *phone, *prev;
    ngx_uint_t                  i;
    ngx_http_mdm_watch_pair_t  *pair;

    pair = ctx->pairs.elts;

    ngx_sort(pair, ctx->pairs.nelts, sizeof(ngx_http_mdm_watch_pair_t),
             ngx_http_mdm_watch_pairs_by_phone);

    prev = NULL;

    for (i = 0; i < ctx->pairs.nelts; i++) {
        phone = &pair[i].field[NGX_HTTP_MDM_WATCH_PAIR_PHONE];

        if (prev == NULL
            || ngx_memn2cmp(prev->data, phone->data, prev->len, phone->len)
               != 0)
        {
            if ((prev
                 && ngx_http_mdm_watch_pairs_literal(out,
                        "</tbody></table></section>\n")
                    != NGX_OK)
                || ngx_http_mdm_watch_pairs_literal(out,
                       "<section>\n<h2>Phone <code>")
                   != NGX_OK
                || ngx_http_mdm_watch_pairs_append_escaped(out, phone, 1)
                   != NGX_OK
                || ngx_http_mdm_watch_pairs_literal(out,
                       "</code></h2>\n<table><thead><tr><th>Watch</th>"
                       "<th>Serial</th><th>Product</th><th>watchOS</th>"
                       "<th>Paired at</th><th>State</th></tr></thead>"
                       "<tbody>\n")
                   != NGX_OK)
            {
                return NGX_ERROR;
            }

            prev = phone;
        }

        if (ngx_http_mdm_watch_pairs_html_pair(out, &pair[i]) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (prev) {
        return ngx_http_mdm_watch_pairs_literal(out,
                                              "</tbody></table></section>\n");
    }

    return NGX_OK;
}


/* the link to the next page, if any, and the script */

static ngx_int_t
ngx_http_mdm_watch_pairs_html_tail(ngx_http_mdm_watch_pairs_ctx_t *ctx,
    ngx_http_mdm_watch_pairs_out_t *out)
{
    u_char  *p;
    u_char   limit[NGX_INT_T_LEN];

    if (ctx->next.data) {
        p = ngx_sprintf(limit, "%ui", ctx->limit);

        if (ngx_http_mdm_watch_pairs_literal(out,
                "<p><a rel=\"next\" href=\"?cursor=")
            != NGX_OK
            || ngx_http_mdm_watch_pairs_append_escaped(out, &ctx->next, 1)
               != NGX_OK
            || ngx_http_mdm_watch_pairs_literal(out, "&amp;limit=")
               != NGX_OK
            || ngx_http_mdm_watch_pairs_append(out, limit, p - limit)
               != NGX_OK
            || ngx_http_mdm_watch_pairs_literal(out,
                   "\">Next page</a></p>\n")
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (ngx_http_mdm_watch_pairs_literal(out, "<script>") != NGX_OK
        || ngx_http_mdm_watch_pairs_literal(out,
                                          ngx_http_mdm_watch_pairs_script)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_mdm_watch_pairs_literal(out,
                                            "</script>\n</body>\n</html>\n");
}


static ngx_int_t
ngx_http_mdm_watch_pairs_html_pair(ngx_http_mdm_watch_pairs_out_t *out,
    ngx_http_mdm_watch_pair_t *pair)
{
    ngx_int_t                          rc;
    ngx_str_t                         *f, *state;
    ngx_http_mdm_watch_pairs_field_t  *c;

    f = pair->field;
    state = &f[NGX_HTTP_MDM_WATCH_PAIR_STATE];

    rc = ngx_http_mdm_watch_str_eq(state, "unpaired")
         ? ngx_http_mdm_watch_pairs_literal(out, "<tr class=\"unpaired\"")
         : ngx_http_mdm_watch_pairs_literal(out, "<tr");

    if (rc != NGX_OK
        || ngx_http_mdm_watch_pairs_literal(out, " data-search=\"") != NGX_OK
        || ngx_http_mdm_watch_pairs_append_escaped(out,
                                     &f[NGX_HTTP_MDM_WATCH_PAIR_WATCH], 1)
           != NGX_OK
        || ngx_http_mdm_watch_pairs_literal(out, " ") != NGX_OK
        || ngx_http_mdm_watch_pairs_append_escaped(out,
                                     &f[NGX_HTTP_MDM_WATCH_PAIR_SERIAL], 1)
           != NGX_OK
        || ngx_http_mdm_watch_pairs_literal(out,
               "\"><td data-label=\"Watch\"><code>")
           != NGX_OK
        || ngx_http_mdm_watch_pairs_append_escaped(out,
                                     &f[NGX_HTTP_MDM_WATCH_PAIR_WATCH], 1)
           != NGX_OK
        || ngx_http_mdm_watch_pairs_literal(out, "</code></td>") != NGX_OK)
    {
        return NGX_ERROR;
    }

    for (c = ngx_http_mdm_watch_pairs_cells; c->name.len; c++) {
        if (ngx_http_mdm_watch_pairs_append(out, c->name.data, c->name.len)
            != NGX_OK
            || ngx_http_mdm_watch_pairs_append_escaped(out, &f[c->field], 1)
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return ngx_http_mdm_watch_pairs_literal(out, "</td></tr>\n");
}


/* ngx_sort() keeps the order of equal elements: watches stay sorted */

static ngx_int_t
ngx_http_mdm_watch_pairs_by_phone(const void *one, const void *two)
{
    const ngx_str_t  *a, *b;

    a = &((ngx_http_mdm_watch_pair_t *) one)->field[
                                                NGX_HTTP_MDM_WATCH_PAIR_PHONE];
    b = &((ngx_http_mdm_watch_pair_t *) two)->field[
                                                NGX_HTTP_MDM_WATCH_PAIR_PHONE];

    return ngx_memn2cmp(a->data, b->data, a->len, b->len);
}


static ngx_int_t
ngx_http_mdm_watch_pairs_send(ngx_http_request_t *r,
    ngx_http_mdm_watch_pairs_ctx_t *ctx, ngx_uint_t status,
    ngx_http_mdm_watch_pairs_out_t *out)
{
    ngx_int_t   rc;
    ngx_str_t  *type;

    if (ctx->json) {
        type = &ngx_http_mdm_watch_pairs_json_type;
        r->headers_out.content_type_len = type->len;

    } else {
        type = &ngx_http_mdm_watch_pairs_html_type;
        r->headers_out.content_type_len = sizeof("text/html") - 1;

        if (ngx_http_mdm_watch_pairs_header(r, "Content-Security-Policy",
                                    ngx_http_mdm_watch_pairs_csp,
                                    ngx_http_mdm_watch_pairs_csp_len)
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    r->headers_out.status = status;
    r->headers_out.content_type = *type;
    r->headers_out.content_length_n = out->size;

    out->buf->last_buf = (r == r->main) ? 1 : 0;
    out->buf->last_in_chain = 1;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_output_filter(r, out->first);
}


static ngx_int_t
ngx_http_mdm_watch_pairs_header(ngx_http_request_t *r, char *name,
    u_char *value, size_t len)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) name;
    h->key.len = ngx_strlen(name);
    h->value.data = value;
    h->value.len = len;

    return NGX_OK;
}


/*
 * the page allows nothing but its own style and script, named by their
 * SHA-256, and submitting its form to itself
 */

static ngx_int_t
ngx_http_mdm_watch_pairs_csp_init(ngx_conf_t *cf)
{
    u_char  *p;

    p = ngx_http_mdm_watch_pairs_csp;

    p = ngx_cpymem(p, "default-src 'none'; style-src ",
                   sizeof("default-src 'none'; style-src ") - 1);

    p = ngx_http_mdm_watch_pairs_csp_hash(p, ngx_http_mdm_watch_pairs_style);
    if (p == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(p, "; script-src ", sizeof("; script-src ") - 1);

    p = ngx_http_mdm_watch_pairs_csp_hash(p, ngx_http_mdm_watch_pairs_script);
    if (p == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(p, "; form-action 'self'; base-uri 'none'; "
                      "frame-ancestors 'none'",
                   sizeof("; form-action 'self'; base-uri 'none'; "
                          "frame-ancestors 'none'") - 1);

    ngx_http_mdm_watch_pairs_csp_len = p - ngx_http_mdm_watch_pairs_csp;

    return NGX_OK;
}


static u_char *
ngx_http_mdm_watch_pairs_csp_hash(u_char *p, char *text)
{
    ngx_str_t     digest, encoded;
    unsigned int  len;
    u_char        md[EVP_MAX_MD_SIZE];

    if (EVP_Digest(text, ngx_strlen(text), md, &len, EVP_sha256(), NULL)
        != 1)
    {
        ngx_http_mdm_watch_openssl_error(NGX_LOG_EMERG, ngx_cycle->log,
                                         "EVP_Digest");
        return NULL;
    }

    digest.data = md;
    digest.len = len;

    p = ngx_cpymem(p, "'sha256-", sizeof("'sha256-") - 1);

    encoded.data = p;
    ngx_encode_base64(&encoded, &digest);

    p += encoded.len;
    *p++ = '\'';

    return p;
}


static ngx_int_t
ngx_http_mdm_watch_pairs_append(ngx_http_mdm_watch_pairs_out_t *out,
    u_char *data, size_t len)
{
    u_char  *p;

    p = ngx_http_mdm_watch_pairs_reserve(out, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    out->buf->last = ngx_cpymem(p, data, len);
    out->size += len;

    return NGX_OK;
}


static ngx_int_t
ngx_http_mdm_watch_pairs_append_escaped(ngx_http_mdm_watch_pairs_out_t *out,
    ngx_str_t *s, ngx_uint_t html)
{
    u_char  *p;
    size_t   len;

    if (s->data == NULL) {
        return NGX_OK;
    }

    len = ngx_http_mdm_watch_pairs_escape(NULL, s, html);

    p = ngx_http_mdm_watch_pairs_reserve(out, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    out->buf->last = p + ngx_http_mdm_watch_pairs_escape(p, s, html);
    out->size += len;

    return NGX_OK;
}


/* room for len bytes at the end of the chain */

static u_char *
ngx_http_mdm_watch_pairs_reserve(ngx_http_mdm_watch_pairs_out_t *out,
    size_t len)
{
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    b = out->buf;

    if (b && (size_t) (b->end - b->last) >= len) {
        return b->last;
    }

    b = ngx_create_temp_buf(out->pool,
                            ngx_max(len, NGX_HTTP_MDM_WATCH_PAIRS_BUF_SIZE));
    if (b == NULL) {
        return NULL;
    }

    cl = ngx_alloc_chain_link(out->pool);
    if (cl == NULL) {
        return NULL;
    }

    cl->buf = b;
    cl->next = NULL;

    *out->last = cl;
    out->last = &cl->next;
    out->buf = b;

    return b->last;
}


/*
 * src escaped for a JSON string or for HTML text and attributes, into
 * dst, or only counted when dst is NULL; bytes that are not UTF-8 become
 * U+FFFD, so that the output is valid whatever Redis holds
 */

static size_t
ngx_http_mdm_watch_pairs_escape(u_char *dst, ngx_str_t *src, ngx_uint_t html)
{
    u_char  *p, *last, *from;
    size_t   len, n, size;
    u_char   buf[6];

    len = 0;
    p = src->data;
    last = p + src->len;

    while (p < last) {
        n = ngx_http_mdm_watch_pairs_utf8(p, last);

        if (n == 0) {
            from = (u_char *) "\xef\xbf\xbd";
            size = 3;
            n = 1;

        } else if (n == 1
                   && (size = ngx_http_mdm_watch_pairs_escape_char(*p, html,
                                                                   buf)))
        {
            from = buf;

        } else {
            from = p;
            size = n;
        }

        if (dst) {
            dst = ngx_cpymem(dst, from, size);
        }

        len += size;
        p += n;
    }

    return len;
}


/*
 * the replacement of an ASCII character into buf, and its length; 0: the
 * character stands for itself.  JSON escapes markup characters too, so
 * that the JSON can never be taken for HTML.
 */

static size_t
ngx_http_mdm_watch_pairs_escape_char(u_char c, ngx_uint_t html, u_char *buf)
{
    ngx_str_t  *e;

    static u_char     hex[] = "0123456789abcdef";

    /* each: a character, then the entity that stands for it */
    static ngx_str_t  entities[] = {
        ngx_string("&&amp;"),
        ngx_string("<&lt;"),
        ngx_string(">&gt;"),
        ngx_string("\"&quot;"),
        ngx_string("'&#39;"),
        ngx_null_string
    };

    if (html) {
        for (e = entities; e->len; e++) {
            if (e->data[0] == c) {
                ngx_memcpy(buf, e->data + 1, e->len - 1);
                return e->len - 1;
            }
        }

        if (c < 0x20 || c == 0x7f) {
            ngx_memcpy(buf, "\xef\xbf\xbd", 3);
            return 3;
        }

        return 0;
    }

    if (c == '"' || c == '\\') {
        buf[0] = '\\';
        buf[1] = c;
        return 2;
    }

    if (c < 0x20 || c == 0x7f || c == '<' || c == '>' || c == '&'
        || c == '\'')
    {
        ngx_memcpy(buf, "\\u00", 4);
        buf[4] = hex[c >> 4];
        buf[5] = hex[c & 0x0f];
        return 6;
    }

    return 0;
}


/* the length of the valid UTF-8 character at p, 0 if there is none */

static size_t
ngx_http_mdm_watch_pairs_utf8(u_char *p, u_char *last)
{
    size_t    n, i;
    uint32_t  u, min;

    if (*p < 0x80) {
        return 1;
    }

    if (*p >= 0xc2 && *p <= 0xdf) {
        n = 2;
        u = *p & 0x1f;
        min = 0x80;

    } else if ((*p & 0xf0) == 0xe0) {
        n = 3;
        u = *p & 0x0f;
        min = 0x800;

    } else if (*p >= 0xf0 && *p <= 0xf4) {
        n = 4;
        u = *p & 0x07;
        min = 0x10000;

    } else {
        return 0;
    }

    if ((size_t) (last - p) < n) {
        return 0;
    }

    for (i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return 0;
        }

        u = (u << 6) | (p[i] & 0x3f);
    }

    if (u < min || u > 0x10ffff || (u >= 0xd800 && u <= 0xdfff)) {
        return 0;
    }

    return n;
}
