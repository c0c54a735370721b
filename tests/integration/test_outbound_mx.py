"""semail-outbound finds the target server through DNS (SPEC.md section 5):
MX records in preference order, random among equals, the domain itself when
it has no MX, every address of an MX (IPv6 first, then IPv4), on the
configured remote_port; and one person mails another through the platform's
own semail-inbound. Every remote server listens on 127.0.0.x or ::1 on the
test's remote port; named (ZONE_RECORDS in outbound_it.py) says which."""

import outbound_it as ot
import semail_it as it

pytestmark = ot.needs_outbound


def deliver_one(oplatform, srv, sink, rcpt, subject):
    msg = ot.test_message(subject, to=rcpt)
    ot.submit(oplatform, ot.ALICE, [rcpt], msg)
    got = ot.wait_until(sink.messages, 20, "delivery of %r to %s" % (subject, sink.name),
                        srv.tail)
    assert len(got) == 1, got
    ot.check_delivered(got[0], ot.ALICE, [rcpt], msg)
    ot.wait_until(lambda: not oplatform.queued_files(), 10, "the queue to empty after delivery",
                  lambda: "%r\n%s" % (oplatform.queued_files(), srv.tail()))
    assert ot.bounces(oplatform) == []
    return got[0]


def test_ipv4_only_mx(oplatform, outbound, remotes):
    sink = remotes.sink(ot.MX_ADDR["v4only"])
    srv = outbound()
    got = deliver_one(oplatform, srv, sink, "user@v4only.test", "to an IPv4-only MX")
    assert got.client.startswith("127.")


def test_ipv6_only_mx(oplatform, outbound, remotes):
    sink = remotes.sink(ot.MX_ADDR["v6only"])
    srv = outbound()
    got = deliver_one(oplatform, srv, sink, "user@v6only.test", "to an IPv6-only MX")
    assert got.client == "::1"


def test_aaaa_is_tried_before_a(oplatform, outbound, remotes):
    sink6 = remotes.sink(ot.MX_ADDR["dual6"], "dual-v6")
    sink4 = remotes.sink(ot.MX_ADDR["dual4"], "dual-v4")
    srv = outbound()
    deliver_one(oplatform, srv, sink6, "user@dual.test", "dual stack, v6 first")
    assert sink4.messages() == []


def test_a_is_tried_when_the_aaaa_address_refuses(oplatform, outbound, remotes):
    sink4 = remotes.sink(ot.MX_ADDR["dual4"], "dual-v4")     # nothing on [::1]
    srv = outbound()
    got = deliver_one(oplatform, srv, sink4, "user@dual.test", "dual stack, v6 refuses")
    assert got.client.startswith("127.")


def test_lowest_preference_mx_is_used_first(oplatform, outbound, remotes):
    first = remotes.sink(ot.MX_ADDR["pref_dead"], "pref-10")
    second = remotes.sink(ot.MX_ADDR["pref"], "pref-20")
    srv = outbound()
    for i in range(3):
        msg = ot.test_message("preference %d" % i, to="user@pref.test")
        ot.submit(oplatform, ot.ALICE, ["user@pref.test"], msg)
    ot.wait_until(lambda: len(first.messages()) == 3, 20, "3 messages at the MX of preference 10",
                  lambda: "%r %r\n%s" % (first.messages(), second.messages(), srv.tail()))
    assert second.messages() == []


def test_next_mx_when_the_first_refuses_connections(oplatform, outbound, remotes):
    sink = remotes.sink(ot.MX_ADDR["pref"], "pref-20")        # nothing on the MX of pref. 10
    srv = outbound()
    deliver_one(oplatform, srv, sink, "user@pref.test", "preference fallback")


def test_equal_preference_mx_are_chosen_at_random(oplatform, outbound, remotes):
    # 16 messages all going to the same one of two equal MX: probability
    # 2 * 2**-16 for a correct random choice (RFC 5321 5.1).
    one = remotes.sink(ot.MX_ADDR["equal1"], "equal-1")
    two = remotes.sink(ot.MX_ADDR["equal2"], "equal-2")
    srv = outbound()
    n = 16
    for i in range(n):
        ot.submit(oplatform, ot.ALICE, ["user@equal.test"],
                  ot.test_message("equal %d" % i, to="user@equal.test"))
    ot.wait_until(lambda: len(one.messages()) + len(two.messages()) == n, 30,
                  "%d deliveries to the two equal MX" % n, srv.tail)
    counts = (len(one.messages()), len(two.messages()))
    assert min(counts) > 0, "every message went to the same MX: %r" % (counts,)


