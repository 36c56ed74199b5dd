"""Errors users see. Each one says where (file, line, field), what was seen, and how to fix it."""

from __future__ import annotations

from dataclasses import dataclass


class SftlabError(Exception):
    """Base class: the CLI prints these as a clean message (no traceback) and exits with code 2."""


@dataclass
class Problem:
    """One problem found in user input. `where` is e.g. 'data.jsonl:17' or 'config.yaml'."""

    where: str
    field: str
    message: str
    fix: str = ""

    def __str__(self) -> str:
        loc = f"{self.where}" + (f" [{self.field}]" if self.field else "")
        text = f"{loc}: {self.message}"
        return text + (f"\n    fix: {self.fix}" if self.fix else "")


class DataError(SftlabError):
    """Bad input data. Carries one or more Problems so all of them are reported at once."""

    def __init__(self, problems: list[Problem] | Problem, header: str = ""):
        self.problems = [problems] if isinstance(problems, Problem) else list(problems)
        shown = self.problems[:20]
        lines = [header or f"{len(self.problems)} problem(s) in the input data:"]
        lines += [f"  - {p}" for p in shown]
        if len(self.problems) > len(shown):
            lines.append(f"  ... and {len(self.problems) - len(shown)} more")
        super().__init__("\n".join(lines))


class ConfigError(SftlabError):
    """Bad configuration: unknown keys, wrong types, missing paths. All problems at once."""


class TemplateError(SftlabError):
    """A chat template that cannot be used for masked training (pre-flight check failed)."""


class ModelLoadError(SftlabError):
    """A model path/id that does not exist or cannot be loaded safely."""
