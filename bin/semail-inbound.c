/*
 * semail-inbound - the MX of the platform: accept mail for the addresses in
 * the registry, never relay, deliver to the recipients' mboxes.
 *
 * Contract: reads the configuration ([global], [inbound]), binds every
 * listen address, drops to [global] user, then serves until SIGTERM or
 * SIGINT, after which it lets the sessions finish (bounded by the grace
 * time) and exits 0. Exit 1: bad configuration, a bind or a privilege drop
 * that failed; exit 2: bad usage. A recipient is accepted only when its
 * domain is ours and an active box has its address; a message is appended,
 * for each distinct box, to INBOX and to the `<recipient>,<sender>` folder,
 * all boxes in one all-or-nothing mbox transaction, before the 250.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "prog.h"

#define NAME "semail-inbound"

static const char usage[] =
    "usage: semail-inbound [-c FILE] [-t] [--version] [--help]\n"
    "  -c, --config FILE     configuration file (default: $SEMAIL_CONFIG "
    "or " SEMAIL_CONFIG_DEFAULT_PATH ")\n"
    "  -t, --check-config    check the configuration and exit\n"
    "  --version             print the version and exit\n"
    "  --help                print this help and exit\n"
    "Receives mail for the addresses of the registry and stays in the foreground;\n"
    "SIGTERM or SIGINT stops it gracefully (exit 0).\n";

/* What the callbacks share: immutable after start, except the cache (thread-safe). */
typedef struct inbound {
    const char *hostname;
    char domain[SEMAIL_DOMAIN_MAX + 1]; /* the platform's domain, lower case */
    const char *mail_root;
    semail_registry_cache *cache;
    int use_syslog;
} inbound;

/* ---- logging --------------------------------------------------------------- */

static int g_syslog; /* set once in main before any thread */

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (g_syslog)
        vsyslog(LOG_MAIL | LOG_INFO, fmt, ap);
    else
        prog_vlog(NAME, fmt, ap);
    va_end(ap);
}

static void server_log_cb(const char *line, void *payload)
{
    (void)payload;
    logf_("%s", line);
}

/* ---- configuration ----------------------------------------------------------- */

/* Keys unknown to the schema, or empty, take the library's default (0). */
static int cfg_number(const semail_config *cfg, const char *key, char kind, uint64_t max,
                      uint64_t *out)
{
    const char *v = semail_config_get(cfg, "inbound", key);
    int err;

    *out = 0;
    if (v == NULL || v[0] == '\0')
        return 0;
    if (kind == 's')
        err = semail_config_get_size(cfg, "inbound", key, out);
    else if (kind == 'd')
        err = semail_config_get_duration_ms(cfg, "inbound", key, out);
    else
        err = semail_config_get_uint(cfg, "inbound", key, out);
    if (err < 0) {
        fprintf(stderr, "%s: %s: [inbound] %s: %s\n", NAME, semail_config_path(cfg), key,
                semail_error_last());
        return -1;
    }
    if (*out > max) {
        fprintf(stderr, "%s: %s: [inbound] %s: at most %llu\n", NAME, semail_config_path(cfg), key,
                (unsigned long long)max);
        return -1;
    }
    return 0;
}

static int read_limits(const semail_config *cfg, semail_server_options *so)
{
    uint64_t size, rcpts, conns, per, cmd_ms, data_ms, errs;

    if (cfg_number(cfg, "max_message_size", 's', SIZE_MAX / 2, &size) < 0 ||
        cfg_number(cfg, "max_recipients", 'u', UINT_MAX, &rcpts) < 0 ||
        cfg_number(cfg, "max_connections", 'u', UINT_MAX, &conns) < 0 ||
        cfg_number(cfg, "max_connections_per_client", 'u', UINT_MAX, &per) < 0 ||
        cfg_number(cfg, "command_timeout", 'd', INT_MAX, &cmd_ms) < 0 ||
        cfg_number(cfg, "data_timeout", 'd', INT_MAX, &data_ms) < 0 ||
        cfg_number(cfg, "max_errors", 'u', UINT_MAX, &errs) < 0)
        return -1;
    so->session.max_message_size = (size_t)size;
    so->session.max_recipients = (unsigned int)rcpts;
    so->session.max_errors = (unsigned int)errs;
    so->max_connections = (unsigned int)conns;
    so->max_per_client = (unsigned int)per;
    so->timeout_ms = (unsigned int)cmd_ms;
    so->data_timeout_ms = (unsigned int)data_ms;
    return 0;
}

