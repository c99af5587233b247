"""A report as a list of blocks, rendered to Markdown and to one self-contained HTML page.

Building the content once and rendering it twice keeps the two formats in step. The HTML page needs
nothing beside it: figures are inlined as base64 PNG, the style sheet is inline, no script, no CDN.
"""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Figure:
    path: Path
    caption: str


@dataclass
class Code:
    text: str
    language: str = ""
    summary: str = ""
    """When set, the HTML page folds the block under this summary (``<details>``)."""


Block = Heading | Paragraph | Bullets | Table | Figure | Code


@dataclass
class Document:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)

    def figures(self) -> list[Figure]:
        return [block for block in self.blocks if isinstance(block, Figure)]

    def tables(self) -> list[Table]:
        return [block for block in self.blocks if isinstance(block, Table)]


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(document: Document, base: Path) -> str:
    """Markdown with figures linked relative to ``base`` (the folder the file is written to)."""
    lines = [f"# {document.title}", ""]
    for block in document.blocks:
        if isinstance(block, Heading):
            lines += [f"{'#' * block.level} {block.text}", ""]
        elif isinstance(block, Paragraph):
            lines += [block.text, ""]
        elif isinstance(block, Bullets):
            lines += [f"* {item}" for item in block.items] + [""]
        elif isinstance(block, Table):
            if block.caption:
                lines += [f"*{block.caption}*", ""]
            lines += ["| " + " | ".join(map(_md_cell, block.columns)) + " |", "|" + "---|" * len(block.columns)]
            lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in block.rows] + [""]
        elif isinstance(block, Figure):
            lines += [f"![{block.caption}]({Path(os.path.relpath(block.path, base)).as_posix()})", "",
                      f"*{block.caption}*", ""]
        elif isinstance(block, Code):
            lines += [f"```{block.language}", block.text.rstrip("\n"), "```", ""]
    return "\n".join(lines)


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #1a1a1a; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.92em; }
th, td { border: 1px solid #b8b8b8; padding: 0.3em 0.6em; text-align: left; }
th { background: #e8eef6; }
tr:nth-child(even) td { background: #f6f6f6; }
caption { caption-side: top; text-align: left; font-style: italic; padding-bottom: 0.3em; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-style: italic; }
pre { background: #f3f3f3; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
h2 { border-bottom: 2px solid #3b6ea8; padding-bottom: 0.2em; margin-top: 2em; }
"""


def render_html(document: Document) -> str:
    """One HTML page, figures inlined (base64 PNG), no external resources."""
    esc = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{esc(document.title)}</title><style>{STYLE}</style></head><body>",
             f"<h1>{esc(document.title)}</h1>"]
    for block in document.blocks:
        if isinstance(block, Heading):
            level = min(block.level, 6)
            parts.append(f"<h{level}>{esc(block.text)}</h{level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{esc(block.text)}</p>")
        elif isinstance(block, Bullets):
            parts.append("<ul>" + "".join(f"<li>{esc(item)}</li>" for item in block.items) + "</ul>")
        elif isinstance(block, Table):
            caption = f"<caption>{esc(block.caption)}</caption>" if block.caption else ""
            head = "".join(f"<th>{esc(str(c))}</th>" for c in block.columns)
            body = "".join("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>" for row in block.rows)
            parts.append(f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(block, Figure):
            data = base64.b64encode(Path(block.path).read_bytes()).decode("ascii")
            parts.append(f'<figure><img alt="{esc(block.caption)}" src="data:image/png;base64,{data}">'
                         f"<figcaption>{esc(block.caption)}</figcaption></figure>")
        elif isinstance(block, Code):
            pre = f"<pre><code>{esc(block.text)}</code></pre>"
            parts.append(f"<details><summary>{esc(block.summary)}</summary>{pre}</details>" if block.summary else pre)
    parts.append("</body></html>")
    return "\n".join(parts)
