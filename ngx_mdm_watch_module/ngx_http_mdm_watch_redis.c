
/*
 * Copyright (C) The ngx_mdm_watch_module authors
 */


#include "ngx_http_mdm_watch.h"


/*
 * One hiredis asynchronous connection per worker, driven by nginx's own
 * event loop: the socket is wrapped in an ngx_connection_t whose events
 * call hiredis back, and every command carries an nginx timer.
 */


#define NGX_HTTP_MDM_WATCH_REDIS_BACKOFF_MIN  100
#define NGX_HTTP_MDM_WATCH_REDIS_BACKOFF_MAX  5000

/*
 * the module's commands are answered with a status, an integer or a
 * short string: anything far larger is a broken or hostile peer; a page
 * of pairs, at most 1000 pairs of fields cut to 128 bytes, takes up to
 * about 1.1 MB
 */
#define NGX_HTTP_MDM_WATCH_REDIS_BUFFER_MAX   (64 * 1024)
#define NGX_HTTP_MDM_WATCH_REDIS_LARGE_MAX    (2 * 1024 * 1024)
#define NGX_HTTP_MDM_WATCH_REDIS_STRING_MAX   (16 * 1024)
#define NGX_HTTP_MDM_WATCH_REDIS_ELEMENTS_MAX 1024


typedef enum {
    NGX_HTTP_MDM_WATCH_REDIS_IDLE = 0,
    NGX_HTTP_MDM_WATCH_REDIS_CONNECTING,
    NGX_HTTP_MDM_WATCH_REDIS_CONNECTED
} ngx_http_mdm_watch_redis_state_e;


/*
 * AUTH and SELECT go first on a new connection; commands are refused
 * until their replies came, so that none runs unauthenticated or in
 * another database
 */


struct ngx_http_mdm_watch_redis_s {
    redisAsyncContext                *ac;
    ngx_connection_t                 *connection;
    ngx_http_mdm_watch_main_conf_t   *conf;
    ngx_log_t                        *log;

    ngx_http_mdm_watch_redis_state_e  state;
    ngx_event_t                       connect_timer;
    ngx_msec_t                        backoff;
    ngx_msec_t                        next_attempt;
    ngx_msec_t                        logged;
    ngx_uint_t                        setup;
    const char                       *refused;

    unsigned                          exiting:1;
};


typedef struct {
    ngx_http_request_t               *request;
    ngx_http_mdm_watch_ctx_t         *ctx;
    ngx_http_mdm_watch_reply_pt       handler;
    ngx_pool_cleanup_t               *cleanup;
    ngx_event_t                       timer;

    ngx_http_mdm_watch_background_pt  background;
    ngx_str_t                         udid;

    uint64_t                          start;
    unsigned                          large_reply:1;
} ngx_http_mdm_watch_redis_cmd_t;


static ngx_int_t ngx_http_mdm_watch_redis_ready(
    ngx_http_mdm_watch_redis_t *redis, ngx_log_t *log);
static ngx_int_t ngx_http_mdm_watch_redis_connect(
    ngx_http_mdm_watch_redis_t *redis);
static ngx_int_t ngx_http_mdm_watch_redis_attach(
    ngx_http_mdm_watch_redis_t *redis, redisAsyncContext *ac);
static void ngx_http_mdm_watch_redis_close(ngx_http_mdm_watch_redis_t *redis);
static void ngx_http_mdm_watch_redis_connected(const redisAsyncContext *ac,
    int status);
static void ngx_http_mdm_watch_redis_disconnected(const redisAsyncContext *ac,
    int status);
static void ngx_http_mdm_watch_redis_setup_reply(redisAsyncContext *ac,
    void *r, void *privdata);
static void ngx_http_mdm_watch_redis_connect_timeout(ngx_event_t *ev);
static void ngx_http_mdm_watch_redis_read_handler(ngx_event_t *rev);
static size_t ngx_http_mdm_watch_redis_buffer_max(
    ngx_http_mdm_watch_redis_t *redis);
