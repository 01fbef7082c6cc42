"""Prometheus in the tests: promtool, PromQL metric names, /metrics scrapes, a real server."""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import yaml
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

import riverrun.metrics
from riverrun.local import _spawn, _wait_until, free_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
Samples = dict[str, list[tuple[dict[str, str], float]]]
IDENTIFIER = re.compile(r"(?<![\w.$])[a-zA-Z_:][\w:]*(?![\w:]|\s*\()")


def require_tool(name: str) -> str:
    """The path of a Prometheus program (promtool, amtool, prometheus); fail clearly if none."""
    path = shutil.which(name)
    if path is None:
        raise AssertionError(
            f"{name} is not installed: `make test` installs Debian's prometheus and "
            "prometheus-alertmanager packages with apt-get; install them by hand otherwise"
        )
    return path


def assert_tool_ok(name: str, *args: str, cwd: Path | None = None) -> str:
    """Run a Prometheus tool and fail the test with its output unless it succeeds."""
    done = subprocess.run(
        [require_tool(name), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{name} {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def load_yaml(path: Path) -> Any:
    """A YAML file, parsed."""
    return yaml.safe_load(path.read_text())


def defined_metrics() -> set[str]:
    """Every series name riverrun exports (``riverrun/metrics.py``, and the process start
    time prometheus_client exports for every process), and Prometheus's ``up``."""
    names = {"up"}
    names.update(
        name for name in ("process_start_time_seconds",) if REGISTRY.get_sample_value(name)
    )
    for value in vars(riverrun.metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (strings, matchers and ranges removed)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    expr = GROUPING.sub(" ", expr)
    return {name for name in IDENTIFIER.findall(expr) if name.lower() not in KEYWORDS}


def scrape(port: int, host: str = "127.0.0.1") -> Samples:
    """One scrape of ``/metrics``: series name to ``(labels, value)`` pairs ({} if down)."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return {}
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of a series over every label set that has ``labels``."""
    return sum(
        value
        for have, value in samples.get(name, [])
        if all(have.get(k) == v for k, v in labels.items())
    )


class PrometheusServer:
    """A real ``prometheus`` on a free loopback port scraping ``jobs`` every second.

    ``jobs`` maps a job name to its ``host:port`` targets; the rules of
    ``deploy/prometheus/alerts.yml`` are loaded and evaluated every second too. It is
    started like the local broker and Redis: logged, and ended if the tests die.
    """

    def __init__(self, workdir: Path, jobs: dict[str, list[str]]) -> None:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(PROMETHEUS_DIR / "alerts.yml")],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": targets}]}
                for job, targets in jobs.items()
            ],
        }
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        assert_tool_ok("promtool", "check", "config", str(config_path))
        self.port = free_port()
        self.server = _spawn(
            "prometheus",
            [
                require_tool("prometheus"),
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            self.port,
            workdir,
        )
        _wait_until(self.server, self._ready, f"prometheus on port {self.port}")

    def _ready(self) -> bool:
        with urllib.request.urlopen(self._url("/-/ready"), timeout=2) as resp:
            return bool(resp.status == 200)

    def _url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def api(self, path: str, **params: str) -> Any:
        """The ``data`` of a Prometheus HTTP API answer."""
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(self._url(f"/api/v1/{path}?{query}"), timeout=10) as resp:
            body = orjson.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> dict[tuple[tuple[str, str], ...], float]:
        """An instant query: each result's sorted labels to its value."""
        return {
            tuple(sorted(r["metric"].items())): float(r["value"][1])
            for r in self.api("query", query=expr)["result"]
        }

    def value(self, expr: str) -> float | None:
        """The value of a query with at most one result (``None`` if it has none)."""
        results = list(self.query(expr).values())
        assert len(results) <= 1, f"{expr} has {len(results)} results"
        return results[0] if results else None

    def __enter__(self) -> PrometheusServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()
