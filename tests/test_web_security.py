"""--web.config.file: exporter-toolkit's format, real TLS handshakes, basic auth, reloads.

Certificates are made per session with the openssl CLI; the server is the daemon's own
HTTP server, in-process over a small registry, except where the daemon itself is the
subject (start-up errors, the listening line)."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import ssl
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest

from conftest import missing
from nodeslo.web import auth as webauth
from nodeslo.web.clienthello import client_max_version
from nodeslo.web.webconfig import (
    CIPHER_SUITES,
    WebConfigCollector,
    WebConfigError,
    WebConfigSource,
    load_web_config,
    parse_go_duration,
)
from support import daemon as d
from support import tlscerts
from support import webserver as w
from support.exposition import value

# Cost 4, the minimum: the tests check behaviour, not bcrypt's speed.
PASSWORD = "s3cret pass"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
GOOD = w.basic("prometheus", PASSWORD)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tlscerts.Certs:
    if tlscerts.openssl() is None:
        missing("the openssl CLI is not installed (Debian package openssl)")
    return tlscerts.make(tmp_path_factory.mktemp("certs"))


def write(path: Path, text: str) -> str:
    """Replace the file atomically, with a new mtime even within one clock tick."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return str(path)


def tls_config(certs: tlscerts.Certs, extra: str = "", users: bool = True) -> str:
    text = (
        "tls_server_config:\n"
        f"  cert_file: {certs.server.cert}\n"
        f"  key_file: {certs.server.key}\n"
        f"{extra}"
    )
    if users:
        text += f"basic_auth_users:\n  prometheus: {HASH}\n"
    return text


MTLS = "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {ca}\n"


def client(
    certs: tlscerts.Certs,
    cert: tlscerts.Pair | None = None,
    minimum: ssl.TLSVersion | None = None,
    maximum: ssl.TLSVersion | None = None,
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs.ca.cert))
    if cert is not None:
        context.load_cert_chain(str(cert.cert), str(cert.key))
    if minimum is not None:
        context.minimum_version = minimum
    if maximum is not None:
        context.maximum_version = maximum
    return context


@pytest.fixture
def mtls_server(certs: tlscerts.Certs, tmp_path: Path) -> Iterator[int]:
    path = write(tmp_path / "web.yml", tls_config(certs, MTLS.format(ca=certs.ca.cert)))
    with w.serving(WebConfigSource(path)) as server:
        yield w.port(server)


# --- what a user sees: the handshakes and the answers ---------------------------------


def test_valid_client_with_certificate_and_password_is_served(
    certs: tlscerts.Certs, mtls_server: int
) -> None:
    reply = w.get(mtls_server, headers=GOOD, context=client(certs, certs.client))
    assert reply.status == 200
    assert "nodeslo_test_up 1.0" in reply.body


def test_wrong_password_unknown_user_or_none_get_401_with_a_challenge(
    certs: tlscerts.Certs, mtls_server: int
) -> None:
    context = client(certs, certs.client)
    for headers in (w.basic("prometheus", "wrong"), w.basic("mallory", PASSWORD), {}):
        reply = w.get(mtls_server, headers=headers, context=context)
        assert reply.status == 401
        assert reply.headers["WWW-Authenticate"].startswith("Basic")
        assert "nodeslo_test_up" not in reply.body


def test_healthy_and_every_path_sit_behind_auth_as_in_the_toolkit(
    certs: tlscerts.Certs, mtls_server: int
) -> None:
    context = client(certs, certs.client)
    for path in ("/-/healthy", "/-/ready", "/", "/metrics", "/nope"):
        assert w.get(mtls_server, path, context=context).status == 401, path
        assert w.get(mtls_server, path, context=context, method="HEAD").status == 401, path
    assert w.get(mtls_server, "/-/healthy", GOOD, context).status == 200


def _refused(port: int, context: ssl.SSLContext) -> BaseException:
    """Connect and ask; return how the server refused (fails if it answered)."""
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)) as info:
        reply = w.get(port, headers=GOOD, context=context)
        pytest.fail(f"answered {reply.status}")
    return info.value


