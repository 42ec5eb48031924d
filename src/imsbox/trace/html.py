"""One self-contained HTML page of a trace (``imsbox trace --html FILE``).

The ladder of each group is inline SVG: a column per party, an arrow per
message whose label links to the message below (``#m12``); every message is
shown in full in its own section, with its time, ends, transport and a link
back up. No scripts, no external URLs: the file can be attached to a bug report.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable

from .ladder import Arrow, Group, Ladder

__all__ = ["render_group_fragment", "render_html"]

COLUMN = 170
ROW = 26
TOP = 40

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
h2{font-size:1.05em;margin-top:2em}
svg text{font-family:ui-monospace,monospace;font-size:12px}
svg .party{font-weight:bold;font-size:13px}
svg a text{fill:#0645ad}
svg a:hover text{text-decoration:underline}
section.msg{border-top:1px solid #ccc;padding:.4em 0}
section.msg:target{background:#fff7d6}
section.msg pre{white-space:pre-wrap;word-break:break-all;max-height:30em;overflow:auto;
background:#f6f6f6;padding:.5em;margin:.3em 0}
.meta{font-size:.9em;color:#555}
"""


def render_html(ladder: Ladder, groups: Iterable[Group], title: str = "imsbox trace") -> str:
    groups = list(groups)
    arrows = [a for g in groups for a in g.arrows]
    start = min((a.t for a in arrows), default=0.0)
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
             f'<h1 id="g-top">{html.escape(title)}</h1>',
             f'<p class="meta">{len(arrows)} messages in {len(groups)} groups, '
             f"written {html.escape(time.strftime('%Y-%m-%d %H:%M:%S %Z'))}</p>"]
    if ladder.dropped:
        parts.append(f"<p><strong>The feed dropped {ladder.dropped} records.</strong></p>")
    parts.append("<ul>" + "".join(
        f'<li><a href="#g{i}">{html.escape(g.title)}</a> ({len(g.arrows)})</li>'
        for i, g in enumerate(groups)) + "</ul>")
    for i, group in enumerate(groups):
        parts.append(f'<h2 id="g{i}">{html.escape(group.title)}</h2>')
        parts.append(_svg(ladder, group, start))
    parts.append("<h2>Messages</h2>")
    for arrow in sorted(arrows, key=lambda a: (a.t, a.n)):
        parts.append(_message(arrow, start))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def render_group_fragment(ladder: Ladder, group: Group) -> str:
    """One group's ladder and messages, as a fragment for a page that has the style."""
    ladder.resolve()
    start = group.arrows[0].t if group.arrows else 0.0
    parts = [f'<p class="meta">{len(group.arrows)} messages</p>', _svg(ladder, group, start)]
    parts += [_message(arrow, start) for arrow in group.arrows]
    return "\n".join(parts) + "\n"


def _svg(ladder: Ladder, group: Group, start: float) -> str:
    columns = ladder.columns(group.arrows)
    width = COLUMN * len(columns) + 90
    height = TOP + ROW * (len(group.arrows) + 1)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img">']
    for i, name in enumerate(columns):
        x = _x(i)
        out.append(f'<text class="party" x="{x}" y="20" text-anchor="middle">'
                   f"{html.escape(name)}</text>")
        out.append(f'<line x1="{x}" y1="28" x2="{x}" y2="{height - 4}" stroke="#999" '
                   'stroke-dasharray="3,3"/>')
    for row, arrow in enumerate(group.arrows):
        out.append(_svg_arrow(arrow, columns, TOP + ROW * row + ROW // 2, start))
    out.append("</svg>")
    return "\n".join(out)


def _x(column: int) -> int:
    return 90 + COLUMN * column + COLUMN // 2


def _svg_arrow(arrow: Arrow, columns: list[str], y: int, start: float) -> str:
    x1, x2 = _x(columns.index(arrow.src_name)), _x(columns.index(arrow.dst_name))
    colour = "#1f5fbf" if arrow.proto == "sip" else "#2a8a3a"
    head = 7 if x2 > x1 else -7
    label = html.escape(arrow.label)
    mid = (x1 + x2) // 2
    return (f'<text x="4" y="{y + 4}">+{arrow.t - start:.3f}</text>'
            f'<line x1="{x1}" y1="{y}" x2="{x2}" y2="{y}" stroke="{colour}" stroke-width="1.5"/>'
            f'<polygon points="{x2},{y} {x2 - head},{y - 4} {x2 - head},{y + 4}" '
            f'fill="{colour}"/>'
            f'<a href="#m{arrow.n}"><title>{label}</title>'
            f'<text x="{mid}" y="{y - 4}" text-anchor="middle">{label}</text></a>')


def _message(arrow: Arrow, start: float) -> str:
    text = arrow.data.decode("utf-8", "replace")
    seen = ", ".join(f"{node} {direction}" for node, direction in arrow.seen_by)
    src, dst = html.escape(arrow.src_name), html.escape(arrow.dst_name)
    return (f'<section class="msg" id="m{arrow.n}"><div><strong>#{arrow.n} '
            f"{html.escape(arrow.label)}</strong> "
            f'<span class="meta">+{arrow.t - start:.6f}s {src} → {dst} '
            f"{arrow.proto.upper()}/{arrow.transport.upper()} "
            f"{_hostport(arrow.src)} → {_hostport(arrow.dst)} ({len(arrow.data)} bytes; "
            f'traced by {html.escape(seen)}) <a href="#g-top">top</a></span></div>'
            f"<pre>{html.escape(text)}</pre></section>")


def _hostport(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
