"""Test certificates made with the openssl CLI: a CA, a server and clients it signed,
and a rogue CA with its own client (which the server must refuse)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Certs:
    ca: Pair
    server: Pair
    client: Pair  # signed by ca, SAN DNS:prometheus.example
    other_client: Pair  # signed by ca, SAN DNS:intruder.example
    rogue_client: Pair  # signed by a CA the server does not know


def openssl() -> str | None:
    return shutil.which("openssl")


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


def _key_and_csr(tool: str, out: Path, name: str, cn: str) -> tuple[Path, Path]:
    key, csr = out / f"{name}.key", out / f"{name}.csr"
    _run(
        tool,
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(csr),
        "-subj",
        f"/CN={cn}",
    )
    return key, csr


def _ca(tool: str, out: Path, name: str) -> Pair:
    key, cert = out / f"{name}.key", out / f"{name}.crt"
    _run(
        tool,
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(cert),
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    return Pair(cert, key)


def _signed(tool: str, out: Path, ca: Pair, name: str, *, san: str, usage: str) -> Pair:
    key, csr = _key_and_csr(tool, out, name, name)
    ext = out / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\nextendedKeyUsage={usage}\n")
    cert = out / f"{name}.crt"
    _run(
        tool,
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca.cert),
        "-CAkey",
        str(ca.key),
        "-CAcreateserial",
        "-out",
        str(cert),
        "-days",
        "2",
        "-extfile",
        str(ext),
    )
    return Pair(cert, key)


def make(out: Path) -> Certs:
    tool = openssl()
    assert tool is not None
    ca = _ca(tool, out, "test-ca")
    rogue = _ca(tool, out, "rogue-ca")
    return Certs(
        ca=ca,
        server=_signed(
            tool, out, ca, "server", san="IP:127.0.0.1,IP:::1,DNS:localhost", usage="serverAuth"
        ),
        client=_signed(tool, out, ca, "client", san="DNS:prometheus.example", usage="clientAuth"),
        other_client=_signed(
            tool, out, ca, "other", san="DNS:intruder.example", usage="clientAuth"
        ),
        rogue_client=_signed(
            tool, out, rogue, "rogue", san="DNS:prometheus.example", usage="clientAuth"
        ),
    )
