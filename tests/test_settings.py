"""The settings object: environment, flags, round trip to a child's environment, errors."""

from __future__ import annotations

import argparse
import logging

import pytest

from riverrun.settings import Settings, SettingsError, add_flags, from_args


def test_environment_overrides_defaults_and_round_trips() -> None:
    env = {
        "RIVERRUN_BOOTSTRAP_SERVERS": "k:1",
        "RIVERRUN_CHALLENGERS": "arf, hoeffding",
        "RIVERRUN_LABEL_TTL": "2.5",
        "RIVERRUN_FOLLOW": "false",
        "RIVERRUN_TASK": "regression",
    }
    s = Settings.from_env(env)
    assert s.bootstrap_servers == "k:1"
    assert s.challengers == ("arf", "hoeffding")
    assert s.label_ttl == 2.5 and s.follow is False and s.task == "regression"
    assert Settings.from_env(s.to_env()) == s


def test_flags_override_environment() -> None:
    parser = argparse.ArgumentParser()
    add_flags(parser, ["seed", "challengers", "follow"])
    args = parser.parse_args(["--seed", "9", "--challengers", "arf,x", "--no-follow"])
    s = from_args(args, {"RIVERRUN_SEED": "3", "RIVERRUN_MODEL_SPEC": "hoeffding"})
    assert (s.seed, s.challengers, s.follow, s.model_spec) == (9, ("arf", "x"), False, "hoeffding")


def test_a_list_flag_reads_spaces_and_repeats_as_its_variable_does() -> None:
    parser = argparse.ArgumentParser()
    add_flags(parser, ["challengers"])
    args = parser.parse_args(["--challengers", " arf, x ,", "--challengers", "logreg"])
    from_flags = from_args(args, {})
    from_env = Settings.from_env({"RIVERRUN_CHALLENGERS": " arf, x ,,logreg"})
    assert from_flags.challengers == from_env.challengers == ("arf", "x", "logreg")


