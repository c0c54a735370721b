/*
 * semail-outbound - the submission server: accept mail from trusted
 * networks and from authenticated people, queue it durably, deliver it to
 * the Internet with retries, and bounce what fails.
 *
 * Contract: reads the configuration ([global], [outbound], the limits of
 * [inbound], [ldap]), binds every listen address (plain and TLS), prepares
 * the queue STATE_DIR/queue for [global] user, drops to that user, starts
 * the delivery threads, then serves until SIGTERM or SIGINT, after which it
 * lets the sessions and the attempts in progress finish (bounded by the
 * grace time) and exits 0. Exit 1: bad configuration, a bind, a TLS file
 * or a privilege drop that failed; exit 2: bad usage.
 *
 * Policy: a client in trusted_networks may send as anyone; any other client
 * must authenticate (AUTH, checked against the directory, and the login
 * must have an active box) and may then use only its own address in MAIL
 * FROM. Recipients may be anywhere. A message is in the queue, fsync'd,
 * before the 250.
 */
#include <arpa/inet.h>
#include <grp.h>
#include <limits.h>
#include <pthread.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "prog.h"

#define NAME               "semail-outbound"
#define THROTTLE_SLOTS     256
#define THROTTLE_DECAY_MS  60000 /* one failure forgotten per minute */
#define THROTTLE_MAX_SHIFT 3     /* 1, 2, 4, 8 s */
#define HEADER_MAX         2048  /* the Received header we add */
#define POOL_GRACE_MS      10000

static const char usage[] =
    "usage: semail-outbound [-c FILE] [-t] [--version] [--help]\n"
    "  -c, --config FILE     configuration file (default: $SEMAIL_CONFIG "
    "or " SEMAIL_CONFIG_DEFAULT_PATH ")\n"
    "  -t, --check-config    check the configuration and exit\n"
    "  --version             print the version and exit\n"
    "  --help                print this help and exit\n"
    "Accepts mail for delivery (submission), queues it and delivers it; stays in\n"
    "the foreground; SIGTERM or SIGINT stops it gracefully (exit 0).\n";

/* Failed AUTH per client address, with decay, to slow down guessing. */
typedef struct throttle_slot {
    char ip[INET6_ADDRSTRLEN];
    unsigned int failures;
    int64_t last_ms;
} throttle_slot;

typedef struct throttle {
    pthread_mutex_t mu;
    throttle_slot slots[THROTTLE_SLOTS];
} throttle;

/* What the callbacks share: immutable after start, except what locks itself. */
typedef struct outbound {
    const char *hostname;
    const char *mail_root;
    char domain[SEMAIL_DOMAIN_MAX + 1];
    semail_registry_cache *cache;
    semail_queue *queue;
    semail_relay_pool *pool;
    semail_cidr_list *trusted;
    int has_ldap;
    semail_ldap_options ldap;
    char ldap_password[1024];
    throttle thr;
    size_t max_message_size;
} outbound;

/* ---- small helpers --------------------------------------------------------------- */

static void lower_copy(char *dst, size_t size, const char *src)
{
    size_t i;
    for (i = 0; src[i] && i + 1 < size; i++)
        dst[i] = (char)((src[i] >= 'A' && src[i] <= 'Z') ? src[i] + ('a' - 'A') : src[i]);
    dst[i] = '\0';
}

/* Printable ASCII only, for log lines and headers. */
static void clean_copy(char *out, size_t size, const char *s)
{
    size_t i;
    for (i = 0; s && s[i] && i + 1 < size; i++) {
        unsigned char c = (unsigned char)s[i];
        out[i] = (c > 0x20 && c < 0x7f) ? (char)c : '?';
    }
    out[i] = '\0';
}

