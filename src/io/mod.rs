//! The connection task: reads, the answer to the HTTP request, and the dispatch of decoded messages to the handler's callbacks.

mod accept;
mod direct;
mod dispatch;
mod task;

pub(crate) use direct::drive;
pub(crate) use dispatch::{complete_join, flush, flush_some};
pub(crate) use task::serve;
