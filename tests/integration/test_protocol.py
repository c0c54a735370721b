"""The SMTP dialogue of semail-inbound: EHLO, enhanced status codes, sequence,
line limits, relay refusal, unknown users, limits (SPEC.md section 5 and
docs/decisions.md)."""

import pytest

import semail_it as it

ALICE = "alice@alice.semail.test"
BOB = "bob@bob.semail.test"


def _enhanced_ok(reply):
    """The reply carries an RFC 3463 code whose class is the reply's class."""
    e = reply.enhanced
    return e is not None and e[0] == str(reply.code)[0]


def test_greeting_and_ehlo_keywords(platform, users, server):
    srv = server(max_message_size="10485760")
    with it.Smtp(platform.port) as c:
        assert c.greeting.code == 220
        assert c.greeting.lines[0].startswith(it.HOSTNAME), c.greeting
        r = c.ehlo("client.example.org")
        assert r.lines[0].startswith(it.HOSTNAME), r
        keywords = {l.split()[0].upper(): l.split()[1:] for l in r.lines[1:]}
        for k in ("SIZE", "8BITMIME", "PIPELINING", "ENHANCEDSTATUSCODES"):
            assert k in keywords, (k, r.lines)
        assert keywords["SIZE"] == ["10485760"], r.lines
        assert "STARTTLS" not in keywords and "AUTH" not in keywords, r.lines
        # HELO works too, and resets nothing harmful.
        r = c.expect("HELO client.example.org", 250)
        assert r.lines[0].startswith(it.HOSTNAME)
        c.quit()


def test_every_reply_but_greeting_and_ehlo_has_an_enhanced_code(platform, users, server):
    srv = server()
    with it.Smtp(platform.port) as c:
        c.ehlo()
        checked = []
        for line in ("NOOP", "HELP", "RSET", "VRFY alice", "EXPN staff", "FOO bar",
                     "MAIL FROM:<s@example.org>", "MAIL FROM:<t@example.org>",
                     "RCPT TO:<nobody@alice.semail.test>", "RCPT TO:<x@evil.test>",
                     "RCPT TO:<%s>" % ALICE, "RCPT TO:<broken", "DATA"):
            r = c.cmd(line)
            checked.append((line, r))
            if r.code == 354:
                c.send(b"Subject: x\r\n\r\nx\r\n.\r\n")
                r = c.reply()
                checked.append(("<data>", r))
        checked.append(("QUIT", c.cmd("QUIT")))
    bad = [(l, r) for l, r in checked if r.code != 354 and not _enhanced_ok(r)]
    assert not bad, "replies without a matching enhanced status code: %r" % bad


def test_vrfy_and_expn_answer_502(platform, users, server):
    srv = server()
    with it.Smtp(platform.port) as c:
        c.ehlo()
        for line in ("VRFY alice", "VRFY <%s>" % ALICE, "EXPN alice"):
            r = c.cmd(line)
            assert r.code == 502, (line, r)
            assert _enhanced_ok(r)
            assert "alice" not in r.text.lower()
        c.quit()


def test_noop_rset_help_quit(platform, users, server):
    srv = server()
    with it.Smtp(platform.port) as c:
        c.ehlo()
        assert c.cmd("NOOP").code == 250
        assert c.cmd("HELP").code in (211, 214)
        assert c.cmd("RSET").code == 250
        r = c.cmd("QUIT")
        assert r.code == 221 and _enhanced_ok(r)
        data, closed = c.read_until_eof(5)
        assert closed and data == b"", "server must close after QUIT"


def test_unknown_command_is_500(platform, users, server):
    srv = server()
    with it.Smtp(platform.port) as c:
        c.ehlo()
        for line in ("FOO", "MAILFROM:<a@b.test>", "STARTTLS", "AUTH PLAIN AGFhAGI=", "BDAT 10 LAST"):
            r = c.cmd(line)
            assert 500 <= r.code <= 504, (line, r)
        assert c.cmd("NOOP").code == 250
        c.quit()


