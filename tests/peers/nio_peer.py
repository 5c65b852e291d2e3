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
  leave    {room} -> {}                                         (leave and forget)
  send     {room, body, reply_to?, html?} -> {event_id, t_send, t_done}
                                          (m.text; reply_to: an event id; t_send / t_done: time.time()
                                           just before the request and when it returned)
  edit     {room, target, body} -> {event_id}                   (m.replace of target)
  react    {room, target, key} -> {event_id}
  redact   {room, target} -> {event_id}
  send_file {room, data_b64, filename, mimetype, msgtype, reply_to?, caption?} -> {event_id, url}
                                                               (uploads, then m.image / m.file / ...)
  download {url} -> {data_b64, content_type}                   (authenticated media, client v1)
  create_room {invite?, is_direct?, preset?, name?} -> {room}   (alias: create; private by default)
  invite   {room, user} -> {}
  read     {room, event_id} -> {}                               (read receipt + fully read marker)
  set_name {room, name} -> {event_id}
  set_topic {room, topic} -> {event_id}
  ping -> {}
  shutdown -> {}
Events:
  {"event": "invite", "room", "sender"}                 an invite for this user
  {"event": "message", "room", "sender", "event_id", "body", "content"}   any m.room.message
  {"event": "receipt", "room", "user", "event_id", "receipt_type"}   read receipts
  {"event": "other", "room", "sender", "event_id", "type", "content", "state_key", "redacts"}
                                                       reactions, redactions, members
"""

import asyncio
import base64
import io
import json
import urllib.parse
import logging
import sys
import time

from nio import (
    ReceiptEvent,
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
                  "event_id": eid, "type": source.get("type"), "content": content,
                  "state_key": source.get("state_key"),
                  "redacts": source.get("redacts") or content.get("redacts"), "t": t})

    async def on_receipt(room, event):
        if not live:
            return
        for r in event.receipts:
            emit({"event": "receipt", "room": room.room_id, "user": r.user_id,
                  "event_id": r.event_id, "receipt_type": r.receipt_type, "t": time.time()})

    client.add_ephemeral_callback(on_receipt, ReceiptEvent)
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
    if cmd == "send_file":
        data = base64.b64decode(req["data_b64"])
        resp, _ = await client.upload(io.BytesIO(data), content_type=req["mimetype"],
                                      filename=req["filename"], filesize=len(data))
        url = getattr(resp, "content_uri", None)
        if not url:
            raise RuntimeError(f"upload failed: {resp}")
        content = {"msgtype": req["msgtype"], "body": req.get("caption") or req["filename"],
                   "filename": req["filename"], "url": url,
                   "info": {"mimetype": req["mimetype"], "size": len(data)}}
        if req.get("reply_to"):
            content["m.relates_to"] = {"m.in_reply_to": {"event_id": req["reply_to"]}}
        out = await send(client, req["room"], "m.room.message", content)
        return {**out, "url": url}
    if cmd == "download":
        server, media_id = req["url"][len("mxc://"):].split("/", 1)
        path = "/_matrix/client/v1/media/download/{}/{}".format(
            urllib.parse.quote(server, safe=""), urllib.parse.quote(media_id, safe=""))
        async with client.client_session.get(
                client.homeserver + path,
                headers={"Authorization": f"Bearer {client.access_token}"}) as r:
            body = await r.read()
            if r.status != 200:
                raise RuntimeError(f"download {r.status}: {body[:200]!r}")
            return {"data_b64": base64.b64encode(body).decode(),
                    "content_type": r.headers.get("Content-Type")}
    if cmd in ("create", "create_room"):
        from nio import RoomPreset
        preset = {"private_chat": RoomPreset.private_chat,
                  "trusted_private_chat": RoomPreset.trusted_private_chat,
                  "public_chat": RoomPreset.public_chat}[req.get("preset", "private_chat")]
        resp = await client.room_create(invite=req.get("invite", []),
                                        is_direct=req.get("is_direct", False),
                                        preset=preset, name=req.get("name"))
        room = getattr(resp, "room_id", None)
        if not room:
            raise RuntimeError(f"create failed: {resp}")
        return {"room": room}
    if cmd == "invite":
        resp = await client.room_invite(req["room"], req["user"])
        if type(resp).__name__.endswith("Error"):
            raise RuntimeError(f"invite failed: {resp}")
        return {}
    if cmd == "read":
        resp = await client.room_read_markers(req["room"], req["event_id"], req["event_id"])
        if type(resp).__name__.endswith("Error"):
            raise RuntimeError(f"read markers failed: {resp}")
        return {}
    if cmd in ("set_name", "set_topic"):
        kind, key = ("m.room.name", "name") if cmd == "set_name" else ("m.room.topic", "topic")
        resp = await client.room_put_state(req["room"], kind, {key: req[key]})
        eid = getattr(resp, "event_id", None)
        if not eid:
            raise RuntimeError(f"{cmd} failed: {resp}")
        return {"event_id": eid}
    raise ValueError(f"unknown command {cmd!r}")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
