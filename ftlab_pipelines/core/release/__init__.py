"""Release directory, the MLflow pyfunc model and its lineage, local and MLflow registries, promotion, serving."""
