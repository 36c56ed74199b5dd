"""sftlab: instruction tuning (SFT) of language models, from data to evaluated model."""

import os as _os
import sys as _sys

__version__ = "0.1.0"

# libgomp's spin-wait after each torch parallel region (GOMP_SPINCOUNT, 300,000 iterations by
# default: milliseconds) takes the cores from the OpenBLAS threads of cpu_blas.py; at 1000 torch's
# own speed was unchanged and OpenBLAS ran 1.12x faster in SmolLM2 LoRA steps (see cpu_blas.py).
# libgomp reads it once, when torch loads, so it is set here, on `import sftlab`, only if torch is
# not loaded yet and only where the user has not set it.
OMP_ENV_DEFAULTS = {"GOMP_SPINCOUNT": "1000"}
if "torch" not in _sys.modules:
    for _key, _value in OMP_ENV_DEFAULTS.items():
        _os.environ.setdefault(_key, _value)
