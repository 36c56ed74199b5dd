"""Bad input beyond data rows, through the CLI: each is one clean `error: ...` line block on stderr,
exit code 2, no traceback. docs/errors.md shows the real messages; regenerate it with
`python tests/error_cases.py` after changing a message."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from error_cases import CASES, assert_clean_error, run_case  # noqa: E402


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_a_clean_error(case, tmp_path):
    assert_clean_error(case, *run_case(case, tmp_path))


