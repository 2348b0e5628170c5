"""Write bench/RESULTS.md from the committed result files, so the summary can never drift from the numbers.

    python bench/summarize.py
"""

from __future__ import annotations

import json
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
NOTES = BENCH / "RESULTS_NOTES.md"  # hand-written: levers tried and what moved which number


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def header(result: dict) -> str:
    return f"`{result['command']}` — {result['date']}, {result['machine']}"


def throughput(r: dict) -> list[str]:
    lines = ["## Training throughput (target: ftlab >= 5x the seed-style loop at equal or better metric)", "",
             header(r), ""]
    if "peak_gflops" not in r:  # result files from before the paired rounds
        return lines + ["(an older result file: re-run `python bench/train_throughput.py`)"]
    lines += ["Median of the case's rounds, [min, max]; each round runs every variant in turn. MFU: the case's "
              "matmul FLOPs per real token (4N with LoRA, 6N trained whole; `flops_per_token` in the file) x real "
              "tok/s over the bf16 matmul peak measured in the same run:", "",
              *[f"- {case}: `{c.get('command', r['command'])}`, {c.get('date', r['date'])}, {c.get('repeats', 1)} "
                f"round(s), peak bf16 {c.get('peak_gflops', r['peak_gflops'])['bf16']} GFLOP/s (fp32 "
                f"{c.get('peak_gflops', r['peak_gflops'])['fp32']})" for case, c in r["cases"].items()
                if "repeats" in c], "",
              *[f"{case}: {c['note']}\n" for case, c in r["cases"].items() if c.get("note")],
              "| case | variant | real tok/s | speedup over baseline | s/epoch | validation metric "
              "| MFU (fp32 runs: of the fp32 peak) |",
              "|---|---|---|---|---|---|---|"]
    for case, c in r["cases"].items():
        for variant, v in c.items():
            if not isinstance(v, dict) or not isinstance(v.get("tokens_per_s"), dict):
                continue
            t, x = v["tokens_per_s"], v["speedup"]
            speedup = "" if variant == "baseline" else f"**{x['median']}x** [{x['min']}, {x['max']}]"
            metric = ", ".join(f"{k} {m}" for k, m in v["metric"].items())
            lines.append(f"| {case} | {variant} | {t['median']} [{t['min']}, {t['max']}] | {speedup} | "
                         f"{v['seconds_per_epoch']} | {metric} | {v['mfu']:.1%} |")
    checked = [(case, c["seed_check"]) for case, c in r["cases"].items() if "seed_check" in c]
    if checked:
        lines += ["", f"Seed noise (`{r.get('seed_check_command', '--seed-check')}`): the same runs with other seeds "
                  "(initialisation, batch order, dropout masks), same steps:", ""]
        for case, check in checked:
            for metric in check["metrics"]:
                medians, variants = check["medians"][metric], list(check["medians"][metric])
                per_seed = "; ".join(f"seed {seed}: " + " / ".join(str(run[v][metric]) for v in variants)
                                     for seed, run in check["runs"].items())
                lines.append(f"- {case} {metric} ({' / '.join(variants)}): {per_seed}; medians **"
                             + " / ".join(str(medians[v]) for v in variants) + "**; minus baseline per seed: "
                             + "; ".join(f"{v} {d}" for v, d in check["paired_differences"][metric].items()))
    return lines


def mfu(r: dict) -> list[str]:
    return ["## MFU (target: >= 25% of the bf16 matmul peak for SmolLM2 LoRA)", "", header(r), "",
            f"- matmul peak ({r['threads']} threads, 2048^2): bf16 **{r['peak_bf16_gflops']}** GFLOP/s, "
            f"fp32 **{r['peak_fp32_gflops']}** GFLOP/s",
            *mfu_training(r)]


def mfu_training(r: dict) -> list[str]:
    if "lm_head_parameters" not in r:  # result files written before the reply-only LM head
        return [f"- SmolLM2-135M LoRA training: {r['tokens_per_s']} real tok/s x 4N (N = {r['matmul_parameters']:,} "
                f"matmul weights) = **{r['achieved_gflops']} GFLOP/s** = **{r['mfu_bf16']:.1%}** of the bf16 peak "
                f"({r['mfu_fp32']:.1%} of fp32)"]
    body = r["matmul_parameters"] - r["lm_head_parameters"]
    return [f"- SmolLM2-135M LoRA training: {r['tokens_per_s']} real tok/s x 4 x (N_body {body:,} + N_head "
            f"{r['lm_head_parameters']:,} x reply share {r['reply_token_share']:.2f}) = **{r['achieved_gflops']} "
            f"GFLOP/s** = **{r['mfu_bf16']:.1%}** of the bf16 peak ({r['mfu_fp32']:.1%} of fp32). The LM head runs "
            f"on reply tokens only; counted the conventional way (4N for every token) it is "
            f"{r['conventional_4n_gflops']} GFLOP/s = {r['conventional_4n_mfu_bf16']:.1%}."]


