"""evaluation for generation labs: base vs fine-tuned on held-out loss, perplexity, preference accuracy,
persona score and sample generations (cut at stop strings)."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from ftlab_pipelines.core import artifacts
from ftlab_pipelines.core.config.labs import LabConfig, stable_hash
from ftlab_pipelines.core.evaluation import generation, plots
from ftlab_pipelines.core.modeling import models, safetensors_check
from ftlab_pipelines.core.stages import Markdown, StageResult
from ftlab_pipelines.core.stages.split import load_split_frames
from ftlab_pipelines.core.text import prompts, tokenize
from ftlab_pipelines.core.tracking import AssetRun

log = logging.getLogger(__name__)

BASE, FINE_TUNED = "base_model", "fine_tuned"


def load_fine_tuned(base, adapter_dir):
    safetensors_check.require_safetensors(Path(adapter_dir), "adapter_model", "adapter")  # never a pickled .bin
    try:
        return models.load_lora(base, adapter_dir)
    except Exception as exc:  # noqa: BLE001 - safetensors/peft raise many types for a corrupt file
        raise models.ModelError(f"{adapter_dir}: the adapter cannot be loaded ({exc}); re-materialize it") from None


def measure(model, tokenizer, lab: LabConfig, test_set, test_pairs: pd.DataFrame, samples: pd.DataFrame) -> dict:
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


def write_generation_eval(lab: LabConfig, splits_manifest: dict, tokenized: dict, adapter: dict, out) -> None:
    gen = lab.eval.generation
    test_set = tokenize.load_tokenized(tokenized["path"])["test"]
    test_pairs = prompts.sft_pairs(load_split_frames(splits_manifest)["test"], lab.prompt)
    if gen.max_eval_rows:
        test_set = test_set.select(range(min(gen.max_eval_rows, len(test_set))))
        test_pairs = test_pairs.head(gen.max_eval_rows)
    samples = test_pairs.drop_duplicates(prompts.PROMPT).head(gen.samples)
    tokenizer = models.load_tokenizer(lab.model)
    base = models.load_causal_lm(lab.model)
    log.info("evaluating the base model on %d held-out rows", len(test_set))
    results = {BASE: measure(base, tokenizer, lab, test_set, test_pairs, samples)}
    log.info("evaluating the fine-tuned model")
    fine_tuned = load_fine_tuned(base, adapter["path"])
    results[FINE_TUNED] = measure(fine_tuned, tokenizer, lab, test_set, test_pairs, samples)
    metrics = {name: r["metrics"] for name, r in results.items()}
    base_loss, fine_loss = metrics[BASE]["eval_loss"], metrics[FINE_TUNED]["eval_loss"]
    metrics[FINE_TUNED]["loss_reduction"] = round(1 - fine_loss / base_loss, 4) if base_loss else None
    table, samples_md = comparison_table(results), generations_table(samples, results)
    with artifacts.atomic_dir(out) as tmp:
        artifacts.write_json(tmp / "metrics.json", metrics)
        artifacts.write_json(tmp / "generations.json", {"samples": samples.to_dict("records"),
                                                        **{n: r["generations"] for n, r in results.items()}})
        (tmp / "comparison.md").write_text(table, encoding="utf-8")
        (tmp / "generations.md").write_text(samples_md, encoding="utf-8")


def evaluate_generation(lab: LabConfig, splits_manifest: dict, tokenized: dict, adapter: dict,
                        run: AssetRun) -> StageResult:
    key = stable_hash({"adapter": adapter["key"], "eval": lab.eval.model_dump(mode="json"),
                       "prompt": lab.prompt.model_dump(mode="json")})
    out = artifacts.stage_dir(lab.name, "evaluation", key)
    reused = artifacts.is_complete(out, "comparison.md")  # same adapter (hence data), eval and prompt config
    if reused:
        log.info("evaluation %s already done for this adapter and eval config: reusing it", key)
    else:
        write_generation_eval(lab, splits_manifest, tokenized, adapter, out)
    metrics = artifacts.read_json(out / "metrics.json")
    base_loss, fine_loss = metrics[BASE]["eval_loss"], metrics[FINE_TUNED]["eval_loss"]
    table = (out / "comparison.md").read_text(encoding="utf-8")
    samples_md = (out / "generations.md").read_text(encoding="utf-8")
    fine = metrics[FINE_TUNED]
    run.set_tags({"data_hash": tokenized["key"], "adapter_key": adapter["key"]})
    run.log_params({"eval": lab.eval.model_dump(mode="json")})
    run.log_metrics({f"test_{k}": v for k, v in fine.items() if isinstance(v, int | float)})
    run.log_metrics({f"base_test_{k}": v for k, v in metrics[BASE].items() if isinstance(v, int | float)})
    for name in ("metrics.json", "generations.json", "comparison.md", "generations.md"):
        run.log_artifact(out / name)
    primary = lab.eval.primary_metric
    manifest = {"key": key, "path": str(out), "metrics": metrics, "primary_metric": primary,
                "primary_value": fine.get(primary), "threshold": None, "adapter_key": adapter["key"]}
    loss_png = Path(adapter["path"]) / "loss_curves.png"
    metadata = {
        f"test_{primary}": fine.get(primary),
        "base_eval_loss": base_loss,
        "eval_loss": fine_loss,
        "loss_reduction": fine["loss_reduction"],
        "comparison": Markdown(table),
        "generations": Markdown(samples_md),
        "reused": reused,
        "path": out,
    }
    if loss_png.is_file():
        metadata["loss_curves"] = Markdown(plots.markdown_image(loss_png, "loss curves"))
    return StageResult(manifest, metadata, data_version=key)
