//! One whole conversation across every real part: the production binary (`coi-bridge run`, SQLite,
//! IMAP ingest, SMTP out, appservice listener), Postfix + Dovecot, Synapse, matrix-nio as the
//! Matrix people (alice, dan) and plain SMTP / Maildir as the email person (bob).
//!
//! Covers: `create` from the management room (the member-added mail reaches bob through Postfix),
//! text, replies, an image each way (bytes compared), edits, reactions and deletions both ways,
//! room name and topic → email, membership both ways (a Matrix person joins and leaves; an email
//! member is added and removed), and SIGKILL of the bridge process with messages in flight on
//! both sides (nothing lost, Matrix never doubled, email at most one repeat with the same
//! Message-ID — SMTP has no idempotency key).
//!
//! Gated: needs the stack (`COI_TEST_STACK=1`) and Synapse (`COI_TEST_SYNAPSE=1`); deploy/test.sh
//! sets both.
//!
//!     bash deploy/test.sh --test matrix_email -- --nocapture
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod matrix_support;
mod support;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use coi_side::codec::{ParseLimits, ParsedEmail, parse};
use matrix_support::{ListenerLock, Peer, synapse_enabled, synapse_env};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};
use support::{Hub, Ingest, maildir, send_raw, stack, tag, tail};

const BOB: &str = "bob@example.test";
const CAROL: &str = "carol@example.test";
const T: u64 = 60;

/// The JPEG of the Delta Chat 2.65 image fixture.
fn photo() -> Vec<u8> {
    let raw =
        std::fs::read(support_repo().join("coi-side/testdata/deltachat-2.65/06-alice-image.eml"))
            .unwrap();
    let p = parse(&raw, &ParseLimits::default()).unwrap();
    let a = p
        .attachments
        .into_iter()
        .find(|a| a.mime_type == "image/jpeg")
        .expect("the fixture's jpeg");
    a.data
}

fn support_repo() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Bob's mails from the bridge, parsed (newest last is not guaranteed: Maildir order).
fn bob_mails(stack: &Path, tag: &str) -> Vec<ParsedEmail> {
    user_mails(stack, "bob", tag)
}

/// A local user's mails that mention this run's tag, parsed.
fn user_mails(stack: &Path, user: &str, tag: &str) -> Vec<ParsedEmail> {
    maildir(stack, user)
        .into_iter()
        .filter(|m| String::from_utf8_lossy(m).contains(tag))
        .filter_map(|m| parse(&m, &ParseLimits::default()).ok())
        .collect()
}

/// Waits for a mail in bob's Maildir (of this run's chat) that satisfies `pred`.
fn wait_bob(
    hub: &Hub,
    stack: &Path,
    tag: &str,
    what: &str,
    pred: impl Fn(&ParsedEmail) -> bool,
) -> ParsedEmail {
    wait_mail(hub, stack, "bob", tag, what, pred)
}

