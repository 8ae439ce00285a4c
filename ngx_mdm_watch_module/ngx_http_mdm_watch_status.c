
/*
 * Copyright (C) The ngx_mdm_watch_module authors
 */


#include "ngx_http_mdm_watch.h"


/*
 * The counters live in one shared memory zone that the module adds
 * itself, under a fixed name and size: a reload hands the zone of the
 * old cycle to the new one, and the counters go on; a restart or a
 * binary upgrade starts from zero.  Workers count with atomic additions
 * only, and the status page reads the counters without a lock.
 */


#define NGX_HTTP_MDM_WATCH_ZONE_SIZE  (64 * 1024)


/* a metric family: its samples, one per label value, or one without */

typedef struct {
    ngx_str_t                   name;
    ngx_str_t                   help;
    char                       *label;
    ngx_str_t                  *values;
    ngx_uint_t                  n;
    size_t                      offset;
} ngx_http_mdm_watch_family_t;


static ngx_int_t ngx_http_mdm_watch_counters_init_zone(
    ngx_shm_zone_t *shm_zone, void *data);
static void ngx_http_mdm_watch_worker_set(ngx_atomic_uint_t value);
static ngx_int_t ngx_http_mdm_watch_status_handler(ngx_http_request_t *r);
static u_char *ngx_http_mdm_watch_status_family(u_char *p,
    ngx_http_mdm_watch_family_t *f, char *type);
static u_char *ngx_http_mdm_watch_status_counters(u_char *p,
    ngx_http_mdm_watch_counters_t *c);
static u_char *ngx_http_mdm_watch_status_latency(u_char *p,
    ngx_http_mdm_watch_counters_t *c);
static u_char *ngx_http_mdm_watch_status_workers(u_char *p,
    ngx_http_mdm_watch_counters_t *c);


ngx_http_mdm_watch_counters_t  *ngx_http_mdm_watch_counters;


ngx_str_t  ngx_http_mdm_watch_reasons[] = {
    ngx_null_string,
    ngx_string("method"),
    ngx_string("too_large"),
    ngx_string("bad_cms"),
    ngx_string("untrusted_signer"),
    ngx_string("bad_plist"),
    ngx_string("bad_udid"),
    ngx_string("bad_token"),
    ngx_string("replayed"),
    ngx_string("udid_mismatch"),
    ngx_string("bad_parameters"),
    ngx_string("bad_security_token"),
    ngx_string("bad_signature"),
    ngx_string("unsigned"),
    ngx_string("wrong_identity"),
    ngx_string("unknown_phone"),
    ngx_string("unknown_security_token")
};


static ngx_str_t  ngx_http_mdm_watch_locations[] = {
    ngx_string("enroll"),
    ngx_string("checkin")
};


static ngx_str_t  ngx_http_mdm_watch_redis_error_kinds[] = {
    ngx_string("error_reply"),
    ngx_string("connection")
};


/* upper bounds of the latency buckets, in microseconds */

static ngx_uint_t  ngx_http_mdm_watch_latency_bounds[] = {
    250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000,
    500000, 1000000
};


static ngx_str_t  ngx_http_mdm_watch_zone_name =
    ngx_string("mdm_watch_counters");

static ngx_str_t  ngx_http_mdm_watch_status_type =
    ngx_string("text/plain; version=0.0.4; charset=utf-8");


#define ngx_http_mdm_watch_counter(name, help, counter)                       \
    { ngx_string(name), ngx_string(help), NULL, NULL, 1,                      \
      offsetof(ngx_http_mdm_watch_counters_t, counter) }


