
/*
 * Copyright (C) The ngx_mdm_watch_module authors
 */


/*
 * Bytes as a plist, through the module's check, which hands to
 * libplist only what it accepts (binary plists allowed, as for machine
 * info).  What the check accepts must come out of libplist within the
 * check's bounds: dictionaries and arrays nested at most 16 deep, at
 * most 8192 nodes (4096 objects of a binary plist, 8192 elements of an
 * XML one).  With FUZZ_PLIST_LIBPLIST set, the same bytes then go
 * straight to libplist's plist_from_memory(), with no check in front:
 * a crash there shows what the check must keep away from libplist.
 * libplist 2.2 has many such crashes, so fuzzing for the module's own
 * bugs leaves that call out.
 */


#include "ngx_shim.h"
#include "ngx_http_mdm_watch.h"

#include <plist/plist.h>


#define NGX_FUZZ_PLIST_DEPTH  16
#define NGX_FUZZ_PLIST_NODES  8192


static ngx_uint_t ngx_fuzz_plist_bounded(plist_t node, ngx_uint_t depth,
    ngx_uint_t *nodes);


static ngx_uint_t  ngx_fuzz_libplist;


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    ngx_fuzz_init();

    ngx_fuzz_libplist = (getenv("FUZZ_PLIST_LIBPLIST") != NULL);

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    plist_t      plist;
    ngx_int_t    rc;
    ngx_str_t    in;
    ngx_uint_t   nodes;
    const char  *error;

    in.data = (u_char *) data;
    in.len = size;

    rc = ngx_http_mdm_watch_plist_parse(&in, 1, (void **) &plist, &error);

    if (rc == NGX_OK) {
        ngx_fuzz_check(plist != NULL, "an accepted plist is parsed");

        nodes = 0;
        ngx_fuzz_check(ngx_fuzz_plist_bounded(plist, 0, &nodes),
                       "an accepted plist is within the check's bounds");

        plist_free(plist);

    } else {
        ngx_fuzz_check(rc == NGX_DECLINED && error != NULL,
                       "a refused plist has a reason");
    }

    if (!ngx_fuzz_libplist || size > NGX_MAX_UINT32_VALUE) {
        return 0;
    }

    plist = NULL;

    plist_from_memory((const char *) data, (uint32_t) size, &plist);

    if (plist != NULL) {
        plist_free(plist);
    }

    return 0;
}


/* the walk stops at the first container past the bound */

static ngx_uint_t
ngx_fuzz_plist_bounded(plist_t node, ngx_uint_t depth, ngx_uint_t *nodes)
{
    plist_t           item;
    uint32_t          i, n;
    plist_type        type;
    plist_dict_iter   it;

    if (++*nodes > NGX_FUZZ_PLIST_NODES) {
        return 0;
    }

    type = plist_get_node_type(node);

    if (type != PLIST_ARRAY && type != PLIST_DICT) {
        return 1;
    }

    if (depth >= NGX_FUZZ_PLIST_DEPTH) {
        return 0;
    }

    if (type == PLIST_ARRAY) {
        n = plist_array_get_size(node);

        for (i = 0; i < n; i++) {
            item = plist_array_get_item(node, i);

            if (!ngx_fuzz_plist_bounded(item, depth + 1, nodes)) {
                return 0;
            }
        }

        return 1;
    }

    it = NULL;
    plist_dict_new_iter(node, &it);

    for ( ;; ) {
        item = NULL;

        /*
         * no key asked for: plist_get_key_val() asserts that a key has
         * no NUL, which a UTF-16 key of a binary plist may have
         */

        plist_dict_next_item(node, it, NULL, &item);

        if (item == NULL) {
            break;
        }

        /* the key counts as a node, as it is an element in XML */

        if (++*nodes > NGX_FUZZ_PLIST_NODES
            || !ngx_fuzz_plist_bounded(item, depth + 1, nodes))
        {
            free(it);
            return 0;
        }
    }

    free(it);

    return 1;
}
