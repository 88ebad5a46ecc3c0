//! The ChatUp sidecar. `chatup worker` runs beside each chat worker's
//! nginx; `chatup dispatcher` sends clients to workers and serves stats
//! and history. See each role's module for its parts.

pub mod api_error;
pub mod bans;
pub mod config;
pub mod db;
pub mod devtoken;
pub mod dispatcher;
pub mod keys;
pub mod moderation;
pub mod nchan;
pub mod presence;
pub mod registry;
pub mod reporting;
pub mod store;
pub mod telemetry;
pub mod topology;
pub mod worker;
