//! The wire format of ChatUp, shared by the nginx module (which builds
//! envelopes), the sidecar (which stores and fans them out) and the tests.
//!
//! Kept free of I/O and of anything that starts threads, because the nginx
//! module links it into nginx worker processes.

pub mod envelope;
pub mod event;
pub mod frame;
pub mod id;
pub mod idempotency;
pub mod readers;
pub mod room;
pub mod rule;

pub use envelope::{Ack, Claims, Envelope, User};
pub use event::{CustomEvent, EventKind, RoomEvent, RESERVED_EVENTS};
pub use id::MessageIdGenerator;
pub use room::{
    additional_rooms, room_matches, validate_room, validate_room_pattern, AdditionalRoomsError,
    RoomNameError, ADDITIONAL_ROOMS_PARAM, MAX_ADDITIONAL_ROOMS, MAX_ROOM_LEN,
};
pub use rule::{RoomRule, Standing};
