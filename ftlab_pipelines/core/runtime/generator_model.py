"""MLflow models-from-code entry point of an ftlab generation model (runs inside the logged model)."""

import mlflow
from ftlab_runtime.pyfunc import GeneratorModel

mlflow.models.set_model(GeneratorModel())
