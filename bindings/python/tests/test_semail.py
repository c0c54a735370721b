"""Tests of the Python binding against the real libsemail.so.0.

The library comes from $SEMAIL_LIBRARY, $SEMAIL_BUILD/lib or the source
tree's build/lib (see semail/_lib.py). Run:
    SEMAIL_BUILD=/path/to/build /usr/bin/python3 -m pytest -q bindings/python/tests
"""

from __future__ import annotations

import mailbox
import os
import re
from pathlib import Path

import pytest

import semail
from semail import mbox, registry

REPO = Path(__file__).resolve().parents[3]


# -- version and errors -----------------------------------------------------


def test_version__matches_the_headers():
    header = (REPO / "include" / "semail" / "version.h").read_text()
    expected = re.search(r'#define SEMAIL_VERSION "([^"]+)"', header).group(1)
    assert semail.version() == expected
    assert ".".join(map(str, semail.version_info())) == expected


def test_errors__carry_code_name_and_last_message():
    with pytest.raises(semail.InvalidError) as info:
        semail.parse_address("<alice@>")
    err = info.value
    assert err.code == semail.errors.EINVAL == -8
    assert err.name == "SEMAIL_EINVAL"
    assert err.message and err.message in str(err)
    assert isinstance(err, ValueError) and isinstance(err, semail.SemailError)


# -- addresses --------------------------------------------------------------


def test_address__parses_path_and_reports_consumed_bytes():
    a = semail.parse_address("<Alice@Example.ORG> SIZE=100")
    assert (a.local, a.domain, a.is_null) == ("Alice", "Example.ORG", False)
    assert a.consumed == len("<Alice@Example.ORG>")
    assert str(a) == "Alice@Example.ORG"


def test_address__quoted_local_part_round_trips():
    a = semail.parse_address('<"a b"@x.test>')
    assert a.local == "a b" and a.local_quoted
    assert str(a) == '"a b"@x.test'


def test_address__null_path_only_when_allowed():
    with pytest.raises(semail.SemailError):
        semail.parse_address("<>")
    a = semail.parse_address("<>", allow_null=True)
    assert a.is_null and str(a) == ""


# -- SMTP session -----------------------------------------------------------


def _lines(reply: bytes) -> list[str]:
    return reply.decode().split("\r\n")[:-1]


def test_session__conversation_with_python_callbacks():
    asked, delivered = [], []

    def rcpt(env, addr):
        asked.append(str(addr))
        return addr.local == "alice"  # True: 250, False: 550 user unknown

    def message(env, data):
        delivered.append((env, data))
        return True

    s = semail.Session("mx.semail.test", rcpt, message, client_addr="192.0.2.7")
    greeting = s.read()
    assert greeting.startswith(b"220 mx.semail.test") and greeting.endswith(b"\r\n")

    ehlo = _lines(s.exchange(b"EHLO client.test\r\n"))
    assert ehlo[0].startswith("250-mx.semail.test") and ehlo[-1].startswith("250 ")
    assert s.state == semail.SessionState.READY

    assert s.exchange(b"MAIL FROM:<Bob@Example.org>\r\n").startswith(b"250")
    refused = s.exchange(b"RCPT TO:<nobody@alice.semail.test>\r\n")
    assert refused.startswith(b"550 5.1.1 ") and b"nobody@alice.semail.test" in refused
    assert s.exchange(b"RCPT TO:<alice@alice.semail.test>\r\n").startswith(b"250 2.1.5")
    assert asked == ["nobody@alice.semail.test", "alice@alice.semail.test"]
    assert s.state == semail.SessionState.RCPT

    assert s.exchange(b"DATA\r\n").startswith(b"354")
    body = b"Subject: hi\r\n\r\nline one\r\n..dot-stuffed\r\n.\r\n"
    done = s.exchange(body)
    assert done.startswith(b"250 2.0.0 Ok: queued as ")

    assert len(delivered) == 1
    env, data = delivered[0]
    assert data == b"Subject: hi\r\n\r\nline one\r\n.dot-stuffed\r\n"
    assert env.helo == "client.test" and env.esmtp
    assert str(env.sender) == "Bob@Example.org"
    assert [str(r) for r in env.rcpts] == ["alice@alice.semail.test"]
    assert env.client_addr == "192.0.2.7"
    assert env.txn_id and env.txn_id.encode() in done

    assert s.exchange(b"QUIT\r\n").startswith(b"221")
    assert s.closed
    stats = s.stats()
    assert stats.messages == 1 and stats.rejected == 1
    s.close()


