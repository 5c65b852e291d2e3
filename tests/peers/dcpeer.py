#!/usr/bin/env python3
"""dcpeer: a Delta Chat test peer driven by JSON lines.

Run with the test venv (deploy/stack.sh env gives COI_PYTHON and COI_DCPEER):

    $COI_PYTHON tests/peers/dcpeer.py [ACCOUNTS_DIR]

ACCOUNTS_DIR (or env DCPEER_ACCOUNTS_DIR) holds the Delta Chat accounts; without it a
temporary directory is used and removed on exit. The deltachat-rpc-server next to this
interpreter is used (override: env DCPEER_RPC_SERVER).

Protocol: one JSON object per line on stdin -> one JSON object per line on stdout.
Requests are {"cmd": NAME, ...args}; an optional "id" is echoed back. Replies are
{"ok": true, ...results} or {"ok": false, "error": "..."}. Logs go to stderr only
(level: env DCPEER_LOG, default INFO; DEBUG also logs every core event).
EOF on stdin acts like {"cmd": "shutdown"}. On start one line {"ok": true, "ready": true,
"core_version": ...} is printed.

Commands (ids are Delta Chat ids of this peer's accounts, chats and messages):
  add_account   {addr, password, name, mdns_enabled=1} -> {account_id}
                explicit servers: IMAP 127.0.0.1:993 ssl, SMTP 127.0.0.1:465 ssl, invalid
                certs accepted; force_encryption=0. An existing account with the same addr
                (in a reused ACCOUNTS_DIR) is reused. Optional: imap_port/smtp_port/
                imap_security/smtp_security/server.
  create_group  {account_id, name, members: [{addr, name}]} -> {chat_id}   (unencrypted group)
  send_text     {account_id, chat_id, text, quote_msg_id?, override_sender_name?, file?,
                 wait_sent=false, timeout=30} -> {msg_id, rfc724_mid}
  send_reaction {account_id, msg_id, emoji} -> {msg_id, rfc724_mid}   (emoji "" removes it)
  edit          {account_id, msg_id, text} -> {}
  wait_messages {account_id, chat_id=null, count=1, timeout=30} -> {messages, chats}
                waits until >= count incoming (not own, not info) messages exist in that
                chat (any chat when chat_id is null), then returns all messages of it/them.
  chat_list     {account_id} -> {chats}
  get_message   {account_id, msg_id} -> {message}
  accept_chat   {account_id, chat_id} -> {}
  add_member / remove_member {account_id, chat_id, addr, name?} -> {}
  rename_group  {account_id, chat_id, name} -> {}
  ping -> {}
  shutdown -> {}   (stops IO and the rpc server, then exits)
message: {msg_id, chat_id, text, subject, sender_addr, sender_name, override_sender_name,
  is_outgoing, is_info, is_edited, quote_text, quote_msg_id, parent_id, rfc724_mid,
  reactions: {emoji: [addr]}, timestamp, state, show_padlock, view_type, file, file_name, error}
chat: {chat_id, name, members: [addr], past_members: [addr], is_contact_request,
  is_encrypted, chat_type}
"""

import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time

from deltachat_rpc_client import Rpc
from deltachat_rpc_client.rpc import JsonRpcError

log = logging.getLogger("dcpeer")

CONTACT_SELF = 1
CONTACT_LAST_SPECIAL = 9
# message states (deltachat core)
OUT_FAILED = 24
OUT_DELIVERED = 26
OUT_MDN_RCVD = 28


class PeerError(Exception):
    pass


