"""`--web.config.file`: exporter-toolkit's web configuration, read into a frozen `WebConfig`.

The file format is the one every Prometheus exporter shares (exporter-toolkit
`docs/web-configuration.md`): `tls_server_config`, `http_server_config`,
`basic_auth_users` (bcrypt hashes) and `rate_limit`. Unknown keys are errors, as with
the toolkit's strict YAML decoding; every error names the file, the key path and the
line. Where Python's `ssl` module cannot express a toolkit setting faithfully the
file is refused with the reason rather than served with weaker semantics:

- `client_auth_type: RequireAnyClientCert` (accept any certificate without verifying
  it) needs a verify callback that `ssl` does not expose;
- `curve_preferences` with more than one curve (`ssl` sets exactly one group);
- a verifying `client_auth_type` without `client_ca_file`/`client_ca`: the toolkit
  would then trust the system's public CAs for client certificates; nodeslo does not.

`RequestClientCert` is accepted and served as `NoClientCert`: the toolkit neither
verifies nor uses such a certificate, so the access granted is the same.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal

from prometheus_client.core import Metric

from nodeslo.log import OnceLog
from nodeslo.metrics import Desc
from nodeslo.profile import yamlsource
from nodeslo.profile.yamlsource import Located, SourceError
from nodeslo.web.clienthello import client_max_version

log = logging.getLogger("nodeslo.web")


class WebConfigError(SourceError):
    """A web configuration that cannot be used; the message names file, key and line."""


# exporter-toolkit's names (Go's crypto/tls constants) -> ssl.TLSVersion.
TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
DEFAULT_MIN_VERSION = "TLS12"
DEFAULT_MAX_VERSION = "TLS13"
# What TLS 1.0/1.1 clients get without cipher_suites: forward-secret AES-CBC only, no
# static RSA; never offered to a TLS 1.2+ client.
LEGACY_CIPHERS = "ECDHE+AES+SHA1:!aNULL:!eNULL"
TLS_1_2 = 0x0303  # as a ClientHello spells it

# Go's tls.CipherSuites(), the only names the toolkit accepts: IANA name ->
# (IANA code point, OpenSSL name). TLS 1.3 suites are not configurable in Go nor in
# Python's ssl; the toolkit accepts their names and they change nothing.
CIPHER_SUITES: dict[str, tuple[int, str | None]] = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": (0x002F, "AES128-SHA"),
    "TLS_RSA_WITH_AES_256_CBC_SHA": (0x0035, "AES256-SHA"),
    "TLS_RSA_WITH_AES_128_GCM_SHA256": (0x009C, "AES128-GCM-SHA256"),
    "TLS_RSA_WITH_AES_256_GCM_SHA384": (0x009D, "AES256-GCM-SHA384"),
    "TLS_AES_128_GCM_SHA256": (0x1301, None),
    "TLS_AES_256_GCM_SHA384": (0x1302, None),
    "TLS_CHACHA20_POLY1305_SHA256": (0x1303, None),
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": (0xC009, "ECDHE-ECDSA-AES128-SHA"),
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": (0xC00A, "ECDHE-ECDSA-AES256-SHA"),
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": (0xC013, "ECDHE-RSA-AES128-SHA"),
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": (0xC014, "ECDHE-RSA-AES256-SHA"),
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": (0xC02B, "ECDHE-ECDSA-AES128-GCM-SHA256"),
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": (0xC02C, "ECDHE-ECDSA-AES256-GCM-SHA384"),
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": (0xC02F, "ECDHE-RSA-AES128-GCM-SHA256"),
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": (0xC030, "ECDHE-RSA-AES256-GCM-SHA384"),
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": (0xCCA8, "ECDHE-RSA-CHACHA20-POLY1305"),
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": (0xCCA9, "ECDHE-ECDSA-CHACHA20-POLY1305"),
}

# Go's tls.CurveID names -> OpenSSL group names.
CURVES = {
    "CurveP256": "prime256v1",
    "CurveP384": "secp384r1",
    "CurveP521": "secp521r1",
    "X25519": "X25519",
}

CLIENT_AUTH_TYPES = (
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "RequireClientCert",  # the toolkit's old name for RequireAnyClientCert
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
)

# The toolkit's whitelist of response headers, with the values it allows (None: any).
HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}

# $2a$/$2b$/$2y$, two-digit cost, 22 characters of salt and 31 of hash.
_BCRYPT = re.compile(r"^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$")
# Go's time.ParseDuration, which the toolkit's YAML decoding uses for rate_limit.interval.
_GO_DURATION_PART = re.compile(r"([0-9]*\.?[0-9]+)(ns|us|µs|ms|s|m|h)")
_GO_UNITS = {
    "ns": Decimal("1e-9"),
    "us": Decimal("1e-6"),
    "µs": Decimal("1e-6"),
    "ms": Decimal("1e-3"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
}

_TOP_KEYS = ("tls_server_config", "http_server_config", "basic_auth_users", "rate_limit")
_TLS_KEYS = (
    "cert",
    "key",
    "client_ca",
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "client_allowed_sans",
    "min_version",
    "max_version",
    "cipher_suites",
    "prefer_server_cipher_suites",
    "curve_preferences",
)
_HTTP_KEYS = ("http2", "headers")
_RATE_KEYS = ("interval", "burst")


@dataclass(frozen=True)
class TLSSettings:
    context: ssl.SSLContext
    client_auth_type: str
    # Connections whose verified client certificate has none of these SANs are closed.
    allowed_sans: frozenset[str]
    min_version: str
    max_version: str
    # With min_version below TLS12 (and max_version TLS12 or above): the context for
    # clients that offer nothing newer than TLS 1.1; `context` serves every other one.
    legacy: ssl.SSLContext | None = None

    def context_for(self, client_hello: bytes) -> ssl.SSLContext:
        """The context for a connection, from the start of its ClientHello."""
        if self.legacy is None:
            return self.context
        offered = client_max_version(client_hello)
        return self.legacy if offered is not None and offered < TLS_1_2 else self.context


@dataclass(frozen=True)
class RateLimit:
    interval_seconds: float
    burst: int


@dataclass(frozen=True)
class WebConfig:
    path: str
    tls: TLSSettings | None
    users: Mapping[str, bytes]  # user -> bcrypt hash
    headers: tuple[tuple[str, str], ...]
    rate_limit: RateLimit | None
    # The files whose change means the configuration must be read again.
    watched: tuple[str, ...]


def parse_go_duration(text: str) -> float:
    """'1s', '100ms', '1m30s', '0' -> seconds, as Go's time.ParseDuration."""
    body = text.strip()
    if body == "0":
        return 0.0
    position, total = 0, Decimal(0)
    for match in _GO_DURATION_PART.finditer(body):
        if match.start() != position:
            break
        total += Decimal(match.group(1)) * _GO_UNITS[match.group(2)]
        position = match.end()
    if position == 0 or position != len(body):
        raise ValueError(f"not a duration: {text!r} (Go syntax, e.g. 100ms, 1s, 1m30s)")
    return float(total)


