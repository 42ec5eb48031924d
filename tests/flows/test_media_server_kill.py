"""``imsbox serve --role media`` killed with SIGKILL in mid-conference and
started again: the core (in this process) and the UEs go on. No BYE comes from
a killed process, so each participant's RTP timeout ends its call (call_ended
'media timeout': the UE's BYE goes unanswered, the focus is gone, and no
dialog is left at the UEs); after the restart a new 3-party conference
mixes (mix-minus, tone detection on the recordings)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from imsbox.config import Config
from imsbox.media import Recorder
from imsbox.ue.client import RcsClient

from helpers import client, network_with, run_within
from test_media_server import FACTORY, TONES, hears, hears_in_mix, join, media_config
from test_serve_cli import Serve

CORE = ["pcscf", "icscf", "scscf", "as", "conference", "telephony"]


def serve_media(path: Path, config: Config) -> Serve:
    serve = Serve("--role", "media", "--config", str(path))
    node = config.media_server
    assert f"media_server listening on udp {node.host}:{node.port}" in serve.lines(2)
    return serve


async def conference(ues: list[RcsClient]) -> dict[str, object]:
    first = await join(ues[0], FACTORY)
    uri = str(first.call.session.dialog.remote_target)  # type: ignore[union-attr]
    return {ues[0].user: first, **{ue.user: await join(ue, uri) for ue in ues[1:]}}


def test_media_server_killed_and_restarted(tmp_path: Path) -> None:
    config = media_config(tmp_path)
    path = tmp_path / "imsbox.toml"
    media = serve_media(path, config)

    async def scenario() -> None:
        nonlocal media
        ues = [client(config, n) for n in ("alice", "bob", "carol")]
        for ue in ues:
            ue.call_service.rtp_timeout = 1.5
        async with network_with(config, *ues, roles=CORE):
            calls = await conference(ues)
            await asyncio.sleep(0.5)
            media.proc.send_signal(signal.SIGKILL)            # no BYE, no RTP
            await asyncio.to_thread(media.stop)
            for call in calls.values():
                await asyncio.wait_for(call.ended.wait(), 12)  # type: ignore[attr-defined]
                assert call.end_reason == "media timeout"  # type: ignore[attr-defined]
            assert not any(ue.calls for ue in ues)
            media = await asyncio.to_thread(serve_media, path, config)
            again = await conference(ues)
            sinks = {n: Recorder() for n in again}
            for n, call in again.items():
                call.rtp.sink = sinks[n]  # type: ignore[attr-defined]
            await asyncio.sleep(1.5)
            for name, sink in sinks.items():
                assert all(hears_in_mix(sink.pcm, t) for n, t in TONES.items() if n != name), name
                assert not hears(sink.pcm, TONES[name], threshold=0.1), name
    try:
        run_within(scenario, 60)
    finally:
        status, _, err = media.stop()
    assert status == 0, err
