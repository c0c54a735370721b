"""The servers the semail-outbound tests stand on, checked on their own
(they run whether or not semail-outbound is built): named answers every
scenario's records, smtp-sink and the scripted servers receive and answer
as scripted, slapd binds, and the TLS certificate serves a TLS handshake.
A failure here is the test bed's, not semail-outbound's."""

import smtplib
import socket
import ssl
import subprocess
import threading

import pytest

import outbound_it as ot
import semail_it as it


@pytest.mark.parametrize("name,rtype,want", [
    ("v4only.test", "MX", "10 mx4.v4only.test."),
    ("mx4.v4only.test", "A", "127.0.0.2"),
    ("mx6.v6only.test", "AAAA", "::1"),
    ("pref.test", "MX", "10 mxa.pref.test.\n20 mxb.pref.test."),
    ("implicit.test", "A", "127.0.0.5"),
    ("implicit.test", "MX", ""),
    ("nullmx.test", "MX", "0 ."),
    ("equal.test", "MX", "10 mx1.equal.test.\n10 mx2.equal.test."),
    ("mx.dual.test", "AAAA", "::1"),
    ("bob.semail.test", "MX", "10 mx.semail.test."),
    ("mx.semail.test", "A", "127.0.0.1"),
])
def test_named_answers_the_scenario_records(named_server, name, rtype, want):
    got = sorted(named_server.dig(name, rtype).split("\n"))
    assert "\n".join(x for x in got if x) == want
    # The same over IPv6.
    got6 = sorted(named_server.dig(name, rtype, server="::1").split("\n"))
    assert got6 == got


def test_named_says_nxdomain_and_noerror_without_data(named_server):
    assert named_server.status(ot.NXDOMAIN, "MX") == "NXDOMAIN"
    assert named_server.status("implicit.test", "MX") == "NOERROR"
    # Not our zone: no recursion, so REFUSED (a temporary failure for a resolver).
    assert named_server.status("example.org", "MX") == "REFUSED"


@pytest.mark.parametrize("addr", ["127.0.0.2", "::1"])
def test_smtp_sink_dumps_what_swaks_sends(remotes, addr):
    sink = remotes.sink(addr)
    msg = ot.test_message("sink check", sender="a@x.test", to="b@v4only.test")
    with open(sink.dir + "/msg.eml", "wb") as f:
        f.write(it.dot_stuff(it.to_crlf(msg)) + b".\r\n")
    p = it.run(["swaks", "--server", addr, "--port", str(remotes.port), "--from", "a@x.test",
                "--to", "b@v4only.test,c@v4only.test", "--data", "@" + sink.dir + "/msg.eml",
                "--no-data-fixup", "--timeout", "10"], timeout=30)
    assert p.returncode == 0, p.stdout.decode()[-2000:]
    got = ot.wait_until(sink.messages, 10, "the sink's dump")
    assert len(got) == 1
    assert got[0].mail_from == "a@x.test"
    assert got[0].rcpts == ["b@v4only.test", "c@v4only.test"]
    assert got[0].client == ("::1" if addr == "::1" else "127.0.0.1")
    assert got[0].subject == "sink check"
    assert got[0].text == msg


def test_scripted_server_451_then_250(remotes):
    srv = remotes.scripted("127.0.0.7", ot.script_first_n(1, "RCPT", "451 4.3.0 try later"))
    msg = ot.test_message("retry me")
    wire = it.to_crlf(msg)
    for attempt in (1, 2):
        with smtplib.SMTP("127.0.0.7", remotes.port, timeout=10) as s:
            if attempt == 1:
                with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
                    s.sendmail("a@x.test", ["b@tempfail.test"], wire)
                assert e.value.recipients["b@tempfail.test"][0] == 451
            else:
                assert s.sendmail("a@x.test", ["b@tempfail.test"], wire) == {}
    got = srv.messages()
    assert len(got) == 1 and got[0].rcpts == ["b@tempfail.test"]
    assert got[0].text == msg
    assert srv.connection_count() == 2


def test_scripted_server_550_to_rcpt(remotes):
    srv = remotes.scripted("127.0.0.8", ot.script_always("RCPT", "550 5.1.1 no such user here"))
    with smtplib.SMTP("127.0.0.8", remotes.port, timeout=10) as s:
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            s.sendmail("a@x.test", ["b@reject.test"], b"Subject: x\r\n\r\nx\r\n")
    assert srv.messages() == []


def test_scripted_server_that_hangs_never_greets(remotes):
    srv = remotes.scripted("127.0.0.6", ot.script_always("CONNECT", None))
    with socket.create_connection(("127.0.0.6", remotes.port), timeout=1.0) as s:
        with pytest.raises(socket.timeout):
            s.recv(10)
    ot.wait_until(lambda: srv.connections and srv.connections[0]["end"], 5,
                  "the hanging server to see the client close")
    assert srv.connections[0]["closed_by_peer"]


def test_slapd_binds_people_and_refuses_a_wrong_password(slapd_server):
    assert slapd_server.whoami("alice", ot.PASSWORDS["alice"]) == 0
    assert slapd_server.whoami("alice", "wrong") == 49
    assert slapd_server.whoami("bob", ot.PASSWORDS["bob"], tls=True) == 0


def test_tls_pair_serves_a_verified_handshake(tls_pair):
    cert, key = tls_pair
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    lsock.settimeout(20)
    port = lsock.getsockname()[1]

    def echo():
        try:
            conn, _ = lsock.accept()
            with ctx.wrap_socket(conn, server_side=True) as t:
                t.settimeout(10)
                t.sendall(t.recv(100))
                t.unwrap()          # close_notify: s_client then exits 0
        except (OSError, ssl.SSLError):
            pass
    th = threading.Thread(target=echo, daemon=True)
    th.start()
    p = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port,
                        "-CAfile", cert, "-verify_return_error", "-quiet"],
                       input=b"ping\n", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=30)
    th.join(timeout=10)
    lsock.close()
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout == b"ping\n"