def test_no_client_certificate_when_required_is_refused(
    certs: tlscerts.Certs, mtls_server: int
) -> None:
    # TLS 1.3 sends a certificate_required alert; whether the client reads it or meets
    # the closed connection first is a race, so any refusal passes, an answer fails.
    _refused(mtls_server, client(certs))


def test_client_certificate_from_another_ca_is_refused(
    certs: tlscerts.Certs, mtls_server: int
) -> None:
    _refused(mtls_server, client(certs, certs.rogue_client))


def test_plain_http_to_the_tls_port_gets_go_s_400_and_nothing_else(
    certs: tlscerts.Certs, mtls_server: int
) -> None:
    answer = w.raw(mtls_server, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert w.status_of(answer) == 400
    assert b"Client sent an HTTP request to an HTTPS server." in answer
    assert b"nodeslo_test_up" not in answer


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
def test_tls_1_1_is_refused_by_default(certs: tlscerts.Certs, tmp_path: Path) -> None:
    path = write(tmp_path / "web.yml", tls_config(certs, users=False))
    with w.serving(WebConfigSource(path)) as server:
        legacy = _legacy_client(certs)
        err = _refused(w.port(server), legacy)
        assert "VERSION" in str(err).upper(), err
        # The same server speaks TLS 1.2 to a modern client.
        modern = client(certs, maximum=ssl.TLSVersion.TLSv1_2)
        assert w.get(w.port(server), context=modern).status == 200


def _legacy_client(certs: tlscerts.Certs) -> ssl.SSLContext:
    """A client that offers TLS 1.1 and nothing newer (OpenSSL 3 needs level 0 for it)."""
    context = client(certs, minimum=ssl.TLSVersion.TLSv1_1, maximum=ssl.TLSVersion.TLSv1_1)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
def test_tls_1_1_client_is_served_when_min_version_allows_it(
    certs: tlscerts.Certs, tmp_path: Path
) -> None:
    # The control for the refusal above: the legacy client really offers TLS 1.1.
    path = write(tmp_path / "web.yml", tls_config(certs, "  min_version: TLS11\n", users=False))
    with w.serving(WebConfigSource(path)) as server:
        legacy = _legacy_client(certs)
        sock = legacy.wrap_socket(
            socket.create_connection(("127.0.0.1", w.port(server))), server_hostname="127.0.0.1"
        )
        with sock:
            assert sock.version() == "TLSv1.1"


LEGACY_WARNINGS = (
    "ignore:ssl.TLSVersion.TLSv1_1 is deprecated",
    "ignore:ssl.TLSVersion.TLSv1 is deprecated",
)


@pytest.mark.filterwarnings(*LEGACY_WARNINGS)
@pytest.mark.parametrize("cipher", ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA"])
def test_allowing_tls_1_0_never_gives_a_tls_1_2_client_a_legacy_suite(
    cipher: str, certs: tlscerts.Certs, tmp_path: Path
) -> None:
    # Issue 19 item 9: min_version TLS10 used to drop the whole context to level 0.
    path = write(tmp_path / "web.yml", tls_config(certs, "  min_version: TLS10\n", users=False))
    config = WebConfigSource(path)
    with w.serving(config) as server:
        port = w.port(server)
        weak = client(certs, minimum=ssl.TLSVersion.TLSv1_2, maximum=ssl.TLSVersion.TLSv1_2)
        weak.set_ciphers(cipher + ":@SECLEVEL=0")
        _refused(port, weak)  # a TLS 1.2 client offering only CBC-SHA: no common suite
        # The same suite is what a TLS 1.0 client gets: the legacy context serves it.
        legacy = client(certs, minimum=ssl.TLSVersion.TLSv1, maximum=ssl.TLSVersion.TLSv1)
        legacy.set_ciphers(cipher + ":@SECLEVEL=0")
        with legacy.wrap_socket(
            socket.create_connection(("127.0.0.1", port)), server_hostname="127.0.0.1"
        ) as sock:
            assert sock.version() == "TLSv1"
            assert (sock.cipher() or ("",))[0] == cipher
        modern = client(certs, maximum=ssl.TLSVersion.TLSv1_2)
        with modern.wrap_socket(
            socket.create_connection(("127.0.0.1", port)), server_hostname="127.0.0.1"
        ) as sock:
            assert sock.version() == "TLSv1.2"
            assert "GCM" in (sock.cipher() or ("",))[0] or "CHACHA" in (sock.cipher() or ("",))[0]
    tls = config.config.tls
    assert tls is not None and tls.legacy is not None
    # Neither context has a static-RSA suite; only the legacy one has CBC-SHA.
    for context in (tls.context, tls.legacy):
        assert not [c for c in context.get_ciphers() if c["kea"] == "kx-rsa"]
    modern_suites = {c["name"] for c in tls.context.get_ciphers() if c["protocol"] != "TLSv1.3"}
    assert not {n for n in modern_suites if n.endswith("-SHA")}


def test_client_hello_versions_are_read_from_the_first_bytes() -> None:
    def hello(**versions: ssl.TLSVersion) -> bytes:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            for name, version in versions.items():
                setattr(context, name, version)
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        outgoing = ssl.MemoryBIO()
        conn = context.wrap_bio(ssl.MemoryBIO(), outgoing)
        with pytest.raises(ssl.SSLWantReadError):
            conn.do_handshake()
        return outgoing.read()

    modern = hello()
    assert client_max_version(modern) == 0x0304
    assert client_max_version(hello(maximum_version=ssl.TLSVersion.TLSv1_2)) == 0x0303
    old = hello(minimum_version=ssl.TLSVersion.TLSv1, maximum_version=ssl.TLSVersion.TLSv1_1)
    assert client_max_version(old) == 0x0302
    for cut in (0, 1, 10, 50, len(modern) // 2):
        assert client_max_version(modern[:cut]) in (None, 0x0304)
    assert client_max_version(b"GET / HTTP/1.1\r\n") is None


def test_max_version_and_cipher_suites_are_what_is_negotiated(
    certs: tlscerts.Certs, tmp_path: Path
) -> None:
    extra = (
        "  max_version: TLS12\n"
        "  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]\n"
        "  curve_preferences: [CurveP384]\n"
    )
    path = write(tmp_path / "web.yml", tls_config(certs, extra, users=False))
    with w.serving(WebConfigSource(path)) as server:
        context = client(certs)
        sock = context.wrap_socket(
            socket.create_connection(("127.0.0.1", w.port(server))), server_hostname="127.0.0.1"
        )
        with sock:
            assert sock.version() == "TLSv1.2"
            cipher = sock.cipher()
            assert cipher is not None and cipher[0] == "ECDHE-ECDSA-AES256-GCM-SHA384"
        # A client that insists on TLS 1.3 finds no common version.
        _refused(w.port(server), client(certs, minimum=ssl.TLSVersion.TLSv1_3))


def test_client_allowed_sans_admit_only_the_named_client(
    certs: tlscerts.Certs, tmp_path: Path
) -> None:
    extra = MTLS.format(ca=certs.ca.cert) + "  client_allowed_sans: [prometheus.example]\n"
    path = write(tmp_path / "web.yml", tls_config(certs, extra, users=False))
    with w.serving(WebConfigSource(path)) as server:
        assert w.get(w.port(server), context=client(certs, certs.client)).status == 200
        _refused(w.port(server), client(certs, certs.other_client))


def test_verify_client_cert_if_given_takes_none_but_refuses_a_bad_one(
    certs: tlscerts.Certs, tmp_path: Path
) -> None:
    extra = f"  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: {certs.ca.cert}\n"
    path = write(tmp_path / "web.yml", tls_config(certs, extra, users=False))
    with w.serving(WebConfigSource(path)) as server:
        assert w.get(w.port(server), context=client(certs)).status == 200
        assert w.get(w.port(server), context=client(certs, certs.client)).status == 200
        _refused(w.port(server), client(certs, certs.rogue_client))


def test_configured_headers_on_every_answer(tmp_path: Path) -> None:
    text = (
        "http_server_config:\n  headers:\n"
        "    X-Frame-Options: deny\n    X-Content-Type-Options: nosniff\n"
        "    Strict-Transport-Security: max-age=31536000\n    X-XSS-Protection: ''\n"
        f"basic_auth_users:\n  prometheus: {HASH}\n"
    )
    path = write(tmp_path / "web.yml", text)
    with w.serving(WebConfigSource(path)) as server:
        for headers, status in ((GOOD, 200), ({}, 401)):
            reply = w.get(w.port(server), headers=headers)
            assert reply.status == status
            assert reply.headers["X-Frame-Options"] == "deny"
            assert reply.headers["X-Content-Type-Options"] == "nosniff"
            assert reply.headers["Strict-Transport-Security"] == "max-age=31536000"
            assert "X-XSS-Protection" not in reply.headers  # blank means unset


def test_rate_limit_answers_429_beyond_the_burst(tmp_path: Path) -> None:
    path = write(tmp_path / "web.yml", "rate_limit:\n  interval: 1h\n  burst: 3\n")
    with w.serving(WebConfigSource(path)) as server:
        statuses = [w.get(w.port(server), "/-/healthy").status for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]


def test_inline_pem_and_relative_paths(certs: tlscerts.Certs, tmp_path: Path) -> None:
    shutil.copy(certs.server.cert, tmp_path / "server.crt")
    indent = "\n    "
    cert = certs.server.cert.read_text().strip().replace("\n", indent)
    text = f"tls_server_config:\n  cert: |{indent}{cert}\n  key_file: server.key\n"
    shutil.copy(certs.server.key, tmp_path / "server.key")
    path = write(tmp_path / "web.yml", text)
    config = load_web_config(path)
    assert config.tls is not None
    assert str(tmp_path / "server.key") in config.watched
    with w.serving(WebConfigSource(path)) as server:
        assert w.get(w.port(server), context=client(certs)).status == 200


# --- re-reading on change ---------------------------------------------------------------


def test_changed_password_applies_to_the_next_request(tmp_path: Path) -> None:
    path = write(tmp_path / "web.yml", f"basic_auth_users:\n  prometheus: {HASH}\n")
    with w.serving(WebConfigSource(path)) as server:
        assert w.get(w.port(server), headers=GOOD).status == 200
        new_hash = bcrypt.hashpw(b"rotated", bcrypt.gensalt(rounds=4)).decode()
        write(tmp_path / "web.yml", f"basic_auth_users:\n  prometheus: {new_hash}\n")
        assert w.get(w.port(server), headers=GOOD).status == 401  # the cached entry misses
        assert w.get(w.port(server), headers=w.basic("prometheus", "rotated")).status == 200


def test_broken_file_keeps_the_last_good_config_logs_once_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nodeslo.web")
    path = write(tmp_path / "web.yml", f"basic_auth_users:\n  prometheus: {HASH}\n")
    source = WebConfigSource(path)
    collector = WebConfigCollector(source)
    with w.serving(source) as server:
        write(tmp_path / "web.yml", "basic_auth_users:\n  prometheus: [\n")
        for _ in range(5):
            assert w.get(w.port(server), headers=GOOD).status == 200
            assert w.get(w.port(server)).status == 401  # still protected
        failures = [r for r in caplog.records if "reload failed" in r.getMessage()]
        assert len(failures) == 1
        assert path in str(failures[0].__dict__["fields"]["err"])
        assert _reload_gauge(collector) == 0

        os.unlink(path)  # a vanished file is just as broken
        assert w.get(w.port(server), headers=GOOD).status == 200

        write(tmp_path / "web.yml", "basic_auth_users: {}\n")
        assert w.get(w.port(server)).status == 200  # auth switched off by the fix
        assert _reload_gauge(collector) == 1
        assert any(r.getMessage() == "web config reloaded" for r in caplog.records)


def _reload_gauge(collector: WebConfigCollector) -> float:
    for family in collector.collect():
        if family.name == "nodeslo_web_config_last_reload_successful":
            return float(family.samples[0].value)
    raise AssertionError("no reload gauge")


def test_rotated_server_certificate_is_used_by_the_next_connection(
    certs: tlscerts.Certs, tmp_path: Path
) -> None:
    cert, key = tmp_path / "s.crt", tmp_path / "s.key"
    shutil.copy(certs.server.cert, cert)
    shutil.copy(certs.server.key, key)
    path = write(
        tmp_path / "web.yml", f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
    )
    with w.serving(WebConfigSource(path)) as server:
        first = _server_cert(w.port(server), certs)
        (tmp_path / "renewed").mkdir()
        renewed = tlscerts.make(tmp_path / "renewed")
        write(cert, renewed.server.cert.read_text())
        write(key, renewed.server.key.read_text())
        second = _server_cert(w.port(server), renewed)
    assert first != second
    assert second == ssl.PEM_cert_to_DER_cert(renewed.server.cert.read_text())


def _server_cert(port: int, certs: tlscerts.Certs) -> bytes:
    context = client(certs)
    with context.wrap_socket(
        socket.create_connection(("127.0.0.1", port)), server_hostname="127.0.0.1"
    ) as sock:
        der = sock.getpeercert(binary_form=True)
    assert der is not None
    return der


def test_switching_tls_off_at_run_time_is_refused(certs: tlscerts.Certs, tmp_path: Path) -> None:
    path = write(tmp_path / "web.yml", tls_config(certs, users=False))
    source = WebConfigSource(path)
    write(tmp_path / "web.yml", f"basic_auth_users:\n  prometheus: {HASH}\n")
    assert source.current().tls is not None
    assert not source.reload_successful


# --- the credential cache ----------------------------------------------------------------


def test_bcrypt_is_paid_once_per_credential_not_per_scrape(tmp_path: Path) -> None:
    path = write(tmp_path / "web.yml", f"basic_auth_users:\n  prometheus: {HASH}\n")
    with w.serving(WebConfigSource(path)) as server:
        auth = w.app(server).auth
        for _ in range(10):
            assert w.get(w.port(server), headers=GOOD).status == 200
        assert auth.bcrypt_calls == 1
        assert w.get(w.port(server), headers=w.basic("prometheus", "guess")).status == 401
        assert auth.bcrypt_calls == 2  # another password is never a cache hit
        # An unknown user pays a decoy bcrypt, so timing does not reveal who exists.
        assert w.get(w.port(server), headers=w.basic("nobody", "x")).status == 401
        assert auth.bcrypt_calls == 3


def test_cache_entries_expire() -> None:
    auth = webauth.BasicAuth(ttl=0.05)
    users = {"prometheus": HASH.encode()}
    header = GOOD["Authorization"]
    assert auth.check(users, header) and auth.check(users, header)
    assert auth.bcrypt_calls == 1
    time.sleep(0.1)
    assert auth.check(users, header)
    assert auth.bcrypt_calls == 2


def test_cache_is_bounded() -> None:
    auth = webauth.BasicAuth(size=4)
    users = {"prometheus": HASH.encode()}
    for i in range(20):
        assert not auth.check(users, w.basic("prometheus", f"guess {i}")["Authorization"])
    assert len(auth._bad.entries) <= 4


def test_failed_logins_never_push_out_a_good_one_and_are_throttled_per_client() -> None:
    auth = webauth.BasicAuth(size=4)
    users = {"prometheus": HASH.encode()}
    assert auth.check(users, GOOD["Authorization"], "10.0.0.1")
    for i in range(40):  # ten times the cache size, from one guessing client
        assert not auth.check(users, w.basic("prometheus", f"guess {i}")["Authorization"], "x")
    assert auth.bcrypt_calls == 1 + webauth.MAX_FAILURES  # then refused without bcrypt
    assert auth.throttled == 40 - webauth.MAX_FAILURES
    # The scraper's login is still cached: no bcrypt, no wait behind the guesses.
    assert auth.check(users, GOOD["Authorization"], "10.0.0.1")
    assert auth.bcrypt_calls == 1 + webauth.MAX_FAILURES
    # Another client is not throttled by the first one's failures.
    assert not auth.check(users, w.basic("prometheus", "other")["Authorization"], "y")
    assert auth.bcrypt_calls == 2 + webauth.MAX_FAILURES


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer abc",
        "Basic !!!notbase64",
        "Basic " + "cHJvbWV0aGV1cw==",  # no colon
        w.basic("prometheus", "x" * 73)["Authorization"],  # longer than bcrypt reads
        "Basic " + "/w==",  # not UTF-8
    ],
)
def test_malformed_credentials_are_refused_not_raised(header: str | None) -> None:
    auth = webauth.BasicAuth()
    assert auth.check({"prometheus": HASH.encode()}, header) is False


# --- the file format: what each bad input gets -----------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "key", "complaint"),
    [
        ("tls_config: {}\n", 1, "tls_config", "unknown key"),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  nope: 1\n",
            4,
            "tls_server_config.nope",
            "unknown key",
        ),
        (
            "tls_server_config:\n  key_file: b\n",
            2,
            "tls_server_config",
            "missing one of cert or cert_file",
        ),
        ("{TLS}  min_version: TLS14\n", 4, "tls_server_config.min_version", "unknown TLS version"),
        (
            "{TLS}  min_version: TLS13\n  max_version: TLS12\n",
            4,
            "tls_server_config.min_version",
            "above max_version",
        ),
        (
            "{TLS}  client_auth_type: Maybe\n",
            4,
            "tls_server_config.client_auth_type",
            "must be one of",
        ),
        (
            "{TLS}  client_auth_type: RequireAnyClientCert\n  client_ca_file: {CA}\n",
            4,
            "tls_server_config.client_auth_type",
            "cannot be served with Python's ssl",
        ),
        (
            "{TLS}  client_auth_type: RequireAndVerifyClientCert\n",
            4,
            "tls_server_config.client_auth_type",
            "needs client_ca_file",
        ),
        (
            "{TLS}  client_ca_file: {CA}\n",
            4,
            "tls_server_config.client_auth_type",
            "without a client_auth_type",
        ),
        (
            "{TLS}  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: {CA}\n"
            "  client_allowed_sans: [a]\n",
            6,
            "tls_server_config.client_allowed_sans",
            "needs client_auth_type RequireAndVerifyClientCert",
        ),
        (
            "{TLS}  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n",
            4,
            "tls_server_config.cipher_suites[0]",
            "unknown cipher suite",
        ),
        (
            "{TLS}  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
            4,
            "tls_server_config.cipher_suites",
            "no suite for TLS 1.2",
        ),
        (
            "{TLS}  curve_preferences: [CurveP256, X25519]\n",
            4,
            "tls_server_config.curve_preferences",
            "exactly one curve",
        ),
        (
            "{TLS}  curve_preferences: [P256]\n",
            4,
            "tls_server_config.curve_preferences[0]",
            "unknown curve",
        ),
        (
            "{TLS}  prefer_server_cipher_suites: yes please\n",
            4,
            "tls_server_config.prefer_server_cipher_suites",
            "true or false",
        ),
        (
            "tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: /nonexistent.key\n",
            2,
            "tls_server_config.cert_file",
            "cannot load certificate and key",
        ),
        (
            "tls_server_config:\n  cert_file: {SERVER}\n  key_file: {OTHERKEY}\n",
            2,
            "tls_server_config.cert_file",
            "cannot load certificate and key",
        ),
        ("{TLS}  cert: x\n", 4, "tls_server_config.cert", "set cert or cert_file"),
        (
            "basic_auth_users:\n  prometheus: plaintext\n",
            2,
            "basic_auth_users.prometheus",
            "not a bcrypt hash",
        ),
        ("basic_auth_users:\n  'a:b': {HASH}\n", 2, "basic_auth_users.a:b", "cannot contain ':'"),
        ("basic_auth_users: [a]\n", 1, "basic_auth_users", "must be a mapping"),
        (
            "http_server_config:\n  headers:\n    Server: nodeslo\n",
            3,
            "http_server_config.headers.Server",
            "can not be configured",
        ),
        (
            "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
            3,
            "http_server_config.headers.X-Frame-Options",
            "must be one of deny, sameorigin",
        ),
        ("http_server_config:\n  http2: maybe\n", 2, "http_server_config.http2", "true or false"),
        (
            "rate_limit:\n  interval: 1 second\n  burst: 1\n",
            2,
            "rate_limit.interval",
            "not a duration",
        ),
        ("rate_limit:\n  interval: 1s\n  burst: 0\n", 3, "rate_limit.burst", "at least 1"),
        ("basic_auth_users:\n  a: 1\n  a: 2\n", 3, "basic_auth_users.a", "duplicate key"),
        ("tls_server_config: [\n", 2, "", "invalid YAML"),
    ],
)
def test_bad_config_names_file_line_and_key(  # noqa: PLR0917
    certs: tlscerts.Certs, tmp_path: Path, text: str, line: int, key: str, complaint: str
) -> None:
    head = f"tls_server_config:\n  cert_file: {certs.server.cert}\n  key_file: {certs.server.key}\n"
    body = (
        text.replace("{TLS}", head)
        .replace("{CA}", str(certs.ca.cert))
        .replace("{SERVER}", str(certs.server.cert))
        .replace("{OTHERKEY}", str(certs.client.key))
        .replace("{HASH}", HASH)
    )
    path = write(tmp_path / "web.yml", body)
    with pytest.raises(WebConfigError) as info:
        load_web_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert f": {key}: " in message if key else True, message
    assert complaint in message, message


