//! The decisions of the ChatUp nginx module, in plain safe Rust.
//!
//! The module (`ngx-chatup`) only moves bytes between nginx and these
//! functions; everything that can be wrong with a request is found here, so
//! it is unit-tested without nginx.

pub mod body;
pub mod counters;
pub mod error;
pub mod post;
pub mod query;
pub mod readers;
pub mod subscribe;
pub mod text;
pub mod ticket;
pub mod token;
pub mod verified;

pub use error::{GateError, TokenFailure};
pub use post::{PostGate, PostLimits};
pub use token::{Identity, KeyError, TokenVerifier, VerifierConfig};