static void ngx_http_mdm_watch_redis_write_handler(ngx_event_t *wev);
static void ngx_http_mdm_watch_redis_add_read(void *data);
static void ngx_http_mdm_watch_redis_del_read(void *data);
static void ngx_http_mdm_watch_redis_add_write(void *data);
static void ngx_http_mdm_watch_redis_del_write(void *data);
static void ngx_http_mdm_watch_redis_cleanup(void *data);
static void ngx_http_mdm_watch_redis_reply(redisAsyncContext *ac, void *r,
    void *privdata);
static void ngx_http_mdm_watch_redis_background_reply(
    ngx_http_mdm_watch_redis_cmd_t *cmd, redisAsyncContext *ac,
    redisReply *reply);
static void ngx_http_mdm_watch_redis_timeout(ngx_event_t *ev);
static void ngx_http_mdm_watch_redis_detach(void *data);
static void ngx_http_mdm_watch_redis_failed(ngx_http_mdm_watch_redis_t *redis);
static void ngx_http_mdm_watch_redis_limit_replies(redisAsyncContext *ac);
static void *ngx_http_mdm_watch_redis_create_string(
    const redisReadTask *task, char *str, size_t len);
static void *ngx_http_mdm_watch_redis_create_array(
    const redisReadTask *task, int elements);
static void *ngx_http_mdm_watch_redis_create_integer(
    const redisReadTask *task, long long value);
static void *ngx_http_mdm_watch_redis_create_nil(const redisReadTask *task);
static ngx_uint_t ngx_http_mdm_watch_redis_unsolicited(
    const redisReadTask *task);


static ngx_http_mdm_watch_redis_t  ngx_http_mdm_watch_redis;

static redisReplyObjectFunctions   ngx_http_mdm_watch_redis_reply_functions;
static redisReplyObjectFunctions  *ngx_http_mdm_watch_redis_hiredis_functions;


ngx_int_t
ngx_http_mdm_watch_redis_init_process(ngx_cycle_t *cycle)
{
    ngx_http_mdm_watch_redis_t      *redis;
    ngx_http_mdm_watch_main_conf_t  *mmcf;

    mmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_mdm_watch_module);

    if (mmcf == NULL || !(mmcf->used || mmcf->pairs)) {
        return NGX_OK;
    }

    redis = &ngx_http_mdm_watch_redis;

    ngx_memzero(redis, sizeof(ngx_http_mdm_watch_redis_t));

    redis->conf = mmcf;
    redis->log = cycle->log;

    redis->connect_timer.handler = ngx_http_mdm_watch_redis_connect_timeout;
    redis->connect_timer.data = redis;
    redis->connect_timer.log = cycle->log;
    redis->connect_timer.cancelable = 1;

    /* a failure is logged and retried when the first request needs Redis */

    (void) ngx_http_mdm_watch_redis_connect(redis);

    return NGX_OK;
}


void
ngx_http_mdm_watch_redis_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_mdm_watch_redis_t  *redis;

    redis = &ngx_http_mdm_watch_redis;

    if (redis->conf == NULL) {
        return;
    }

    redis->exiting = 1;

    ngx_http_mdm_watch_redis_close(redis);
}


ngx_int_t
ngx_http_mdm_watch_redis_command(ngx_http_request_t *r,
    ngx_http_mdm_watch_ctx_t *ctx, ngx_http_mdm_watch_reply_pt handler,
    int argc, const char **argv, const size_t *argvlen)
{
    ngx_pool_cleanup_t              *cln;
    ngx_http_mdm_watch_redis_t      *redis;
    ngx_http_mdm_watch_redis_cmd_t  *cmd;

    redis = &ngx_http_mdm_watch_redis;

    if (ngx_http_mdm_watch_redis_ready(redis, r->connection->log) != NGX_OK) {
        return NGX_DECLINED;
    }

    cmd = ngx_alloc(sizeof(ngx_http_mdm_watch_redis_cmd_t), r->connection->log);
    if (cmd == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(cmd, sizeof(ngx_http_mdm_watch_redis_cmd_t));

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        ngx_free(cmd);
        return NGX_ERROR;
    }

    if (redisAsyncCommandArgv(redis->ac, ngx_http_mdm_watch_redis_reply, cmd,
                              argc, argv, argvlen)
        != REDIS_OK)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "mdm watch: redis command %*s to \"%V\" failed: %s",
                      argvlen[0], argv[0], &redis->conf->addr,
                      redis->ac->errstr[0] ? redis->ac->errstr
                                           : "connection is closing");
        ngx_free(cmd);
        return NGX_DECLINED;
    }

    cmd->request = r;
    cmd->ctx = ctx;
    cmd->handler = handler;
    cmd->cleanup = cln;
    cmd->start = ngx_http_mdm_watch_usec();
    cmd->large_reply = ctx->large_reply;

    cln->handler = ngx_http_mdm_watch_redis_detach;
    cln->data = cmd;

    cmd->timer.handler = ngx_http_mdm_watch_redis_timeout;
    cmd->timer.data = cmd;
    cmd->timer.log = r->connection->log;

    ngx_add_timer(&cmd->timer, redis->conf->redis_timeout);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "mdm watch redis: %*s sent", argvlen[0], argv[0]);

    return NGX_OK;
}