static ngx_http_mdm_watch_family_t  ngx_http_mdm_watch_counter_families[] = {

    ngx_http_mdm_watch_counter("mdm_watch_challenges_total",
        "Challenges sent to watches, each with a new security token.",
        challenges),

    ngx_http_mdm_watch_counter("mdm_watch_pairing_tokens_total",
        "Pairing tokens issued in answer to a GetToken.",
        tokens),

    ngx_http_mdm_watch_counter("mdm_watch_paired_total",
        "Enrollments with a valid pairing token, whose pair was recorded.",
        paired),

    { ngx_string("mdm_watch_passed_total"),
      ngx_string("Requests handed to the content handler, by location."),
      "location", ngx_http_mdm_watch_locations,
      NGX_HTTP_MDM_WATCH_LOCATIONS,
      offsetof(ngx_http_mdm_watch_counters_t, passed) },

    { ngx_string("mdm_watch_refused_total"),
      ngx_string("Requests refused, by reason."),
      "reason", &ngx_http_mdm_watch_reasons[1],
      NGX_HTTP_MDM_WATCH_REASONS - 1,
      offsetof(ngx_http_mdm_watch_counters_t, refused[1]) },

    ngx_http_mdm_watch_counter("mdm_watch_unavailable_total",
        "Requests answered 503 because Redis or the phone check was "
        "unavailable.",
        unavailable),

    ngx_http_mdm_watch_counter("mdm_watch_internal_errors_total",
        "Requests answered 500 because of an internal failure.",
        internal_errors),

    { ngx_string("mdm_watch_redis_errors_total"),
      ngx_string("Redis error replies, and connections to Redis that "
                 "failed or were lost."),
      "kind", ngx_http_mdm_watch_redis_error_kinds,
      NGX_HTTP_MDM_WATCH_REDIS_ERRORS,
      offsetof(ngx_http_mdm_watch_counters_t, redis_errors) },

    ngx_http_mdm_watch_counter("mdm_watch_redis_timeouts_total",
        "Redis connections and commands that timed out.",
        redis_timeouts),

    { ngx_null_string, ngx_null_string, NULL, NULL, 0, 0 }
};


static ngx_http_mdm_watch_family_t  ngx_http_mdm_watch_latency_family = {
    ngx_string("mdm_watch_redis_command_seconds"),
    ngx_string("Time from sending a Redis command to its reply."),
    "le", NULL, NGX_HTTP_MDM_WATCH_LATENCY_BUCKETS,
    offsetof(ngx_http_mdm_watch_counters_t, redis_latency)
};


static ngx_http_mdm_watch_family_t  ngx_http_mdm_watch_up_family = {
    ngx_string("mdm_watch_redis_up"),
    ngx_string("Whether the Redis connection of a worker is ready."),
    "worker", NULL, NGX_HTTP_MDM_WATCH_WORKERS_MAX,
    offsetof(ngx_http_mdm_watch_counters_t, workers)
};


void
ngx_http_mdm_watch_reject(ngx_http_request_t *r,
    ngx_http_mdm_watch_ctx_t *ctx, ngx_http_mdm_watch_reason_e reason)
{
    ctx->action = NGX_HTTP_MDM_WATCH_ACTION_REJECT;
    ctx->reason = reason;

    ngx_http_mdm_watch_count(refused[reason]);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "mdm watch reject: %V", &ngx_http_mdm_watch_reasons[reason]);
}


ngx_int_t
ngx_http_mdm_watch_counters_add(ngx_conf_t *cf)
{
    ngx_shm_zone_t                  *shm_zone;
    ngx_http_mdm_watch_main_conf_t  *mmcf;

    mmcf = ngx_http_conf_get_module_main_conf(cf, ngx_mdm_watch_module);

    shm_zone = ngx_shared_memory_add(cf, &ngx_http_mdm_watch_zone_name,
                                     NGX_HTTP_MDM_WATCH_ZONE_SIZE,
                                     &ngx_mdm_watch_module);
    if (shm_zone == NULL) {
        return NGX_ERROR;
    }

    shm_zone->init = ngx_http_mdm_watch_counters_init_zone;

    mmcf->counters = shm_zone;

    return NGX_OK;
}


static ngx_int_t
ngx_http_mdm_watch_counters_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_slab_pool_t                *shpool;
    ngx_http_mdm_watch_counters_t  *counters;

    /* a reload: the counters of the old cycle go on */

    if (data) {
        shm_zone->data = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        shm_zone->data = shpool->data;
        return NGX_OK;
    }

    counters = ngx_slab_calloc(shpool, sizeof(ngx_http_mdm_watch_counters_t));
    if (counters == NULL) {
        return NGX_ERROR;
    }

    shpool->data = counters;
    shm_zone->data = counters;

    return NGX_OK;
}


