//! The ChatUp sidecar. `chatup worker` runs beside each chat worker's
//! nginx; see `worker` for its parts.

pub mod config;
pub mod devtoken;
pub mod keys;
pub mod nchan;
pub mod store;
pub mod worker;
