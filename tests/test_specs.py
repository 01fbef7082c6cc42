"""A data scientist's own model: factories are checked on load, with one clear error each."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from models.specs import SpecError, build_model
from tests.helpers import run_cli

FACTORIES = '''
from river import base, linear_model, preprocessing


class NeedsAmount(base.Classifier):
    """Predicts from the feature 'amount', which it needs; counts its predictions."""

    def __init__(self):
        self.asked = 0

    def learn_one(self, x, y):
        pass

    def predict_proba_one(self, x):
        self.asked += 1
        p = min(max(x["amount"] / 100, 0.0), 1.0)
        return {True: p, False: 1 - p}


class SaysSeven(base.Classifier):
    def learn_one(self, x, y):
        pass

    def predict_proba_one(self, x):
        return 7


def good():
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


def needs_amount():
    return NeedsAmount()


def not_estimator():
    return {"weights": [1, 2]}


def regressor():
    return linear_model.LinearRegression()


def scaler_only():
    return preprocessing.StandardScaler()


def says_seven():
    return SaysSeven()


def factory_raises():
    raise RuntimeError("no GPU here")


def factory_exits():
    raise SystemExit(0)
'''


@pytest.fixture(scope="module")
def factories(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder outside the project holding the modules ``dsfactories`` and ``dsbroken``."""
    folder = tmp_path_factory.mktemp("ds")
    (folder / "dsfactories.py").write_text(FACTORIES)
    (folder / "dsbroken.py").write_text("import nosuchpackage_xyz\n")
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))


def test_a_factory_model_is_built_and_checked(factories: Path) -> None:
    model = build_model("dsfactories:good", "binary", 0, {"a": 1.0})
    assert model.predict_proba_one({"a": 1.0}) == {False: 0.5, True: 0.5}


def test_the_sample_event_is_predicted_on_a_copy(factories: Path) -> None:
    model = build_model("dsfactories:needs_amount", "binary", 0, {"amount": 30.0})
    assert model.asked == 0, "checking the model must not change it"


@pytest.mark.parametrize(
    ("spec", "task", "sample", "message"),
    [
        ("dsfactories:not_estimator", "binary", None, "returned dict, not a River estimator"),
        ("dsfactories:regressor", "binary", None, "is not a classifier, but the task is binary"),
        ("dsfactories:good", "regression", None, "is not a regressor"),
        ("dsfactories:good", "multiclass", None, "is a binary classifier"),
        ("dsfactories:scaler_only", "binary", None, "is not a classifier"),
        ("dsfactories:needs_amount", "binary", {"age": 3.0}, "raised KeyError('amount')"),
        ("dsfactories:says_seven", "binary", None, "dict of class probabilities"),
        ("dsfactories:factory_raises", "binary", None, "the factory raised RuntimeError"),
        ("dsfactories:factory_exits", "binary", None, "the factory raised SystemExit(0)"),
        ("dsfactories:nothing", "binary", None, "dsfactories has no callable 'nothing'"),
        ("dsbroken:make", "binary", None, "cannot import 'dsbroken'"),
        ("nosuch_module_xyz:make", "binary", None, "cannot import 'nosuch_module_xyz'"),
    ],
)
def test_a_model_that_does_not_fit_is_refused_clearly(
    factories: Path, spec: str, task: str, sample: dict[str, float] | None, message: str
) -> None:
    with pytest.raises(SpecError) as refused:
        build_model(spec, task, 0, sample)
    assert message in str(refused.value)
    assert spec in str(refused.value) and "\n" not in str(refused.value)


def test_the_learn_command_refuses_a_bad_factory_with_one_line(factories: Path) -> None:
    done = run_cli({"PYTHONPATH": str(factories)}, "learn", "--model-spec", "dsbroken:make")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "riverrun learn: error: model spec 'dsbroken:make': cannot import 'dsbroken': "
        "ModuleNotFoundError(\"No module named 'nosuchpackage_xyz'\")"
    ]
