/*
 * mini-mta.c - a complete, small mail server built on libsemail.
 *
 *   mini-mta PORT DOMAIN DIR
 *
 * listens on 127.0.0.1:PORT and accepts mail for any LOCAL@DOMAIN whose
 * local part is a plain name ([a-z0-9._-], see semail_validate_name()),
 * appending each message to the mbox DIR/LOCAL. Everything else is refused.
 * Ctrl-C or SIGTERM stops it after the sessions in progress have finished.
 *
 * What it shows: the server runtime (semail_server_*) runs the SMTP
 * sessions; the program only answers two questions through callbacks:
 * "may this recipient receive mail?" and "here is a message: store it".
 *
 * Try it:
 *   mkdir /tmp/mail && ./example-mini-mta 2525 example.test /tmp/mail &
 *   swaks --server 127.0.0.1:2525 --to joe@example.test --from me@example.org
 *   mutt -f /tmp/mail/joe
 */
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "semail/semail.h"

/* What the callbacks need; shared read-only by every session thread. */
struct mta {
    const char *domain;
    const char *dir;
};

/* The signal handler needs the server; semail_server_stop() is async-signal-safe. */
static semail_server *volatile running_server;

static void on_signal(int sig)
{
    (void)sig;
    if (running_server)
        semail_server_stop(running_server);
}

/* The local part in lower case, if it can safely be a file name in DIR. */
static int mailbox_name(char *out, size_t size, const struct mta *m, const semail_address *a)
{
    size_t i, n = strlen(a->local);

    if (strcasecmp(a->domain, m->domain) != 0 || n >= size)
        return -1;
    for (i = 0; i <= n; i++)
        out[i] = (a->local[i] >= 'A' && a->local[i] <= 'Z') ? a->local[i] + 32 : a->local[i];
    return semail_validate_name(out) == 0 ? 0 : -1;
}

/* RCPT TO: accept only LOCAL@DOMAIN with a plain local part. */
static int on_rcpt(semail_reply *reply, const semail_envelope *env, const semail_address *rcpt,
                   void *payload)
{
    char name[SEMAIL_LOCAL_MAX + 1];

    (void)env;
    if (mailbox_name(name, sizeof(name), payload, rcpt) < 0)
        semail_reply_set(reply, 550, "5.1.1", "No such user here");
    else
        semail_reply_set(reply, 250, "2.1.5", "Ok");
    return 0;
}

/* End of DATA: append the message to every recipient's mbox, all or none. */
static int on_message(semail_reply *reply, const semail_envelope *env, const char *data, size_t len,
                      void *payload)
{
    const struct mta *m = payload;
    char sender[SEMAIL_PATH_MAX + 3], prepend[SEMAIL_PATH_MAX + 32], path[PATH_MAX];
    char name[SEMAIL_LOCAL_MAX + 1];
    semail_mbox_message msg = {0};
    semail_mbox_txn *txn = NULL;
    size_t i;
    int err;

    if (env->sender->is_null || semail_address_format(sender, sizeof(sender), env->sender) < 0)
        sender[0] = '\0';
    snprintf(prepend, sizeof(prepend), "Return-Path: <%s>\n", sender);
    msg.sender = sender;
    msg.prepend = prepend;
    msg.prepend_len = strlen(prepend);
    msg.data = data;
    msg.data_len = len;

    /* Nothing is written before commit; commit writes every file or none. */
    if ((err = semail_mbox_txn_new(&txn, NULL)) < 0)
        return err; /* the session answers 451 4.3.0 */
    for (i = 0; i < env->rcpt_count && err == 0; i++) {
        if (mailbox_name(name, sizeof(name), m, &env->rcpts[i]) < 0 ||
            snprintf(path, sizeof(path), "%s/%s", m->dir, name) >= (int)sizeof(path))
            err = SEMAIL_EINVAL;
        else
            err = semail_mbox_txn_add(txn, path, &msg);
    }
    if (err == 0)
        err = semail_mbox_txn_commit(txn);
    semail_mbox_txn_free(txn);

    if (err == 0)
        semail_reply_set(reply, 250, "2.0.0", "Ok: queued as %s", env->txn_id);
    else if (err == SEMAIL_EFULL)
        semail_reply_set(reply, 452, "4.2.2", "Mailbox full");
    else
        semail_reply_set(reply, 451, "4.3.0", "Local delivery failed, try again later");
    fprintf(stderr, "mini-mta: %s from <%s>: %d %s\n", env->txn_id, sender, reply->code,
            err ? semail_error_last() : "stored");
    return 0;
}

int main(int argc, char **argv)
{
    struct mta m;
    char listen[64];
    const char *addrs[1] = {listen};
    semail_server_options opts;
    semail_server *srv = NULL;
    struct sigaction sa;

    if (argc != 4) {
        fprintf(stderr, "usage: %s PORT DOMAIN DIR\n", argv[0]);
        return 2;
    }
    m.domain = argv[2];
    m.dir = argv[3];
    snprintf(listen, sizeof(listen), "127.0.0.1:%.8s", argv[1]);

    semail_server_options_init(&opts);
    opts.listen = addrs;
    opts.listen_count = 1;
    opts.name = "mini-mta";
    opts.session.hostname = "localhost";
    opts.session.rcpt = on_rcpt;
    opts.session.message = on_message;
    opts.session.payload = &m;

    if (semail_server_new(&srv, &opts) < 0 || semail_server_listen(srv) < 0) {
        fprintf(stderr, "mini-mta: %s\n", semail_error_last());
        semail_server_free(srv);
        return 1;
    }

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    running_server = srv;

    fprintf(stderr, "mini-mta: mail for *@%s goes to %s/, listening on 127.0.0.1:%d\n", m.domain,
            m.dir, semail_server_port(srv, 0));
    if (semail_server_run(srv) < 0)
        fprintf(stderr, "mini-mta: %s\n", semail_error_last());
    running_server = NULL;
    semail_server_free(srv);
    return 0;
}
