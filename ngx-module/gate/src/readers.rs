//! The readers of one nginx, counted per room and per signed-in member, in
//! a table that lives in nginx's shared memory (the module hands this code
//! the memory, under the zone's lock; tests hand it plain vectors).
//!
//! Why counts are kept per nginx process slot: a worker process that dies
//! (killed, crashed) never runs the cleanups of its readers' requests. nginx
//! respawns it in the same slot, and the new process clears what the slot
//! held ([`ReaderTable::clear_process`]), so the counts stay true.
//!
//! Layout: a [`Header`], then fixed-size room slots and member slots, each
//! table an open-addressing hash table with linear probing and
//! backward-shift deletion (no tombstones, so probe lengths stay short
//! under churn). All-zero memory is an empty table. Keys are hashed with
//! FNV-1a: every process must compute the same hash, so nothing seeded per
//! process will do.
//!
//! Every change stamps the entry with the next sequence number; the sidecar
//! polls for the entries changed since the last number it saw. An entry
//! back at zero (no reader, not served) is deleted only once the sidecar
//! has seen it at zero (its `since` passed the entry's number).

use chatup_wire::readers::{channel, MemberConnections, ReaderChanges, RoomReaders};
use serde_json::value::RawValue;

/// nginx process slots counted; a process in a higher slot is refused
/// (nginx gives workers the lowest free slots, so this takes 60 and more
/// worker processes).
pub const MAX_PROCS: usize = 64;
pub const ROOM_MAX: usize = chatup_wire::MAX_ROOM_LEN;
pub const USER_MAX: usize = crate::token::MAX_SUB_LEN;
pub const PUBLIC_MAX: usize = crate::token::MAX_PUBLIC_LEN;
/// Message ids are ULIDs (26 characters).
pub const ID_MAX: usize = 32;
/// A table is full at this share of its slots (tenths), to keep probes short.
const MAX_LOAD_TENTHS: usize = 9;
const MAGIC: u64 = 0x6368_6174_7570_7232; // "chatupr2"

#[repr(C)]
pub struct Header {
    magic: u64,
    boot: u64,
    seq: u64,
    /// The newest sequence number the sidecar has seen everything up to.
    acked: u64,
    /// When the table was made (Unix seconds): nchan ids from before are
    /// from another nginx.
    started_secs: u64,
    /// Process slots that have started once (bit per slot).
    slots_started: u64,
    /// Starts in a slot that had started before, and when the last was.
    respawns: u64,
    respawned_secs: u64,
    /// Non-zero while the sidecar drains this nginx (a deploy): new
    /// readers are refused, so that they go to another worker.
    draining: u64,
    rooms_used: u64,
    members_used: u64,
    readers: [u32; MAX_PROCS],
}

#[repr(C)]
pub struct RoomSlot {
    used: u8,
    served: u8,
    name_len: u8,
    id_len: u8,
    /// When the room's channel was last deleted (its frames and their
    /// ids gone), in seconds after the table was made, plus one; 0: not
    /// since it was made. (Was padding: a zone kept by a reload reads 0.)
    reset_secs: u32,
    seq: u64,
    /// Non-zero once the current serving's channel was deleted (a drain
    /// disconnecting the readers that did not move): no reader is let
    /// back into it (see `check_draining`).
    channel_deleted: u8,
    _pad: [u8; 7],
    /// The sequence number that names the room's channel while it is
    /// served or being served (see `chatup_wire::readers::channel`); 0:
    /// none yet (the next serve request names a new channel).
    serving: u64,
    name: [u8; ROOM_MAX],
    last_id: [u8; ID_MAX],
    readers: [u32; MAX_PROCS],
}

#[repr(C)]
pub struct MemberSlot {
    used: u8,
    room_len: u8,
    user_len: u16,
    public_len: u16,
    _pad: [u8; 2],
    seq: u64,
    room: [u8; ROOM_MAX],
    user: [u8; USER_MAX],
    connections: [u16; MAX_PROCS],
    public: [u8; PUBLIC_MAX],
}

/// How many room and member slots fit in `bytes` of memory (an eighth of
/// it for rooms).
pub fn capacities(bytes: usize) -> (usize, usize) {
    let body = bytes.saturating_sub(std::mem::size_of::<Header>());
    let rooms = body / 8 / std::mem::size_of::<RoomSlot>();
    let members =
        (body - rooms * std::mem::size_of::<RoomSlot>()) / std::mem::size_of::<MemberSlot>();
    (rooms, members)
}

/// Bytes needed for `rooms` and `members` slots and the header.
pub fn bytes_for(rooms: usize, members: usize) -> usize {
    std::mem::size_of::<Header>()
        + rooms * std::mem::size_of::<RoomSlot>()
        + members * std::mem::size_of::<MemberSlot>()
}

/// Why a reader was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Full {
    #[error("this chat worker has as many readers as it takes ({limit})")]
    Readers { limit: u64 },
    #[error("this chat worker serves as many rooms as its readers zone holds")]
    Rooms,
    #[error("nginx process slot {0} is beyond what the readers zone counts")]
    ProcessSlot(usize),
    #[error("this chat worker is draining: try another one")]
    Draining,
}

/// A signed-in reader.
#[derive(Debug, Clone, Copy)]
pub struct MemberRef<'a> {
    pub id: &'a str,
    /// The token's `public` claim as JSON text ("" for none).
    pub public: &'a str,
}

/// A reader let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// The sidecar serves the room already: no need to ask it.
    pub served: bool,
    /// The member was recorded (false when the member table is full: the
    /// reader is then counted, not listed).
    pub member_counted: bool,
}

