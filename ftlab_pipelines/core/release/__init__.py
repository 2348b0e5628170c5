"""Release directory, local and MLflow registries, promotion, and the predictor/chat that load a release."""
