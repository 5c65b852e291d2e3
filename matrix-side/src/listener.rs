//! The appservice HTTP listener: what the homeserver calls.
//!
//! **Architecture Invariant:** a transaction is answered 200 only after every event in it was
//! committed through [`Router::ingest`], and its id is recorded in the store only after that.

use crate::client::MatrixClient;
use crate::commands::Commands;
use crate::convert::{Incoming, incoming};
use crate::ids::GhostNamer;
use axum::Router as Http;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use bridge_core::ir::{ChatLocator, EventKind, MembershipChange, Relation, RemoteEvent, UserRef};
use bridge_core::{Router, SideName};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};

/// Shared state of the listener.
#[derive(Debug)]
pub struct ListenerState {
    hs_token: String,
    router: Router,
    namer: GhostNamer,
    /// Display names of Matrix users seen in member events.
    names: Mutex<BTreeMap<String, String>>,
    /// The bot's commands (none in listener-only tests).
    commands: Option<Commands>,
    /// The client, to create ghosts that are asked about (none in listener-only tests).
    client: Option<MatrixClient>,
}

impl ListenerState {
    /// State for a listener feeding `router`.
    pub fn new(hs_token: &str, router: Router, namer: GhostNamer) -> Arc<Self> {
        Self::build(hs_token, router, namer, None, None)
    }

    /// State for a listener that also answers the bot's commands.
    pub fn with_commands(
        hs_token: &str,
        router: Router,
        namer: GhostNamer,
        commands: Commands,
    ) -> Arc<Self> {
        Self::build(hs_token, router, namer, Some(commands), None)
    }

    /// State with everything optional given.
    pub fn build(
        hs_token: &str,
        router: Router,
        namer: GhostNamer,
        commands: Option<Commands>,
        client: Option<MatrixClient>,
    ) -> Arc<Self> {
        Arc::new(Self {
            hs_token: hs_token.to_owned(),
            router,
            namer,
            names: Mutex::new(BTreeMap::new()),
            commands,
            client,
        })
    }
}

fn error(status: StatusCode, errcode: &str, msg: &str) -> Response {
    (
        status,
        axum::Json(json!({"errcode": errcode, "error": msg})),
    )
        .into_response()
}

/// A 500 that makes the homeserver send the transaction again; `why` is logged.
fn retry_later(txn_id: &str, why: &str, e: &dyn std::fmt::Display) -> Response {
    tracing::warn!(%txn_id, error = %e, "{why}; the homeserver will retry.");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "M_UNKNOWN",
        "try again later",
    )
}

fn ok_empty() -> Response {
    (StatusCode::OK, axum::Json(json!({}))).into_response()
}

/// Compares tokens without an early exit.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An authorization failure: status, errcode, message.
#[derive(Debug)]
struct Refusal(StatusCode, &'static str, &'static str);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.0, self.1, self.2)
    }
}

/// Checks `Authorization: Bearer` and the legacy `access_token` query parameter.
fn authorize(
    st: &ListenerState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<(), Refusal> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let legacy = query.get("access_token").map(String::as_str);
    if bearer.is_none() && legacy.is_none() {
        return Err(Refusal(
            StatusCode::UNAUTHORIZED,
            "M_UNAUTHORIZED",
            "missing hs_token",
        ));
    }
    let good = bearer.is_none_or(|t| same(t, &st.hs_token))
        && legacy.is_none_or(|t| same(t, &st.hs_token));
    if good {
        Ok(())
    } else {
        tracing::warn!("Refused a homeserver request with a wrong hs_token.");
        Err(Refusal(
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
            "bad hs_token",
        ))
    }
}

/// The axum app.
pub fn app(state: Arc<ListenerState>) -> Http {
    Http::new()
        .route("/_matrix/app/v1/transactions/{txn_id}", put(transaction))
        .route("/transactions/{txn_id}", put(transaction))
        .route("/_matrix/app/v1/ping", post(ping))
        .route("/_matrix/app/v1/users/{user_id}", get(query_user))
        .route("/_matrix/app/v1/rooms/{alias}", get(query_alias))
        .fallback(unrecognized)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn unrecognized() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "M_UNRECOGNIZED",
        "unrecognized request",
    )
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "M_UNRECOGNIZED",
        "method not allowed",
    )
}

