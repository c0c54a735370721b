/*
 * test_dsn.c - bounces (dsn.h): RFC 3464 structure checked in C and by
 * Python's email package, the null sender refused, injection sanitized,
 * line lengths and line ends.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "semail/dsn.h"

static const char ORIGINAL[] = "From: Alice <alice@a.semail.test>\r\n"
                               "To: bob@example.org\r\n"
                               "Subject: lunch\r\n"
                               "Message-ID: <1@a.semail.test>\r\n"
                               "\r\n"
                               "Body line that must not be copied.\r\n";

static semail_dsn_rcpt failed_rcpt(void)
{
    semail_dsn_rcpt r = {"bob@example.org",   SEMAIL_DSN_FAILED, 550,          "5.1.1",
                         "no such user here", "mx.example.org",  1700000000000};
    return r;
}

static semail_dsn_report base_report(const semail_dsn_rcpt *rcpts, size_t n)
{
    semail_dsn_report rep = SEMAIL_DSN_REPORT_INIT;
    rep.hostname = "mx.semail.test";
    rep.sender = "alice@a.semail.test";
    rep.qid = "0123456789ABCDEFGH";
    rep.arrival_ms = 1699999000000;
    rep.now_ms = 1700000100000;
    rep.rcpts = rcpts;
    rep.rcpt_count = n;
    rep.message = ORIGINAL;
    rep.message_len = sizeof(ORIGINAL) - 1;
    return rep;
}

static char *build(const semail_dsn_report *rep, size_t *len)
{
    char *out = NULL;
    assert_int_equal(semail_dsn_build(&out, len, rep), 0);
    assert_non_null(out);
    assert_int_equal(strlen(out), *len);
    return out;
}

/* Every line ends in CRLF, no bare CR or LF, none over 998 octets. */
static void assert_wellformed_lines(const char *m, size_t len)
{
    size_t start = 0;
    assert_true(len >= 2 && m[len - 2] == '\r' && m[len - 1] == '\n');
    for (size_t i = 0; i < len; i++) {
        if (m[i] == '\r') {
            assert_true(i + 1 < len && m[i + 1] == '\n');
            assert_true(i - start <= 998);
            start = i + 2;
            i++;
        } else {
            assert_true(m[i] != '\n');
        }
    }
}

/* The text between "--B\r\n" and the next "\r\n--B" (part INDEX, from 0). */
static char *part(const char *m, const char *boundary, int index)
{
    char delim[128];
    const char *p = m, *end;
    snprintf(delim, sizeof(delim), "\r\n--%s", boundary);
    for (int i = 0; i <= index; i++) {
        p = strstr(p, delim);
        if (p == NULL)
            return NULL;
        p += strlen(delim);
    }
    if (strncmp(p, "--", 2) == 0 || strncmp(p, "\r\n", 2) != 0)
        return NULL;
    p += 2;
    end = strstr(p, delim);
    return end ? strndup(p, (size_t)(end - p)) : NULL;
}

static void get_boundary(char *out, size_t size, const char *m)
{
    const char *b = strstr(m, "boundary=\"");
    const char *e;
    assert_non_null(b);
    b += 10;
    e = strchr(b, '"');
    assert_non_null(e);
    assert_true((size_t)(e - b) < size);
    memcpy(out, b, (size_t)(e - b));
    out[e - b] = '\0';
}

