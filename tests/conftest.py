"""Shared fixtures: one real broker and Redis per test session, fresh topics per test."""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Callable, Iterator

import pytest

from riverrun.cli import main
from riverrun.local import LocalStack, local_stack
from riverrun.settings import Settings

_names = itertools.count()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A Tansu broker and a redis-server on free loopback ports, for the whole session."""
    with local_stack(tmp_path_factory.mktemp("stack")) as running:
        yield running


@pytest.fixture
def make_settings(stack: LocalStack, request: pytest.FixtureRequest) -> Callable[..., Settings]:
    """Settings pointing at the session stack, with topics and a model name of this test's own."""

    def make(**overrides: object) -> Settings:
        tag = f"{request.node.name[:40]}-{next(_names)}".replace("[", "-").replace("]", "")
        base = Settings.from_env(stack.env()).override(
            {
                "topic_events": f"{tag}-events",
                "topic_labels": f"{tag}-labels",
                "topic_predictions": f"{tag}-predictions",
                "topic_shadow": f"{tag}-shadow",
                "topic_deadletter": f"{tag}-deadletter",
                "topic_drift": f"{tag}-drift",
                "model_name": tag,
                "follow": False,
                "status_interval": 0.2,
                "metrics_port": 0,  # no fixed port: a test that scrapes picks a free one
                "trigger_metrics_port": 0,
                "serve_metrics_port": 0,
                "recovery_dir": "",
            }
        )
        return base.override(overrides)

    return make


@pytest.fixture
def riverrun_main(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``riverrun ARGV...`` run in this process, with ``env`` as its only ``RIVERRUN_*``
    variables: its exit status and output as a child's would be (captured at the file
    descriptors, so what C libraries print counts too), without a Python start per call."""

    def run(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
        for name in [n for n in os.environ if n.startswith("RIVERRUN_")]:
            monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        capfd.readouterr()
        try:
            status = main(list(argv))
        except SystemExit as exc:  # argparse's refusals
            status = exc.code if isinstance(exc.code, int) else 1
        out, err = capfd.readouterr()
        return subprocess.CompletedProcess(list(argv), status, out, err)

    return run