async fn ping(
    State(st): State<Arc<ListenerState>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = authorize(&st, &headers, &q) {
        return r.into_response();
    }
    ok_empty()
}

async fn query_user(
    State(st): State<Arc<ListenerState>>,
    Path(user): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = authorize(&st, &headers, &q) {
        return r.into_response();
    }
    // A ghost that stands for an email address exists as soon as someone asks (e.g. to invite it).
    let reachable = st.namer.parse(&user).is_some_and(|(side, addr)| {
        side == SideName::EMAIL.as_str() && crate::commands::is_email(&addr)
    });
    match (reachable, st.client.as_ref()) {
        (true, Some(client)) => match client.register(crate::ids::localpart_of(&user)).await {
            Ok(()) => ok_empty(),
            Err(e) => {
                tracing::warn!(%user, error = %e, "Could not register a queried ghost.");
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "M_UNKNOWN",
                    "could not create the user",
                )
            }
        },
        _ => error(StatusCode::NOT_FOUND, "M_NOT_FOUND", "no such user"),
    }
}

async fn query_alias(
    State(st): State<Arc<ListenerState>>,
    Path(_alias): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = authorize(&st, &headers, &q) {
        return r.into_response();
    }
    error(StatusCode::NOT_FOUND, "M_NOT_FOUND", "no such room alias")
}

/// The key under which a processed transaction id is kept.
pub fn txn_key(txn_id: &str) -> String {
    format!("matrix.txn.{txn_id}")
}

/// A parsed transaction body.
#[derive(Debug, Default)]
struct Txn {
    events: Vec<Value>,
    ephemeral: Vec<Value>,
}

impl Txn {
    /// What identifies a transaction besides its id: its events' ids and how many ephemeral ones.
    fn fingerprint(&self) -> String {
        let ids: Vec<&str> = self
            .events
            .iter()
            .filter_map(|e| str_of(e, "event_id"))
            .collect();
        format!("{}|{}", ids.join(","), self.ephemeral.len())
    }
}

fn parse_txn(body: &[u8]) -> Result<Txn, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let obj = v.as_object().ok_or("the body is not a JSON object")?;
    let events = obj
        .get("events")
        .and_then(Value::as_array)
        .ok_or("`events` is missing or not an array")?;
    let mut ephemeral = Vec::new();
    for key in ["ephemeral", "de.sorunome.msc2409.ephemeral"] {
        match obj.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Array(a)) => ephemeral.extend(a.iter().cloned()),
            Some(_) => return Err(format!("`{key}` is not an array")),
        }
    }
    if events.iter().chain(&ephemeral).any(|e| !e.is_object()) {
        return Err("an event is not a JSON object".into());
    }
    Ok(Txn {
        events: events.clone(),
        ephemeral,
    })
}