/*
 * a command that no request waits for, such as recording what a device
 * told the MDM server: its outcome is only logged
 */

ngx_int_t
ngx_http_mdm_watch_redis_background(ngx_log_t *log,
    ngx_http_mdm_watch_background_pt handler, ngx_str_t *udid, int argc,
    const char **argv, const size_t *argvlen)
{
    ngx_http_mdm_watch_redis_t      *redis;
    ngx_http_mdm_watch_redis_cmd_t  *cmd;

    redis = &ngx_http_mdm_watch_redis;

    if (ngx_http_mdm_watch_redis_ready(redis, log) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "mdm watch: device \"%V\" not recorded", udid);
        return NGX_DECLINED;
    }

    cmd = ngx_alloc(sizeof(ngx_http_mdm_watch_redis_cmd_t) + udid->len, log);
    if (cmd == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(cmd, sizeof(ngx_http_mdm_watch_redis_cmd_t));

    cmd->background = handler;
    cmd->udid.data = (u_char *) cmd + sizeof(ngx_http_mdm_watch_redis_cmd_t);
    cmd->udid.len = udid->len;
    ngx_memcpy(cmd->udid.data, udid->data, udid->len);

    if (redisAsyncCommandArgv(redis->ac, ngx_http_mdm_watch_redis_reply, cmd,
                              argc, argv, argvlen)
        != REDIS_OK)
    {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "mdm watch: redis command to \"%V\" failed, "
                      "\"%V\" not recorded", &redis->conf->addr, udid);
        ngx_free(cmd);
        return NGX_DECLINED;
    }

    cmd->start = ngx_http_mdm_watch_usec();

    return NGX_OK;
}


/*
 * whether a command may be sent now: a connection is made if there is
 * none and the backoff has passed, and none is used before AUTH and
 * SELECT are answered
 */

