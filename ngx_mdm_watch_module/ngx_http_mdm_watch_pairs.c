
/*
 * Copyright (C) The ngx_mdm_watch_module authors
 */


#include "ngx_http_mdm_watch.h"


/*
 * The administrators' view of the pairs: a content handler that reads a
 * page of pairs, or the pairs one filter finds, with one Redis script,
 * and answers with JSON or with a self-contained HTML page.
 */


#define NGX_HTTP_MDM_WATCH_PAIRS_LIMIT       100
#define NGX_HTTP_MDM_WATCH_PAIRS_LIMIT_MAX   1000
#define NGX_HTTP_MDM_WATCH_PAIRS_ARG_MAX     256

/* the longest watch UDID a page lists and a cursor names, also in Lua */
#define NGX_HTTP_MDM_WATCH_PAIRS_CURSOR_MAX      128
#define NGX_HTTP_MDM_WATCH_PAIRS_CURSOR_MAX_LUA  "128"

/* a time as RFC 3339 writes it, up to the year 9999 */
#define NGX_HTTP_MDM_WATCH_PAIRS_TIME_LEN    sizeof("2026-12-04T18:00:00Z")
#define NGX_HTTP_MDM_WATCH_PAIRS_TIME_MAX    253402300799


/* a media range of an Accept header */

typedef struct {
    ngx_str_t                        type;
    ngx_str_t                        subtype;
    ngx_int_t                        q;
} ngx_http_mdm_watch_pairs_range_t;


/* how much a type is accepted: quality, the range that said so, where */

typedef struct {
    ngx_int_t                        q;
    ngx_uint_t                       match;
    ngx_uint_t                       order;
} ngx_http_mdm_watch_pairs_pref_t;


static ngx_int_t ngx_http_mdm_watch_pairs_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_mdm_watch_pairs_format(ngx_http_request_t *r,
    ngx_http_mdm_watch_pairs_ctx_t *ctx);
static ngx_int_t ngx_http_mdm_watch_pairs_args(ngx_http_request_t *r,
    ngx_http_mdm_watch_pairs_ctx_t *ctx);
static ngx_int_t ngx_http_mdm_watch_pairs_cursor(ngx_pool_t *pool,
    ngx_str_t *value, ngx_str_t *start);
static ngx_int_t ngx_http_mdm_watch_pairs_filter(ngx_http_request_t *r,
    ngx_http_mdm_watch_pairs_ctx_t *ctx);
static ngx_int_t ngx_http_mdm_watch_pairs_arg(ngx_http_request_t *r,
    char *name, ngx_str_t *value);
static ngx_uint_t ngx_http_mdm_watch_pairs_accepts_json(
    ngx_http_request_t *r);
static u_char *ngx_http_mdm_watch_pairs_media_range(u_char *p, u_char *last,
    ngx_http_mdm_watch_pairs_range_t *range);
static u_char *ngx_http_mdm_watch_pairs_token(u_char *p, u_char *last,
    ngx_str_t *token);
static ngx_int_t ngx_http_mdm_watch_pairs_qvalue(u_char *p, size_t len);
static void ngx_http_mdm_watch_pairs_prefer(
    ngx_http_mdm_watch_pairs_pref_t *pref,
    ngx_http_mdm_watch_pairs_range_t *range, ngx_str_t *type,
    ngx_str_t *subtype, ngx_uint_t order);
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
static ngx_int_t ngx_http_mdm_watch_pairs_respond(ngx_http_request_t *r,
    ngx_http_mdm_watch_pairs_ctx_t *ctx, ngx_uint_t status);
static ngx_int_t ngx_http_mdm_watch_pairs_error(ngx_http_request_t *r,
    ngx_http_mdm_watch_pairs_ctx_t *ctx, ngx_int_t status);
static ngx_int_t ngx_http_mdm_watch_pairs_send(ngx_http_request_t *r,
    ngx_http_mdm_watch_pairs_ctx_t *ctx, ngx_uint_t status,
    ngx_http_mdm_watch_pairs_out_t *out);