static void test_dsn__is_a_multipart_report_with_three_parts(void **state)
{
    semail_dsn_rcpt r = failed_rcpt();
    semail_dsn_report rep = base_report(&r, 1);
    char boundary[128], *m, *p;
    const char *body;
    size_t len;

    m = build(&rep, &len);
    assert_wellformed_lines(m, len);
    body = strstr(m, "\r\n\r\n");
    assert_non_null(body);
    /* The top header. */
    assert_non_null(strstr(m, "From: Mail Delivery System <MAILER-DAEMON@mx.semail.test>\r\n"));
    assert_non_null(strstr(m, "\r\nTo: <alice@a.semail.test>\r\n"));
    assert_non_null(strstr(m, "\r\nAuto-Submitted: auto-replied\r\n"));
    assert_non_null(strstr(m, "\r\nMIME-Version: 1.0\r\n"));
    assert_non_null(strstr(m, "\r\nDate: Tue, 14 Nov 2023 22:15:00 +0000\r\n"));
    assert_non_null(strstr(m, "\r\nMessage-ID: <"));
    assert_non_null(strstr(m, "@mx.semail.test>\r\n"));
    assert_non_null(strstr(m, "Content-Type: multipart/report; report-type=delivery-status;"));
    assert_true(strstr(m, "boundary=") < body);
    get_boundary(boundary, sizeof(boundary), m);

    p = part(m, boundary, 0);
    assert_non_null(p);
    assert_non_null(strstr(p, "Content-Type: text/plain; charset=us-ascii\r\n\r\n"));
    assert_non_null(
        strstr(p, "<bob@example.org>: host mx.example.org said: 550 5.1.1 no such user here"));
    free(p);

    p = part(m, boundary, 1);
    assert_non_null(p);
    assert_non_null(strstr(p, "Content-Type: message/delivery-status\r\n\r\n"
                              "Reporting-MTA: dns; mx.semail.test\r\n"));
    assert_non_null(strstr(p, "\r\nArrival-Date: Tue, 14 Nov 2023 21:56:40 +0000\r\n"));
    assert_non_null(strstr(p, "\r\n\r\nFinal-Recipient: rfc822; bob@example.org\r\n"
                              "Action: failed\r\n"
                              "Status: 5.1.1\r\n"
                              "Remote-MTA: dns; mx.example.org\r\n"
                              "Diagnostic-Code: smtp; 550 5.1.1 no such user here\r\n"
                              "Last-Attempt-Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"));
    free(p);

    p = part(m, boundary, 2);
    assert_non_null(p);
    assert_non_null(strstr(p, "Content-Type: text/rfc822-headers\r\n"));
    assert_non_null(strstr(p, "\r\nSubject: lunch\r\nMessage-ID: <1@a.semail.test>\r\n"));
    assert_null(strstr(p, "Body line"));
    free(p);
    assert_null(part(m, boundary, 3));
    {
        char close_delim[160];
        size_t n = (size_t)snprintf(close_delim, sizeof(close_delim), "\r\n--%s--\r\n", boundary);
        assert_true(len > n);
        assert_string_equal(m + len - n, close_delim);
    }
    semail_dsn_free(m);
}

static void test_dsn__refuses_the_null_sender(void **state)
{
    semail_dsn_rcpt r = failed_rcpt();
    semail_dsn_report rep = base_report(&r, 1);
    char *m = (char *)1;
    size_t len = 7;

    rep.sender = "";
    assert_int_equal(semail_dsn_build(&m, &len, &rep), SEMAIL_EINVAL);
    assert_null(m);
    assert_int_equal(len, 0);
    rep.sender = NULL;
    assert_int_equal(semail_dsn_build(&m, &len, &rep), SEMAIL_EINVAL);
}

static void test_dsn__refuses_bad_reports(void **state)
{
    semail_dsn_rcpt r = failed_rcpt();
    semail_dsn_report rep = base_report(&r, 1);
    char *m;

    rep.rcpt_count = 0;
    assert_int_equal(semail_dsn_build(&m, NULL, &rep), SEMAIL_EINVAL);
    rep = base_report(&r, 1);
    rep.hostname = "mx.semail.test\r\nBcc: x@y";
    assert_int_equal(semail_dsn_build(&m, NULL, &rep), SEMAIL_EINVAL);
    rep = base_report(&r, 1);
    rep.sender = "alice@a.semail.test>\r\nBcc: <x@y";
    assert_int_equal(semail_dsn_build(&m, NULL, &rep), SEMAIL_EINVAL);
    rep = base_report(&r, 1);
    r.address = "bob@example.org\nX: y";
    assert_int_equal(semail_dsn_build(&m, NULL, &rep), SEMAIL_EINVAL);
    rep.version = 99;
    assert_int_equal(semail_dsn_build(&m, NULL, &rep), SEMAIL_EINVAL);
    assert_int_equal(semail_dsn_build(&m, NULL, NULL), SEMAIL_EINVAL);
}

/* The remote server's text cannot add a field, a line or a MIME part. */
static void test_dsn__sanitizes_injection_in_the_remote_text(void **state)
{
    semail_dsn_rcpt r = failed_rcpt();
    semail_dsn_report rep = base_report(&r, 1);
    char boundary[128], *m;
    size_t len;

    r.text = "no\r\nX-Injected: yes\r\n\r\n--=_semail_0\r\nContent-Type: text/html\n\rx\x01\xff";
    r.remote_host = "mx.example.org\r\nX-Host-Injected: yes";
    m = build(&rep, &len);
    assert_wellformed_lines(m, len);
    assert_null(strstr(m, "\r\nX-Injected"));
    assert_null(strstr(m, "\r\nX-Host-Injected"));
    assert_null(strstr(m, "\r\nContent-Type: text/html"));
    assert_null(strstr(m, "\r\n--=_semail_0\r\n"));
    assert_non_null(strstr(m, "Diagnostic-Code: smtp; 550 5.1.1 no  X-Injected: yes"));
    assert_null(memchr(m, 0x01, len));
    assert_null(memchr(m, 0xff, len));
    get_boundary(boundary, sizeof(boundary), m);
    semail_dsn_free(m);
}

