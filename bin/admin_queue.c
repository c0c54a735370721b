/*
 * admin_queue.c - `semail-admin queue list [--json] | flush | delete QID`
 * on the live queue of semail-outbound (STATE_DIR/queue).
 *
 * Contract: list takes no lock and works while the daemon delivers (a
 * message being delivered is shown with its last written state); flush
 * only writes the queue's flush file, which the daemon polls about every
 * second; delete waits a little for a message being delivered, then says
 * so and exits 1. A queue directory that does not exist yet is an empty
 * queue (list and delete do not create it).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "admin_queue.h"

#define NAME            "semail-admin"
#define DELETE_TRIES    5
#define DELETE_PAUSE_MS 400

static int queue_dir(char *out, size_t size, const semail_config *cfg)
{
    int n = snprintf(out, size, "%s/queue", semail_config_get(cfg, "global", "state_dir"));
    return (n < 0 || (size_t)n >= size) ? -1 : 0;
}

static int queue_exists(const char *dir)
{
    struct stat st;
    return stat(dir, &st) == 0;
}

/* ---- list ------------------------------------------------------------------------- */

static const char *state_name(semail_queue_rcpt_state s)
{
    return s == SEMAIL_QUEUE_DELIVERED ? "delivered"
           : s == SEMAIL_QUEUE_FAILED  ? "failed"
                                       : "pending";
}

static void iso_time(char *out, size_t size, int64_t ms)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;

    if (ms <= 0 || gmtime_r(&t, &tm) == NULL || strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, size, "-");
}