/*
 * adds the pair of watch w to the array out: its UDID as indexed, then
 * the fields of its record, each cut to 128 bytes, so that a page of
 * 1000 pairs stays within the Redis layer's reply limits; a pair whose
 * record is gone, or is no hash, is left out
 */

#define NGX_HTTP_MDM_WATCH_PAIRS_LUA_ADD                                      \
    "local function add(out, w) "                                             \
        "local key = ARGV[3] .. w "                                           \
        "if redis.call('TYPE', key).ok ~= 'hash' then return end "            \
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
 * else nil; an index member longer than a cursor may be is skipped, so
 * that every cursor handed out is accepted back, and so is one whose
 * record is gone or is no hash, so that a page is short only at the end
 */

static char  ngx_http_mdm_watch_pairs_page_script[] =
    NGX_HTTP_MDM_WATCH_PAIRS_LUA_ADD
    "local n = tonumber(ARGV[2]) "
    "local ids, from = {}, ARGV[1] "
    "repeat "
        "local want = n + 1 - #ids "
        "local got = redis.call('ZRANGEBYLEX', KEYS[1], from, '+', "
            "'LIMIT', 0, want) "
        "for _, w in ipairs(got) do "
            "if #w <= " NGX_HTTP_MDM_WATCH_PAIRS_CURSOR_MAX_LUA " "
                "and redis.call('TYPE', ARGV[3] .. w).ok == 'hash' "
            "then "
                "ids[#ids + 1] = w "
            "end "
        "end "
        "if #got > 0 then from = '(' .. got[#got] end "
    "until #got < want or #ids > n "
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
    "if #out == 1 and (mode == 'phone' or mode == 'any') "
        "and redis.call('TYPE', ARGV[4] .. id).ok == 'set' "
    "then "
        "local ws = redis.call('SMEMBERS', ARGV[4] .. id) "
        "table.sort(ws) "
        "for i = 1, math.min(#ws, tonumber(ARGV[6])) do "
            "add(out, ws[i]) "
        "end "
    "end "
    "if #out == 1 and (mode == 'serial' or mode == 'any') "
        "and redis.call('TYPE', ARGV[5] .. id).ok == 'string' "
    "then "
        "local w = redis.call('GET', ARGV[5] .. id) "
        "if w then add(out, w) end "
    "end "
    "return out";


static char  *ngx_http_mdm_watch_pairs_modes[] = {
    "", "watch", "phone", "serial", "any"
};


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

    if (ngx_http_mdm_watch_header(r, "Vary", (u_char *) "Accept", 6)
        != NGX_OK
        || ngx_http_mdm_watch_header(r, "Cache-Control",
                                     (u_char *) "no-store", 8)
           != NGX_OK
        || ngx_http_mdm_watch_header(r, "X-Content-Type-Options",
                                     (u_char *) "nosniff", 7)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
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

    /* the format first, so that every error is in the format asked for */

    rc = ngx_http_mdm_watch_pairs_format(r, ctx);

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        rc = ngx_http_mdm_watch_not_allowed(r, "GET, HEAD");

        if (rc != NGX_HTTP_NOT_ALLOWED) {
            return rc;
        }

        ctx->error = "only GET and HEAD are allowed";
        return ngx_http_mdm_watch_pairs_error(r, ctx, rc);
    }

    if (rc == NGX_OK) {
        rc = ngx_http_mdm_watch_pairs_args(r, ctx);
    }

    if (rc == NGX_HTTP_BAD_REQUEST) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "mdm watch: pairs request refused: %s", ctx->error);
    }

    if (rc == NGX_DECLINED) {
        ctx->error = "no pair matches";
        rc = NGX_HTTP_NOT_FOUND;
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


/* JSON or HTML, by ?format= or else by Accept */

static ngx_int_t
ngx_http_mdm_watch_pairs_format(ngx_http_request_t *r,
    ngx_http_mdm_watch_pairs_ctx_t *ctx)
{
    ngx_int_t  rc;
    ngx_str_t  value;

    ctx->json = ngx_http_mdm_watch_pairs_accepts_json(r);

    rc = ngx_http_mdm_watch_pairs_arg(r, "format", &value);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

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

    return NGX_OK;
}


/* the page and the filter the request asks for */

static ngx_int_t
ngx_http_mdm_watch_pairs_args(ngx_http_request_t *r,
    ngx_http_mdm_watch_pairs_ctx_t *ctx)
{
    ngx_int_t   rc, n;
    ngx_str_t   value;

    ctx->limit = NGX_HTTP_MDM_WATCH_PAIRS_LIMIT;

    rc = ngx_http_mdm_watch_pairs_arg(r, "limit", &value);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

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
        rc = ngx_http_mdm_watch_pairs_cursor(r->pool, &value, &ctx->start);
    }

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_ABORT) {
        ctx->error = "invalid cursor";
        return NGX_HTTP_BAD_REQUEST;
    }

    rc = ngx_http_mdm_watch_pairs_filter(r, ctx);

    if (rc != NGX_OK) {
        return rc;
    }

    if (ctx->filter != NGX_HTTP_MDM_WATCH_PAIRS_ALL && ctx->start.len > 1) {
        ctx->error = "a cursor pages through all pairs, not with a filter";
        return NGX_HTTP_BAD_REQUEST;
    }

    return NGX_OK;
}


