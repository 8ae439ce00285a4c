
/*
 * Copyright (C) The ngx_mdm_watch_module authors
 */


#ifndef _NGX_HTTP_MDM_WATCH_H_INCLUDED_
#define _NGX_HTTP_MDM_WATCH_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/x509.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>


#define NGX_HTTP_MDM_WATCH_UDID_MAX            64
#define NGX_HTTP_MDM_WATCH_MESSAGE_TYPE_MAX    64
#define NGX_HTTP_MDM_WATCH_PAIRED_MAX_TEXT     "100"
#define NGX_HTTP_MDM_WATCH_SECURITY_TOKEN_LEN  36
#define NGX_HTTP_MDM_WATCH_TOKEN_ID_LEN        32
#define NGX_HTTP_MDM_WATCH_PAIRING_TOKEN_MAX   512
#define NGX_HTTP_MDM_WATCH_SECRET_MIN          32
#define NGX_HTTP_MDM_WATCH_RETRY_AFTER         "5"

#define NGX_HTTP_MDM_WATCH_KEY_SECURITY_TOKEN  "mdm_watch:security_token:"
#define NGX_HTTP_MDM_WATCH_KEY_CHALLENGES      "mdm_watch:challenges:"
#define NGX_HTTP_MDM_WATCH_KEY_PAIRING_TOKEN   "mdm_watch:pairing_token:"
#define NGX_HTTP_MDM_WATCH_KEY_PAIR            "mdm_watch:pair:"
#define NGX_HTTP_MDM_WATCH_KEY_PHONE           "mdm_watch:phone:"
#define NGX_HTTP_MDM_WATCH_KEY_DEVICE          "mdm_watch:device:"
#define NGX_HTTP_MDM_WATCH_KEY_PHONE_CHECK     "mdm_watch:phone_check:"
#define NGX_HTTP_MDM_WATCH_KEY_PAIRS           "mdm_watch:pairs"
#define NGX_HTTP_MDM_WATCH_KEY_SERIAL          "mdm_watch:serial:"

/* the longest serial indexed and looked up, as a number and in Lua */
#define NGX_HTTP_MDM_WATCH_SERIAL_MAX          64
#define NGX_HTTP_MDM_WATCH_SERIAL_MAX_LUA      "64"


/*
 * a Lua function for the scripts that replace or remove a pair: the
 * serial index entry of the pair at key "pair" goes if it names "watch"
 */
#define NGX_HTTP_MDM_WATCH_LUA_UNINDEX_SERIAL                                 \
    "local function unindex_serial(pair, watch, prefix) "                     \
        "local serial = redis.call('HGET', pair, 'serial') "                  \
        "if not serial or serial == '' then return end "                      \
        "local key = prefix .. string.upper(serial) "                         \
        "if redis.call('GET', key) == watch then "                            \
            "redis.call('DEL', key) "                                         \
        "end "                                                                \
    "end "


/* a string received, compared with a literal */
#define ngx_http_mdm_watch_str_eq(s, literal)                                 \
    ((s)->data != NULL && (s)->len == sizeof(literal) - 1                     \
     && ngx_strncmp((s)->data, literal, sizeof(literal) - 1) == 0)


typedef struct ngx_http_mdm_watch_redis_s  ngx_http_mdm_watch_redis_t;


typedef struct {
    ngx_str_t                        addr;
    ngx_str_t                        host;
    ngx_str_t                        unix_path;
    in_port_t                        port;
    ngx_int_t                        db;
    ngx_str_t                        password;

    ngx_msec_t                       redis_timeout;
    time_t                           token_ttl;

    ngx_str_t                        secret;
    ngx_str_t                        trusted_certificate;
    X509_STORE                      *trusted;
    ngx_flag_t                       verify_machine_info;
    ngx_flag_t                       require_signature;
    time_t                           phone_check_valid;

    /* the two times above as Redis takes them */
    ngx_str_t                        token_ttl_text;
    ngx_str_t                        phone_check_valid_text;

    ngx_uint_t                       used;

    /* the counters, made once a location uses the module or its status */
    ngx_shm_zone_t                  *counters;
    ngx_uint_t                       status;
    ngx_uint_t                       pairs;
} ngx_http_mdm_watch_main_conf_t;