def test_session__callback_reply_tuple_is_sent_as_is():
    s = semail.Session(
        "mx.test",
        lambda env, addr: (451, "4.7.1", "Greylisted, try again"),
        lambda env, data: True,
    )
    s.read()
    # One command at a time: after HELO (no PIPELINING offered) a client
    # that sends ahead is cut off.
    s.exchange(b"HELO c\r\n")
    s.exchange(b"MAIL FROM:<>\r\n")
    assert s.exchange(b"RCPT TO:<a@b.test>\r\n") == b"451 4.7.1 Greylisted, try again\r\n"


def test_session__callback_exception_answers_451_and_is_reraised():
    def rcpt(env, addr):
        raise RuntimeError("directory down")

    s = semail.Session("mx.test", rcpt, lambda env, data: True)
    s.read()
    s.exchange(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\n")
    with pytest.raises(RuntimeError, match="directory down"):
        s.feed(b"RCPT TO:<x@b.test>\r\n")
    assert s.read().startswith(b"451 4.3.0")
    assert s.state == semail.SessionState.MAIL  # the session goes on


def test_session__message_callback_refusal():
    s = semail.Session(
        "mx.test", lambda env, addr: True, lambda env, data: (552, "5.2.2", "Mailbox full")
    )
    s.read()
    s.exchange(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@b.test>\r\nDATA\r\n")
    assert s.exchange(b"hello\r\n.\r\n") == b"552 5.2.2 Mailbox full\r\n"


def test_session__shutdown_queues_421_and_closes():
    s = semail.Session("mx.test", lambda e, a: True, lambda e, d: True)
    s.read()
    s.shutdown()
    assert s.read().startswith(b"421 ")
    assert s.closed


# -- mbox -------------------------------------------------------------------


@pytest.mark.parametrize(
    "recipient, sender, expected",
    [
        ("alice@alice.semail.test", "Bob@Example.org", "alice@alice.semail.test,bob@example.org"),
        ("alice@alice.semail.test", "", "alice@alice.semail.test,MAILER-DAEMON"),
        ("alice@alice.semail.test", None, "alice@alice.semail.test,MAILER-DAEMON"),
        (".alice@a.test", "b c@d.test", "%2Ealice@a.test,b%20c@d.test"),
        ("alice@a.test", "x/y@d.test", "alice@a.test,x%2Fy@d.test"),
    ],
)
def test_mbox__folder_names_per_spec(recipient, sender, expected):
    assert mbox.folder_name(recipient, sender) == expected


def test_mbox__append_reads_back_with_python_mailbox(tmp_path):
    path = tmp_path / "INBOX"
    msg = b"Subject: one\r\n\r\nFrom the start\r\n>From quoted\r\nend\r\n"
    mbox.append(path, msg, sender="bob@example.org", date=1700000000,
                prepend=b"Return-Path: <bob@example.org>\r\n")
    mbox.append(path, b"Subject: two\n\nsecond\n", sender=None)

    box = mailbox.mbox(str(path), create=False)
    try:
        msgs = list(box)
    finally:
        box.close()
    assert len(msgs) == 2
    assert msgs[0]["Subject"] == "one"
    assert msgs[0]["Return-Path"] == "<bob@example.org>"
    assert msgs[0].get_from().startswith("bob@example.org ")
    assert "2023" in msgs[0].get_from()  # asctime of 1700000000
    # mboxrd: one more '>' on every ^>*From line; CRLF stored as LF.
    assert msgs[0].get_payload() == ">From the start\n>>From quoted\nend\n"
    assert msgs[1]["Subject"] == "two"
    assert msgs[1].get_from().startswith("MAILER-DAEMON ")


def test_mbox__transaction_appends_to_every_file(tmp_path):
    a, b = tmp_path / "INBOX", tmp_path / mbox.folder_name("alice@a.test", "bob@b.test")
    with mbox.Transaction() as txn:
        txn.add(a, b"Subject: t\n\nbody\n", sender="bob@b.test")
        txn.add(b, b"Subject: t\n\nbody\n", sender="bob@b.test")
        txn.commit()
    for p in (a, b):
        box = mailbox.mbox(str(p), create=False)
        assert [m["Subject"] for m in box] == ["t"]
        box.close()


def test_mbox__failed_transaction_leaves_files_unchanged(tmp_path):
    inbox = tmp_path / "INBOX"
    mbox.append(inbox, b"Subject: old\n\nold\n")
    before = inbox.read_bytes()
    with mbox.Transaction(mbox.Options(lock_timeout_ms=1000)) as txn:
        txn.add(inbox, b"Subject: new\n\nnew\n")
        txn.add(tmp_path / "missing-dir" / "INBOX", b"Subject: new\n\nnew\n")
        with pytest.raises(semail.SemailError):
            txn.commit()
    assert inbox.read_bytes() == before


def test_mbox__options_set_the_file_mode(tmp_path):
    path = tmp_path / "box"
    mbox.append(path, b"Subject: m\n\nx\n", options=mbox.Options(file_mode=0o640))
    assert (path.stat().st_mode & 0o777) == 0o640


# -- configuration ----------------------------------------------------------


def test_config__load_reads_values_and_defaults(tmp_path):
    path = tmp_path / "semail.conf"
    path.write_text(
        "[global]\nhostname = mx.example.test\n"
        "[inbound]\nmax_message_size = 10m\ncommand_timeout = 2m\n"
        "[storage]\nbackend = directory\n"
    )
    with semail.Config.load(path) as cfg:
        assert cfg.path == str(path)
        assert cfg.get("global", "hostname") == "mx.example.test"
        assert cfg["storage", "backend"] == "directory"
        assert cfg.get_size("inbound", "max_message_size") == 10 * 1024 * 1024
        assert cfg.get_duration_ms("inbound", "command_timeout") == 120_000
        assert cfg.get_uint("inbound", "max_recipients") == 100  # default
        assert cfg.get_list("inbound", "listen") == ["[::]:25", "0.0.0.0:25"]
        assert cfg.get_range("global", "uid_range") == (20000, 29999)
        assert cfg.has_section("storage") and not cfg.has_section("ldap")
        with pytest.raises(KeyError):
            cfg.get("global", "no_such_key")


def test_config__error_names_file_line_and_key(tmp_path):
    path = tmp_path / "bad.conf"
    path.write_text("[global]\nhostname = mx.test\n\n[inbound]\nmax_recipients = lots\n")
    with pytest.raises(semail.ConfigError) as info:
        semail.Config.load(path)
    err = info.value
    assert err.code == semail.errors.ECONFIG
    assert f"{path}:5:" in str(err)
    assert "max_recipients" in str(err)


def test_config__parse_error_uses_the_given_name():
    with pytest.raises(semail.ConfigError, match=r"inline\.conf:2: .*'bogus'"):
        semail.Config.parse("[global]\nbogus = 1\n", name="inline.conf")


def test_config__missing_file_is_not_found(tmp_path):
    with pytest.raises(semail.NotFoundError):
        semail.Config.load(tmp_path / "nope.conf")


# -- registry ---------------------------------------------------------------


def _user(login, ident, domain, uid, **kw):
    return registry.User(login=login, id=ident, domain=domain, uid=uid, gid=uid,
                         created=1700000000, **kw)


def test_registry__records_read_back_as_dataclasses(tmp_path):
    state = tmp_path
    registry.add(state, _user("bob", "bob", "example.org", 20001,
                              kind=registry.DomainKind.OWN, ssh_keys="ssh-ed25519 AAAA bob"))
    registry.add(state, _user("alice", "alice", "alice.semail.test", 20000))

    with semail.Registry(state) as reg:
        users = list(reg)
        assert len(reg) == 2
        assert [u.login for u in users] == ["alice", "bob"]  # login order
        bob = users[1]
        assert bob.address == "bob@example.org"
        assert bob.kind == registry.DomainKind.OWN
        assert (bob.uid, bob.gid, bob.ssh_keys) == (20001, 20001, "ssh-ed25519 AAAA bob")
        assert bob.container is None and bob.state == registry.UserState.ACTIVE
        assert bob.as_dict()["kind"] == "own"

        found = reg.find_address("ALICE@Alice.Semail.Test")
        assert found is not None and found.login == "alice"
        assert reg.find_address("alice", "alice.semail.test").login == "alice"
        assert reg.find_address("carol@alice.semail.test") is None
        assert reg.find_login("bob").domain == "example.org"
        assert reg.has_domain("example.org") and not reg.has_domain("other.test")
        assert not reg.changed()
        registry.remove(state, "bob")
        assert reg.changed()
        assert reg.find_login("bob") is not None  # a snapshot does not move
    with semail.Registry(state) as reg:
        assert [u.login for u in reg] == ["alice"]


def test_registry__duplicate_address_raises_exists(tmp_path):
    registry.add(tmp_path, _user("alice", "alice", "a.test", 20000))
    with pytest.raises(semail.ExistsError):
        registry.add(tmp_path, _user("alice2", "alice", "a.test", 20002))


def test_registry__inactive_box_receives_nothing(tmp_path):
    registry.add(tmp_path, _user("dave", "dave", "d.test", 20003,
                                 state=registry.UserState.DELETING))
    with semail.Registry(tmp_path) as reg:
        assert reg.find_address("dave@d.test") is None
        assert reg.find_login("dave").state == registry.UserState.DELETING


def test_registry__missing_file_is_empty(tmp_path):
    with semail.Registry(tmp_path / "nothing-here") as reg:
        assert len(reg) == 0 and list(reg) == []
