"""A static HTML gallery of result images with captions (used by the demo)."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path

from regionedit.images import atomic_write


@dataclass
class GalleryRow:
    title: str
    images: list[tuple[str, str]]  # (file name relative to the gallery, caption)
    parameters: dict = field(default_factory=dict)
    note: str = ""


def write_gallery(folder: str | Path, title: str, intro: str, rows: list[GalleryRow]) -> Path:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:70em}"
        "figure{display:inline-block;margin:0 1em 1em 0;text-align:center}"
        "img{width:192px;image-rendering:pixelated;border:1px solid #ccc}"
        "pre{background:#f4f4f4;padding:.5em;font-size:85%}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>",
    ]
    for row in rows:
        parts.append(f"<h2>{html.escape(row.title)}</h2>")
        if row.note:
            parts.append(f"<p>{html.escape(row.note)}</p>")
        for name, caption in row.images:
            parts.append(
                f"<figure><img src='{html.escape(name)}' alt='{html.escape(caption)}'>"
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
        if row.parameters:
            parts.append(f"<pre>{html.escape(json.dumps(row.parameters, indent=1, default=str))}</pre>")
    parts.append("</body></html>")
    path = Path(folder) / "index.html"
    return atomic_write(path, lambda tmp: tmp.write_text("\n".join(parts)))
