"""Certificates made for a test with the openssl command line: a CA, a broker certificate
it signs for 127.0.0.1 and localhost, and a second CA that signed nothing of the broker's."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA that signed the broker's certificate: clients trust it
    keystore: Path  # the broker's unencrypted PKCS#8 key and certificate chain, one PEM file
    other_ca: Path  # a CA unrelated to the broker: a client trusting only it must refuse the broker


def _openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(["openssl", *map(str, args)], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "2",
             "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
    return key, cert


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca = _ca(directory, "streaminfer-test-ca")
    _, other_ca = _ca(directory, "some-other-ca")
    key, csr, cert = directory / "broker.key", directory / "broker.csr", directory / "broker.pem"
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=localhost",
             cwd=directory)
    extensions = directory / "broker.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
             "-days", "2", "-extfile", extensions, cwd=directory)
    pkcs8 = directory / "broker.pk8"
    _openssl("pkcs8", "-topk8", "-nocrypt", "-in", key, "-out", pkcs8, cwd=directory)
    keystore = directory / "broker-keystore.pem"
    keystore.write_text(pkcs8.read_text() + cert.read_text() + ca.read_text())
    return Pki(ca=ca, keystore=keystore, other_ca=other_ca)
