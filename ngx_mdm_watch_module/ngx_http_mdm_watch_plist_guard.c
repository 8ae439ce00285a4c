
/*
 * Copyright (C) The ngx_mdm_watch_module authors
 */


#include "ngx_http_mdm_watch.h"

#include <plist/plist.h>


/*
 * libplist 2.2 recurses without a bound, follows binary plist offsets
 * and references without checking all of them, and trusts the entities
 * of XML; received plists are therefore checked here first, with bounds
 * far above anything a device sends.
 */

#define NGX_HTTP_MDM_WATCH_PLIST_MAX        (1024 * 1024)
#define NGX_HTTP_MDM_WATCH_PLIST_DEPTH      16
#define NGX_HTTP_MDM_WATCH_PLIST_NODES      4096


typedef struct {
    u_char                          *start;
    u_char                          *table;
    uint64_t                         objects;
    ngx_uint_t                       offset_size;
    ngx_uint_t                       ref_size;
    ngx_uint_t                       nodes;
    const char                      *error;
} ngx_http_mdm_watch_bplist_t;


static ngx_int_t ngx_http_mdm_watch_bplist_check(u_char *p, size_t len,
    const char **error);
static ngx_int_t ngx_http_mdm_watch_bplist_object(
    ngx_http_mdm_watch_bplist_t *bp, uint64_t ref, ngx_uint_t depth);
static ngx_int_t ngx_http_mdm_watch_bplist_length(
    ngx_http_mdm_watch_bplist_t *bp, u_char **pp, ngx_uint_t info,
    uint64_t *length);
static uint64_t ngx_http_mdm_watch_bplist_uint(u_char *p, ngx_uint_t size);
static ngx_int_t ngx_http_mdm_watch_xml_check(u_char *p, size_t len,
    const char **error);
static u_char *ngx_http_mdm_watch_xml_markup(u_char *p, u_char *last,
    const char **error);
static u_char *ngx_http_mdm_watch_xml_skip(u_char *p, u_char *last,
    char *end, size_t len);
static u_char *ngx_http_mdm_watch_xml_tag_end(u_char *p, u_char *last);
static ngx_int_t ngx_http_mdm_watch_xml_entity(u_char **pp, u_char *last);
static ngx_uint_t ngx_http_mdm_watch_xml_tag(u_char *p, u_char *last,
    char *name, size_t len);


ngx_int_t
ngx_http_mdm_watch_plist_parse(ngx_str_t *data, ngx_uint_t binary,
    void **plist, const char **error)
{
    plist_t    pl;
    ngx_int_t  rc;

    *plist = NULL;
    *error = NULL;

    if (data->len == 0) {
        *error = "plist is empty";
        return NGX_DECLINED;
    }

    if (data->len > NGX_HTTP_MDM_WATCH_PLIST_MAX) {
        *error = "plist is too large";
        return NGX_DECLINED;
    }

    if (data->len >= 6 && ngx_strncmp(data->data, "bplist", 6) == 0) {

        if (!binary) {
            *error = "binary plists are not accepted here";
            return NGX_DECLINED;
        }

        rc = ngx_http_mdm_watch_bplist_check(data->data, data->len, error);

    } else {
        rc = ngx_http_mdm_watch_xml_check(data->data, data->len, error);
    }

    if (rc != NGX_OK) {
        return NGX_DECLINED;
    }

    pl = NULL;

    plist_from_memory((const char *) data->data, (uint32_t) data->len, &pl);

    if (pl == NULL) {
        *error = "plist is malformed";
        return NGX_DECLINED;
    }

    *plist = pl;

    return NGX_OK;
}


/*
 * A binary plist: "bplist00", the objects, a table of their offsets,
 * and a 32-byte trailer giving the sizes of offsets and references,
 * the number of objects, the top object and where the table starts.
 * Every offset, length and reference is checked, and the objects are
 * walked from the top with bounds on depth and on visited nodes, so
 * that neither a cycle nor a shared object can make libplist recurse
 * or expand without end.
 */

