"""One self-contained HTML page: no external CSS, JS or fonts, plots as base64 PNGs, so the file
opens offline and can be attached to an issue. Used by the eval, dataset and ablation reports."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1100px;color:#222}
h1{font-size:24px} h2{font-size:19px;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0;font-size:13px} th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4} td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
img{max-width:100%} img.plot{border:1px solid #eee;margin:8px 0} .note{color:#555;font-size:13px}
"""


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display; PNGs only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_png(fig, dpi: int = 110) -> str:
    """A matplotlib figure as base64 PNG; the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def img(png_b64: str, alt: str) -> str:
    return f'<img class="plot" alt="{html.escape(alt)}" src="data:image/png;base64,{png_b64}">'


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A table of escaped text cells."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def page(title: str, body: str, css: str = "") -> str:
    """The whole document: `body` is HTML; `css` is added to the shared style."""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}{css}</style></head><body>\n{body}\n</body></html>")


def write_page(path: str | Path, title: str, body: str, css: str = "") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page(title, body, css), encoding="utf-8")
    return path