static ngx_int_t
ngx_http_mdm_watch_redis_ready(ngx_http_mdm_watch_redis_t *redis,
    ngx_log_t *log)
{
    ngx_uint_t  level;

    if (redis->ac == NULL) {

        if ((ngx_msec_int_t) (ngx_current_msec - redis->next_attempt) < 0) {

            /*
             * once an error a wait, the other requests refused in it at
             * the info level: clients that retry at once flood no log
             */

            level = (redis->logged == redis->next_attempt) ? NGX_LOG_INFO
                                                           : NGX_LOG_ERR;

            ngx_log_error(level, log, 0,
                          "mdm watch: redis at \"%V\" is unavailable, "
                          "next connection attempt in %M ms",
                          &redis->conf->addr,
                          redis->next_attempt - ngx_current_msec);

            redis->logged = redis->next_attempt;

            return NGX_DECLINED;
        }

        if (ngx_http_mdm_watch_redis_connect(redis) != NGX_OK) {
            return NGX_DECLINED;
        }
    }

    if (redis->setup) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "mdm watch: redis at \"%V\" is not ready: "
                      "AUTH or SELECT not answered yet",
                      &redis->conf->addr);
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_mdm_watch_redis_connect(ngx_http_mdm_watch_redis_t *redis)
{
    redisAsyncContext               *ac;
    ngx_http_mdm_watch_main_conf_t  *mmcf;

    mmcf = redis->conf;

    if (mmcf->unix_path.len) {
        ac = redisAsyncConnectUnix((char *) mmcf->unix_path.data);

    } else {
        ac = redisAsyncConnect((char *) mmcf->host.data, mmcf->port);
    }

    if (ac == NULL) {
        ngx_log_error(NGX_LOG_ERR, redis->log, 0,
                      "mdm watch: redis connection to \"%V\" failed: "
                      "out of memory", &mmcf->addr);
        ngx_http_mdm_watch_count(
                     redis_errors[NGX_HTTP_MDM_WATCH_REDIS_ERROR_CONNECTION]);
        ngx_http_mdm_watch_redis_failed(redis);
        return NGX_ERROR;
    }

    if (ac->err) {
        ngx_log_error(NGX_LOG_ERR, redis->log, 0,
                      "mdm watch: redis connection to \"%V\" failed: %s",
                      &mmcf->addr, ac->errstr);
        redisAsyncFree(ac);
        ngx_http_mdm_watch_count(
                     redis_errors[NGX_HTTP_MDM_WATCH_REDIS_ERROR_CONNECTION]);
        ngx_http_mdm_watch_redis_failed(redis);
        return NGX_ERROR;
    }

    ngx_http_mdm_watch_redis_limit_replies(ac);

    if (ngx_http_mdm_watch_redis_attach(redis, ac) != NGX_OK) {
        redisAsyncFree(ac);
        ngx_http_mdm_watch_redis_failed(redis);
        return NGX_ERROR;
    }

    redis->ac = ac;
    redis->state = NGX_HTTP_MDM_WATCH_REDIS_CONNECTING;

    redisAsyncSetConnectCallback(ac, ngx_http_mdm_watch_redis_connected);
    redisAsyncSetDisconnectCallback(ac, ngx_http_mdm_watch_redis_disconnected);

    redis->setup = 0;
    redis->refused = NULL;

    if (mmcf->password.len) {
        if (redisAsyncCommand(ac, ngx_http_mdm_watch_redis_setup_reply,
                              (void *) "AUTH", "AUTH %b", mmcf->password.data,
                              mmcf->password.len)
            != REDIS_OK)
        {
            goto setup_failed;
        }

        redis->setup++;
    }

    if (mmcf->db) {
        if (redisAsyncCommand(ac, ngx_http_mdm_watch_redis_setup_reply,
                              (void *) "SELECT", "SELECT %d", (int) mmcf->db)
            != REDIS_OK)
        {
            goto setup_failed;
        }

        redis->setup++;
    }

    /* hiredis learns that the connection is established from writability */

    ngx_http_mdm_watch_redis_add_write(redis);

    ngx_add_timer(&redis->connect_timer, mmcf->redis_timeout);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, redis->log, 0,
                   "mdm watch redis: connecting to \"%V\"", &mmcf->addr);

    return NGX_OK;

setup_failed:

    ngx_log_error(NGX_LOG_ERR, redis->log, 0,
                  "mdm watch: redis connection to \"%V\" failed: "
                  "AUTH or SELECT could not be queued: %s",
                  &mmcf->addr, ac->errstr[0] ? ac->errstr : "unknown error");

    ngx_http_mdm_watch_redis_close(redis);

    return NGX_ERROR;
}


static ngx_int_t
ngx_http_mdm_watch_redis_attach(ngx_http_mdm_watch_redis_t *redis,
    redisAsyncContext *ac)
{
    ngx_connection_t  *c;

    c = ngx_get_connection(ac->c.fd, redis->log);
    if (c == NULL) {
        return NGX_ERROR;
    }

    c->data = redis;

    c->read->handler = ngx_http_mdm_watch_redis_read_handler;
    c->write->handler = ngx_http_mdm_watch_redis_write_handler;
    c->read->log = redis->log;
    c->write->log = redis->log;

    redis->connection = c;

    ac->ev.data = redis;
    ac->ev.addRead = ngx_http_mdm_watch_redis_add_read;
    ac->ev.delRead = ngx_http_mdm_watch_redis_del_read;
    ac->ev.addWrite = ngx_http_mdm_watch_redis_add_write;
    ac->ev.delWrite = ngx_http_mdm_watch_redis_del_write;
    ac->ev.cleanup = ngx_http_mdm_watch_redis_cleanup;

    return NGX_OK;
}


