"""Dagster resources: the MLflow tracker. Secrets (HF_TOKEN) stay in the environment, never in config."""


import dagster as dg

from ftlab_pipelines.core.tracking import Tracker


class MlflowTrackerResource(dg.ConfigurableResource):
    """MLflow store that every asset logs to (default: sqlite under FTLAB_HOME)."""

    tracking_uri: str | None = None

    def get_tracker(self) -> Tracker:
        return Tracker(self.tracking_uri)


def default_resources() -> dict:
    return {"mlflow_tracker": MlflowTrackerResource()}
