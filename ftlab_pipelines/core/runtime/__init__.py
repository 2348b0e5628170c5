"""The inference runtime shipped inside every MLflow model that ftlab logs (as the package `ftlab_runtime`).

It must load in a process that has only the model's declared requirements (torch, transformers, numpy,
pandas, mlflow): no ftlab, no peft, no network. So modules here import nothing from ftlab and import each
other relatively. ftlab itself uses the same functions (row rendering, prompts, stop strings, batched
scoring), so training, evaluation, `ftlab predict`, `ftlab chat` and `ftlab serve` share one inference path.
"""