@pytest.mark.parametrize("steps", [
    ["MAIL FROM:<s@example.org>"],                                   # before EHLO
    ["RCPT TO:<%s>" % ALICE],                                        # before EHLO
    ["EHLO c.example.org", "RCPT TO:<%s>" % ALICE],                  # RCPT before MAIL
    ["EHLO c.example.org", "DATA"],                                  # DATA before MAIL
    ["EHLO c.example.org", "MAIL FROM:<s@example.org>", "DATA"],     # DATA before RCPT
    ["EHLO c.example.org", "MAIL FROM:<s@example.org>",
     "MAIL FROM:<t@example.org>"],                                   # MAIL twice
    ["EHLO c.example.org", "MAIL FROM:<s@example.org>",
     "RCPT TO:<nobody@alice.semail.test>", "DATA"],                  # DATA, no good RCPT
])
def test_out_of_sequence_commands_answer_503(platform, users, server, steps):
    srv = server()
    with it.Smtp(platform.port) as c:
        replies = [c.cmd(s) for s in steps]
        last = replies[-1]
        assert last.code == 503, (steps, replies)
        assert last.enhanced == "5.5.1", last
        # The session is still usable.
        c.cmd("RSET")
        c.ehlo()
        mail, rr, final = c.transaction("s@example.org", [ALICE], it.make_message("after 503"))
        assert final is not None and final.code == 250, (mail, rr, final)
        c.quit()
    assert len(platform.messages("alice")) == 1


def test_rset_forgets_the_transaction(platform, users, server):
    srv = server()
    with it.Smtp(platform.port) as c:
        c.ehlo()
        c.expect("MAIL FROM:<s@example.org>", 250)
        c.expect("RCPT TO:<%s>" % ALICE, 250)
        c.expect("RSET", 250)
        r = c.cmd("DATA")
        assert r.code == 503, r
        c.quit()
    assert platform.messages("alice") == []


def test_command_line_of_512_octets_is_accepted_513_refused(platform, users, server):
    srv = server()
    with it.Smtp(platform.port) as c:
        c.ehlo()
        # 510 octets + CRLF = 512: the RFC 5321 maximum.
        line = "NOOP " + "a" * (510 - 5)
        r = c.cmd(line)
        assert r.code != 500, r
        line = "NOOP " + "a" * (511 - 5)
        r = c.cmd(line)
        assert r.code == 500 and r.enhanced == "5.5.2", r
        assert c.cmd("NOOP").code == 250
        c.quit()


def test_over_long_command_tail_is_not_executed(platform, users, server):
    srv = server()
    with it.Smtp(platform.port) as c:
        c.ehlo()
        # If the server cut the line at 512 and read on, "QUIT" or "MAIL" would run.
        for tail in ("QUIT", "MAIL FROM:<evil@evil.test>"):
            c.send(b"NOOP " + b"x" * 507 + tail.encode() + b"\r\n")
            r = c.reply()
            assert r.code == 500 and r.enhanced == "5.5.2", r
            r = c.cmd("RCPT TO:<%s>" % ALICE)
            assert r.code == 503, "the over-long line's tail was executed: %r" % r
        # A very long line (256 KiB) with no CRLF for a while: one reply, no crash.
        c.send(b"EHLO " + b"y" * (256 * 1024) + b"\r\n")
        r = c.reply()
        assert r.code == 500 and r.enhanced == "5.5.2", r
        assert c.cmd("NOOP").code == 250
        c.quit()


@pytest.mark.parametrize("raw", [
    b"NO\nOP\r\n",
    b"NOOP\n\r\n",
    b"NO\rOP\r\n",
    b"NOOP\x00\r\n",
    b"MAIL FROM:<s@example.org>\nRCPT TO:<alice@alice.semail.test>\r\n",
    b"MAIL FROM:<s@example.org>\rRCPT TO:<alice@alice.semail.test>\r\n",
    b"MAIL FROM:<s@exa\x00mple.org>\r\n",
])
def test_command_with_bare_lf_cr_or_nul_is_501_and_not_executed(platform, users, server, raw):
    srv = server()
    with it.Smtp(platform.port) as c:
        c.ehlo()
        c.send(raw)
        r = c.reply()
        assert r.code == 501 and r.enhanced == "5.5.2", r
        # Exactly one reply, and no transaction started.
        r = c.cmd("RCPT TO:<%s>" % ALICE)
        assert r.code == 503, "a command hidden behind a bare line end ran: %r" % r
        c.quit()


def test_text_line_of_1000_octets_accepted_1001_refused(platform, users, server):
    srv = server()
    ok_line = b"a" * 998                       # + CRLF = 1000 octets
    long_line = b"b" * 999                     # + CRLF = 1001 octets
    with it.Smtp(platform.port) as c:
        c.ehlo()
        ok = it.make_message("line 1000", ok_line + b"\n", sender="s@example.org")
        mail, rr, final = c.transaction("s@example.org", [ALICE], ok)
        assert final.code == 250, final
        bad = it.make_message("line 1001", long_line + b"\n", sender="s@example.org")
        mail, rr, final = c.transaction("s@example.org", [ALICE], bad)
        assert final.code == 500 and final.enhanced == "5.5.2", final
        # A line far longer than any buffer.
        huge = it.make_message("huge line", b"c" * (3 * 1024 * 1024) + b"\n", sender="s@example.org")
        mail, rr, final = c.transaction("s@example.org", [ALICE], huge)
        assert final.code == 500 and final.enhanced == "5.5.2", final
        # The session goes on.
        mail, rr, final = c.transaction("s@example.org", [ALICE], it.make_message("after"))
        assert final.code == 250
        c.quit()
    got = platform.messages("alice")
    assert [m.header_value("Subject") for m in got] == ["line 1000", "after"]
    assert got[0].body == ok_line + b"\n"


