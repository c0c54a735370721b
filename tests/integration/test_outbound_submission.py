"""Who may submit to semail-outbound (SPEC.md sections 2, 5, 6): clients in
trusted_networks without AUTH; anyone else only after AUTH PLAIN or LOGIN
(RFC 4954) against the directory (slapd), offered on the TLS listener only
unless allow_plaintext_auth = yes, and then only with their own address in
MAIL FROM. Also: -t, the 250 "queued as QID" with the message on disk.

The untrusted client binds its socket to 127.0.0.9 (trusted_networks is
127.0.0.1/32, ::1/128); the failure tests use other source addresses so
that a slow-down of failing addresses cannot leak into other tests."""

import smtplib
import time

import pytest

import outbound_it as ot
import semail_it as it

pytestmark = ot.needs_outbound


# --------------------------------------------------------------------------
# Configuration


def test_check_config_accepts_the_test_config(oplatform):
    rc, out = ot.check_config(oplatform)
    assert rc == 0, out


@pytest.mark.parametrize("key,value", [
    ("retry_schedule", "soon"),
    ("max_queue_lifetime", "forever"),
    ("trusted_networks", "127.0.0.1/33"),
    ("remote_port", "70000"),
    ("allow_plaintext_auth", "perhaps"),
])
def test_check_config_names_file_line_and_key(oplatform, key, value):
    oplatform.set_outbound(**{key: value})
    rc, out = ot.check_config(oplatform)
    assert rc == 1, out
    assert oplatform.conf in out and key in out, out
    line = open(oplatform.conf).read().split("\n").index("%s = %s" % (key, value)) + 1
    assert str(line) in out, "line %d not named: %s" % (line, out)


# --------------------------------------------------------------------------
# Trusted clients


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_trusted_client_submits_without_auth_and_the_message_is_on_disk(oplatform, outbound, host):
    srv = outbound(retry_schedule="1h", max_queue_lifetime="2h")
    msg = ot.test_message("queued", to="user@down.test")
    with it.Smtp(oplatform.sub_port, host=host) as c:
        assert c.greeting.code == 220, c.greeting
        e = c.ehlo()
        kw = ot.ehlo_keywords(e)
        for want in ("SIZE", "8BITMIME", "PIPELINING", "ENHANCEDSTATUSCODES"):
            assert want in kw, (want, e)
        assert ot.ehlo_auth(e) is None, "AUTH offered on the plain listener: %r" % e
        mail, rr, final = c.transaction(ot.ALICE, ["user@down.test"], msg)
        assert mail.code == 250 and rr[0].code == 250, (mail, rr)
        assert final.code == 250 and it.QUEUED_RE.match(final.lines[0]), final
        c.quit()
    qid = ot.parse_qid(final)
    assert qid in oplatform.queued_files(), (qid, oplatform.queued_files())


# --------------------------------------------------------------------------
# Untrusted clients without AUTH


def test_untrusted_client_cannot_relay_on_the_plain_listener(oplatform, outbound, remotes):
    sink = remotes.sink(ot.MX_ADDR["v4only"])
    srv = outbound()
    with it.Smtp(oplatform.sub_port, source=ot.UNTRUSTED) as c:
        assert c.greeting.code == 220, c.greeting
        e = c.ehlo()
        assert ot.ehlo_auth(e) is None, "AUTH offered in plain text: %r" % e
        for sender in ("someone@example.org", ot.ALICE, ""):
            r = c.cmd("MAIL FROM:<%s>" % sender)
            assert 500 <= r.code < 600 and (r.enhanced or "").startswith("5.7."), (sender, r)
        r = c.cmd("RCPT TO:<user@v4only.test>")
        assert 500 <= r.code < 600, r
        r = c.cmd("AUTH PLAIN " + ot.b64("\0alice\0" + ot.PASSWORDS["alice"]))
        assert 500 <= r.code < 600, "AUTH in plain text: %r" % r
        r = c.cmd("MAIL FROM:<%s>" % ot.ALICE)
        assert 500 <= r.code < 600, "MAIL accepted after a refused plain-text AUTH: %r" % r
        c.quit()
    assert oplatform.queued_files() == []
    assert sink.messages() == []


def test_untrusted_client_cannot_relay_on_the_tls_listener(oplatform, outbound, remotes):
    sink = remotes.sink(ot.MX_ADDR["v4only"])
    srv = outbound()
    s = ot.smtp_ssl(oplatform)
    try:
        assert {"PLAIN", "LOGIN"} <= ot.auth_mechanisms(s), s.esmtp_features
        code, text = s.mail("someone@example.org")
        assert 500 <= code < 600 and text.decode().startswith("5.7."), (code, text)
        with pytest.raises(smtplib.SMTPSenderRefused) as e:
            s.sendmail(ot.ALICE, ["user@v4only.test"], it.to_crlf(ot.test_message("relay")))
        assert 500 <= e.value.smtp_code < 600
    finally:
        s.close()
    assert oplatform.queued_files() == []
    assert sink.messages() == []


# --------------------------------------------------------------------------
# AUTH