static void
ngx_http_mdm_watch_redis_close(ngx_http_mdm_watch_redis_t *redis)
{
    if (redis->ac == NULL) {
        return;
    }

    /* calls back every pending command with a NULL reply, then cleanup */

    redisAsyncFree(redis->ac);
}


static void
ngx_http_mdm_watch_redis_connected(const redisAsyncContext *ac, int status)
{
    ngx_http_mdm_watch_redis_t  *redis;

    redis = ac->ev.data;

    if (redis->connect_timer.timer_set) {
        ngx_del_timer(&redis->connect_timer);
    }

    if (status != REDIS_OK) {
        ngx_log_error(NGX_LOG_ERR, redis->log, 0,
                      "mdm watch: redis connection to \"%V\" failed: %s",
                      &redis->conf->addr, ac->errstr);
        ngx_http_mdm_watch_count(
                     redis_errors[NGX_HTTP_MDM_WATCH_REDIS_ERROR_CONNECTION]);
        return;
    }

    redis->state = NGX_HTTP_MDM_WATCH_REDIS_CONNECTED;

    if (redis->setup == 0) {
        ngx_http_mdm_watch_worker_redis_up(1);
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, redis->log, 0,
                   "mdm watch redis: connected to \"%V\"", &redis->conf->addr);
}


static void
ngx_http_mdm_watch_redis_disconnected(const redisAsyncContext *ac, int status)
{
    ngx_http_mdm_watch_redis_t  *redis;

    redis = ac->ev.data;

    if (status == REDIS_OK || redis->exiting) {
        return;
    }

    ngx_http_mdm_watch_count(
                     redis_errors[NGX_HTTP_MDM_WATCH_REDIS_ERROR_CONNECTION]);

    if (redis->refused) {
        ngx_log_error(NGX_LOG_ERR, redis->log, 0,
                      "mdm watch: redis at \"%V\" sent %s, "
                      "connection closed", &redis->conf->addr, redis->refused);
        return;
    }

    /*
     * Redis closes idle clients when its "timeout" is set: an error is
     * logged by each request that was waiting, and by the next attempt
     * to connect if Redis is gone
     */

    ngx_log_error(NGX_LOG_INFO, redis->log, 0,
                  "mdm watch: redis connection to \"%V\" lost: %s",
                  &redis->conf->addr,
                  ac->errstr[0] ? ac->errstr : "closed by server");
}


static void
ngx_http_mdm_watch_redis_setup_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    redisReply                  *reply = r;
    ngx_http_mdm_watch_redis_t  *redis;

    redis = ac->ev.data;

    if (reply == NULL) {
        return;
    }

    if (reply->type != REDIS_REPLY_ERROR) {
        if (redis->setup) {
            redis->setup--;
        }

        if (redis->setup == 0
            && redis->state == NGX_HTTP_MDM_WATCH_REDIS_CONNECTED)
        {
            ngx_http_mdm_watch_worker_redis_up(1);
        }

        return;
    }

    ngx_http_mdm_watch_count(
                    redis_errors[NGX_HTTP_MDM_WATCH_REDIS_ERROR_REPLY]);

    ngx_log_error(NGX_LOG_ERR, redis->log, 0,
                  "mdm watch: redis %s on \"%V\" failed: %*s",
                  (char *) privdata, &redis->conf->addr,
                  (size_t) reply->len, reply->str);

    /* nothing may be sent on this connection: it is dropped */

    redisAsyncDisconnect(ac);
}


static void
ngx_http_mdm_watch_redis_connect_timeout(ngx_event_t *ev)
{
    ngx_http_mdm_watch_redis_t  *redis;

    redis = ev->data;

    if (redis->state != NGX_HTTP_MDM_WATCH_REDIS_CONNECTING) {
        return;
    }

    ngx_log_error(NGX_LOG_ERR, redis->log, NGX_ETIMEDOUT,
                  "mdm watch: redis connection to \"%V\" timed out",
                  &redis->conf->addr);

    ngx_http_mdm_watch_count(redis_timeouts);

    ngx_http_mdm_watch_redis_close(redis);
}