static void test_dsn__folds_or_cuts_long_lines(void **state)
{
    semail_dsn_rcpt r = failed_rcpt();
    semail_dsn_report rep = base_report(&r, 1);
    char *words = malloc(3000), *blob = malloc(3000), *orig = malloc(5000), *m;
    size_t len, n = 0;

    for (int i = 0; i < 400; i++)
        n += (size_t)snprintf(words + n, 3000 - n, "word%d ", i % 10);
    memset(blob, 'x', 2999);
    blob[2999] = '\0';
    n = (size_t)snprintf(orig, 5000, "Subject: ");
    memset(orig + n, 'y', 2000);
    snprintf(orig + n + 2000, 5000 - n - 2000, "\nX-Bare: cr\rin\r\n\r\nbody\r\n");
    r.text = words;
    rep.message = orig;
    rep.message_len = strlen(orig);
    m = build(&rep, &len);
    assert_wellformed_lines(m, len);
    assert_non_null(strstr(m, "Diagnostic-Code: smtp; 550 5.1.1 word0 word1"));
    assert_non_null(strstr(m, "\r\n word")); /* folded */
    assert_non_null(strstr(m, "\r\nX-Bare: cr in\r\n"));
    semail_dsn_free(m);

    r.text = blob;
    m = build(&rep, &len);
    assert_wellformed_lines(m, len);
    semail_dsn_free(m);
    free(words);
    free(blob);
    free(orig);
}

static void test_dsn__delayed_and_defaults(void **state)
{
    semail_dsn_rcpt r = {
        "bob@example.org", SEMAIL_DSN_DELAYED, 0, NULL, "connection refused", NULL, 0};
    semail_dsn_report rep = base_report(&r, 1);
    char *m;
    size_t len;

    rep.message = NULL;
    rep.message_len = 0;
    m = build(&rep, &len);
    assert_wellformed_lines(m, len);
    assert_non_null(strstr(m, "Subject: Delayed Mail (still being retried)\r\n"));
    assert_non_null(strstr(m, "Action: delayed\r\nStatus: 4.0.0\r\n"
                              "Diagnostic-Code: X-SEMail; connection refused\r\n"));
    assert_null(strstr(m, "Remote-MTA"));
    assert_null(strstr(m, "Last-Attempt-Date"));
    assert_null(strstr(m, "text/rfc822-headers"));
    semail_dsn_free(m);

    r.action = SEMAIL_DSN_FAILED;
    r.enhanced = "5.1.1\r\nX: y"; /* malformed: replaced by the default */
    m = build(&rep, &len);
    assert_non_null(strstr(m, "Subject: Undelivered Mail Returned to Sender\r\n"));
    assert_non_null(strstr(m, "Action: failed\r\nStatus: 5.0.0\r\n"));
    semail_dsn_free(m);
}

/* Python's email package (what many mail tools use) reads the bounce back. */
static void test_dsn__python_email_parses_it(void **state)
{
    static const char script[] =
        "import email, sys\n"
        "from email import policy\n"
        "m = email.message_from_binary_file(open(sys.argv[1], 'rb'), policy=policy.default)\n"
        "assert not m.defects, m.defects\n"
        "assert m.get_content_type() == 'multipart/report'\n"
        "assert m.get_param('report-type') == 'delivery-status'\n"
        "assert str(m['Auto-Submitted']) == 'auto-replied'\n"
        "assert m['From'].addresses[0].addr_spec == 'MAILER-DAEMON@mx.semail.test'\n"
        "assert m['To'].addresses[0].addr_spec == 'alice@a.semail.test'\n"
        "parts = m.get_payload()\n"
        "assert [p.get_content_type() for p in parts] == ['text/plain', "
        "'message/delivery-status', 'text/rfc822-headers'], parts\n"
        "ds = parts[1].get_payload()\n"
        "assert len(ds) == 3, ds\n"
        "assert ds[0]['Reporting-MTA'] == 'dns; mx.semail.test'\n"
        "for b, addr in zip(ds[1:], ['bob@example.org', 'carol@example.net']):\n"
        "    assert b['Final-Recipient'] == 'rfc822; ' + addr, b['Final-Recipient']\n"
        "    assert b['Action'] == 'failed'\n"
        "    assert b['Status'].startswith('5.')\n"
        "assert 'smtp; 550 5.1.1' in ds[1]['Diagnostic-Code']\n"
        "assert 'X-Evil' not in ds[2]\n"
        "assert 'Subject: lunch' in parts[2].get_payload()\n"
        "print('OK')\n";
    semail_dsn_rcpt r[2] = {failed_rcpt(), failed_rcpt()};
    semail_dsn_report rep = base_report(r, 2);
    char path[] = "/tmp/semail-dsn-XXXXXX", spath[] = "/tmp/semail-dsn-py-XXXXXX";
    char cmd[256], out[64] = "";
    FILE *fp;
    char *m;
    size_t len;
    int fd;

    if (access("/usr/bin/python3", X_OK) != 0)
        skip();
    r[1].address = "carol@example.net";
    r[1].code = 552;
    r[1].enhanced = "5.2.2";
    r[1].text = "mailbox full\r\nX-Evil: 1";
    m = build(&rep, &len);
    assert_true((fd = mkstemp(path)) >= 0);
    assert_int_equal(write(fd, m, len), (ssize_t)len);
    close(fd);
    assert_true((fd = mkstemp(spath)) >= 0);
    assert_int_equal(write(fd, script, sizeof(script) - 1), (ssize_t)sizeof(script) - 1);
    close(fd);
    snprintf(cmd, sizeof(cmd), "/usr/bin/python3 %s %s 2>&1", spath, path);
    fp = popen(cmd, "r");
    assert_non_null(fp);
    if (fgets(out, sizeof(out), fp) == NULL)
        out[0] = '\0';
    pclose(fp);
    unlink(path);
    unlink(spath);
    semail_dsn_free(m);
    assert_string_equal(out, "OK\n");
}

