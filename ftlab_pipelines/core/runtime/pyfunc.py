"""MLflow pyfunc wrappers: what `mlflow.pyfunc.load_model`, `mlflow models serve` and `ftlab serve` call.

Bad input raises MLflow's INVALID_PARAMETER_VALUE, which the scoring server answers with a 400 and the message.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel

from .classify import MODEL_ARTIFACT, BadInput, TextClassifier
from .generate import ChatGenerator

# The models declare their schema in an explicit signature (the generator's has optional columns and params),
# so MLflow's advice to add type hints for signature inference does not apply.
warnings.filterwarnings("ignore", message=".*Add type hints to the `predict` method")  # message is colored


def _rows(model_input):
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        return model_input
    if isinstance(model_input, dict):
        return pd.DataFrame([model_input])
    if isinstance(model_input, list):
        return pd.DataFrame(model_input)
    raise MlflowException.invalid_parameter_value(
        f"expected a table of rows (DataFrame, records or split), got {type(model_input).__name__}")


class ClassifierModel(PythonModel):
    def load_context(self, context):
        self.runtime = TextClassifier(Path(context.artifacts[MODEL_ARTIFACT]))

    def predict(self, context, model_input, params=None):
        try:
            return self.runtime.predict(_rows(model_input))
        except BadInput as exc:
            raise MlflowException.invalid_parameter_value(str(exc)) from None


class GeneratorModel(PythonModel):
    def load_context(self, context):
        self.runtime = ChatGenerator(Path(context.artifacts[MODEL_ARTIFACT]))

    def _prompts(self, model_input) -> list[str]:
        frame = _rows(model_input)
        if len(frame) == 0:
            raise BadInput("the input has no rows; send at least one message")
        if "message" not in frame.columns and "messages" not in frame.columns:
            raise BadInput(f"the input needs a `message` column (text) or a `messages` column (a list of "
                           f"{{role, content}}); got columns {list(frame.columns)}")
        prompts = []
        for row in frame.to_dict("records"):
            messages = row.get("messages")
            has_messages = messages is not None and not (isinstance(messages, float) and messages != messages)
            prompts.append(self.runtime.prompt_text(messages=list(messages)) if has_messages
                           else self.runtime.prompt_text(message=row.get("message")))
        return prompts

    @staticmethod
    def _options(params) -> dict:
        params = params or {}
        temperature = float(params.get("temperature") or 0.0)
        if temperature < 0:
            raise BadInput(f"temperature must be >= 0 (0 is greedy), got {temperature}")
        max_new_tokens = params.get("max_new_tokens")
        if max_new_tokens is not None and not 1 <= int(max_new_tokens) <= 4096:
            raise BadInput(f"max_new_tokens must be between 1 and 4096, got {max_new_tokens}")
        return {"max_new_tokens": int(max_new_tokens) if max_new_tokens else None, "temperature": temperature}

    def predict(self, context, model_input, params=None):
        import pandas as pd

        try:
            options = self._options(params)
            return pd.DataFrame({"reply": [self.runtime.reply(p, **options) for p in self._prompts(model_input)]})
        except BadInput as exc:
            raise MlflowException.invalid_parameter_value(str(exc)) from None

    def predict_stream(self, context, model_input, params=None):
        try:
            options = self._options(params)
            prompts = self._prompts(model_input)
        except BadInput as exc:
            raise MlflowException.invalid_parameter_value(str(exc)) from None
        if len(prompts) != 1:
            raise MlflowException.invalid_parameter_value("streaming answers one message at a time")
        yield from self.runtime.stream(prompts[0], **options)