typedef struct {
    ngx_flag_t                       enroll;
    ngx_flag_t                       checkin;
    ngx_str_t                        phone_check;
    ngx_uint_t                       pairs;
} ngx_http_mdm_watch_loc_conf_t;


/* machine info, as the watch sends it inside CMS SignedData */

typedef struct {
    ngx_str_t                        udid;          /* upper case */
    ngx_str_t                        serial;
    ngx_str_t                        product;
    ngx_str_t                        version;
    ngx_str_t                        os_version;
    ngx_str_t                        pairing_token; /* data == NULL: absent */

    ngx_uint_t                       reason;        /* why it was refused */
} ngx_http_mdm_watch_machine_info_t;


/* the fields of a check-in message the module reads */

typedef struct {
    ngx_str_t                        message_type;
    ngx_str_t                        udid;
    ngx_str_t                        token_service_type;

    /* TokenParameters; data == NULL: missing or not a string */
    ngx_str_t                        security_token;
    ngx_str_t                        phone_udid;
    ngx_str_t                        watch_udid;

    unsigned                         token_parameters:1;
} ngx_http_mdm_watch_checkin_t;


/* the contents of a pairing token */

typedef struct {
    time_t                           expires;
    ngx_str_t                        id;
    ngx_str_t                        watch_udid;
    ngx_str_t                        phone_udid;
    ngx_str_t                        security_token;
} ngx_http_mdm_watch_pairing_token_t;


typedef enum {
    NGX_HTTP_MDM_WATCH_ACTION_NONE = 0,
    NGX_HTTP_MDM_WATCH_ACTION_CHALLENGE,
    NGX_HTTP_MDM_WATCH_ACTION_TOKEN,
    NGX_HTTP_MDM_WATCH_ACTION_PAIRED,
    NGX_HTTP_MDM_WATCH_ACTION_PASS,
    NGX_HTTP_MDM_WATCH_ACTION_REJECT,
    NGX_HTTP_MDM_WATCH_ACTION_UNAVAILABLE,
    NGX_HTTP_MDM_WATCH_ACTION_ERROR
} ngx_http_mdm_watch_action_e;


/* why a request was refused: $mdm_watch_action is "reject:<reason>" */

typedef enum {
    NGX_HTTP_MDM_WATCH_REASON_NONE = 0,
    NGX_HTTP_MDM_WATCH_REASON_METHOD,
    NGX_HTTP_MDM_WATCH_REASON_TOO_LARGE,
    NGX_HTTP_MDM_WATCH_REASON_BAD_CMS,
    NGX_HTTP_MDM_WATCH_REASON_UNTRUSTED_SIGNER,
    NGX_HTTP_MDM_WATCH_REASON_BAD_PLIST,
    NGX_HTTP_MDM_WATCH_REASON_BAD_UDID,
    NGX_HTTP_MDM_WATCH_REASON_BAD_TOKEN,
    NGX_HTTP_MDM_WATCH_REASON_REPLAYED,
    NGX_HTTP_MDM_WATCH_REASON_UDID_MISMATCH,
    NGX_HTTP_MDM_WATCH_REASON_BAD_PARAMETERS,
    NGX_HTTP_MDM_WATCH_REASON_BAD_SECURITY_TOKEN,
    NGX_HTTP_MDM_WATCH_REASON_BAD_SIGNATURE,
    NGX_HTTP_MDM_WATCH_REASON_UNSIGNED,
    NGX_HTTP_MDM_WATCH_REASON_WRONG_IDENTITY,
    NGX_HTTP_MDM_WATCH_REASON_UNKNOWN_PHONE,
    NGX_HTTP_MDM_WATCH_REASON_UNKNOWN_SECURITY_TOKEN,
    NGX_HTTP_MDM_WATCH_REASONS
} ngx_http_mdm_watch_reason_e;


