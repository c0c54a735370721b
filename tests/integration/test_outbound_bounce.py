"""Retries and bounces of semail-outbound (SPEC.md sections 2 and 5): a 4xx
or a failed connection is retried on retry_schedule; a 5xx, a null MX, a
domain that does not exist, or expiry in the queue bounce at once with an
RFC 3464 report from MAILER-DAEMON (envelope sender <>). A bounce to a local
sender lands in their INBOX and in the folder "<sender>,MAILER-DAEMON"; a
failure of a message from the null sender is never bounced.

Tests run with retry_schedule = "1s, 2s" unless they need otherwise, and
assert on what arrives (polled, bounded), never on sleeps."""

import re
import time

import pytest

import outbound_it as ot

pytestmark = ot.needs_outbound

# The SMTP client's timeouts ([outbound] connect_timeout, command_timeout):
# the defaults are RFC 5321's (a 5-minute greeting wait), far too long for a
# test with a server that never answers.
SHORT_CLIENT_TIMEOUTS = {"connect_timeout": "2s", "command_timeout": "2s"}


def status_of(block):
    return (block.get("Status") or "").strip()


def diag_of(block):
    return " ".join((block.get("Diagnostic-Code") or "").split())


def check_report(oplatform, subject, rcpt, status_re, diag_re=None, count=1):
    """The single bounce in alice's INBOX (and folder) for RCPT; returns the Dsn."""
    got = ot.bounces(oplatform)
    assert len(got) == count, "%d bounces, expected %d" % (len(got), count)
    dsn = ot.check_bounce_layout(oplatform, got[-1])
    block = dsn.recipient(rcpt)
    assert (block.get("Action") or "").strip().lower() == "failed", block.items()
    assert re.match(status_re, status_of(block)), \
        "Status %r does not match %r" % (status_of(block), status_re)
    if diag_re is not None:
        assert re.search(diag_re, diag_of(block)), \
            "Diagnostic-Code %r does not match %r" % (diag_of(block), diag_re)
    assert dsn.per_message.get("Reporting-MTA"), dsn.per_message.items()
    orig = dsn.original_headers()
    assert orig["Subject"] == subject, "original Subject %r" % orig["Subject"]
    assert rcpt.encode() in dsn.explanation, \
        "the text part does not name %s: %r" % (rcpt, dsn.explanation[:1000])
    return dsn


@pytest.mark.parametrize("rcpt,status_re", [
    ("user@nullmx.test", r"^5\.1\.10$"),
    ("user@" + ot.NXDOMAIN, r"^5\.\d+\.\d+$"),
], ids=["null-mx", "nxdomain"])
def test_undeliverable_domain_bounces_at_once(oplatform, outbound, rcpt, status_re):
    # A long retry delay: a bounce within 10 s can only be an immediate one.
    srv = outbound(retry_schedule="1h", max_queue_lifetime="2h")
    subject = "to %s" % rcpt
    t0 = time.monotonic()
    ot.submit(oplatform, ot.ALICE, [rcpt], ot.test_message(subject, to=rcpt))
    ot.wait_bounce(oplatform, timeout=10, diag=srv.tail)
    check_report(oplatform, subject, rcpt, status_re)
    ot.wait_until(lambda: not oplatform.queued_files(), 10, "the queue to empty", srv.tail)
    print("bounce after %.2fs" % (time.monotonic() - t0))


@pytest.mark.parametrize("phase,reply", [
    ("RCPT", "550 5.1.1 <nobody@reject.test>: no such user here"),
    ("MAIL", "553 5.7.1 sender refused here"),
    ("DOT", "554 5.6.0 content refused here"),
], ids=["rcpt", "mail", "data"])
def test_5xx_bounces_with_an_rfc3464_report(oplatform, outbound, remotes, phase, reply):
    peer = remotes.scripted(ot.MX_ADDR["reject"], ot.script_always(phase, reply))
    srv = outbound(retry_schedule="1h", max_queue_lifetime="2h")
    subject = "refused at %s" % phase
    rcpt = "nobody@reject.test"
    ot.submit(oplatform, ot.ALICE, [rcpt], ot.test_message(subject, to=rcpt))
    ot.wait_bounce(oplatform, timeout=15, diag=srv.tail)
    code, text = reply.split(" ", 1)
    dsn = check_report(oplatform, subject, rcpt, "^" + re.escape(text.split()[0]) + "$",
                       re.escape(code) + ".*" + re.escape(text.split()[-1]))
    block = dsn.recipient(rcpt)
    assert "reject.test" in (block.get("Remote-MTA") or "") or \
        ot.MX_ADDR["reject"] in (block.get("Remote-MTA") or ""), \
        "Remote-MTA %r" % block.get("Remote-MTA")
    assert peer.messages() == []
    assert peer.connection_count() == 1, "a 5xx was retried"
    ot.wait_until(lambda: not oplatform.queued_files(), 10, "the queue to empty", srv.tail)


