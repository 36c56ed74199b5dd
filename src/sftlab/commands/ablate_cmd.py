"""`sftlab ablate CONFIG`: train the same probe on several data variants of one size (or FLAN mixtures of
one budget) and compare them on the same eval prompts (table with 95% CIs, paired differences vs a
baseline, plot; flan: the scaling curve over the number of training clusters)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("ablate", help="train the same small probe on data variants of one size; compare with 95%% CIs")
    p.add_argument("config", help="ablation YAML, or a shipped one by name (e.g. ablation-curated-vs-random)")
    p.add_argument("--out", default=None, help="output folder (default: the config's output_dir); finished variants are reused")
    p.add_argument("--steps", type=int, default=None, help="training steps per variant (default: the run config's max_steps)")
    p.add_argument("--eval-per-family", type=int, default=None, help="task prompts per family (default: the config's)")
    p.add_argument("--loss-every", type=int, default=None, help="response loss on every k-th eval conversation (default: the config's)")
    p.add_argument("--seed", type=int, default=None, help="replicate with this train.seed and random-subset / flan "
                   "mixture seed (pool and curation unchanged; a config with seeds: runs this seed only); give it its own --out")
    p.add_argument("--pooled", nargs="+", default=None, metavar="DIR",
                   help="do not train: pool the finished replicate folders DIR... (e.g. from --seed runs) and print the "
                        "paired differences vs the config's baseline, averaged over seeds, with 95%% CIs")
    p.set_defaults(func=run)


def run(args) -> int:
    from sftlab.ablate import load_ablation_config, pooled_markdown, pooled_over_seeds, run_ablation
    from sftlab.errors import SftlabError

    if args.pooled:
        cfg = load_ablation_config(args.config)[0]
        if cfg.task_suite == "flan":
            raise SftlabError("--pooled pools replicate folders of data ablations; a flan ablation pools its seeds itself "
                              "(seeds: [0, 1] in its config, one folder)")
        baseline = cfg.baseline
        print(pooled_markdown(pooled_over_seeds(args.pooled, baseline), args.pooled, baseline))
        return 0

    result = run_ablation(args.config, out=args.out, steps=args.steps, eval_per_family=args.eval_per_family,
                          loss_every=args.loss_every, seed=args.seed)
    print("\n" + result.markdown)
    if result.reused:
        print(f"reused finished variants: {', '.join(result.reused)}")
    print(f"report: {(result.out / 'ablation.html').resolve()} (also ablation.md, ablation.json, ablation.png, eval_report.html)")
    return 0
