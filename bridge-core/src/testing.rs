//! In-process test harness: a [`TestBridge`] with fake sides over a temporary SQLite store.
//!
//! Used by the hub's own tests and by other crates' tests; not for production.

use crate::bridge::{Bridge, RetryPolicy};
use crate::ids::SideName;
use crate::ir::{ChatLocator, EventKind, MessageContent, NewChat, Part, RemoteEvent, UserRef};
use crate::router::Router;
use crate::side::{Capabilities, Delivered, OutboxItem, Side, SideError};
use crate::store::{Store, StoreError};
use async_trait::async_trait;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A side that records what it is asked to deliver.
#[derive(Debug)]
pub struct FakeSide {
    name: SideName,
    caps: Capabilities,
    delivered: Mutex<Vec<OutboxItem>>,
    script: Mutex<VecDeque<Result<(), FakeFailure>>>,
}

/// A scripted failure for [`FakeSide`].
#[derive(Clone, Debug)]
pub enum FakeFailure {
    /// Return a retryable error.
    Retry,
    /// Return a permanent error.
    Permanent,
}

impl FakeSide {
    /// A side with every capability and `auto_portal` on.
    pub fn new(name: &'static str) -> Arc<Self> {
        Arc::new(Self {
            name: SideName(name),
            caps: Capabilities::all(),
            delivered: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
        })
    }

    /// A side with the given capabilities.
    pub fn with_capabilities(name: &'static str, caps: Capabilities) -> Arc<Self> {
        Arc::new(Self {
            name: SideName(name),
            caps,
            delivered: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
        })
    }

    /// Everything delivered so far.
    pub fn delivered(&self) -> Vec<OutboxItem> {
        self.delivered.lock().map(|d| d.clone()).unwrap_or_default()
    }

    /// Queues scripted results for the next deliveries.
    pub fn script(&self, results: impl IntoIterator<Item = Result<(), FakeFailure>>) {
        if let Ok(mut s) = self.script.lock() {
            s.extend(results);
        }
    }
}

#[async_trait]
impl Side for FakeSide {
    fn name(&self) -> SideName {
        self.name
    }

    fn capabilities(&self) -> Capabilities {
        self.caps
    }

    async fn deliver(&self, item: &OutboxItem) -> Result<Delivered, SideError> {
        let next = self.script.lock().ok().and_then(|mut s| s.pop_front());
        match next {
            Some(Err(FakeFailure::Retry)) => {
                return Err(SideError::Retryable {
                    message: "scripted retry".into(),
                    retry_after: Some(Duration::from_millis(0)),
                });
            }
            Some(Err(FakeFailure::Permanent)) => {
                return Err(SideError::Permanent("scripted failure".into()));
            }
            _ => {}
        }
        if let Ok(mut d) = self.delivered.lock() {
            d.push(item.clone());
        }
        Ok(Delivered {
            links: vec![(
                String::new(),
                format!("{}-{}", self.name, item.message_uuid),
            )],
            chat_link: item
                .chat
                .remote_chat_id
                .is_none()
                .then(|| format!("{}-chat-{}", self.name, item.chat.group_id)),
            puppet_links: Vec::new(),
            notices: Vec::new(),
        })
    }
}

/// A bridge with fake sides over a temporary SQLite database.
pub struct TestBridge {
    /// The bridge.
    pub bridge: Arc<Bridge>,
    /// The fake sides, in the order given.
    pub sides: Vec<Arc<FakeSide>>,
    _dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for TestBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestBridge").finish()
    }
}

impl TestBridge {
    /// A bridge over a fresh temporary SQLite file with fake sides of these names.
    pub async fn new(sides: &[&'static str]) -> Result<Self, StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::NotFound(e.to_string()))?;
        let url = format!("sqlite://{}/test.db", dir.path().display());
        let store = Store::open(&url, 4).await?;
        let mut t = Self::with_store(store, sides);
        t._dir = Some(dir);
        Ok(t)
    }

    /// A bridge over a given store with fake sides of these names.
    pub fn with_store(store: Store, sides: &[&'static str]) -> Self {
        let fakes: Vec<Arc<FakeSide>> = sides.iter().map(|n| FakeSide::new(n)).collect();
        let mut b = Bridge::builder(store).retry(RetryPolicy {
            initial: Duration::from_millis(0),
            max: Duration::from_millis(0),
            max_attempts: 5,
        });
        for f in &fakes {
            b = b.side(f.clone());
        }
        Self {
            bridge: Arc::new(b.build()),
            sides: fakes,
            _dir: None,
        }
    }

    /// The router.
    pub fn router(&self) -> Router {
        self.bridge.router()
    }

    /// The fake side called `name`.
    pub fn side(&self, name: &str) -> Option<Arc<FakeSide>> {
        self.sides.iter().find(|s| s.name.as_str() == name).cloned()
    }
}

/// A text message event from `sender` on `side`, in the chat linked as `remote_chat` (created if new).
pub fn text_event(
    side: &'static str,
    remote_chat: &str,
    sender: &str,
    remote_id: &str,
    text: &str,
) -> RemoteEvent {
    let s = SideName(side);
    let user = UserRef::new(s, sender, Some(sender.to_owned()));
    RemoteEvent {
        side: s,
        remote_id: remote_id.to_owned(),
        chat: ChatLocator {
            remote_chat_id: Some(remote_chat.to_owned()),
            create: Some(NewChat {
                name: remote_chat.to_owned(),
                topic: String::new(),
                members: vec![user.clone()],
                remote_chat_id: Some(remote_chat.to_owned()),
            }),
            ..ChatLocator::default()
        },
        sender: user,
        ts_ms: crate::store::now_ms(),
        kind: EventKind::Message(MessageContent {
            parts: vec![Part::text(text)],
            ..MessageContent::default()
        }),
        raw: None,
    }
}