@pytest.mark.parametrize("rcpt", [
    "bob@evil.test",
    "alice@alice.semail.test.evil.test",
    "bob%evil.test@alice.semail.test",
    "alice%alice.semail.test@alice.semail.test",
    "evil.test!bob@alice.semail.test",
    "\"bob@evil.test\"@alice.semail.test",
    "\"alice@alice.semail.test\"@alice.semail.test",
    "@semail.test:bob@evil.test",
    "@alice.semail.test,@semail.test:bob@evil.test",
    "alice@[127.0.0.1]",
    "alice@[IPv6:::1]",
])
def test_relay_attempts_are_refused_550_5_7_1(platform, users, server, rcpt):
    srv = server()
    with it.Smtp(platform.port) as c:
        c.ehlo()
        c.expect("MAIL FROM:<s@example.org>", 250)
        r = c.cmd("RCPT TO:<%s>" % rcpt)
        assert r.code == 550 and r.enhanced == "5.7.1", (rcpt, r)
        r = c.cmd("DATA")
        assert r.code == 503, r
        c.quit()
    assert platform.mbox_files() == []


def test_unknown_user_at_our_domain_is_550_5_1_1(platform, users, server):
    carol = platform.create_user("carol", ident="carol", domain="carol.example")
    srv = server()
    with it.Smtp(platform.port) as c:
        c.ehlo()
        c.expect("MAIL FROM:<s@example.org>", 250)
        for rcpt in ("nobody@alice.semail.test", "bob@alice.semail.test", "alice@bob.semail.test",
                     "other@carol.example", "Postmaster"):
            r = c.cmd("RCPT TO:<%s>" % rcpt)
            assert r.code == 550 and r.enhanced == "5.1.1", (rcpt, r)
        # A good recipient in the same transaction still works.
        c.expect("RCPT TO:<%s>" % carol, 250)
        assert c.data(it.make_message("to carol")).code == 250
        c.quit()
    assert len(platform.messages("carol")) == 1
    assert platform.messages("alice") == [] and platform.messages("bob") == []


def test_unregistered_subdomain_of_the_platform_is_refused(platform, users, server):
    srv = server()
    with it.Smtp(platform.port) as c:
        c.ehlo()
        c.expect("MAIL FROM:<s@example.org>", 250)
        for rcpt in ("x@nosuch.semail.test", "alice@semail.test", "alice@mx.semail.test"):
            r = c.cmd("RCPT TO:<%s>" % rcpt)
            assert r.code == 550 and r.enhanced in ("5.1.1", "5.7.1"), (rcpt, r)
        c.quit()


@pytest.mark.parametrize("line", [
    "MAIL FROM:<s@example.org",
    "MAIL FROM:<s@@example.org>",
    "MAIL FROM:<s@example.org> FROBNICATE=yes",
    "MAIL FROM:<s@example.org> SIZE=abc",
    "MAIL FROM:<s@example.org> BODY=9BITMIME",
    "MAIL TO:<s@example.org>",
])
def test_malformed_mail_from_is_refused_5xx(platform, users, server, line):
    srv = server()
    with it.Smtp(platform.port) as c:
        c.ehlo()
        r = c.cmd(line)
        assert 500 <= r.code <= 555, (line, r)
        assert _enhanced_ok(r), r
        assert c.cmd("RCPT TO:<%s>" % ALICE).code == 503
        c.quit()


def test_too_many_recipients_answer_452_4_5_3(platform, users, server):
    for login in ("carol", "dave", "erin"):
        platform.create_user(login)
    srv = server(max_recipients=3)
    with it.Smtp(platform.port) as c:
        c.ehlo()
        c.expect("MAIL FROM:<s@example.org>", 250)
        for login in ("alice", "bob", "carol"):
            c.expect("RCPT TO:<%s@%s.semail.test>" % (login, login), 250)
        for login in ("dave", "erin"):
            r = c.cmd("RCPT TO:<%s@%s.semail.test>" % (login, login))
            assert r.code == 452 and r.enhanced == "4.5.3", r
        assert c.data(it.make_message("three of five")).code == 250
        c.quit()
    for login in ("alice", "bob", "carol"):
        assert len(platform.messages(login)) == 1, login
    for login in ("dave", "erin"):
        assert platform.messages(login) == [], login


