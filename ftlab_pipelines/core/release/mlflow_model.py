"""Every release as a self-contained MLflow pyfunc model: merged weights, tokenizer, serving config, runtime code.

Merged rather than base + adapter: the model then needs neither peft nor ftlab's model cache to load, it is
no larger (the base weights must ship either way), and it scores faster (no LoRA matmuls at inference). The
merge is checked for logit parity with base + adapter before it is logged.

The model is logged in the models-from-code form: `core/runtime/<task>_model.py` is the entry point and the
runtime package ships beside it as `ftlab_runtime`, so the model imports nothing from ftlab.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from ftlab_pipelines.core import artifacts, tracking
from ftlab_pipelines.core.runtime import classify, loading

RUNTIME_DIR = Path(__file__).resolve().parents[1] / "runtime"
RUNTIME_PACKAGE = "ftlab_runtime"
MODEL_NAME = "model"
# What the runtime imports, pinned to the versions it was logged with (transformers brings tokenizers and
# safetensors; jinja2 renders chat templates).
REQUIREMENTS = ("mlflow", "torch", "transformers", "tokenizers", "safetensors", "numpy", "pandas", "jinja2")
GENERATION_PARAMS = {"max_new_tokens": 64, "temperature": 0.0}


@dataclass(frozen=True)
class LoggedModel:
    model_id: str
    model_uri: str  # models:/<model_id>


def requirements() -> list[str]:
    return [f"{name}=={metadata.version(name)}" for name in REQUIREMENTS]


def serving_config(lab, evaluation, render: dict | None = None) -> dict:
    """What the runtime needs to turn a request into the model's input and its output into an answer. `render`:
    the tokenized stage's fitted row template (tabular labs)."""
    common = {"lab": lab.name, "task": lab.task, "template": lab.model.template, "max_length": lab.model.max_length}
    if lab.is_generative:
        gen = lab.eval.generation
        return {**common, "prompt": lab.prompt.model_dump(mode="json"),
                "generation": {"max_new_tokens": gen.max_new_tokens, "repetition_penalty": gen.repetition_penalty}}
    return {**common, "labels": lab.labels, "positive_label": lab.positive_label, "threshold": evaluation.threshold,
            "text_column": lab.source.text_column,
            "render": render}


def write_serving_config(model_dir: Path, config: dict) -> None:
    artifacts.write_json(model_dir / loading.SERVING_CONFIG, config)


def classifier_example(lab, splits):
    """One row of the validation split, in the columns a request sends."""
    import pandas as pd

    columns = list(lab.render.columns) if lab.render else [lab.source.text_column]
    return pd.read_parquet(splits.split_path("validation"), columns=columns).head(1).reset_index(drop=True)


def signature(lab, example):
    """Input and output schema (and the generation params) for the model's task, from the lab alone."""
    from mlflow.models import infer_signature
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import (
        Array,
        ColSpec,
        Object,
        ParamSchema,
        ParamSpec,
        Property,
        Schema,
    )

    if lab.is_generative:
        messages = Array(Object([Property("role", "string"), Property("content", "string")]))
        return ModelSignature(
            inputs=Schema([ColSpec("string", "message", required=False), ColSpec(messages, "messages", required=False)]),
            outputs=Schema([ColSpec("string", "reply")]),
            params=ParamSchema([ParamSpec("max_new_tokens", "long", lab.eval.generation.max_new_tokens),
                                ParamSpec("temperature", "double", 0.0)]))
    outputs = Schema([ColSpec("string", "label"), ColSpec("double", "score"),
                      *[ColSpec("double", f"prob_{label}") for label in lab.labels]])
    return ModelSignature(inputs=infer_signature(example).inputs, outputs=outputs)


def generation_example():
    import pandas as pd

    return pd.DataFrame({"message": ["Hello, how are you today?"]})


@contextlib.contextmanager
def staged_runtime() -> Iterator[Path]:
    """The runtime copied as the package `ftlab_runtime`, importable while MLflow runs the entry point to log it."""
    with tempfile.TemporaryDirectory(prefix="ftlab-runtime-") as tmp:
        package = Path(tmp) / RUNTIME_PACKAGE
        shutil.copytree(RUNTIME_DIR, package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        sys.path.insert(0, tmp)
        bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ in the logged code
        try:
            yield package
        finally:
            sys.dont_write_bytecode = bytecode
            sys.path.remove(tmp)
            for name in [m for m in sys.modules if m == RUNTIME_PACKAGE or m.startswith(RUNTIME_PACKAGE + ".")]:
                del sys.modules[name]


@contextlib.contextmanager
def active_run(tracking_uri: str, run_id: str):
    """MLflow's fluent API pointed at this store and this (already open) run, for the duration of the block."""
    import mlflow

    with tracking.using_store(tracking_uri), mlflow.start_run(run_id=run_id):
        yield


def log_model(lab, model_dir: Path, example, tracking_uri: str, run_id: str) -> LoggedModel:
    """Log `model_dir` (merged weights, tokenizer, serving config) as a pyfunc model of the run."""
    import mlflow

    sig = signature(lab, example)
    entry = "generator_model.py" if lab.is_generative else "classifier_model.py"
    with staged_runtime() as package, active_run(tracking_uri, run_id):
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME, python_model=str(package / entry), code_paths=[str(package)],
            artifacts={classify.MODEL_ARTIFACT: str(model_dir)}, signature=sig, input_example=example,
            pip_requirements=requirements(),
            tags={"lab": lab.name, "task": lab.task, "mlflow.source.name": f"ftlab {lab.name}/published_adapter",
                  **tracking.source_tags()})
    return LoggedModel(info.model_id, info.model_uri)