/* the counters of the status page, in shared memory, for all workers */

#define NGX_HTTP_MDM_WATCH_LATENCY_BUCKETS  12
#define NGX_HTTP_MDM_WATCH_WORKERS_MAX      256

typedef enum {
    NGX_HTTP_MDM_WATCH_LOCATION_ENROLL = 0,
    NGX_HTTP_MDM_WATCH_LOCATION_CHECKIN,
    NGX_HTTP_MDM_WATCH_LOCATIONS
} ngx_http_mdm_watch_location_e;

typedef enum {
    NGX_HTTP_MDM_WATCH_REDIS_ERROR_REPLY = 0,
    NGX_HTTP_MDM_WATCH_REDIS_ERROR_CONNECTION,
    NGX_HTTP_MDM_WATCH_REDIS_ERRORS
} ngx_http_mdm_watch_redis_error_e;

typedef struct {
    ngx_atomic_t   challenges;
    ngx_atomic_t   tokens;
    ngx_atomic_t   paired;
    ngx_atomic_t   unavailable;
    ngx_atomic_t   internal_errors;
    ngx_atomic_t   passed[NGX_HTTP_MDM_WATCH_LOCATIONS];
    ngx_atomic_t   refused[NGX_HTTP_MDM_WATCH_REASONS];

    ngx_atomic_t   redis_errors[NGX_HTTP_MDM_WATCH_REDIS_ERRORS];
    ngx_atomic_t   redis_timeouts;

    /* per bucket, not cumulative; the last one counts the slower replies */
    ngx_atomic_t   redis_latency[NGX_HTTP_MDM_WATCH_LATENCY_BUCKETS + 1];
    ngx_atomic_t   redis_latency_usec;

    /* per worker index: the worker's pid times 2, plus 1 while Redis is up */
    ngx_atomic_t   workers[NGX_HTTP_MDM_WATCH_WORKERS_MAX];
} ngx_http_mdm_watch_counters_t;


typedef struct ngx_http_mdm_watch_ctx_s  ngx_http_mdm_watch_ctx_t;

typedef void (*ngx_http_mdm_watch_reply_pt)(ngx_http_request_t *r,
    ngx_http_mdm_watch_ctx_t *ctx, redisReply *reply);

/* a command no request waits for; udid names the device in its logs */
typedef void (*ngx_http_mdm_watch_background_pt)(ngx_str_t *udid,
    redisReply *reply);


struct ngx_http_mdm_watch_ctx_s {
    ngx_int_t                        status;
    ngx_http_mdm_watch_action_e      action;
    ngx_http_mdm_watch_reason_e      reason;

    ngx_str_t                        udid;
    ngx_str_t                        phone_udid;
    ngx_str_t                        message_type;

    ngx_http_mdm_watch_machine_info_t  machine_info;
    ngx_http_mdm_watch_checkin_t       checkin;
    ngx_http_mdm_watch_pairing_token_t pairing_token;

    ngx_str_t                        security_token;
    ngx_str_t                        token_data;

    /* the device a check-in comes from, and who signed it */
    ngx_str_t                        device;
    ngx_str_t                        identity;
    ngx_str_t                        identity_source;
    ngx_str_t                        paired_udids;

    ngx_str_t                        phone_check;
    ngx_uint_t                       phone_check_status;

    unsigned                         record:1;
    unsigned                         phone_check_done:1;

    /* a reply of up to 2 MB is expected, as for a page of pairs */
    unsigned                         large_reply:1;
};


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
    unsigned                            refused:1;
} ngx_http_mdm_watch_pairs_ctx_t;


/* the answer, written into a chain of pool buffers */

typedef struct {
    ngx_pool_t                         *pool;
    ngx_chain_t                        *first;
    ngx_chain_t                       **last;
    ngx_buf_t                          *buf;
    off_t                               size;
} ngx_http_mdm_watch_pairs_out_t;



