//! A small client-server API client acting as the appservice (as_token) and its ghosts (`?user_id=`).

use crate::ids::path_segment;
use bridge_core::SideError;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

/// A failed call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The homeserver could not be reached, or the connection broke.
    #[error("cannot reach the homeserver: {0}")]
    Network(String),
    /// 429: wait and try again.
    #[error("rate limited by the homeserver")]
    RateLimited {
        /// The server's `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// The homeserver answered with an error.
    #[error("homeserver answered {status} {errcode}: {error}")]
    Http {
        /// HTTP status.
        status: u16,
        /// Matrix `errcode` (empty if none).
        errcode: String,
        /// Matrix `error` text.
        error: String,
    },
}

impl ClientError {
    /// The Matrix error code, if the homeserver gave one.
    pub fn errcode(&self) -> Option<&str> {
        match self {
            ClientError::Http { errcode, .. } => Some(errcode),
            _ => None,
        }
    }

    /// Whether a retry can help.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Network(_) | ClientError::RateLimited { .. } => true,
            ClientError::Http { status, .. } => *status >= 500,
        }
    }
}

impl From<ClientError> for SideError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::RateLimited { retry_after } => SideError::Retryable {
                message: "rate limited by the homeserver".into(),
                retry_after,
            },
            e if e.is_retryable() => SideError::retry(e.to_string()),
            e => SideError::Permanent(e.to_string()),
        }
    }
}

/// The client. Cheap to clone.
#[derive(Clone, Debug)]
pub struct MatrixClient {
    http: reqwest::Client,
    base: String,
    as_token: String,
    /// Whether new rooms make their creator a "creator" outside `users` (room version 12+).
    creators_outside_users: std::sync::Arc<tokio::sync::OnceCell<bool>>,
}

/// Whether a room version gives creators power outside the `users` map (MSC4289, room version 12
/// and the "hydra" test versions).
pub fn version_has_creators(version: &str) -> bool {
    match version.parse::<u32>() {
        Ok(n) => n >= 12,
        Err(_) => version.contains("hydra"),
    }
}

/// Parses `Retry-After` (seconds) or the deprecated `retry_after_ms`.
fn retry_after(headers: &reqwest::header::HeaderMap, body: &Value) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .or_else(|| {
            body.get("retry_after_ms")
                .and_then(Value::as_u64)
                .map(Duration::from_millis)
        })
}