/*
 * a worker takes the slot of its index, whatever it held: the slot of a
 * worker that crashed goes to its replacement, and after a reload the
 * old worker of the same index, still finishing its requests, no longer
 * owns it
 */

void
ngx_http_mdm_watch_counters_init_process(ngx_cycle_t *cycle)
{
    ngx_http_mdm_watch_main_conf_t  *mmcf;

    mmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_mdm_watch_module);

    if (mmcf == NULL || mmcf->counters == NULL) {
        return;
    }

    ngx_http_mdm_watch_counters = mmcf->counters->data;

    if (mmcf->used && ngx_worker < NGX_HTTP_MDM_WATCH_WORKERS_MAX) {
        ngx_http_mdm_watch_counters->workers[ngx_worker] =
                                                (ngx_atomic_uint_t) ngx_pid * 2;
    }
}


void
ngx_http_mdm_watch_counters_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_mdm_watch_worker_set(0);
}


void
ngx_http_mdm_watch_worker_redis_up(ngx_uint_t up)
{
    ngx_http_mdm_watch_worker_set((ngx_atomic_uint_t) ngx_pid * 2
                                  + (up ? 1 : 0));
}


/* changes the worker's slot only while the slot is the worker's own */

static void
ngx_http_mdm_watch_worker_set(ngx_atomic_uint_t value)
{
    ngx_atomic_t       *slot;
    ngx_atomic_uint_t   old;

    if (ngx_http_mdm_watch_counters == NULL
        || ngx_worker >= NGX_HTTP_MDM_WATCH_WORKERS_MAX)
    {
        return;
    }

    slot = &ngx_http_mdm_watch_counters->workers[ngx_worker];
    old = *slot;

    if (old / 2 == (ngx_atomic_uint_t) ngx_pid) {
        (void) ngx_atomic_cmp_set(slot, old, value);
    }
}


/* a monotonic clock in microseconds, for the latency of Redis commands */

uint64_t
ngx_http_mdm_watch_usec(void)
{
    struct timespec  ts;

    if (clock_gettime(CLOCK_MONOTONIC, &ts) == -1) {
        return 0;
    }

    return (uint64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}


void
ngx_http_mdm_watch_redis_latency(uint64_t start)
{
    uint64_t    now, usec;
    ngx_uint_t  i;

    if (ngx_http_mdm_watch_counters == NULL || start == 0) {
        return;
    }

    now = ngx_http_mdm_watch_usec();
    usec = (now > start) ? now - start : 0;

    for (i = 0; i < NGX_HTTP_MDM_WATCH_LATENCY_BUCKETS; i++) {
        if (usec <= ngx_http_mdm_watch_latency_bounds[i]) {
            break;
        }
    }

    ngx_http_mdm_watch_count(redis_latency[i]);

    (void) ngx_atomic_fetch_add(
                         &ngx_http_mdm_watch_counters->redis_latency_usec,
                         (ngx_atomic_int_t) usec);
}


char *
ngx_http_mdm_watch_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t        *clcf;
    ngx_http_mdm_watch_main_conf_t  *mmcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler == ngx_http_mdm_watch_status_handler) {
        return "is duplicate";
    }

    clcf->handler = ngx_http_mdm_watch_status_handler;

    mmcf = ngx_http_conf_get_module_main_conf(cf, ngx_mdm_watch_module);
    mmcf->status = 1;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_mdm_watch_status_handler(ngx_http_request_t *r)
{
    size_t                           size, families;
    u_char                          *p;
    ngx_int_t                        rc;
    ngx_str_t                        body;
    ngx_http_mdm_watch_counters_t   *c;
    ngx_http_mdm_watch_main_conf_t  *mmcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_mdm_watch_not_allowed(r, "GET, HEAD");
    }

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    mmcf = ngx_http_get_module_main_conf(r, ngx_mdm_watch_module);
    c = mmcf->counters->data;

    /* 256 bytes for the comments of a family, 128 for a sample */

    families = sizeof(ngx_http_mdm_watch_counter_families)
               / sizeof(ngx_http_mdm_watch_family_t) + 2;

    size = families * 256
           + (NGX_HTTP_MDM_WATCH_REASONS + NGX_HTTP_MDM_WATCH_LATENCY_BUCKETS
              + NGX_HTTP_MDM_WATCH_WORKERS_MAX + 16)
             * 128;

    p = ngx_pnalloc(r->pool, size);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    body.data = p;

    p = ngx_http_mdm_watch_status_counters(p, c);
    p = ngx_http_mdm_watch_status_latency(p, c);
    p = ngx_http_mdm_watch_status_workers(p, c);

    body.len = p - body.data;

    return ngx_http_mdm_watch_send(r, NGX_HTTP_OK,
                                   &ngx_http_mdm_watch_status_type, &body);
}


