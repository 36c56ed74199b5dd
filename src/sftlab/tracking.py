"""Experiment tracking through accelerate's trackers (`train.report_to: [tensorboard, wandb, mlflow]`).

Every metrics.jsonl line goes to each tracker as well (`accelerator.log(record, step)`: its numbers;
nulls and strings are left out). Logs live in `output_dir/tracking/`:
- tensorboard: `tracking/sftlab/` event files (`tensorboard --logdir runs/sft/tracking`)
- wandb: project "sftlab", run named after the output folder, its local files in `tracking/`
  (WANDB_PROJECT / WANDB_MODE etc. work as usual)
- mlflow: experiment "sftlab", run named after the output folder; the tracking URI is
  MLFLOW_TRACKING_URI when set, else `tracking/mlruns` (a file store)

None of the packages is required by sftlab; asking for one that is not installed is an error naming
the install command before anything runs (accelerate itself would skip it silently).
The config goes to each tracker as hyperparameters (flattened: `train.lr`, ...).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
from pathlib import Path

from sftlab.errors import SftlabError

TRACKING_DIR = "tracking"  # inside train.output_dir; counted as sftlab's own by --overwrite
PROJECT = "sftlab"
# report_to name -> (the module that must import, the pip extra that installs it)
PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb"), "mlflow": ("mlflow", "mlflow")}


def check_installed(report_to: list[str]) -> None:
    """A SftlabError naming every tracker asked for whose package is missing, and how to install it."""
    missing = [name for name in report_to if importlib.util.find_spec(PACKAGES[name][0]) is None]
    if missing:
        extras = ",".join(PACKAGES[n][1] for n in missing)
        raise SftlabError(
            f"train.report_to: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed "
            f"(trackers are optional extras). Fix: pip install 'sftlab[{extras}]' "
            f"(or pip install {' '.join(PACKAGES[n][0] for n in missing)}), or remove {', '.join(missing)} from train.report_to"
        )


def accelerator_kwargs(report_to: list[str], out: Path) -> dict:
    """Keyword arguments for Accelerator(): the trackers and their logging folder (none when report_to is empty)."""
    if not report_to:
        return {}
    check_installed(report_to)
    from accelerate.utils import ProjectConfiguration

    return {"log_with": list(report_to),
            "project_config": ProjectConfiguration(project_dir=str(out), logging_dir=str(Path(out) / TRACKING_DIR))}


@contextlib.contextmanager
def trackers(accelerator, report_to: list[str], out: Path, config: dict):
    """Start the trackers (main process) for the block, end them (flushing their files) after it."""
    if not report_to:
        yield
        return
    out = Path(out)
    logging_dir = out / TRACKING_DIR
    if accelerator.is_main_process:
        logging_dir.mkdir(parents=True, exist_ok=True)
        if "mlflow" in report_to and not os.environ.get("MLFLOW_TRACKING_URI"):
            import mlflow

            mlflow.set_tracking_uri((logging_dir / "mlruns").resolve().as_uri())
    init_kwargs = {"wandb": {"name": out.resolve().name, "dir": str(logging_dir)}, "mlflow": {"run_name": out.resolve().name}}
    accelerator.init_trackers(PROJECT, config=hparams(config), init_kwargs={k: v for k, v in init_kwargs.items() if k in report_to})
    try:
        yield
    finally:
        accelerator.end_training()


def log(accelerator, record: dict) -> None:
    """One metrics.jsonl line to the trackers (no-op without any): its finite numbers, at its step."""
    if not accelerator.trackers:
        return
    values = {k: v for k, v in record.items() if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
              and math.isfinite(v)}
    accelerator.log(values, step=int(record["step"]))


def hparams(config: dict, prefix: str = "") -> dict:
    """The config flattened to `section.key` -> bool/int/float/str (lists and nulls as JSON text), as trackers take it."""
    flat = {}
    for k, v in config.items():
        if isinstance(v, dict) and v:
            flat.update(hparams(v, f"{prefix}{k}."))
        elif isinstance(v, (bool, int, float, str)):
            flat[f"{prefix}{k}"] = v
        else:
            flat[f"{prefix}{k}"] = json.dumps(v)
    return flat
