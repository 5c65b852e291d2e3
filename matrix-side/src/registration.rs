//! The appservice registration file that the homeserver reads (`app_service_config_files`).

use crate::config::MatrixSettings;
use rand::Rng as _;

/// The fields of a registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// Stable appservice id.
    pub id: String,
    /// Where the homeserver reaches the bridge.
    pub url: String,
    /// Token the bridge uses towards the homeserver.
    pub as_token: String,
    /// Token the homeserver uses towards the bridge.
    pub hs_token: String,
    /// The bot's localpart.
    pub sender_localpart: String,
    /// Ghost localpart prefix (starts with `_`).
    pub prefix: String,
    /// The homeserver's server name.
    pub server_name: String,
}

/// A random token of 64 URL-safe characters.
pub fn random_token() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..64)
        .map(|_| {
            let i = rng.random_range(0..ALPHABET.len());
            char::from(ALPHABET.get(i).copied().unwrap_or(b'x'))
        })
        .collect()
}

/// Escapes regex metacharacters.
pub fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A YAML double-quoted scalar (JSON string syntax is valid YAML).
fn q(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

impl Registration {
    /// A registration for the given settings, keeping their tokens.
    pub fn from_settings(s: &MatrixSettings) -> Self {
        Self {
            id: s.registration_id.clone(),
            url: s.public_url.clone(),
            as_token: s.as_token.clone(),
            hs_token: s.hs_token.clone(),
            sender_localpart: s.namer.bot_localpart.clone(),
            prefix: s.namer.prefix.clone(),
            server_name: s.namer.server_name.clone(),
        }
    }

    /// The user namespace regex.
    pub fn user_regex(&self) -> String {
        format!(
            "@{}.*:{}",
            regex_escape(&self.prefix),
            regex_escape(&self.server_name)
        )
    }

    /// The alias namespace regex.
    pub fn alias_regex(&self) -> String {
        format!(
            "#{}.*:{}",
            regex_escape(&self.prefix),
            regex_escape(&self.server_name)
        )
    }

    /// The registration YAML.
    pub fn to_yaml(&self) -> String {
        format!(
            "# coi-bridge appservice registration: give this file to the homeserver\n\
             # (Synapse: app_service_config_files) and restart it after every change.\n\
             id: {id}\n\
             url: {url}\n\
             as_token: {as_token}\n\
             hs_token: {hs_token}\n\
             sender_localpart: {sender}\n\
             rate_limited: false\n\
             receive_ephemeral: true\n\
             de.sorunome.msc2409.push_ephemeral: true\n\
             namespaces:\n  \
               users:\n    \
                 - exclusive: true\n      \
                   regex: {users}\n  \
               aliases:\n    \
                 - exclusive: true\n      \
                   regex: {aliases}\n  \
               rooms: []\n",
            id = q(&self.id),
            url = q(&self.url),
            as_token = q(&self.as_token),
            hs_token = q(&self.hs_token),
            sender = q(&self.sender_localpart),
            users = q(&self.user_regex()),
            aliases = q(&self.alias_regex()),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn yaml_matches_expected() {
        let r = Registration {
            id: "coi".into(),
            url: "http://127.0.0.1:29331".into(),
            as_token: "AS".into(),
            hs_token: "HS".into(),
            sender_localpart: "coi_bot".into(),
            prefix: "_coi_".into(),
            server_name: "matrix.test".into(),
        };
        let y = r.to_yaml();
        let expected = r##"id: "coi"
url: "http://127.0.0.1:29331"
as_token: "AS"
hs_token: "HS"
sender_localpart: "coi_bot"
rate_limited: false
receive_ephemeral: true
de.sorunome.msc2409.push_ephemeral: true
namespaces:
  users:
    - exclusive: true
      regex: "@_coi_.*:matrix\\.test"
  aliases:
    - exclusive: true
      regex: "#_coi_.*:matrix\\.test"
  rooms: []
"##;
        assert!(y.ends_with(expected), "{y}");
    }

    #[test]
    fn tokens_are_random() {
        let a = random_token();
        assert_eq!(a.len(), 64);
        assert_ne!(a, random_token());
    }
}