def _fail(node: Located, key: str, message: str) -> WebConfigError:
    return WebConfigError(node.file, node.line, key, message)


def _mapping(node: Located | None, key: str, allowed: tuple[str, ...]) -> dict[str, Located]:
    if node is None or node.value is None:
        return {}
    if not isinstance(node.value, dict):
        raise _fail(node, key, "must be a mapping")
    for name, child in node.value.items():
        if name not in allowed:
            raise _fail(child, f"{key}.{name}" if key else name, "unknown key")
    return {k: v for k, v in node.value.items() if v.value is not None}


def _string(node: Located, key: str) -> str:
    if not isinstance(node.value, str):
        raise _fail(node, key, f"must be a string, got {node.value!r}")
    return node.value


def _strings(node: Located, key: str) -> list[Located]:
    if not isinstance(node.value, list):
        raise _fail(node, key, "must be a list of strings")
    for index, item in enumerate(node.value):
        _string(item, f"{key}[{index}]")
    return list(node.value)


def _bool(node: Located, key: str) -> bool:
    if not isinstance(node.value, bool):
        raise _fail(node, key, f"must be true or false, got {node.value!r}")
    return node.value


def load_web_config(path: str) -> WebConfig:
    """Read, validate and build; raises WebConfigError naming file, key and line."""
    try:
        return _load_web_config(path)
    except WebConfigError:
        raise
    except SourceError as exc:
        raise WebConfigError(exc.file, exc.line, exc.key, exc.message) from None
    except (OSError, ValueError, TypeError, ArithmeticError, RecursionError, MemoryError) as exc:
        # Whatever slipped past the bounded reader and the checks: the documented
        # error naming the file, never a traceback (at start) or a dropped connection.
        raise WebConfigError(path, None, "", f"cannot load: {type(exc).__name__}: {exc}") from None


