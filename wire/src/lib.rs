//! The wire format of ChatUp, shared by the nginx module (which builds
//! envelopes), the sidecar (which stores and fans them out) and the tests.
//!
//! Kept free of I/O and of anything that starts threads, because the nginx
//! module links it into nginx worker processes.

pub mod envelope;
pub mod event;
pub mod frame;
pub mod id;
pub mod room;

pub use envelope::{Ack, Envelope, User};
pub use event::{EventKind, RoomEvent};
pub use id::MessageIdGenerator;
pub use room::{validate_room, RoomNameError, MAX_ROOM_LEN};