static void
ngx_http_mdm_watch_redis_read_handler(ngx_event_t *rev)
{
    size_t                       max;
    ngx_connection_t            *c;
    ngx_http_mdm_watch_redis_t  *redis;

    c = rev->data;
    redis = c->data;

    if (redis->ac == NULL) {
        return;
    }

    /* hiredis buffers a whole bulk reply, whatever length it announces */

    max = ngx_http_mdm_watch_redis_buffer_max(redis);

    if (redis->ac->c.reader->len - redis->ac->c.reader->pos > max) {
        ngx_log_error(NGX_LOG_ERR, redis->log, 0,
                      "mdm watch: redis at \"%V\" sent a reply larger "
                      "than %uz bytes, connection closed",
                      &redis->conf->addr, max);
        ngx_http_mdm_watch_redis_close(redis);
        return;
    }

    redisAsyncHandleRead(redis->ac);
}


/* the reply being read is that of the oldest command waiting */

static size_t
ngx_http_mdm_watch_redis_buffer_max(ngx_http_mdm_watch_redis_t *redis)
{
    redisCallback                   *cb;
    ngx_http_mdm_watch_redis_cmd_t  *cmd;

    cb = redis->ac->replies.head;

    if (cb == NULL || cb->fn != ngx_http_mdm_watch_redis_reply) {
        return NGX_HTTP_MDM_WATCH_REDIS_BUFFER_MAX;
    }

    cmd = cb->privdata;

    return cmd->large_reply ? NGX_HTTP_MDM_WATCH_REDIS_LARGE_MAX
                            : NGX_HTTP_MDM_WATCH_REDIS_BUFFER_MAX;
}


static void
ngx_http_mdm_watch_redis_write_handler(ngx_event_t *wev)
{
    ngx_connection_t            *c;
    ngx_http_mdm_watch_redis_t  *redis;

    c = wev->data;
    redis = c->data;

    if (redis->ac) {
        redisAsyncHandleWrite(redis->ac);
    }
}


/*
 * The socket is registered level-triggered: hiredis reads once per call
 * and expects to be called again while data are pending.
 */

static void
ngx_http_mdm_watch_redis_add_read(void *data)
{
    ngx_http_mdm_watch_redis_t *redis = data;

    ngx_event_t  *rev;

    rev = redis->connection->read;

    if (!rev->active
        && ngx_add_event(rev, NGX_READ_EVENT, NGX_LEVEL_EVENT) != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ALERT, redis->log, 0,
                      "mdm watch: adding redis read event failed");
    }
}


static void
ngx_http_mdm_watch_redis_del_read(void *data)
{
    ngx_http_mdm_watch_redis_t *redis = data;

    ngx_event_t  *rev;

    rev = redis->connection->read;

    if (rev->active) {
        (void) ngx_del_event(rev, NGX_READ_EVENT, 0);
    }
}


static void
ngx_http_mdm_watch_redis_add_write(void *data)
{
    ngx_http_mdm_watch_redis_t *redis = data;

    ngx_event_t  *wev;

    wev = redis->connection->write;

    if (!wev->active
        && ngx_add_event(wev, NGX_WRITE_EVENT, NGX_LEVEL_EVENT) != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ALERT, redis->log, 0,
                      "mdm watch: adding redis write event failed");
    }
}


static void
ngx_http_mdm_watch_redis_del_write(void *data)
{
    ngx_http_mdm_watch_redis_t *redis = data;

    ngx_event_t  *wev;

    wev = redis->connection->write;

    if (wev->active) {
        (void) ngx_del_event(wev, NGX_WRITE_EVENT, 0);
    }
}


static void
ngx_http_mdm_watch_redis_cleanup(void *data)
{
    ngx_http_mdm_watch_redis_t *redis = data;

    ngx_connection_t  *c;

    c = redis->connection;

    if (c) {
        /* hiredis closes the socket itself right after this call */

        if (c->read->active) {
            (void) ngx_del_event(c->read, NGX_READ_EVENT, NGX_CLOSE_EVENT);
        }

        if (c->write->active) {
            (void) ngx_del_event(c->write, NGX_WRITE_EVENT, NGX_CLOSE_EVENT);
        }

        if (c->read->posted) {
            ngx_delete_posted_event(c->read);
        }

        if (c->write->posted) {
            ngx_delete_posted_event(c->write);
        }

        c->fd = (ngx_socket_t) -1;
        ngx_free_connection(c);

        redis->connection = NULL;
    }

    if (redis->connect_timer.timer_set) {
        ngx_del_timer(&redis->connect_timer);
    }

    redis->ac = NULL;

    ngx_http_mdm_watch_worker_redis_up(0);

    if (!redis->exiting) {
        ngx_http_mdm_watch_redis_failed(redis);
    }

    redis->state = NGX_HTTP_MDM_WATCH_REDIS_IDLE;
}