static void lower_copy(char *dst, size_t size, const char *src)
{
    size_t i;
    for (i = 0; src[i] && i + 1 < size; i++)
        dst[i] = (char)((src[i] >= 'A' && src[i] <= 'Z') ? src[i] + ('a' - 'A') : src[i]);
    dst[i] = '\0';
}

/* ---- recipients -------------------------------------------------------------- */

static int is_ours(const inbound *ib, const semail_registry *reg, const char *domain)
{
    size_t dl = strlen(domain), ol = strlen(ib->domain);

    if (strcmp(domain, ib->domain) == 0)
        return 1;
    if (dl > ol + 1 && domain[dl - ol - 1] == '.' && strcmp(domain + dl - ol, ib->domain) == 0)
        return 1;
    return semail_registry_has_domain(reg, domain);
}

/* The lower-case domain a recipient is looked up under: <Postmaster> is
 * postmaster at the platform's domain. Returns 0, or -1 when the address
 * can only be a relay attempt. */
static int rcpt_domain(char *out, size_t size, const inbound *ib, const semail_address *rcpt)
{
    if (strpbrk(rcpt->local, "%!@") != NULL)
        return -1;
    if (rcpt->domain[0] == '\0') {
        if (strcasecmp(rcpt->local, "postmaster") != 0)
            return -1;
        lower_copy(out, size, ib->domain);
        return 0;
    }
    if (rcpt->domain[0] == '[')
        return -1;
    lower_copy(out, size, rcpt->domain);
    return 0;
}

/* Take the newest registry snapshot; log a reload that failed. */
static int acquire(const semail_registry **reg, inbound *ib)
{
    int err;

    semail_error_clear();
    if ((err = semail_registry_cache_acquire(reg, ib->cache)) < 0) {
        logf_("registry: %s", semail_error_last());
        return err;
    }
    if (semail_error_last_code() != 0)
        logf_("registry: reload failed, still using the previous one: %s", semail_error_last());
    return 0;
}

static int on_rcpt(semail_reply *reply, const semail_envelope *env, const semail_address *rcpt,
                   void *payload)
{
    inbound *ib = payload;
    char domain[SEMAIL_DOMAIN_MAX + 1], addr[SEMAIL_PATH_MAX + 3];
    const semail_registry *reg;
    const semail_user *u;
    int err;

    (void)env;
    if (rcpt_domain(domain, sizeof(domain), ib, rcpt) < 0) {
        semail_reply_set(reply, 550, "5.7.1", "Relaying denied");
        return 0;
    }
    if ((err = acquire(&reg, ib)) < 0)
        return err;
    if (!is_ours(ib, reg, domain)) {
        semail_reply_set(reply, 550, "5.7.1", "Relaying denied");
    } else if (semail_registry_find_address(&u, reg, rcpt->local, domain) == 0) {
        semail_reply_set(reply, 250, "2.1.5", "Ok");
    } else {
        if (semail_address_format(addr, sizeof(addr), rcpt) < 0)
            addr[0] = '\0';
        semail_reply_set(reply, 550, "5.1.1", "<%s>: Recipient address rejected: User unknown",
                         addr);
    }
    semail_registry_cache_release(ib->cache, reg);
    return 0;
}

/* ---- delivery ---------------------------------------------------------------- */

/* One box of a transaction: its record and what is appended to it. */
typedef struct box {
    const semail_user *user;
    char address[SEMAIL_PATH_MAX + 3]; /* id@domain, as registered */
    char prepend[2048];                /* every part is bounded: see build_prepend() */
    semail_mbox_message msg;
} box;

