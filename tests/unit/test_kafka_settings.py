"""The Kafka security settings: TLS contexts built from them, and the combinations refused
at start with a line that says what is missing."""

from __future__ import annotations

import shutil
import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.cli import main
from pipeline.config import KafkaSettings
from tests.tls import make_pki


@pytest.mark.skipif(shutil.which("openssl") is None, reason="certificates are made with openssl")
def test_ssl_settings_give_a_context_that_trusts_the_given_ca(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    kwargs = KafkaSettings(kafka_bootstrap="b:9093", security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                           sasl_username="u", sasl_password="p", ssl_cafile=pki.ca).client_kwargs()
    context = kwargs["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode is ssl.CERT_REQUIRED
    assert [dict(cert["subject"][0])["commonName"] for cert in context.get_ca_certs()] == ["streaminfer-test-ca"]
    assert (kwargs["sasl_mechanism"], kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == (
        "SCRAM-SHA-512", "u", "p")


def test_plaintext_has_no_tls_context() -> None:
    assert "ssl_context" not in KafkaSettings(kafka_bootstrap="b:9092").client_kwargs()


@pytest.mark.parametrize(("settings", "message"), [
    ({"security_protocol": "SASL_SSL"}, "needs sasl_mechanism"),
    ({"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_username": "u"}, "needs sasl_username and"),
    ({"sasl_mechanism": "PLAIN", "sasl_username": "u", "sasl_password": "p"}, "use SASL_SSL"),
    ({"security_protocol": "SSL", "ssl_cafile": "/nonexistent/ca.pem"}, "is not a readable file"),
    ({"security_protocol": "SSL", "ssl_certfile": __file__}, "go together"),
])
def test_incomplete_security_settings_are_refused(settings: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        KafkaSettings(**settings)  # type: ignore[arg-type]


def test_the_cli_says_what_is_missing_in_one_line_without_the_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STREAMINFER_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("STREAMINFER_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("STREAMINFER_SASL_PASSWORD", "hunter2")
    assert main(["lag", "--bootstrap", "b:9093"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "streaminfer: error: sasl_mechanism needs sasl_username and sasl_password"


def test_a_ca_file_that_is_not_pem_is_a_setting_refused_at_validation(tmp_path: Path) -> None:
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")
    with pytest.raises(ValidationError, match="TLS settings do not load"):
        KafkaSettings(security_protocol="SSL", ssl_cafile=not_pem)  # type: ignore[arg-type]


def test_the_tls_context_is_built_once_and_shared_by_every_client() -> None:
    settings = KafkaSettings(kafka_bootstrap="b:9093", security_protocol="SSL")
    assert settings.client_kwargs()["ssl_context"] is settings.client_kwargs()["ssl_context"]
