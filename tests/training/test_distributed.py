"""The Dask engine: LightGBM's own Dask estimator on a 2-worker local cluster, same run and model format."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from features.offline import build_features_chunked
from training.runner import TrainRequest, run_training
from training.tracking import load_registered


@pytest.fixture(scope="module")
def partitions(tmp_path_factory, twin):
    folder = tmp_path_factory.mktemp("features")
    build_features_chunked(history=twin, out_dir=folder, chunk_days=7)
    return folder


def test_dask_training_matches_the_single_machine_model(twin, twin_dir, partitions, tracking):
    local = run_training(request=TrainRequest(models=("carrier_delay",)), history=twin, truth_folder=twin_dir)[0]
    distributed = run_training(
        request=TrainRequest(models=("carrier_delay",), engine="dask", scheduler="local", features_dir=partitions),
        history=None,
        truth_folder=twin_dir,
    )[0]
    assert distributed.windows == local.windows
    assert distributed.rows == local.rows
    assert abs(distributed.metrics["test_auc"] - local.metrics["test_auc"]) < 0.02
    # Data-parallel boosting places chunks on workers at random, and each worker bins its own rows: on 16k
    # rows that usually moves log loss a few percent, but runs up to 25% worse have been seen, and calibration
    # error (usually 0.021 against the single machine's 0.020) has reached 0.044 under a loaded machine.
    # A broken engine is far outside these; the AUC and log-loss checks are what would catch it.
    assert distributed.metrics["test_logloss"] < 1.3 * local.metrics["test_logloss"]
    assert distributed.metrics["test_ece"] < 0.06
    run = MlflowClient().get_run(distributed.run_id)
    assert run.data.params["engine"] == "dask:local" and run.info.status == "FINISHED"
    loaded = load_registered(model_name="carrier_delay", version=distributed.version)
    assert loaded.model.features_ == local.features
