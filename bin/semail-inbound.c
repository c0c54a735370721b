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
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
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

/* ---- configuration ----------------------------------------------------------- */

/* Keys unknown to the schema, or empty, take the library's default (0). */
static int cfg_number(const semail_config *cfg, const char *key, char kind, uint64_t max,
                      uint64_t *out)
{
    return prog_cfg_number(cfg, NAME, "inbound", key, kind, max, out);
}

static int read_limits(const semail_config *cfg, semail_server_options *so)
{
    uint64_t size, rcpts, conns, per, cmd_ms, data_ms, errs, pause;

    if (cfg_number(cfg, "max_message_size", 's', SIZE_MAX / 2, &size) < 0 ||
        cfg_number(cfg, "max_recipients", 'u', UINT_MAX, &rcpts) < 0 ||
        cfg_number(cfg, "max_connections", 'u', UINT_MAX, &conns) < 0 ||
        cfg_number(cfg, "max_connections_per_client", 'u', UINT_MAX, &per) < 0 ||
        cfg_number(cfg, "command_timeout", 'd', INT_MAX, &cmd_ms) < 0 ||
        cfg_number(cfg, "data_timeout", 'd', INT_MAX, &data_ms) < 0 ||
        cfg_number(cfg, "max_errors", 'u', UINT_MAX, &errs) < 0 ||
        cfg_number(cfg, "greet_pause_ms", 'u', UINT_MAX, &pause) < 0)
        return -1;
    so->pregreet_ms = (unsigned int)pause;
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
        prog_logf("registry: %s", semail_error_last());
        return err;
    }
    if (semail_error_last_code() != 0)
        prog_logf("registry: reload failed, still using the previous one: %s", semail_error_last());
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

/* The message goes to the recipients' boxes through the library's local
 * delivery (include/semail/deliver.h), the code semail-outbound uses for
 * bounces too; its log lines come here. */
static int on_message(semail_reply *reply, const semail_envelope *env, const char *data, size_t len,
                      void *payload)
{
    inbound *ib = payload;
    semail_deliver_local_options o;
    const semail_registry *reg;
    int err;

    semail_deliver_local_options_init(&o);
    o.mail_root = ib->mail_root;
    o.hostname = ib->hostname;
    o.domain = ib->domain;
    o.log = prog_server_log_cb;
    if ((err = acquire(&reg, ib)) < 0)
        return err;
    err = semail_deliver_local(reply, &o, reg, env, data, len);
    semail_registry_cache_release(ib->cache, reg);
    return err;
}

/* ---- signals ------------------------------------------------------------------- */

/* SIGTERM and SIGINT stop the server (prog_signals_start). */
static void stop_server(void *srv)
{
    semail_server_stop(srv);
}

/* One descriptor per connection: take the whole hard limit, so that
 * max_connections and not a soft limit of 1024 decides who gets a 421. */
static void raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            prog_logf("cannot raise the descriptor limit to %llu", (unsigned long long)rl.rlim_max);
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
    prog_logf("listening on %s (hostname %s)", line, hostname);
}

/* Everything main() sets up, torn down in one place. */
typedef struct app {
    semail_config *cfg;
    char **listen;
    size_t nlisten;
    inbound ib;
    semail_server *srv;
    prog_signals sig;
} app;

static int setup_inbound(app *a)
{
    const char *state_dir = semail_config_get(a->cfg, "global", "state_dir");
    const char *log = semail_config_get(a->cfg, "global", "log");

    a->ib.hostname = semail_config_get(a->cfg, "global", "hostname");
    a->ib.mail_root = semail_config_get(a->cfg, "global", "mail_root");
    lower_copy(a->ib.domain, sizeof(a->ib.domain), semail_config_get(a->cfg, "global", "domain"));
    prog_daemon_log_init(NAME, log && strcmp(log, "syslog") == 0);
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
    so.log = prog_server_log_cb;
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

static void teardown(app *a)
{
    prog_signals_join(&a->sig);
    semail_server_free(a->srv);
    semail_registry_cache_free(a->ib.cache);
    semail_config_list_free(a->listen);
    semail_config_free(a->cfg);
    prog_daemon_log_close();
}

int main(int argc, char **argv)
{
    prog_common pc = {.name = NAME};
    app a;
    const char *user;
    int rc = 1;

    memset(&a, 0, sizeof(a));
    prog_signals_block(&a.sig);    /* before any thread exists */
    prog_daemon_log_init(NAME, 0); /* [global] log may switch to syslog later */

    prog_parse_common(&pc, argc, argv, usage);
    if (pc.argi < argc) {
        fprintf(stderr, "%s: unexpected argument '%s'\n%s", NAME, argv[pc.argi], usage);
        return 2;
    }
    if ((a.cfg = prog_load_config(&pc)) == NULL)
        return 1;
    raise_nofile();
    if (setup_inbound(&a) < 0 || setup_server(&a) < 0)
        goto done;
    user = semail_config_get(a.cfg, "global", "user");
    if (semail_privileges_drop(user) < 0) {
        fprintf(stderr, "%s: [global] user: %s\n", NAME, semail_error_last());
        goto done;
    }
    if (prog_signals_start(&a.sig, NAME, stop_server, a.srv, "sessions in progress may finish") < 0)
        goto done;
    log_listening(a.srv, a.listen, a.nlisten, a.ib.hostname);
    if (semail_server_run(a.srv) < 0) {
        prog_logf("stopped: %s", semail_error_last());
        goto done;
    }
    prog_logf("stopped");
    rc = 0;
done:
    teardown(&a);
    return rc;
}
