"""The ladder as plain text, for logs (``imsbox trace --plain``).

One block per group (a Call-ID and the MSRP sessions it set up)::

    == MESSAGE 3f9c...@127.0.0.1 (6 messages) ==
                 alice's UE        P-CSCF          S-CSCF
    +0.000000        |-------------->|               |        MESSAGE cpim 'Hello'
    +0.000412        |               |-------------->|        MESSAGE cpim 'Hello'

Each arrow line ends with its label, so ``grep`` and tests read it as well as
people do; ``line_fields`` gives (source, destination, label) back.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TextIO

from .ladder import Arrow, Group, Ladder

__all__ = ["COLUMN", "render_group", "render_plain"]

COLUMN = 16
_TIME = 11


def render_plain(ladder: Ladder, groups: Iterable[Group], out: TextIO) -> int:
    """Write every group; the number of arrows written."""
    count = 0
    groups = list(groups)
    start = min((g.arrows[0].t for g in groups if g.arrows), default=0.0)
    for group in groups:
        out.write("\n".join(render_group(ladder, group, start)) + "\n\n")
        count += len(group.arrows)
    if ladder.dropped:
        out.write(f"(the feed dropped {ladder.dropped} records: the trace did not keep up)\n")
    return count


def render_group(ladder: Ladder, group: Group, start: float) -> list[str]:
    columns = ladder.columns(group.arrows)
    lines = [f"== {group.title} ({len(group.arrows)} messages) ==",
             " " * _TIME + "".join(_centre(name) for name in columns)]
    for arrow in group.arrows:
        lines.append(_arrow_line(arrow, columns, start))
    return lines


def _centre(name: str) -> str:
    return name[:COLUMN - 1].center(COLUMN)


def _arrow_line(arrow: Arrow, columns: list[str], start: float) -> str:
    a, b = columns.index(arrow.src_name), columns.index(arrow.dst_name)
    cells = [" "] * (COLUMN * len(columns))
    mid = COLUMN // 2
    for i in range(len(columns)):
        cells[i * COLUMN + mid] = "|"
    lo, hi = sorted((a, b))
    x0, x1 = lo * COLUMN + mid, hi * COLUMN + mid
    for x in range(x0 + 1, x1):
        cells[x] = "-" if arrow.proto == "sip" else "="
    if a == b:  # to itself (a node looping back): a mark, no arrow
        cells[x0] = "@"
    elif a < b:
        cells[x1 - 1] = ">"
    else:
        cells[x0 + 1] = "<"
    stamp = f"+{arrow.t - start:.6f}".ljust(_TIME)
    tail = f"{arrow.proto.upper() if arrow.proto != 'sip' else ''}".strip()
    label = f"{tail} {arrow.label}".strip()
    return f"{stamp}{''.join(cells).rstrip()}    {label}  [{arrow.src_name} -> {arrow.dst_name}]"
