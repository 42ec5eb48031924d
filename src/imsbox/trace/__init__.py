"""Seeing the network: the trace feed and its views.

- ``record``  - :class:`TraceRecord`, one SIP or MSRP message a node sent or received,
  and its frame on the feed (a JSON header line, then the raw bytes);
- ``feed``    - :class:`TraceFeed`, the Unix socket each ``imsbox serve`` process
  streams its records to, and :func:`attach` to read every feed of a data dir;
- ``summary`` - the one-line label of a message and its filter keys;
- ``ladder``  - :class:`Ladder`: one arrow per message (deduplicated across nodes),
  parties named by role and user, groups by Call-ID, :class:`Filter`;
- ``plain``, ``html``, ``pcap`` - the views (text ladder, self-contained HTML page,
  pcapng with IP/UDP/TCP framing);
- ``cli``     - ``imsbox trace``.

Above the protocol layers only (it parses SIP and MSRP); ``serve`` wires the
feed to the nodes' public trace hooks.
"""

from .feed import TraceFeed, attach, feed_path, find_feeds
from .ladder import Arrow, Filter, Group, Ladder
from .record import Hello, NodeInfo, TraceRecord
from .summary import Summary, describe

__all__ = ["Arrow", "Filter", "Group", "Hello", "Ladder", "NodeInfo", "Summary", "TraceFeed",
           "TraceRecord", "attach", "describe", "feed_path", "find_feeds"]