class Peer:
    def __init__(self, rpc: Rpc):
        self.rpc = rpc
        self.changed = threading.Condition()
        self.generation = 0
        self.watched = set()
        self.addr_cache = {}

    # ------------------------------------------------------------ events

    def watch(self, acc):
        if acc in self.watched:
            return
        self.watched.add(acc)
        threading.Thread(target=self._events, args=(acc,), daemon=True, name=f"events-{acc}").start()

    def _events(self, acc):
        noisy = log.isEnabledFor(logging.DEBUG)
        while True:
            try:
                ev = self.rpc.wait_for_event(acc)
            except Exception:  # rpc closed
                return
            if ev is None:
                return
            kind = ev.get("kind")
            if kind in ("Error", "Warning", "ErrorSelfNotInGroup"):
                log.warning("account %s: %s: %s", acc, kind, ev.get("msg"))
            elif noisy:
                log.debug("account %s event %s", acc, json.dumps(ev, ensure_ascii=False))
            if kind in ("IncomingMsg", "MsgsChanged", "ReactionsChanged", "IncomingReaction",
                        "ChatModified", "MsgDelivered", "MsgFailed", "IncomingMsgBunch"):
                with self.changed:
                    self.generation += 1
                    self.changed.notify_all()

    def _wait_change(self, deadline, gen):
        with self.changed:
            if self.generation == gen:
                self.changed.wait(max(0.0, min(0.25, deadline - time.monotonic())))

    # ------------------------------------------------------------ helpers

    def self_addr(self, acc):
        return self.rpc.get_config(acc, "configured_addr") or self.rpc.get_config(acc, "addr")

    def contact_addr(self, acc, contact_id):
        if contact_id == CONTACT_SELF:
            return self.self_addr(acc)
        key = (acc, contact_id)
        if key not in self.addr_cache:
            self.addr_cache[key] = self.rpc.get_contact(acc, contact_id)["address"]
        return self.addr_cache[key]

    def chat_info(self, acc, chat_id):
        c = self.rpc.get_full_chat_by_id(acc, chat_id)
        return {
            "chat_id": c["id"],
            "name": c["name"],
            "members": [self.contact_addr(acc, i) for i in c["contactIds"]],
            "past_members": [self.contact_addr(acc, i) for i in c.get("pastContactIds") or []],
            "is_contact_request": c["isContactRequest"],
            "is_encrypted": c["isEncrypted"],
            "chat_type": c["chatType"],
        }

    def message_info(self, acc, msg_id):
        m = self.rpc.get_message(acc, msg_id)
        quote = m.get("quote") or {}
        reactions = {}
        r = m.get("reactions") or {}
        for contact_id, emojis in (r.get("reactionsByContact") or {}).items():
            addr = self.contact_addr(acc, int(contact_id))
            for e in emojis:
                reactions.setdefault(e, []).append(addr)
        try:
            mid = self.rpc.get_message_info_object(acc, msg_id)["rfc724Mid"]
        except JsonRpcError:
            mid = None
        sender = m.get("sender") or {}
        return {
            "msg_id": m["id"],
            "chat_id": m["chatId"],
            "text": m["text"],
            "subject": m.get("subject"),
            "sender_addr": sender.get("address"),
            "sender_name": sender.get("displayName"),
            "override_sender_name": m.get("overrideSenderName"),
            "is_outgoing": m["fromId"] == CONTACT_SELF,
            "is_info": m["isInfo"],
            "is_edited": m.get("isEdited", False),
            "quote_text": quote.get("text"),
            "quote_msg_id": quote.get("messageId"),
            "parent_id": m.get("parentId"),
            "rfc724_mid": mid,
            "reactions": reactions,
            "timestamp": m["timestamp"],
            "state": m["state"],
            "show_padlock": m["showPadlock"],
            "view_type": m["viewType"],
            "file": m.get("file"),
            "file_name": m.get("fileName"),
            "error": m.get("error"),
        }

    def all_chat_ids(self, acc):
        ids = []
        for cid in self.rpc.get_chatlist_entries(acc, None, None, None):
            if cid <= CONTACT_LAST_SPECIAL:  # special chat ids (trash, archived link, ...)
                continue
            c = self.rpc.get_basic_chat_info(acc, cid)
            if c.get("isDeviceChat") or c.get("isSelfTalk"):
                continue
            ids.append(cid)
        return ids

    def accept_if_request(self, acc, chat_id):
        if self.rpc.get_basic_chat_info(acc, chat_id).get("isContactRequest"):
            log.info("account %s: accepting contact request chat %s", acc, chat_id)
            self.rpc.accept_chat(acc, chat_id)

    def contact_id(self, acc, addr, name=None):
        return self.rpc.create_contact(acc, addr, name)

    # ------------------------------------------------------------ commands

    def cmd_ping(self, req):
        return {}

    def cmd_add_account(self, req):
        addr = req["addr"]
        for acc in self.rpc.get_all_account_ids():
            if self.rpc.is_configured(acc) and self.self_addr(acc) == addr:
                break
        else:
            acc = None
        created = acc is None
        if created:
            acc = self.rpc.add_account()
        self.watch(acc)
        self.rpc.set_config(acc, "displayname", req.get("name") or addr.split("@")[0])
        self.rpc.set_config(acc, "force_encryption", "0")
        self.rpc.set_config(acc, "mdns_enabled", str(int(req.get("mdns_enabled", 1))))
        server = req.get("server", "127.0.0.1")
        params = {
            "addr": addr,
            "password": req["password"],
            "imapServer": server,
            "imapPort": int(req.get("imap_port", 993)),
            "imapSecurity": req.get("imap_security", "ssl"),
            "smtpServer": server,
            "smtpPort": int(req.get("smtp_port", 465)),
            "smtpSecurity": req.get("smtp_security", "ssl"),
            "certificateChecks": "acceptInvalidCertificates",
        }
        t0 = time.monotonic()
        try:
            self.rpc.add_or_update_transport(acc, params)
        except Exception:
            if created:  # do not leave a half-configured account behind
                self.rpc.remove_account(acc)
            raise
        self.rpc.start_io(acc)
        log.info("account %s configured as %s in %.2f s", acc, addr, time.monotonic() - t0)
        return {"account_id": acc}

    def cmd_create_group(self, req):
        acc = req["account_id"]
        me = self.self_addr(acc)
        chat_id = self.rpc.create_group_chat_unencrypted(acc, req["name"])
        for m in req.get("members", []):
            if isinstance(m, str):
                m = {"addr": m}
            if m["addr"].lower() == (me or "").lower():
                continue
            self.rpc.add_contact_to_chat(acc, chat_id, self.contact_id(acc, m["addr"], m.get("name")))
        return {"chat_id": chat_id}

    def cmd_send_text(self, req):
        acc, chat_id = req["account_id"], req["chat_id"]
        self.accept_if_request(acc, chat_id)
        data = {"text": req["text"]}
        if req.get("quote_msg_id") is not None:
            data["quotedMessageId"] = req["quote_msg_id"]
        if req.get("override_sender_name"):
            data["overrideSenderName"] = req["override_sender_name"]
        if req.get("file"):
            data["file"] = req["file"]
        msg_id = self.rpc.send_msg(acc, chat_id, data)
        if req.get("wait_sent"):
            self._wait_sent(acc, msg_id, float(req.get("timeout", 30)))
        mid = self.rpc.get_message_info_object(acc, msg_id)["rfc724Mid"]
        return {"msg_id": msg_id, "rfc724_mid": mid}

    def _wait_sent(self, acc, msg_id, timeout):
        deadline = time.monotonic() + timeout
        while True:
            gen = self.generation
            m = self.rpc.get_message(acc, msg_id)
            if m["state"] in (OUT_DELIVERED, OUT_MDN_RCVD):
                return
            if m["state"] == OUT_FAILED:
                raise PeerError(f"sending message {msg_id} failed: {m.get('error')}")
            if time.monotonic() >= deadline:
                raise PeerError(f"message {msg_id} not sent within {timeout} s (state {m['state']})")
            self._wait_change(deadline, gen)

    def cmd_send_reaction(self, req):
        acc, msg_id = req["account_id"], req["msg_id"]
        self.accept_if_request(acc, self.rpc.get_message(acc, msg_id)["chatId"])
        emoji = req.get("emoji", "")
        rid = self.rpc.send_reaction(acc, msg_id, [emoji] if emoji else [])
        try:
            mid = self.rpc.get_message_info_object(acc, rid)["rfc724Mid"]
        except JsonRpcError:
            mid = None
        return {"msg_id": rid, "rfc724_mid": mid}

    def cmd_edit(self, req):
        self.rpc.send_edit_request(req["account_id"], req["msg_id"], req["text"])
        return {}

    def cmd_wait_messages(self, req):
        acc = req["account_id"]
        chat_id = req.get("chat_id")
        count = int(req.get("count", 1))
        timeout = float(req.get("timeout", 30))
        deadline = time.monotonic() + timeout
        while True:
            gen = self.generation
            chats = [chat_id] if chat_id is not None else self.all_chat_ids(acc)
            msg_ids = []
            for cid in chats:
                msg_ids.extend(self.rpc.get_message_ids(acc, cid, False, False))
            incoming = 0
            if msg_ids:
                snaps = self.rpc.get_messages(acc, msg_ids)
                incoming = sum(
                    1 for s in snaps.values()
                    if s.get("fromId", 0) > CONTACT_LAST_SPECIAL and not s.get("isInfo")
                )
            if incoming >= count:
                return {
                    "messages": [self.message_info(acc, i) for i in msg_ids],
                    "chats": [self.chat_info(acc, c) for c in chats],
                }
            if time.monotonic() >= deadline:
                raise PeerError(f"timeout after {timeout} s: {incoming} of {count} incoming messages")
            self._wait_change(deadline, gen)

    def cmd_chat_list(self, req):
        acc = req["account_id"]
        return {"chats": [self.chat_info(acc, c) for c in self.all_chat_ids(acc)]}

    def cmd_get_message(self, req):
        return {"message": self.message_info(req["account_id"], req["msg_id"])}

    def cmd_accept_chat(self, req):
        self.rpc.accept_chat(req["account_id"], req["chat_id"])
        return {}

    def cmd_add_member(self, req):
        acc = req["account_id"]
        self.rpc.add_contact_to_chat(acc, req["chat_id"], self.contact_id(acc, req["addr"], req.get("name")))
        return {}

    def cmd_remove_member(self, req):
        acc = req["account_id"]
        self.rpc.remove_contact_from_chat(acc, req["chat_id"], self.contact_id(acc, req["addr"]))
        return {}

    def cmd_rename_group(self, req):
        self.rpc.set_chat_name(req["account_id"], req["chat_id"], req["name"])
        return {}


