//! Test harness for ChatUp: real processes, ports chosen at run time, temp
//! directories, readiness waits with timeouts, logs printed when a test
//! fails, everything stopped on drop.
//!
//! Binaries: `CHATUP_BIN` (default `target/debug/chatup`) and
//! `CHATUP_MODULE` (default `target/release/libngx_chatup.so`); `ci/test.sh`
//! builds both before running the tests.

pub mod bench;
pub mod certs;
pub mod clients;
pub mod cluster;
pub mod follower;
pub mod load;
pub mod process;
pub mod proxy;
pub mod sentinel;
pub mod storms;
pub mod token;

pub use clients::{
    post_message, post_message_retrying, Frame, SubscribeOptions, Subscriber, Transport,
};
pub use process::{ChatWorker, Dispatcher, RawNchan, Redis};
pub use token::{rs256_token, rs256_token_exactly, token_for};
