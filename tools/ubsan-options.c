
/*
 * Copyright (C) The ngx_mdm_watch_module authors
 */


/*
 * Preloaded by tools/nginx-asan, before the UBSan runtime.
 *
 * UBSan reads UBSAN_OPTIONS from /proc/self/environ when it reports its
 * first error, not when it is loaded, and by then nginx has written its
 * process title over that memory: the options would be lost, and a
 * worker with undefined behaviour would exit with code 1, which its
 * master logs as a mere notice.  This keeps the options as they were at
 * startup and hands them to UBSan through its hook.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static char  ubsan_options[4096];


__attribute__((constructor)) static void
ubsan_options_save(void)
{
    const char  *options;

    options = getenv("UBSAN_OPTIONS");

    if (options == NULL) {
        return;
    }

    if (strlen(options) >= sizeof(ubsan_options)) {
        fprintf(stderr, "ubsan-options: UBSAN_OPTIONS is too long\n");
        abort();
    }

    strcpy(ubsan_options, options);
}


const char *
__ubsan_default_options(void)
{
    return ubsan_options;
}