def matmul_ceiling(r: dict) -> list[str]:
    lines = ["## MFU ceiling: the training steps' matmuls alone", "", header(r), "",
             "The matmuls of real training steps replayed with nothing between them, against the bf16 peak "
             "measured in the same run: training could go no faster, so its MFU could be no higher.", "",
             "| case | date | bf16 peak GFLOP/s | steps | matmul calls | matmul GFLOP/s (share of peak) "
             "| needed share of matmul FLOPs | ceiling real tok/s | ceiling MFU |", "|---|---|---|---|---|---|---|---|---|"]
    for case, c in r["cases"].items():
        lines.append(f"| {case} | {c['date']} | {c['peak_bf16_gflops']} | {c['steps']} | {c['matmul_calls']:,} "
                     f"| {c['matmul_gflops_rate']} "
                     f"({c['matmul_share_of_peak']:.1%}) | {c['needed_share_of_matmul_flops']:.0%} "
                     f"| {c['ceiling_tokens_per_s']:,} | **{c['ceiling_mfu']:.1%}** |")
    return lines


def overhead(r: dict) -> list[str]:
    return ["## Orchestration overhead (target: <= 10%)", "", header(r), "",
            f"- `{r['lab']}` with {r['train_overrides']}: plain script **{r['script_seconds']} s**, through Dagster + "
            f"MLflow **{r['dagster_seconds']} s**: overhead **{r['overhead_fraction']:.1%}** "
            f"(median of {len(r['runs'])} pairs: {r['runs']})"]


def noop(r: dict) -> list[str]:
    return ["## No-op re-materialization (target: <= 15 s, zero training steps)", "", header(r), "",
            f"- `ftlab run {r['lab']}` again, unchanged: **{r['seconds']} s** (whole process), "
            f"**{r['training_steps']}** training steps (first run: {r['first_run']['seconds']} s, "
            f"{r['first_run']['logged_training_steps']} logged steps); re-runs {r['reruns']}"]


def tokenize(r: dict) -> list[str]:
    lines = ["## Tokenize (target: >= 50k rows/s for short texts, RSS flat in rows)", "", header(r), "",
             "| rows | texts | rows/s | seconds | RSS growth while tokenizing MB | RSS before (input loaded) MB "
             "| peak RSS MB |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {s['rows']:,} | {s.get('texts', 'upsampled')} | {s['rows_per_s']:,.0f} | {s['seconds']} | "
              f"**{s.get('tokenize_rss_growth_mb', '-')}** | {s.get('rss_before_mb', '-')} | {s['peak_rss_mb']} |"
              for s in r["sizes"]]
    lines += ["", "upsampled: drawn with replacement from sms_spam's 5,574 messages, as a rebalanced split repeats "
              "rows (each distinct text is tokenized once); distinct: every row made unique, so every row is "
              "tokenized."]
    return lines


def memory(r: dict) -> list[str]:
    return ["## Memory: LoRA vs QLoRA (4-bit NF4) on CPU, same batch", "", header(r), "",
            f"- SmolLM2-135M, {r['lab']}, batch {r['batch_size']}: peak RSS LoRA **{r['lora_peak_rss_mb']} MB**, "
            f"QLoRA **{r['qlora_peak_rss_mb']} MB**; tokens/s {r['lora_tokens_per_s']} vs {r['qlora_tokens_per_s']}; "
            f"RSS when training starts {r['lora_rss_before_train_mb']} vs {r['qlora_rss_before_train_mb']} MB; "
            f"mean train loss over {r['lora']['train_steps']} steps {r['lora']['train_loss']} vs "
            f"{r['qlora']['train_loss']} (the NF4 base starts ~0.27 higher)"]


def scale_out(r: dict) -> list[str]:
    lines = ["## Scale-out: Ray workers vs `train.num_processes` (target: Ray's steady-state tokens/s within 15% of "
             "num_processes: 2 at equal steps, the same validation metric)", "", header(r), "",
             f"{r['model']} on {r['lab']}, {r['steps']} steps of {r['per_worker_batch']} rows per worker; a two-node "
             f"cluster on 127.0.0.1 (1 CPU per node, started in {r['cluster_start_seconds']} s):", "",
             "| variant | world size | tokens/s (training loop) | loop s | stage s | start-up s | validation F1 |",
             "|---|---|---|---|---|---|---|"]
    for name, v in r["variants"].items():
        lines.append(f"| {name} | {v['world_size']} | {v['tokens_per_s']} | {v['train_seconds']} | "
                     f"{v['stage_seconds']} | {v['startup_seconds']} | {v['validation_f1']} |")
    return lines + ["", f"Ray on 2 workers / num_processes 2, tokens/s: **{r['ray_2_workers_vs_num_processes_2']}**"]