static void
ngx_http_mdm_watch_redis_failed(ngx_http_mdm_watch_redis_t *redis)
{
    if (redis->backoff == 0) {
        redis->backoff = NGX_HTTP_MDM_WATCH_REDIS_BACKOFF_MIN;

    } else {
        redis->backoff = ngx_min(redis->backoff * 2,
                                 NGX_HTTP_MDM_WATCH_REDIS_BACKOFF_MAX);
    }

    redis->next_attempt = ngx_current_msec + redis->backoff;
}


static void
ngx_http_mdm_watch_redis_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    redisReply                      *reply = r;
    ngx_connection_t                *c;
    ngx_http_request_t              *req;
    ngx_http_mdm_watch_redis_t      *redis;
    ngx_http_mdm_watch_redis_cmd_t  *cmd;

    cmd = privdata;
    redis = &ngx_http_mdm_watch_redis;

    if (reply) {
        ngx_http_mdm_watch_redis_latency(cmd->start);

        if (reply->type == REDIS_REPLY_ERROR) {
            ngx_http_mdm_watch_count(
                    redis_errors[NGX_HTTP_MDM_WATCH_REDIS_ERROR_REPLY]);
        }
    }

    if (cmd->background) {
        ngx_http_mdm_watch_redis_background_reply(cmd, ac, reply);
        ngx_free(cmd);
        return;
    }

    if (cmd->timer.timer_set) {
        ngx_del_timer(&cmd->timer);
    }

    req = cmd->request;

    if (req == NULL || redis->exiting) {
        ngx_free(cmd);
        return;
    }

    cmd->cleanup->handler = NULL;

    c = req->connection;

    if (reply && reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "mdm watch: redis at \"%V\" answered an error: %*s",
                      &redis->conf->addr, (size_t) reply->len, reply->str);
        reply = NULL;

    } else if (reply == NULL) {
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "mdm watch: redis command to \"%V\" failed: %s",
                      &redis->conf->addr,
                      ac->errstr[0] ? ac->errstr : "connection closed");
    }

    if (reply && redis->backoff) {
        ngx_log_error(NGX_LOG_NOTICE, c->log, 0,
                      "mdm watch: redis at \"%V\" answers again",
                      &redis->conf->addr);
        redis->backoff = 0;
    }

    cmd->handler(req, cmd->ctx, reply);

    ngx_free(cmd);

    ngx_http_run_posted_requests(c);
}


static void
ngx_http_mdm_watch_redis_background_reply(ngx_http_mdm_watch_redis_cmd_t *cmd,
    redisAsyncContext *ac, redisReply *reply)
{
    ngx_http_mdm_watch_redis_t  *redis;

    redis = &ngx_http_mdm_watch_redis;

    if (redis->exiting) {
        return;
    }

    if (reply == NULL) {
        ngx_log_error(NGX_LOG_ERR, redis->log, 0,
                      "mdm watch: redis command to \"%V\" failed: %s, "
                      "\"%V\" not recorded", &redis->conf->addr,
                      ac->errstr[0] ? ac->errstr : "connection closed",
                      &cmd->udid);
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, redis->log, 0,
                      "mdm watch: redis at \"%V\" answered an error: %*s, "
                      "\"%V\" not recorded", &redis->conf->addr,
                      (size_t) reply->len, reply->str, &cmd->udid);
        return;
    }

    cmd->background(&cmd->udid, reply);
}


