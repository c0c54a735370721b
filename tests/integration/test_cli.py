"""Command lines: --version, --help, -t, and semail-admin's user commands,
good and bad input (SPEC.md sections 2, 3 and 7)."""

import json
import os
import re

import pytest

import semail_it as it


@pytest.mark.parametrize("prog", [it.INBOUND, it.ADMIN])
def test_version_prints_name_and_version_and_exits_0(prog):
    p = it.run([prog, "--version"], timeout=20)
    assert p.returncode == 0, p.stderr
    out = p.stdout.decode()
    assert os.path.basename(prog) in out
    assert re.search(r"\d+\.\d+\.\d+", out), out


@pytest.mark.parametrize("prog", [it.INBOUND, it.ADMIN])
def test_help_prints_usage_and_exits_0(prog):
    p = it.run([prog, "--help"], timeout=20)
    assert p.returncode == 0, p.stderr
    assert "-c" in p.stdout.decode()
    assert not it.sanitizer_report(p.stderr.decode())


def test_check_config_accepts_the_test_config(platform):
    p = it.run([it.INBOUND, "-c", platform.conf, "-t"], timeout=20)
    assert p.returncode == 0, p.stderr.decode()
    p = it.run([it.INBOUND, "--check-config", "-c", platform.conf], timeout=20)
    assert p.returncode == 0, p.stderr.decode()


def _bad_config(platform, key, value):
    """The test config with KEY = VALUE appended to [inbound]; returns the line number."""
    text = platform.config_text()
    lines = text.split("\n")
    at = lines.index("[inbound]") + 1
    lines.insert(at, "%s = %s" % (key, value))
    with open(platform.conf, "w") as f:
        f.write("\n".join(lines))
    return at + 1


@pytest.mark.parametrize("key,value", [
    ("max_recipients", "lots"),
    ("max_message_size", "-5"),
    ("command_timeout", "soon"),
    ("no_such_key", "1"),
])
def test_check_config_names_file_line_and_key_of_a_bad_value(platform, key, value):
    line = _bad_config(platform, key, value)
    for prog in (it.INBOUND, it.ADMIN):
        p = it.run([prog, "-c", platform.conf, "-t"], timeout=20)
        err = p.stderr.decode() + p.stdout.decode()
        assert p.returncode == 1, (prog, p.returncode, err)
        assert platform.conf in err, err
        assert re.search(r"\b%d\b" % line, err), "line %d not named: %s" % (line, err)
        assert key in err, err


def test_inbound_refuses_to_start_on_a_bad_config(platform):
    _bad_config(platform, "max_recipients", "lots")
    p = it.run([it.INBOUND, "-c", platform.conf], timeout=20)
    assert p.returncode != 0
    assert "max_recipients" in p.stderr.decode()


def test_missing_config_file_is_a_clear_error(tmp_path):
    missing = str(tmp_path / "nope.conf")
    p = it.run([it.INBOUND, "-c", missing, "-t"], timeout=20)
    assert p.returncode == 1
    assert missing in p.stderr.decode()


# --------------------------------------------------------------------------
# semail-admin user ...


def test_user_create_show_list_delete(platform):
    assert platform.create_user("alice") == "alice@alice.semail.test"
    assert platform.create_user("carol", ident="c.r", domain="carol.example") == "c.r@carol.example"

    p = platform.admin("user", "show", "alice", "--json")
    assert p.returncode == 0, p.stderr.decode()
    obj = json.loads(p.stdout.decode())
    assert obj["login"] == "alice"
    assert obj["address"] == "alice@alice.semail.test"
    assert isinstance(obj["uid"], int) and obj["uid"] > 0
    assert obj["ssh_port"] is None
    assert obj["state"] == "active"

    users = platform.users_json()
    assert isinstance(users, list), users
    assert sorted(u["login"] for u in users) == ["alice", "carol"]
    assert {u["address"] for u in users} == {"alice@alice.semail.test", "c.r@carol.example"}
    assert len({u["uid"] for u in users}) == 2, "two boxes share a uid"

    p = platform.admin("user", "list")
    assert p.returncode == 0 and b"alice" in p.stdout and b"carol" in p.stdout

    platform.delete_user("alice")
    assert [u["login"] for u in platform.users_json()] == ["carol"]
    p = platform.admin("user", "show", "alice", "--json")
    assert p.returncode != 0 and p.stderr.strip(), "show of a deleted user must fail clearly"


