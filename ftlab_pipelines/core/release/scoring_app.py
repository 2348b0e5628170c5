"""The scoring app `ftlab serve` runs: MLflow's (`mlflow.pyfunc.scoring_server`) around a model that refuses
params it does not declare. Start it with `uvicorn --factory ftlab_pipelines.core.release.scoring_app:from_env`
and FTLAB_SERVE_MODEL_PATH set to a local pyfunc model directory."""

from __future__ import annotations

import os


class DeclaredParamsOnly:
    """A pyfunc model whose `predict` refuses unknown params (MLflow itself drops them with a warning)."""

    def __init__(self, model):
        self._model = model
        self.metadata = model.metadata
        schema = model.metadata.get_params_schema()
        self.params = sorted(p.name for p in schema.params) if schema else []

    def predict(self, data, params=None):
        from mlflow.exceptions import MlflowException

        unknown = sorted(set(params or {}) - set(self.params))
        if unknown:
            accepted = ", ".join(self.params) if self.params else "no params"
            raise MlflowException.invalid_parameter_value(f"unknown params {unknown}: this model accepts {accepted}")
        return self._model.predict(data, params=params or None)

    def __getattr__(self, name):
        return getattr(self._model, name)


def build_app(model_dir: str):
    from mlflow.pyfunc import scoring_server

    return scoring_server.init(DeclaredParamsOnly(scoring_server.load_model_with_mlflow_config(model_dir)))


def from_env():
    return build_app(os.environ["FTLAB_SERVE_MODEL_PATH"])