impl MatrixClient {
    /// A client for `base` (e.g. `http://127.0.0.1:8008`) with the appservice token.
    pub fn new(base: &str, as_token: &str) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ClientError::Network(e.to_string()))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            as_token: as_token.to_owned(),
            creators_outside_users: std::sync::Arc::new(tokio::sync::OnceCell::new()),
        })
    }

    /// The homeserver's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// One call. `path` starts with `/_matrix/`; `query` pairs are added, `user_id` asserts an identity.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        user_id: Option<&str>,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let mut q: Vec<(&str, String)> = query.to_vec();
        if let Some(u) = user_id {
            q.push(("user_id", u.to_owned()));
        }
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.as_token)
            .query(&q);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ClientError::Network(e.to_string()))?;
        json_result(resp).await
    }

    /// `GET /_matrix/client/versions`.
    pub async fn versions(&self) -> Result<Vec<String>, ClientError> {
        let v = self
            .call(Method::GET, "/_matrix/client/versions", None, &[], None)
            .await?;
        Ok(v.get("versions")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// `GET /whoami` as `user_id` (or the bot); returns the user id.
    pub async fn whoami(&self, user_id: Option<&str>) -> Result<String, ClientError> {
        let v = self
            .call(
                Method::GET,
                "/_matrix/client/v3/account/whoami",
                user_id,
                &[],
                None,
            )
            .await?;
        Ok(v.get("user_id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned())
    }

    /// Registers a user in the appservice's namespace; an existing user is fine.
    pub async fn register(&self, localpart: &str) -> Result<(), ClientError> {
        let body = json!({"type": "m.login.application_service", "username": localpart, "inhibit_login": true});
        match self
            .call(
                Method::POST,
                "/_matrix/client/v3/register",
                None,
                &[],
                Some(&body),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.errcode() == Some("M_USER_IN_USE") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Sets a user's display name.
    pub async fn set_displayname(&self, user_id: &str, name: &str) -> Result<(), ClientError> {
        let path = format!(
            "/_matrix/client/v3/profile/{}/displayname",
            path_segment(user_id)
        );
        self.call(
            Method::PUT,
            &path,
            Some(user_id),
            &[],
            Some(&json!({"displayname": name})),
        )
        .await
        .map(|_| ())
    }

    /// Creates a room as the bot; returns its id.
    pub async fn create_room(&self, body: &Value) -> Result<String, ClientError> {
        let v = self
            .call(
                Method::POST,
                "/_matrix/client/v3/createRoom",
                None,
                &[],
                Some(body),
            )
            .await?;
        v.get("room_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ClientError::Http {
                status: 200,
                errcode: String::new(),
                error: "createRoom answered without room_id".into(),
            })
    }

    /// Invites `user` to a room, acting as `by` (the bot when `None`).
    pub async fn invite(
        &self,
        room: &str,
        by: Option<&str>,
        user: &str,
    ) -> Result<(), ClientError> {
        let path = format!("/_matrix/client/v3/rooms/{}/invite", path_segment(room));
        self.call(
            Method::POST,
            &path,
            by,
            &[],
            Some(&json!({"user_id": user})),
        )
        .await
        .map(|_| ())
    }

    /// Joins a room as `user`.
    pub async fn join(&self, room: &str, user: &str) -> Result<(), ClientError> {
        let path = format!("/_matrix/client/v3/join/{}", path_segment(room));
        self.call(Method::POST, &path, Some(user), &[], Some(&json!({})))
            .await
            .map(|_| ())
    }

    /// Leaves a room as `user`.
    pub async fn leave(&self, room: &str, user: &str) -> Result<(), ClientError> {
        let path = format!("/_matrix/client/v3/rooms/{}/leave", path_segment(room));
        self.call(Method::POST, &path, Some(user), &[], Some(&json!({})))
            .await
            .map(|_| ())
    }

    /// Sends a room event as `user` with a client transaction id; returns the event id.
    /// `ts` (Unix ms) massages the timestamp (appservices only).
    pub async fn send(
        &self,
        room: &str,
        user: Option<&str>,
        event_type: &str,
        txn_id: &str,
        content: &Value,
        ts: Option<i64>,
    ) -> Result<String, ClientError> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/{}/{}",
            path_segment(room),
            path_segment(event_type),
            path_segment(txn_id)
        );
        let query: Vec<(&str, String)> = ts.map(|t| ("ts", t.to_string())).into_iter().collect();
        let v = self
            .call(Method::PUT, &path, user, &query, Some(content))
            .await?;
        event_id(&v)
    }

    /// Sets a state event as `user` (the bot when `None`).
    pub async fn state(
        &self,
        room: &str,
        user: Option<&str>,
        event_type: &str,
        state_key: &str,
        content: &Value,
    ) -> Result<String, ClientError> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/state/{}/{}",
            path_segment(room),
            path_segment(event_type),
            path_segment(state_key)
        );
        let v = self
            .call(Method::PUT, &path, user, &[], Some(content))
            .await?;
        event_id(&v)
    }

    /// Reads a state event's content as `user` (the bot when `None`); `Ok(None)` when the room
    /// has none.
    pub async fn get_state(
        &self,
        room: &str,
        user: Option<&str>,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<Value>, ClientError> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/state/{}/{}",
            path_segment(room),
            path_segment(event_type),
            path_segment(state_key)
        );
        match self.call(Method::GET, &path, user, &[], None).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.errcode() == Some("M_NOT_FOUND") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The joined members of a room (user ids), as the bot.
    pub async fn joined_members(&self, room: &str) -> Result<Vec<String>, ClientError> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/joined_members",
            path_segment(room)
        );
        let v = self.call(Method::GET, &path, None, &[], None).await?;
        Ok(v.get("joined")
            .and_then(Value::as_object)
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default())
    }

    /// Redacts an event as `user`.
    pub async fn redact(
        &self,
        room: &str,
        user: Option<&str>,
        target: &str,
        txn_id: &str,
    ) -> Result<String, ClientError> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/redact/{}/{}",
            path_segment(room),
            path_segment(target),
            path_segment(txn_id)
        );
        let v = self
            .call(Method::PUT, &path, user, &[], Some(&json!({})))
            .await?;
        event_id(&v)
    }

    /// Sends a read receipt as `user`.
    pub async fn receipt(&self, room: &str, user: &str, target: &str) -> Result<(), ClientError> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
            path_segment(room),
            path_segment(target)
        );
        self.call(Method::POST, &path, Some(user), &[], Some(&json!({})))
            .await
            .map(|_| ())
    }

    /// Whether rooms this homeserver creates by default keep their creator out of the power
    /// levels' `users` (room version 12+); asked once through `/capabilities`.
    pub async fn creators_outside_users(&self) -> bool {
        let found = self
            .creators_outside_users
            .get_or_try_init(|| async {
                self.call(
                    Method::GET,
                    "/_matrix/client/v3/capabilities",
                    None,
                    &[],
                    None,
                )
                .await
                .map(|v| {
                    v["capabilities"]["m.room_versions"]["default"]
                        .as_str()
                        .is_some_and(version_has_creators)
                })
            })
            .await;
        match found {
            Ok(b) => *b,
            Err(e) => {
                // Not kept: the next room asks again.
                tracing::warn!(error = %e, "Could not read the capabilities; assuming room version 10 rules this time.");
                false
            }
        }
    }

    /// `GET /_matrix/client/v1/media/config`: the largest upload the homeserver takes, if it says.
    pub async fn media_upload_limit(&self) -> Result<Option<u64>, ClientError> {
        let v = self
            .call(
                Method::GET,
                "/_matrix/client/v1/media/config",
                None,
                &[],
                None,
            )
            .await?;
        Ok(v.get("m.upload.size").and_then(Value::as_u64))
    }

    /// Uploads a file as `user` (the bot when `None`); returns its `mxc://` URI.
    pub async fn upload(
        &self,
        user: Option<&str>,
        filename: &str,
        mime_type: &str,
        data: Vec<u8>,
    ) -> Result<String, ClientError> {
        let mut q: Vec<(&str, String)> = vec![("filename", filename.to_owned())];
        if let Some(u) = user {
            q.push(("user_id", u.to_owned()));
        }
        let resp = self
            .http
            .post(format!("{}/_matrix/media/v3/upload", self.base))
            .bearer_auth(&self.as_token)
            .query(&q)
            .header(reqwest::header::CONTENT_TYPE, mime_type)
            .timeout(Duration::from_secs(300))
            .body(data)
            .send()
            .await
            .map_err(|e| ClientError::Network(e.to_string()))?;
        let v = json_result(resp).await?;
        v.get("content_uri")
            .and_then(Value::as_str)
            .filter(|u| u.starts_with("mxc://"))
            .map(str::to_owned)
            .ok_or_else(|| ClientError::Http {
                status: 200,
                errcode: String::new(),
                error: "upload answered without content_uri".into(),
            })
    }

    /// Downloads an `mxc://` URI through the authenticated media API (as the bot), refusing more
    /// than `max_bytes`. Returns the bytes and the server's content type.
    pub async fn download(&self, mxc: &str, max_bytes: u64) -> Result<Download, ClientError> {
        let Some((server, media_id)) = parse_mxc(mxc) else {
            return Err(ClientError::Http {
                status: 400,
                errcode: "M_INVALID_PARAM".into(),
                error: format!("not an mxc:// URI: {mxc}"),
            });
        };
        let url = format!(
            "{}/_matrix/client/v1/media/download/{}/{}",
            self.base,
            path_segment(server),
            path_segment(media_id)
        );
        // Fetched by the outbox drainer of the chat that needs it (never inside a transaction);
        // a stuck server only holds that chat, and a timeout is retried with backoff.
        let mut resp = self
            .http
            .get(url)
            .bearer_auth(&self.as_token)
            .timeout(Duration::from_secs(600))
            .send()
            .await
            .map_err(|e| ClientError::Network(e.to_string()))?;
        if !resp.status().is_success() {
            // An error body is read up to 64 KiB, whatever the server sends.
            let status = resp.status();
            let headers = resp.headers().clone();
            let mut body = Vec::new();
            while let Ok(Some(chunk)) = resp.chunk().await {
                body.extend_from_slice(&chunk);
                if body.len() > 64 * 1024 {
                    break;
                }
            }
            let text = String::from_utf8_lossy(&body);
            return Err(classify(status, &headers, &text)
                .err()
                .unwrap_or(ClientError::Http {
                    status: status.as_u16(),
                    errcode: String::new(),
                    error: "download failed".into(),
                }));
        }
        if resp.content_length().is_some_and(|n| n > max_bytes) {
            return Ok(Download::TooLarge);
        }
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut data = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| ClientError::Network(e.to_string()))?
        {
            if (data.len() + chunk.len()) as u64 > max_bytes {
                return Ok(Download::TooLarge);
            }
            data.extend_from_slice(&chunk);
        }
        Ok(Download::Bytes { data, content_type })
    }

    /// `POST /_matrix/client/v1/appservice/{id}/ping`: the homeserver calls us back; returns its duration.
    pub async fn ping(&self, appservice_id: &str, txn_id: &str) -> Result<u64, ClientError> {
        let path = format!(
            "/_matrix/client/v1/appservice/{}/ping",
            path_segment(appservice_id)
        );
        let v = self
            .call(
                Method::POST,
                &path,
                None,
                &[],
                Some(&json!({"transaction_id": txn_id})),
            )
            .await?;
        Ok(v.get("duration_ms").and_then(Value::as_u64).unwrap_or(0))
    }
}

