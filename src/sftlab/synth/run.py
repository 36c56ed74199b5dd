"""Run a synth config: build the backends, dispatch to the pipeline, return its report."""

from __future__ import annotations

from sftlab.synth.config import SynthConfig
from sftlab.synth.report import SynthReport


def run_synth(cfg: SynthConfig) -> SynthReport:
    if cfg.pipeline == "judge_filter":
        from sftlab.synth.judge import run_judge_filter

        return run_judge_filter(cfg, cfg.judge.build())
    teacher = cfg.teacher.build()
    if cfg.pipeline == "self_instruct":
        from sftlab.synth.self_instruct import run_self_instruct

        return run_self_instruct(cfg, teacher)
    if cfg.pipeline == "llava":
        from sftlab.synth.llava import run_llava

        return run_llava(cfg, teacher)
    from sftlab.synth.evol_instruct import run_evol_instruct

    return run_evol_instruct(cfg, teacher)