def test_implicit_mx_is_the_domain_itself(oplatform, outbound, remotes):
    sink = remotes.sink(ot.MX_ADDR["implicit"])
    srv = outbound()
    deliver_one(oplatform, srv, sink, "user@implicit.test", "implicit MX")


def test_several_recipients_in_several_domains(oplatform, outbound, remotes):
    v4 = remotes.sink(ot.MX_ADDR["v4only"], "v4only")
    v6 = remotes.sink(ot.MX_ADDR["v6only"], "v6only")
    srv = outbound()
    rcpts = ["a@v4only.test", "b@v4only.test", "c@v6only.test"]
    msg = ot.test_message("two domains", to=", ".join(rcpts))
    ot.submit(oplatform, ot.ALICE, rcpts, msg)
    got4 = ot.wait_until(v4.messages, 20, "delivery to v4only.test", srv.tail)
    got6 = ot.wait_until(v6.messages, 20, "delivery to v6only.test", srv.tail)
    # One transaction per domain, each with its own recipients only.
    assert [sorted(g.rcpts) for g in got4] == [["a@v4only.test", "b@v4only.test"]]
    assert [g.rcpts for g in got6] == [["c@v6only.test"]]
    ot.check_delivered(got4[0], ot.ALICE, rcpts[:2], msg)
    ot.check_delivered(got6[0], ot.ALICE, rcpts[2:], msg)


def test_message_arrives_byte_exact_with_dots_8bit_and_long_lines(oplatform, outbound, remotes):
    peer = remotes.scripted(ot.MX_ADDR["v4only"])
    srv = outbound()
    body = (b".\n..\n.leading dot\nFrom the start of a line\n>From quoted\n"
            b"caf\xc3\xa9 \xe2\x82\xac 8-bit\n" + b"x" * 998 + b"\n\n\nafter empty lines\n"
            + b"tail .\n")
    msg = ot.test_message("transparency", to="user@v4only.test", body=body)
    ot.submit(oplatform, ot.ALICE, ["user@v4only.test"], msg)
    got = ot.wait_until(peer.messages, 20, "the message at the MX", srv.tail)
    ot.check_delivered(got[0], ot.ALICE, ["user@v4only.test"], msg)


def test_alice_mails_bob_through_the_mx_of_the_platform(oplatform, outbound):
    """outbound -> named (bob.semail.test MX mx.semail.test = 127.0.0.1, ::1)
    -> semail-inbound on the remote port -> bob's INBOX and folder. While
    semail-inbound is down the message waits in the queue (so it really goes
    through SMTP, not straight into the mbox), and is delivered on a retry
    once semail-inbound is up."""
    srv = outbound()
    msg = ot.test_message("hello bob", to=ot.BOB, body=b"From alice, through the MX.\n")
    qid = ot.submit(oplatform, ot.ALICE, [ot.BOB], msg)
    # The first attempt finds no server: the state file appears, the message stays.
    ot.wait_until(lambda: oplatform.attempted(qid), 10,
                  "the first (failed) attempt on %s to be recorded" % qid, srv.tail)
    assert oplatform.messages("bob") == [], \
        "delivered to bob while semail-inbound was down: not through the MX"
    assert oplatform.queued_files(), "the message left the queue while its MX was down"

    inbound = it.Server(oplatform)
    inbound.start()
    try:
        got = ot.wait_until(lambda: oplatform.messages("bob"), 20,
                            "the message in bob's INBOX (retry after 1s, 2s)", srv.tail)
        assert len(got) == 1
        m = got[0]
        assert m.from_line.startswith(b"From alice@alice.semail.test "), m.from_line
        assert m.header_value("Return-Path") == "<alice@alice.semail.test>"
        assert m.text.endswith(msg)
        folder = it.read_mbox(oplatform.folder("bob", ot.BOB, ot.ALICE))
        assert [f.text for f in folder] == [m.text], oplatform.mbox_files()
        ot.wait_until(lambda: not oplatform.queued_files(), 10, "the queue to empty", srv.tail)
        assert ot.bounces(oplatform) == []
    finally:
        inbound.stop()

