"""The queue of semail-outbound (SPEC.md sections 2 and 5): `semail-admin
queue list / flush / delete` on the live queue while the daemon runs, and
durability across kill -9: every message queued before the crash is
delivered after the restart, once per recipient (a recipient may be
delivered twice only if its 250 came in just before the crash and was not
recorded; the tests count and report such duplicates)."""

import time
import warnings

import outbound_it as ot

pytestmark = ot.needs_outbound

def submit_many(oplatform, n, rcpts, prefix):
    out = []
    for i in range(n):
        subject = "%s %d" % (prefix, i)
        qid = ot.submit(oplatform, ot.ALICE, rcpts, ot.test_message(subject, to=", ".join(rcpts)))
        out.append((qid, subject))
    return out


def test_queue_list_delete_flush_while_the_daemon_runs(oplatform, outbound, remotes):
    # Nothing listens on mx.queue.test yet; the next attempt would be in an hour.
    srv = outbound(retry_schedule="1h", max_queue_lifetime="2h")
    rcpt = "user@queue.test"
    sent = submit_many(oplatform, 3, [rcpt], "queued")
    qids = [q for q, _ in sent]
    ot.wait_until(lambda: all(oplatform.attempted(q) for q in qids), 10,
                  "the first attempts to be recorded", srv.tail)

    # list: text and JSON name every message, with its recipient.
    p = oplatform.queue_admin("list")
    assert p.returncode == 0, p.stderr.decode()
    text = p.stdout.decode()
    for q in qids:
        assert q in text, (q, text)
    assert rcpt in text, text
    listing = oplatform.queue_list_json()
    msgs = ot.json_messages(listing)
    assert len(msgs) == 3, listing
    assert set(qids) <= set(ot.json_strings(listing)), listing
    assert all(rcpt in ot.json_strings(m) for m in msgs), listing

    # delete: gone from the disk and the listing; a second delete fails.
    p = oplatform.queue_admin("delete", qids[0])
    assert p.returncode == 0, p.stderr.decode()
    assert qids[0] not in oplatform.queued_files()
    assert qids[0] not in set(ot.json_strings(oplatform.queue_list_json()))
    p = oplatform.queue_admin("delete", qids[0])
    assert p.returncode != 0 and p.stderr.strip(), "deleting a deleted QID: %r" % (p,)
    for bad in ("../../etc/passwd", "NOSUCHQID0000000000", ""):
        p = oplatform.queue_admin("delete", bad)
        assert p.returncode != 0, "queue delete %r succeeded" % bad
    assert sorted(oplatform.queued_files()) == sorted(qids[1:])

    # The MX comes up; without a flush nothing moves (next attempt in 1h)...
    peer = remotes.scripted(ot.MX_ADDR["queue"])
    time.sleep(2.0)
    assert peer.connection_count() == 0, "retried before the schedule said so"
    # ... with one, both remaining messages go at once.
    p = oplatform.queue_admin("flush")
    assert p.returncode == 0, p.stderr.decode()
    got = ot.wait_until(lambda: len(peer.messages()) >= 2 and peer.messages(), 15,
                        "the flushed messages at the MX", srv.tail)
    ot.wait_until(lambda: not oplatform.queued_files(), 10, "the queue to empty", srv.tail)
    time.sleep(0.5)
    got = peer.messages()
    assert sorted(g.subject for g in got) == sorted(s for _, s in sent[1:]), got
    assert ot.json_messages(oplatform.queue_list_json()) == []
    assert ot.bounces(oplatform) == [], "deleting a message must not bounce it"


def count_deliveries(received):
    """{(subject, recipient): times delivered}"""
    counts = {}
    for r in received:
        for rcpt in r.rcpts:
            key = (r.subject, rcpt.lower())
            counts[key] = counts.get(key, 0) + 1
    return counts


def test_kill_9_with_messages_queued_then_restart_delivers_each_once(oplatform, outbound,
                                                                     remotes):
    """The MX is down while N messages are queued; semail-outbound is killed
    right after the last 250 (attempts may be in flight); after a restart,
    the MX coming up and a flush, every (message, recipient) arrives exactly
    once: nothing could have been delivered before the crash."""
    srv = outbound(retry_schedule="1h", max_queue_lifetime="2h")
    rcpts = ["one@crash.test", "two@crash.test"]
    n = 10
    sent = submit_many(oplatform, n, rcpts, "crash")
    srv.kill()
    assert len(oplatform.queued_files()) == n, oplatform.queued_files()

    peer = remotes.scripted(ot.MX_ADDR["crash"])
    srv2 = outbound()
    p = oplatform.queue_admin("flush")
    assert p.returncode == 0, p.stderr.decode()
    want = {(s, r) for _, s in sent for r in rcpts}
    ot.wait_until(lambda: set(count_deliveries(peer.messages())) >= want, 30,
                  "all %d (message, recipient) pairs at the MX" % len(want),
                  lambda: "missing %r\n%s" % (sorted(want - set(count_deliveries(
                      peer.messages()))), srv2.tail()))
    ot.wait_until(lambda: not oplatform.queued_files(), 10, "the queue to empty", srv2.tail)
    time.sleep(0.5)
    counts = count_deliveries(peer.messages())
    dups = {k: v for k, v in counts.items() if v > 1}
    assert set(counts) == want
    assert dups == {}, "delivered more than once: %r" % dups
    assert ot.bounces(oplatform) == []


def test_kill_9_during_deliveries_loses_nothing(oplatform, outbound, remotes):
    """The MX takes 0.3 s to accept each message; semail-outbound is killed
    while it delivers. After the restart every message arrives; duplicates
    are allowed only for messages accepted by the MX right around the kill
    (the 250 not recorded yet), and are reported."""
    def slow(n, cmd, arg):
        if cmd == "DOT":
            time.sleep(0.3)
        return NotImplemented
    peer = remotes.scripted(ot.MX_ADDR["crash"], slow)
    srv = outbound(retry_schedule="1s", max_queue_lifetime="2h")
    rcpts = ["one@crash.test"]
    n = 20
    sent = submit_many(oplatform, n, rcpts, "in flight")
    ot.wait_until(lambda: len(peer.messages()) >= 3, 20, "the first deliveries", srv.tail)
    srv.kill()
    killed_at = time.monotonic()
    before = len(peer.messages())

    # No flush here (retry_schedule 1s): this test does not lean on semail-admin.
    srv2 = outbound()
    want = {(s, r) for _, s in sent for r in rcpts}
    ot.wait_until(lambda: set(count_deliveries(peer.messages())) >= want, 40,
                  "all %d messages at the MX after the restart" % n,
                  lambda: "missing %r\n%s" % (sorted(want - set(count_deliveries(
                      peer.messages()))), srv2.tail()))
    ot.wait_until(lambda: not oplatform.queued_files(), 10, "the queue to empty", srv2.tail)
    time.sleep(0.5)
    got = peer.messages()
    counts = count_deliveries(got)
    assert set(counts) == want
    dups = sorted(k for k, v in counts.items() if v > 1)
    if dups:
        warnings.warn("kill -9 during delivery: %d of %d messages delivered twice: %r"
                      % (len(dups), n, dups))
    # A duplicate must be a message whose first 250 came within a second of the kill.
    for key in dups:
        first = min(r.when for r in got if (r.subject, r.rcpts[0].lower()) == key)
        assert killed_at - first < 1.0, \
            "%r was accepted %.1fs before the kill and delivered again" % (key, killed_at - first)
    print("%d delivered before the kill, %d duplicates" % (before, len(dups)))
    assert ot.bounces(oplatform) == []