static void json_str(const char *s)
{
    putchar('"');
    for (; s && *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20 || ch == 0x7f)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

typedef struct list_ctx {
    int json;
    size_t count;
} list_ctx;

static void print_json_rcpt(const semail_queue_rcpt *r)
{
    fputs("{\"address\":", stdout);
    json_str(r->address);
    printf(",\"state\":\"%s\",\"notified\":%s,\"code\":%d,\"enhanced\":", state_name(r->state),
           r->notified ? "true" : "false", r->result.code);
    json_str(r->result.enhanced);
    fputs(",\"text\":", stdout);
    json_str(r->result.text);
    fputs(",\"remote_host\":", stdout);
    json_str(r->result.remote_host);
    putchar('}');
}

static void print_json(const semail_queue_info *info)
{
    char arrival[32], next[32];
    size_t i;

    iso_time(arrival, sizeof(arrival), info->arrival_ms);
    iso_time(next, sizeof(next), info->next_attempt_ms);
    printf("{\"qid\":\"%s\",\"arrival\":\"%s\",\"arrival_ms\":%lld,\"size\":%llu,\"sender\":",
           info->qid, arrival, (long long)info->arrival_ms, (unsigned long long)info->size);
    json_str(info->sender);
    printf(",\"attempts\":%u,\"next_attempt\":\"%s\",\"next_attempt_ms\":%lld,"
           "\"last_attempt_ms\":%lld,\"recipients\":[",
           info->attempts, next, (long long)info->next_attempt_ms,
           (long long)info->last_attempt_ms);
    for (i = 0; i < info->rcpt_count; i++) {
        if (i)
            putchar(',');
        print_json_rcpt(&info->rcpts[i]);
    }
    fputs("]}", stdout);
}

static void print_text(const semail_queue_info *info)
{
    char arrival[32], next[32];
    size_t i;

    iso_time(arrival, sizeof(arrival), info->arrival_ms);
    iso_time(next, sizeof(next), info->next_attempt_ms);
    printf("%-18s  %10llu  %s  attempts=%u  next=%s  <%s>\n", info->qid,
           (unsigned long long)info->size, arrival, info->attempts, next, info->sender);
    for (i = 0; i < info->rcpt_count; i++) {
        const semail_queue_rcpt *r = &info->rcpts[i];
        printf("    %-9s  %s", state_name(r->state), r->address);
        if (r->result.code)
            printf("  (%d %s %s)", r->result.code, r->result.enhanced, r->result.text);
        else if (r->result.text[0])
            printf("  (%s)", r->result.text);
        putchar('\n');
    }
}

static int list_cb(const semail_queue_info *info, void *payload)
{
    list_ctx *lc = payload;

    if (lc->json) {
        if (lc->count)
            putchar(',');
        print_json(info);
    } else {
        if (lc->count == 0)
            printf("%-18s  %10s  %-20s  %s\n", "QID", "SIZE", "ARRIVAL", "SENDER / RECIPIENTS");
        print_text(info);
    }
    lc->count++;
    return 0;
}

static int cmd_list(const char *dir, int json)
{
    semail_queue *q = NULL;
    list_ctx lc = {json, 0};
    int err = 0;

    if (json)
        putchar('[');
    if (queue_exists(dir)) {
        if (semail_queue_open(&q, dir, NULL) < 0)
            return prog_fail(NAME, "queue %s: %s", dir, semail_error_last());
        err = semail_queue_list(q, list_cb, &lc);
        semail_queue_free(q);
    }
    if (json)
        puts("]");
    else if (lc.count == 0 && err == 0)
        puts("The queue is empty.");
    else
        printf("-- %zu message(s)\n", lc.count);
    return err < 0 ? prog_fail(NAME, "queue %s: %s", dir, semail_error_last()) : 0;
}

/* ---- flush and delete ---------------------------------------------------------------- */

static int cmd_flush(const char *dir)
{
    semail_queue *q = NULL;
    int err;

    if (semail_queue_open(&q, dir, NULL) < 0)
        return prog_fail(NAME, "queue %s: %s", dir, semail_error_last());
    err = semail_queue_flush(q);
    semail_queue_free(q);
    if (err < 0)
        return prog_fail(NAME, "queue flush: %s", semail_error_last());
    puts("Flush requested: every queued message is due now.");
    return 0;
}

static int cmd_delete(const char *dir, const char *qid)
{
    semail_queue *q = NULL;
    struct timespec pause = {0, DELETE_PAUSE_MS * 1000000L};
    int err = SEMAIL_ENOTFOUND, tries;

    if (!queue_exists(dir))
        return prog_fail(NAME, "no message %s in the queue", qid);
    if (semail_queue_open(&q, dir, NULL) < 0)
        return prog_fail(NAME, "queue %s: %s", dir, semail_error_last());
    for (tries = 0; tries < DELETE_TRIES; tries++) {
        if ((err = semail_queue_delete(q, qid)) != SEMAIL_ELOCKED)
            break;
        nanosleep(&pause, NULL);
    }
    semail_queue_free(q);
    if (err == SEMAIL_ELOCKED)
        return prog_fail(NAME, "message %s is being delivered right now; try again in a moment",
                         qid);
    if (err == SEMAIL_ENOTFOUND)
        return prog_fail(NAME, "no message %s in the queue", qid);
    if (err == SEMAIL_EINVAL)
        return prog_fail(NAME, "'%s' is not a queue id", qid);
    if (err < 0)
        return prog_fail(NAME, "queue delete %s: %s", qid, semail_error_last());
    printf("Deleted %s (no bounce is sent).\n", qid);
    return 0;
}

int admin_queue_main(const prog_common *pc, int argc, char **argv, int i, const char *usage)
{
    semail_config *cfg;
    char dir[4096];
    const char *cmd;
    int rc, json = 0;

    if (i >= argc)
        return prog_usage_error(NAME, usage, "queue needs a command: list, flush or delete");
    cmd = argv[i++];
    if (strcmp(cmd, "list") == 0) {
        if (i < argc && strcmp(argv[i], "--json") == 0 && ++i)
            json = 1;
    } else if (strcmp(cmd, "delete") == 0) {
        if (i >= argc)
            return prog_usage_error(NAME, usage, "queue delete needs a QID");
        i++;
    } else if (strcmp(cmd, "flush") != 0) {
        return prog_usage_error(NAME, usage, "unknown queue command '%s'", cmd);
    }
    if (i < argc)
        return prog_usage_error(NAME, usage, "unexpected argument '%s'", argv[i]);
    if ((cfg = prog_load_config(pc)) == NULL)
        return 1;
    if (queue_dir(dir, sizeof(dir), cfg) < 0) {
        semail_config_free(cfg);
        return prog_fail(NAME, "[global] state_dir: path too long");
    }
    if (strcmp(cmd, "list") == 0)
        rc = cmd_list(dir, json);
    else if (strcmp(cmd, "flush") == 0)
        rc = cmd_flush(dir);
    else
        rc = cmd_delete(dir, argv[i - 1]);
    semail_config_free(cfg);
    return rc;
}