def _flags(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_flags(parser, ["label_ttl", "serve_tls_cert", "seed"])
    return parser.parse_args(argv)


def test_a_bad_flag_is_reported_by_its_flag_and_a_flag_replaces_a_bad_variable() -> None:
    with pytest.raises(SettingsError, match=r"^--label-ttl must be positive$"):
        from_args(_flags(["--label-ttl", "-5"]), {})
    with pytest.raises(SettingsError, match=r"^RIVERRUN_LABEL_TTL must be positive$"):
        from_args(_flags([]), {"RIVERRUN_LABEL_TTL": "-5"})
    with pytest.raises(SettingsError, match=r"^--serve-tls-cert and RIVERRUN_SERVE_TLS_KEY go"):
        from_args(_flags(["--serve-tls-cert", "c.pem"]), {})
    fixed = from_args(
        _flags(["--label-ttl", "10", "--seed", "4"]),
        {"RIVERRUN_LABEL_TTL": "-5", "RIVERRUN_SEED": "many"},
    )
    assert (fixed.label_ttl, fixed.seed) == (10.0, 4)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RIVERRUN_SEED": "many"}, "RIVERRUN_SEED='many': expected int"),
        ({"RIVERRUN_TASK": "ranking"}, "RIVERRUN_TASK='ranking'"),
        ({"RIVERRUN_BATCH_SIZE": "0"}, "RIVERRUN_BATCH_SIZE must be at least 1"),
        ({"RIVERRUN_FOLLOW": "maybe"}, "expected true or false"),
        ({"RIVERRUN_LABEL_TTL": "nan"}, "RIVERRUN_LABEL_TTL is NaN: expected a number"),
        ({"RIVERRUN_PROMOTE_ALPHA": "nan"}, "RIVERRUN_PROMOTE_ALPHA is NaN: expected a number"),
        ({"RIVERRUN_TRIGGER_LOOKBACK": "0"}, "RIVERRUN_TRIGGER_LOOKBACK must be positive"),
        ({"RIVERRUN_MAX_MESSAGE_BYTES": "-5"}, "RIVERRUN_MAX_MESSAGE_BYTES must be at least 1"),
        ({"RIVERRUN_PROMOTE_ALPHA": "5"}, "RIVERRUN_PROMOTE_ALPHA must lie between 0 and 1"),
        ({"RIVERRUN_PROMOTE_ALPHA": "0"}, "RIVERRUN_PROMOTE_ALPHA must lie between 0 and 1"),
        ({"RIVERRUN_PROMOTE_MARGIN": "-0.1"}, "RIVERRUN_PROMOTE_MARGIN must lie from 0 up to 1"),
        ({"RIVERRUN_PROMOTE_MARGIN": "1"}, "RIVERRUN_PROMOTE_MARGIN must lie from 0 up to 1"),
        ({"RIVERRUN_PROMOTE_MARGIN": "inf"}, "RIVERRUN_PROMOTE_MARGIN is inf: expected a finite"),
        ({"RIVERRUN_ENTITY_TTL": "inf"}, "RIVERRUN_ENTITY_TTL is inf: expected a finite number"),
        ({"RIVERRUN_TRIGGER_SLUMP_THRESHOLD": "-inf"}, "SLUMP_THRESHOLD is -inf: expected a"),
        (
            {"RIVERRUN_EPOCH_INTERVAL": "1e20"},
            "RIVERRUN_EPOCH_INTERVAL must be at most 315,360,000 \\(seconds: ten years\\)",
        ),
        ({"RIVERRUN_TRIGGER_LOOKBACK": "1e12"}, "RIVERRUN_TRIGGER_LOOKBACK must be at most"),
        ({"RIVERRUN_PROCESSES": "100000"}, "RIVERRUN_PROCESSES must be at most 256"),
        (
            {"RIVERRUN_TRIGGER_SLUMP_ACTION": "bogus"},
            "RIVERRUN_TRIGGER_SLUMP_ACTION='bogus': use one of off, retrain, promote, rollback",
        ),
        (
            {"RIVERRUN_PROMOTE_LATENCY_BUDGET": "-1"},
            "RIVERRUN_PROMOTE_LATENCY_BUDGET must be positive",
        ),
        ({"RIVERRUN_DRIFT_MIN_GAP": "-3"}, "RIVERRUN_DRIFT_MIN_GAP must be at least 0"),
        (
            {"RIVERRUN_PROMOTE_MIN_SAMPLES": "50"},
            "RIVERRUN_PROMOTE_MIN_SAMPLES must be at least 100: the paired test compares means "
            "of blocks of 50 events, and needs two",
        ),
        (
            {"RIVERRUN_PROMOTE_WINDOW": "500"},
            "RIVERRUN_PROMOTE_WINDOW=500 is below RIVERRUN_PROMOTE_MIN_SAMPLES=1000: the window "
            "would never hold enough paired events to promote",
        ),
        ({"RIVERRUN_SERVE_WORKERS": "3"}, "RIVERRUN_SERVE_WORKERS must be at least 4: open"),
        ({"RIVERRUN_DATA_DRIFT_WINDOW": "-1"}, "RIVERRUN_DATA_DRIFT_WINDOW must be at least 0"),
        (
            {"RIVERRUN_TRIGGER_SCHEDULE_EVERY": "-1"},
            "RIVERRUN_TRIGGER_SCHEDULE_EVERY must be at least 0",
        ),
        ({"RIVERRUN_TRIGGER_COOLDOWN": "-5"}, "RIVERRUN_TRIGGER_COOLDOWN must be at least 0"),
        (
            {"RIVERRUN_TASK": "regression", "RIVERRUN_TRIGGER_SLUMP_ACTION": "retrain"},
            "RIVERRUN_TRIGGER_SLUMP_METRIC='rolling_accuracy': the status of a regression model "
            "does not report it; use one of mae, rmse, rolling_mae, rolling_rmse",
        ),
        ({"RIVERRUN_MODEL_NAME": ""}, "RIVERRUN_MODEL_NAME='': expected a model name that can"),
        ({"RIVERRUN_TOPIC_EVENTS": ""}, "RIVERRUN_TOPIC_EVENTS is empty: expected a topic name"),
        (
            {"RIVERRUN_TOPIC_DEADLETTER": "events"},
            "RIVERRUN_TOPIC_DEADLETTER='events' is a topic the flow reads: its outputs would",
        ),
        ({"RIVERRUN_TOPIC_PREDICTIONS": "labels"}, "RIVERRUN_TOPIC_PREDICTIONS='labels' is a"),
        ({"RIVERRUN_MODEL_NAME": "a/b"}, "RIVERRUN_MODEL_NAME='a/b': expected a model name"),
        (
            {"RIVERRUN_METRICS_PORT": "65535", "RIVERRUN_PROCESSES": "2"},
            "RIVERRUN_METRICS_PORT: learn process K serves /metrics on port \\+ K",
        ),
        (
            {"RIVERRUN_TASK": "regression", "RIVERRUN_DRIFT_DETECTOR": "ddm"},
            "RIVERRUN_DRIFT_DETECTOR=ddm watches a 0/1 error",
        ),
        ({"RIVERRUN_REDIS_URL": "notaurl"}, "RIVERRUN_REDIS_URL='notaurl': expected a redis://"),
        ({"RIVERRUN_REDIS_URL": "http://h:6379"}, "'http://h:6379': expected a redis://"),
        ({"RIVERRUN_REDIS_URL": "redis://h:99999/0"}, "the port is no number from 1 to 65535"),
        ({"RIVERRUN_REDIS_URL": "redis://h:0/0"}, "the port is no number from 1 to 65535"),
        ({"RIVERRUN_REDIS_URL": "redis://h:x/0"}, "the port is no number from 1 to 65535"),
        ({"RIVERRUN_REDIS_URL": "redis://h:\u00b2/0"}, "the port is no number from 1 to 65535"),
        ({"RIVERRUN_REDIS_URL": "redis://[::1"}, "Invalid IPv6 URL"),
        ({"RIVERRUN_REDIS_URL": "REDIS://h"}, "'REDIS://h': Redis URL must specify one of"),
        ({"RIVERRUN_REDIS_URL": "redis://h/two"}, "database 'two' is no number"),
        ({"RIVERRUN_REDIS_URL": "redis://h/\u00b2"}, "database '\u00b2' is no number"),
        ({"RIVERRUN_REDIS_URL": "redis://h/0?db=x"}, "Invalid value for 'db'"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_secret_is_not_shown() -> None:
    s = Settings.from_env({"RIVERRUN_REGISTRY_KEY": "hunter2"})
    assert "hunter2" not in repr(s)
    s = Settings.from_env({"RIVERRUN_REDIS_URL": "redis://:hunter3@h:6379/0"})
    assert "hunter3" not in repr(s) and "redis://:***@h:6379/0" in repr(s)


def test_the_server_binds_to_loopback_by_default_and_tls_needs_both_files() -> None:
    s = Settings.from_env({})
    assert (s.serve_host, s.serve_port, s.serve_metrics_port) == ("127.0.0.1", 50051, 9900)
    with pytest.raises(SettingsError, match="RIVERRUN_SERVE_TLS_CERT and RIVERRUN_SERVE_TLS_KEY"):
        Settings.from_env({"RIVERRUN_SERVE_TLS_CERT": "cert.pem"})
    with pytest.raises(SettingsError, match="RIVERRUN_SERVE_MAX_BATCH must be at least 1"):
        Settings.from_env({"RIVERRUN_SERVE_MAX_BATCH": "0"})


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "rediss://u:p@cache.example:6380/3",
        "redis://h",
        "unix:///r.sock",
        "unix:///r.sock?db=1",
        "redis://[::1]:6379/0",
        "redis://h/x?db=2",
    ],
)
def test_good_redis_urls_pass(url: str) -> None:
    assert Settings.from_env({"RIVERRUN_REDIS_URL": url}).redis_url == url


