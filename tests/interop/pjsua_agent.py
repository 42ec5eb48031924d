"""One pjsua2 (PJSIP's Python binding) phone in its own process, line-JSON on stdio.

    python pjsua_agent.py '{"user": "bob", "password": "pw", "domain": "ims.test",
                            "proxy": "sip:127.0.0.1:5060;transport=udp;lr",
                            "play": "tone.wav", "record": "heard.wav"}'

stdin: one command a line, ``{"cmd": "call", "uri": "sip:alice@ims.test"}``
(optional ``headers``, e.g. ``{"Join": ...}``), ``answer`` (``code``: 180, 200,
486 ...), ``auto`` (answer the next calls with ``code``; only the next one with ``once``), ``transfer`` (``uri``:
REFER), ``transfer_replaces`` (REFER the first call to the latest, with Replaces), ``hold``, ``resume``, ``hangup``,
``quit``; each gets ``{"reply": CMD, "ok": true}`` (or ``"error"``).
stdout: events, ``{"event": "reg", "code": 200}``, ``{"event": "call", "state":
"INCOMING" | "EARLY" | "CONFIRMED" | "DISCONNECTED", "code": ..., "remote": ...}``,
``{"event": "media", "status": "ACTIVE" | "LOCAL_HOLD" | "REMOTE_HOLD" | "NONE",
"dir": ...}``, ``{"event": "message", "sender": ..., "body": ...}``.

Why a process of its own: pjsua2 owns threads and a C conference bridge; here
every callback runs on this process's main thread (``threadCnt = 0``, events
polled by ``libHandleEvents``), commands come from a reader thread through a
queue, and no audio device is needed (``setNullDev``: the bridge is clocked by
a null port). The phone plays ``play`` (a WAV, looped) into every call and
records what it hears to ``record``.
"""

from __future__ import annotations

import gc
import json
import os
import queue
import sys
import threading
from typing import Any

import pjsua2 as pj

CALL_STATES = {pj.PJSIP_INV_STATE_CALLING: "CALLING", pj.PJSIP_INV_STATE_INCOMING: "INCOMING",
               pj.PJSIP_INV_STATE_EARLY: "EARLY", pj.PJSIP_INV_STATE_CONNECTING: "CONNECTING",
               pj.PJSIP_INV_STATE_CONFIRMED: "CONFIRMED",
               pj.PJSIP_INV_STATE_DISCONNECTED: "DISCONNECTED"}
MEDIA_STATES = {pj.PJSUA_CALL_MEDIA_NONE: "NONE", pj.PJSUA_CALL_MEDIA_ACTIVE: "ACTIVE",
                pj.PJSUA_CALL_MEDIA_LOCAL_HOLD: "LOCAL_HOLD",
                pj.PJSUA_CALL_MEDIA_REMOTE_HOLD: "REMOTE_HOLD",
                pj.PJSUA_CALL_MEDIA_ERROR: "ERROR"}


# pjlib logs to fd 1: the events get a copy of it and fd 1 becomes stderr.
EVENTS = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)


def emit(**event: Any) -> None:
    EVENTS.write(json.dumps(event) + "\n")
    EVENTS.flush()


class Phone:
    def __init__(self, conf: dict[str, Any]) -> None:
        self.conf = conf
        self.call: AgentCall | None = None       # the call commands act on
        # every call object stays referenced: pjsua2 hangs up a call whose Call is deleted
        self.calls: list[AgentCall] = []
        # "answer": answer incoming calls with this code (200, 486 ...); else ring only
        self.answer_code: int | None = conf.get("answer")
        self.answer_once = False    # the code is for the next call only
        self.pending_answer: AgentCall | None = None
        self.player: pj.AudioMediaPlayer | None = None
        self.recorder: pj.AudioMediaRecorder | None = None

    def media_files(self) -> None:
        if self.conf.get("play"):
            self.player = pj.AudioMediaPlayer()
            self.player.createPlayer(self.conf["play"])       # loops by default
        if self.conf.get("record"):
            self.recorder = pj.AudioMediaRecorder()
            self.recorder.createRecorder(self.conf["record"])