def _load_web_config(path: str) -> WebConfig:
    tree = yamlsource.load(path)
    top = _mapping(tree, "", _TOP_KEYS)
    base_dir = os.path.dirname(os.path.abspath(path))
    tls, tls_files = _tls(top.get("tls_server_config"), base_dir)
    return WebConfig(
        path=path,
        tls=tls,
        users=_users(top.get("basic_auth_users")),
        headers=_headers(top.get("http_server_config")),
        rate_limit=_rate_limit(top.get("rate_limit")),
        watched=(path, *tls_files),
    )


def _users(node: Located | None) -> dict[str, bytes]:
    if node is None or node.value is None:
        return {}
    if not isinstance(node.value, dict):
        raise _fail(node, "basic_auth_users", "must be a mapping of user names to bcrypt hashes")
    users = {}
    for user, hashed in node.value.items():
        key = f"basic_auth_users.{user}"
        if ":" in user:
            raise _fail(hashed, key, "a user name cannot contain ':' (basic auth splits there)")
        text = _string(hashed, key)
        match = _BCRYPT.match(text)
        if match is None:
            raise _fail(hashed, key, "not a bcrypt hash (expected $2a$, $2b$ or $2y$ and 60 chars)")
        if not 4 <= int(match.group(1)) <= 31:
            raise _fail(hashed, key, f"bcrypt cost must be 4..31, got {match.group(1)}")
        users[user] = text.encode("ascii")
    return users


def _headers(node: Located | None) -> tuple[tuple[str, str], ...]:
    http = _mapping(node, "http_server_config", _HTTP_KEYS)
    if "http2" in http:
        # Scrapes are HTTP/1.1; ALPN offers only that, so the flag changes nothing.
        _bool(http["http2"], "http_server_config.http2")
    headers_node = http.get("headers")
    if headers_node is None:
        return ()
    if not isinstance(headers_node.value, dict):
        raise _fail(headers_node, "http_server_config.headers", "must be a mapping")
    out = []
    for name, value_node in headers_node.value.items():
        key = f"http_server_config.headers.{name}"
        if name not in HEADERS:
            raise _fail(
                value_node, key, f"this header can not be configured (one of {_or(HEADERS)})"
            )
        value = _string(value_node, key)
        allowed = HEADERS[name]
        if allowed is not None and value not in allowed:
            raise _fail(value_node, key, f"must be one of {_or(allowed)}, got {value!r}")
        if "\r" in value or "\n" in value:
            raise _fail(value_node, key, "must not contain a line break")
        if value:  # the toolkit leaves a header unset when its value is blank
            out.append((name, value))
    return tuple(out)


def _rate_limit(node: Located | None) -> RateLimit | None:
    rate = _mapping(node, "rate_limit", _RATE_KEYS)
    if not rate:
        return None
    interval = 0.0
    if "interval" in rate:
        try:
            interval = parse_go_duration(_string(rate["interval"], "rate_limit.interval"))
        except ValueError as exc:
            raise _fail(rate["interval"], "rate_limit.interval", str(exc)) from None
    burst = 0
    if "burst" in rate:
        burst_node = rate["burst"]
        if not isinstance(burst_node.value, int) or isinstance(burst_node.value, bool):
            raise _fail(burst_node, "rate_limit.burst", "must be an integer")
        burst = burst_node.value
    if interval == 0:
        return None  # the toolkit's way to switch the limiter off
    if burst < 1:
        # Go's limiter with burst 0 refuses every request; say so instead.
        where = rate.get("burst", node)
        assert where is not None
        raise _fail(where, "rate_limit.burst", "must be at least 1 when interval is set")
    return RateLimit(interval, burst)