def main():
    logging.basicConfig(
        stream=sys.stderr,
        level=os.environ.get("DCPEER_LOG", "INFO").upper(),
        format="%(asctime)s dcpeer %(levelname)s %(message)s",
    )
    accounts_dir = (sys.argv[1] if len(sys.argv) > 1 else None) or os.environ.get("DCPEER_ACCOUNTS_DIR")
    tmp = None
    if not accounts_dir:
        tmp = tempfile.mkdtemp(prefix="dcpeer-")
        accounts_dir = os.path.join(tmp, "accounts")
    server = os.environ.get("DCPEER_RPC_SERVER")
    if not server:
        candidate = os.path.join(os.path.dirname(sys.executable), "deltachat-rpc-server")
        server = candidate if os.access(candidate, os.X_OK) else "deltachat-rpc-server"
    # the rpc server's stderr goes to ours (an unread pipe could fill up and block it)
    rpc = Rpc(accounts_dir=accounts_dir, rpc_server_path=server, stderr=sys.stderr)
    out = sys.stdout

    def reply(obj):
        out.write(json.dumps(obj, ensure_ascii=False) + "\n")
        out.flush()

    try:
        rpc.start()
        peer = Peer(rpc)
        for acc in rpc.get_all_account_ids():  # reused accounts dir
            if rpc.is_configured(acc):
                peer.watch(acc)
                rpc.start_io(acc)
        info = rpc.get_system_info()
        log.info("ready, accounts in %s, core %s", accounts_dir, info.get("deltachat_core_version"))
        reply({"ok": True, "ready": True, "core_version": info.get("deltachat_core_version"),
               "accounts_dir": accounts_dir})
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            rid = None
            try:
                req = json.loads(line)
                rid = req.get("id")
                cmd = req.get("cmd")
                if cmd == "shutdown":
                    reply({"ok": True, **({"id": rid} if rid is not None else {})})
                    break
                handler = getattr(peer, f"cmd_{cmd}", None)
                if handler is None:
                    raise PeerError(f"unknown cmd {cmd!r}")
                t0 = time.monotonic()
                res = {"ok": True, **handler(req)}
                log.info("%s done in %.2f s", cmd, time.monotonic() - t0)
            except KeyError as e:
                res = {"ok": False, "error": f"missing argument {e}"}
            except JsonRpcError as e:
                err = e.args[0] if e.args else e
                res = {"ok": False, "error": err.get("message", str(err)) if isinstance(err, dict) else str(err)}
            except Exception as e:  # noqa: BLE001 - report everything to the driver
                log.exception("command failed")
                res = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            if rid is not None:
                res["id"] = rid
            if not res["ok"]:
                log.warning("%s", res["error"])
            reply(res)
    finally:
        try:
            rpc.close()
        except Exception:  # noqa: BLE001
            log.exception("closing the rpc server")
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