@pytest.mark.parametrize("ldap", ["search-ldap", "dn-template-ldaps"])
@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_auth_over_tls_then_send_as_oneself(oplatform, outbound, remotes, mech, ldap):
    if ldap == "dn-template-ldaps":
        oplatform.set_ldap(uri=oplatform.slapd.tls_uri, filter="",
                           bind_dn="uid=%u," + ot.LDAP_BASE, ca_file=oplatform.slapd.cert)
    sink = remotes.sink(ot.MX_ADDR["v4only"])
    srv = outbound()
    msg = ot.test_message("authenticated %s %s" % (mech, ldap), to="user@v4only.test")
    s = ot.smtp_ssl(oplatform)
    try:
        auth = s.auth_plain if mech == "PLAIN" else s.auth_login
        s.user, s.password = "alice", ot.PASSWORDS["alice"]
        code, text = s.auth(mech, auth)
        assert code == 235 and text.decode().startswith("2.7.0"), (code, text)
        assert s.sendmail(ot.ALICE, ["user@v4only.test"], it.to_crlf(msg)) == {}
    finally:
        s.quit()
    got = ot.wait_until(sink.messages, 20, "the authenticated message at the MX", srv.tail)
    ot.check_delivered(got[0], ot.ALICE, ["user@v4only.test"], msg)


def test_auth_on_the_plain_listener_when_allowed(oplatform, outbound, remotes):
    sink = remotes.sink(ot.MX_ADDR["v4only"])
    srv = outbound(allow_plaintext_auth="yes")
    msg = ot.test_message("plain-text auth", to="user@v4only.test")
    s = ot.smtp_plain(oplatform)
    try:
        assert {"PLAIN", "LOGIN"} <= ot.auth_mechanisms(s), s.esmtp_features
        s.login("alice", ot.PASSWORDS["alice"])
        assert s.sendmail(ot.ALICE, ["user@v4only.test"], it.to_crlf(msg)) == {}
    finally:
        s.quit()
    got = ot.wait_until(sink.messages, 20, "the message at the MX", srv.tail)
    ot.check_delivered(got[0], ot.ALICE, ["user@v4only.test"], msg)


@pytest.mark.parametrize("sender", [ot.BOB, "alice@example.org", "someone@v4only.test"])
def test_authenticated_person_cannot_use_another_address(oplatform, outbound, sender):
    srv = outbound()
    with ot.TlsSmtp(oplatform.tls_port, source="127.0.0.29") as c:
        c.ehlo()
        r = ot.auth_plain(c, "alice", ot.PASSWORDS["alice"])
        assert r.code == 235, r
        r = c.cmd("MAIL FROM:<%s>" % sender)
        assert r.code == 553 and r.enhanced == "5.7.1", r
        # The session goes on: the own address is still accepted.
        r = c.cmd("MAIL FROM:<%s>" % ot.ALICE)
        assert r.code == 250, r
        c.quit()
    assert oplatform.queued_files() == []


@pytest.mark.parametrize("how", ["wrong-password", "unknown-login", "login-mech"])
def test_failed_auth_is_535_5_7_8_and_grants_nothing(oplatform, outbound, how):
    srv = outbound()
    with ot.TlsSmtp(oplatform.tls_port, source="127.0.0.39") as c:
        c.ehlo()
        if how == "wrong-password":
            r = ot.auth_plain(c, "alice", "not-" + ot.PASSWORDS["alice"])
        elif how == "unknown-login":
            r = ot.auth_plain(c, "mallory", ot.PASSWORDS["alice"])
        else:
            r = ot.auth_login(c, "alice", "wrong")
        assert r.code == 535 and r.enhanced == "5.7.8", r
        r = c.cmd("MAIL FROM:<%s>" % ot.ALICE)
        assert 500 <= r.code < 600 and (r.enhanced or "").startswith("5.7."), r
        c.quit()


def test_third_failed_auth_closes_the_session_with_421(oplatform, outbound):
    srv = outbound()
    with ot.TlsSmtp(oplatform.tls_port, source="127.0.0.49", timeout=60) as c:
        c.ehlo()
        replies, times = [], []
        for i in range(4):
            t = time.monotonic()
            try:
                r = ot.auth_plain(c, "alice", "wrong-%d" % i)
            except (EOFError, OSError) as e:
                raise AssertionError("connection closed without a 421 after %r" % replies) from e
            times.append(time.monotonic() - t)
            replies.append(r)
            if r.code == 421:
                break
        codes = [r.code for r in replies]
        assert codes[0] == 535, replies
        assert codes[-1] == 421, "no 421 after %d failures: %r" % (len(codes), replies)
        assert len(codes) <= 4 and codes.count(535) >= 2, replies
        data, closed = c.read_until_eof(10)
        assert closed, "the session stayed open after 421"
    print("reply times of failed AUTH: %s" % ", ".join("%.2fs" % t for t in times))


def test_auth_failures_from_one_address_do_not_block_a_good_login(oplatform, outbound):
    """After failures from 127.0.0.59, a correct login from there still works
    (slowed down perhaps, within the test's bound)."""
    srv = outbound()
    for _ in range(2):
        with ot.TlsSmtp(oplatform.tls_port, source="127.0.0.59", timeout=60) as c:
            c.ehlo()
            assert ot.auth_plain(c, "alice", "wrong").code == 535
            c.quit()
    t = time.monotonic()
    with ot.TlsSmtp(oplatform.tls_port, source="127.0.0.59", timeout=60) as c:
        c.ehlo()
        r = ot.auth_plain(c, "alice", ot.PASSWORDS["alice"])
        assert r.code == 235, r
        c.quit()
    print("good login after failures took %.2fs" % (time.monotonic() - t))