/* the module and its configuration */

extern ngx_module_t  ngx_mdm_watch_module;

ngx_int_t ngx_http_mdm_watch_read_body(ngx_http_request_t *r,
    ngx_str_t *body, size_t max);
ngx_int_t ngx_http_mdm_watch_send(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *content_type, ngx_str_t *body);
ngx_int_t ngx_http_mdm_watch_unavailable(ngx_http_request_t *r);
ngx_int_t ngx_http_mdm_watch_not_allowed(ngx_http_request_t *r,
    char *allow);
ngx_int_t ngx_http_mdm_watch_header(ngx_http_request_t *r, char *name,
    u_char *value, size_t len);
void ngx_http_mdm_watch_decline(ngx_http_request_t *r,
    ngx_http_mdm_watch_ctx_t *ctx);
ngx_int_t ngx_http_mdm_watch_key(ngx_pool_t *pool, char *prefix,
    ngx_str_t *id, ngx_str_t *key);
ngx_int_t ngx_http_mdm_watch_seconds(ngx_pool_t *pool, time_t t,
    ngx_str_t *s);
ngx_int_t ngx_http_mdm_watch_redis_call(ngx_http_request_t *r,
    ngx_http_mdm_watch_ctx_t *ctx, ngx_http_mdm_watch_reply_pt handler,
    int argc, const char **argv, const size_t *argvlen);
void ngx_http_mdm_watch_finalize(ngx_http_request_t *r,
    ngx_http_mdm_watch_ctx_t *ctx, ngx_int_t rc);

/* the phases */

ngx_int_t ngx_http_mdm_watch_enroll_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_mdm_watch_checkin_handler(ngx_http_request_t *r);

/* tokens and their cryptography */

ngx_int_t ngx_http_mdm_watch_security_token_create(u_char *buf);
ngx_int_t ngx_http_mdm_watch_security_token_canonical(ngx_pool_t *pool,
    ngx_str_t *in, ngx_str_t *out);
ngx_int_t ngx_http_mdm_watch_udid_canonical(ngx_pool_t *pool, ngx_str_t *in,
    ngx_str_t *out);
ngx_int_t ngx_http_mdm_watch_pairing_token_create(ngx_pool_t *pool,
    ngx_str_t *secret, ngx_http_mdm_watch_pairing_token_t *pt,
    ngx_str_t *out);
ngx_int_t ngx_http_mdm_watch_pairing_token_record(ngx_pool_t *pool,
    ngx_http_mdm_watch_pairing_token_t *pt, ngx_str_t *record);
ngx_int_t ngx_http_mdm_watch_pairing_token_parse(ngx_pool_t *pool,
    ngx_str_t *secret, ngx_str_t *in, ngx_http_mdm_watch_pairing_token_t *pt);
void ngx_http_mdm_watch_hmac_free(void);

/* CMS and machine info */

void ngx_http_mdm_watch_openssl_error(ngx_uint_t level, ngx_log_t *log,
    const char *call);
X509_STORE *ngx_http_mdm_watch_cms_trusted(ngx_conf_t *cf, ngx_str_t *file);
ngx_int_t ngx_http_mdm_watch_machine_info(ngx_pool_t *pool, ngx_log_t *log,
    ngx_str_t *body, X509_STORE *trusted,
    ngx_http_mdm_watch_machine_info_t *mi);

/* plists, checked before libplist parses them */

ngx_int_t ngx_http_mdm_watch_plist_parse(ngx_str_t *data, ngx_uint_t binary,
    void **plist, const char **error);

/* Mdm-Signature and TLS client certificates: who sent a check-in */

ngx_int_t ngx_http_mdm_watch_mdm_signature(ngx_pool_t *pool, ngx_log_t *log,
    ngx_str_t *header, ngx_str_t *body, ngx_str_t *identity);
