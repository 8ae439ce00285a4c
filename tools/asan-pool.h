
/*
 * Copyright (C) The ngx_mdm_watch_module authors
 */


/*
 * Included first into every source of the module built for make
 * test-asan (-include).
 *
 * nginx carves small allocations out of the blocks of its pools, so an
 * overflow from one of the module's pool allocations into the next is
 * invisible to AddressSanitizer.  Here each ngx_palloc(), ngx_pnalloc()
 * and ngx_pcalloc() of the module's code is a malloc() of its own, with
 * ASan's redzones around it, freed by a cleanup of the same pool: it
 * lives as long as it did in the pool.  What nginx allocates itself,
 * and its helpers such as ngx_array_push(), stay in the pools.
 *
 * nginx's ./configure compiles its probes with the same flags, without
 * nginx's headers: the header is empty there.
 */


#ifndef _NGX_HTTP_MDM_WATCH_ASAN_POOL_H_INCLUDED_
#define _NGX_HTTP_MDM_WATCH_ASAN_POOL_H_INCLUDED_

#if (__has_include(<ngx_auto_headers.h>))

#include <ngx_config.h>
#include <ngx_core.h>


static ngx_inline void *
ngx_http_mdm_watch_asan_palloc(ngx_pool_t *pool, size_t size, int zero)
{
    void                *p;
    ngx_pool_cleanup_t  *cln;

    cln = ngx_pool_cleanup_add(pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    /* a zero size still gives a pointer of its own, as the pool does */

    p = zero ? calloc(1, size ? size : 1) : malloc(size ? size : 1);
    if (p == NULL) {
        return NULL;
    }

    cln->handler = free;
    cln->data = p;

    return p;
}


#define ngx_palloc(pool, size)   ngx_http_mdm_watch_asan_palloc(pool, size, 0)
#define ngx_pnalloc(pool, size)  ngx_http_mdm_watch_asan_palloc(pool, size, 0)
#define ngx_pcalloc(pool, size)  ngx_http_mdm_watch_asan_palloc(pool, size, 1)

#endif

#endif /* _NGX_HTTP_MDM_WATCH_ASAN_POOL_H_INCLUDED_ */
