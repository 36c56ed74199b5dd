"""Data curation: dedup, quality filters, scores, selection to a budget, mixing, curriculum, report.

Every block is a callable: `kept = block(conversations)` yields the kept Conversations and fills
`block.stats` (seen, kept, dropped_by_reason, samples of drops, dedup pairs). Chain them:

    from sftlab.curate import ExactDedup, MinHashDedup, RefusalFilter, ComplexityScore, Select, apply_blocks
    blocks = [ExactDedup(), MinHashDedup(threshold=0.8), RefusalFilter(), ComplexityScore(), Select(budget=1000)]
    kept = list(apply_blocks(conversations, blocks))
    for b in blocks:
        print(b.stats.summary())

Or from YAML: `sftlab curate pipeline.yaml` (see sftlab.curate.config). Importing this package does
not import torch; semantic blocks load MiniLM on first use.
"""

from sftlab.curate.blocks import BLOCKS, Block, BlockStats, DupPair, normalise
from sftlab.curate.dedup import ExactDedup, MinHashDedup, SemanticDedup
from sftlab.curate.difficulty import IFDScore
from sftlab.curate.filters import (
    EmptyResponseFilter,
    FormattingFilter,
    GarbageFilter,
    PromptEchoFilter,
    RefusalFilter,
    RepetitionFilter,
    ResponseLengthFilter,
)
from sftlab.curate.mix import Curriculum, Mix, MixReport, curriculum_order, mix_sources, temperature_weights
from sftlab.curate.pipeline import CurateResult, apply_blocks, run_pipeline
from sftlab.curate.scores import ComplexityScore, DiversityScore, TagScore, complexity, tag_coverage, tags_of
from sftlab.curate.select import Select, random_subset, select_diverse

__all__ = [
    "BLOCKS", "Block", "BlockStats", "ComplexityScore", "CurateResult", "Curriculum", "DiversityScore", "DupPair",
    "EmptyResponseFilter", "ExactDedup", "FormattingFilter", "GarbageFilter", "IFDScore", "MinHashDedup", "Mix", "MixReport",
    "PromptEchoFilter", "RefusalFilter", "RepetitionFilter", "ResponseLengthFilter", "Select", "SemanticDedup",
    "TagScore", "apply_blocks", "complexity", "curriculum_order", "mix_sources", "normalise", "random_subset",
    "run_pipeline", "select_diverse", "tag_coverage", "tags_of", "temperature_weights",
]
