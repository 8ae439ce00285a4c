
/*
 * Copyright (C) The ngx_mdm_watch_module authors
 */


#include "ngx_http_mdm_watch.h"

#include <openssl/evp.h>


/*
 * The pairs view's answers: JSON, and a self-contained HTML page whose
 * only style and script are its own, written into a chain of pool
 * buffers with every value escaped for where it goes.
 */


#define NGX_HTTP_MDM_WATCH_PAIRS_BUF_SIZE    16384
#define NGX_HTTP_MDM_WATCH_CSP_MAX           512


/* a field of a pair and the text that goes before it */

typedef struct {
    ngx_str_t                           name;
    ngx_uint_t                          field;
} ngx_http_mdm_watch_pairs_field_t;


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


/* the search is case-insensitive for ASCII letters only, as the server's */

static char  ngx_http_mdm_watch_pairs_script[] =
    "\n"
    "var q = document.getElementById('q');\n"
    "function lower(s) {\n"
    "    return s.replace(/[A-Z]/g, function (c) {\n"
    "        return String.fromCharCode(c.charCodeAt(0) + 32);\n"
    "    });\n"
    "}\n"
    "q.addEventListener('input', function () {\n"
    "    var s = lower(q.value.trim());\n"
    "    document.querySelectorAll('section').forEach(function (g) {\n"
    "        var shown = 0;\n"
    "        g.querySelectorAll('tbody tr').forEach(function (tr) {\n"
    "            var key = lower(tr.getAttribute('data-search'));\n"
    "            tr.hidden = key.indexOf(s) < 0;\n"
    "            shown += tr.hidden ? 0 : 1;\n"
    "        });\n"
    "        g.hidden = shown === 0;\n"
    "    });\n"
    "});\n";


ngx_str_t  ngx_http_mdm_watch_pairs_csp;

static u_char  ngx_http_mdm_watch_pairs_csp_buf[NGX_HTTP_MDM_WATCH_CSP_MAX];


ngx_int_t
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

ngx_int_t
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
    ngx_str_t  error;

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

    if (ctx->refused) {
        error.data = (u_char *) ctx->error;
        error.len = ngx_strlen(ctx->error);

        if (ngx_http_mdm_watch_pairs_literal(out,
                "<p role=\"alert\">Not looked up: ")
            != NGX_OK
            || ngx_http_mdm_watch_pairs_append_escaped(out, &error, 1)
               != NGX_OK
            || ngx_http_mdm_watch_pairs_literal(out, ".</p>\n") != NGX_OK)
        {
            return NGX_ERROR;
        }

        return NGX_OK;
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
            || ngx_http_mdm_watch_pairs_literal(out,
                                                "&amp;format=html&amp;limit=")
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


/* {"error":"..."}: the reasons are the module's own, with nothing to escape */

ngx_int_t
ngx_http_mdm_watch_pairs_json_error(ngx_http_mdm_watch_pairs_out_t *out,
    const char *error)
{
    if (ngx_http_mdm_watch_pairs_literal(out, "{\"error\":\"") != NGX_OK
        || ngx_http_mdm_watch_pairs_append(out, (u_char *) error,
                                           ngx_strlen(error))
           != NGX_OK
        || ngx_http_mdm_watch_pairs_literal(out, "\"}") != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * the page allows nothing but its own style and script, named by their
 * SHA-256, and submitting its form to itself
 */

ngx_int_t
ngx_http_mdm_watch_pairs_csp_init(ngx_conf_t *cf)
{
    u_char  *p;

    p = ngx_http_mdm_watch_pairs_csp_buf;

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

    ngx_http_mdm_watch_pairs_csp.data = ngx_http_mdm_watch_pairs_csp_buf;
    ngx_http_mdm_watch_pairs_csp.len = p - ngx_http_mdm_watch_pairs_csp_buf;

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