class AgentAccount(pj.Account):
    def __init__(self, phone: Phone) -> None:
        super().__init__()
        self.phone = phone

    def onRegState(self, prm: pj.OnRegStateParam) -> None:
        emit(event="reg", code=prm.code, expiration=prm.expiration)

    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:
        call = AgentCall(self, self.phone, prm.callId)
        self.phone.call = call
        self.phone.calls.append(call)
        info = call.getInfo()
        emit(event="call", state="INCOMING", code=0, remote=info.remoteUri,
             call_id=info.callIdString)
        prm180 = pj.CallOpParam(True)
        prm180.statusCode = 180
        call.answer(prm180)
        if self.phone.answer_code is not None:
            self.phone.pending_answer = call   # answered from the loop, not in the callback

    def onInstantMessage(self, prm: pj.OnInstantMessageParam) -> None:
        emit(event="message", sender=prm.fromUri, body=prm.msgBody)


class AgentCall(pj.Call):
    def __init__(self, account: AgentAccount, phone: Phone, call_id: int = pj.PJSUA_INVALID_ID) -> None:
        super().__init__(account, call_id)
        self.account, self.phone = account, phone

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        info = self.getInfo()
        state = CALL_STATES.get(info.state, str(info.state))
        emit(event="call", state=state, code=info.lastStatusCode, reason=info.lastReason,
             remote=info.remoteUri, call_id=info.callIdString)

    def onCallTransferRequest(self, prm: pj.OnCallTransferRequestParam) -> None:
        """A REFER (we are the transferee): accept it (202, pjsua's default) and
        follow the new call with an AgentCall of ours, so it plays and records too."""
        new = AgentCall(self.account, self.phone)
        prm.newCall = new
        self.phone.call = new
        self.phone.calls.append(new)
        emit(event="transfer_request", target=prm.dstUri)

    def onCallReplaced(self, prm: pj.OnCallReplacedParam) -> None:
        """An INVITE with Replaces took this call over (RFC 3891): the new call
        is ours too (it plays and records, commands go to it)."""
        new = AgentCall(self.account, self.phone, prm.newCallId)
        prm.newCall = new
        self.phone.call = new
        self.phone.calls.append(new)
        emit(event="replaced", call_id=self.getInfo().callIdString)

    def onCallTransferStatus(self, prm: pj.OnCallTransferStatusParam) -> None:
        """The NOTIFY sipfrags of our REFER (we are the transferor)."""
        emit(event="transfer_status", code=prm.statusCode, final=prm.finalNotify)

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        info = self.getInfo()
        for media in info.media:
            if media.type != pj.PJMEDIA_TYPE_AUDIO:
                continue
            status = MEDIA_STATES.get(media.status, str(media.status))
            if media.status in (pj.PJSUA_CALL_MEDIA_ACTIVE, pj.PJSUA_CALL_MEDIA_REMOTE_HOLD):
                audio = self.getAudioMedia(media.index)
                if self.phone.player is not None:
                    self.phone.player.startTransmit(audio)
                if self.phone.recorder is not None:
                    audio.startTransmit(self.phone.recorder)
            emit(event="media", status=status, dir=int(media.dir))


def command(ep: pj.Endpoint, account: AgentAccount, phone: Phone, cmd: dict[str, Any]) -> bool:
    """Run one command; False to stop."""
    name = cmd.get("cmd")
    prm = pj.CallOpParam(True)
    if name == "quit":
        return False
    if name == "call":
        call = AgentCall(account, phone)
        phone.call = call
        phone.calls.append(call)
        for name, value in cmd.get("headers", {}).items():   # e.g. Join (RFC 3911)
            header = pj.SipHeader()
            header.hName, header.hValue = name, value
            prm.txOption.headers.append(header)
        call.makeCall(cmd["uri"], prm)
    elif name == "auto":     # answer the next incoming calls (or only the next) with this code
        phone.answer_code = int(cmd["code"])
        phone.answer_once = bool(cmd.get("once"))
    elif phone.call is None:
        raise RuntimeError("no call")
    elif name == "answer":
        prm.statusCode = int(cmd.get("code", 200))
        phone.call.answer(prm)
    elif name == "hold":
        phone.call.setHold(prm)
    elif name == "resume":
        prm.opt.flag = pj.PJSUA_CALL_UNHOLD
        phone.call.reinvite(prm)
    elif name == "transfer":   # unattended (RFC 5589 6.1): hold first, then REFER
        phone.call.xfer(cmd["uri"], prm)
    elif name == "transfer_replaces":   # attended: REFER the first call to the latest
        first = next(c for c in phone.calls if c is not phone.call and c.isActive())
        first.xferReplaces(phone.call, prm)
    elif name == "hangup":
        if "code" in cmd:
            prm.statusCode = int(cmd["code"])
        phone.call.hangup(prm)
    else:
        raise RuntimeError(f"unknown command {name!r}")
    return True


