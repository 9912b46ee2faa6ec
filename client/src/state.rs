//! The connection state machine's states, and why each change happened.

use std::sync::Arc;

use crate::error::{ConnectError, ConnectionError};

/// Where the client is in its life.
///
/// ```text
/// Disconnected ─▶ Connecting ─▶ Connected ─▶ Reconnecting ─▶ Connected ...
///       ▲              │              │              │
///       └── close() ───┴──────────────┴──────────────┤
///                                                    └─▶ Failed (policy or attempts)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not started, or closed by [`Client::close`](crate::Client::close).
    Disconnected,
    /// Opening the first connection (waiting for an attempt, or in one).
    Connecting,
    /// A connection is open and every subscription has been sent again.
    Connected,
    /// A connection was lost; waiting for the next attempt, or in one.
    Reconnecting,
    /// Gave up: the server's close code or handshake answer said retrying
    /// cannot help, or the attempts ran out. Terminal.
    Failed,
}

impl State {
    /// Whether no further connection will be attempted.
    pub fn is_terminal(self) -> bool {
        matches!(self, State::Disconnected | State::Failed)
    }
}

/// Why the state changed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Reason {
    /// The server sent a Close frame (code 1005 when it carried none).
    ServerClosed {
        /// The close code.
        code: u16,
        /// The close reason text.
        text: String,
    },
    /// An open connection failed: I/O error, protocol error or heartbeat.
    Connection(Arc<ConnectionError>),
    /// A connection attempt failed.
    Connect(Arc<ConnectError>),
    /// [`Client::close`](crate::Client::close) was called or every handle dropped.
    ClientClosed,
    /// [`BackoffPolicy::max_attempts`](crate::BackoffPolicy) attempts failed;
    /// the last failure is inside.
    AttemptsExhausted(Box<Reason>),
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::ServerClosed { code, text } => write!(f, "server closed with {code} {text:?}"),
            Reason::Connection(e) => write!(f, "connection failed: {e}"),
            Reason::Connect(e) => write!(f, "connect failed: {e}"),
            Reason::ClientClosed => f.write_str("closed by the client"),
            Reason::AttemptsExhausted(last) => write!(f, "gave up reconnecting; last: {last}"),
        }
    }
}

/// One state change, as seen through [`Client::watch_state`](crate::Client::watch_state)
/// and [`Client::state_changes`](crate::Client::state_changes).
#[derive(Debug, Clone)]
pub struct StateChange {
    /// The new state.
    pub state: State,
    /// Why; `None` for the initial state and for a successful connect.
    pub reason: Option<Reason>,
    /// Connections established so far (the current one included).
    pub connections: u64,
    /// Connection attempts since the last stable connection.
    pub attempt: u32,
    /// After a failure: how long the client waits before its next attempt
    /// (the backoff's draw), e.g. for a "reconnecting in 3 s" display.
    /// `None` while an attempt is under way, when connected, and in the
    /// terminal states.
    pub retry_in: Option<std::time::Duration>,
}