def test_every_toolkit_cipher_maps_to_the_same_openssl_suite() -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_ciphers("ALL:@SECLEVEL=0")
    by_name = {c["name"]: c["id"] & 0xFFFF for c in context.get_ciphers()}
    for iana, (code, openssl_name) in CIPHER_SUITES.items():
        if openssl_name is not None:
            assert by_name.get(openssl_name) == code, iana


def test_requestclientcert_is_served_like_noclientcert(
    certs: tlscerts.Certs, tmp_path: Path
) -> None:
    extra = f"  client_auth_type: RequestClientCert\n  client_ca_file: {certs.ca.cert}\n"
    config = load_web_config(write(tmp_path / "web.yml", tls_config(certs, extra)))
    assert config.tls is not None
    assert config.tls.context.verify_mode == ssl.CERT_NONE


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0.0), ("1s", 1.0), ("100ms", 0.1), ("1m30s", 90.0), ("1.5h", 5400.0), ("2us", 2e-6)],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1", "s", "1x", "1s2", "-1s", "1 s"])
def test_bad_go_durations(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_go_duration(text)


# --- the daemon with --web.config.file --------------------------------------------------


def test_daemon_broken_web_config_at_start_exits_2_naming_file_line_key(tmp_path: Path) -> None:
    path = write(tmp_path / "web.yml", "basic_auth_users:\n  prometheus: hunter2\n")
    result = d.run_cli(
        "serve",
        f"--web.config.file={path}",
        "--web.listen-address=127.0.0.1:0",
        "--collector.disable-defaults",
    )
    assert result.returncode == 2
    assert f"{path}:2: basic_auth_users.prometheus: not a bcrypt hash" in result.stderr
    assert "listening" not in result.stderr


def test_daemon_serves_tls_with_auth_and_reports_its_config(
    certs: tlscerts.Certs, seed_tree: Path, tmp_path: Path
) -> None:
    path = write(tmp_path / "web.yml", tls_config(certs, MTLS.format(ca=certs.ca.cert)))
    flags = (f"--web.config.file={path}", "--collector.disable-defaults", "--collector.diskstats")
    with d.running(seed_tree, *flags) as daemon:
        assert "tls=true" in daemon.wait_log("listening")
        context = client(certs, certs.client)
        reply = w.get(daemon.port, headers=GOOD, context=context)
        assert reply.status == 200
        assert value(reply.body, "nodeslo_web_config_last_reload_successful") == 1
        assert value(reply.body, "nodeslo_collector_success", collector="diskstats") == 1
        assert w.get(daemon.port, context=context).status == 401
