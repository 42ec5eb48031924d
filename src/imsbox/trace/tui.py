"""The live terminal ladder of ``imsbox trace`` (curses: any terminal, over ssh).

Arrows appear as the feed brings them, one line each as in ``--plain`` (a
column per party, the label at the end, a group number in front). Keys:

- Up/Down, PgUp/PgDn, Home/End: select a message (End follows new ones again);
- Enter: the whole message; Up/Down/PgUp/PgDn scroll it; Enter, Esc or q: back;
- g: only the selected message's group (Call-ID and its MSRP) / everything again;
- q: quit (then ``--pcap`` / ``--html`` are written, as in the other modes).

:class:`TuiState` holds what is shown and answers keys without curses, so it is
tested on its own; :func:`run_tui` draws it.
"""

from __future__ import annotations

import asyncio
import contextlib
import curses
from dataclasses import dataclass, field
from typing import Any

from .ladder import Arrow, Filter, Ladder
from .plain import COLUMN

__all__ = ["TuiState", "run_tui"]

KEY_ENTER = (10, 13, curses.KEY_ENTER)
KEY_BACK = (27, ord("q"), *KEY_ENTER)


@dataclass
class TuiState:
    """What the screen shows: the kept arrows, the selection, the message view."""

    ladder: Ladder
    keep: Filter = field(default_factory=Filter)
    selected: int = -1            # index into visible(); -1 follows the newest
    top: int = 0
    only_group: str | None = None
    viewing: Arrow | None = None
    scroll: int = 0
    quit: bool = False
    _group_numbers: dict[str, int] = field(default_factory=dict)

    def visible(self) -> list[Arrow]:
        arrows = self.ladder.ordered()
        if self.keep:
            kept = {g.key for g in self.ladder.groups(self.keep)}
            arrows = [a for a in arrows if a.group in kept]
        if self.only_group is not None:
            arrows = [a for a in arrows if a.group == self.only_group]
        return arrows

    def current(self, arrows: list[Arrow]) -> Arrow | None:
        if not arrows:
            return None
        index = len(arrows) - 1 if self.selected < 0 else min(self.selected, len(arrows) - 1)
        return arrows[index]

    # -- keys -------------------------------------------------------------------------
    def key(self, key: int, height: int) -> None:
        if self.viewing is not None:
            self._view_key(key, height)
            return
        arrows = self.visible()
        index = len(arrows) - 1 if self.selected < 0 else self.selected
        page = max(1, height - 3)
        moves = {curses.KEY_UP: -1, curses.KEY_DOWN: 1, curses.KEY_PPAGE: -page,
                 curses.KEY_NPAGE: page, ord("k"): -1, ord("j"): 1}
        if key in moves and arrows:
            self.selected = max(0, min(len(arrows) - 1, index + moves[key]))
        elif key == curses.KEY_HOME:
            self.selected = 0
        elif key == curses.KEY_END:
            self.selected = -1
        elif key in KEY_ENTER:
            self.viewing, self.scroll = self.current(arrows), 0
        elif key == ord("g"):
            chosen = self.current(arrows)
            self.only_group = None if self.only_group is not None or chosen is None \
                else chosen.group
            self.selected = -1
        elif key == ord("q"):
            self.quit = True

    def _view_key(self, key: int, height: int) -> None:
        page = max(1, height - 3)
        moves = {curses.KEY_UP: -1, curses.KEY_DOWN: 1, curses.KEY_PPAGE: -page,
                 curses.KEY_NPAGE: page}
        if key in moves:
            self.scroll = max(0, self.scroll + moves[key])
        elif key in KEY_BACK:
            self.viewing = None

    # -- drawing ------------------------------------------------------------------------
    def lines(self, width: int, height: int) -> list[tuple[str, bool]]:
        """The screen as (text, highlighted) lines."""
        if self.viewing is not None:
            return self._message_lines(self.viewing, width, height)
        self.ladder.resolve()  # UEs named since the last draw
        for arrow in self.ladder.ordered():  # groups numbered in order of appearance
            self._number(arrow.group)
        arrows = self.visible()
        columns = self.ladder.columns(arrows) if arrows else []
        head = (f" imsbox trace  {len(arrows)} messages"
                f"{'  group ' + str(self._number(self.only_group)) if self.only_group else ''}"
                f"{f'  ({self.ladder.dropped} dropped)' if self.ladder.dropped else ''}"
                "   Up/Down select  Enter message  g group  End follow  q quit")
        out = [(head[:width], True),
               ((" " * 16 + "".join(n[:COLUMN - 1].center(COLUMN) for n in columns))[:width],
                False)]
        rows = max(1, height - 2)
        index = len(arrows) - 1 if self.selected < 0 else min(self.selected, len(arrows) - 1)
        if index < self.top:
            self.top = index
        elif index >= self.top + rows:
            self.top = index - rows + 1
        self.top = max(0, min(self.top, max(0, len(arrows) - rows)))
        start = arrows[0].t if arrows else 0.0
        for i in range(self.top, min(len(arrows), self.top + rows)):
            out.append((self._row(arrows[i], columns, start)[:width], i == index))
        return out

    def _number(self, group: str | None) -> int:
        if group is None:
            return 0
        return self._group_numbers.setdefault(group, len(self._group_numbers) + 1)

    def _row(self, arrow: Arrow, columns: list[str], start: float) -> str:
        mid = COLUMN // 2
        cells = [" "] * (COLUMN * len(columns))
        for i in range(len(columns)):
            cells[i * COLUMN + mid] = "|"
        a, b = columns.index(arrow.src_name), columns.index(arrow.dst_name)
        lo, hi = sorted((a, b))
        for x in range(lo * COLUMN + mid + 1, hi * COLUMN + mid):
            cells[x] = "-" if arrow.proto == "sip" else "="
        if a < b:
            cells[hi * COLUMN + mid - 1] = ">"
        elif a > b:
            cells[lo * COLUMN + mid + 1] = "<"
        label = ("MSRP " if arrow.proto == "msrp" else "") + arrow.label
        return f"{arrow.t - start:8.3f} #{self._number(arrow.group):<4} " \
            f"{''.join(cells).rstrip()}  {label}"

    def _message_lines(self, arrow: Arrow, width: int, height: int) -> list[tuple[str, bool]]:
        head = (f" #{arrow.n} {arrow.src_name} -> {arrow.dst_name}  {arrow.proto.upper()}/"
                f"{arrow.transport.upper()} {len(arrow.data)} bytes   Enter/Esc back")
        text = arrow.data.decode("utf-8", "replace").replace("\r\n", "\n").split("\n")
        self.scroll = min(self.scroll, max(0, len(text) - 1))
        body = [(line[:width], False) for line in text[self.scroll:self.scroll + height - 1]]
        return [(head[:width], True), *body]