async fn transaction(
    State(st): State<Arc<ListenerState>>,
    Path(txn_id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if let Err(r) = authorize(&st, &headers, &q) {
        return r.into_response();
    }
    let txn = match parse_txn(&body) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(%txn_id, error = %e, "Malformed transaction refused.");
            return error(StatusCode::BAD_REQUEST, "M_BAD_JSON", &e);
        }
    };
    let store = st.router.store();
    // Synapse on SQLite numbers transactions from 1 again after a restart: an id names the same
    // transaction only if it carries the same events (a new one is ingested; event ids dedupe).
    let fingerprint = txn.fingerprint();
    match store.kv_get(&txn_key(&txn_id)).await {
        Ok(Some(seen)) if seen == fingerprint => {
            tracing::debug!(%txn_id, "Transaction already processed.");
            return ok_empty();
        }
        Ok(_) => {}
        Err(e) => {
            return retry_later(&txn_id, "Store error", &e);
        }
    }
    // Commands are answered (and not bridged); each is handled once, by event id.
    let mut consumed = Vec::new();
    if let Some(c) = &st.commands {
        for ev in &txn.events {
            match c.handle(ev).await {
                Ok(true) => consumed.extend(str_of(ev, "event_id")),
                Ok(false) => {}
                Err(e) => {
                    return retry_later(&txn_id, "An event could not be handled yet", &e);
                }
            }
        }
    }
    let mut remote = Vec::new();
    for ev in txn.events.iter().chain(&txn.ephemeral) {
        if str_of(ev, "event_id").is_some_and(|id| consumed.contains(&id)) {
            continue;
        }
        remote.extend(to_remote(&st, ev));
    }
    // Files are not fetched here: the hub fetches them when it delivers (`MatrixSide::fetch_media`),
    // so a slow media server never holds up the homeserver's transaction.
    for ev in remote {
        // Events of rooms that are not portals are not the hub's business (yet).
        let linked = match &ev.chat.remote_chat_id {
            Some(room) => store.chat_by_link(SideName::MATRIX, room).await,
            None => Ok(None),
        };
        match linked {
            Ok(Some(_)) => {}
            Ok(None) => {
                tracing::debug!(remote_id = %ev.remote_id, "Event in an unlinked room ignored.");
                continue;
            }
            Err(e) => {
                return retry_later(&txn_id, "Store error", &e);
            }
        }
        if let Err(e) = st.router.ingest(ev).await {
            return retry_later(&txn_id, "Ingest failed", &e);
        }
    }
    if let Err(e) = store.kv_set(&txn_key(&txn_id), &fingerprint).await {
        // Every event is committed; a retry is deduplicated by event id.
        tracing::warn!(%txn_id, error = %e, "Could not record the transaction id.");
    }
    ok_empty()
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// Converts one transaction event into what the hub ingests; our own echoes and noise give nothing.
fn to_remote(st: &ListenerState, ev: &Value) -> Vec<RemoteEvent> {
    let kind = str_of(ev, "type").unwrap_or("");
    if kind == "m.receipt" {
        return receipts(st, ev);
    }
    let (Some(event_id), Some(room), Some(sender)) = (
        str_of(ev, "event_id"),
        str_of(ev, "room_id"),
        str_of(ev, "sender"),
    ) else {
        return Vec::new();
    };
    if !crate::ids::is_user_id(sender) || !crate::ids::is_room_id(room) {
        return Vec::new();
    }
    let interpreted = incoming(ev);
    if let Incoming::Membership {
        user,
        display_name: Some(n),
        ..
    } = &interpreted
        && let Ok(mut names) = st.names.lock()
    {
        names.insert(user.clone(), n.clone());
    }
    if st.namer.is_ours(sender) {
        return Vec::new();
    }
    let display = st.names.lock().ok().and_then(|n| n.get(sender).cloned());
    let user = |id: &str, name: Option<String>| UserRef::new(SideName::MATRIX, id, name);
    let kind = match interpreted {
        Incoming::Message(c) => EventKind::Message(c),
        Incoming::Edit { target, content } => EventKind::Edit {
            target: Relation::remote(target),
            content,
        },
        Incoming::Redaction { target } => EventKind::Redaction {
            target: Relation::remote(target),
        },
        Incoming::Reaction { target, key } => EventKind::Reaction {
            target: Relation::remote(target),
            key,
            replaces: Vec::new(),
        },
        Incoming::Membership {
            user: subject,
            display_name,
            joined,
        } => {
            let subject_ref = match st.namer.parse(&subject) {
                // A Matrix person removed a ghost (kick or ban): the email person leaves the chat.
                Some((side, native)) if !joined => {
                    UserRef::new(SideName::intern(&side), native, None)
                }
                // Ghost joins are our own doing; the bot is no one's member.
                Some(_) => return Vec::new(),
                None if st.namer.is_ours(&subject) => return Vec::new(),
                None => user(&subject, display_name),
            };
            EventKind::Membership {
                subject: subject_ref,
                change: if joined {
                    MembershipChange::Join
                } else {
                    MembershipChange::Leave
                },
            }
        }
        Incoming::ChatInfo { name, topic } => EventKind::ChatInfo { name, topic },
        Incoming::Ignore => return Vec::new(),
    };
    vec![RemoteEvent {
        side: SideName::MATRIX,
        remote_id: event_id.to_owned(),
        chat: ChatLocator {
            remote_chat_id: Some(room.to_owned()),
            ..ChatLocator::default()
        },
        sender: user(sender, display),
        ts_ms: ev
            .get("origin_server_ts")
            .and_then(Value::as_i64)
            .unwrap_or_else(bridge_core::store::now_ms),
        kind,
        raw: serde_json::to_vec(ev).ok(),
    }]
}

