"""What can be checked of docker-compose.yml without a Docker engine: it parses, every riverrun
command and flag is real, every RIVERRUN_* variable is a setting, ports, topics and scrape
targets agree with the settings, and promtool and amtool accept the configs."""

from __future__ import annotations

import argparse
import fnmatch
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from riverrun.cli import build_parser
from riverrun.settings import ENV_PREFIX, Settings, from_args
from tests.prom import DEPLOY, PROMETHEUS_DIR, ROOT, assert_tool_ok, load_yaml

METRICS_PORT = {
    "learn": "metrics_port",
    "trigger": "trigger_metrics_port",
    "serve": "serve_metrics_port",
}
SECRET_NAME = re.compile(r"KEY|PASSWORD|SECRET|TOKEN")
REQUIRED_FROM_USER = re.compile(r"\$\{(\w+):\?[^}]+\}")
URL_PASSWORD = re.compile(r"://[^/@\s$]*:[^/@\s$]+@")  # redis://:pw@redis; a ${VAR} is the user's


@cache
def _compose() -> dict[str, Any]:
    return dict(load_yaml(ROOT / "docker-compose.yml"))


def _services() -> dict[str, dict[str, Any]]:
    return dict(_compose()["services"])


def _riverrun_services() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in _services().items() if s.get("build") == "."}


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(subparsers.choices)


def _env(service: dict[str, Any]) -> dict[str, str]:
    """A service's RIVERRUN_* variables, with the user's ${VAR:?...} filled in."""
    env = {k: str(v) for k, v in service.get("environment", {}).items()}
    return {
        k: REQUIRED_FROM_USER.sub("0123456789abcdef0123", v)
        for k, v in env.items()
        if k.startswith(ENV_PREFIX)
    }


def _field(name: str) -> str:
    return name.removeprefix(ENV_PREFIX).lower()


def _settings(name: str) -> Settings:
    """The settings a riverrun service runs with: its variables, then its flags."""
    service = _riverrun_services()[name]
    return from_args(build_parser().parse_args(service["command"]), _env(service))


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """A service's volumes: source to target."""
    return dict(v.split(":")[:2] for v in service["volumes"])


def _targets(job: str) -> set[str]:
    config = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    (scrape,) = [c for c in config["scrape_configs"] if c["job_name"] == job]
    return {t for static in scrape.get("static_configs", []) for t in static["targets"]}


def test_the_services_of_the_loop_are_all_there() -> None:
    assert set(_services()) == {
        "kafka",
        "redis",
        "prometheus",
        "alertmanager",
        "grafana",
        "producer",
        "learn",
        "trigger",
        "serve",
    }
    assert set(_riverrun_services()) == {"producer", "learn", "trigger", "serve"}
    assert _services()["kafka"]["image"].startswith("apache/kafka:")
    assert _services()["redis"]["image"].startswith("redis:7")


def test_every_riverrun_command_and_flag_is_real(capsys: pytest.CaptureFixture[str]) -> None:
    known = _subcommands()
    for name, service in _riverrun_services().items():
        command = service["command"]
        try:
            build_parser().parse_args(command)
        except SystemExit:
            pytest.fail(f"{name}: `riverrun {' '.join(command)}`: {capsys.readouterr().err}")
        flags = {arg.split("=")[0] for arg in command if arg.startswith("-")}
        spelled = set(known[command[0]]._option_string_actions)
        assert flags <= spelled, f"{name}: {flags - spelled} (argparse takes abbreviations)"


def test_every_riverrun_variable_is_a_setting_with_a_valid_value() -> None:
    fields = set(Settings.__dataclass_fields__)
    for name, service in _riverrun_services().items():
        for var in _env(service):
            assert _field(var) in fields, f"{name}: {var}"
        _settings(name)  # raises on a value the settings refuse


def test_secrets_come_from_the_users_environment() -> None:
    for name, service in _services().items():
        for var, value in service.get("environment", {}).items():
            if SECRET_NAME.search(var):
                assert REQUIRED_FROM_USER.fullmatch(str(value)), f"{name}: {var} is not ${{...}}"
            assert not URL_PASSWORD.search(str(value)), f"{name}: {var} holds a password"
    assert REQUIRED_FROM_USER.fullmatch(
        str(_services()["learn"]["environment"]["RIVERRUN_REGISTRY_KEY"])
    )


def test_kafka_redis_and_topics_agree_across_services() -> None:
    kafka_env = _services()["kafka"]["environment"]
    advertised = kafka_env["KAFKA_ADVERTISED_LISTENERS"].removeprefix("PLAINTEXT://")
    for name in _riverrun_services():
        s = _settings(name)
        assert s.bootstrap_servers == advertised, name
        assert s.redis_url.startswith("redis://redis:6379/"), name
    topics = {
        name: (
            s.topic_events,
            s.topic_labels,
            s.topic_predictions,
            s.topic_shadow,
            s.topic_deadletter,
            s.topic_drift,
            s.partitions,
            s.model_name,
        )
        for name, s in ((n, _settings(n)) for n in _riverrun_services())
    }
    assert len(set(topics.values())) == 1, topics