/// Waits for a mail in a local user's Maildir (of this run's chat) that satisfies `pred`.
fn wait_mail(
    hub: &Hub,
    stack: &Path,
    user: &str,
    tag: &str,
    what: &str,
    pred: impl Fn(&ParsedEmail) -> bool,
) -> ParsedEmail {
    let start = Instant::now();
    loop {
        if let Some(m) = user_mails(stack, user, tag).into_iter().find(|m| pred(m)) {
            return m;
        }
        assert!(
            start.elapsed() < Duration::from_secs(T),
            "timed out waiting for {what} in {user}'s mailbox\n--- bridge log tail:\n{}",
            tail(&hub.log(), 80)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Bob sends a Delta Chat-style mail to the chat through Postfix.
async fn from_bob(group: &str, to: &[&str], msg_id: &str, extra_headers: &str, body: &str) {
    send_raw(BOB, to, &bob_mail(group, to, msg_id, extra_headers, body)).await;
}

/// A Delta Chat-style mail from bob to the chat (group name carries the run's tag).
fn bob_mail(group: &str, to: &[&str], msg_id: &str, extra_headers: &str, body: &str) -> String {
    format!(
        "From: \"Bob\" <{BOB}>\r\nTo: {}\r\nSubject: {group}\r\nMessage-ID: <{msg_id}>\r\nDate: {}\r\nChat-Version: 1.0\r\nChat-Group-Name: {group}\r\n{extra_headers}MIME-Version: 1.0\r\n{body}",
        to.iter()
            .map(|a| format!("<{a}>"))
            .collect::<Vec<_>>()
            .join(", "),
        support::rfc2822_now(),
    )
}

fn text_body(text: &str) -> String {
    format!("Content-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n")
}

fn is_from(v: &Value, sender: &str, room: &str) -> bool {
    v["sender"] == sender && v["room"] == room
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conversation_across_real_matrix_and_email() {
    let Some(stack) = stack() else { return };
    if !synapse_enabled() {
        return;
    }
    let _mail = support::lock().await;
    let _listener = ListenerLock::take().await;
    let env = synapse_env();
    let hs = env["COI_MATRIX_HS_URL"].clone();
    let python = env["COI_PYTHON"].clone();
    let tag = tag();
    let group = format!("Trip {tag}");

    let mut hub = Hub::with_matrix(Ingest::Imap, &env);
    hub.skip_existing_mail(None).await;
    hub.start();
    support::wait_listening(env["COI_MATRIX_AS_URL"].trim_start_matches("http://"));

    let mut alice = Peer::start(&python, &hs, "@alice:matrix.test", "alicepass").await;
    let bot = format!("@{}:matrix.test", env["COI_MATRIX_BOT"]);

    // 1. Management room and `create`: the portal opens and bob gets the member-added mail.
    let dm = alice
        .cmd(json!({"cmd": "create_room", "is_direct": true, "preset": "trusted_private_chat", "invite": [bot]}))
        .await["room"]
        .as_str()
        .unwrap()
        .to_owned();
    alice
        .wait(
            "the bot's greeting",
            |v| is_from(v, &bot, &dm) && v["event"] == "message",
            T,
        )
        .await;
    let t_create = Instant::now();
    alice
        .cmd(json!({"cmd": "send", "room": dm, "body": format!("create {group} {BOB}")}))
        .await;
    let invite = alice
        .wait(
            "the portal invite",
            |v| v["event"] == "invite" && v["room"] != dm.as_str(),
            T,
        )
        .await;
    let room = invite["room"].as_str().unwrap().to_owned();
    alice.cmd(json!({"cmd": "join", "room": room})).await;
    let added = wait_bob(&hub, &stack, &tag, "the member-added mail", |m| {
        m.group.member_added.as_deref() == Some(BOB)
    });
    eprintln!(
        "create -> member-added mail at bob in {:?}",
        t_create.elapsed()
    );
    let alice_addr = added.from.as_ref().unwrap().addr.clone();
    assert!(
        alice_addr.ends_with("@bridge.example.test") && alice_addr.contains("alice"),
        "alice's puppet address: {alice_addr}"
    );
    assert_eq!(added.group.name.as_deref(), Some(group.as_str()));

    // 2. Alice writes; bob gets a mail from her puppet address.
    let hello_text = format!("hello bob {tag}");
    let hello_ev = alice
        .cmd(json!({"cmd": "send", "room": room, "body": hello_text}))
        .await["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let hello = wait_bob(&hub, &stack, &tag, "alice's hello", |m| {
        m.text.contains(&hello_text)
    });
    assert_eq!(hello.from.as_ref().unwrap().addr, alice_addr);
    let hello_mid = hello.message_id.clone().unwrap();
    // Formatted text reaches email as a sanitised text/html alternative.
    alice
        .cmd(json!({"cmd": "send", "room": room, "body": format!("bold {tag}"),
                    "html": format!("<b>bold</b> {tag}<script>alert(1)</script><img src=\"https://tracker.example/p.gif\">")}))
        .await;
    let formatted = wait_bob(&hub, &stack, &tag, "alice's formatted message", |m| {
        m.text.contains("bold") && m.html.is_some()
    });
    let html = formatted.html.unwrap();
    assert!(html.contains("<b>bold</b>"), "{html}");
    assert!(
        !html.contains("script") && !html.contains("tracker"),
        "{html}"
    );

    // 3. Bob answers with a quote-reply (top quote + In-Reply-To, as Delta Chat sends one; In-Reply-To
    //    alone only threads) and a photo; alice sees the text as a reply and the image, whose bytes
    //    she downloads through the authenticated media API.
    let jpeg = photo();
    let bob_mid = format!("{tag}.photo@example.test");
    let boundary = format!("b-{tag}");
    let body = format!(
        "Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n> {hello_text}\r\n\r\nnice! here is the view\r\n--{boundary}\r\nContent-Type: image/jpeg\r\nContent-Disposition: attachment; filename=\"view.jpg\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--{boundary}--\r\n",
        B64.encode(&jpeg)
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\r\n")
    );
    let irt = format!("In-Reply-To: <{hello_mid}>\r\nReferences: <{hello_mid}>\r\n");
    from_bob(&group, &[&alice_addr], &bob_mid, &irt, &body).await;
    let ghost = "@_coi_bob=40example.test:matrix.test";
    let text = alice
        .wait(
            "bob's reply",
            |v| is_from(v, ghost, &room) && v["body"] == "nice! here is the view",
            T,
        )
        .await;
    assert_eq!(
        text["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        hello_ev.as_str(),
        "{text}"
    );
    let bob_text_ev = text["event_id"].as_str().unwrap().to_owned();
    let img = alice
        .wait(
            "bob's photo",
            |v| is_from(v, ghost, &room) && v["content"]["msgtype"] == "m.image",
            T,
        )
        .await;
    assert_eq!(img["content"]["body"], "view.jpg");
    assert_eq!(img["content"]["info"]["mimetype"], "image/jpeg");
    assert_eq!(img["content"]["info"]["size"], jpeg.len());
    assert!(
        img["content"]["info"]["w"].as_u64().unwrap_or(0) > 0,
        "{img}"
    );
    let got = alice
        .cmd(json!({"cmd": "download", "url": img["content"]["url"]}))
        .await;
    assert_eq!(
        B64.decode(got["data_b64"].as_str().unwrap()).unwrap(),
        jpeg,
        "the photo arrives byte for byte"
    );

    // 4. Alice sends a picture back, as a reply to bob's text; bob gets the same bytes, threaded.
    let mut back = jpeg.clone();
    back.extend_from_slice(tag.as_bytes()); // JPEG readers ignore trailing bytes; makes it unique
    let sent = alice
        .cmd(
            json!({"cmd": "send_file", "room": room, "data_b64": B64.encode(&back),
                    "filename": "back.jpg", "mimetype": "image/jpeg", "msgtype": "m.image",
                    "reply_to": bob_text_ev}),
        )
        .await;
    let alice_img_ev = sent["event_id"].as_str().unwrap().to_owned();
    let pic = wait_bob(&hub, &stack, &tag, "alice's picture", |m| {
        m.attachments
            .iter()
            .any(|a| a.filename.as_deref() == Some("back.jpg"))
    });
    let att = pic
        .attachments
        .iter()
        .find(|a| a.filename.as_deref() == Some("back.jpg"))
        .unwrap();
    assert_eq!(att.mime_type, "image/jpeg");
    assert_eq!(att.data, back, "the picture arrives byte for byte");
    assert!(pic.in_reply_to.contains(&bob_mid), "{:?}", pic.in_reply_to);
    let pic_mid = pic.message_id.clone().unwrap();

    // 5. Alice edits her hello, reacts to bob's text and deletes her picture.
    alice
        .cmd(json!({"cmd": "edit", "room": room, "target": hello_ev, "body": format!("{hello_text} (edited)")}))
        .await;
    let edit = wait_bob(&hub, &stack, &tag, "alice's edit", |m| {
        m.chat_edit.is_some()
    });
    assert_eq!(edit.chat_edit.as_deref(), Some(hello_mid.as_str()));
    assert!(edit.text.contains("(edited)"), "{}", edit.text);
    let thumbs = alice
        .cmd(json!({"cmd": "react", "room": room, "target": bob_text_ev, "key": "👍"}))
        .await["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let reaction = wait_bob(&hub, &stack, &tag, "alice's reaction", |m| {
        m.reaction.as_deref() == Some("👍")
    });
    assert!(reaction.in_reply_to.contains(&bob_mid));
    // Redacting her reaction takes it back: an empty RFC 9078 reaction.
    alice
        .cmd(json!({"cmd": "redact", "room": room, "target": thumbs}))
        .await;
    let undo = wait_bob(&hub, &stack, &tag, "alice taking her reaction back", |m| {
        m.reaction.as_deref() == Some("")
    });
    assert!(undo.in_reply_to.contains(&bob_mid));
    alice
        .cmd(json!({"cmd": "redact", "room": room, "target": alice_img_ev}))
        .await;
    let delete = wait_bob(&hub, &stack, &tag, "alice's deletion", |m| {
        !m.chat_delete.is_empty()
    });
    assert_eq!(delete.chat_delete, vec![pic_mid.clone()]);

    // 6. Bob reacts to alice's hello, edits his text and deletes it; alice sees each on Matrix.
    let to = [alice_addr.as_str()];
    from_bob(
        &group,
        &to,
        &format!("{tag}.react@example.test"),
        &format!("In-Reply-To: <{hello_mid}>\r\n"),
        "Content-Type: text/plain; charset=utf-8\r\nContent-Disposition: reaction\r\n\r\n❤️\r\n",
    )
    .await;
    let r = alice
        .wait(
            "bob's reaction",
            |v| is_from(v, ghost, &room) && v["type"] == "m.reaction",
            T,
        )
        .await;
    assert_eq!(r["content"]["m.relates_to"]["event_id"], hello_ev.as_str());
    assert_eq!(r["content"]["m.relates_to"]["key"], "❤️");
    // Bob changes his mind (email: one reaction per person): the ghost's ❤️ goes, 👍 comes.
    from_bob(
        &group,
        &to,
        &format!("{tag}.react2@example.test"),
        &format!("In-Reply-To: <{hello_mid}>\r\n"),
        "Content-Type: text/plain; charset=utf-8\r\nContent-Disposition: reaction\r\n\r\n👍\r\n",
    )
    .await;
    let heart = r["event_id"].as_str().unwrap().to_owned();
    alice
        .wait(
            "the ghost taking the ❤️ back",
            |v| {
                is_from(v, ghost, &room)
                    && v["type"] == "m.room.redaction"
                    && v["redacts"] == heart.as_str()
            },
            T,
        )
        .await;
    let r2 = alice
        .wait(
            "bob's new reaction",
            |v| is_from(v, ghost, &room) && v["type"] == "m.reaction",
            T,
        )
        .await;
    assert_eq!(r2["content"]["m.relates_to"]["key"], "👍");
    from_bob(
        &group,
        &to,
        &format!("{tag}.edit@example.test"),
        &format!("Chat-Edit: <{bob_mid}>\r\nIn-Reply-To: <{bob_mid}>\r\n"),
        &text_body("✏️nice! here is the view from the top"),
    )
    .await;
    let e = alice
        .wait(
            "bob's edit",
            |v| is_from(v, ghost, &room) && v["content"]["m.relates_to"]["rel_type"] == "m.replace",
            T,
        )
        .await;
    assert_eq!(
        e["content"]["m.relates_to"]["event_id"],
        bob_text_ev.as_str()
    );
    assert_eq!(
        e["content"]["m.new_content"]["body"],
        "nice! here is the view from the top"
    );
    from_bob(
        &group,
        &to,
        &format!("{tag}.del@example.test"),
        &format!("Chat-Delete: <{bob_mid}>\r\n"),
        &text_body("🚮"),
    )
    .await;
    let d = alice
        .wait(
            "bob's deletion",
            |v| is_from(v, ghost, &room) && v["type"] == "m.room.redaction",
            T,
        )
        .await;
    assert_eq!(d["redacts"], bob_text_ev.as_str(), "{d}");

    // 7. Room name and topic reach email.
    let new_name = format!("Trip {tag} (renamed)");
    alice
        .cmd(json!({"cmd": "set_name", "room": room, "name": new_name}))
        .await;
    let renamed = wait_bob(&hub, &stack, &tag, "the rename", |m| {
        m.group.name.as_deref() == Some(new_name.as_str())
    });
    assert_eq!(
        renamed.group.name_changed_from.as_deref(),
        Some(group.as_str()),
        "Chat-Group-Name-Changed carries the old name"
    );
    let topic = format!("Where we go {tag}");
    alice
        .cmd(json!({"cmd": "set_topic", "room": room, "topic": topic}))
        .await;
    wait_bob(&hub, &stack, &tag, "the topic", |m| {
        m.group.description.as_deref() == Some(topic.as_str()) || m.text.contains(&topic)
    });

    // 8. Membership: dan (Matrix) joins and leaves; bob adds and removes carol (email).
    let mut dan = Peer::start(&python, &hs, "@dan:matrix.test", "danpass").await;
    alice
        .cmd(json!({"cmd": "invite", "room": room, "user": "@dan:matrix.test"}))
        .await;
    dan.wait(
        "dan's invite",
        |v| v["event"] == "invite" && v["room"] == room.as_str(),
        T,
    )
    .await;
    dan.cmd(json!({"cmd": "join", "room": room})).await;
    let dan_added = wait_bob(&hub, &stack, &tag, "dan's member-added mail", |m| {
        m.group
            .member_added
            .as_deref()
            .is_some_and(|a| a.contains("dan"))
    });
    let dan_addr = dan_added.group.member_added.clone().unwrap();
    dan.cmd(json!({"cmd": "leave", "room": room})).await;
    wait_bob(&hub, &stack, &tag, "dan's member-removed mail", |m| {
        m.group.member_removed.as_deref() == Some(dan_addr.as_str())
    });
    let _ = dan.cmd(json!({"cmd": "shutdown"})).await;

    // As Delta Chat does, later mails carry the chat's current name and reference its thread.
    let thread = format!("In-Reply-To: <{hello_mid}>\r\nReferences: <{hello_mid}>\r\n");
    let to_carol = [alice_addr.as_str(), CAROL];
    from_bob(
        &new_name,
        &to_carol,
        &format!("{tag}.add@example.test"),
        &format!("Chat-Group-Member-Added: {CAROL}\r\n{thread}"),
        &text_body(&format!("Member {CAROL} added by {BOB}.")),
    )
    .await;
    let carol_ghost = "@_coi_carol=40example.test:matrix.test";
    let joined = alice
        .wait_member("carol's ghost joining", &room, carol_ghost, "join", T)
        .await;
    // The ghost is named by the template (no name known: the address) before it joins.
    assert_eq!(
        joined["content"]["displayname"], "carol@example.test (email)",
        "{joined}"
    );
    from_bob(
        &new_name,
        &to_carol,
        &format!("{tag}.rm@example.test"),
        &format!("Chat-Group-Member-Removed: {CAROL}\r\n{thread}"),
        &text_body(&format!("Member {CAROL} removed by {BOB}.")),
    )
    .await;
    alice
        .wait_member("carol's ghost leaving", &room, carol_ghost, "leave", T)
        .await;

    // 8b. Inviting a ghost adds its email person: carol's ghost invited back into the portal.
    alice
        .cmd(json!({"cmd": "invite", "room": room, "user": carol_ghost}))
        .await;
    wait_mail(
        &hub,
        &stack,
        "carol",
        &tag,
        "carol's member-added mail",
        |m| {
            m.group.member_added.as_deref() == Some(CAROL)
                && m.from.as_ref().is_some_and(|f| f.addr == alice_addr)
        },
    );
    alice
        .wait_member(
            "carol's ghost accepting the invite",
            &room,
            carol_ghost,
            "join",
            T,
        )
        .await;
    // 8c. A DM with a ghost is a new chat with that email person, both ways.
    let dm_bob = alice
        .cmd(
            json!({"cmd": "create_room", "is_direct": true, "preset": "trusted_private_chat",
                    "name": format!("Just us {tag}"), "invite": [ghost]}),
        )
        .await["room"]
        .as_str()
        .unwrap()
        .to_owned();
    alice
        .wait_member("bob's ghost joining the DM", &dm_bob, ghost, "join", T)
        .await;
    alice
        .cmd(json!({"cmd": "send", "room": dm_bob, "body": format!("just between us {tag}")}))
        .await;
    let private = wait_bob(&hub, &stack, &tag, "alice's DM", |m| {
        m.text.contains("just between us")
    });
    assert_eq!(
        private.group.name.as_deref(),
        Some(format!("Just us {tag}").as_str())
    );
    let private_mid = private.message_id.clone().unwrap();
    let to_dm = [alice_addr.as_str()];
    from_bob(
        &format!("Just us {tag}"),
        &to_dm,
        &format!("{tag}.dm@example.test"),
        &format!("In-Reply-To: <{private_mid}>\r\nReferences: <{private_mid}>\r\n"),
        &text_body("sure, just us"),
    )
    .await;
    alice
        .wait(
            "bob's answer in the DM",
            |v| is_from(v, ghost, &dm_bob) && v["body"] == "sure, just us",
            T,
        )
        .await;

    // 9. `invite` in the portal room: dave gets the member-added mail through Postfix.
    alice
        .cmd(json!({"cmd": "send", "room": room, "body": "!coi invite dave@example.test"}))
        .await;
    let dave_added = wait_mail(
        &hub,
        &stack,
        "dave",
        &tag,
        "dave's member-added mail",
        |m| m.group.member_added.as_deref() == Some("dave@example.test"),
    );
    assert_eq!(dave_added.from.as_ref().unwrap().addr, alice_addr);
    assert_eq!(dave_added.group.name.as_deref(), Some(new_name.as_str()));

    // Dave's ghost never existed on Matrix: inviting it makes Synapse ask the bridge (user query),
    // which creates it; the ghost joins (dave is a member already: no second mail).
    let dave_ghost = "@_coi_dave=40example.test:matrix.test";
    alice
        .cmd(json!({"cmd": "invite", "room": room, "user": dave_ghost}))
        .await;
    alice
        .wait_member(
            "dave's ghost accepting the invite",
            &room,
            dave_ghost,
            "join",
            T,
        )
        .await;

    // 10. Read receipts. Bob asks for one (Delta Chat's header); alice reads his message in
    //     Matrix; bob gets an MDN from her address naming his mail.
    let ask_mid = format!("{tag}.ask@example.test");
    from_bob(
        &new_name,
        &to,
        &ask_mid,
        &format!("Chat-Disposition-Notification-To: {BOB}\r\n{thread}"),
        &text_body("did you read this?"),
    )
    .await;
    let ask = alice
        .wait(
            "bob's question",
            |v| is_from(v, ghost, &room) && v["body"] == "did you read this?",
            T,
        )
        .await;
    alice
        .cmd(json!({"cmd": "read", "room": room, "event_id": ask["event_id"]}))
        .await;
    let mdn = wait_bob(&hub, &stack, &tag, "the MDN for bob's question", |m| {
        m.mdn
            .as_ref()
            .is_some_and(|d| d.original_message_ids.contains(&ask_mid))
    });
    assert_eq!(mdn.from.as_ref().unwrap().addr, alice_addr);
    // And back: bob's mail client reports alice's hello as read; alice sees bob's ghost's receipt.
    let report = format!(
        "From: \"Bob\" <{BOB}>\r\nTo: <{alice_addr}>\r\nSubject: Receipt Notification\r\nMessage-ID: <{tag}.mdn@example.test>\r\nDate: {}\r\nChat-Version: 1.0\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=disposition-notification; boundary=\"r-{tag}\"\r\n\r\n--r-{tag}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThis is a receipt notification.\r\n--r-{tag}\r\nContent-Type: message/disposition-notification\r\n\r\nOriginal-Recipient: rfc822;{BOB}\r\nFinal-Recipient: rfc822;{BOB}\r\nOriginal-Message-ID: <{hello_mid}>\r\nDisposition: manual-action/MDN-sent-automatically; displayed\r\n\r\n--r-{tag}--\r\n",
        support::rfc2822_now()
    );
    send_raw(BOB, &to, &report).await;
    alice
        .wait(
            "bob's read receipt",
            |v| v["event"] == "receipt" && v["user"] == ghost && v["event_id"] == hello_ev.as_str(),
            T,
        )
        .await;

    // 11. SIGKILL with messages in flight both ways, then a restart.
    const N: usize = 5;
    for i in 0..N {
        alice
            .cmd(json!({"cmd": "send", "room": room, "body": format!("inflight-m{i} {tag}")}))
            .await;
        from_bob(
            &new_name,
            &to,
            &format!("{tag}.inflight{i}@example.test"),
            &thread,
            &text_body(&format!("inflight-e{i} {tag}")),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    hub.kill();
    eprintln!("bridge killed with SIGKILL");
    // While it is down, both sides keep talking.
    for i in N..2 * N {
        alice
            .cmd(json!({"cmd": "send", "room": room, "body": format!("inflight-m{i} {tag}")}))
            .await;
        from_bob(
            &new_name,
            &to,
            &format!("{tag}.inflight{i}@example.test"),
            &thread,
            &text_body(&format!("inflight-e{i} {tag}")),
        )
        .await;
    }
    hub.start();
    let t_restart = Instant::now();
    // Matrix: every email message exactly once (deterministic txn ids make retries idempotent).
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    while seen.len() < 2 * N {
        let v = alice
            .wait(
                "the in-flight email messages",
                |v| {
                    is_from(v, ghost, &room)
                        && v["body"]
                            .as_str()
                            .is_some_and(|b| b.starts_with("inflight-e"))
                },
                T,
            )
            .await;
        *seen
            .entry(v["body"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    // Email: every Matrix message arrives; a repeat can only be the one mail in flight at the kill.
    let want: Vec<String> = (0..2 * N).map(|i| format!("inflight-m{i} {tag}")).collect();
    let start = Instant::now();
    loop {
        let mails: Vec<ParsedEmail> = bob_mails(&stack, &tag)
            .into_iter()
            .filter(|m| m.text.starts_with("inflight-m"))
            .collect();
        if want
            .iter()
            .all(|w| mails.iter().any(|m| m.text.contains(w.as_str())))
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(T),
            "missing in-flight Matrix messages at bob ({} of {})\n{}",
            mails.len(),
            want.len(),
            tail(&hub.log(), 80)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("after restart: all delivered in {:?}", t_restart.elapsed());
    // Let stragglers (a doubled send) land before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let extra: Vec<String> = alice_extra(&mut alice, ghost, &room).await;
    assert!(
        extra.is_empty(),
        "email messages doubled in Matrix: {extra:?}"
    );
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");
    let mails: Vec<ParsedEmail> = bob_mails(&stack, &tag)
        .into_iter()
        .filter(|m| m.text.starts_with("inflight-m"))
        .collect();
    let ids: std::collections::BTreeSet<_> =
        mails.iter().filter_map(|m| m.message_id.clone()).collect();
    assert_eq!(ids.len(), 2 * N, "one Message-ID per Matrix message");
    assert!(
        mails.len() <= 2 * N + 1,
        "{} mails for {} messages",
        mails.len(),
        2 * N
    );

    let _ = alice.cmd(json!({"cmd": "shutdown"})).await;
    let _ = alice.child.wait().await;
    hub.kill();
}

/// In-flight email messages alice saw again after the first complete round.
async fn alice_extra(alice: &mut Peer, ghost: &str, room: &str) -> Vec<String> {
    let mut extra = Vec::new();
    while let Some(v) = alice
        .try_take(|v| {
            is_from(v, ghost, room)
                && v["body"]
                    .as_str()
                    .is_some_and(|b| b.starts_with("inflight-e"))
        })
        .await
    {
        extra.push(v["body"].as_str().unwrap_or("").to_owned());
    }
    extra
}