/* A transaction being delivered, on the heap: the session thread's stack is small. */
typedef struct delivery {
    inbound *ib;
    const semail_envelope *env;
    const semail_registry *reg;
    box *boxes;
    size_t nbox;
    char sender[SEMAIL_PATH_MAX + 3]; /* "" for <> */
    char date[64];                    /* RFC 5322 */
    char helo[SEMAIL_DOMAIN_MAX + 1]; /* printable ASCII only */
    char path[PATH_MAX];
    char folder[SEMAIL_MBOX_FOLDER_MAX];
    char reason[512]; /* why a delivery failed, for the log only */
    time_t now;
} delivery;

static void rfc5322_date(char *out, size_t size, time_t t)
{
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;

    gmtime_r(&t, &tm);
    snprintf(out, size, "%s, %d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday], tm.tm_mday,
             months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* The box that receives RCPT, or NULL (deleted since RCPT was answered). */
static const semail_user *find_box(delivery *d, const semail_address *rcpt)
{
    char domain[SEMAIL_DOMAIN_MAX + 1];
    const semail_user *u;

    if (rcpt_domain(domain, sizeof(domain), d->ib, rcpt) < 0 ||
        semail_registry_find_address(&u, d->reg, rcpt->local, domain) < 0)
        return NULL;
    return u;
}

/* Collect the distinct boxes of the recipients. Returns 0 or -1 (REPLY set). */
static int collect_boxes(delivery *d, semail_reply *reply)
{
    size_t i, j;

    for (i = 0; i < d->env->rcpt_count; i++) {
        const semail_user *u = find_box(d, &d->env->rcpts[i]);
        if (u == NULL) {
            semail_reply_set(reply, 451, "4.3.0", "Local delivery failed, try again later");
            logf_("%s: recipient %s@%s has no box any more", d->env->txn_id, d->env->rcpts[i].local,
                  d->env->rcpts[i].domain);
            return -1;
        }
        for (j = 0; j < d->nbox && strcmp(d->boxes[j].user->login, u->login) != 0; j++)
            ;
        if (j < d->nbox)
            continue; /* the same box twice: delivered once */
        d->boxes[d->nbox].user = u;
        snprintf(d->boxes[d->nbox].address, sizeof(d->boxes[0].address), "%s@%s", u->id, u->domain);
        d->nbox++;
    }
    return 0;
}

static int build_prepend(delivery *d, box *b)
{
    const semail_envelope *env = d->env;
    int n;

    /* Sender and address <= 258, helo and hostname <= 255, the rest short. */
    n = snprintf(b->prepend, sizeof(b->prepend),
                 "Return-Path: <%s>\nReceived: from %s (%s) by %s (SEMail) with %s id "
                 "%.64s\n\tfor <%s>; %s\n",
                 d->sender, d->helo, env->client_addr ? env->client_addr : "unknown",
                 d->ib->hostname, env->esmtp ? "ESMTP" : "SMTP", env->txn_id, b->address, d->date);
    if (n < 0 || (size_t)n >= sizeof(b->prepend))
        return -1;
    b->msg.sender = d->sender;
    b->msg.date = d->now;
    b->msg.prepend = b->prepend;
    b->msg.prepend_len = (size_t)n;
    return 0;
}

/* Create a missing mbox as the box's owner. One transaction holds the
 * appends of several boxes but has one owner option, so files are made
 * here with the right owner; the append itself never creates them then.
 * The new entry is made durable here, since the append will find the file
 * existing and fsync only its data. A rolled-back delivery leaves the
 * empty file behind: an empty mbox is a valid, empty folder. */
static void precreate(const char *path, const semail_user *u)
{
    int fd, dfd;
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');

    if (geteuid() != 0)
        return;
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return; /* exists, or the append reports the error */
    if (fchown(fd, u->uid, u->gid) < 0)
        logf_("chown %s: %s", path, strerror(errno));
    close(fd);
    if (slash == NULL || (size_t)(slash - path) >= sizeof(dir))
        return;
    memcpy(dir, path, (size_t)(slash - path));
    dir[slash - path] = '\0';
    if ((dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
        if (fsync(dfd) < 0 && errno != EINVAL)
            logf_("fsync %s: %s", dir, strerror(errno));
        close(dfd);
    }
}

static int join_path(char *out, size_t size, const char *a, const char *b, const char *c)
{
    int n = snprintf(out, size, "%s/%s/%s", a, b, c);
    return (n < 0 || (size_t)n >= size) ? -1 : 0;
}

static int path_too_long(delivery *d)
{
    snprintf(d->reason, sizeof(d->reason), "mbox path too long under %s", d->ib->mail_root);
    return SEMAIL_ETOOBIG;
}

static int add_appends(delivery *d, semail_mbox_txn *txn, box *b, const char *data, size_t len)
{
    int err;

    b->msg.data = data;
    b->msg.data_len = len;
    if (join_path(d->path, sizeof(d->path), d->ib->mail_root, b->user->login, "INBOX") < 0)
        return path_too_long(d);
    precreate(d->path, b->user);
    if ((err = semail_mbox_txn_add(txn, d->path, &b->msg)) < 0)
        return err;
    if ((err = semail_mbox_folder_name(d->folder, sizeof(d->folder), b->address, d->sender)) < 0)
        return err;
    if (join_path(d->path, sizeof(d->path), d->ib->mail_root, b->user->login, d->folder) < 0)
        return path_too_long(d);
    precreate(d->path, b->user);
    return semail_mbox_txn_add(txn, d->path, &b->msg);
}

static int deliver(delivery *d, const char *data, size_t len)
{
    semail_mbox_txn *txn = NULL;
    size_t i;
    int err;

    semail_mbox_options mopts;

    /* Not root ([global] user set): new mboxes are group-readable and
     * -writable, the mail directory's group and default ACL do the rest. */
    semail_mbox_options_init(&mopts);
    if (geteuid() != 0)
        mopts.file_mode = 0660;
    if ((err = semail_mbox_txn_new(&txn, &mopts)) < 0)
        return err;
    for (i = 0; i < d->nbox && err == 0; i++) {
        if (build_prepend(d, &d->boxes[i]) < 0) {
            snprintf(d->reason, sizeof(d->reason), "headers too long");
            err = SEMAIL_ETOOBIG;
        } else
            err = add_appends(d, txn, &d->boxes[i], data, len);
    }
    if (err == 0)
        err = semail_mbox_txn_commit(txn);
    if (err < 0 && d->reason[0] == '\0')
        snprintf(d->reason, sizeof(d->reason), "%s", semail_error_last());
    semail_mbox_txn_free(txn);
    return err;
}

static void map_result(semail_reply *reply, int err, const char *txn_id)
{
    if (err == 0)
        semail_reply_set(reply, 250, "2.0.0", "Ok: queued as %s", txn_id);
    else if (err == SEMAIL_EFULL)
        semail_reply_set(reply, 452, "4.2.2", "Mailbox full");
    else if (err == SEMAIL_ELOCKED)
        semail_reply_set(reply, 451, "4.2.0", "Mailbox locked, try again later");
    else
        semail_reply_set(reply, 451, "4.3.0", "Local delivery failed, try again later");
}

static void log_delivery(const delivery *d, const semail_reply *reply, size_t len,
                         const char *reason)
{
    char to[1024];
    size_t i, n = 0;

    to[0] = '\0';
    for (i = 0; i < d->nbox && n < sizeof(to); i++) {
        int w = snprintf(to + n, sizeof(to) - n, "%s<%s>", i ? "," : "", d->boxes[i].address);
        if (w < 0)
            break;
        n += (size_t)w;
    }
    logf_("%s: client=%s from=<%s> to=%s size=%zu result=%d %s%s%s", d->env->txn_id,
          d->env->client_addr ? d->env->client_addr : "unknown", d->sender, to, len, reply->code,
          reply->enhanced, reason ? " reason=" : "", reason ? reason : "");
}

static void clean_helo(char *out, size_t size, const char *helo)
{
    size_t i;
    for (i = 0; helo && helo[i] && i + 1 < size; i++) {
        unsigned char c = (unsigned char)helo[i];
        out[i] = (c > 0x20 && c < 0x7f) ? (char)c : '?';
    }
    out[i] = '\0';
}

static int on_message(semail_reply *reply, const semail_envelope *env, const char *data, size_t len,
                      void *payload)
{
    delivery *d = calloc(1, sizeof(*d));
    int err = 0;

    if (d == NULL ||
        (d->boxes = calloc(env->rcpt_count ? env->rcpt_count : 1, sizeof(box))) == NULL) {
        free(d);
        return SEMAIL_ENOMEM;
    }
    d->ib = payload;
    d->env = env;
    d->now = time(NULL);
    rfc5322_date(d->date, sizeof(d->date), d->now);
    clean_helo(d->helo, sizeof(d->helo), env->helo);
    if (env->sender->is_null ||
        semail_address_format(d->sender, sizeof(d->sender), env->sender) < 0)
        d->sender[0] = '\0';
    if ((err = acquire(&d->reg, d->ib)) < 0)
        goto done;
    if (collect_boxes(d, reply) < 0) {
        log_delivery(d, reply, len, "a recipient has no box any more");
        goto done;
    }
    err = deliver(d, data, len);
    map_result(reply, err, env->txn_id);
    log_delivery(d, reply, len, err < 0 ? d->reason : NULL);
    err = 0;
done:
    if (d->reg)
        semail_registry_cache_release(d->ib->cache, d->reg);
    free(d->boxes);
    free(d);
    return err;
}

/* ---- signals ------------------------------------------------------------------- */

/* SIGTERM and SIGINT stop the server; SIGHUP only says that nothing is needed.
 * The signals are blocked in every thread and taken here with sigwait(). */
typedef struct sigctx {
    semail_server *srv;
    sigset_t set;
    atomic_int done;
} sigctx;

static void *signal_main(void *arg)
{
    sigctx *sc = arg;
    int sig;

    for (;;) {
        if (sigwait(&sc->set, &sig) != 0)
            continue;
        if (atomic_load(&sc->done))
            return NULL;
        if (sig == SIGHUP) {
            logf_("SIGHUP: nothing to do, the registry is re-read automatically when it changes");
        } else {
            logf_("%s: stopping (sessions in progress may finish)",
                  sig == SIGTERM ? "SIGTERM" : "SIGINT");
            semail_server_stop(sc->srv);
        }
    }
}

/* ---- main ------------------------------------------------------------------------- */

/* "HOST:PORT" of listener I with the port actually bound. */
static void log_listening(semail_server *srv, char **listen, size_t n, const char *hostname)
{
    char line[1024];
    size_t i, used = 0;

    line[0] = '\0';
    for (i = 0; i < n && used < sizeof(line); i++) {
        const char *colon = strrchr(listen[i], ':');
        int w = snprintf(line + used, sizeof(line) - used, "%s%.*s:%d", i ? ", " : "",
                         (int)(colon - listen[i]), listen[i], semail_server_port(srv, i));
        if (w < 0)
            break;
        used += (size_t)w;
    }
    logf_("listening on %s (hostname %s)", line, hostname);
}

/* Everything main() sets up, torn down in one place. */
typedef struct app {
    semail_config *cfg;
    char **listen;
    size_t nlisten;
    inbound ib;
    semail_server *srv;
    sigctx sc;
    pthread_t sig_thread;
    int sig_started;
} app;

static int setup_inbound(app *a)
{
    const char *state_dir = semail_config_get(a->cfg, "global", "state_dir");
    const char *log = semail_config_get(a->cfg, "global", "log");

    a->ib.hostname = semail_config_get(a->cfg, "global", "hostname");
    a->ib.mail_root = semail_config_get(a->cfg, "global", "mail_root");
    lower_copy(a->ib.domain, sizeof(a->ib.domain), semail_config_get(a->cfg, "global", "domain"));
    if (log && strcmp(log, "syslog") == 0) {
        openlog(NAME, LOG_PID | LOG_NDELAY, LOG_MAIL);
        g_syslog = 1;
    }
    if (semail_registry_cache_new(&a->ib.cache, state_dir) < 0) {
        fprintf(stderr, "%s: registry in %s: %s\n", NAME, state_dir, semail_error_last());
        return -1;
    }
    if (semail_config_get_list(a->cfg, "inbound", "listen", &a->listen, &a->nlisten) < 0 ||
        a->nlisten == 0) {
        fprintf(stderr, "%s: %s: [inbound] listen: no address\n", NAME, semail_config_path(a->cfg));
        return -1;
    }
    return 0;
}

static int setup_server(app *a)
{
    semail_server_options so;

    semail_server_options_init(&so);
    so.listen = (const char *const *)a->listen;
    so.listen_count = a->nlisten;
    so.name = NAME;
    so.log = server_log_cb;
    so.session.hostname = a->ib.hostname;
    so.session.rcpt = on_rcpt;
    so.session.message = on_message;
    so.session.payload = &a->ib;
    if (read_limits(a->cfg, &so) < 0)
        return -1;
    if (semail_server_new(&a->srv, &so) < 0 || semail_server_listen(a->srv) < 0) {
        fprintf(stderr, "%s: %s\n", NAME, semail_error_last());
        return -1;
    }
    return 0;
}

static int start_signals(app *a)
{
    int r;

    a->sc.srv = a->srv;
    atomic_init(&a->sc.done, 0);
    if ((r = pthread_create(&a->sig_thread, NULL, signal_main, &a->sc)) != 0) {
        fprintf(stderr, "%s: cannot start the signal thread: %s\n", NAME, strerror(r));
        return -1;
    }
    a->sig_started = 1;
    return 0;
}

static void teardown(app *a)
{
    if (a->sig_started) {
        atomic_store(&a->sc.done, 1);
        pthread_kill(a->sig_thread, SIGHUP);
        pthread_join(a->sig_thread, NULL);
    }
    semail_server_free(a->srv);
    semail_registry_cache_free(a->ib.cache);
    semail_config_list_free(a->listen);
    semail_config_free(a->cfg);
    if (g_syslog)
        closelog();
}

int main(int argc, char **argv)
{
    prog_common pc = {.name = NAME};
    app a;
    const char *user;
    int rc = 1;

    memset(&a, 0, sizeof(a));
    /* Before any thread exists, so that every thread inherits the mask. */
    sigemptyset(&a.sc.set);
    sigaddset(&a.sc.set, SIGTERM);
    sigaddset(&a.sc.set, SIGINT);
    sigaddset(&a.sc.set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &a.sc.set, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* Past RLIMIT_FSIZE a write must fail with EFBIG (a 4xx), not kill us. */
    signal(SIGXFSZ, SIG_IGN);

    prog_parse_common(&pc, argc, argv, usage);
    if (pc.argi < argc) {
        fprintf(stderr, "%s: unexpected argument '%s'\n%s", NAME, argv[pc.argi], usage);
        return 2;
    }
    if ((a.cfg = prog_load_config(&pc)) == NULL)
        return 1;
    if (setup_inbound(&a) < 0 || setup_server(&a) < 0)
        goto done;
    user = semail_config_get(a.cfg, "global", "user");
    if (semail_privileges_drop(user) < 0) {
        fprintf(stderr, "%s: [global] user: %s\n", NAME, semail_error_last());
        goto done;
    }
    if (start_signals(&a) < 0)
        goto done;
    log_listening(a.srv, a.listen, a.nlisten, a.ib.hostname);
    if (semail_server_run(a.srv) < 0) {
        logf_("stopped: %s", semail_error_last());
        goto done;
    }
    logf_("stopped");
    rc = 0;
done:
    teardown(&a);
    return rc;
}
