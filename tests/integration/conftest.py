"""Fixtures of the SEMail integration suite.

- `platform`: a fresh temporary platform per test (config, state_dir,
  mail_root, free loopback ports on 127.0.0.1 and ::1).
- `server`: a factory: `server(**inbound_settings)` writes those [inbound]
  settings, creates nothing else, starts semail-inbound, waits until it
  answers 220, and registers it for teardown, which SIGTERMs it and asserts
  exit status 0 and a stderr free of ASan/UBSan reports.
- `alice`: the platform with users alice (alice@alice.semail.test) and bob
  (bob@bob.semail.test) registered.

The programs come from $SEMAIL_BUILD/bin (default /work/main/build).
"""

import os

import pytest

import semail_it as it


def pytest_configure(config):
    config.addinivalue_line("markers", "root: needs root (mounts a tmpfs)")


def pytest_collection_modifyitems(config, items):
    missing = [p for p in (it.INBOUND, it.ADMIN) if not os.access(p, os.X_OK)]
    if not missing:
        return
    # Without the programs nothing here can run; say so once per test rather
    # than failing with FileNotFoundError in every fixture.
    skip = pytest.mark.skip(reason="not built: %s (set SEMAIL_BUILD)" % ", ".join(missing))
    for item in items:
        item.add_marker(skip)


@pytest.fixture
def platform(tmp_path):
    return it.Platform(tmp_path)


@pytest.fixture
def server(platform):
    started = []

    def start(**inbound):
        if inbound:
            platform.write_config(**inbound)
        srv = it.Server(platform)
        started.append(srv)
        return srv.start()

    yield start
    errors = []
    for srv in started:
        try:
            srv.stop()
        except AssertionError as e:
            errors.append(str(e))
    if errors:
        pytest.fail("\n\n".join(errors), pytrace=False)


@pytest.fixture
def users(platform):
    """alice@alice.semail.test and bob@bob.semail.test."""
    return {"alice": platform.create_user("alice"), "bob": platform.create_user("bob")}


# --------------------------------------------------------------------------
# semail-outbound (tests/integration/test_outbound_*.py; helpers in outbound_it.py)
#
# - `named_server`, `slapd_server`, `tls_pair`: started once per session, on
#   free loopback ports, stopped at the end (only when a test asks for them).
# - `oplatform`: a platform whose config has [outbound] (resolver = the
#   session's named, remote_port = the platform's port) and [ldap] (slapd),
#   with alice@alice.semail.test and bob@bob.semail.test registered.
# - `outbound`: a factory like `server`: `outbound(**outbound_settings)`
#   starts semail-outbound; teardown SIGTERMs it and asserts exit 0 and a
#   clean sanitizer report.
# - `remotes`: `remotes.sink(addr)` (Postfix smtp-sink) and
#   `remotes.scripted(addr, script)` on addr:remote_port; stopped at teardown.

import outbound_it as ot


@pytest.fixture(scope="session")
def tls_pair(tmp_path_factory):
    return ot.make_tls_pair(str(tmp_path_factory.mktemp("tls")))


