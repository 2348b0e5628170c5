"""MLflow lineage as MLflow shows it: the splits as datasets of the run, the model as its output, and the test
metrics linked to both (the run's and the logged model's pages show them)."""

from __future__ import annotations

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
    from mlflow.entities import LoggedModelOutput

    outputs = run.client.get_run(run.run_id).outputs
    if model_id not in {m.model_id for m in (outputs.model_outputs if outputs else [])}:  # a reused release
        run.client.log_outputs(run.run_id, [LoggedModelOutput(model_id, 0)])
    run.log_metrics(metrics, model_id=model_id, dataset=(dataset_name(lab, "test"), splits.key))
