"""Reports people want to look at: Markdown + a self-contained-folder HTML page with tables and figures.

A report is a list of :class:`Section` (title, Markdown text, optional tables and figure paths relative
to the report folder). :func:`write_report` writes ``report.md`` and ``report.html`` atomically.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vavam.io import atomic_write_text, json_safe


def markdown_cell(value: Any) -> str:
    """``value`` as the text of one Markdown table cell: a ``|`` in it is escaped as ``\\|`` (else it would end
    the cell and shift the rest of the row). Every Markdown table the reports write goes through this."""
    return str(value).replace("|", "\\|")


@dataclass
class Table:
    """A table: column names and rows of values (floats are formatted with ``digits``)."""

    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]
    digits: int = 3

    def _fmt(self, value: Any) -> str:
        """One cell: floats with ``digits`` decimals; a missing value (NaN, or None as NaN / inf read back from
        ``evaluation.json``, which has no NaN) as "–"."""
        if value is None:
            return "–"
        if isinstance(value, float):
            return "–" if math.isnan(value) else f"{value:.{self.digits}f}"
        return str(value)

    def markdown(self) -> str:
        head = "| " + " | ".join(markdown_cell(c) for c in self.columns) + " |"
        sep = "|" + "|".join("---" for _ in self.columns) + "|"
        body = ["| " + " | ".join(markdown_cell(self._fmt(v)) for v in row) + " |" for row in self.rows]
        return "\n".join([head, sep, *body])

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(self._fmt(v))}</td>" for v in row) + "</tr>" for row in self.rows
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


@dataclass
class Section:
    """One part of a report. ``figures``: paths relative to the report folder (png shown, mp4 played)."""

    title: str
    text: str = ""
    tables: list[Table] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img,video{max-width:100%;margin:.5em 0}
code{background:#f5f5f5;padding:1px 4px}"""


def _markdown_to_html(text: str) -> str:
    """Tiny Markdown subset for report prose: paragraphs, bullet lists, `code` and **bold**."""
    import re

    out, items = [], []

    def flush_items() -> None:
        if items:
            out.append("<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>")
            items.clear()

    for block in text.strip().split("\n"):
        line = html.escape(block.strip())
        line = re.sub(r"`([^`]+)`", r"<code>\1</code>", line)
        line = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", line)
        if line.startswith("- "):
            items.append(line[2:])
        elif line:
            flush_items()
            out.append(f"<p>{line}</p>")
        else:
            flush_items()
    flush_items()
    return "\n".join(out)


def write_report(folder: Path, title: str, sections: Sequence[Section], intro: str = "") -> tuple[Path, Path]:
    """Write ``folder/report.md`` and ``folder/report.html``; returns both paths."""
    folder = Path(folder)
    md = [f"# {title}", "", intro.strip(), ""] if intro else [f"# {title}", ""]
    body = [f"<h1>{html.escape(title)}</h1>", _markdown_to_html(intro)] if intro else [f"<h1>{html.escape(title)}</h1>"]
    for sec in sections:
        md += [f"## {sec.title}", ""]
        body.append(f"<h2>{html.escape(sec.title)}</h2>")
        if sec.text:
            md += [sec.text.strip(), ""]
            body.append(_markdown_to_html(sec.text))
        for table in sec.tables:
            md += [table.markdown(), ""]
            body.append(table.html())
        for fig in sec.figures:
            if fig.endswith(".mp4"):
                md += [f"[video: {fig}]({fig})", ""]
                body.append(f'<video controls src="{html.escape(fig)}"></video>')
            else:
                md += [f"![{Path(fig).stem}]({fig})", ""]
                body.append(f'<img src="{html.escape(fig)}" alt="{html.escape(Path(fig).stem)}">')
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n")
    md_path, html_path = folder / "report.md", folder / "report.html"
    atomic_write_text(md_path, "\n".join(md).rstrip() + "\n")
    atomic_write_text(html_path, page)
    return md_path, html_path


# --- One evaluation's output folder, and gathering several into one page -------------------------

EVAL_FILE = "evaluation.json"


def _section_to_dict(sec: Section) -> dict[str, Any]:
    return {
        "title": sec.title,
        "text": sec.text,
        "tables": [{"columns": list(t.columns), "rows": [list(r) for r in t.rows], "digits": t.digits}
                   for t in sec.tables],
        "figures": list(sec.figures),
    }


def _section_from_dict(d: dict[str, Any]) -> Section:
    tables = [Table(t["columns"], t["rows"], t.get("digits", 3)) for t in d.get("tables", [])]
    return Section(d["title"], d.get("text", ""), tables, list(d.get("figures", [])))


def save_evaluation(
    folder: Path, kind: str, title: str, results: dict[str, Any], sections: Sequence[Section], intro: str = ""
) -> Path:
    """Write one evaluation's output: ``folder/evaluation.json`` + ``report.md`` / ``report.html``.

    ``evaluation.json`` holds ``{"kind", "title", "intro", "results", "sections"}``: the numbers for
    machines and the sections (tables, figure paths relative to ``folder``) from which
    :func:`gather_reports` (``vavam report RUN_DIR``) assembles one page over many evaluations.
    Returns the path of ``evaluation.json``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    payload = {
        "kind": kind,
        "title": title,
        "intro": intro,
        "results": json_safe(results),
        "sections": [json_safe(_section_to_dict(s)) for s in sections],
    }
    path = folder / EVAL_FILE
    atomic_write_text(path, json.dumps(payload, indent=2, allow_nan=False) + "\n")
    write_report(folder, title, sections, intro)
    return path


def load_evaluation(path: Path) -> dict[str, Any]:
    """Read an ``evaluation.json`` written by :func:`save_evaluation` (sections as :class:`Section`)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable evaluation file ({exc})") from exc
    if not isinstance(data, dict) or "kind" not in data or "sections" not in data:
        raise ValueError(f"{path}: not an evaluation file (needs 'kind' and 'sections')")
    try:  # a section without a title or a table without columns was a KeyError that stopped `vavam report`
        if not isinstance(data["sections"], list):
            raise TypeError("'sections' is not a list")
        data["sections"] = [_section_from_dict(s) for s in data["sections"]]
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not an evaluation file (malformed sections: {type(exc).__name__}: {exc})") from exc
    return data