def _interval(m: dict, metric: str) -> str:
    low, high = m[f"{metric}_ci95"]
    return f"{m[metric]} [{low}, {high}]"


def _per_seed(seeds: dict | None, metric: str) -> str:
    return "<br>seeds: " + " / ".join(str(v[metric]) for v in seeds.values()) if seeds else ""


def fraud_variants(r: dict) -> list[str]:
    lines = ["## creditcard_fraud: renderings and models at the natural fraud rate (targets: precision at recall 0.9 "
             ">= 0.273, the seed's; AP above logistic regression)", "", header(r), "", r["estimate"] + ". A variant "
             "trained at several seeds shows each figure (and each interval bound) as the median over its seeds, "
             "every seed's own figure under it.", "",
             "| variant | precision @ recall 0.9 [95% CI] | recall on held-out frauds | AP [95% CI] | validation AP "
             "| 10-fraud test: precision / recall / AP | s (tokenize+train+evaluate) |",
             "|---|---|---|---|---|---|---|"]
    baselines = {}
    for name, v in r["variants"].items():
        m, t = v["fine_tuned"], v["fine_tuned"]["test_10_frauds"]
        seeds = m.get("seeds")
        label = f"{name} (median of seeds {', '.join(seeds)})" if seeds else f"{name} (seed {v['seed']})"
        lines.append(f"| {label} | {_interval(m, 'precision')}{_per_seed(seeds, 'precision')} | {m['recall']} | "
                     f"{_interval(m, 'average_precision')}{_per_seed(seeds, 'average_precision')} | "
                     f"{m['validation_average_precision']}{_per_seed(seeds, 'validation_average_precision')} | "
                     f"{t['precision']} / {t['recall']} / {t['average_precision']} | {v['seconds']} |")
        baselines = {k: v[k] for k in ("logreg_features", "hist_gradient_boosting")}
    for name, m in baselines.items():
        t = m["test_10_frauds"]
        lines.append(f"| {name} (30 raw features) | {_interval(m, 'precision')} | {m['recall']} | "
                     f"{_interval(m, 'average_precision')} | {m['validation_average_precision']} | {t['precision']} / "
                     f"{t['recall']} / {t['average_precision']} | |")
    lifts = ", ".join(f"{k} {v}" for k, v in r.get("validation_lift_over_logreg", {}).items())
    over = r.get("over_time_budget")
    return lines + ["", f"Validation AP over logistic regression's on the same validation rows: {lifts}. Best by "
                        f"validation (the lab's default): **{r['best_by_validation']}**"
                        + (f" (not considered: over the lab's 10-minute budget: {', '.join(over)})" if over else "")]


def fraud_ceiling(r: dict) -> list[str]:
    lines = [f"## creditcard_fraud: what any model reaches on these rows (target: precision >= {r['target_precision']} "
             f"at recall >= {r['target_recall']})", "", header(r), "",
             "As the lab measures: threshold tuned on half of validation, recall on the other half's frauds, FPR on "
             "the natural-rate test's legit rows. Ceiling: the best precision of any threshold reaching recall "
             f"{r['target_recall']} on all validation frauds, chosen in hindsight on those rows (an upper bound for a "
             "tuned threshold). All at the natural rate, with bootstrap 95% intervals.", "",
             "| model | inputs | as the lab measures: precision [95% CI] | recall | AP [95% CI] "
             "| ceiling: best precision @ recall 0.9 [95% CI] | ceiling AP [95% CI] |",
             "|---|---|---|---|---|---|---|"]
    for name, m in r["models"].items():
        lab, top = m["as_the_lab_measures"], m["ceiling"]
        lines.append(f"| {name} | {m['inputs']} | {_interval(lab, 'precision')} | {lab['recall']} | "
                     f"{_interval(lab, 'average_precision')} | {_interval(top, 'best_precision_at_recall')} | "
                     f"{_interval(top, 'average_precision')} |")
    variants = load("fraud_variants")
    if variants:  # the text route as fraud_variants last measured the lab's default
        best = variants["best_by_validation"]
        tuned = variants["variants"][best]["fine_tuned"]
        lines.append(f"| fine-tuned text route ({best}, fraud_variants {variants['date']}) | rendered text | "
                     f"{_interval(tuned, 'precision')} | {tuned['recall']} | {_interval(tuned, 'average_precision')} "
                     "| | |")
    return lines + ["", f"Highest ceiling: **{r['highest_ceiling']}**, "
                        f"{r['models'][r['highest_ceiling']]['ceiling']['best_precision_at_recall']}."]