/// The table over its memory, borrowed for one locked operation.
pub struct ReaderTable<'a> {
    header: &'a mut Header,
    rooms: &'a mut [RoomSlot],
    members: &'a mut [MemberSlot],
}

fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hash = (hash ^ 0xff).wrapping_mul(0x0000_0100_0000_01b3);
        }
        for byte in *part {
            hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

/// What the generic probing code needs of a slot.
trait Slot {
    fn used(&self) -> bool;
    fn hash(&self) -> u64;
    fn clear(&mut self);
    fn copy_from(&mut self, other: &Self);
}

impl Slot for RoomSlot {
    fn used(&self) -> bool {
        self.used != 0
    }
    fn hash(&self) -> u64 {
        fnv1a(&[&self.name[..usize::from(self.name_len)]])
    }
    fn clear(&mut self) {
        self.used = 0;
        self.served = 0;
        self.name_len = 0;
        self.id_len = 0;
        self.reset_secs = 0;
        self.seq = 0;
        self.channel_deleted = 0;
        self.serving = 0;
        self.readers = [0; MAX_PROCS];
    }
    fn copy_from(&mut self, o: &Self) {
        self.used = o.used;
        self.served = o.served;
        self.name_len = o.name_len;
        self.id_len = o.id_len;
        self.reset_secs = o.reset_secs;
        self.seq = o.seq;
        self.serving = o.serving;
        self.channel_deleted = o.channel_deleted;
        self.name = o.name;
        self.last_id = o.last_id;
        self.readers = o.readers;
    }
}

impl RoomSlot {
    fn name(&self) -> &str {
        std::str::from_utf8(&self.name[..usize::from(self.name_len)]).unwrap_or_default()
    }
    fn total(&self) -> u64 {
        self.readers.iter().map(|n| u64::from(*n)).sum()
    }
}

impl Slot for MemberSlot {
    fn used(&self) -> bool {
        self.used != 0
    }
    fn hash(&self) -> u64 {
        fnv1a(&[
            &self.room[..usize::from(self.room_len)],
            &self.user[..usize::from(self.user_len)],
        ])
    }
    fn clear(&mut self) {
        self.used = 0;
        self.room_len = 0;
        self.user_len = 0;
        self.public_len = 0;
        self.seq = 0;
        self.connections = [0; MAX_PROCS];
    }
    fn copy_from(&mut self, o: &Self) {
        self.used = o.used;
        self.room_len = o.room_len;
        self.user_len = o.user_len;
        self.public_len = o.public_len;
        self.seq = o.seq;
        self.room = o.room;
        self.user = o.user;
        self.connections = o.connections;
        self.public[..usize::from(o.public_len)]
            .copy_from_slice(&o.public[..usize::from(o.public_len)]);
    }
}

impl MemberSlot {
    fn room(&self) -> &str {
        std::str::from_utf8(&self.room[..usize::from(self.room_len)]).unwrap_or_default()
    }
    fn user(&self) -> &str {
        std::str::from_utf8(&self.user[..usize::from(self.user_len)]).unwrap_or_default()
    }
    fn total(&self) -> u64 {
        self.connections.iter().map(|n| u64::from(*n)).sum()
    }
}

/// Where a key is, or where it would go.
enum Probe {
    Found(usize),
    Vacant(usize),
    Full,
}

fn probe<S: Slot>(slots: &[S], hash: u64, is_key: impl Fn(&S) -> bool) -> Probe {
    let cap = slots.len();
    if cap == 0 {
        return Probe::Full;
    }
    let mut i = (hash % cap as u64) as usize;
    for _ in 0..cap {
        let slot = &slots[i];
        if !slot.used() {
            return Probe::Vacant(i);
        }
        if is_key(slot) {
            return Probe::Found(i);
        }
        i = (i + 1) % cap;
    }
    Probe::Full
}

/// Removes slot `i`, moving later entries of its probe run back so that
/// every entry stays reachable from its home slot.
fn remove_at<S: Slot>(slots: &mut [S], mut i: usize) {
    let cap = slots.len();
    slots[i].clear();
    let mut j = i;
    loop {
        j = (j + 1) % cap;
        if !slots[j].used() {
            return;
        }
        let home = (slots[j].hash() % cap as u64) as usize;
        // Entry j may stay if its home lies cyclically in (i, j].
        let stays = if i <= j {
            i < home && home <= j
        } else {
            i < home || home <= j
        };
        if stays {
            continue;
        }
        let (a, b) = if i < j {
            let (left, right) = slots.split_at_mut(j);
            (&mut left[i], &right[0])
        } else {
            let (left, right) = slots.split_at_mut(i);
            (&mut right[0], &left[j])
        };
        a.copy_from(b);
        slots[j].clear();
        i = j;
    }
}

fn copy_str(dst: &mut [u8], src: &str) -> usize {
    let n = src.len().min(dst.len());
    dst[..n].copy_from_slice(&src.as_bytes()[..n]);
    n
}

impl<'a> ReaderTable<'a> {
    /// The table over its parts.
    pub fn new(
        header: &'a mut Header,
        rooms: &'a mut [RoomSlot],
        members: &'a mut [MemberSlot],
    ) -> Self {
        Self {
            header,
            rooms,
            members,
        }
    }

    /// Makes fresh (zeroed) memory a table of this nginx's life, `boot`
    /// naming it; memory that already is one (a reload kept the zone) is
    /// left as it is. Returns whether it was initialized.
    pub fn init(&mut self, boot: u64, now_secs: u64) -> bool {
        if self.header.magic == MAGIC {
            return false;
        }
        self.header.magic = MAGIC;
        self.header.boot = boot;
        self.header.started_secs = now_secs;
        self.header.seq = 0;
        self.header.acked = 0;
        true
    }

    fn next_seq(&mut self) -> u64 {
        self.header.seq += 1;
        self.header.seq
    }

    fn room_probe(&self, room: &str) -> Probe {
        probe(self.rooms, fnv1a(&[room.as_bytes()]), |s| s.name() == room)
    }

    fn member_probe(&self, room: &str, user: &str) -> Probe {
        probe(
            self.members,
            fnv1a(&[room.as_bytes(), user.as_bytes()]),
            |s| s.room() == room && s.user() == user,
        )
    }

    /// Starts or stops refusing new readers (the sidecar drains this nginx).
    ///
    /// Stopped (a drain cancelled, or a sidecar starting): the rooms whose
    /// channel the drain deleted are no longer served, so that their next
    /// reader has the room served afresh in a new channel rather than read
    /// the deleted one made again (see `chatup_wire::readers::channel`).
    pub fn set_draining(&mut self, draining: bool) {
        self.header.draining = u64::from(draining);
        if draining {
            return;
        }
        for i in 0..self.rooms.len() {
            if self.rooms[i].used() && self.rooms[i].channel_deleted != 0 {
                self.retire_serving(i);
            }
        }
    }

    /// The room in slot `i` is no longer served: its next reader has it
    /// served afresh, in a new channel (the sidecar replaces the room's
    /// task, and deletes the old channel, which closes whoever still
    /// reads it: they come back to the new one).
    fn retire_serving(&mut self, i: usize) {
        let seq = self.next_seq();
        let s = &mut self.rooms[i];
        s.served = 0;
        s.serving = 0;
        s.channel_deleted = 0;
        s.id_len = 0;
        s.seq = seq;
    }

    pub fn draining(&self) -> bool {
        self.header.draining != 0
    }

    /// While draining, only a reader resuming in a room served here gets
    /// in (a long-poll reader's next poll, an EventSource reconnecting):
    /// it moves on the room's `migrate` event like the others. A new
    /// reader goes to another worker, and so does one whose room's channel
    /// the drain deleted (nchan would make it again for it, and can stall
    /// readers of a channel made again: see `chatup_wire::readers::channel`).
    pub fn check_draining(&self, room: &str, resuming: bool) -> Result<(), Full> {
        if self.header.draining == 0 {
            return Ok(());
        }
        let served = matches!(self.room_probe(room),
            Probe::Found(i) if self.rooms[i].served != 0 && self.rooms[i].channel_deleted == 0);
        if resuming && served {
            Ok(())
        } else {
            Err(Full::Draining)
        }
    }

    /// Readers on this nginx, all rooms together.
    pub fn readers(&self) -> u64 {
        self.header.readers.iter().map(|n| u64::from(*n)).sum()
    }

    /// Counts a reader of `room` in process slot `slot`, unless the box
    /// already has `limit` readers (0: no limit) or the tables are full.
    pub fn admit(
        &mut self,
        room: &str,
        member: Option<MemberRef<'_>>,
        slot: usize,
        limit: u64,
    ) -> Result<Admitted, Full> {
        if slot >= MAX_PROCS {
            return Err(Full::ProcessSlot(slot));
        }
        if limit > 0 && self.readers() >= limit {
            return Err(Full::Readers { limit });
        }
        let served = self.count_in_room(room, slot)?;
        self.header.readers[slot] += 1;
        let member_counted = member.is_some_and(|m| self.count_member(room, m, slot));
        Ok(Admitted {
            served,
            member_counted,
        })
    }

    /// Counts a reader of `room` (in process slot `slot`) that reads it
    /// besides its own room, over the same connection: the room's count
    /// goes up, the box's does not (it is one reader, counted against
    /// `chatup_max_readers` once, by [`admit`](Self::admit)). Returns
    /// whether the sidecar serves the room already.
    pub fn admit_additional(&mut self, room: &str, slot: usize) -> Result<bool, Full> {
        if slot >= MAX_PROCS {
            return Err(Full::ProcessSlot(slot));
        }
        self.count_in_room(room, slot)
    }

    /// One more reader of `room` in `slot`; whether the room is served.
    fn count_in_room(&mut self, room: &str, slot: usize) -> Result<bool, Full> {
        let index = match self.room_probe(room) {
            Probe::Found(i) => i,
            Probe::Vacant(i)
                if (self.header.rooms_used as usize + 1) * 10
                    <= self.rooms.len() * MAX_LOAD_TENTHS =>
            {
                let s = &mut self.rooms[i];
                s.clear();
                s.used = 1;
                s.name_len = copy_str(&mut s.name, room) as u8;
                self.header.rooms_used += 1;
                i
            }
            _ => return Err(Full::Rooms),
        };
        let seq = self.next_seq();
        let s = &mut self.rooms[index];
        s.readers[slot] += 1;
        s.seq = seq;
        Ok(s.served != 0)
    }

    fn count_member(&mut self, room: &str, member: MemberRef<'_>, slot: usize) -> bool {
        if member.id.len() > USER_MAX || member.public.len() > PUBLIC_MAX {
            return false;
        }
        let index = match self.member_probe(room, member.id) {
            Probe::Found(i) => i,
            Probe::Vacant(i)
                if (self.header.members_used as usize + 1) * 10
                    <= self.members.len() * MAX_LOAD_TENTHS =>
            {
                let s = &mut self.members[i];
                s.clear();
                s.used = 1;
                s.room_len = copy_str(&mut s.room, room) as u8;
                s.user_len = copy_str(&mut s.user, member.id) as u16;
                self.header.members_used += 1;
                i
            }
            _ => return false,
        };
        let seq = self.next_seq();
        let s = &mut self.members[index];
        s.connections[slot] = s.connections[slot].saturating_add(1);
        // The newest token's public data wins (a renamed user reconnects).
        s.public_len = copy_str(&mut s.public, member.public) as u16;
        s.seq = seq;
        true
    }

    /// A reader counted by [`admit`](Self::admit) left.
    pub fn leave(&mut self, room: &str, member: Option<&str>, slot: usize) {
        if slot >= MAX_PROCS {
            return;
        }
        if self.uncount_in_room(room, slot) {
            self.header.readers[slot] = self.header.readers[slot].saturating_sub(1);
        }
        if let Some(user) = member {
            if let Probe::Found(i) = self.member_probe(room, user) {
                let seq = self.next_seq();
                let s = &mut self.members[i];
                s.connections[slot] = s.connections[slot].saturating_sub(1);
                s.seq = seq;
            }
        }
    }

    /// A reader counted by [`admit_additional`](Self::admit_additional)
    /// left.
    pub fn leave_additional(&mut self, room: &str, slot: usize) {
        if slot < MAX_PROCS {
            self.uncount_in_room(room, slot);
        }
    }

    /// One reader fewer of `room` in `slot`; whether there was one.
    fn uncount_in_room(&mut self, room: &str, slot: usize) -> bool {
        let Probe::Found(i) = self.room_probe(room) else {
            return false;
        };
        let seq = self.next_seq();
        let s = &mut self.rooms[i];
        s.seq = seq;
        if s.readers[slot] == 0 {
            return false;
        }
        s.readers[slot] -= 1;
        true
    }

    /// The sidecar serves `room` now (it answered the serve request).
    pub fn mark_served(&mut self, room: &str) {
        if let Probe::Found(i) = self.room_probe(room) {
            let seq = self.next_seq();
            let s = &mut self.rooms[i];
            s.served = 1;
            s.seq = seq;
        }
    }

    /// The channel the sidecar is to serve `room` in (a reader of it is
    /// counted and the room is not served): the one named for the room's
    /// current serving, or a new one if it has none (see
    /// `chatup_wire::readers::channel`).
    pub fn serving_channel(&mut self, room: &str) -> Option<String> {
        let Probe::Found(i) = self.room_probe(room) else {
            return None;
        };
        if self.rooms[i].serving == 0 {
            let serving = self.next_seq();
            self.rooms[i].serving = serving;
        }
        self.channel_at(i)
    }

    /// The last message nchan accepted in `room`'s current channel, if
    /// any (a serve request asked again, after a sidecar failed while
    /// filling the channel: the next one resumes after it).
    pub fn last_published(&self, room: &str) -> Option<String> {
        match self.room_probe(room) {
            Probe::Found(i) if self.rooms[i].serving != 0 && self.rooms[i].id_len > 0 => {
                let s = &self.rooms[i];
                Some(String::from_utf8_lossy(&s.last_id[..usize::from(s.id_len)]).into_owned())
            }
            _ => None,
        }
    }

    /// The channel of `room`'s current serving, if it has one.
    pub fn channel(&self, room: &str) -> Option<String> {
        match self.room_probe(room) {
            Probe::Found(i) => self.channel_at(i),
            _ => None,
        }
    }

    fn channel_at(&self, i: usize) -> Option<String> {
        let s = &self.rooms[i];
        (s.serving != 0).then(|| channel::name(s.name(), self.header.boot, s.serving))
    }

    /// The room slot whose current channel is `channel`.
    fn channel_probe(&self, channel: &str) -> Option<usize> {
        match self.room_probe(channel::room_of(channel)?) {
            Probe::Found(i) if self.channel_at(i).as_deref() == Some(channel) => Some(i),
            _ => None,
        }
    }

    /// Records the last message nchan accepted in `channel` (ignored for
    /// a channel the room no longer reads: a let-go task's last frame).
    pub fn record_published(&mut self, channel: &str, id: &str) {
        if id.len() > ID_MAX {
            return;
        }
        if let Some(i) = self.channel_probe(channel) {
            let s = &mut self.rooms[i];
            s.id_len = copy_str(&mut s.last_id, id) as u8;
        }
    }

    /// The sidecar wants to stop serving `room`: granted (true) only if
    /// nobody reads it, in the same critical section as admissions, so a
    /// reader arriving now either is counted before (and the room stays)
    /// or finds it not served (and asks the sidecar to serve it again).
    pub fn release(&mut self, room: &str) -> bool {
        let Probe::Found(i) = self.room_probe(room) else {
            return true;
        };
        if self.rooms[i].total() > 0 {
            return false;
        }
        self.retire_serving(i);
        true
    }

    /// A worker process starts in `slot`: what the slot counted is stale
    /// (its previous process died, or this is a fresh start), and if the
    /// slot was used before, nchan lost the frames of the channels that
    /// process owned.
    pub fn process_started(&mut self, slot: usize, now_secs: u64) {
        if slot >= MAX_PROCS {
            return;
        }
        let bit = 1u64 << slot;
        if self.header.slots_started & bit != 0 {
            self.header.respawns += 1;
            self.header.respawned_secs = now_secs;
        }
        self.header.slots_started |= bit;
        self.clear_process(slot);
    }

    /// Forgets what process slot `slot` counted: its process died or is
    /// exiting.
    pub fn clear_process(&mut self, slot: usize) {
        if slot >= MAX_PROCS {
            return;
        }
        for i in 0..self.rooms.len() {
            if self.rooms[i].used() && self.rooms[i].readers[slot] > 0 {
                let seq = self.next_seq();
                self.rooms[i].readers[slot] = 0;
                self.rooms[i].seq = seq;
            }
        }
        for i in 0..self.members.len() {
            if self.members[i].used() && self.members[i].connections[slot] > 0 {
                let seq = self.next_seq();
                self.members[i].connections[slot] = 0;
                self.members[i].seq = seq;
            }
        }
        self.header.readers[slot] = 0;
    }

    /// Records that `channel`, a room's current one, was deleted at
    /// `now_secs`: resume ids from before name frames that are gone (see
    /// `is_stale_resume_id`). Only while the room is served (a channel
    /// let go is nobody's). During a drain, readers may not come back into
    /// it (`check_draining`); outside one, the room is served afresh in a
    /// new channel (`retire_serving`).
    pub fn record_reset(&mut self, channel: &str, now_secs: u64) {
        if let Some(i) = self.channel_probe(channel) {
            if self.rooms[i].served == 0 {
                return;
            }
            let since_start = now_secs.saturating_sub(self.header.started_secs);
            self.rooms[i].reset_secs = u32::try_from(since_start + 1).unwrap_or(u32::MAX);
            self.rooms[i].channel_deleted = 1;
            // Outside a drain (an operator's DELETE, or a drain's last one
            // arriving after it was cancelled), nothing keeps readers out
            // of the channel nchan makes again: serve the room afresh.
            if self.header.draining == 0 {
                self.retire_serving(i);
            }
        }
    }

    /// Whether a reader's resume id (nchan's `<seconds>:<tag>`, one time
    /// for all the rooms of a multiplexed id) is from before this nginx
    /// started, a worker process was last respawned, or the channel of one
    /// of `rooms` was deleted: the channel was refilled or restarted
    /// since, and nchan mishandles such an id ("previous message id tags
    /// don't match": it skips messages, or sends nothing). The reader must
    /// start from the oldest frame instead (and drop the ids it has, as the
    /// client does). An id from that very second counts as stale: a few
    /// duplicates are harmless, a gap is not.
    pub fn is_stale_resume_id(&self, id: &str, rooms: &[&str]) -> bool {
        let reset = rooms
            .iter()
            .filter_map(|room| match self.room_probe(room) {
                Probe::Found(i) if self.rooms[i].reset_secs > 0 => {
                    Some(self.header.started_secs + u64::from(self.rooms[i].reset_secs) - 1)
                }
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let refilled = self
            .header
            .started_secs
            .max(self.header.respawned_secs)
            .max(reset);
        id.split(':')
            .next()
            .and_then(|secs| secs.trim().parse::<u64>().ok())
            .is_some_and(|secs| secs <= refilled)
    }

    /// The boot id, as the sidecar sees it.
    pub fn boot(&self) -> String {
        format!("{:016x}", self.header.boot)
    }

    /// What changed after `since` (everything if `boot` is not this
    /// table's). Entries at zero that the sidecar has seen at zero are
    /// deleted first.
    pub fn changes(&mut self, boot: &str, since: u64) -> ReaderChanges {
        let since = if boot == self.boot() { since } else { 0 };
        // Nothing changed since the last poll, which already removed what
        // the sidecar had seen at zero: no need to walk every slot (the
        // sidecar polls four times a second; the walk was nginx's largest
        // cost of the module's own in the many-rooms benchmark).
        let idle = since != 0 && since == self.header.seq && since == self.header.acked;
        self.header.acked = since;
        if idle {
            return ReaderChanges {
                boot: self.boot(),
                seq: self.header.seq,
                readers: self.readers(),
                respawns: self.header.respawns,
                rooms: Vec::new(),
                members: Vec::new(),
            };
        }
        self.collect_garbage();
        let rooms = self
            .rooms
            .iter()
            .filter(|s| s.used() && s.seq > since)
            .map(|s| RoomReaders {
                room: s.name().to_owned(),
                readers: s.total(),
                served: s.served != 0,
                last_id: (s.id_len > 0).then(|| {
                    String::from_utf8_lossy(&s.last_id[..usize::from(s.id_len)]).into_owned()
                }),
                channel: (s.serving != 0)
                    .then(|| channel::name(s.name(), self.header.boot, s.serving)),
            })
            .collect();
        let members = self
            .members
            .iter()
            .filter(|s| s.used() && s.seq > since)
            .map(|s| MemberConnections {
                room: s.room().to_owned(),
                id: s.user().to_owned(),
                public: std::str::from_utf8(&s.public[..usize::from(s.public_len)])
                    .ok()
                    .filter(|p| !p.is_empty())
                    .and_then(|p| RawValue::from_string(p.to_owned()).ok()),
                connections: s.total(),
            })
            .collect();
        ReaderChanges {
            boot: self.boot(),
            seq: self.header.seq,
            readers: self.readers(),
            respawns: self.header.respawns,
            rooms,
            members,
        }
    }

    fn collect_garbage(&mut self) {
        let acked = self.header.acked;
        let mut i = 0;
        while i < self.rooms.len() {
            let s = &self.rooms[i];
            if s.used() && s.served == 0 && s.total() == 0 && s.seq <= acked {
                remove_at(self.rooms, i);
                self.header.rooms_used -= 1;
                // Slot i may now hold an entry moved back: look again.
                continue;
            }
            i += 1;
        }
        let mut i = 0;
        while i < self.members.len() {
            let s = &self.members[i];
            if s.used() && s.total() == 0 && s.seq <= acked {
                remove_at(self.members, i);
                self.header.members_used -= 1;
                continue;
            }
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Zeroed memory for a table, as the zone gives it.
    struct Memory {
        header: Box<Header>,
        rooms: Vec<RoomSlot>,
        members: Vec<MemberSlot>,
    }

    fn zeroed<T>() -> T {
        // SAFETY: every field of these repr(C) structs is an integer or an
        // array of integers, for which all-zero bytes are valid.
        unsafe { std::mem::zeroed() }
    }

    impl Memory {
        fn new(rooms: usize, members: usize) -> Self {
            let mut memory = Self {
                header: Box::new(zeroed()),
                rooms: (0..rooms).map(|_| zeroed()).collect(),
                members: (0..members).map(|_| zeroed()).collect(),
            };
            memory.table().init(0xb007, 1_000);
            memory
        }
        fn table(&mut self) -> ReaderTable<'_> {
            ReaderTable::new(&mut self.header, &mut self.rooms, &mut self.members)
        }
    }

    const ANNA: MemberRef<'static> = MemberRef {
        id: "anna",
        public: r#"{"name":"Anna"}"#,
    };

    fn room_counts(changes: &ReaderChanges) -> Vec<(String, u64, bool)> {
        let mut rooms: Vec<_> = changes
            .rooms
            .iter()
            .map(|r| (r.room.clone(), r.readers, r.served))
            .collect();
        rooms.sort();
        rooms
    }

    #[test]
    fn readers_are_counted_per_room_and_members_listed_with_their_public_data() {
        let mut memory = Memory::new(16, 16);
        let mut table = memory.table();
        let first = table.admit("stage", Some(ANNA), 0, 0).unwrap();
        assert_eq!(
            first,
            Admitted {
                served: false,
                member_counted: true
            }
        );
        table.mark_served("stage");
        assert!(table.admit("stage", None, 1, 0).unwrap().served);
        table.admit("lobby", Some(ANNA), 1, 0).unwrap();
        let changes = table.changes("", 0);
        assert_eq!(changes.readers, 3);
        assert_eq!(
            room_counts(&changes),
            [("lobby".into(), 1, false), ("stage".into(), 2, true)]
        );
        assert_eq!(changes.members.len(), 2);
        assert!(changes
            .members
            .iter()
            .all(|m| m.id == "anna" && m.public.as_ref().unwrap().get() == ANNA.public));
    }

    #[test]
    fn a_poll_returns_only_what_changed_since_the_last_one_including_leaves() {
        let mut memory = Memory::new(16, 16);
        let mut table = memory.table();
        table.admit("stage", Some(ANNA), 0, 0).unwrap();
        table.admit("lobby", None, 0, 0).unwrap();
        let first = table.changes("", 0);
        table.leave("stage", Some("anna"), 0);
        let second = table.changes(&first.boot, first.seq);
        assert_eq!(room_counts(&second), [("stage".into(), 0, false)]);
        assert_eq!(second.members.len(), 1);
        assert_eq!(second.members[0].connections, 0);
        // Seen at zero: gone at the next poll, and not reported again.
        let third = table.changes(&second.boot, second.seq);
        assert!(third.rooms.is_empty() && third.members.is_empty());
        let all = table.changes("", 0);
        assert_eq!(room_counts(&all), [("lobby".into(), 1, false)]);
        assert!(all.members.is_empty());
    }

    #[test]
    fn an_idle_poll_answers_nothing_and_entries_seen_at_zero_still_go() {
        let mut memory = Memory::new(16, 16);
        let mut table = memory.table();
        table.admit("stage", Some(ANNA), 0, 0).unwrap();
        table.leave("stage", Some(ANNA.id), 0);
        let first = table.changes("", 0);
        assert_eq!(first.rooms.len(), 1);
        // Seen at zero: removed by the next poll, which answers nothing.
        let second = table.changes(&first.boot, first.seq);
        assert!(second.rooms.is_empty() && second.members.is_empty());
        assert_eq!(table.header.rooms_used, 0);
        assert_eq!(table.header.members_used, 0);
        // Idle: the same answer, and the same sequence.
        let third = table.changes(&second.boot, second.seq);
        assert!(third.rooms.is_empty());
        assert_eq!(third.seq, second.seq);
        // A change after an idle poll is seen.
        table.admit("stage", None, 1, 0).unwrap();
        let fourth = table.changes(&third.boot, third.seq);
        assert_eq!(room_counts(&fourth), [("stage".to_owned(), 1, false)]);
    }

    #[test]
    fn a_poll_from_another_boot_gets_everything() {
        let mut memory = Memory::new(16, 16);
        let mut table = memory.table();
        table.admit("stage", None, 0, 0).unwrap();
        let first = table.changes("", 0);
        assert_eq!(first.rooms.len(), 1);
        let stale = table.changes("0000000000000001", first.seq);
        assert_eq!(stale.rooms.len(), 1, "an unknown boot means since=0");
    }

    #[test]
    fn a_served_room_is_released_only_when_nobody_reads_it() {
        let mut memory = Memory::new(16, 16);
        let mut table = memory.table();
        table.admit("stage", None, 0, 0).unwrap();
        table.mark_served("stage");
        assert!(!table.release("stage"));
        table.leave("stage", None, 0);
        assert!(table.release("stage"));
        assert!(!table.admit("stage", None, 0, 0).unwrap().served);
        assert!(table.release("never-seen"));
    }

    #[test]
    fn a_served_room_without_readers_is_kept_until_released() {
        let mut memory = Memory::new(16, 16);
        let mut table = memory.table();
        table.admit("stage", None, 0, 0).unwrap();
        let channel = table.serving_channel("stage").unwrap();
        table.mark_served("stage");
        table.record_published(&channel, "01JABC");
        table.leave("stage", None, 0);
        let seen = table.changes("", 0);
        let again = table.changes(&seen.boot, seen.seq);
        assert!(again.rooms.is_empty());
        let all = table.changes("", 0);
        assert_eq!(all.rooms[0].last_id.as_deref(), Some("01JABC"));
        assert_eq!(all.rooms[0].channel.as_deref(), Some(channel.as_str()));
        assert!(all.rooms[0].served);
    }

    #[test]
    fn each_serving_of_a_room_reads_a_channel_of_its_own() {
        let mut memory = Memory::new(16, 16);
        let mut table = memory.table();
        table.init(0xabc, 1_000);
        table.admit("stage", None, 0, 0).unwrap();
        assert_eq!(table.channel("stage"), None, "not asked to serve yet");
        let first = table.serving_channel("stage").unwrap();
        assert_eq!(
            chatup_wire::readers::channel::room_of(&first),
            Some("stage")
        );
        // Readers waiting for the same serving ask for the same channel.
        table.admit("stage", None, 1, 0).unwrap();
        assert_eq!(table.serving_channel("stage").as_ref(), Some(&first));
        table.record_published(&first, "01JABC");
        assert_eq!(table.last_published("stage").as_deref(), Some("01JABC"));
        table.mark_served("stage");
        table.leave("stage", None, 0);
        table.leave("stage", None, 1);
        assert!(table.release("stage"));
        assert_eq!(table.channel("stage"), None);
        // A let-go task's last frame is not the next serving's.
        table.record_published(&first, "01JABD");
        assert_eq!(table.last_published("stage"), None);
        table.admit("stage", None, 0, 0).unwrap();
        let second = table.serving_channel("stage").unwrap();
        assert_ne!(first, second);
        let all = table.changes("", 0);
        assert_eq!(all.rooms[0].last_id, None);
        assert_eq!(all.rooms[0].channel.as_deref(), Some(second.as_str()));
    }

    #[test]
    fn the_reader_limit_refuses_the_excess() {
        let mut memory = Memory::new(16, 16);
        let mut table = memory.table();
        table.admit("a", None, 0, 2).unwrap();
        table.admit("b", None, 1, 2).unwrap();
        assert_eq!(
            table.admit("c", None, 0, 2),
            Err(Full::Readers { limit: 2 })
        );
        table.leave("a", None, 0);
        assert!(table.admit("c", None, 0, 2).is_ok());
    }

    #[test]
    fn an_additional_room_counts_its_reader_but_the_box_counts_one_connection() {
        let mut memory = Memory::new(16, 16);
        let mut table = memory.table();
        table.admit("lobby", None, 0, 1).unwrap();
        assert_eq!(table.admit_additional("news", 0), Ok(false));
        table.mark_served("news");
        assert_eq!(table.admit_additional("news", 1), Ok(true));
        assert_eq!(table.readers(), 1, "one connection, one reader of the box");
        let rooms = table.changes("", 0).rooms;
        let news = rooms.iter().find(|r| r.room == "news").unwrap();
        assert_eq!(news.readers, 2);
        // Not released while read as an additional room.
        assert!(!table.release("news"));
        table.leave_additional("news", 0);
        table.leave_additional("news", 1);
        table.leave_additional("news", 1);
        assert!(table.release("news"));
        assert_eq!(table.readers(), 1);
        table.leave("lobby", None, 0);
        assert_eq!(table.readers(), 0);
        assert_eq!(
            table.admit_additional("x", MAX_PROCS),
            Err(Full::ProcessSlot(MAX_PROCS))
        );
    }

    #[test]
    fn a_draining_table_refuses_new_readers_lets_resumes_in_and_the_others_leave() {
        let mut memory = Memory::new(16, 16);
        let mut table = memory.table();
        table.admit("a", Some(ANNA), 0, 0).unwrap();
        let channel = table.serving_channel("a").unwrap();
        table.mark_served("a");
        table.set_draining(true);
        assert!(table.draining());
        assert_eq!(table.check_draining("a", false), Err(Full::Draining));
        assert_eq!(
            table.check_draining("a", true),
            Ok(()),
            "a resume in a served room"
        );
        table.record_reset(&channel, 1);
        assert_eq!(
            table.check_draining("a", true),
            Err(Full::Draining),
            "a resume in a channel the drain deleted"
        );
        // Cancelled: that room is served afresh, in a new channel.
        table.set_draining(false);
        assert_eq!(table.channel("a"), None);
        assert!(!table.admit("a", None, 0, 0).unwrap().served);
        assert_ne!(table.serving_channel("a"), Some(channel));
        table.leave("a", None, 0);
        table.set_draining(true);
        assert_eq!(
            table.check_draining("b", true),
            Err(Full::Draining),
            "not served here"
        );
        table.leave("a", Some(ANNA.id), 0);
        assert_eq!(table.readers(), 0);
        table.set_draining(false);
        assert_eq!(table.check_draining("b", false), Ok(()));
    }

    #[test]
    fn a_dead_process_slot_is_cleared_and_reported() {
        let mut memory = Memory::new(16, 16);
        let mut table = memory.table();
        table.admit("stage", Some(ANNA), 3, 0).unwrap();
        table.admit("stage", None, 4, 0).unwrap();
        let seen = table.changes("", 0);
        table.clear_process(3);
        let after = table.changes(&seen.boot, seen.seq);
        assert_eq!(room_counts(&after), [("stage".into(), 1, false)]);
        assert_eq!(after.members[0].connections, 0);
        assert_eq!(after.readers, 1);
    }

    #[test]
    fn full_tables_refuse_rooms_and_count_members_without_listing_them() {
        let mut memory = Memory::new(2, 1);
        let mut table = memory.table();
        table.admit("a", Some(ANNA), 0, 0).unwrap();
        let second = table
            .admit(
                "a",
                Some(MemberRef {
                    id: "bob",
                    public: "",
                }),
                0,
                0,
            )
            .unwrap();
        assert!(!second.member_counted);
        assert_eq!(table.admit("b", None, 0, 0), Err(Full::Rooms));
        assert_eq!(
            table.admit("a", None, MAX_PROCS, 0),
            Err(Full::ProcessSlot(MAX_PROCS))
        );
    }

    #[test]
    fn churn_keeps_every_entry_reachable() {
        // Many rooms in few slots, removed in an order that exercises the
        // backward shift across the end of the table.
        let mut memory = Memory::new(64, 4);
        let names: Vec<String> = (0..50).map(|n| format!("room-{n}")).collect();
        let mut table = memory.table();
        for name in &names {
            table.admit(name, None, 0, 0).unwrap();
        }
        for (n, name) in names.iter().enumerate() {
            if n % 3 != 0 {
                table.leave(name, None, 0);
            }
        }
        let seen = table.changes("", 0);
        table.changes(&seen.boot, seen.seq); // deletes the rooms at zero
        for (n, name) in names.iter().enumerate() {
            let released = table.release(name);
            assert_eq!(released, n % 3 != 0, "{name}");
        }
        let all = table.changes("", 0);
        assert_eq!(all.rooms.len(), names.len().div_ceil(3));
        assert!(all.rooms.iter().all(|r| r.readers == 1));
    }

    #[test]
    fn a_reloaded_zone_keeps_its_table() {
        let mut memory = Memory::new(4, 4);
        memory.table().admit("a", None, 0, 0).unwrap();
        assert!(!memory.table().init(0xfeed, 2_000));
        assert_eq!(memory.table().boot(), format!("{:016x}", 0xb007));
        assert_eq!(memory.table().readers(), 1);
    }

    #[test]
    fn resume_ids_from_before_this_nginx_started_are_stale() {
        let mut memory = Memory::new(1, 1);
        let table = memory.table();
        assert!(table.is_stale_resume_id("999:3", &[]));
        assert!(table.is_stale_resume_id("1000:0", &[]), "the same second");
        assert!(!table.is_stale_resume_id("1001:0", &[]));
        assert!(!table.is_stale_resume_id("garbage", &[]));
        assert!(!table.is_stale_resume_id("", &[]));
    }

    #[test]
    fn a_deleted_channel_makes_older_resume_ids_of_its_room_stale() {
        let mut memory = Memory::new(16, 16);
        let mut table = memory.table();
        table.init(1, 1_000);
        table.admit("lobby", None, 0, 0).unwrap();
        table.admit_additional("news", 0).unwrap();
        let news = table.serving_channel("news").unwrap();
        // Emptied before it is served: its first readers have no frame yet.
        table.record_reset(&news, 1_400);
        assert!(!table.is_stale_resume_id("1400:0", &["news"]));
        table.mark_served("news");
        assert!(!table.is_stale_resume_id("1500:[2],3", &["lobby", "news"]));
        table.record_reset("news~00000001.999", 1_500);
        assert!(
            !table.is_stale_resume_id("1500:[2],3", &["lobby", "news"]),
            "another serving's channel"
        );
        table.record_reset(&news, 1_500);
        // Multiplexed ids carry one time for all their rooms.
        assert!(table.is_stale_resume_id("1500:[2],3", &["lobby", "news"]));
        assert!(table.is_stale_resume_id("1499:1", &["news"]));
        assert!(!table.is_stale_resume_id("1501:0", &["lobby", "news"]));
        assert!(
            !table.is_stale_resume_id("1500:1", &["lobby"]),
            "another room's reset"
        );
        table.record_reset("never-read~00000001.1", 1_600);
        assert!(!table.is_stale_resume_id("1550:0", &["never-read"]));
    }

    #[test]
    fn a_channel_deleted_outside_a_drain_has_its_room_served_afresh() {
        let mut memory = Memory::new(16, 16);
        let mut table = memory.table();
        table.admit("news", None, 0, 0).unwrap();
        let deleted = table.serving_channel("news").unwrap();
        table.mark_served("news");
        table.record_reset(&deleted, 1);
        assert_eq!(table.channel("news"), None);
        assert!(!table.admit("news", None, 1, 0).unwrap().served);
        assert_ne!(table.serving_channel("news"), Some(deleted));
    }

    #[test]
    fn a_respawned_process_makes_older_resume_ids_stale_and_is_reported() {
        let mut memory = Memory::new(4, 4);
        let mut table = memory.table();
        table.process_started(0, 1_000);
        table.process_started(1, 1_000);
        assert_eq!(table.changes("", 0).respawns, 0, "first starts");
        assert!(!table.is_stale_resume_id("1500:1", &[]));
        table.process_started(1, 2_000);
        assert_eq!(table.changes("", 0).respawns, 1);
        assert!(table.is_stale_resume_id("1500:1", &[]));
        assert!(!table.is_stale_resume_id("2001:0", &[]));
    }

    #[test]
    fn capacities_fit_the_memory() {
        let bytes = 8 << 20;
        let (rooms, members) = capacities(bytes);
        assert!(rooms > 1000 && members > 1000, "{rooms} {members}");
        assert!(bytes_for(rooms, members) <= bytes);
    }
}