ngx_int_t ngx_http_mdm_watch_client_identity(ngx_http_request_t *r,
    ngx_str_t *identity);

/* check-in plists */

ngx_int_t ngx_http_mdm_watch_checkin_parse(ngx_pool_t *pool, ngx_log_t *log,
    ngx_str_t *body, ngx_http_mdm_watch_checkin_t *ci);
ngx_int_t ngx_http_mdm_watch_token_data_plist(ngx_pool_t *pool,
    ngx_str_t *token_data, ngx_str_t *out);

/* the registry of enrolled devices */

ngx_int_t ngx_http_mdm_watch_registry_checkin(ngx_http_request_t *r,
    ngx_http_mdm_watch_ctx_t *ctx, ngx_str_t *body);
ngx_int_t ngx_http_mdm_watch_sender(ngx_http_request_t *r,
    ngx_http_mdm_watch_ctx_t *ctx, ngx_str_t *body);
ngx_int_t ngx_http_mdm_watch_registry_init(ngx_conf_t *cf);

/* the administrators' view of the pairs */

char *ngx_http_mdm_watch_pairs(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_mdm_watch_pairs_json(ngx_http_mdm_watch_pairs_ctx_t *ctx,
    ngx_http_mdm_watch_pairs_out_t *out);
ngx_int_t ngx_http_mdm_watch_pairs_json_error(
    ngx_http_mdm_watch_pairs_out_t *out, const char *error);
ngx_int_t ngx_http_mdm_watch_pairs_html(ngx_http_mdm_watch_pairs_ctx_t *ctx,
    ngx_http_mdm_watch_pairs_out_t *out);
ngx_int_t ngx_http_mdm_watch_pairs_csp_init(ngx_conf_t *cf);

extern ngx_str_t  ngx_http_mdm_watch_pairs_csp;

/* Redis */

ngx_int_t ngx_http_mdm_watch_redis_init_process(ngx_cycle_t *cycle);
void ngx_http_mdm_watch_redis_exit_process(ngx_cycle_t *cycle);
ngx_int_t ngx_http_mdm_watch_redis_command(ngx_http_request_t *r,
    ngx_http_mdm_watch_ctx_t *ctx, ngx_http_mdm_watch_reply_pt handler,
    int argc, const char **argv, const size_t *argvlen);
ngx_int_t ngx_http_mdm_watch_redis_background(ngx_log_t *log,
    ngx_http_mdm_watch_background_pt handler, ngx_str_t *udid, int argc,
    const char **argv, const size_t *argvlen);

/* counters and the status page */

#define ngx_http_mdm_watch_count(counter)                                     \
    do {                                                                      \
        if (ngx_http_mdm_watch_counters) {                                    \
            (void) ngx_atomic_fetch_add(                                      \
                              &ngx_http_mdm_watch_counters->counter, 1);      \
        }                                                                     \
    } while (0)

extern ngx_http_mdm_watch_counters_t  *ngx_http_mdm_watch_counters;
extern ngx_str_t                        ngx_http_mdm_watch_reasons[];

void ngx_http_mdm_watch_reject(ngx_http_request_t *r,
    ngx_http_mdm_watch_ctx_t *ctx, ngx_http_mdm_watch_reason_e reason);
ngx_int_t ngx_http_mdm_watch_counters_add(ngx_conf_t *cf);
void ngx_http_mdm_watch_counters_init_process(ngx_cycle_t *cycle);
void ngx_http_mdm_watch_counters_exit_process(ngx_cycle_t *cycle);
void ngx_http_mdm_watch_worker_redis_up(ngx_uint_t up);
uint64_t ngx_http_mdm_watch_usec(void);
void ngx_http_mdm_watch_redis_latency(uint64_t start);
char *ngx_http_mdm_watch_status(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/* variables */

ngx_int_t ngx_http_mdm_watch_add_variables(ngx_conf_t *cf);


#endif /* _NGX_HTTP_MDM_WATCH_H_INCLUDED_ */
