//! What a worker checks a message against before anything reaches Redis:
//! bans and mutes (`bancache`), slow mode (`slowmode`), the per-user rate
//! limit (`ratelimit`) and the message filters (`filters`). All of it is in the worker's memory: no
//! Redis round trip per message. Then, if the site has one, its own
//! `publish_hook` (an HTTP call).

pub mod bancache;
pub mod filters;
pub mod publish_hook;
pub mod ratelimit;
pub mod slowmode;