def test_size_parameter_over_the_limit_is_552(platform, users, server):
    srv = server(max_message_size=10000)
    with it.Smtp(platform.port) as c:
        r = c.ehlo()
        assert "SIZE 10000" in r.lines, r.lines
        r = c.cmd("MAIL FROM:<s@example.org> SIZE=10001")
        assert r.code == 552 and r.enhanced == "5.3.4", r
        r = c.cmd("MAIL FROM:<s@example.org> SIZE=99999999999999999999999")
        assert r.code in (552, 501, 555) and _enhanced_ok(r), r
        c.expect("MAIL FROM:<s@example.org> SIZE=9000", 250)
        c.expect("RCPT TO:<%s>" % ALICE, 250)
        assert c.data(it.make_message("small", b"x\n")).code == 250
        c.quit()
    assert len(platform.messages("alice")) == 1


def test_actual_size_over_the_limit_is_552_and_nothing_stored(platform, users, server):
    srv = server(max_message_size=10000)
    with it.Smtp(platform.port) as c:
        c.ehlo()
        big = it.make_message("too big", (b"y" * 70 + b"\n") * 200, sender="s@example.org")
        # Lies about its size: declares 500 octets, sends about 14 KB.
        mail, rr, final = c.transaction("s@example.org", [ALICE], big, mail_params=" SIZE=500")
        assert mail.code == 250
        assert final.code == 552 and final.enhanced == "5.3.4", final
        # Far over the limit, no SIZE: refused, the session survives.
        huge = it.make_message("huge", (b"w" * 70 + b"\n") * 30000, sender="s@example.org")
        mail, rr, final = c.transaction("s@example.org", [ALICE], huge)
        assert final.code == 552 and final.enhanced == "5.3.4", final
        mail, rr, final = c.transaction("s@example.org", [ALICE], it.make_message("fits"))
        assert final.code == 250, final
        c.quit()
    assert [m.header_value("Subject") for m in platform.messages("alice")] == ["fits"]


def test_too_many_errors_close_the_session_with_421(platform, users, server):
    srv = server(max_errors=5)
    with it.Smtp(platform.port) as c:
        c.ehlo()
        codes = []
        try:
            for _ in range(12):
                codes.append(c.cmd("FOO").code)
                if codes[-1] == 421:
                    break
        except EOFError:
            pass
        assert 421 in codes, codes
        assert len(codes) <= 7, codes
        data, closed = c.read_until_eof(5)
        assert closed


def test_raw_pipelined_groups(platform, users, server):
    srv = server()
    m1 = it.dot_stuff(it.to_crlf(it.make_message("pipe 1", sender="s@example.org")))
    m2 = it.dot_stuff(it.to_crlf(it.make_message("pipe 2", sender="s@example.org")))
    with it.Smtp(platform.port) as c:
        # Everything up to DATA in one write, as RFC 2920 allows.
        c.send(b"EHLO c.example.org\r\nMAIL FROM:<s@example.org>\r\n"
               b"RCPT TO:<alice@alice.semail.test>\r\nRCPT TO:<nobody@alice.semail.test>\r\n"
               b"RCPT TO:<bob@bob.semail.test>\r\nDATA\r\n")
        codes = [r.code for r in c.replies(6)]
        assert codes == [250, 250, 250, 550, 250, 354], codes
        # The data, its end, and the whole next group in one write.
        c.send(m1 + b".\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<alice@alice.semail.test>\r\n"
                    b"DATA\r\n")
        codes = [r.code for r in c.replies(4)]
        assert codes == [250, 250, 250, 354], codes
        c.send(m2 + b".\r\nQUIT\r\n")
        codes, data, closed = c.all_replies_until_eof()
        assert codes == [250, 221], data
        assert closed
    assert [m.header_value("Subject") for m in platform.messages("alice")] == ["pipe 1", "pipe 2"]
    assert [m.header_value("Subject") for m in platform.messages("bob")] == ["pipe 1"]


def test_ipv6_listener_delivers(platform, users, server):
    srv = server()
    msg = it.make_message("over v6", sender="s@example.org")
    final = it.send_mail(platform.port, "s@example.org", [ALICE], msg, host="::1")
    assert final.code == 250
    m = platform.messages("alice")[0]
    it.split_delivered(m, msg)
    assert b"::1" in m.header, m.header