def _snapshot(platform):
    files = []
    for root in (platform.state_dir, platform.mail_root):
        for d, dirs, fs in os.walk(root):
            for name in dirs + fs:
                if name.endswith(".lock"):
                    continue
                files.append(os.path.relpath(os.path.join(d, name), platform.root))
    reg = os.path.join(platform.state_dir, "registry")
    content = open(reg, "rb").read() if os.path.exists(reg) else None
    return sorted(files), content


@pytest.mark.parametrize("args,what", [
    (["user", "create", "x", "--id", "../x", "--subdomain", "x"], "id with a path"),
    (["user", "create", "x", "--id", "x/y", "--subdomain", "x"], "id with a slash"),
    (["user", "create", "x", "--id", "x", "--subdomain", "a.b"], "subdomain with a dot"),
    (["user", "create", "x", "--id", "x", "--subdomain", "../b"], "subdomain with a path"),
    (["user", "create", "x", "--id", "x", "--subdomain", "-x"], "subdomain with a leading -"),
    (["user", "create", "x", "--id", "x", "--subdomain", "s" * 64], "64-byte subdomain"),
    (["user", "create", "x", "--id", "i" * 64, "--subdomain", "x"], "64-byte id"),
    (["user", "create", "l" * 64, "--id", "x", "--subdomain", "x"], "64-byte login"),
    (["user", "create", "*)(uid=*", "--id", "x", "--subdomain", "x"], "LDAP filter login"),
    (["user", "create", "../etc", "--id", "x", "--subdomain", "x"], "login with a path"),
    (["user", "create", "Al ice", "--id", "x", "--subdomain", "x"], "login with a space"),
    (["user", "create", "x", "--id", "x", "--domain", "evil..test"], "bad own domain"),
    (["user", "create", "x", "--id", "x", "--domain", "semail.test/../x"], "own domain, path"),
    (["user", "create", "x", "--id", "x"], "no subdomain nor domain"),
    (["user", "create", "x", "--subdomain", "x"], "no id"),
    (["user", "create", "x", "--id", "x", "--subdomain", "x", "--domain", "x.test"],
     "both subdomain and domain"),
    (["user", "create", "x", "--id", "x\nid", "--subdomain", "x"], "id with a newline"),
    (["user", "create", "x\tl", "--id", "x", "--subdomain", "x"], "login with a tab"),
    (["user", "delete", "nobody"], "delete of an unknown login"),
    (["user", "frobnicate", "x"], "unknown subcommand"),
])
def test_admin_refuses_bad_input_and_creates_nothing(platform, args, what):
    platform.create_user("alice")
    before = _snapshot(platform)
    p = platform.admin(*args)
    err = p.stderr.decode()
    assert p.returncode > 0, "%s: exit %d (want a non-zero exit, no crash)" % (what, p.returncode)
    assert err.strip(), "%s: no message on stderr" % what
    assert "Traceback" not in err and "Segmentation" not in err
    assert _snapshot(platform) == before, "%s changed the state or the mail root" % what
    assert [u["login"] for u in platform.users_json()] == ["alice"]


def test_admin_refuses_a_taken_login_address_or_subdomain(platform):
    platform.create_user("alice")
    before = _snapshot(platform)
    for args in (["user", "create", "alice", "--id", "other", "--subdomain", "other"],
                 ["user", "create", "mallory", "--id", "alice", "--subdomain", "alice"]):
        p = platform.admin(*args)
        assert p.returncode > 0, args
        assert p.stderr.strip(), args
    assert _snapshot(platform) == before
    assert [u["address"] for u in platform.users_json()] == ["alice@alice.semail.test"]
