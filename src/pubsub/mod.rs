//! Topics: the per-core registry of local subscribers and the cross-core interest table.

pub mod interest;
pub mod registry;

pub use interest::InterestTable;
pub use registry::{Registry, RegistryCapacity, Subscribed, SubscriberKey, Unsubscribed};
