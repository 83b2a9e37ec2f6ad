"""``vavam report RUN_DIR``: one page over every evaluation (and training curve) found in a run folder.

Every ``vavam eval <kind>`` writes an ``evaluation.json`` (:func:`vavam.eval.report.save_evaluation`)
holding its sections; this module finds them all under a folder, orders them by kind, rewrites their
figure paths relative to the page and writes ``report.md`` + ``report.html``. Training runs found on
the way (the ``metrics.jsonl`` of ``vavam train video`` / ``action``, the ``metrics.csv`` of ``vavam train
tokenizer``) get a loss-curve plot.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import tyro

from vavam.eval.report import EVAL_FILE, Section, Table, load_evaluation, write_report
from vavam.io import read_loss_log

#: order of evaluation kinds on the page (unknown kinds go last, by folder name).
KIND_ORDER = ("nexttoken", "openloop", "quality", "probe", "scaling", "closedloop")


def find_evaluations(run_dir: Path, exclude: Path | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """Every readable ``evaluation.json`` under ``run_dir`` (not under ``exclude``) -> [(folder, evaluation)],
    ordered by :data:`KIND_ORDER` then path. Unreadable files are reported on stderr and skipped.

    ``exclude`` is compared as an absolute path; when it is ``run_dir`` itself or a folder above it (the page
    written into the run folder), nothing is excluded."""
    import sys

    skip = Path(exclude).resolve() if exclude is not None else None
    root = Path(run_dir).resolve()
    if skip is not None and (skip == root or skip in root.parents):
        skip = None
    found = []
    for path in sorted(Path(run_dir).rglob(EVAL_FILE)):
        if skip is not None and skip in path.resolve().parents:
            continue
        try:
            found.append((path.parent, load_evaluation(path)))
        except ValueError as exc:
            print(f"vavam report: skipping {exc}", file=sys.stderr)

    def key(item: tuple[Path, dict[str, Any]]) -> tuple[int, str]:
        kind = item[1]["kind"]
        return (KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER), str(item[0]))

    return sorted(found, key=key)


#: columns every ``vavam train tokenizer`` metrics.csv has
TOKENIZER_LOG_COLUMNS = ("step", "train_loss", "val_psnr", "lr")


def _training_runs(run_dir: Path) -> list[tuple[Path, list[dict[str, Any]]]]:
    """``(run folder, [{"step", "loss"}, ...])`` of every training run under ``run_dir``, sorted by folder.

    ``vavam train video`` / ``action`` write ``metrics.jsonl`` (one ``{"step", "loss", ...}`` line per
    step); ``vavam train tokenizer`` writes ``metrics.csv`` whose ``train_loss`` column holds the loss
    (other rows: evaluations). Unreadable lines and rows without a loss are skipped.
    """
    runs = []
    for path in sorted(Path(run_dir).rglob("metrics.jsonl")):
        rows = read_loss_log(path)
        if rows:
            runs.append((path.parent, rows))
    for path in sorted(Path(run_dir).rglob("metrics.csv")):
        if (path.parent / "metrics.jsonl").exists():
            continue
        rows = _tokenizer_loss_rows(path)
        if rows:
            runs.append((path.parent, rows))
    return sorted(runs, key=lambda run: str(run[0]))


def _tokenizer_loss_rows(path: Path) -> list[dict[str, Any]]:
    """``[{"step", "loss"}]`` from a ``vavam train tokenizer`` ``metrics.csv`` (empty for any other CSV).

    A tokenizer log is told by its own columns (``step``, ``train_loss``, ``val_psnr``, ``lr``); a CSV that
    cannot be read is skipped with a message.
    """
    import csv
    import sys

    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not set(TOKENIZER_LOG_COLUMNS) <= set(reader.fieldnames or ()):
                return []
            rows = []
            for row in reader:
                try:
                    rows.append({"step": int(row["step"]), "loss": float(row["train_loss"])})
                except (TypeError, ValueError):  # an evaluation row: no training loss
                    continue
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        print(f"vavam report: skipping {path}: {exc}", file=sys.stderr)
        return []
    return rows


def _plot_training(runs: list[tuple[Path, list[dict[str, Any]]]], run_dir: Path, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(3.6 * len(runs), 3.0), squeeze=False)
    for ax, (folder, rows) in zip(axes[0], runs):
        losses = [r["loss"] for r in rows]
        ax.plot([r["step"] for r in rows], losses, lw=1)
        positive = min(losses) > 0  # a GAN tokenizer's total loss can be <= 0: a log axis would drop points
        ax.set_title(os.path.relpath(folder, run_dir) + ("" if positive else " (linear)"), fontsize=9)
        ax.set_xlabel("step")
        ax.set_yscale("log" if positive else "linear")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("training loss")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(
    run_dir: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="RUN_DIR")],
    out: Path | None = None,
    title: str | None = None,
) -> dict[str, Any]:
    """Gather every evaluation of a run folder (and its training curves) into one report page.

    Args:
        run_dir: folder searched recursively for ``evaluation.json`` (written by ``vavam eval ...``)
            and training logs (``metrics.jsonl`` of ``vavam train video`` / ``action``, ``metrics.csv`` of
            ``vavam train tokenizer``).
        out: where ``report.md`` / ``report.html`` go (default ``RUN_DIR/summary``).
        title: page title (default: "vavam report: <run folder name>").
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    out = Path(out) if out is not None else run_dir / "summary"
    if (out / EVAL_FILE).is_file():
        raise ValueError(f"--out {out} holds an evaluation ({EVAL_FILE}): its report.md / report.html would be "
                         "overwritten; choose another --out (default RUN_DIR/summary)")
    # Every evaluation under RUN_DIR, those under --out too: --out may not hold an evaluation itself (refused
    # above), but one below it (`vavam report runs --out runs/eval`) is not overwritten and belongs on the page.
    evaluations = find_evaluations(run_dir)
    training = _training_runs(run_dir)
    if not evaluations and not training:  # refused before any output folder exists
        raise FileNotFoundError(f"{run_dir}: no evaluation.json (vavam eval ...) and no training log "
                                "(metrics.jsonl, or a tokenizer's metrics.csv: vavam train ...)")
    out.mkdir(parents=True, exist_ok=True)
    sections: list[Section] = []
    index_rows = []
    for folder, ev in evaluations:
        rel = os.path.relpath(folder, out)
        index_rows.append([ev["kind"], ev["title"], os.path.relpath(folder, run_dir)])
        for sec in ev["sections"]:
            figures = [os.path.join(rel, f) for f in sec.figures]
            text = (sec.text + f"\n\nFrom `{os.path.relpath(folder, run_dir)}`.").strip()
            sections.append(replace(sec, title=f"{ev['title']}: {sec.title}" if sec.title != ev["title"] else sec.title,
                                    text=text, figures=figures))
    if training:
        _plot_training(training, run_dir, out / "training_curves.png")
        rows = [[os.path.relpath(f, run_dir), rows[-1]["step"], rows[-1]["loss"]] for f, rows in training]
        caption = "Training loss per run (log scale; linear where a loss is not positive)."
        sections.append(Section("Training", caption, [Table(["run", "last step", "last loss"], rows, digits=4)],
                                ["training_curves.png"]))
    intro = f"{len(evaluations)} evaluation(s) and {len(training)} training run(s) found under `{run_dir}`."
    index = Section("Contents", "", [Table(["kind", "evaluation", "folder"], index_rows)]) if index_rows else None
    md, html = write_report(out, title or f"vavam report: {run_dir.resolve().name}",
                            ([index] if index else []) + sections, intro)
    print(f"report: {html}")
    return {"report_md": str(md), "report_html": str(html), "evaluations": [str(f) for f, _ in evaluations],
            "training_runs": [str(f) for f, _ in training]}
