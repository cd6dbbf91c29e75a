"""MLflow: where runs go, how a risk model is logged and registered, and how a registered one is loaded.

The embedded default is `sqlite:///mlruns/mlflow.db` with artifacts under `mlruns/artifacts`; any
tracking server works through `MLFLOW_TRACKING_URI`. Each model has one experiment and one
registered model of the same name. Aliases: the first version becomes `champion` only when no
champion exists; every new version becomes `challenger`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from features.definitions import MODEL_FEATURES
from training.errors import ModelLoadError
from training.model import RiskModel

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
CHAMPION = "champion"
CHALLENGER = "challenger"
MODEL_ARTIFACT = "model"
TEST_TABLE_ARTIFACT = "evaluation/test_features.parquet"
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")


def configure(*, tracking_uri: str | None = None) -> str:
    """Point MLflow at the given store, else MLFLOW_TRACKING_URI, else the embedded default."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        # A relative SQLite path is relative to where the command runs; make it absolute once.
        database = Path(uri.removeprefix("sqlite:///")).resolve()
        database.parent.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{database}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def experiment_id(*, model_name: str) -> str:
    """The experiment of a model, created on first use (artifacts beside a local SQLite store)."""
    client = MlflowClient()
    existing = client.get_experiment_by_name(model_name)
    if existing is not None:
        return existing.experiment_id
    location = None
    uri = mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///"):
        location = (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
    return client.create_experiment(model_name, artifact_location=location)


@contextmanager
def tracked_run(*, model_name: str, run_name: str) -> Iterator[mlflow.ActiveRun]:
    """A run that ends FINISHED, or FAILED with its reason; never left RUNNING."""
    run = mlflow.start_run(experiment_id=experiment_id(model_name=model_name), run_name=run_name)
    try:
        yield run
    except BaseException as exc:
        reason = f"{type(exc).__name__}: {exc}"[:5000]
        try:
            mlflow.set_tag("failure_reason", reason)
        finally:
            mlflow.end_run(status="FAILED")
        raise
    else:
        mlflow.end_run(status="FINISHED")


def log_model(*, model: RiskModel, example: pd.DataFrame) -> str:
    """Log the model with signature and input example into the active run; returns its URI."""
    from mlflow.models import infer_signature

    with tempfile.TemporaryDirectory() as folder:
        model.save(folder=Path(folder) / "risk_model")
        sample = example[list(model.features_)].head(20).reset_index(drop=True)
        signature = infer_signature(sample, model.risk_frame(sample))
        info = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT,
            python_model=str(PYFUNC_CODE),
            artifacts={"risk_model": str(Path(folder) / "risk_model")},
            signature=signature,
            input_example=sample.head(5),
            pip_requirements=["lightgbm", "scikit-learn", "pandas", "numpy"],
        )
    return info.model_uri


def register(*, model_name: str, model_uri: str, run_id: str) -> str:
    """Register a logged model as a new version and set its aliases; undo the version if that fails."""
    client = MlflowClient()
    try:
        client.get_registered_model(model_name)
    except MlflowException:
        client.create_registered_model(model_name, description=f"riskroute {model_name} risk model")
    version = client.create_model_version(model_name, source=model_uri, run_id=run_id)
    try:
        client.set_registered_model_alias(model_name, CHALLENGER, version.version)
        if alias_version(model_name=model_name, alias=CHAMPION) is None:
            client.set_registered_model_alias(model_name, CHAMPION, version.version)
    except BaseException:
        client.delete_model_version(model_name, version.version)
        raise
    return str(version.version)


def alias_version(*, model_name: str, alias: str) -> str | None:
    """The version an alias points at, or None."""
    try:
        return str(MlflowClient().get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None


@dataclass(frozen=True)
class RegisteredModel:
    """A risk model loaded from the registry, with where it came from."""

    model: RiskModel
    name: str
    version: str
    run_id: str


def version_exists(*, model_name: str, version: str) -> bool:
    """Whether the registry holds this version of the model."""
    try:
        MlflowClient().get_model_version(model_name, str(version))
        return True
    except MlflowException:
        return False


def set_alias(*, model_name: str, alias: str, version: str) -> None:
    """Point an alias at a registered version."""
    MlflowClient().set_registered_model_alias(model_name, alias, str(version))


def load_registered(*, model_name: str, alias: str | None = None, version: str | None = None) -> RegisteredModel:
    """Load models:/NAME@ALIAS (or a version) as a ready-to-score model, checked once against this code."""
    client = MlflowClient()
    try:
        found = (
            client.get_model_version(model_name, version)
            if version is not None
            else client.get_model_version_by_alias(model_name, alias or CHAMPION)
        )
    except MlflowException as exc:
        ref = f"version {version}" if version is not None else f"@{alias or CHAMPION}"
        raise ModelLoadError(f"no registered model {model_name} {ref}: {exc.message}") from None
    model = load_from_uri(uri=f"models:/{model_name}/{found.version}", model_name=model_name)
    return RegisteredModel(model=model, name=model_name, version=str(found.version), run_id=found.run_id)


def load_from_uri(*, uri: str, model_name: str) -> RiskModel:
    """A risk model from any MLflow model URI (models:/..., runs:/...), scoring on one thread."""
    try:
        folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except MlflowException as exc:
        raise ModelLoadError(f"cannot fetch {uri}: {exc.message}") from None
    return RiskModel.load(
        folder=folder / "artifacts" / "risk_model", expected_features=MODEL_FEATURES.get(model_name), num_threads=1
    )


def test_table(*, run_id: str) -> pd.DataFrame:
    """The test window a run was evaluated on (its feature rows and labels)."""
    try:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=TEST_TABLE_ARTIFACT)
    except MlflowException as exc:
        raise ModelLoadError(f"run {run_id} has no test window to re-score: {exc.message}") from None
    return pd.read_parquet(path)
