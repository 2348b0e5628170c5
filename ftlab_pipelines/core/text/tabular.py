"""Tabular rows as text: a lab's `render:` section fitted to the train split, then applied by the runtime's
`render_rows` in training, evaluation and inside every release alike."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ftlab_pipelines.core.config.labs import RenderConfig


def fit_bin_edges(train: pd.DataFrame, columns: list[str], bins: int) -> dict[str, list[float]]:
    """Quantile edges of each numeric column over the train split's distinct rows (upsampled copies of the
    minority would otherwise pull the edges toward it). Non-numeric columns are rendered as they are."""
    distinct = train.drop_duplicates()
    levels = np.arange(1, bins) / bins
    edges = {}
    for column in columns:
        values = distinct[column]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            present = values.dropna().to_numpy(dtype=float)
            if present.size:
                edges[column] = [float(v) for v in np.quantile(present, levels)]
    return edges


def fitted_render(config: RenderConfig, train: pd.DataFrame) -> dict:
    """The render section as the runtime reads it, with the bin edges fitted on `train` when bins are on."""
    mapping = config.model_dump(mode="json")
    if config.bins:
        mapping["bin_edges"] = fit_bin_edges(train, config.columns, config.bins)
    return mapping