/* ---- from a queue entry ------------------------------------------------------ */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void test_dsn__for_entry_reports_unnotified_failures_once(void **state)
{
    static const char *const rcpts[] = {"bob@example.org", "carol@example.net"};
    char dir[] = "/tmp/semail-dsn-q-XXXXXX", qid[SEMAIL_QUEUE_QID_SIZE], *m;
    semail_queue *q;
    semail_queue_entry *e;
    semail_queue_result bad;
    size_t len;

    assert_non_null(mkdtemp(dir));
    assert_int_equal(semail_queue_open(&q, dir, NULL), 0);
    assert_int_equal(semail_queue_submit(qid, q, "alice@a.semail.test", rcpts, 2, ORIGINAL,
                                         sizeof(ORIGINAL) - 1),
                     0);
    assert_int_equal(semail_queue_lock(&e, q, qid), 0);
    assert_int_equal(semail_dsn_build_for_entry(&m, &len, e, "mx.semail.test", 0),
                     SEMAIL_ENOTFOUND);
    memset(&bad, 0, sizeof(bad));
    bad.code = 550;
    snprintf(bad.enhanced, sizeof(bad.enhanced), "5.1.1");
    snprintf(bad.text, sizeof(bad.text), "unknown user");
    snprintf(bad.remote_host, sizeof(bad.remote_host), "mx.example.net");
    assert_int_equal(semail_queue_record(e, 1, SEMAIL_QUEUE_FAILED, &bad), 0);
    assert_int_equal(semail_queue_record(e, 0, SEMAIL_QUEUE_DELIVERED, NULL), 0);
    assert_int_equal(semail_dsn_build_for_entry(&m, &len, e, "mx.semail.test", 0), 0);
    assert_wellformed_lines(m, len);
    assert_non_null(strstr(m, "Final-Recipient: rfc822; carol@example.net\r\n"));
    assert_null(strstr(m, "Final-Recipient: rfc822; bob@example.org"));
    assert_non_null(strstr(m, "X-SEMail-Queue-ID: "));
    assert_non_null(strstr(m, qid));
    assert_non_null(strstr(m, "Subject: lunch"));
    semail_dsn_free(m);
    assert_int_equal(semail_queue_mark_notified(e), 1);
    assert_int_equal(semail_dsn_build_for_entry(&m, &len, e, "mx.semail.test", 0),
                     SEMAIL_ENOTFOUND);
    semail_queue_release(e);

    /* A bounce (null sender) that fails is never bounced. */
    assert_int_equal(semail_queue_submit(qid, q, "", rcpts, 1, ORIGINAL, sizeof(ORIGINAL) - 1), 0);
    assert_int_equal(semail_queue_lock(&e, q, qid), 0);
    assert_int_equal(semail_queue_record(e, 0, SEMAIL_QUEUE_FAILED, &bad), 0);
    assert_int_equal(semail_dsn_build_for_entry(&m, &len, e, "mx.semail.test", 0), SEMAIL_EINVAL);
    semail_queue_release(e);
    semail_queue_free(q);
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dsn__is_a_multipart_report_with_three_parts),
        cmocka_unit_test(test_dsn__refuses_the_null_sender),
        cmocka_unit_test(test_dsn__refuses_bad_reports),
        cmocka_unit_test(test_dsn__sanitizes_injection_in_the_remote_text),
        cmocka_unit_test(test_dsn__folds_or_cuts_long_lines),
        cmocka_unit_test(test_dsn__delayed_and_defaults),
        cmocka_unit_test(test_dsn__python_email_parses_it),
        cmocka_unit_test(test_dsn__for_entry_reports_unnotified_failures_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