async def run_tui(ladder: Ladder, events: Any, keep: Filter, stop: asyncio.Event) -> None:
    """Draw ``ladder`` live until q, the end of the feeds or ``stop``."""
    state = TuiState(ladder, keep)
    changed = asyncio.Event()

    async def pump() -> None:
        async for event in events:
            if ladder.feed(event) is not None:
                changed.set()

    task = asyncio.create_task(pump())
    screen = curses.initscr()
    try:
        curses.noecho()
        curses.cbreak()
        screen.keypad(True)
        screen.nodelay(True)
        with contextlib.suppress(curses.error):
            curses.curs_set(0)
        await _loop(screen, state, changed, stop, task)
    finally:
        screen.keypad(False)
        curses.nocbreak()
        curses.echo()
        curses.endwin()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _loop(screen: Any, state: TuiState, changed: asyncio.Event, stop: asyncio.Event,
                task: asyncio.Task[None]) -> None:
    dirty = full = True
    while not (state.quit or stop.is_set() or task.done()):
        height, width = screen.getmaxyx()
        while (key := screen.getch()) != -1:
            mode = (state.viewing, state.only_group)
            if key != curses.KEY_RESIZE:
                state.key(key, height)
            # a new view is sent whole; within one, curses sends what changed
            full = full or key == curses.KEY_RESIZE or mode != (state.viewing,
                                                                 state.only_group)
            dirty = True
        if changed.is_set():
            changed.clear()
            dirty = True
        if dirty:
            if full:
                screen.clear()
            _draw(screen, state.lines(width, height), width, height)
            dirty = full = False
        await asyncio.sleep(0.05)


def _draw(screen: Any, lines: list[tuple[str, bool]], width: int, height: int) -> None:
    screen.erase()
    for y, (text, bold) in enumerate(lines[:height]):
        with contextlib.suppress(curses.error):  # the bottom-right cell raises
            screen.addnstr(y, 0, text, max(0, width - 1),
                           curses.A_REVERSE if bold else curses.A_NORMAL)
    screen.refresh()


