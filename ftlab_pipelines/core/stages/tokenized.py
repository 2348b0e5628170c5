"""tokenized: prompt rendering + tokenization into Arrow on disk, cached by content key."""

from __future__ import annotations

from ftlab_pipelines.core import artifacts, progress
from ftlab_pipelines.core.config.labs import LabConfig
from ftlab_pipelines.core.data import sources
from ftlab_pipelines.core.evaluation import plots
from ftlab_pipelines.core.modeling import models
from ftlab_pipelines.core.stages import Markdown, StageResult
from ftlab_pipelines.core.stages.split import load_split_frames
from ftlab_pipelines.core.text import prompts, tokenize
from ftlab_pipelines.core.tracking import AssetRun


def tokenized_inputs(lab: LabConfig) -> dict:
    """The config the tokenized stage reads: part of its cache key and its code_version."""
    inputs = {"name": lab.model.name, "template": lab.model.template, "max_length": lab.model.max_length,
              "labels": lab.labels}
    if lab.is_generative:
        inputs["prompt"] = lab.prompt.model_dump(mode="json")
    if lab.render:
        inputs["render"] = lab.render.model_dump(mode="json")
    return inputs


def _cache_key(lab: LabConfig, splits_key: str, tokenizer) -> str:
    """Data + tokenizer content + every config input: a stale cache can never match."""
    inputs = tokenized_inputs(lab)
    extra = {k: v for k, v in inputs.items() if k in ("prompt", "render")}  # the tokenizer itself is fingerprinted
    return tokenize.cache_key(splits_key, tokenizer, lab.model.template, lab.model.max_length, lab.labels, extra)


def sft_renderer(lab: LabConfig, tokenizer):
    """batch of split rows -> (prompt texts, completion texts); only the preferred reply is a completion."""
    cfg = lab.prompt

    def render(batch: dict) -> tuple[list[str], list[str]]:
        users, replies = batch[cfg.user_column], batch[cfg.response_column]
        return ([prompts.render_prompt(cfg, tokenizer, u) for u in users],
                [prompts.render_completion(cfg, tokenizer, u, r) for u, r in zip(users, replies)])

    return render


def _tokenize(lab: LabConfig, splits_manifest: dict, tokenizer, out) -> dict:
    frames = load_split_frames(splits_manifest)
    if lab.is_generative:
        return tokenize.tokenize_sft_splits(
            frames, tokenizer, render=sft_renderer(lab, tokenizer), max_length=lab.model.max_length,
            prompt_special_tokens=lab.prompt.format == "instruction", out_dir=out,
        )
    render = (lambda batch: sources.render_rows(batch, lab.render)) if lab.render else None
    return tokenize.tokenize_splits(
        frames, tokenizer, text_column=lab.source.text_column, label_column=lab.source.label_column,
        labels=lab.labels, template=lab.model.template, max_length=lab.model.max_length, out_dir=out,
        render=render, input_columns=lab.render.columns if lab.render else None,
    )


def example_prompts(lab: LabConfig, splits_manifest: dict, tokenizer, n: int = 3) -> str:
    """A few rendered training examples, as the model sees them (markdown)."""
    train = load_split_frames(splits_manifest)["train"].head(n)
    blocks = []
    for _, row in train.iterrows():
        if lab.is_generative:
            user = str(row[lab.prompt.user_column])
            text = (prompts.render_prompt(lab.prompt, tokenizer, user)
                    + prompts.render_completion(lab.prompt, tokenizer, user, str(row[lab.prompt.response_column])))
        elif lab.render:
            rendered = sources.render_rows({c: [row[c]] for c in lab.render.columns}, lab.render)[0]
            text = lab.model.template.replace("{text}", rendered)
        else:
            text = lab.model.template.replace("{text}", str(row[lab.source.text_column]))
        text = text if len(text) <= 2000 else text[:2000] + f"… ({len(text)} characters in all)"
        blocks.append("```\n" + text.replace("```", "'''") + "\n```")
    return "\n\n".join(blocks)


def build_tokenized(lab: LabConfig, splits_manifest: dict, run: AssetRun) -> StageResult:
    tokenizer = models.load_tokenizer(lab.model)
    key = _cache_key(lab, splits_manifest["key"], tokenizer)
    out = artifacts.stage_dir(lab.name, "tokenized", key)
    reused = artifacts.is_complete(out)
    if not reused:
        with artifacts.atomic_dir(out) as tmp:
            with progress.step(f"tokenizing {sum(splits_manifest['rows'].values())} rows for {lab.model.name} "
                               f"(max_length {lab.model.max_length})"):
                stats = _tokenize(lab, splits_manifest, tokenizer, tmp / "dataset")
            lengths = tokenize.lengths_of(tokenize.load_tokenized(tmp / "dataset")["train"])
            plots.token_lengths_png(lengths, lab.model.max_length, tmp / "token_lengths.png")
            artifacts.write_json(tmp / "manifest.json", {"stats": stats})
    stats = artifacts.read_json(out / "manifest.json")["stats"]
    run.set_tags({"data_hash": key})
    run.log_params({"model.name": lab.model.name, "model.template": lab.model.template,
                    "model.max_length": lab.model.max_length, "tokenizer": tokenize.tokenizer_fingerprint(tokenizer),
                    **({"prompt": lab.prompt.model_dump(mode="json")} if lab.is_generative else {})})
    run.log_metrics({f"{split}_{k}": v for split, s in stats.items() for k, v in s.items()})
    run.log_artifact(out / "token_lengths.png")
    manifest = {"key": key, "path": str(out / "dataset"), "stats": stats, "splits_key": splits_manifest["key"]}
    metadata = {
        "cache_key": key,
        "reused_cache": reused,
        "stats": stats,
        "token_lengths": Markdown(plots.markdown_image(out / "token_lengths.png", "token lengths")),
        "example_prompts": Markdown(example_prompts(lab, splits_manifest, tokenizer)),
        "path": out,
    }
    return StageResult(manifest, metadata, data_version=key)
