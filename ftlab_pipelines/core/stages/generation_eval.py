"""evaluation for generation labs: base vs fine-tuned on held-out loss, perplexity, preference accuracy,
persona score and sample generations (cut at stop strings)."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from ftlab_pipelines.core import artifacts
from ftlab_pipelines.core.evaluation import generation, plots
from ftlab_pipelines.core.modeling import models, safetensors_check
from ftlab_pipelines.core.stages import Markdown
from ftlab_pipelines.core.stages.results import Evaluation, Splits
from ftlab_pipelines.core.stages.runner import Prepared, Report, StageContext, Target
from ftlab_pipelines.core.text import prompts, tokenize

log = logging.getLogger(__name__)

BASE, FINE_TUNED = "base_model", "fine_tuned"


def load_fine_tuned(base, adapter_dir):
    safetensors_check.require_safetensors(Path(adapter_dir), "adapter_model", "adapter")  # never a pickled .bin
    try:
        return models.load_lora(base, adapter_dir)
    except Exception as exc:  # noqa: BLE001 - safetensors/peft raise many types for a corrupt file
        raise models.ModelError(f"{adapter_dir}: the adapter cannot be loaded ({exc}); re-materialize it") from None


def measure(model, tokenizer, lab, test_set, test_pairs: pd.DataFrame, samples: pd.DataFrame) -> dict:
    """Every generation metric of one model, plus its sample replies."""
    cfg, gen = lab.prompt, lab.eval.generation
    bf16, batch = models.use_bf16(lab.train.bf16), lab.train.eval_batch_size
    result = generation.completion_loss(model, test_set, tokenizer.pad_token_id, batch, bf16)
    if cfg.rejected_column:
        result["preference_accuracy"] = generation.preference_accuracy(
            model, tokenizer, cfg, test_pairs, lab.model.max_length, batch, bf16)
    replies = generation.generate(
        model, tokenizer, [prompts.render_prompt(cfg, tokenizer, p) for p in samples[prompts.PROMPT]],
        max_new_tokens=gen.max_new_tokens, stop_strings=cfg.stop_strings, repetition_penalty=gen.repetition_penalty,
        bf16=bf16, add_special_tokens=cfg.format == "instruction",
    )
    if gen.persona_score:
        result["persona_score"] = generation.persona_score(replies, samples[prompts.COMPLETION].tolist())
    return {"metrics": result, "generations": replies}


def comparison_table(results: dict[str, dict]) -> str:
    frame = pd.DataFrame({name: r["metrics"] for name, r in results.items()}).T
    return frame.to_markdown()


def generations_table(samples: pd.DataFrame, results: dict[str, dict]) -> str:
    table = pd.DataFrame({"message": samples[prompts.PROMPT], "held-out reply": samples[prompts.COMPLETION],
                          **{f"{name} reply": r["generations"] for name, r in results.items()}})
    return table.map(lambda s: str(s).replace("\n", " ").replace("|", "\\|")).to_markdown(index=False)


def build(lab, upstream: dict, prepared: Prepared, target: Target, ctx: StageContext) -> Evaluation:
    splits: Splits = upstream["splits"]
    gen = lab.eval.generation
    test_set = tokenize.load_tokenized(upstream["tokenized"].dataset_path)["test"]
    test_pairs = prompts.sft_pairs(pd.read_parquet(splits.split_path("test")), lab.prompt)
    if gen.max_eval_rows:
        test_set = test_set.select(range(min(gen.max_eval_rows, len(test_set))))
        test_pairs = test_pairs.head(gen.max_eval_rows)
    samples = test_pairs.drop_duplicates(prompts.PROMPT).head(gen.samples)
    model = models.resolved(lab.model, ctx.settings.model_cache)
    tokenizer = models.load_tokenizer(model)
    base = models.load_causal_lm(model)
    log.info("evaluating the base model on %d held-out rows", len(test_set))
    results = {BASE: measure(base, tokenizer, lab, test_set, test_pairs, samples)}
    log.info("evaluating the fine-tuned model")
    fine_tuned = load_fine_tuned(base, upstream["adapter"].path)
    results[FINE_TUNED] = measure(fine_tuned, tokenizer, lab, test_set, test_pairs, samples)
    metrics = {name: r["metrics"] for name, r in results.items()}
    base_loss, fine_loss = metrics[BASE]["eval_loss"], metrics[FINE_TUNED]["eval_loss"]
    metrics[FINE_TUNED]["loss_reduction"] = round(1 - fine_loss / base_loss, 4) if base_loss else None
    tmp = target.tmp
    artifacts.write_json(tmp / "metrics.json", metrics)
    artifacts.write_json(tmp / "generations.json", {"samples": samples.to_dict("records"),
                                                    **{n: r["generations"] for n, r in results.items()}})
    (tmp / "comparison.md").write_text(comparison_table(results), encoding="utf-8")
    (tmp / "generations.md").write_text(generations_table(samples, results), encoding="utf-8")
    primary = lab.eval.primary_metric
    return Evaluation(key=target.key, dir=str(target.out), metrics=metrics, primary_metric=primary,
                      primary_value=metrics[FINE_TUNED].get(primary), threshold=None)


def report(lab, upstream: dict, result: Evaluation, ctx: StageContext, reused: bool,
           prepared: Prepared) -> Report:
    out, run, metrics = result.path, ctx.run, result.metrics
    fine = metrics[FINE_TUNED]
    run.log_params({"eval": lab.eval.model_dump(mode="json")})
    run.log_metrics({f"test_{k}": v for k, v in fine.items() if isinstance(v, int | float)})
    run.log_metrics({f"base_test_{k}": v for k, v in metrics[BASE].items() if isinstance(v, int | float)})
    for name in ("metrics.json", "generations.json", "comparison.md", "generations.md"):
        run.log_artifact(out / name)
    metadata = {
        f"test_{result.primary_metric}": result.primary_value,
        "base_eval_loss": metrics[BASE]["eval_loss"],
        "eval_loss": fine["eval_loss"],
        "loss_reduction": fine["loss_reduction"],
        "comparison": Markdown((out / "comparison.md").read_text(encoding="utf-8")),
        "generations": Markdown((out / "generations.md").read_text(encoding="utf-8")),
    }
    loss_png = upstream["adapter"].path / "loss_curves.png"
    if loss_png.is_file():
        metadata["loss_curves"] = Markdown(plots.markdown_image(loss_png, "loss curves"))
    return Report(metadata)