def _or(values: Mapping[str, object] | tuple[str, ...]) -> str:
    return ", ".join(values)


def _tls(node: Located | None, base_dir: str) -> tuple[TLSSettings | None, tuple[str, ...]]:
    tls = _mapping(node, "tls_server_config", _TLS_KEYS)
    # The toolkit's IsEnabled: any of these switches TLS on.
    enabling = ("cert", "key", "client_ca", "cert_file", "key_file", "client_ca_file")
    if not any(k in tls for k in (*enabling, "client_auth_type")):
        return None, ()
    assert node is not None
    key = "tls_server_config"

    def text(name: str) -> str | None:
        return _string(tls[name], f"{key}.{name}") if name in tls else None

    def path(name: str) -> str | None:
        value = text(name)
        return None if value is None else os.path.join(base_dir, value)

    cert_file, key_file, ca_file = path("cert_file"), path("key_file"), path("client_ca_file")
    cert_inline, key_inline, ca_inline = text("cert"), text("key"), text("client_ca")
    for file_key, inline_key in (("cert_file", "cert"), ("key_file", "key")):
        if file_key in tls and inline_key in tls:
            raise _fail(tls[inline_key], f"{key}.{inline_key}", f"set {inline_key} or {file_key}")
    if "client_ca_file" in tls and "client_ca" in tls:
        raise _fail(tls["client_ca"], f"{key}.client_ca", "set client_ca or client_ca_file")
    if cert_file is None and cert_inline is None:
        raise _fail(node, key, "missing one of cert or cert_file")
    if key_file is None and key_inline is None:
        raise _fail(node, key, "missing one of key or key_file")

    versions = {}
    for name, default in (
        ("min_version", DEFAULT_MIN_VERSION),
        ("max_version", DEFAULT_MAX_VERSION),
    ):
        value = text(name) or default
        if value not in TLS_VERSIONS:
            raise _fail(
                tls[name], f"{key}.{name}", f"unknown TLS version {value!r} ({_or(TLS_VERSIONS)})"
            )
        versions[name] = value
    if TLS_VERSIONS[versions["min_version"]] > TLS_VERSIONS[versions["max_version"]]:
        where = tls.get("min_version") or tls["max_version"]
        raise _fail(where, f"{key}.min_version", "is above max_version")

    auth = text("client_auth_type") or "NoClientCert"
    if auth not in CLIENT_AUTH_TYPES:
        raise _fail(
            tls["client_auth_type"],
            f"{key}.client_auth_type",
            f"must be one of {_or(CLIENT_AUTH_TYPES)}, got {auth!r}",
        )
    has_ca = ca_file is not None or ca_inline is not None
    if has_ca and auth == "NoClientCert":
        where = tls.get("client_ca_file") or tls["client_ca"]
        raise _fail(
            where, f"{key}.client_auth_type", "client CAs are configured without a client_auth_type"
        )
    if auth in ("RequireAnyClientCert", "RequireClientCert"):
        raise _fail(
            tls["client_auth_type"],
            f"{key}.client_auth_type",
            f"{auth} (any certificate, unverified) cannot be served with Python's ssl; "
            "use RequireAndVerifyClientCert with client_ca_file",
        )
    verifying = auth in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert")
    if verifying and not has_ca:
        raise _fail(
            tls["client_auth_type"],
            f"{key}.client_auth_type",
            f"{auth} needs client_ca_file or client_ca (nodeslo does not trust the "
            "system's public CAs for client certificates)",
        )
    sans: frozenset[str] = frozenset()
    if "client_allowed_sans" in tls:
        sans_node = tls["client_allowed_sans"]
        sans = frozenset(s.value for s in _strings(sans_node, f"{key}.client_allowed_sans"))
        if auth != "RequireAndVerifyClientCert":
            raise _fail(
                sans_node,
                f"{key}.client_allowed_sans",
                "needs client_auth_type RequireAndVerifyClientCert",
            )

    def build(minimum: ssl.TLSVersion, maximum: ssl.TLSVersion) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with warnings.catch_warnings():
            # Python deprecates TLS 1.0/1.1; the operator asked for them explicitly.
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = minimum
            context.maximum_version = maximum
        # A client-initiated renegotiation costs the server a handshake per request.
        context.options |= ssl.OP_NO_RENEGOTIATION
        context.set_alpn_protocols(["http/1.1"])
        # OpenSSL 3 refuses TLS 1.0/1.1 at security level 1 and above; honouring an
        # explicit min_version below TLS12 means level 0 (Go allows them outright), in
        # the legacy context only: TLS 1.2 and 1.3 clients never get its suites.
        legacy = maximum < ssl.TLSVersion.TLSv1_2
        seclevel = ":@SECLEVEL=0" if legacy else ""
        if "cipher_suites" in tls:
            _set_ciphers(context, tls["cipher_suites"], f"{key}.cipher_suites", seclevel, versions)
        elif legacy:
            context.set_ciphers(LEGACY_CIPHERS + seclevel)
        prefer_server = True
        if "prefer_server_cipher_suites" in tls:
            prefer_server = _bool(
                tls["prefer_server_cipher_suites"], f"{key}.prefer_server_cipher_suites"
            )
        if prefer_server:
            context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
        else:
            context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
        if "curve_preferences" in tls:
            _set_curve(context, tls["curve_preferences"], f"{key}.curve_preferences")

        _load_cert_chain(
            context,
            where=tls.get("cert_file") or tls["cert"],
            key=f"{key}.{'cert_file' if cert_file else 'cert'}",
            cert_file=cert_file,
            cert_inline=cert_inline,
            key_file=key_file,
            key_inline=key_inline,
        )
        if has_ca:
            ca_key = "client_ca_file" if ca_file else "client_ca"
            try:
                context.load_verify_locations(cafile=ca_file, cadata=ca_inline)
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise _fail(
                    tls[ca_key], f"{key}.{ca_key}", f"cannot load client CAs: {_reason(exc)}"
                ) from None
        context.verify_mode = {
            "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
            "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
        }.get(auth, ssl.CERT_NONE)
        return context

    # One context per protocol generation: a connection gets the legacy one only when
    # its ClientHello offers nothing newer than TLS 1.1 (see `TLSSettings.context_for`).
    low, high = TLS_VERSIONS[versions["min_version"]], TLS_VERSIONS[versions["max_version"]]
    modern = legacy = None
    if high >= ssl.TLSVersion.TLSv1_2:
        modern = build(max(low, ssl.TLSVersion.TLSv1_2), high)
    if low < ssl.TLSVersion.TLSv1_2:
        legacy = build(low, min(high, ssl.TLSVersion.TLSv1_1))
    context = modern or legacy
    assert context is not None
    files = tuple(f for f in (cert_file, key_file, ca_file) if f is not None)
    settings = TLSSettings(
        context,
        auth,
        sans,
        versions["min_version"],
        versions["max_version"],
        legacy if modern is not None else None,
    )
    return settings, files


