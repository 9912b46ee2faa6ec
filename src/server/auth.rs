//! Who a client is and what it may do: JWT (HS256) claims, topic patterns, API keys.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Topic patterns: an exact name, or a prefix ending in `*` (`*` alone
/// matches every topic but the server's). `chat.*` matches `chat.` and
/// `chat.room`, not `chat`. Server topics (those starting with `$`, such
/// as `$sys.stats`) match only patterns that start with `$` themselves:
/// `*` does not grant them, `$sys.*` does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Patterns(Vec<String>);

impl Patterns {
    /// Patterns from a list.
    pub fn new(list: Vec<String>) -> Self {
        Self(list)
    }

    /// Every topic.
    pub fn all() -> Self {
        Self(vec!["*".into()])
    }

    /// Whether `topic` matches one of the patterns.
    pub fn allows(&self, topic: &str) -> bool {
        let server_topic = topic.starts_with('$');
        self.0.iter().any(|p| {
            server_topic == p.starts_with('$')
                && match p.strip_suffix('*') {
                    Some(prefix) => topic.starts_with(prefix),
                    None => p == topic,
                }
        })
    }
}

/// The claims shardcast reads from a token. Other claims are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    /// The subject (user id).
    #[serde(default)]
    pub sub: Option<String>,
    /// Expiry, seconds since the epoch (required).
    pub exp: u64,
    /// Topic patterns the client may subscribe to. Default: none.
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// Topic patterns the client may publish to. Default: none.
    #[serde(default)]
    pub publish: Vec<String>,
}

/// What an authenticated (or anonymous) client may do.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The token's subject; none for anonymous clients.
    pub sub: Option<String>,
    /// Token expiry (seconds since the epoch); none for anonymous clients.
    pub exp: Option<u64>,
    /// Topics it may subscribe to.
    pub read: Patterns,
    /// Topics it may publish to.
    pub write: Patterns,
}

impl Grant {
    /// An anonymous client of a server without auth: every topic, and the
    /// server's topics to read.
    pub fn anonymous() -> Self {
        Self {
            sub: None,
            exp: None,
            read: Patterns::new(vec!["*".into(), "$*".into()]),
            write: Patterns::all(),
        }
    }

    /// Whether the token behind this grant has expired by `now` (seconds
    /// since the epoch).
    pub fn expired(&self, now: u64) -> bool {
        self.exp.is_some_and(|e| e <= now)
    }
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token has expired.
    #[error("token expired")]
    Expired,
    /// Bad signature, wrong algorithm, malformed, or a required claim
    /// missing.
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Verifies HS256 tokens with one secret.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl Verifier {
    /// A verifier for `secret`; tokens must carry `exp`, must not be used
    /// before their `nbf`, and, when given, must name `issuer` (`iss`) and
    /// `audience` (`aud`).
    pub fn new(secret: &str, issuer: Option<&str>, audience: Option<&str>) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        if let Some(iss) = issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        match audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Self {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// Checks `token` and returns what it grants.
    ///
    /// # Errors
    /// [`TokenError::Expired`] or [`TokenError::Invalid`].
    pub fn verify(&self, token: &str) -> Result<Grant, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(e.to_string()),
            },
        )?;
        let c = data.claims;
        Ok(Grant {
            sub: c.sub,
            exp: Some(c.exp),
            read: Patterns::new(c.subscribe),
            write: Patterns::new(c.publish),
        })
    }
}

/// Compares two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_exact_names_and_prefixes() {
        let p = Patterns::new(vec!["news".into(), "chat.*".into()]);
        assert!(p.allows("news"));
        assert!(!p.allows("news2"));
        assert!(p.allows("chat.room1"));
        assert!(!p.allows("chat"));
        assert!(Patterns::all().allows("anything"));
        assert!(!Patterns::default().allows("x"));
    }

    #[test]
    fn server_topics_need_a_pattern_of_their_own() {
        assert!(!Patterns::all().allows("$sys.stats"));
        assert!(!Patterns::new(vec!["*".into(), "$sys".into()]).allows("$sys.stats"));
        assert!(Patterns::new(vec!["$sys.*".into()]).allows("$sys.stats"));
        assert!(!Patterns::new(vec!["$sys.*".into()]).allows("news"));
        assert!(Grant::anonymous().read.allows("$sys.stats"));
        assert!(!Grant::anonymous().write.allows("$sys.stats"));
    }

    fn token(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .unwrap()
    }

    #[test]
    fn nbf_iss_and_aud_are_checked() {
        let now = unix_now();
        let v = Verifier::new("0123456789abcdef0123456789abcdef", Some("me"), Some("ws"));
        let ok = serde_json::json!({"exp": now + 60, "iss": "me", "aud": "ws"});
        assert!(v.verify(&token(ok)).is_ok());
        for bad in [
            serde_json::json!({"exp": now + 60, "iss": "me", "aud": "ws", "nbf": now + 30}),
            serde_json::json!({"exp": now + 60, "iss": "other", "aud": "ws"}),
            serde_json::json!({"exp": now + 60, "iss": "me", "aud": "else"}),
            serde_json::json!({"exp": now + 60, "aud": "ws"}),
            serde_json::json!({"exp": now + 60, "iss": "me"}),
        ] {
            assert!(v.verify(&token(bad.clone())).is_err(), "{bad}");
        }
        // Without iss/aud settings, tokens without them pass; nbf still counts.
        let plain = Verifier::new("0123456789abcdef0123456789abcdef", None, None);
        assert!(plain
            .verify(&token(serde_json::json!({"exp": now + 60})))
            .is_ok());
        let early = serde_json::json!({"exp": now + 60, "nbf": now + 30});
        assert!(plain.verify(&token(early)).is_err());
    }

    #[test]
    fn compares_keys() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