static u_char *
ngx_http_mdm_watch_status_family(u_char *p, ngx_http_mdm_watch_family_t *f,
    char *type)
{
    return ngx_sprintf(p, "# HELP %V %V\n# TYPE %V %s\n",
                       &f->name, &f->help, &f->name, type);
}


static u_char *
ngx_http_mdm_watch_status_counters(u_char *p, ngx_http_mdm_watch_counters_t *c)
{
    ngx_uint_t                    i;
    ngx_atomic_t                 *v;
    ngx_http_mdm_watch_family_t  *f;

    for (f = ngx_http_mdm_watch_counter_families; f->name.len; f++) {
        p = ngx_http_mdm_watch_status_family(p, f, "counter");

        v = (ngx_atomic_t *) ((u_char *) c + f->offset);

        if (f->label == NULL) {
            p = ngx_sprintf(p, "%V %uA\n", &f->name, *v);
            continue;
        }

        /* label values are the module's own names: nothing to escape */

        for (i = 0; i < f->n; i++) {
            p = ngx_sprintf(p, "%V{%s=\"%V\"} %uA\n",
                            &f->name, f->label, &f->values[i], v[i]);
        }
    }

    return p;
}


/*
 * the buckets are read one by one while workers may add to them: the
 * count is the sum of the buckets read, so that it equals "+Inf"
 */

static u_char *
ngx_http_mdm_watch_status_latency(u_char *p, ngx_http_mdm_watch_counters_t *c)
{
    ngx_uint_t                    i, bound;
    ngx_atomic_uint_t             count, usec;
    ngx_http_mdm_watch_family_t  *f;

    f = &ngx_http_mdm_watch_latency_family;

    p = ngx_http_mdm_watch_status_family(p, f, "histogram");

    usec = c->redis_latency_usec;
    count = 0;

    for (i = 0; i < NGX_HTTP_MDM_WATCH_LATENCY_BUCKETS; i++) {
        count += c->redis_latency[i];
        bound = ngx_http_mdm_watch_latency_bounds[i];

        p = ngx_sprintf(p, "%V_bucket{le=\"%ui.%06ui\"} %uA\n", &f->name,
                        bound / 1000000, bound % 1000000, count);
    }

    count += c->redis_latency[i];

    p = ngx_sprintf(p, "%V_bucket{le=\"+Inf\"} %uA\n", &f->name, count);
    p = ngx_sprintf(p, "%V_sum %uA.%06uA\n", &f->name,
                    usec / 1000000, usec % 1000000);
    p = ngx_sprintf(p, "%V_count %uA\n", &f->name, count);

    return p;
}


static u_char *
ngx_http_mdm_watch_status_workers(u_char *p, ngx_http_mdm_watch_counters_t *c)
{
    ngx_uint_t                    i;
    ngx_atomic_uint_t             slot;
    ngx_http_mdm_watch_family_t  *f;

    f = &ngx_http_mdm_watch_up_family;

    p = ngx_http_mdm_watch_status_family(p, f, "gauge");

    for (i = 0; i < NGX_HTTP_MDM_WATCH_WORKERS_MAX; i++) {
        slot = c->workers[i];

        if (slot == 0) {
            continue;
        }

        p = ngx_sprintf(p, "%V{worker=\"%ui\",pid=\"%uA\"} %uA\n", &f->name,
                        i, slot / 2, slot % 2);
    }

    return p;
}
