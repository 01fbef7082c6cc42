"""``riverrun serve`` and ``riverrun predict`` as a user runs them, /metrics, and TLS."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from grpc_api.client import ScoringClient
from riverrun.local import free_port
from tests.helpers import Lines, wait_for
from tests.serving import publish, refusal, running, trained

RIVERRUN = [sys.executable, "-m", "riverrun.cli"]
GRPC_LOG = re.compile(r"^[EWI]\d{4} ")  # gRPC core: E1126 16:26:38.738196 ...


def _run(settings: Any, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings.to_env()}
    return subprocess.run([*RIVERRUN, *argv], env=env, capture_output=True, text=True, timeout=60)


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one line of a failed command (gRPC core's own log lines aside)."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if not GRPC_LOG.match(line)]
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_serve_and_predict_from_the_command_line(make_settings: Any) -> None:
    s = make_settings(serve_port=free_port(), serve_metrics_port=free_port())
    model, rows = trained()
    publish(s, model)
    env = {**os.environ, **s.to_env()}
    server = subprocess.Popen([*RIVERRUN, "serve"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        line = Lines(server.stdout).next(30, "the server to say where it serves")
        assert line.startswith(f"serving riverrun.v1.Scoring on 127.0.0.1:{s.serve_port}"), line
        items = [f"{k}={v}" for k, v in rows[0].items()]
        done = _run(s, "predict", *items, "--entity", "user-1")
        assert done.returncode == 0, done.stderr
        p_true = model.predict_proba_one(rows[0])[True]
        assert done.stdout.startswith(f"{s.model_name} v1 (champion): True")
        assert f"true={p_true:.4f}" in done.stdout
        answer = orjson.loads(_run(s, "predict", orjson.dumps(rows[0]).decode(), "--json").stdout)
        assert answer["version"] == 1 and abs(answer["proba"]["true"] - p_true) <= 1e-12

        assert "feature 'https' must be a number, got str" in _one_line(
            _run(s, "predict", *items, "https=yes")
        )
        assert "INVALID_ARGUMENT: feature 'https' is nan" in _one_line(
            _run(s, "predict", *items, "https=NaN")
        )
        assert "NOT_FOUND: unknown model 'nope'" in _one_line(
            _run(s, "predict", *items, "--model", "nope")
        )

        url = f"http://127.0.0.1:{s.serve_metrics_port}/metrics"
        metrics = urllib.request.urlopen(url, timeout=10).read().decode()
        assert 'riverrun_grpc_requests_total{code="OK",rpc="Predict"} 2.0' in metrics
        assert 'riverrun_grpc_requests_total{code="INVALID_ARGUMENT",rpc="Predict"} 1.0' in metrics
        assert f'riverrun_served_model_version{{model="{s.model_name}",role="champion"}} 1.0' in (
            metrics
        )
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_serve_stops_on_ctrl_c_while_an_unreachable_registry_holds_its_start_up(
    make_settings: Any,
) -> None:
    """The start waits up to 30 s for the registry; a Ctrl-C meanwhile stops it at once
    (it used to wait the 30 s out, then say it was serving)."""
    s = make_settings(
        redis_url=f"redis://127.0.0.1:{free_port()}/0", serve_port=0, serve_metrics_port=free_port()
    )
    env = {**os.environ, **s.to_env()}
    server = subprocess.Popen([*RIVERRUN, "serve"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        metrics = f"http://127.0.0.1:{s.serve_metrics_port}/metrics"

        def metrics_served() -> bool:  # its Ctrl-C handler is set by then
            try:
                return urllib.request.urlopen(metrics, timeout=5).status == 200
            except OSError:
                return False

        wait_for(metrics_served, 30, "the server's /metrics while it waits for the registry")
        server.send_signal(signal.SIGINT)
        out, _ = server.communicate(timeout=10)  # well inside the 30 s it waits for Redis
        assert server.returncode == 0
        assert "serving" not in out, "it announced a server that was stopping"
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_serve_refuses_a_port_in_use_in_one_line(make_settings: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        s = make_settings(serve_port=taken.getsockname()[1], serve_metrics_port=0)
        assert f"cannot listen on 127.0.0.1:{s.serve_port}" in _one_line(_run(s, "serve"))
    missing = make_settings(serve_port=0, serve_tls_cert="/nonexistent.pem", serve_tls_key="k")
    assert "cannot read the TLS key 'k'" in _one_line(_run(missing, "serve"))


def test_serve_refuses_a_certificate_that_is_not_pem_naming_it(
    make_settings: Any, tmp_path: Path
) -> None:
    (text := tmp_path / "not.pem").write_text("hello\n")
    s = make_settings(serve_port=0, serve_tls_cert=str(text), serve_tls_key=str(text))
    line = _one_line(_run(s, "serve"))
    assert f"the TLS certificate {str(text)!r} and key {str(text)!r} are not a PEM" in line


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost that is its own root, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "riverrun test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem = serialization.Encoding.PEM
    key_path.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_tls_by_flags_serves_clients_that_trust_the_certificate(
    make_settings: Any, tmp_path: Path
) -> None:
    cert, key = _self_signed(tmp_path)
    s = make_settings(serve_tls_cert=str(cert), serve_tls_key=str(key))
    model, rows = trained()
    publish(s, model)
    with running(s) as (server, plaintext):
        error = refusal(lambda: plaintext.predict(rows[0]))
        assert error.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
        with ScoringClient(server.target, root_certificate=cert.read_bytes()) as secure:
            wait_for(lambda: secure.predict(rows[0]).version == 1, 10, "a TLS answer")
        cli = s.override({"serve_port": server.port, "serve_tls_ca": str(cert)})
        done = _run(cli, "predict", orjson.dumps(rows[0]).decode())
        assert done.returncode == 0 and " v1 (champion)" in done.stdout, done.stderr


@pytest.mark.parametrize("value", ["", "x"])
def test_predict_needs_features_it_can_read(make_settings: Any, value: str) -> None:
    s = make_settings(serve_port=free_port())
    assert "expected NAME=VALUE or a JSON object" in _one_line(_run(s, "predict", value))


def test_predict_names_a_root_certificate_it_cannot_read(
    make_settings: Any, tmp_path: Path
) -> None:
    s = make_settings(serve_port=free_port())
    for ca in ("/nonexistent.pem", str(tmp_path)):
        line = _one_line(_run(s, "predict", "a=1", "--serve-tls-ca", ca))
        assert line.startswith(
            f"riverrun predict: error: cannot read the TLS root certificate {ca!r}"
        )
