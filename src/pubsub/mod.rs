//! Topics without I/O: the per-core registry of local subscribers, the cross-core interest table, and a core's topics with its interest bits.

pub mod interest;
pub mod registry;
mod topics;

pub use interest::{CoreSet, InterestTable};
pub use registry::{Registry, RegistryCapacity, Subscribed, SubscriberKey, Unsubscribed};
pub(crate) use topics::CoreTopics;