def test_550_to_one_recipient_bounces_only_that_one(oplatform, outbound, remotes):
    """Two recipients at one refusing MX, one at a good one: one bounce,
    naming the refused recipient only, with the headers of the original
    message; the others are delivered."""
    def script(n, cmd, arg):
        if cmd == "RCPT" and "nobody@" in arg:
            return "550 5.1.1 no such user here"
        return NotImplemented
    peer = remotes.scripted(ot.MX_ADDR["reject"], script)
    good = remotes.sink(ot.MX_ADDR["v4only"])
    srv = outbound(retry_schedule="1h", max_queue_lifetime="2h")
    rcpts = ["nobody@reject.test", "somebody@reject.test", "user@v4only.test"]
    subject = "partly refused"
    msg = ot.test_message(subject, to=", ".join(rcpts))
    ot.submit(oplatform, ot.ALICE, rcpts, msg)
    ot.wait_bounce(oplatform, timeout=15, diag=srv.tail)
    ot.wait_until(lambda: peer.messages() and good.messages(), 15, "both deliveries", srv.tail)
    ot.wait_until(lambda: not oplatform.queued_files(), 10, "the queue to empty", srv.tail)
    dsn = check_report(oplatform, subject, "nobody@reject.test", r"^5\.1\.1$",
                       r"550.*no such user here")
    finals = [r.get("Final-Recipient", "") for r in dsn.recipients]
    assert len(finals) == 1, "the report names recipients that did not fail: %r" % finals
    ot.check_delivered(peer.messages()[0], ot.ALICE, ["somebody@reject.test"], msg)
    ot.check_delivered(good.messages()[0], ot.ALICE, ["user@v4only.test"], msg)
    # The report carries the headers, not the body (text/rfc822-headers).
    assert dsn.headers_part.get_content_type() == "text/rfc822-headers"
    assert ot.END_MARK not in dsn.raw.text
    assert len(ot.bounces(oplatform)) == 1


def test_bounce_to_a_remote_sender_goes_out_from_the_null_sender(oplatform, outbound, remotes):
    peer = remotes.scripted(ot.MX_ADDR["reject"], ot.script_always("RCPT", "550 5.1.1 no"))
    home = remotes.scripted(ot.MX_ADDR["v4only"], name="sender's MX")
    srv = outbound(retry_schedule="1h", max_queue_lifetime="2h")
    sender = "someone@v4only.test"
    ot.submit(oplatform, sender, ["nobody@reject.test"],
              ot.test_message("remote sender", sender=sender, to="nobody@reject.test"))
    got = ot.wait_until(home.messages, 15, "the bounce at the sender's MX", srv.tail)
    assert len(got) == 1
    assert got[0].mail_from == "", "bounce sent with MAIL FROM:<%s>" % got[0].mail_from
    assert got[0].rcpts == [sender]
    msg = got[0].message
    assert msg.get_content_type() == "multipart/report"
    assert "mailer-daemon" in (msg["From"] or "").lower()
    assert peer.messages() == []


def test_failure_of_a_null_sender_message_is_never_bounced(oplatform, outbound, remotes):
    peer = remotes.scripted(ot.MX_ADDR["reject"], ot.script_always("RCPT", "550 5.1.1 no"))
    srv = outbound(retry_schedule="1h", max_queue_lifetime="2h")
    ot.submit(oplatform, "", ["nobody@reject.test"],
              ot.test_message("from the null sender", sender="MAILER-DAEMON@elsewhere.test",
                              to="nobody@reject.test"))
    ot.wait_until(lambda: peer.connection_count() >= 1 and not oplatform.queued_files(), 15,
                  "the refused message to leave the queue", srv.tail)
    time.sleep(1.0)     # a bounce, if any, would be queued right after the failure
    assert oplatform.queued_files() == [], "something was queued: a bounce of a bounce?"
    assert [f for f in oplatform.mbox_files() if "MAILER-DAEMON" in f] == []
    assert peer.connection_count() == 1