static void
ngx_http_mdm_watch_redis_timeout(ngx_event_t *ev)
{
    ngx_connection_t                *c;
    ngx_http_request_t              *r;
    ngx_http_mdm_watch_redis_t      *redis;
    ngx_http_mdm_watch_redis_cmd_t  *cmd;

    cmd = ev->data;
    redis = &ngx_http_mdm_watch_redis;

    r = cmd->request;

    if (r == NULL) {
        return;
    }

    c = r->connection;

    ngx_log_error(NGX_LOG_ERR, c->log, NGX_ETIMEDOUT,
                  "mdm watch: redis at \"%V\" timed out",
                  &redis->conf->addr);

    ngx_http_mdm_watch_count(redis_timeouts);

    /* the reply, if it ever comes, frees the command */

    cmd->request = NULL;
    cmd->cleanup->handler = NULL;

    cmd->handler(r, cmd->ctx, NULL);

    ngx_http_run_posted_requests(c);

    /*
     * a Redis that does not answer in time is treated as stalled: the
     * connection is dropped, so that later requests are refused at once
     * instead of waiting, until a new connection succeeds
     */

    ngx_http_mdm_watch_redis_close(redis);
}


static void
ngx_http_mdm_watch_redis_detach(void *data)
{
    ngx_http_mdm_watch_redis_cmd_t *cmd = data;

    cmd->request = NULL;

    if (cmd->timer.timer_set) {
        ngx_del_timer(&cmd->timer);
    }
}


static void
ngx_http_mdm_watch_redis_limit_replies(redisAsyncContext *ac)
{
    redisReplyObjectFunctions  *fn;

    fn = &ngx_http_mdm_watch_redis_reply_functions;

    if (ngx_http_mdm_watch_redis_hiredis_functions == NULL) {
        ngx_http_mdm_watch_redis_hiredis_functions = ac->c.reader->fn;

        *fn = *ac->c.reader->fn;
        fn->createString = ngx_http_mdm_watch_redis_create_string;
        fn->createArray = ngx_http_mdm_watch_redis_create_array;
        fn->createInteger = ngx_http_mdm_watch_redis_create_integer;
        fn->createNil = ngx_http_mdm_watch_redis_create_nil;
    }

    ac->c.reader->fn = fn;
}


/*
 * NULL makes hiredis fail the reader, and the connection is dropped:
 * for a reply too large, and for a reply nobody asked for, on which
 * hiredis 0.14 would abort the worker
 */

static void *
ngx_http_mdm_watch_redis_create_string(const redisReadTask *task, char *str,
    size_t len)
{
    if (len > NGX_HTTP_MDM_WATCH_REDIS_STRING_MAX) {
        ngx_http_mdm_watch_redis.refused = "a string too long";
        return NULL;
    }

    if (ngx_http_mdm_watch_redis_unsolicited(task)) {
        return NULL;
    }

    return ngx_http_mdm_watch_redis_hiredis_functions->createString(task, str,
                                                                    len);
}


static void *
ngx_http_mdm_watch_redis_create_array(const redisReadTask *task,
    int elements)
{
    if (elements < 0 || elements > NGX_HTTP_MDM_WATCH_REDIS_ELEMENTS_MAX) {
        ngx_http_mdm_watch_redis.refused = "an array too long";
        return NULL;
    }

    if (ngx_http_mdm_watch_redis_unsolicited(task)) {
        return NULL;
    }

    return ngx_http_mdm_watch_redis_hiredis_functions->createArray(task,
                                                                   elements);
}


static void *
ngx_http_mdm_watch_redis_create_integer(const redisReadTask *task,
    long long value)
{
    if (ngx_http_mdm_watch_redis_unsolicited(task)) {
        return NULL;
    }

    return ngx_http_mdm_watch_redis_hiredis_functions->createInteger(task,
                                                                     value);
}


static void *
ngx_http_mdm_watch_redis_create_nil(const redisReadTask *task)
{
    if (ngx_http_mdm_watch_redis_unsolicited(task)) {
        return NULL;
    }

    return ngx_http_mdm_watch_redis_hiredis_functions->createNil(task);
}


/*
 * hiredis hands over each reply to the callback of the oldest command
 * before it reads the next one: a reply that starts while no callback
 * waits was not asked for
 */

static ngx_uint_t
ngx_http_mdm_watch_redis_unsolicited(const redisReadTask *task)
{
    redisAsyncContext  *ac;

    ac = ngx_http_mdm_watch_redis.ac;

    if (task->parent == NULL && ac != NULL && ac->replies.head == NULL) {
        ngx_http_mdm_watch_redis.refused = "a reply nobody asked for";
        return 1;
    }

    return 0;
}