static ngx_int_t
ngx_http_mdm_watch_bplist_check(u_char *p, size_t len, const char **error)
{
    u_char                       *trailer;
    uint64_t                      top, table, i, offset;
    ngx_http_mdm_watch_bplist_t   bp;

    if (len < 8 + 1 + 1 + 32 || ngx_strncmp(p, "bplist00", 8) != 0) {
        *error = "binary plist header or size";
        return NGX_DECLINED;
    }

    trailer = p + len - 32;

    ngx_memzero(&bp, sizeof(ngx_http_mdm_watch_bplist_t));

    bp.start = p;
    bp.offset_size = trailer[6];
    bp.ref_size = trailer[7];
    bp.objects = ngx_http_mdm_watch_bplist_uint(trailer + 8, 8);
    top = ngx_http_mdm_watch_bplist_uint(trailer + 16, 8);
    table = ngx_http_mdm_watch_bplist_uint(trailer + 24, 8);

    if (bp.offset_size < 1 || bp.offset_size > 8
        || bp.ref_size < 1 || bp.ref_size > 8)
    {
        *error = "binary plist offset or reference size";
        return NGX_DECLINED;
    }

    if (bp.objects == 0 || bp.objects > NGX_HTTP_MDM_WATCH_PLIST_NODES
        || top >= bp.objects)
    {
        *error = "binary plist object count or top object";
        return NGX_DECLINED;
    }

    if (table < 8 || table > (uint64_t) (trailer - p)
        || bp.objects * bp.offset_size > (uint64_t) (trailer - p) - table)
    {
        *error = "binary plist offset table";
        return NGX_DECLINED;
    }

    bp.table = p + table;

    for (i = 0; i < bp.objects; i++) {
        offset = ngx_http_mdm_watch_bplist_uint(bp.table + i * bp.offset_size,
                                                bp.offset_size);

        if (offset < 8 || offset >= table) {
            *error = "binary plist object offset";
            return NGX_DECLINED;
        }
    }

    if (ngx_http_mdm_watch_bplist_object(&bp, top, 0) != NGX_OK) {
        *error = bp.error;
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_mdm_watch_bplist_object(ngx_http_mdm_watch_bplist_t *bp,
    uint64_t ref, ngx_uint_t depth)
{
    u_char      *p, *last, *refs;
    uint64_t     offset, length, i, n, child;
    ngx_uint_t   type, info;

    if (ref >= bp->objects) {
        bp->error = "binary plist reference";
        return NGX_DECLINED;
    }

    if (++bp->nodes > NGX_HTTP_MDM_WATCH_PLIST_NODES) {
        bp->error = "binary plist has too many nodes";
        return NGX_DECLINED;
    }

    offset = ngx_http_mdm_watch_bplist_uint(bp->table
                                            + ref * bp->offset_size,
                                            bp->offset_size);

    p = bp->start + offset;
    last = bp->table;

    type = *p >> 4;
    info = *p & 0x0f;
    p++;

    switch (type) {

    case 0x0:
        /* null, false, true, fill */
        if (info != 0x0 && info != 0x8 && info != 0x9 && info != 0xf) {
            goto invalid;
        }

        return NGX_OK;

    case 0x1:
    case 0x2:
        /* integers of 1 to 16 bytes, reals of 4 or 8 */
        if (info > 4 || (type == 0x2 && info != 2 && info != 3)) {
            goto invalid;
        }

        length = (uint64_t) 1 << info;
        break;

    case 0x3:
        /* a date */
        if (info != 3) {
            goto invalid;
        }

        length = 8;
        break;

    case 0x4:
    case 0x5:
    case 0x6:
        /* data, ASCII and UTF-16 strings */
        if (ngx_http_mdm_watch_bplist_length(bp, &p, info, &length)
            != NGX_OK)
        {
            return NGX_DECLINED;
        }

        if (type == 0x6) {
            if (length > (uint64_t) (last - p) / 2) {
                goto invalid;
            }

            length *= 2;
        }

        break;

    case 0x8:
        /* a UID */
        length = info + 1;
        break;

    case 0xa:
    case 0xd:
        if (depth >= NGX_HTTP_MDM_WATCH_PLIST_DEPTH) {
            bp->error = "binary plist is nested too deeply";
            return NGX_DECLINED;
        }

        if (ngx_http_mdm_watch_bplist_length(bp, &p, info, &length)
            != NGX_OK)
        {
            return NGX_DECLINED;
        }

        n = (type == 0xd) ? length * 2 : length;

        if (length > NGX_HTTP_MDM_WATCH_PLIST_NODES
            || n * bp->ref_size > (uint64_t) (last - p))
        {
            goto invalid;
        }

        refs = p;

        for (i = 0; i < n; i++) {
            child = ngx_http_mdm_watch_bplist_uint(refs + i * bp->ref_size,
                                                   bp->ref_size);

            /* dictionary keys must be strings */

            if (type == 0xd && i < length) {
                if (child >= bp->objects) {
                    bp->error = "binary plist reference";
                    return NGX_DECLINED;
                }

                offset = ngx_http_mdm_watch_bplist_uint(bp->table
                                                 + child * bp->offset_size,
                                                 bp->offset_size);

                if ((bp->start[offset] >> 4) != 0x5
                    && (bp->start[offset] >> 4) != 0x6)
                {
                    bp->error = "binary plist dictionary key type";
                    return NGX_DECLINED;
                }
            }

            if (ngx_http_mdm_watch_bplist_object(bp, child, depth + 1)
                != NGX_OK)
            {
                return NGX_DECLINED;
            }
        }

        return NGX_OK;

    default:
        goto invalid;
    }

    if (length > (uint64_t) (last - p)) {
        goto invalid;
    }

    return NGX_OK;

invalid:

    bp->error = "binary plist object";

    return NGX_DECLINED;
}


/* a length in the marker, or in an integer object that follows it */

static ngx_int_t
ngx_http_mdm_watch_bplist_length(ngx_http_mdm_watch_bplist_t *bp,
    u_char **pp, ngx_uint_t info, uint64_t *length)
{
    u_char      *p;
    ngx_uint_t   size;

    p = *pp;

    if (info != 0x0f) {
        *length = info;
        return NGX_OK;
    }

    if (p >= bp->table || (*p >> 4) != 0x1 || (*p & 0x0f) > 3) {
        bp->error = "binary plist length";
        return NGX_DECLINED;
    }

    size = (ngx_uint_t) 1 << (*p & 0x0f);
    p++;

    if ((size_t) (bp->table - p) < size) {
        bp->error = "binary plist length";
        return NGX_DECLINED;
    }

    *length = ngx_http_mdm_watch_bplist_uint(p, size);
    *pp = p + size;

    return NGX_OK;
}


static uint64_t
ngx_http_mdm_watch_bplist_uint(u_char *p, ngx_uint_t size)
{
    uint64_t  n;

    n = 0;

    while (size--) {
        n = (n << 8) | *p++;
    }

    return n;
}


/*
 * An XML plist is scanned once: no NUL bytes, no document type with an
 * internal subset (where entities are declared), only the predefined
 * and numeric character references, at most so many elements, and
 * dictionaries and arrays nested at most so deep.  Comments, CDATA
 * sections and processing instructions are skipped whole, so that what
 * they hold counts for nothing; they may hold no "<", since libplist
 * does not always end them where this scan does (it skips quoted text
 * in them, and reads them inside attribute values as values), and an
 * element this scan skipped would reach libplist unchecked.
 */

static ngx_int_t
ngx_http_mdm_watch_xml_check(u_char *p, size_t len, const char **error)
{
    u_char      *last;
    ngx_uint_t   depth, elements;

    last = p + len;
    depth = 0;
    elements = 0;

    if (ngx_strlchr(p, last, '\0') != NULL) {
        *error = "XML plist has a NUL byte";
        return NGX_DECLINED;
    }

    while (p < last) {

        if (*p == '&') {
            if (ngx_http_mdm_watch_xml_entity(&p, last) != NGX_OK) {
                *error = "XML plist has an unknown or malformed entity";
                return NGX_DECLINED;
            }

            continue;
        }

        if (*p != '<') {
            p++;
            continue;
        }

        p++;

        if (p < last && (*p == '!' || *p == '?')) {
            p = ngx_http_mdm_watch_xml_markup(p, last, error);

            if (p == NULL) {
                return NGX_DECLINED;
            }

            continue;
        }

        if (p < last && *p == '/') {
            if (ngx_http_mdm_watch_xml_tag(p + 1, last, "dict", 4)
                || ngx_http_mdm_watch_xml_tag(p + 1, last, "array", 5))
            {
                if (depth > 0) {
                    depth--;
                }
            }

        } else {
            if (++elements > NGX_HTTP_MDM_WATCH_PLIST_NODES * 2) {
                *error = "XML plist has too many elements";
                return NGX_DECLINED;
            }

            if (ngx_http_mdm_watch_xml_tag(p, last, "dict", 4)
                || ngx_http_mdm_watch_xml_tag(p, last, "array", 5))
            {
                if (++depth > NGX_HTTP_MDM_WATCH_PLIST_DEPTH) {
                    *error = "XML plist is nested too deeply";
                    return NGX_DECLINED;
                }

            } else if (depth == 0
                       && (ngx_http_mdm_watch_xml_tag(p, last, "dict/", 5)
                           || ngx_http_mdm_watch_xml_tag(p, last, "array/", 6)))
            {
                /*
                 * libplist makes an empty container at the top the
                 * parent of the elements after it: a level that no
                 * closing tag ends
                 */

                depth = 1;
            }
        }

        p = ngx_http_mdm_watch_xml_tag_end(p, last);

        if (p == NULL) {
            *error = "XML plist has a malformed tag";
            return NGX_DECLINED;
        }
    }

    return NGX_OK;
}


/* p is past "<" and at "!" or "?": returns where the markup ends */

static u_char *
ngx_http_mdm_watch_xml_markup(u_char *p, u_char *last, const char **error)
{
    u_char  quote;

    if (*p == '?') {
        p = ngx_http_mdm_watch_xml_skip(p, last, "?>", 2);

    } else if (last - p >= 3 && ngx_strncmp(p, "!--", 3) == 0) {
        p = ngx_http_mdm_watch_xml_skip(p + 3, last, "-->", 3);

    } else if (last - p >= 8 && ngx_strncmp(p, "![CDATA[", 8) == 0) {
        p = ngx_http_mdm_watch_xml_skip(p + 8, last, "]]>", 3);

    } else if (last - p >= 8 && ngx_strncmp(p, "!DOCTYPE", 8) == 0) {

        for (quote = '\0'; p < last && *p != '<'; p++) {

            if (quote) {
                if (*p == quote) {
                    quote = '\0';
                }

                continue;
            }

            if (*p == '"' || *p == '\'') {
                quote = *p;

            } else if (*p == '[') {
                *error = "XML plist declares a document type subset";
                return NULL;

            } else if (*p == '>') {
                return p + 1;
            }
        }

        p = NULL;

    } else {
        *error = "XML plist has an unknown markup declaration";
        return NULL;
    }

    if (p == NULL) {
        *error = "XML plist has unterminated markup or markup inside it";
    }

    return p;
}


static u_char *
ngx_http_mdm_watch_xml_skip(u_char *p, u_char *last, char *end, size_t len)
{
    for ( /* void */ ; (size_t) (last - p) >= len && *p != '<'; p++) {
        if (ngx_strncmp(p, end, len) == 0) {
            return p + len;
        }
    }

    return NULL;
}


/*
 * libplist ends a tag at the first ">" out of double quotes and takes
 * what is before it for attributes: no "<" may be there, quoted or not,
 * or closing tags in an attribute value would undo the depth counted
 */

static u_char *
ngx_http_mdm_watch_xml_tag_end(u_char *p, u_char *last)
{
    ngx_uint_t  quoted;

    for (quoted = 0; p < last; p++) {

        if (*p == '<') {
            return NULL;
        }

        if (*p == '"') {
            quoted = !quoted;

        } else if (*p == '>' && !quoted) {
            return p + 1;
        }
    }

    return NULL;
}


static ngx_int_t
ngx_http_mdm_watch_xml_entity(u_char **pp, u_char *last)
{
    u_char      *p;
    uint32_t     c;
    ngx_uint_t   i, digits, hex;

    static struct {
        char    *name;
        size_t   len;
    } entities[] = {
        { "&amp;", 5 }, { "&lt;", 4 }, { "&gt;", 4 },
        { "&quot;", 6 }, { "&apos;", 6 }
    };

    p = *pp;

    for (i = 0; i < sizeof(entities) / sizeof(entities[0]); i++) {
        if ((size_t) (last - p) >= entities[i].len
            && ngx_strncmp(p, entities[i].name, entities[i].len) == 0)
        {
            *pp = p + entities[i].len;
            return NGX_OK;
        }
    }

    p++;

    if (p == last || *p != '#') {
        return NGX_DECLINED;
    }

    p++;

    hex = (p < last && *p == 'x');

    if (hex) {
        p++;
    }

    c = 0;

    for (digits = 0; p < last && *p != ';'; digits++, p++) {

        if (digits == 8) {
            return NGX_DECLINED;
        }

        if (*p >= '0' && *p <= '9') {
            c = c * (hex ? 16 : 10) + (*p - '0');

        } else if (hex && (*p | 0x20) >= 'a' && (*p | 0x20) <= 'f') {
            c = c * 16 + ((*p | 0x20) - 'a' + 10);

        } else {
            return NGX_DECLINED;
        }
    }

    if (p == last || digits == 0 || c == 0 || c > 0x10ffff
        || (c >= 0xd800 && c <= 0xdfff))
    {
        return NGX_DECLINED;
    }

    *pp = p + 1;

    return NGX_OK;
}


static ngx_uint_t
ngx_http_mdm_watch_xml_tag(u_char *p, u_char *last, char *name, size_t len)
{
    if ((size_t) (last - p) <= len || ngx_strncmp(p, name, len) != 0) {
        return 0;
    }

    p += len;

    /* "<dict/>" is empty: only the name "dict/" matches it */

    if (*p == '/') {
        return 0;
    }

    return *p == '>' || *p == ' ' || *p == '\t' || *p == '\r' || *p == '\n';
}