def test_a_bad_redis_url_hides_its_password() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"RIVERRUN_REDIS_URL": "redis://user:hunter2@h:99999/0"})
    assert str(caught.value) == (
        "RIVERRUN_REDIS_URL='redis://user:***@h:99999/0': the port is no number from 1 to 65535"
    )
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"RIVERRUN_REDIS_URL": "redis://:hunter2@h/zero"})
    assert (
        str(caught.value)
        == "RIVERRUN_REDIS_URL='redis://:***@h/zero': database 'zero' is no number"
    )
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"RIVERRUN_REDIS_URL": "redis://user:p@ss:w@rd@[::1"})
    assert "p@ss" not in str(caught.value) and "'redis://user:***@[::1'" in str(caught.value)


def test_a_misspelt_variable_is_named_in_a_warning_with_the_likely_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="riverrun.settings"):
        s = Settings.from_env({"RIVERRUN_METRIC_PORT": "0", "RIVERRUN_XYZZY_WARN_TEST": "1"})
    assert s.metrics_port == Settings().metrics_port, "a misspelt name sets nothing"
    assert caplog.messages == [
        "ignoring RIVERRUN_METRIC_PORT: riverrun has no such setting "
        "(did you mean RIVERRUN_METRICS_PORT?)",
        "ignoring RIVERRUN_XYZZY_WARN_TEST: riverrun has no such setting",
    ]