def test_metrics_listen_on_all_interfaces_and_healthchecks_use_their_port() -> None:
    ports = {name: getattr(_settings(name), field) for name, field in METRICS_PORT.items()}
    for name, port in ports.items():
        assert _settings(name).metrics_host == "0.0.0.0", name
        check = " ".join(_services()[name]["healthcheck"]["test"])
        assert f"127.0.0.1:{port}/metrics" in check, name


def test_prometheus_scrapes_the_metrics_ports() -> None:
    learn = _settings("learn")
    assert _targets("riverrun-learn") == {
        f"learn:{learn.metrics_port + k}" for k in range(learn.processes)
    }
    assert _targets("riverrun-trigger") == {f"trigger:{_settings('trigger').trigger_metrics_port}"}
    config = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    (serve,) = [c for c in config["scrape_configs"] if c["job_name"] == "riverrun-serve"]
    (dns,) = serve["dns_sd_configs"]
    assert dns["names"] == ["serve"]
    assert dns["port"] == _settings("serve").serve_metrics_port
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        "alertmanager:9093"
    ]


def test_the_producer_runs_again_when_its_stream_ends() -> None:
    """`produce` exits after --events; without a restart the learn flow would read nothing
    and the critical RiverrunNoEvents fire. Each run draws new event ids (no --id-prefix),
    so a run's events are never taken for repeats of the last."""
    producer = _services()["producer"]
    assert producer["restart"] in ("always", "unless-stopped")
    assert "--id-prefix" not in producer["command"]


def test_the_producers_drifts_are_far_enough_apart_for_the_drift_alert_to_resolve() -> None:
    """agrawal-drift's own period, 12,500 events, is 25 s at 500 a second: a drift alarm every
    minute or so kept RiverrunConceptDrift (5 minutes) firing for ever."""
    args = build_parser().parse_args(_services()["producer"]["command"])
    assert args.drift_every / args.rate >= 600, "at least ten minutes between drifts"


def test_every_riverrun_service_has_an_init_to_pass_on_sigterm() -> None:
    """As PID 1, a process without a SIGTERM handler (`produce`) ignores `docker stop`."""
    assert all(service.get("init") is True for service in _riverrun_services().values())


def test_each_grpc_replica_gets_a_host_port_on_the_serving_port() -> None:
    serve = _services()["serve"]
    (published,) = serve["ports"]
    host, ports, container = published.rsplit(":", 2)
    first, last = (int(p) for p in ports.split("-"))
    assert host == "127.0.0.1" and last - first + 1 == serve["deploy"]["replicas"]
    assert int(container) == _settings("serve").serve_port
    assert _settings("serve").serve_host == "0.0.0.0"


def test_promtool_and_amtool_accept_the_configs() -> None:
    assert_tool_ok("promtool", "check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert_tool_ok("amtool", "check-config", str(DEPLOY / "alertmanager" / "alertmanager.yml"))


def test_dependencies_healthchecks_and_volumes() -> None:
    services = _services()
    for name, service in services.items():
        for dep, how in service.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if how["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s health"
        if name != "producer":
            assert "healthcheck" in service, name
    named = set(_compose()["volumes"])
    recovery = Settings().recovery_dir.replace("~", "/home/riverrun")
    for name, data in (
        ("kafka", "/var/lib/kafka/data"),
        ("redis", "/data"),
        ("learn", str(Path(recovery).parent)),
    ):
        mounts = {target: source for source, target in _mounts(services[name]).items()}
        assert mounts[data] in named, f"{name} keeps its data in a named volume"
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source in named or (ROOT / source).exists(), volume


def test_grafana_provisioning_finds_the_mounted_dashboards_and_prometheus() -> None:
    mounts = _mounts(_services()["grafana"])
    provider = load_yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "riverrun.yml")
    assert mounts["./deploy/grafana/dashboards"] == provider["providers"][0]["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    source = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
    assert _services()["prometheus"]["volumes"][0] == "./deploy/prometheus:/etc/prometheus:ro"


def test_dockerfile_runs_riverrun_as_a_user_from_python_311_slim() -> None:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    bases = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert bases and set(bases) == {"python:3.11-slim"}
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert 'ENTRYPOINT ["riverrun"]' in lines


def test_files_the_readme_writes_in_the_checkout_stay_out_of_git_and_images() -> None:
    """``riverrun local up > stack.env`` puts the registry key in that file: neither a commit
    nor an image build (``COPY . .``) may take it."""
    shell = re.compile(r"> ?([A-Za-z][\w./-]*\.[a-z]+)")  # a command's output to a file
    written = sorted(set(shell.findall((ROOT / "README.md").read_text())))
    assert "stack.env" in written
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *written], cwd=ROOT, capture_output=True, text=True
    )
    assert ignored.stdout.split() == written, "git would commit them"
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line for line in lines if line and not line.startswith("#")]
    for name in written:
        assert any(fnmatch.fnmatch(name, p) for p in patterns), f"{name} goes into the build"
