#!/usr/bin/env python3
"""Manual smoke check of dcpeer.py against the running test stack.

    deploy/stack.sh up --no-bridge        # a running bridge would consume the bridge INBOX
    eval "$(deploy/stack.sh env)"
    $COI_PYTHON tests/peers/dcpeer_smoke.py

alice and bob (two Delta Chat accounts in one dcpeer) share an unencrypted group with the
puppet xyz@bridge.example.test; alice sends, bob receives, reacts and quote-replies, alice
sees both and edits; every message must also land once in the bridge Maildir with
"Delivered-To: xyz@bridge.example.test". Exits non-zero on failure.
"""

import glob
import json
import os
import subprocess
import sys
import time
import uuid
from email.parser import BytesHeaderParser

HERE = os.path.dirname(os.path.abspath(__file__))
PUPPET = "xyz@bridge.example.test"


class Peer:
    def __init__(self):
        self.p = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "dcpeer.py")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        ready = json.loads(self.p.stdout.readline())
        assert ready.get("ready"), ready

    def __call__(self, cmd, **args):
        t0 = time.monotonic()
        self.p.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            raise SystemExit(f"dcpeer died during {cmd}")
        res = json.loads(line)
        print(f"  {cmd:14} {time.monotonic() - t0:6.2f} s  ok={res['ok']}", file=sys.stderr)
        if not res["ok"]:
            raise SystemExit(f"{cmd} failed: {res['error']}")
        return res

    def close(self):
        self("shutdown")
        self.p.wait(30)


def bridge_copies(maildir, mid):
    """Delivered-To values of the bridge Maildir files that carry Message-ID <mid>."""
    found = []
    for f in glob.glob(os.path.join(maildir, "new", "*")) + glob.glob(os.path.join(maildir, "cur", "*")):
        with open(f, "rb") as fh:
            h = BytesHeaderParser().parse(fh)
        if (h.get("Message-ID") or "").strip() == f"<{mid}>":
            found += h.get_all("Delivered-To") or []
    return found


def wait_for(pred, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = pred()
        if r:
            return r
        time.sleep(0.2)
    return pred()


def main():
    stack = os.environ.get("COI_STACK_DIR", "/var/tmp/coi-stack")
    maildir = os.environ.get("COI_BRIDGE_MAILDIR", f"{stack}/vmail/example.test/bridge/Maildir")
    tag = uuid.uuid4().hex[:8]
    t_start = time.monotonic()
    peer = Peer()
    try:
        alice = peer("add_account", addr="alice@example.test", password="alicepass", name="Alice")["account_id"]
        bob = peer("add_account", addr="bob@example.test", password="bobpass", name="Bob")["account_id"]
        group = f"Smoke {tag}"
        chat = peer("create_group", account_id=alice, name=group, members=[
            {"addr": "bob@example.test", "name": "Bob"}, {"addr": PUPPET, "name": "XYZ (Matrix)"}])["chat_id"]
        sent = peer("send_text", account_id=alice, chat_id=chat, text=f"hello {tag}", wait_sent=True)
        print(f"  alice sent {sent}", file=sys.stderr)

        got = peer("wait_messages", account_id=bob, chat_id=None, count=1, timeout=30)
        m = next(x for x in got["messages"] if x["text"] == f"hello {tag}")
        bchat = next(c for c in got["chats"] if c["chat_id"] == m["chat_id"])
        assert m["rfc724_mid"] == sent["rfc724_mid"], (m, sent)
        assert m["sender_addr"] == "alice@example.test" and m["sender_name"] == "Alice", m
        assert bchat["name"] == group, bchat
        assert sorted(bchat["members"]) == sorted(["alice@example.test", "bob@example.test", PUPPET]), bchat

        peer("send_reaction", account_id=bob, msg_id=m["msg_id"], emoji="👍")
        reply = peer("send_text", account_id=bob, chat_id=m["chat_id"], text=f"reply {tag}",
                     quote_msg_id=m["msg_id"], wait_sent=True)

        got = peer("wait_messages", account_id=alice, chat_id=chat, count=1, timeout=30)
        r = next(x for x in got["messages"] if x["text"] == f"reply {tag}")
        assert r["quote_text"] == f"hello {tag}" and r["quote_msg_id"] == sent["msg_id"], r
        assert r["sender_addr"] == "bob@example.test", r

        def reacted():
            msg = peer("get_message", account_id=alice, msg_id=sent["msg_id"])["message"]
            return msg["reactions"] == {"👍": ["bob@example.test"]} and msg

        assert wait_for(reacted), "reaction did not arrive at alice"

        peer("edit", account_id=alice, msg_id=sent["msg_id"], text=f"hello {tag} (edited)")
        got = peer("wait_messages", account_id=bob, chat_id=m["chat_id"], count=2, timeout=30)
        assert any(x["text"].endswith(f"hello {tag} (edited)") for x in got["messages"]), got["messages"]

        # one copy per puppet recipient in the bridge mailbox, Delivered-To = the puppet
        for mid in (sent["rfc724_mid"], reply["rfc724_mid"]):
            copies = wait_for(lambda: bridge_copies(maildir, mid), 10)
            assert copies == [PUPPET], (mid, copies)
        chats = peer("chat_list", account_id=bob)["chats"]
        assert any(c["name"] == group for c in chats), chats
    finally:
        peer.close()
    print(f"dcpeer smoke OK in {time.monotonic() - t_start:.1f} s (group {group})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