static void sleep_ms(unsigned int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* Take the newest registry snapshot; log a reload that failed. */
static int acquire(const semail_registry **reg, outbound *ob)
{
    int err;

    semail_error_clear();
    if ((err = semail_registry_cache_acquire(reg, ob->cache)) < 0) {
        prog_logf("registry: %s", semail_error_last());
        return err;
    }
    if (semail_error_last_code() != 0)
        prog_logf("registry: reload failed, still using the previous one: %s", semail_error_last());
    return 0;
}

/* ---- AUTH ---------------------------------------------------------------------- */

static throttle_slot *throttle_find(throttle *t, const char *ip, int64_t now)
{
    throttle_slot *oldest = &t->slots[0];
    size_t i;

    for (i = 0; i < THROTTLE_SLOTS; i++) {
        throttle_slot *s = &t->slots[i];
        if (strcmp(s->ip, ip) == 0)
            return s;
        if (s->last_ms < oldest->last_ms)
            oldest = s;
    }
    snprintf(oldest->ip, sizeof(oldest->ip), "%s", ip);
    oldest->failures = 0;
    oldest->last_ms = now;
    return oldest;
}

/* Count a failure of IP and sleep 1 s, 2 s, 4 s, 8 s... before answering. */
static void throttle_failure(throttle *t, const char *ip)
{
    int64_t now = semail_queue_now_ms(), forgotten;
    throttle_slot *s;
    unsigned int shift;

    pthread_mutex_lock(&t->mu);
    s = throttle_find(t, ip ? ip : "?", now);
    forgotten = (now - s->last_ms) / THROTTLE_DECAY_MS;
    s->failures = forgotten >= (int64_t)s->failures ? 0 : s->failures - (unsigned int)forgotten;
    s->failures++;
    s->last_ms = now;
    shift = s->failures - 1 > THROTTLE_MAX_SHIFT ? THROTTLE_MAX_SHIFT : s->failures - 1;
    pthread_mutex_unlock(&t->mu);
    sleep_ms(1000u << shift);
}

static void throttle_success(throttle *t, const char *ip)
{
    size_t i;

    pthread_mutex_lock(&t->mu);
    for (i = 0; i < THROTTLE_SLOTS; i++)
        if (strcmp(t->slots[i].ip, ip ? ip : "?") == 0)
            t->slots[i].failures = 0;
    pthread_mutex_unlock(&t->mu);
}

/* 1 when LOGIN has an active box, 0 when not, < 0 when unknown. */
static int has_active_box(outbound *ob, const char *login)
{
    const semail_registry *reg;
    const semail_user *u;
    int r;

    if (acquire(&reg, ob) < 0)
        return -1;
    r = semail_registry_find_login(&u, reg, login) == 0 && u->state == SEMAIL_USER_ACTIVE;
    semail_registry_cache_release(ob->cache, reg);
    return r;
}

static int auth_failed(semail_reply *reply, outbound *ob, const semail_envelope *env,
                       const char *login, const char *why)
{
    prog_logf("auth failed: client=%s login=%s: %s",
              env->client_addr ? env->client_addr : "unknown", login, why);
    throttle_failure(&ob->thr, env->client_addr);
    semail_reply_set(reply, 535, "5.7.8", "Authentication credentials invalid");
    return 0;
}

static int on_auth(semail_reply *reply, const semail_envelope *env, const char *authcid,
                   const char *password, void *payload)
{
    outbound *ob = payload;
    const char *client = env->client_addr ? env->client_addr : "unknown";
    int err, box;

    if (!ob->has_ldap) {
        semail_reply_set(reply, 454, "4.7.0", "Temporary authentication failure");
        return 0;
    }
    if (semail_validate_name(authcid) < 0)
        return auth_failed(reply, ob, env, "(invalid)", "not a valid login");
    err = semail_ldap_authenticate(&ob->ldap, authcid, password, NULL, 0);
    if (err == SEMAIL_EPERM || err == SEMAIL_ENOTFOUND || err == SEMAIL_EINVAL)
        return auth_failed(reply, ob, env, authcid, semail_error_last());
    if (err < 0) {
        prog_logf("auth: client=%s login=%s: directory: %s", client, authcid, semail_error_last());
        semail_reply_set(reply, 454, "4.7.0", "Temporary authentication failure");
        return 0;
    }
    if ((box = has_active_box(ob, authcid)) < 0) {
        semail_reply_set(reply, 454, "4.7.0", "Temporary authentication failure");
        return 0;
    }
    if (box == 0)
        return auth_failed(reply, ob, env, authcid, "no active box");
    throttle_success(&ob->thr, env->client_addr);
    prog_logf("auth: client=%s sasl_username=%s", client, authcid);
    semail_reply_set(reply, 235, "2.7.0", "Authentication successful");
    return 0;
}

/* ---- MAIL and RCPT ------------------------------------------------------------- */

/* May USER (a login) send as SENDER? Only with the address of its own box. */
static int sender_owned(outbound *ob, const char *login, const semail_address *sender)
{
    const semail_registry *reg;
    const semail_user *u;
    int ok;

    if (sender->is_null || acquire(&reg, ob) < 0)
        return 0;
    ok = semail_registry_find_login(&u, reg, login) == 0 && u->state == SEMAIL_USER_ACTIVE &&
         strcasecmp(sender->local, u->id) == 0 && strcasecmp(sender->domain, u->domain) == 0;
    semail_registry_cache_release(ob->cache, reg);
    return ok;
}

static int on_mail(semail_reply *reply, const semail_envelope *env, const semail_address *sender,
                   void *payload)
{
    outbound *ob = payload;

    if (env->auth_user != NULL) {
        if (sender_owned(ob, env->auth_user, sender))
            semail_reply_set(reply, 250, "2.1.0", "Ok");
        else
            semail_reply_set(reply, 553, "5.7.1", "Sender address rejected: not owned by user");
        return 0;
    }
    if (env->client_addr && semail_cidr_list_match(ob->trusted, env->client_addr) == 1)
        semail_reply_set(reply, 250, "2.1.0", "Ok");
    else
        semail_reply_set(reply, 530, "5.7.0", "Authentication required");
    return 0;
}

static int rcpt_syntax_ok(const semail_address *rcpt)
{
    char domain[SEMAIL_DOMAIN_MAX + 1];
    size_t n = strlen(rcpt->domain);
    const char *p;

    for (p = rcpt->local; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return 0;
    if (n == 0)
        return 0;
    if (rcpt->domain[0] == '[')
        return rcpt->domain[n - 1] == ']';
    lower_copy(domain, sizeof(domain), rcpt->domain);
    if (n > 1 && domain[n - 1] == '.')
        domain[n - 1] = '\0';
    return semail_validate_domain(domain) == 0;
}

static int on_rcpt(semail_reply *reply, const semail_envelope *env, const semail_address *rcpt,
                   void *payload)
{
    (void)env;
    (void)payload;
    if (rcpt_syntax_ok(rcpt))
        semail_reply_set(reply, 250, "2.1.5", "Ok");
    else
        semail_reply_set(reply, 501, "5.1.3", "Bad recipient address syntax");
    return 0;
}

/* ---- DATA: into the queue ---------------------------------------------------- */

/* A submission being queued, on the heap: session threads have small stacks. */
typedef struct submission {
    char sender[SEMAIL_PATH_MAX + 3];
    char (*rcpts)[SEMAIL_PATH_MAX + 3];
    const char **rcpt_ptrs;
    size_t nrcpt;
    char header[HEADER_MAX];
    size_t header_len;
    char *data; /* header + message */
    char qid[SEMAIL_QUEUE_QID_SIZE];
} submission;

static const char *protocol(const semail_envelope *env)
{
    if (!env->esmtp)
        return "SMTP";
    if (env->tls)
        return env->auth_user ? "ESMTPSA" : "ESMTPS";
    return env->auth_user ? "ESMTPA" : "ESMTP";
}

/* The Received header of the submission (RFC 5321 4.4, Postfix's form). */
static int build_received(submission *s, const outbound *ob, const semail_envelope *env)
{
    char helo[SEMAIL_DOMAIN_MAX + 1], user[SEMAIL_DOMAIN_MAX + 1], date[64], auth[300] = "";
    char rcpt[SEMAIL_PATH_MAX + 16] = "";
    int n;

    clean_copy(helo, sizeof(helo), env->helo);
    (void)semail_date_rfc5322(date, sizeof(date), time(NULL));
    if (env->auth_user) {
        clean_copy(user, sizeof(user), env->auth_user);
        snprintf(auth, sizeof(auth), "\r\n\t(Authenticated sender: %s)", user);
    }
    if (s->nrcpt == 1)
        snprintf(rcpt, sizeof(rcpt), "\r\n\tfor <%s>", s->rcpts[0]);
    n = snprintf(s->header, sizeof(s->header),
                 "Received: from %s (%s)%s\r\n\tby %s (SEMail) with %s id %.64s%s;\r\n\t%s\r\n",
                 helo[0] ? helo : "unknown", env->client_addr ? env->client_addr : "unknown", auth,
                 ob->hostname, protocol(env), env->txn_id, rcpt, date);
    if (n < 0 || (size_t)n >= sizeof(s->header))
        return -1;
    s->header_len = (size_t)n;
    return 0;
}

/* Formatted recipients, each once (compared without regard to case). */
static int collect_rcpts(submission *s, const semail_envelope *env)
{
    size_t i, j;

    s->rcpts = calloc(env->rcpt_count, sizeof(*s->rcpts));
    s->rcpt_ptrs = calloc(env->rcpt_count, sizeof(*s->rcpt_ptrs));
    if (s->rcpts == NULL || s->rcpt_ptrs == NULL)
        return SEMAIL_ENOMEM;
    for (i = 0; i < env->rcpt_count; i++) {
        if (semail_address_format(s->rcpts[s->nrcpt], sizeof(s->rcpts[0]), &env->rcpts[i]) < 0)
            return SEMAIL_EINVAL;
        for (j = 0; j < s->nrcpt && strcasecmp(s->rcpts[j], s->rcpts[s->nrcpt]) != 0; j++)
            ;
        if (j == s->nrcpt) {
            s->rcpt_ptrs[s->nrcpt] = s->rcpts[s->nrcpt];
            s->nrcpt++;
        }
    }
    return 0;
}

static void log_submission(const submission *s, const semail_envelope *env, size_t len,
                           const semail_reply *reply)
{
    char to[1024], user[80] = "";
    size_t i, n = 0;

    to[0] = '\0';
    for (i = 0; i < s->nrcpt && n < sizeof(to); i++) {
        int w = snprintf(to + n, sizeof(to) - n, "%s<%s>", i ? "," : "", s->rcpts[i]);
        if (w < 0)
            break;
        n += (size_t)w;
    }
    if (env->auth_user)
        clean_copy(user, sizeof(user), env->auth_user);
    prog_logf("%s: client=%s%s%s, from=<%s>, to=%s, size=%zu, nrcpt=%zu, result=%d %s %s",
              s->qid[0] ? s->qid : env->txn_id, env->client_addr ? env->client_addr : "unknown",
              user[0] ? ", sasl_username=" : "", user, s->sender, to, len, s->nrcpt, reply->code,
              reply->enhanced, reply->text);
}

static void map_submit_error(semail_reply *reply, int err)
{
    if (err == SEMAIL_EFULL)
        semail_reply_set(reply, 452, "4.3.1", "Insufficient system storage");
    else if (err == SEMAIL_ETOOBIG)
        semail_reply_set(reply, 552, "5.3.4", "Message size exceeds fixed limit");
    else
        semail_reply_set(reply, 451, "4.3.0", "Local error in processing, try again later");
}

static int submit(submission *s, outbound *ob, const semail_envelope *env, const char *data,
                  size_t len, semail_reply *reply)
{
    int err;

    if (env->sender->is_null ||
        semail_address_format(s->sender, sizeof(s->sender), env->sender) < 0)
        s->sender[0] = '\0';
    if ((err = collect_rcpts(s, env)) < 0 || (err = build_received(s, ob, env)) < 0) {
        map_submit_error(reply, err);
        return 0;
    }
    if ((s->data = malloc(s->header_len + len + 1)) == NULL)
        return SEMAIL_ENOMEM;
    memcpy(s->data, s->header, s->header_len);
    memcpy(s->data + s->header_len, data, len);
    err = semail_queue_submit(s->qid, ob->queue, s->sender, s->rcpt_ptrs, s->nrcpt, s->data,
                              s->header_len + len);
    if (err < 0) {
        prog_logf("%s: queue: %s", env->txn_id, semail_error_last());
        s->qid[0] = '\0';
        map_submit_error(reply, err);
        return 0;
    }
    semail_reply_set(reply, 250, "2.0.0", "Ok: queued as %s", s->qid);
    return 0;
}

static int on_message(semail_reply *reply, const semail_envelope *env, const char *data, size_t len,
                      void *payload)
{
    outbound *ob = payload;
    submission *s = calloc(1, sizeof(*s));
    int err;

    if (s == NULL)
        return SEMAIL_ENOMEM;
    if ((err = submit(s, ob, env, data, len, reply)) == 0)
        log_submission(s, env, len, reply);
    if (s->qid[0] != '\0')
        semail_relay_pool_wakeup(ob->pool); /* after the log line, which comes first */
    free(s->data);
    free(s->rcpts);
    free(s->rcpt_ptrs);
    free(s);
    return err;
}

/* ---- bounces ---------------------------------------------------------------- */

/* A bounce for a sender with a box here goes straight into its mbox, by
 * the code semail-inbound delivers with; otherwise (or when that fails)
 * it is queued with the null sender. */
static int deliver_bounce_locally(outbound *ob, const char *rcpt, const char *dsn, size_t len,
                                  const char *qid, char *note, size_t note_size)
{
    char path[SEMAIL_PATH_MAX + 8], domain[SEMAIL_DOMAIN_MAX + 1];
    semail_address to, null_sender;
    semail_envelope env;
    semail_deliver_local_options o;
    semail_reply reply;
    const semail_registry *reg;
    const semail_user *u;
    int n, found, err;

    n = snprintf(path, sizeof(path), "<%s>", rcpt);
    if (n < 0 || (size_t)n >= sizeof(path) ||
        semail_address_parse(&to, path, (size_t)n, 0, NULL) < 0)
        return 0;
    lower_copy(domain, sizeof(domain), to.domain);
    if (acquire(&reg, ob) < 0)
        return 0;
    found = semail_registry_find_address(&u, reg, to.local, domain) == 0;
    if (found) {
        memset(&null_sender, 0, sizeof(null_sender));
        null_sender.is_null = 1;
        memset(&env, 0, sizeof(env));
        env.helo = ob->hostname;
        env.esmtp = 1;
        env.sender = &null_sender;
        env.rcpts = &to;
        env.rcpt_count = 1;
        env.client_addr = "localhost";
        env.txn_id = qid;
        semail_deliver_local_options_init(&o);
        o.mail_root = ob->mail_root;
        o.hostname = ob->hostname;
        o.domain = ob->domain;
        o.log = prog_server_log_cb;
        err = semail_deliver_local(&reply, &o, reg, &env, dsn, len);
        if (err == 0 && reply.code == 250)
            snprintf(note, note_size, "delivered to local mailbox");
        else
            found = 0;
    }
    semail_registry_cache_release(ob->cache, reg);
    return found;
}

static int on_bounce(const char *rcpt, const char *dsn, size_t len, const char *qid, char *note,
                     size_t note_size, void *payload)
{
    outbound *ob = payload;
    char bqid[SEMAIL_QUEUE_QID_SIZE];
    int err;

    if (deliver_bounce_locally(ob, rcpt, dsn, len, qid, note, note_size))
        return 0;
    if ((err = semail_queue_submit(bqid, ob->queue, "", &rcpt, 1, dsn, len)) < 0)
        return err;
    snprintf(note, note_size, "queued as %s", bqid);
    semail_relay_pool_wakeup(ob->pool);
    return 0;
}

/* ---- signals ------------------------------------------------------------------- */

/* SIGTERM and SIGINT stop the server (prog_signals_start). */
static void stop_server(void *srv)
{
    semail_server_stop(srv);
}

/* ---- configuration ------------------------------------------------------------ */

/* Everything main() sets up, torn down in one place. */
typedef struct app {
    semail_config *cfg;
    char **listen, **listen_tls, **all_listen;
    size_t nlisten, nlisten_tls;
    uint64_t *schedule;
    size_t nschedule;
    semail_queue_retry retry;
    semail_resolver *resolver;
    semail_relay_options relay;
    unsigned int workers;
    outbound ob;
    semail_server *srv;
    prog_signals sig;
} app;

static int cfg_error(const app *a, const char *section, const char *key)
{
    fprintf(stderr, "%s: %s: [%s] %s: %s\n", NAME, semail_config_path(a->cfg), section, key,
            semail_error_last());
    return -1;
}

/* A number from SECTION KEY ('s' size, 'd' duration, 'u' uint), at most MAX. */
static int cfg_number(const app *a, const char *section, const char *key, char kind, uint64_t max,
                      uint64_t *out)
{
    return prog_cfg_number(a->cfg, NAME, section, key, kind, max, out);
}

/* One duration of retry_schedule ("30", "5m", "2h", "1d"), in ms. */
static int parse_duration(const char *s, uint64_t *out)
{
    uint64_t v = 0, unit = 1000;
    const char *p = s;

    if (*p < '0' || *p > '9')
        return -1;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > (UINT64_MAX / 1000 / 86400 - 9) / 10)
            return -1;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    if (*p == 's' || *p == 'S')
        p++;
    else if (*p == 'm' || *p == 'M')
        unit = 60000, p++;
    else if (*p == 'h' || *p == 'H')
        unit = 3600000, p++;
    else if (*p == 'd' || *p == 'D')
        unit = 86400000, p++;
    if (*p != '\0' || v == 0)
        return -1;
    *out = v * unit;
    return 0;
}

static int setup_retry(app *a)
{
    char **items = NULL;
    uint64_t life;
    size_t i;

    semail_queue_retry_init(&a->retry);
    if (semail_config_get_list(a->cfg, "outbound", "retry_schedule", &items, &a->nschedule) < 0)
        return cfg_error(a, "outbound", "retry_schedule");
    if ((a->schedule = calloc(a->nschedule ? a->nschedule : 1, sizeof(uint64_t))) == NULL) {
        semail_config_list_free(items);
        return -1;
    }
    for (i = 0; i < a->nschedule; i++) {
        if (parse_duration(items[i], &a->schedule[i]) < 0) {
            fprintf(stderr, "%s: %s: [outbound] retry_schedule: bad duration '%s'\n", NAME,
                    semail_config_path(a->cfg), items[i]);
            semail_config_list_free(items);
            return -1;
        }
    }
    semail_config_list_free(items);
    if (cfg_number(a, "outbound", "max_queue_lifetime", 'd', UINT64_MAX, &life) < 0)
        return -1;
    a->retry.schedule_ms = a->nschedule ? a->schedule : NULL;
    a->retry.schedule_len = a->nschedule;
    a->retry.max_lifetime_ms = life;
    return 0;
}

static int setup_lists(app *a)
{
    char **trusted = NULL;
    size_t ntrusted = 0, i;
    int err;

    if (semail_config_get_list(a->cfg, "outbound", "listen", &a->listen, &a->nlisten) < 0 ||
        semail_config_get_list(a->cfg, "outbound", "listen_tls", &a->listen_tls, &a->nlisten_tls) <
            0)
        return cfg_error(a, "outbound", "listen");
    if (a->nlisten + a->nlisten_tls == 0) {
        fprintf(stderr, "%s: %s: [outbound] listen: no address\n", NAME,
                semail_config_path(a->cfg));
        return -1;
    }
    if ((a->all_listen = calloc(a->nlisten + a->nlisten_tls + 1, sizeof(char *))) == NULL)
        return -1;
    for (i = 0; i < a->nlisten; i++)
        a->all_listen[i] = a->listen[i];
    for (i = 0; i < a->nlisten_tls; i++)
        a->all_listen[a->nlisten + i] = a->listen_tls[i];
    if (semail_config_get_list(a->cfg, "outbound", "trusted_networks", &trusted, &ntrusted) < 0)
        return cfg_error(a, "outbound", "trusted_networks");
    err = semail_cidr_list_parse(&a->ob.trusted, (const char *const *)trusted, ntrusted);
    semail_config_list_free(trusted);
    return err < 0 ? cfg_error(a, "outbound", "trusted_networks") : 0;
}

static int setup_ldap(app *a)
{
    if (!semail_config_has_section(a->cfg, "ldap"))
        return 0;
    if (semail_ldap_options_from_config(&a->ob.ldap, a->ob.ldap_password,
                                        sizeof(a->ob.ldap_password), a->cfg) < 0) {
        fprintf(stderr, "%s: %s\n", NAME, semail_error_last());
        return -1;
    }
    a->ob.has_ldap = 1;
    return 0;
}

static int setup_outbound(app *a)
{
    const char *state_dir = semail_config_get(a->cfg, "global", "state_dir");
    const char *log = semail_config_get(a->cfg, "global", "log");
    uint64_t size;

    a->ob.hostname = semail_config_get(a->cfg, "global", "hostname");
    a->ob.mail_root = semail_config_get(a->cfg, "global", "mail_root");
    lower_copy(a->ob.domain, sizeof(a->ob.domain), semail_config_get(a->cfg, "global", "domain"));
    if (pthread_mutex_init(&a->ob.thr.mu, NULL) != 0)
        return -1;
    prog_daemon_log_init(NAME, log && strcmp(log, "syslog") == 0);
    if (cfg_number(a, "inbound", "max_message_size", 's', SIZE_MAX / 4, &size) < 0)
        return -1;
    a->ob.max_message_size = (size_t)size;
    if (semail_registry_cache_new(&a->ob.cache, state_dir) < 0) {
        fprintf(stderr, "%s: registry in %s: %s\n", NAME, state_dir, semail_error_last());
        return -1;
    }
    if (setup_lists(a) < 0 || setup_retry(a) < 0 || setup_ldap(a) < 0)
        return -1;
    return 0;
}

static int read_server_limits(const app *a, semail_server_options *so)
{
    uint64_t rcpts, conns, per, errs, pause;

    if (cfg_number(a, "inbound", "greet_pause_ms", 'u', UINT_MAX, &pause) < 0 ||
        cfg_number(a, "inbound", "max_recipients", 'u', UINT_MAX, &rcpts) < 0 ||
        cfg_number(a, "inbound", "max_connections", 'u', UINT_MAX, &conns) < 0 ||
        cfg_number(a, "inbound", "max_connections_per_client", 'u', UINT_MAX, &per) < 0 ||
        cfg_number(a, "inbound", "max_errors", 'u', UINT_MAX, &errs) < 0)
        return -1;
    so->pregreet_ms = (unsigned int)pause;
    so->session.max_message_size = a->ob.max_message_size;
    so->session.max_recipients = (unsigned int)rcpts;
    so->session.max_errors = (unsigned int)errs;
    so->max_connections = (unsigned int)conns;
    so->max_per_client = (unsigned int)per;
    return 0;
}

static int setup_server(app *a)
{
    semail_server_options so;
    int plain = 0;

    semail_server_options_init(&so);
    so.listen = (const char *const *)a->listen;
    so.listen_count = a->nlisten;
    so.tls_listen = (const char *const *)a->listen_tls;
    so.tls_listen_count = a->nlisten_tls;
    so.tls_cert = semail_config_get(a->cfg, "outbound", "tls_cert");
    so.tls_key = semail_config_get(a->cfg, "outbound", "tls_key");
    so.name = NAME;
    so.log = prog_server_log_cb;
    so.session.hostname = a->ob.hostname;
    so.session.rcpt = on_rcpt;
    so.session.mail = on_mail;
    so.session.message = on_message;
    so.session.payload = &a->ob;
    if (a->ob.has_ldap) {
        so.session.auth = on_auth;
        so.session.max_auth_failures = 3;
        if (semail_config_get_bool(a->cfg, "outbound", "allow_plaintext_auth", &plain) < 0)
            return cfg_error(a, "outbound", "allow_plaintext_auth");
        so.auth_plaintext = plain;
    }
    if (read_server_limits(a, &so) < 0)
        return -1;
    if (semail_server_new(&a->srv, &so) < 0 || semail_server_listen(a->srv) < 0) {
        fprintf(stderr, "%s: %s\n", NAME, semail_error_last());
        return -1;
    }
    return 0;
}

/* ---- the queue and the delivery threads ---------------------------------- */

/* As root with a [global] user, make the queue directories the user's
 * before dropping to it, so that the daemon can write them. */
static int prepare_queue_dir(const char *dir, const char *user)
{
    static const char *const subdirs[] = {"", "/tmp", "/msg", "/state", "/corrupt"};
    semail_queue *q = NULL;
    struct passwd *pw;
    char path[PATH_MAX];
    size_t i;

    if (user == NULL || user[0] == '\0' || geteuid() != 0)
        return 0;
    if ((pw = getpwnam(user)) == NULL) {
        fprintf(stderr, "%s: [global] user %s: no such user\n", NAME, user);
        return -1;
    }
    if (semail_queue_open(&q, dir, NULL) < 0) {
        fprintf(stderr, "%s: queue %s: %s\n", NAME, dir, semail_error_last());
        return -1;
    }
    semail_queue_free(q);
    for (i = 0; i < sizeof(subdirs) / sizeof(subdirs[0]); i++) {
        int n = snprintf(path, sizeof(path), "%s%s", dir, subdirs[i]);
        if (n < 0 || (size_t)n >= sizeof(path) || chown(path, pw->pw_uid, pw->pw_gid) < 0) {
            fprintf(stderr, "%s: chown %s: %m\n", NAME, path);
            return -1;
        }
    }
    return 0;
}

static int queue_path(char *out, size_t size, const app *a)
{
    int n = snprintf(out, size, "%s/queue", semail_config_get(a->cfg, "global", "state_dir"));
    return (n < 0 || (size_t)n >= size) ? -1 : 0;
}

static int open_queue(app *a)
{
    semail_queue_options qo;
    char dir[PATH_MAX];

    if (queue_path(dir, sizeof(dir), a) < 0) {
        fprintf(stderr, "%s: [global] state_dir: path too long\n", NAME);
        return -1;
    }
    semail_queue_options_init(&qo);
    qo.lock_timeout_ms = 0;
    qo.max_message_size = (uint64_t)a->ob.max_message_size + HEADER_MAX + 65536;
    if (semail_queue_open(&a->ob.queue, dir, &qo) < 0) {
        fprintf(stderr, "%s: queue %s: %s\n", NAME, dir, semail_error_last());
        return -1;
    }
    return 0;
}

static int setup_relay(app *a)
{
    semail_resolver_options ro;
    uint64_t port, workers, connect_ms, command_ms;

    if (cfg_number(a, "outbound", "remote_port", 'u', 65535, &port) < 0 ||
        cfg_number(a, "outbound", "workers", 'u', 256, &workers) < 0 ||
        cfg_number(a, "outbound", "connect_timeout", 'd', UINT_MAX, &connect_ms) < 0 ||
        cfg_number(a, "outbound", "command_timeout", 'd', UINT_MAX / 2, &command_ms) < 0)
        return -1;
    semail_resolver_options_init(&ro);
    ro.server = semail_config_get(a->cfg, "outbound", "resolver");
    if (semail_resolver_new(&a->resolver, &ro) < 0)
        return cfg_error(a, "outbound", "resolver");
    semail_relay_options_init(&a->relay);
    a->relay.hostname = a->ob.hostname;
    a->relay.resolver = a->resolver;
    a->relay.remote_port = (unsigned int)port;
    a->relay.listen = (const char *const *)a->all_listen;
    a->relay.listen_count = a->nlisten + a->nlisten_tls;
    a->relay.retry = &a->retry;
    a->relay.connect_timeout_ms = (unsigned int)connect_ms;
    a->relay.command_timeout_ms = (unsigned int)command_ms;
    a->relay.bounce = on_bounce;
    a->relay.bounce_payload = &a->ob;
    a->relay.log = prog_server_log_cb;
    a->workers = (unsigned int)workers;
    return 0;
}

static int start_pool(app *a)
{
    if (semail_relay_pool_start(&a->ob.pool, &a->relay, a->ob.queue, a->workers) < 0) {
        fprintf(stderr, "%s: %s\n", NAME, semail_error_last());
        return -1;
    }
    return 0;
}

/* ---- main ------------------------------------------------------------------------- */

static void log_listening(app *a)
{
    char line[1024];
    size_t i, used = 0, n = a->nlisten + a->nlisten_tls;

    line[0] = '\0';
    for (i = 0; i < n && used < sizeof(line); i++) {
        const char *l = a->all_listen[i], *colon = strrchr(l, ':');
        int w = snprintf(line + used, sizeof(line) - used, "%s%.*s:%d%s", i ? ", " : "",
                         (int)(colon - l), l, semail_server_port(a->srv, i),
                         i >= a->nlisten ? " (TLS)" : "");
        if (w < 0)
            break;
        used += (size_t)w;
    }
    prog_logf("listening on %s (hostname %s, AUTH %s, %u delivery threads)", line, a->ob.hostname,
              a->ob.has_ldap ? "on" : "off", a->workers ? a->workers : 16);
}

/* Returns -1 when delivery threads are still busy: nothing they use may be freed. */
static int stop_pool(app *a)
{
    if (a->ob.pool == NULL)
        return 0;
    if (semail_relay_pool_stop(a->ob.pool, POOL_GRACE_MS) < 0) {
        prog_logf("stopped: %s; exiting anyway (the queue is crash-safe)", semail_error_last());
        return -1;
    }
    semail_relay_pool_free(a->ob.pool);
    a->ob.pool = NULL;
    return 0;
}

static void teardown(app *a)
{
    prog_signals_join(&a->sig);
    semail_server_free(a->srv);
    semail_queue_free(a->ob.queue);
    semail_resolver_free(a->resolver);
    semail_registry_cache_free(a->ob.cache);
    semail_cidr_list_free(a->ob.trusted);
    explicit_bzero(a->ob.ldap_password, sizeof(a->ob.ldap_password));
    pthread_mutex_destroy(&a->ob.thr.mu);
    free(a->all_listen);
    free(a->schedule);
    semail_config_list_free(a->listen);
    semail_config_list_free(a->listen_tls);
    semail_config_free(a->cfg);
    prog_daemon_log_close();
}

static int run(app *a)
{
    const char *user = semail_config_get(a->cfg, "global", "user");
    char dir[PATH_MAX];

    if (setup_outbound(a) < 0 || setup_relay(a) < 0 || setup_server(a) < 0)
        return -1;
    if (queue_path(dir, sizeof(dir), a) < 0 || prepare_queue_dir(dir, user) < 0)
        return -1;
    if (semail_privileges_drop(user) < 0) {
        fprintf(stderr, "%s: [global] user: %s\n", NAME, semail_error_last());
        return -1;
    }
    if (open_queue(a) < 0 || start_pool(a) < 0 ||
        prog_signals_start(&a->sig, NAME, stop_server, a->srv,
                           "sessions and deliveries in progress may finish") < 0)
        return -1;
    log_listening(a);
    if (semail_server_run(a->srv) < 0) {
        prog_logf("stopped: %s", semail_error_last());
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    prog_common pc = {.name = NAME};
    app *a = calloc(1, sizeof(*a));
    int rc = 1;

    if (a == NULL) {
        fprintf(stderr, "%s: out of memory\n", NAME);
        return 1;
    }
    prog_signals_block(&a->sig);   /* before any thread exists */
    prog_daemon_log_init(NAME, 0); /* [global] log may switch to syslog later */

    prog_parse_common(&pc, argc, argv, usage);
    if (pc.argi < argc) {
        fprintf(stderr, "%s: unexpected argument '%s'\n%s", NAME, argv[pc.argi], usage);
        free(a);
        return 2;
    }
    if ((a->cfg = prog_load_config(&pc)) == NULL) {
        free(a);
        return 1;
    }
    if (run(a) == 0)
        rc = 0;
    if (stop_pool(a) < 0)
        _exit(rc);
    if (rc == 0)
        prog_logf("stopped");
    teardown(a);
    free(a);
    return rc;
}