def persona_scaling(r: dict) -> list[str]:
    base, target = r["base"]["test_loss"], r["target"]["test_loss"]
    lines = [f"## persona_chat held-out loss vs train rows and LoRA settings ({r['model']})", "", header(r), "",
             f"Rows: {r['rows']}. Base model test loss **{base}**; the issue's target (-"
             f"{r['target']['test_loss_reduction']:.0%}) is **{target}**. Loss on reply tokens only, test split.", "",
             "| run | train rows | epochs | lr | steps (best) | validation loss | test loss | reduction |",
             "|---|---|---|---|---|---|---|---|"]
    rows = [(f"learning curve {p['train_rows']}", p) for p in r["learning_curve"]]
    rows += list(r["variants"].items())
    for name, p in rows:
        lines.append(f"| {name} | {p['train_rows']} | {p['epochs']:g} | {p['learning_rate']:g} | {p['train_steps']} "
                     f"({p['best_step']:g}) | {p['validation_loss']} | **{p['test_loss']}** | "
                     f"{p['test_loss_reduction']:.1%} |")
    fit = r.get("fit")
    if fit:
        lines += ["", f"Log-linear fit of the learning curve: {fit['loss_change_per_doubling']:+} test loss per doubling "
                  "of train rows" + (f"; at that rate the target needs ~{fit['train_rows_for_target']:,} train rows."
                                     if "train_rows_for_target" in fit else ".")]
        curve = sorted(r["learning_curve"], key=lambda p: p["train_rows"])
        steps = [f"{a['train_rows']} -> {b['train_rows']}: {b['test_loss'] - a['test_loss']:+.3f}"
                 for a, b in zip(curve, curve[1:])]
        lines += ["", "Test loss change per doubling, measured: " + "; ".join(steps) + "."]
    return lines


def serving(r: dict) -> list[str]:
    b, lat, load, gen = r["batch_scoring"], r["latency"], r["load"], r["generation"]
    ok = lambda passed: "meets" if passed else "MISSES"  # noqa: E731
    c1 = lat["concurrency_1"]
    lines = ["## Serving the champion (`ftlab serve`, MLflow pyfunc)", "", header(r), "",
             f"- Batch scoring, sms_spam champion, {b['rows']:,} rows: pyfunc **{b['pyfunc_rows_per_s']} rows/s** vs "
             f"a seed-style HF pipeline one text at a time (fp32) {b['seed_rows_per_s']} rows/s: **{b['speedup']}x** "
             f"({ok(b['speedup'] >= b['target_speedup'])} the >= {b['target_speedup']:g}x target); labels identical: "
             f"{b['labels_identical']} ({b['label_mismatches']} differ).",
             "- Served latency, one short text per request (p50 / p95 ms, requests/s): "
             + "; ".join(f"concurrency {k.split('_')[-1]}: {v['p50_ms']} / {v['p95_ms']} ms, {v['requests_per_s']}/s"
                         for k, v in lat.items() if k.startswith("concurrency_"))
             + f". Target p50 <= {lat['target_p50_ms_concurrency_1']:g} ms at concurrency 1: "
             f"{ok(c1['p50_ms'] <= lat['target_p50_ms_concurrency_1'])}.",
             f"- Load: {load['requests']:,} requests at concurrency {load['concurrency']}: **{load['errors']} errors**; "
             f"server RSS {load['rss_mb_at_10pct']} MB after 10% of them, {load['rss_mb_at_end']} MB at the end "
             f"({load['rss_growth']:+.1%}; target <= +{load['target_rss_growth']:.0%}: "
             f"{ok(load['errors'] == 0 and load['rss_growth'] <= load['target_rss_growth'])}).",
             f"- Generation, {gen['lab']}, max_new_tokens {gen['max_new_tokens']} (median of {gen['prompts']} prompts): "
             f"first streamed text {gen['first_token_ms_median']} ms (held back until it cannot be the start of a stop "
             f"string), full reply {gen['full_reply_ms_median']} ms "
             f"({gen['reply_tokens_median']} tokens)."]
    for lab, cost in r.get("models", {}).items():
        lines.append(f"- The {lab} pyfunc model ({cost['base']}, merged): {cost['disk_mb']} MB on disk; "
                     f"{cost['load_seconds']} s to import MLflow and load it in a fresh interpreter.")
    return lines


