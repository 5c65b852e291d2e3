#!/usr/bin/env python3
"""nio_peer: a Matrix test person (matrix-nio) driven by JSON lines.

Run with the test venv (deploy/synapse.sh env gives COI_PYTHON):

    $COI_PYTHON tests/peers/nio_peer.py HOMESERVER USER_ID PASSWORD

Protocol: one JSON object per line on stdin; one JSON object per line on stdout.
Requests are {"cmd": NAME, ...args}; an optional "id" is echoed back. Replies are
{"ok": true, ...results} or {"ok": false, "error": "..."}. Events seen by the sync loop are
printed as they arrive, as {"event": KIND, ..., "t": time.time() when the sync loop saw it}.
Logs go to stderr only. Times are Unix seconds (float) of this machine's wall clock.
Events of the first sync (history) are not reported. On start, after login and the first sync, one line {"ok": true, "ready": true, "user_id": ...}.
EOF on stdin acts like {"cmd": "shutdown"}.

Commands:
  join     {room} -> {room}
  create   {name?, invite?: [user ids]} -> {room}                 (a private room)
  leave    {room} -> {}                                         (leave and forget)
  send     {room, body, reply_to?, html?} -> {event_id, t_send, t_done}
                                          (m.text; reply_to: an event id; t_send / t_done: time.time()
                                           just before the request and when it returned)
  edit     {room, target, body} -> {event_id}                   (m.replace of target)
  react    {room, target, key} -> {event_id}
  redact   {room, target} -> {event_id}
  ping -> {}
  shutdown -> {}
Events:
  {"event": "invite", "room", "sender"}                 an invite for this user
  {"event": "message", "room", "sender", "event_id", "body", "content"}   any m.room.message
  {"event": "other", "room", "sender", "event_id", "type", "content"}     reactions, redactions, members
"""

import asyncio
import json
import logging
import sys
import time

from nio import (
    AsyncClient,
    InviteMemberEvent,
    LoginResponse,
    RoomLeaveResponse,
    RoomMessage,
    Event,
    UnknownEvent,
)

log = logging.getLogger("nio_peer")


def emit(obj):
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


async def main():
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    hs, user, password = sys.argv[1], sys.argv[2], sys.argv[3]
    client = AsyncClient(hs, user)
    resp = await client.login(password, device_name="nio_peer")
    if not isinstance(resp, LoginResponse):
        emit({"ok": False, "error": f"login failed: {resp}"})
        return 1

    seen = set()
    live = False  # events of the first sync (history, old invites) are not reported

    async def on_invite(room, event):
        t = time.time()
        if not live:
            return
        if event.state_key == client.user_id and event.membership == "invite":
            key = ("invite", room.room_id)
            if key not in seen:
                seen.add(key)
                emit({"event": "invite", "room": room.room_id, "sender": event.sender, "t": t})

    async def on_event(room, event):
        t = time.time()
        eid = getattr(event, "event_id", None)
        if not live or eid in seen:
            return
        seen.add(eid)
        source = getattr(event, "source", {}) or {}
        content = source.get("content", {})
        if isinstance(event, RoomMessage):
            emit({"event": "message", "room": room.room_id, "sender": event.sender,
                  "event_id": eid, "body": content.get("body"), "content": content, "t": t})
        else:
            emit({"event": "other", "room": room.room_id, "sender": getattr(event, "sender", None),
                  "event_id": eid, "type": source.get("type"), "content": content, "t": t})

    client.add_event_callback(on_invite, InviteMemberEvent)
    client.add_event_callback(on_event, (RoomMessage, UnknownEvent, Event))

    await client.sync(timeout=0, full_state=True)
    live = True
    sync_task = asyncio.create_task(client.sync_forever(timeout=5000))
    emit({"ok": True, "ready": True, "user_id": client.user_id})

    loop = asyncio.get_running_loop()
    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            line = line.strip()
            if not line:
                continue
            try:
                req = json.loads(line)
            except ValueError as e:
                emit({"ok": False, "error": f"bad JSON: {e}"})
                continue
            rid = req.get("id")
            try:
                result = await handle(client, req)
                out = {"ok": True, **result}
            except Exception as e:  # reported to the test, not fatal
                out = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            if rid is not None:
                out["id"] = rid
            emit(out)
            if req.get("cmd") == "shutdown":
                break
    finally:
        sync_task.cancel()
        await client.close()
    return 0


async def send(client, room, event_type, content):
    t_send = time.time()
    resp = await client.room_send(room, event_type, content, ignore_unverified_devices=True)
    t_done = time.time()
    eid = getattr(resp, "event_id", None)
    if not eid:
        raise RuntimeError(f"send failed: {resp}")
    return {"event_id": eid, "t_send": t_send, "t_done": t_done}


async def handle(client, req):
    cmd = req.get("cmd")
    if cmd == "ping" or cmd == "shutdown":
        return {}
    if cmd == "join":
        resp = await client.join(req["room"])
        room = getattr(resp, "room_id", None)
        if not room:
            raise RuntimeError(f"join failed: {resp}")
        return {"room": room}
    if cmd == "create":
        resp = await client.room_create(name=req.get("name"), invite=req.get("invite") or [])
        room = getattr(resp, "room_id", None)
        if not room:
            raise RuntimeError(f"create failed: {resp}")
        return {"room": room}
    if cmd == "leave":
        resp = await client.room_leave(req["room"])
        if not isinstance(resp, RoomLeaveResponse):
            raise RuntimeError(f"leave failed: {resp}")
        await client.room_forget(req["room"])
        return {}
    if cmd == "send":
        content = {"msgtype": "m.text", "body": req["body"]}
        if req.get("html"):
            content["format"] = "org.matrix.custom.html"
            content["formatted_body"] = req["html"]
        if req.get("reply_to"):
            content["m.relates_to"] = {"m.in_reply_to": {"event_id": req["reply_to"]}}
        return await send(client, req["room"], "m.room.message", content)
    if cmd == "edit":
        new = {"msgtype": "m.text", "body": req["body"]}
        content = {"msgtype": "m.text", "body": "* " + req["body"], "m.new_content": new,
                   "m.relates_to": {"rel_type": "m.replace", "event_id": req["target"]}}
        return await send(client, req["room"], "m.room.message", content)
    if cmd == "react":
        content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": req["target"],
                                    "key": req["key"]}}
        return await send(client, req["room"], "m.reaction", content)
    if cmd == "redact":
        resp = await client.room_redact(req["room"], req["target"])
        eid = getattr(resp, "event_id", None)
        if not eid:
            raise RuntimeError(f"redact failed: {resp}")
        return {"event_id": eid}
    raise ValueError(f"unknown command {cmd!r}")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