/// A media download.
#[derive(Debug, PartialEq, Eq)]
pub enum Download {
    /// The file.
    Bytes {
        /// Its bytes.
        data: Vec<u8>,
        /// The server's `Content-Type`, if any.
        content_type: Option<String>,
    },
    /// Larger than the limit asked for; nothing was kept.
    TooLarge,
}

/// Splits `mxc://server/id`; both parts must be non-empty and free of `/`.
pub fn parse_mxc(mxc: &str) -> Option<(&str, &str)> {
    let (server, id) = mxc.strip_prefix("mxc://")?.split_once('/')?;
    (!server.is_empty() && !id.is_empty() && !id.contains('/')).then_some((server, id))
}

/// A JSON answer, or the error it carries (as [`MatrixClient::call`] classifies them).
async fn json_result(resp: reqwest::Response) -> Result<Value, ClientError> {
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp
        .text()
        .await
        .map_err(|e| ClientError::Network(e.to_string()))?;
    classify(status, &headers, &text)
}

fn classify(
    status: StatusCode,
    headers: &reqwest::header::HeaderMap,
    text: &str,
) -> Result<Value, ClientError> {
    let value: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(value);
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Err(ClientError::RateLimited {
            retry_after: retry_after(headers, &value),
        });
    }
    let field = |k: &str| {
        value
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let mut error = field("error");
    if error.is_empty() {
        error = text.chars().take(200).collect();
    }
    Err(ClientError::Http {
        status: status.as_u16(),
        errcode: field("errcode"),
        error,
    })
}

