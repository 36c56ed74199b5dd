"""Data ablations: train the SAME small probe on several data variants and compare them with CIs.

    result = run_ablation("ablation-curated-vs-random.yaml")
    print(result.markdown)

Every variant is the same size (the `size_from` variant's size sets the random subsets' size;
a data or curate variant of another size is an error), is trained with the same recipe (model,
steps, seed, LoRA, lr, tokens per step), and is evaluated on the SAME prompts: the built-in
suite's held-out families plus held-out examples of the seen families (task accuracy), and the
suite's eval split (response loss). Differences vs the baseline variant are PAIRED bootstrap
intervals over those prompts/conversations.

Flan variants (`flan:` a FLAN mixture, sftlab.builtin.flan.mixture) are the "number of training
clusters" experiment: every run has one budget of its mixture (counted under the probe's tokenizer),
`first_clusters: k` takes the first k clusters of an order (nested subsets per seed), `seeds:` runs each
variant once per seed (<name>-s<seed>), evaluation is on the flan suite with each run's trained clusters,
and the report (ablate.scaling) plots held-out-cluster accuracy against the number of clusters trained.

Layout of the output folder (resumable per variant: a variant with final/ and eval.json is reused):

    pool.jsonl                       the pool (noisy_pool config, or a copy of pool_path)
    variants/<name>/data.jsonl       the variant's training data (+ curate stats for curate variants,
                                     mixture.json for flan runs; <name> is <variant>-s<seed> under seeds:)
    variants/<name>/run/             training run (final/ = the trained adapter)
    variants/<name>/eval.json        per-prompt verdicts and per-conversation losses
    ablation.json / ablation.md / ablation.html / ablation.png / eval_report.html

Modules: config (the YAML models, the probe's run config), variants (pool and variant data),
run (train, evaluate, the driver), report (comparison, tables, plot, pooling over seeds), scaling (the
flan ablation's table and plot).
"""

from sftlab.ablate.config import AblationConfig, VariantConfig, load_ablation_config, variant_runs, with_seed
from sftlab.ablate.report import pooled_markdown, pooled_over_seeds
from sftlab.ablate.run import AblationResult, run_ablation

__all__ = ["AblationConfig", "AblationResult", "VariantConfig", "load_ablation_config", "pooled_markdown",
           "pooled_over_seeds", "run_ablation", "variant_runs", "with_seed"]