/// `m.receipt` EDUs: one receipt event per (user, event read).
fn receipts(st: &ListenerState, ev: &Value) -> Vec<RemoteEvent> {
    let Some(room) = str_of(ev, "room_id") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let Some(content) = ev.get("content").and_then(Value::as_object) else {
        return out;
    };
    for (event_id, kinds) in content {
        let Some(users) = kinds.get("m.read").and_then(Value::as_object) else {
            continue;
        };
        for (user, info) in users {
            if st.namer.is_ours(user) {
                continue;
            }
            out.push(RemoteEvent {
                side: SideName::MATRIX,
                remote_id: format!("receipt:{room}:{user}:{event_id}"),
                chat: ChatLocator {
                    remote_chat_id: Some(room.to_owned()),
                    ..ChatLocator::default()
                },
                sender: UserRef::new(SideName::MATRIX, user.as_str(), None),
                ts_ms: info
                    .get("ts")
                    .and_then(Value::as_i64)
                    .unwrap_or_else(bridge_core::store::now_ms),
                kind: EventKind::Receipt {
                    targets: vec![Relation::remote(event_id.as_str())],
                },
                raw: None,
            });
        }
    }
    out
}

/// Serves the listener on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ListenerState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use bridge_core::testing::TestBridge;

    const HS: &str = "hs_secret";
    const ROOM: &str = "!portal:matrix.test";

    fn namer() -> GhostNamer {
        GhostNamer {
            prefix: "_coi_".into(),
            server_name: "matrix.test".into(),
            bot_localpart: "coi_bot".into(),
        }
    }

    struct Fixture {
        tb: TestBridge,
        base: String,
        http: reqwest::Client,
    }

    async fn fixture() -> Fixture {
        let tb = TestBridge::new(&["email"]).await.unwrap();
        tb.router()
            .create_chat("Portal", "", Some((SideName::MATRIX, ROOM)), &[])
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = ListenerState::new(HS, tb.router(), namer());
        tokio::spawn(serve(listener, state, std::future::pending()));
        Fixture {
            tb,
            base,
            http: reqwest::Client::new(),
        }
    }

    fn msg(event_id: &str, sender: &str, body: &str) -> Value {
        json!({"type": "m.room.message", "event_id": event_id, "room_id": ROOM, "sender": sender,
               "origin_server_ts": 1_700_000_000_000i64,
               "content": {"msgtype": "m.text", "body": body}})
    }

    impl Fixture {
        async fn put(&self, txn: &str, token: Option<&str>, body: &str) -> (u16, Value) {
            let mut r = self
                .http
                .put(format!("{}/_matrix/app/v1/transactions/{txn}", self.base))
                .body(body.to_owned());
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            let resp = r.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json().await.unwrap_or(Value::Null))
        }

        async fn messages(&self) -> usize {
            let chats = self.tb.bridge.store().chats().await.unwrap();
            let mut n = 0;
            for c in chats {
                n += self
                    .tb
                    .bridge
                    .store()
                    .chat_messages(c.id)
                    .await
                    .unwrap()
                    .len();
            }
            n
        }

        async fn txn_seen(&self, txn: &str) -> bool {
            self.tb
                .bridge
                .store()
                .kv_get(&txn_key(txn))
                .await
                .unwrap()
                .is_some()
        }
    }

    #[tokio::test]
    async fn auth_is_checked() {
        let f = fixture().await;
        let body = json!({"events": [msg("$a", "@alice:matrix.test", "hi")]}).to_string();
        let (s, v) = f.put("1", Some("wrong"), &body).await;
        assert_eq!((s, v["errcode"].as_str()), (403, Some("M_FORBIDDEN")));
        let (s, v) = f.put("1", None, &body).await;
        assert_eq!((s, v["errcode"].as_str()), (401, Some("M_UNAUTHORIZED")));
        assert_eq!(f.messages().await, 0);
        assert!(!f.txn_seen("1").await);
        // Legacy query token: accepted only when it matches (and matches the header if both are sent).
        let url = |t: &str| format!("{}/_matrix/app/v1/transactions/2?access_token={t}", f.base);
        let r = f
            .http
            .put(url("nope"))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403);
        let r = f
            .http
            .put(url(HS))
            .bearer_auth("nope")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403);
        let r = f.http.put(url(HS)).body(body).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(f.messages().await, 1);
    }

    #[tokio::test]
    async fn transactions_are_idempotent() {
        let f = fixture().await;
        let body = json!({"events": [msg("$a", "@alice:matrix.test", "one"), msg("$b", "@alice:matrix.test", "two")]})
            .to_string();
        assert_eq!(f.put("7", Some(HS), &body).await.0, 200);
        assert!(f.txn_seen("7").await);
        assert_eq!(f.messages().await, 2);
        // The same txn again, and the same events under a new txn id: nothing doubles.
        assert_eq!(f.put("7", Some(HS), &body).await.0, 200);
        assert_eq!(f.put("8", Some(HS), &body).await.0, 200);
        assert_eq!(f.messages().await, 2);
        let stats = f.tb.bridge.drain_once(SideName("email")).await.unwrap();
        assert_eq!(stats.delivered, 2);
        let d = f.tb.side("email").unwrap().delivered();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].origin_side, "matrix");
        assert_eq!(
            d[0].sender.as_ref().unwrap().native_id,
            "@alice:matrix.test"
        );
    }

    #[tokio::test]
    async fn malformed_bodies_store_nothing() {
        let f = fixture().await;
        for (txn, body) in [
            ("m1", "not json".to_owned()),
            ("m2", "[]".to_owned()),
            ("m3", json!({"events": {}}).to_string()),
            (
                "m4",
                json!({"events": [msg("$a", "@alice:matrix.test", "x"), 5]}).to_string(),
            ),
            ("m5", json!({"events": [], "ephemeral": 3}).to_string()),
        ] {
            let (s, v) = f.put(txn, Some(HS), &body).await;
            assert_eq!(
                (s, v["errcode"].as_str()),
                (400, Some("M_BAD_JSON")),
                "{txn}"
            );
            assert!(!f.txn_seen(txn).await);
        }
        assert_eq!(f.messages().await, 0);
    }

    #[tokio::test]
    async fn echoes_and_unlinked_rooms_are_dropped() {
        let f = fixture().await;
        let mut other = msg("$c", "@alice:matrix.test", "elsewhere");
        other["room_id"] = json!("!other:matrix.test");
        let body = json!({
            "events": [msg("$a", "@_coi_bob=40x.org:matrix.test", "echo"), msg("$b", "@coi_bot:matrix.test", "bot"), other],
            "de.sorunome.msc2409.ephemeral": [{"type": "m.typing", "room_id": ROOM, "content": {"user_ids": []}}],
        })
        .to_string();
        assert_eq!(f.put("e", Some(HS), &body).await.0, 200);
        assert_eq!(f.messages().await, 0);
        assert!(f.txn_seen("e").await);
    }

    #[tokio::test]
    async fn a_kicked_ghost_is_an_email_member_leaving() {
        let f = fixture().await;
        let member = |id: &str, sender: &str, user: &str, membership: &str| {
            json!({"type": "m.room.member", "event_id": id, "room_id": ROOM, "sender": sender,
                   "state_key": user, "content": {"membership": membership}})
        };
        let ghost = "@_coi_bob=40x.org:matrix.test";
        let body = json!({"events": [
            // The ghost's own join (our doing) and the bot's: echoes.
            member("$j", ghost, ghost, "join"),
            member("$b", "@coi_bot:matrix.test", "@coi_bot:matrix.test", "join"),
            // Alice kicks the ghost: bob leaves the chat.
            member("$k", "@alice:matrix.test", ghost, "leave"),
        ]})
        .to_string();
        assert_eq!(f.put("k", Some(HS), &body).await.0, 200);
        let store = f.tb.bridge.store();
        let chat = store.chats().await.unwrap()[0].id;
        let events: Vec<_> = store
            .chat_messages(chat)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.event)
            .collect();
        assert_eq!(
            events,
            vec![EventKind::Membership {
                subject: UserRef::new(SideName::EMAIL, "bob@x.org", None),
                change: MembershipChange::Leave,
            }]
        );
    }

    #[tokio::test]
    async fn receipts_from_both_ephemeral_keys() {
        let f = fixture().await;
        let body = json!({"events": [msg("$a", "@alice:matrix.test", "hi")]}).to_string();
        assert_eq!(f.put("1", Some(HS), &body).await.0, 200);
        let receipt = |user: &str| {
            json!({"type": "m.receipt", "room_id": ROOM,
            "content": {"$a": {"m.read": {user: {"ts": 1}}}}})
        };
        let body = json!({"events": [], "ephemeral": [receipt("@carol:matrix.test")],
                          "de.sorunome.msc2409.ephemeral": [receipt("@dave:matrix.test")]})
        .to_string();
        assert_eq!(f.put("2", Some(HS), &body).await.0, 200);
        assert_eq!(f.messages().await, 3);
    }

    #[tokio::test]
    async fn media_are_ingested_at_once_with_their_source() {
        let f = fixture().await;
        let body = json!({"events": [{"type": "m.room.message", "event_id": "$i", "room_id": ROOM,
            "sender": "@alice:matrix.test", "origin_server_ts": 1_700_000_000_000i64,
            "content": {"msgtype": "m.image", "body": "cat.png", "url": "mxc://hs/cat",
                        "info": {"mimetype": "image/png", "size": 10}}}]})
        .to_string();
        assert_eq!(f.put("1", Some(HS), &body).await.0, 200);
        let store = f.tb.bridge.store();
        let chat = store.chats().await.unwrap()[0].id;
        let parts: Vec<_> = store
            .chat_messages(chat)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|m| match m.event {
                EventKind::Message(c) => Some(c.parts),
                _ => None,
            })
            .collect();
        assert!(
            matches!(&parts[..], [p] if matches!(&p[..], [bridge_core::ir::Part::Attachment {
                data, source: Some(src), filename, .. }]
                if data.is_empty() && src == "mxc://hs/cat" && filename == "cat.png")),
            "{parts:?}"
        );
    }

    #[tokio::test]
    async fn other_routes() {
        let f = fixture().await;
        let r = f
            .http
            .post(format!("{}/_matrix/app/v1/ping", f.base))
            .bearer_auth(HS)
            .json(&json!({"transaction_id": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        for path in [
            "/_matrix/app/v1/users/@x:matrix.test",
            "/_matrix/app/v1/rooms/%23x:matrix.test",
        ] {
            let r = f
                .http
                .get(format!("{}{path}", f.base))
                .bearer_auth(HS)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 404, "{path}");
        }
        let r = f.http.get(format!("{}/nope", f.base)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 404);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["errcode"], "M_UNRECOGNIZED");
        let r = f
            .http
            .get(format!("{}/_matrix/app/v1/ping", f.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 405);
    }
}