def _set_ciphers(
    context: ssl.SSLContext, node: Located, key: str, seclevel: str, versions: dict[str, str]
) -> None:
    names = []
    for index, item in enumerate(_strings(node, key)):
        if item.value not in CIPHER_SUITES:
            raise _fail(
                item,
                f"{key}[{index}]",
                f"unknown cipher suite {item.value!r} (Go's names: {_or(CIPHER_SUITES)})",
            )
        openssl_name = CIPHER_SUITES[item.value][1]
        if openssl_name is not None:
            names.append(openssl_name)
    if not names:
        if versions["min_version"] == "TLS13":
            return
        raise _fail(
            node, key, "lists no suite for TLS 1.2 and below; set min_version: TLS13 instead"
        )
    try:
        context.set_ciphers(":".join(names) + seclevel)
    except ssl.SSLError as exc:
        raise _fail(node, key, f"OpenSSL accepts none of these suites: {_reason(exc)}") from None


def _set_curve(context: ssl.SSLContext, node: Located, key: str) -> None:
    curves = _strings(node, key)
    for index, item in enumerate(curves):
        if item.value not in CURVES:
            raise _fail(item, f"{key}[{index}]", f"unknown curve {item.value!r} ({_or(CURVES)})")
    if len(curves) > 1:
        raise _fail(
            node,
            key,
            "Python's ssl sets exactly one curve: list one, or none for OpenSSL's defaults",
        )
    if curves:
        context.set_ecdh_curve(CURVES[curves[0].value])