fn event_id(v: &Value) -> Result<String, ClientError> {
    v.get("event_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| ClientError::Http {
            status: 200,
            errcode: String::new(),
            error: "answer without event_id".into(),
        })
}

/// A deterministic client transaction id for one outbox event, one part and one acting user:
/// a retry reuses it, so the homeserver returns the same event instead of sending twice.
/// Synapse scopes appservice txn ids per appservice, not per ghost, hence the user in it.
pub fn txn_id(message_uuid: &str, part: &str, user: &str) -> String {
    let mut user_key = String::new();
    for b in user.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-') {
            user_key.push(char::from(b));
        } else {
            user_key.push_str(&format!("_{b:02x}"));
        }
    }
    if part.is_empty() {
        format!("coi.{message_uuid}.{user_key}")
    } else {
        format!("coi.{message_uuid}.{part}.{user_key}")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn txn_ids_are_deterministic_and_per_user() {
        let a = txn_id("u-1", "", "@_coi_bob=40x:hs");
        assert_eq!(a, txn_id("u-1", "", "@_coi_bob=40x:hs"));
        assert_ne!(a, txn_id("u-1", "", "@_coi_carol=40x:hs"));
        assert_ne!(a, txn_id("u-1", "1", "@_coi_bob=40x:hs"));
        assert_eq!(a, "coi.u-1._40_5fcoi_5fbob_3d40x_3ahs");
    }

    #[test]
    fn room_versions_with_creators() {
        assert!(version_has_creators("12"));
        assert!(version_has_creators("org.matrix.hydra.11"));
        assert!(!version_has_creators("10"));
        assert!(!version_has_creators("11"));
        assert!(!version_has_creators(""));
    }

    #[test]
    fn retry_after_parsing() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&h, &Value::Null), Some(Duration::from_secs(3)));
        let h = reqwest::header::HeaderMap::new();
        assert_eq!(
            retry_after(&h, &json!({"retry_after_ms": 1500})),
            Some(Duration::from_millis(1500))
        );
    }

    #[test]
    fn error_classes() {
        let e: SideError = ClientError::RateLimited {
            retry_after: Some(Duration::from_secs(2)),
        }
        .into();
        assert!(matches!(
            e,
            SideError::Retryable { retry_after: Some(d), .. } if d == Duration::from_secs(2)
        ));
        let e: SideError = ClientError::Http {
            status: 502,
            errcode: String::new(),
            error: "bad gateway".into(),
        }
        .into();
        assert!(matches!(e, SideError::Retryable { .. }));
        let e: SideError = ClientError::Http {
            status: 403,
            errcode: "M_FORBIDDEN".into(),
            error: "no".into(),
        }
        .into();
        assert!(matches!(e, SideError::Permanent(_)));
        let e: SideError = ClientError::Network("refused".into()).into();
        assert!(matches!(e, SideError::Retryable { .. }));
    }
}