/*
 * the place after which the page starts, "(" and the watch UDID the
 * cursor names; NGX_ABORT: the cursor is not base64url as the module
 * writes it, without padding or stray bits, or names no watch UDID the
 * module lists
 */

static ngx_int_t
ngx_http_mdm_watch_pairs_cursor(ngx_pool_t *pool, ngx_str_t *value,
    ngx_str_t *start)
{
    u_char     *p;
    ngx_str_t   cursor, canonical;

    p = ngx_pnalloc(pool, 1 + ngx_base64_decoded_length(value->len)
                          + value->len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    cursor.data = p + 1;

    if (ngx_decode_base64url(&cursor, value) != NGX_OK
        || cursor.len == 0
        || cursor.len > NGX_HTTP_MDM_WATCH_PAIRS_CURSOR_MAX)
    {
        return NGX_ABORT;
    }

    canonical.data = cursor.data + cursor.len;
    ngx_encode_base64url(&canonical, &cursor);

    if (canonical.len != value->len
        || ngx_strncmp(canonical.data, value->data, value->len) != 0)
    {
        return NGX_ABORT;
    }

    *p = '(';
    start->data = p;
    start->len = cursor.len + 1;

    return NGX_OK;
}


/*
 * at most one of watch=, phone=, serial= and q=; UDIDs and serials are
 * looked up in upper case, as the module stores them; NGX_DECLINED: the
 * search box's text can be neither a UDID nor a serial, and finds nothing
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

        if (rc == NGX_ERROR) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
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

    if (ctx->id.len == 0) {
        ctx->error = "empty serial";
        return NGX_HTTP_BAD_REQUEST;
    }

    if (ctx->id.len > NGX_HTTP_MDM_WATCH_SERIAL_MAX) {

        if (filter == NGX_HTTP_MDM_WATCH_PAIRS_ANY) {
            return NGX_DECLINED;
        }

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
 * NGX_OK: the argument, decoded into memory of its own, maybe empty;
 * NGX_DECLINED: absent; NGX_ABORT: too long or not decodable;
 * NGX_ERROR: no memory
 */

static ngx_int_t
ngx_http_mdm_watch_pairs_arg(ngx_http_request_t *r, char *name,
    ngx_str_t *value)
{
    u_char     *src, *dst;
    size_t      i;
    ngx_str_t   raw;

    if (ngx_http_arg(r, (u_char *) name, ngx_strlen(name), &raw) != NGX_OK) {
        return NGX_DECLINED;
    }

    if (raw.len > NGX_HTTP_MDM_WATCH_PAIRS_ARG_MAX) {
        return NGX_ABORT;
    }

    if (raw.len == 0) {
        value->data = raw.data;
        value->len = 0;
        return NGX_OK;
    }

    value->data = ngx_pnalloc(r->pool, raw.len);
    if (value->data == NULL) {
        return NGX_ERROR;
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

    return NGX_OK;
}


/*
 * whether the Accept headers, read as one list of media ranges, prefer
 * application/json to text/html: a higher quality, or the same quality
 * named first; the most specific range that matches a type gives its
 * quality, "q=0" refuses it, and a type no range matches has quality 0
 */

static ngx_uint_t
ngx_http_mdm_watch_pairs_accepts_json(ngx_http_request_t *r)
{
    u_char                            *p, *last;
    ngx_int_t                          qj, qh;
    ngx_uint_t                         i, order;
    ngx_list_part_t                   *part;
    ngx_table_elt_t                   *h;
    ngx_http_mdm_watch_pairs_range_t   range;
    ngx_http_mdm_watch_pairs_pref_t    json, html;

    static ngx_str_t  application = ngx_string("application");
    static ngx_str_t  json_type = ngx_string("json");
    static ngx_str_t  text = ngx_string("text");
    static ngx_str_t  html_type = ngx_string("html");

    ngx_memzero(&json, sizeof(ngx_http_mdm_watch_pairs_pref_t));
    ngx_memzero(&html, sizeof(ngx_http_mdm_watch_pairs_pref_t));

    order = 0;
    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
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

        p = h[i].value.data;
        last = p + h[i].value.len;

        while (p < last) {
            p = ngx_http_mdm_watch_pairs_media_range(p, last, &range);

            if (p < last) {
                p++;
            }

            if (range.q < 0) {
                continue;
            }

            order++;

            ngx_http_mdm_watch_pairs_prefer(&json, &range, &application,
                                            &json_type, order);
            ngx_http_mdm_watch_pairs_prefer(&html, &range, &text,
                                            &html_type, order);
        }
    }

    qj = json.match ? json.q : 0;
    qh = html.match ? html.q : 0;

    return qj > 0 && (qj > qh || (qj == qh && json.order < html.order));
}


/*
 * the media range at p, up to the comma that ends it or last, which it
 * returns; range->q is its quality in thousandths, -1 if it is malformed
 */

static u_char *
ngx_http_mdm_watch_pairs_media_range(u_char *p, u_char *last,
    ngx_http_mdm_watch_pairs_range_t *range)
{
    u_char  *name, *value;

    range->q = 1000;

    p = ngx_http_mdm_watch_pairs_token(p, last, &range->type);

    if (p == last || *p != '/') {
        goto invalid;
    }

    p = ngx_http_mdm_watch_pairs_token(p + 1, last, &range->subtype);

    if (range->type.len == 0 || range->subtype.len == 0) {
        goto invalid;
    }

    /* parameters: ";" name "=" value, the quality "q" among them */

    for ( ;; ) {
        while (p < last && (*p == ' ' || *p == '\t')) {
            p++;
        }

        if (p == last || *p == ',') {
            return p;
        }

        if (*p++ != ';') {
            goto invalid;
        }

        while (p < last && (*p == ' ' || *p == '\t')) {
            p++;
        }

        name = p;

        while (p < last && *p != '=' && *p != ',' && *p != ';') {
            p++;
        }

        if (p == last || *p != '=') {
            goto invalid;
        }

        value = ++p;

        if (p < last && *p == '"') {
            for (p++; p < last && *p != '"'; p++) {
                if (*p == '\\' && p + 1 < last) {
                    p++;
                }
            }

            if (p == last) {
                goto invalid;
            }

            p++;

            continue;
        }

        while (p < last && *p != ',' && *p != ';' && *p != ' '
               && *p != '\t')
        {
            p++;
        }

        if (value - name == 2 && (*name == 'q' || *name == 'Q')) {
            range->q = ngx_http_mdm_watch_pairs_qvalue(value, p - value);

            if (range->q < 0) {
                goto invalid;
            }
        }
    }

invalid:

    range->q = -1;

    /* TODO: a comma quoted in the rest of a malformed range ends it */

    while (p < last && *p != ',') {
        p++;
    }

    return p;
}


/* a type or subtype after optional white space */

static u_char *
ngx_http_mdm_watch_pairs_token(u_char *p, u_char *last, ngx_str_t *token)
{
    while (p < last && (*p == ' ' || *p == '\t')) {
        p++;
    }

    token->data = p;

    while (p < last && *p != '/' && *p != ',' && *p != ';' && *p != ' '
           && *p != '\t')
    {
        p++;
    }

    token->len = p - token->data;

    return p;
}


/* "0", "1", or either with up to three decimals, in thousandths; -1: none */

static ngx_int_t
ngx_http_mdm_watch_pairs_qvalue(u_char *p, size_t len)
{
    size_t     i;
    ngx_int_t  q, unit;

    if (len == 0 || len > sizeof("0.000") - 1
        || (p[0] != '0' && p[0] != '1')
        || (len > 1 && p[1] != '.'))
    {
        return -1;
    }

    q = (p[0] - '0') * 1000;
    unit = 100;

    for (i = 2; i < len; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return -1;
        }

        q += (p[i] - '0') * unit;
        unit /= 10;
    }

    return (q > 1000) ? -1 : q;
}