def _load_cert_chain(
    context: ssl.SSLContext,
    *,
    where: Located,
    key: str,
    cert_file: str | None,
    cert_inline: str | None,
    key_file: str | None,
    key_inline: str | None,
) -> None:
    """Load from files, or from inline PEM through memfds so a key never touches disk."""
    fds: list[int] = []
    try:
        if cert_file is None:
            assert cert_inline is not None
            cert_file = _memfd("cert", cert_inline, fds)
        if key_file is None:
            assert key_inline is not None
            key_file = _memfd("key", key_inline, fds)
        context.load_cert_chain(cert_file, key_file)
    except (ssl.SSLError, OSError) as exc:
        shown = "inline cert/key" if fds else f"{cert_file}, {key_file}"
        raise _fail(
            where, key, f"cannot load certificate and key ({shown}): {_reason(exc)}"
        ) from None
    finally:
        for fd in fds:
            os.close(fd)


def _memfd(name: str, text: str, fds: list[int]) -> str:
    fd = os.memfd_create(f"nodeslo-{name}", os.MFD_CLOEXEC)
    fds.append(fd)
    os.write(fd, text.encode())
    return f"/proc/self/fd/{fd}"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return f"{exc.reason} ({exc.library or 'ssl'})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def _signature(paths: tuple[str, ...]) -> tuple[tuple[int, int, int, int] | None, ...]:
    """What identifies each file's content without reading it; None for a missing file."""
    out: list[tuple[int, int, int, int] | None] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
        else:
            out.append((st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev))
    return tuple(out)


class WebConfigSource:
    """The configuration in force, re-read when its file or a file it names changes.

    The toolkit re-reads its file on every request; a few stat() calls per request
    give the same freshness (certificates rotated by cert-manager or certbot are
    picked up by the next connection) without parsing YAML and PEM each time. A file
    that turns bad keeps the last good configuration in force, is logged once, and
    `nodeslo_web_config_last_reload_successful` drops to 0 until it is fixed.
    Switching TLS on or off is refused at run time: an edit that drops
    `tls_server_config` must not silently start serving plain text.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.config = load_web_config(path)
        self._signature = _signature(self.config.watched)
        self._lock = threading.Lock()
        self.reload_successful = True
        self.success_timestamp = time.time()
        self._errors = OnceLog(log)

    def current(self) -> WebConfig:
        config = self.config
        signature = _signature(config.watched)
        if signature == self._signature:
            return config
        with self._lock:
            if self.config is config:
                self._reload(signature)
            return self.config

    def _reload(self, signature: tuple[tuple[int, int, int, int] | None, ...]) -> None:
        # Until the files change again, a broken file is not re-read on every request.
        self._signature = signature
        try:
            config = load_web_config(self.path)
            if (config.tls is None) != (self.config.tls is None):
                state = "on" if config.tls else "off"
                raise WebConfigError(
                    self.path, None, "tls_server_config", f"switching TLS {state} needs a restart"
                )
        except WebConfigError as exc:
            self.reload_successful = False
            self._errors.log(
                logging.ERROR,
                "web-config",
                "web config reload failed, keeping the last good one",
                err=str(exc),
            )
            return
        self.config = config
        self._signature = _signature(config.watched)
        self.reload_successful = True
        self.success_timestamp = time.time()
        self._errors.clear("web-config")
        log.info("web config reloaded", extra={"fields": {"file": self.path}})


RELOAD_SUCCESS = Desc(
    "nodeslo_web_config_last_reload_successful",
    "gauge",
    "1 when the last read of --web.config.file succeeded, 0 when the last good one was kept.",
)
RELOAD_TIMESTAMP = Desc(
    "nodeslo_web_config_last_reload_success_timestamp_seconds",
    "gauge",
    "Unix time of the last successful read of --web.config.file.",
)


class WebConfigCollector:
    """Registered only when --web.config.file is given."""

    def __init__(self, source: WebConfigSource) -> None:
        self._source = source

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        self._source.current()  # a scrape is a request: report what the next one will use
        yield RELOAD_SUCCESS.single(1 if self._source.reload_successful else 0)
        yield RELOAD_TIMESTAMP.single(self._source.success_timestamp)
