//! The embedding API: the [`Handler`] an application implements, the [`Ws`] its callbacks get, async [`Session`]s, and plain HTTP on the same port.

mod handler;
mod http;
#[cfg(feature = "json")]
mod json;
#[cfg(feature = "json")]
pub mod router;
mod session;
mod ws;

pub use handler::{Handler, HttpRequest, Message, Rejection, UpgradeRequest};
pub use http::{HttpCtx, HttpResponder, HttpResponse};
#[cfg(feature = "json")]
pub use json::{json_frame, JsonError};
pub use session::{SendError, Session, SpawnError, SESSION_QUEUE};
pub use ws::{SubscribeError, Ws};

/// The core state a handler `H` runs on.
pub(crate) type CoreOf<H> = crate::state::Core<H, <H as Handler>::Data, <H as Handler>::Local>;

/// Logs and counts a panic an application callback raised; `consequence`
/// says what it cost (e.g. "connection … is closed").
pub(crate) fn callback_panicked<H: Handler>(
    core: &CoreOf<H>,
    panic: &(dyn std::any::Any + Send),
    consequence: &str,
) {
    core.stats().handler_panics.bump(1);
    let msg = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    tracing::error!(
        core = core.id(),
        panic = msg,
        "a handler callback panicked; {consequence}"
    );
}