/*
 * takes the quality of a range for type/subtype if the range is more
 * specific than the one that gave it so far: any type is the least
 * specific, then any subtype of the type, then the type itself
 */

static void
ngx_http_mdm_watch_pairs_prefer(ngx_http_mdm_watch_pairs_pref_t *pref,
    ngx_http_mdm_watch_pairs_range_t *range, ngx_str_t *type,
    ngx_str_t *subtype, ngx_uint_t order)
{
    ngx_uint_t  match;

    if (range->type.len == 1 && range->type.data[0] == '*') {
        match = (range->subtype.len == 1 && range->subtype.data[0] == '*');

    } else if (range->type.len != type->len
               || ngx_strncasecmp(range->type.data, type->data, type->len)
                  != 0)
    {
        match = 0;

    } else if (range->subtype.len == 1 && range->subtype.data[0] == '*') {
        match = 2;

    } else if (range->subtype.len == subtype->len
               && ngx_strncasecmp(range->subtype.data, subtype->data,
                                  subtype->len)
                  == 0)
    {
        match = 3;

    } else {
        match = 0;
    }

    if (match > pref->match) {
        pref->match = match;
        pref->q = range->q;
        pref->order = order;
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


/*
 * an error: {"error":"..."} in JSON; in HTML, a search that finds
 * nothing and a request refused show the page with the search box and
 * say so, other errors are nginx's own page
 */

static ngx_int_t
ngx_http_mdm_watch_pairs_error(ngx_http_request_t *r,
    ngx_http_mdm_watch_pairs_ctx_t *ctx, ngx_int_t status)
{
    ngx_http_mdm_watch_pairs_out_t  out;

    if (status < NGX_HTTP_SPECIAL_RESPONSE) {
        return status;
    }

    if (status == NGX_HTTP_SERVICE_UNAVAILABLE) {
        ngx_http_mdm_watch_count(unavailable);

    } else if (status == NGX_HTTP_INTERNAL_SERVER_ERROR) {
        ngx_http_mdm_watch_count(internal_errors);
    }

    if (!ctx->json) {

        if (status == NGX_HTTP_BAD_REQUEST) {
            ctx->refused = 1;
            return ngx_http_mdm_watch_pairs_respond(r, ctx, status);
        }

        if (status == NGX_HTTP_NOT_FOUND) {
            return ngx_http_mdm_watch_pairs_respond(r, ctx, status);
        }

        return status;
    }

    ngx_memzero(&out, sizeof(ngx_http_mdm_watch_pairs_out_t));

    out.pool = r->pool;
    out.last = &out.first;

    if (ngx_http_mdm_watch_pairs_json_error(&out, ctx->error) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_mdm_watch_pairs_send(r, ctx, status, &out);
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

        if (ngx_http_mdm_watch_header(r, "Content-Security-Policy",
                                      ngx_http_mdm_watch_pairs_csp.data,
                                      ngx_http_mdm_watch_pairs_csp.len)
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
