"""Dagster resources: ftlab's settings and MLflow tracker. Secrets (HF_TOKEN) stay in the environment, never in config."""


import dagster as dg
from pydantic import Field

from ftlab_pipelines.core.config.settings import Settings
from ftlab_pipelines.core.tracking import Tracker


class FtlabResource(dg.ConfigurableResource):
    """Where ftlab keeps its state and which MLflow store every asset logs to; resolved from the environment
    (FTLAB_HOME, FTLAB_DATA_DIR, MLFLOW_TRACKING_URI, ...) once per step, unless set here."""

    tracking_uri: str | None = Field(None, description="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else "
                                                        "a sqlite store in FTLAB_HOME).")

    def settings(self) -> Settings:
        return Settings.from_env()

    def tracker(self, settings: Settings) -> Tracker:
        return Tracker(settings, self.tracking_uri)


def default_resources() -> dict:
    return {"ftlab": FtlabResource()}