def read_commands(commands: queue.Queue[dict[str, Any] | None]) -> None:
    for line in sys.stdin:
        if line.strip():
            commands.put(json.loads(line))
    commands.put(None)   # stdin closed: the test is gone


def main() -> int:
    conf = json.loads(sys.argv[1])
    ep = pj.Endpoint()
    ep.libCreate()
    ep_cfg = pj.EpConfig()
    ep_cfg.uaConfig.threadCnt = 0          # callbacks on this thread only
    ep_cfg.uaConfig.mainThreadOnly = True
    ep_cfg.uaConfig.userAgent = "pjsua2-interop"
    ep_cfg.logConfig.level = int(conf.get("log_level", 3))
    ep_cfg.logConfig.consoleLevel = int(conf.get("log_level", 3))
    if conf.get("max_calls"):              # a one-line phone: 486 to a call while in one
        ep_cfg.uaConfig.maxCalls = int(conf["max_calls"])
    ep_cfg.medConfig.noVad = True          # a continuous stream: no silence suppression
    ep.libInit(ep_cfg)
    transport = pj.TransportConfig()
    transport.port = int(conf.get("port", 0))
    transport.boundAddress = conf.get("host", "127.0.0.1")
    transport.publicAddress = conf.get("host", "127.0.0.1")
    ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, transport)
    ep.libStart()
    ep.audDevManager().setNullDev()
    # only G.711: what imsbox offers (and a predictable 8 kHz for the files)
    for codec in ep.codecEnum2():
        keep = codec.codecId.split("/")[0] in ("PCMU", "PCMA", "telephone-event")
        ep.codecSetPriority(codec.codecId, 200 if keep else 0)
    phone = Phone(conf)
    phone.media_files()

    acc_cfg = pj.AccountConfig()
    domain = conf.get("domain", "ims.test")
    acc_cfg.idUri = f"sip:{conf['user']}@{domain}"
    acc_cfg.regConfig.registrarUri = f"sip:{domain}"
    acc_cfg.regConfig.timeoutSec = 600
    acc_cfg.sipConfig.proxies.append(conf["proxy"])      # outbound proxy: the P-CSCF
    acc_cfg.sipConfig.authCreds.append(
        pj.AuthCredInfo("digest", "*", conf.get("auth_user", conf["user"]), 0, conf["password"]))
    acc_cfg.natConfig.iceEnabled = False
    acc_cfg.natConfig.sdpNatRewriteUse = 0
    acc_cfg.natConfig.viaRewriteUse = 0
    acc_cfg.natConfig.contactRewriteUse = 0
    acc_cfg.mediaConfig.transportConfig.boundAddress = transport.boundAddress
    account = AgentAccount(phone)
    account.create(acc_cfg)

    commands: queue.Queue[dict[str, Any] | None] = queue.Queue()
    threading.Thread(target=read_commands, args=(commands,), daemon=True).start()
    emit(event="started")
    running = True
    while running:
        ep.libHandleEvents(20)
        if phone.pending_answer is not None and phone.answer_code is not None:
            prm = pj.CallOpParam(True)
            prm.statusCode = phone.answer_code
            phone.pending_answer, call = None, phone.pending_answer
            if phone.answer_once:
                phone.answer_code = None
            call.answer(prm)
        while running:
            try:
                cmd = commands.get_nowait()
            except queue.Empty:
                break
            if cmd is None:
                running = False
                break
            try:
                running = command(ep, account, phone, cmd)
                emit(reply=cmd.get("cmd"), ok=True)
            except Exception as exc:  # pj.Error and ours: the test reads the reason
                emit(reply=cmd.get("cmd"), ok=False, error=getattr(exc, "reason", "") or str(exc))
    ep.hangupAllCalls()
    for _ in range(25):                    # let the BYE / CANCEL go out
        ep.libHandleEvents(20)
    # pjsua2 objects go before the library: the recorder writes its WAV header when
    # deleted, and a Call deleted after libDestroy trips a pjsua assertion
    phone.recorder = phone.player = phone.call = phone.pending_answer = None
    phone.calls.clear()
    gc.collect()
    account.shutdown()
    ep.libDestroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
