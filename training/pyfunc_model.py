"""The MLflow pyfunc definition of a risk model, logged as code (models from code), not as a pickle."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd

from training.model import RiskModel


class RiskModelPyfunc(mlflow.pyfunc.PythonModel):
    """The risk model as an MLflow pyfunc, so MLflow's own tools can score it too."""

    def load_context(self, context) -> None:
        """Load the saved risk model from the run's artifacts."""
        self.model = RiskModel.load(folder=Path(context.artifacts["risk_model"]))

    def predict(self, context, model_input: pd.DataFrame, params=None):
        """Calibrated P(late) per row of a feature table."""
        return self.model.risk_frame(model_input)


mlflow.models.set_model(RiskModelPyfunc())
