"""MLflow models-from-code entry point of an ftlab classifier (runs inside the logged model)."""

import mlflow
from ftlab_runtime.pyfunc import ClassifierModel

mlflow.models.set_model(ClassifierModel())