@pytest.mark.parametrize("phase,reply", [
    ("CONNECT", "421 4.3.2 busy, come back later"),
    ("MAIL", "451 4.3.0 try again later"),
    ("RCPT", "450 4.2.1 mailbox busy"),
    ("DOT", "451 4.3.0 queue full here"),
], ids=["greeting", "mail", "rcpt", "data"])
def test_4xx_is_retried_and_delivered_exactly_once(oplatform, outbound, remotes, phase, reply):
    peer = remotes.scripted(ot.MX_ADDR["tempfail"], ot.script_first_n(1, phase, reply))
    srv = outbound(retry_schedule="1s, 2s", max_queue_lifetime="60s")
    msg = ot.test_message("retried after %s" % phase, to="user@tempfail.test")
    t0 = time.monotonic()
    ot.submit(oplatform, ot.ALICE, ["user@tempfail.test"], msg)
    got = ot.wait_until(peer.messages, 20, "delivery on the retry", srv.tail)
    ot.wait_until(lambda: not oplatform.queued_files(), 10, "the queue to empty", srv.tail)
    time.sleep(0.5)
    got = peer.messages()
    assert len(got) == 1, "delivered %d times" % len(got)
    ot.check_delivered(got[0], ot.ALICE, ["user@tempfail.test"], msg)
    assert peer.connection_count() == 2, "%d connections" % peer.connection_count()
    first, second = peer.connections[0], peer.connections[1]
    gap = second["start"] - first["start"]
    assert 0.5 <= gap <= 8, "retry %.2fs after the first attempt (schedule 1s)" % gap
    assert ot.bounces(oplatform) == []
    print("delivered %.2fs after submission" % (time.monotonic() - t0))


def test_dns_failure_is_retried_not_bounced(oplatform, outbound):
    # named is authoritative for test. only: it REFUSES example.org (no
    # recursion), a temporary failure of the look-up, like SERVFAIL.
    srv = outbound(retry_schedule="1s", max_queue_lifetime="60s")
    qid = ot.submit(oplatform, ot.ALICE, ["user@example.org"],
                    ot.test_message("dns refused", to="user@example.org"))
    ot.wait_until(lambda: oplatform.attempted(qid), 10, "the first attempt", srv.tail)
    time.sleep(3.0)      # at least two more attempts on a 1 s schedule
    assert ot.bounces(oplatform) == [], "a temporary DNS failure bounced"
    assert qid in oplatform.queued_files(), "the message left the queue"


def test_unreachable_mx_expires_and_bounces(oplatform, outbound):
    # mx.down.test (127.0.0.10): nothing listens, every attempt is refused.
    srv = outbound(retry_schedule="1s, 2s", max_queue_lifetime="6s")
    subject = "never reachable"
    rcpt = "user@down.test"
    t0 = time.monotonic()
    ot.submit(oplatform, ot.ALICE, [rcpt], ot.test_message(subject, to=rcpt))
    ot.wait_bounce(oplatform, timeout=20, diag=srv.tail)
    elapsed = time.monotonic() - t0
    assert elapsed >= 5, "bounced after %.1fs, before max_queue_lifetime (6s)" % elapsed
    check_report(oplatform, subject, rcpt, r"^[45]\.4\.7$")
    ot.wait_until(lambda: not oplatform.queued_files(), 10, "the queue to empty", srv.tail)


def test_peer_that_never_answers_times_out_is_retried_then_expires(oplatform, outbound, remotes):
    peer = remotes.scripted(ot.MX_ADDR["hang"], ot.script_always("CONNECT", None))
    srv = outbound(retry_schedule="1s, 2s", max_queue_lifetime="8s", **SHORT_CLIENT_TIMEOUTS)
    subject = "to a silent peer"
    rcpt = "user@hang.test"
    t0 = time.monotonic()
    ot.submit(oplatform, ot.ALICE, [rcpt], ot.test_message(subject, to=rcpt))
    ot.wait_bounce(oplatform, timeout=30, diag=lambda: "%r\n%s" % (peer.connections, srv.tail()))
    elapsed = time.monotonic() - t0
    # The server thread notices a close within its 0.2 s poll.
    ot.wait_until(lambda: all(c["end"] is not None for c in peer.connections), 5,
                  "the silent peer's connections to end", lambda: peer.connections)
    conns = list(peer.connections)
    assert len(conns) >= 2, "the silent peer was tried %d time(s): no retry" % len(conns)
    for c in conns:
        assert c["end"] is not None and c.get("closed_by_peer"), \
            "semail-outbound did not give up on a silent connection: %r" % c
        assert c["end"] - c["start"] < 10, "an attempt waited %.1fs" % (c["end"] - c["start"])
    assert elapsed >= 7, "bounced after %.1fs, before max_queue_lifetime (8s)" % elapsed
    check_report(oplatform, subject, rcpt, r"^[45]\.4\.\d+$")
    print("%d attempts; bounce after %.1fs" % (len(conns), elapsed))
