
/*
 * Copyright (C) The ngx_mdm_watch_module authors
 */


#ifndef _NGX_SHIM_H_INCLUDED_
#define _NGX_SHIM_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/*
 * the HMAC secret of every target and of fuzz/make-corpus: a test-only
 * value, never to be used in an nginx configuration
 */

#define NGX_FUZZ_SECRET  "fuzz-only-secret-do-not-deploy-0123456789"


/* logs at every level, debug included; printed when FUZZ_VERBOSE is set */

extern ngx_log_t  ngx_fuzz_log;


void ngx_fuzz_init(void);
ngx_pool_t *ngx_fuzz_pool(void);
void ngx_fuzz_check(int cond, const char *what);
ngx_int_t ngx_fuzz_str_eq(ngx_str_t *a, ngx_str_t *b);


#endif /* _NGX_SHIM_H_INCLUDED_ */