def time_to_champion(r: dict) -> list[str]:
    precision = "bf16 autocast" if r["bf16"] else "fp32, nothing autocast (as on a CPU without bf16)"
    metric = next(k for k in r if k.startswith("test_") and isinstance(r[k], list))
    seeds = [run["seed"] for run in r["runs"] if "seed" in run]
    values = " / ".join(map(str, r[metric]))
    quality = (f"median over seeds {', '.join(map(str, seeds))}: **{r[f'median_{metric}']}** ({values})" if seeds
               else f"{values} (the lab's own seed each run)")
    stages = ", ".join(f"{k} {round(v, 1)}" for k, v in r["stage_median_seconds"].items())
    validation = [f"- {k}: median {r[f'median_{k}']} ({' / '.join(map(str, r[k]))})" for k in r
                  if k.startswith(("validation_", "oracle_")) and isinstance(r[k], list)]
    return [f"## Time to the first champion: `ftlab run {r['lab']}` from a fresh home, {precision} (target <= 300 s, "
            "test F1 >= 0.96)", "", header(r), "",
            f"- Wall: median **{r['median_seconds']} s** [{r['min_seconds']}, {r['max_seconds']}] over "
            f"{len(r['runs'])} runs; stage medians (s): {stages}.", f"- {metric}: {quality}.", *validation]


def demo_settings(results: list[dict]) -> list[str]:
    """The demo lab's settings measured with `time_to_champion.py --set`, each row stating what it set and on which
    seeds: chosen by validation (AP and log loss, then F1), with test shown, never used to choose. The oracle test F1
    (best threshold in hindsight) is the model's ceiling, a diagnostic."""
    names = ("validation_f1", "validation_average_precision", "validation_log_loss", "oracle_test_f1", "test_f1")
    lines = ["## Demo lab settings measured over seeds (`time_to_champion.py --set`; chosen by validation)", "",
             "| lab changed | seeds | wall median (s) | adapter median (s) | validation F1, median; per seed | "
             "validation AP, median; per seed | validation log loss, median | oracle test F1, median | "
             "test F1, median; per seed |", "|---|---|---:|---:|---|---|---:|---:|---|"]
    for r in results:
        changes = ", ".join(f"{s}.{k}={v}" for s, fields in r["changes"].items() for k, v in fields.items())
        changes = changes or r.get("label", "(as shipped)")
        seeds = ", ".join(str(run["seed"]) for run in r["runs"])
        cells = [(f"{round(r[f'median_{name}'], 4)}" + ("" if "log_loss" in name or "oracle" in name
                                                else f"; {' / '.join(map(str, r[name]))}")) if name in r else ""
                 for name in names]
        wall, adapter = round(r["median_seconds"], 1), round(r["stage_median_seconds"]["adapter"], 1)
        lines.append(f"| {changes} | {seeds} | {wall} | {adapter} | "
                     + " | ".join(cells) + " |")
    return lines + ["", "Every row but peft.method=full and the patch that tried it first (every weight trained) "
                    "trained a LoRA adapter: the lab as it was on the day it was measured, changed as the row says "
                    "(sms_spam trains every weight since 2026-12-05's twelfth session).", "",
                    f"{results[-1]['date']}, {results[-1]['machine']}."]


def main() -> None:
    sections = [("train_throughput", throughput), ("mfu", mfu), ("matmul_ceiling", matmul_ceiling),
                ("overhead", overhead), ("noop", noop),
                ("tokenize", tokenize), ("memory", memory), ("serving", serving), ("scale_out", scale_out),
                ("fraud_variants", fraud_variants), ("fraud_ceiling", fraud_ceiling),
                ("time_to_champion", time_to_champion), ("time_to_champion_fp32", time_to_champion)]
    lines = ["# Benchmark results", "", "Generated by `python bench/summarize.py` from `bench/results/*.json`; "
             "run everything with `make bench-perf` (quality: `make bench-quality`).", ""]
    for name, render in sections:
        result = load(name)
        lines += (render(result) if result else [f"## {name}", "", "not measured yet"]) + [""]
    settings = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("demo_settings/*.json"))]
    if settings:
        lines += demo_settings(settings) + [""]
    for path in sorted(RESULTS.glob("persona_scaling*.json")):
        lines += persona_scaling(json.loads(path.read_text())) + [""]
    if NOTES.is_file():
        lines += [NOTES.read_text().strip(), ""]
    (BENCH / "RESULTS.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