@pytest.fixture(scope="session")
def named_server(tmp_path_factory):
    srv = ot.Named(tmp_path_factory.mktemp("named"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def slapd_server(tmp_path_factory, tls_pair):
    srv = ot.Slapd(tmp_path_factory.mktemp("slapd"), *tls_pair)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def oplatform(tmp_path, named_server, slapd_server, tls_pair):
    p = ot.OutboundPlatform(tmp_path, named_server, slapd_server, tls_pair)
    # The boxes are made without [ldap]: registering them is not what these
    # tests are about, and semail-admin need not reach the directory for it.
    p.ldap = None
    p.write_config()
    p.create_user("alice")
    p.create_user("bob")
    p.ldap = {}
    p.write_config()
    return p


@pytest.fixture
def outbound(oplatform):
    started = []

    def start(**settings):
        if settings:
            oplatform.set_outbound(**settings)
        srv = ot.Outbound(oplatform)
        started.append(srv)
        return srv.start()

    yield start
    errors = []
    for srv in started:
        try:
            srv.stop()
        except AssertionError as e:
            errors.append(str(e))
    if errors:
        pytest.fail("\n\n".join(errors), pytrace=False)


class _Remotes:
    def __init__(self, port):
        self.port = port
        self.all = []

    def sink(self, addr, name=None):
        s = ot.SmtpSink(addr, self.port, name).start()
        self.all.append(s)
        return s

    def scripted(self, addr, script=None, name=None):
        s = ot.ScriptedSmtp(addr, self.port, script, name).start()
        self.all.append(s)
        return s

    def close(self):
        errors = []
        for s in self.all:
            try:
                s.stop()
            except AssertionError as e:
                errors.append(str(e))
            s.cleanup()
        return errors


@pytest.fixture
def remotes(request):
    """Remote servers on the test's remote port (the oplatform's, or a free one)."""
    port = (request.getfixturevalue("oplatform").remote_port
            if "oplatform" in request.fixturenames else ot.free_port())
    r = _Remotes(port)
    yield r
    errors = r.close()
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


# --------------------------------------------------------------------------
# Provisioning (tests/integration/test_provision_*.py; helpers in provision_it.py)
#
# - `prov_bed`: the session's own dockerd (socket, data root and bridge of
#   its own), BIND9 with the dynamic zones semail.test and example.test and
#   a TSIG key, the session's slapd, ed25519 keys made for the run. Skips
#   (saying why) when the machine cannot: not root, a program missing.
# - `user_image`: `semail-admin image build` once per session into that
#   engine (cache shared on the machine, see provision_it.CACHE_DIR).
# - `pplatform`: a platform with image storage, containers, DNS and LDAP
#   turned on; teardown removes whatever the test left (boxes, containers,
#   mounts, loop devices, DNS records); `pplatform_noimage`: the same
#   without the image, for input refused before the container step.
# - `pinbound`: semail-inbound of that platform, stopped at teardown with
#   exit status and sanitizer checks.

import provision_it as pv


@pytest.fixture(scope="session")
def prov_bed(tmp_path_factory, request):
    reason = pv.machine_skip_reason()
    if reason:
        pytest.skip(reason)
    slapd = request.getfixturevalue("slapd_server")
    bed = pv.Bed(tmp_path_factory.mktemp("provision"), slapd)
    yield bed
    errors = bed.close()
    if errors:
        print("provisioning test bed teardown: %s" % errors)


@pytest.fixture(scope="session")
def user_image(prov_bed, tmp_path_factory):
    prov_bed.require("engine", "named")
    pv.require("container", "image build")
    if pv.bootstrap_tool() is None:
        pytest.skip("neither mmdebstrap nor debootstrap is installed (Debian package "
                    "debootstrap): `image build` cannot make the user image")
    builder = pv.ProvPlatform(tmp_path_factory.mktemp("image-build"), prov_bed)
    p, seconds = pv.build_user_image(prov_bed.engine, builder)
    pv.skip_if_not_yet(p, "image build")
    assert p.returncode == 0, "semail-admin image build failed (%d) after %.0fs:\n%s%s" % (
        p.returncode, seconds, p.stdout.decode()[-3000:], p.stderr.decode()[-5000:])
    assert prov_bed.engine.has_image(pv.IMAGE), \
        "image build exited 0 but the engine has no %s" % pv.IMAGE
    return seconds


def _pplatform(tmp_path, prov_bed):
    prov_bed.require("engine", "named")
    pv.require("provision", "storage", "dns", "container")
    p = pv.ProvPlatform(tmp_path, prov_bed)
    yield p
    errors = p.cleanup()
    if errors:
        pytest.fail("provisioning teardown: %s" % "\n".join(errors), pytrace=False)


@pytest.fixture
def pplatform(tmp_path, prov_bed, user_image):
    yield from _pplatform(tmp_path, prov_bed)


@pytest.fixture
def pplatform_noimage(tmp_path, prov_bed):
    """`pplatform` without waiting for the user image: for what must fail
    before the container step (bad input)."""
    yield from _pplatform(tmp_path, prov_bed)


@pytest.fixture
def pinbound(pplatform):
    srv = it.Server(pplatform, name="inbound")
    srv.start()
    yield srv
    srv.stop()
