"""MLflow lineage as MLflow shows it: the splits as datasets of the run, the model as its output, and the test
metrics linked to both (the run's and the logged model's pages show them)."""

from __future__ import annotations

import time

CONTEXTS = {"train": "training", "validation": "validation", "test": "testing"}


def dataset_name(lab: str, split: str) -> str:
    return f"{lab}.{split}"


def log_splits(run, lab, splits) -> None:
    """Each split as an MLflow dataset; its digest is ftlab's key of the splits (the data hash)."""
    import mlflow.data
    from mlflow.entities import DatasetInput, InputTag

    targets = None if lab.is_generative else lab.source.label_column
    inputs = []
    for split, frame in splits.frames().items():
        dataset = mlflow.data.from_pandas(frame, source=str(splits.split_path(split)), name=dataset_name(lab.name, split),
                                          digest=splits.key, targets=targets if targets in frame.columns else None)
        inputs.append(DatasetInput(dataset._to_mlflow_entity(),
                                   [InputTag("mlflow.data.context", CONTEXTS.get(split, split))]))
    run.client.log_inputs(run.run_id, datasets=inputs)


def link_model(run, model_id: str, metrics: dict, lab: str, splits) -> None:
    """The model as the run's output, and `metrics` (measured on the test split) linked to model and dataset."""
    from mlflow.entities import LoggedModelOutput, Metric

    outputs = run.client.get_run(run.run_id).outputs
    if model_id not in {m.model_id for m in (outputs.model_outputs if outputs else [])}:  # a reused release
        run.client.log_outputs(run.run_id, [LoggedModelOutput(model_id, 0)])
    now = int(time.time() * 1000)
    linked = [Metric(key, float(value), now, 0, model_id=model_id, dataset_name=dataset_name(lab, "test"),
                     dataset_digest=splits.key)
              for key, value in metrics.items() if isinstance(value, int | float) and value == value]
    if linked:
        run.client.log_batch(run.run_id, metrics=linked)


def numeric(metrics: dict) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
