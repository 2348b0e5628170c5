"""tokenized: prompt rendering + tokenization into Arrow on disk; the key includes the tokenizer's content."""

from __future__ import annotations

from ftlab_pipelines.core import progress
from ftlab_pipelines.core.evaluation import plots
from ftlab_pipelines.core.modeling import models
from ftlab_pipelines.core.runtime import text
from ftlab_pipelines.core.stages import Markdown
from ftlab_pipelines.core.stages.results import Splits, Tokenized
from ftlab_pipelines.core.stages.runner import Prepared, Report, StageContext, Target
from ftlab_pipelines.core.text import prompts, tabular, tokenize


def prepare(lab, upstream: dict, ctx: StageContext) -> Prepared:
    """The tokenizer is fingerprinted by content, so the same name with new files is a new key."""
    tokenizer = models.load_tokenizer(models.resolved(lab.model, ctx.settings.model_cache))
    facts = {"tokenizer": tokenize.tokenizer_fingerprint(tokenizer),
             "chat_template": getattr(tokenizer, "chat_template", None)}
    return Prepared(facts, tokenizer)


def sft_renderer(lab, tokenizer):
    """batch of split rows -> (prompt texts, completion texts); only the preferred reply is a completion."""
    cfg = lab.prompt

    def render(batch: dict) -> tuple[list[str], list[str]]:
        users, replies = batch[cfg.user_column], batch[cfg.response_column]
        return ([prompts.render_prompt(cfg, tokenizer, u) for u in users],
                [prompts.render_completion(cfg, tokenizer, u, r) for u, r in zip(users, replies)])

    return render


def _tokenize(lab, frames: dict, tokenizer, out, fitted: dict | None) -> dict:
    if lab.is_generative:
        return tokenize.tokenize_sft_splits(
            frames, tokenizer, render=sft_renderer(lab, tokenizer), max_length=lab.model.max_length,
            prompt_special_tokens=lab.prompt.format == "instruction", out_dir=out,
        )
    render = (lambda batch: text.render_rows(batch, fitted)) if fitted else None
    return tokenize.tokenize_splits(
        frames, tokenizer, text_column=lab.source.text_column, label_column=lab.source.label_column,
        labels=lab.labels, template=lab.model.template, max_length=lab.model.max_length, out_dir=out,
        render=render, input_columns=lab.render.columns if lab.render else None,
    )


def example_prompts(lab, splits: Splits, tokenizer, fitted: dict | None, n: int = 3) -> str:
    """A few rendered training examples, as the model sees them (markdown)."""
    import pandas as pd

    train = pd.read_parquet(splits.split_path("train")).head(n)
    blocks = []
    for _, row in train.iterrows():
        if lab.is_generative:
            user = str(row[lab.prompt.user_column])
            shown = (prompts.render_prompt(lab.prompt, tokenizer, user)
                    + prompts.render_completion(lab.prompt, tokenizer, user, str(row[lab.prompt.response_column])))
        elif lab.render:
            rendered = text.render_rows({c: [row[c]] for c in lab.render.columns}, fitted)[0]
            shown = lab.model.template.replace("{text}", rendered)
        else:
            shown = lab.model.template.replace("{text}", str(row[lab.source.text_column]))
        shown = shown if len(shown) <= 2000 else shown[:2000] + f"… ({len(shown)} characters in all)"
        blocks.append("```\n" + shown.replace("```", "'''") + "\n```")
    return "\n\n".join(blocks)


def build(lab, upstream: dict, prepared: Prepared, target: Target, ctx: StageContext) -> Tokenized:
    splits: Splits = upstream["splits"]
    tokenizer = prepared.loaded
    out = target.tmp / "dataset"
    frames = splits.frames()
    fitted = tabular.fitted_render(lab.render, frames["train"]) if lab.render else None
    with progress.step(f"tokenizing {sum(splits.rows.values())} rows for {lab.model.name} "
                       f"(max_length {lab.model.max_length})"):
        stats = _tokenize(lab, frames, tokenizer, out, fitted)
    lengths = tokenize.lengths_of(tokenize.load_tokenized(out)["train"])
    plots.token_lengths_png(lengths, lab.model.max_length, target.tmp / "token_lengths.png")
    return Tokenized(key=target.key, dir=str(target.out), stats=stats, render=fitted)


def report(lab, upstream: dict, result: Tokenized, ctx: StageContext, reused: bool,
           prepared: Prepared) -> Report:
    tokenizer = prepared.loaded
    run = ctx.run
    run.log_params({"model.name": lab.model.name, "model.template": lab.model.template,
                    "model.max_length": lab.model.max_length, "tokenizer": prepared.facts["tokenizer"],
                    **({"prompt": lab.prompt.model_dump(mode="json")} if lab.is_generative else {})})
    run.log_metrics({f"{split}_{k}": v for split, s in result.stats.items() for k, v in s.items()})
    run.log_artifact(result.path / "token_lengths.png")
    metadata = {
        "stats": result.stats,
        "token_lengths": Markdown(plots.markdown_image(result.path / "token_lengths.png", "token lengths")),
        "example_prompts": Markdown(example_prompts(lab, upstream["splits"], tokenizer, result.render)),
    }
    return Report(metadata)
