//! The readers zone: nginx shared memory holding the reader table
//! (`chatup_gate::readers`) that every worker process of this nginx
//! updates, and the lock around it.
//!
//! The table is allocated from the zone's slab pool so that its lock is the
//! pool's mutex: nginx's master force-unlocks that mutex when a worker dies
//! holding it (`ngx_unlock_mutexes`), so a killed worker cannot leave the
//! others waiting forever. A reload that keeps the zone's name and size
//! keeps the table (and its boot id); a restart makes a new one.

use std::ffi::c_void;
use std::ptr::NonNull;

use chatup_gate::counters::Counters;
use chatup_gate::readers::{self, Header, MemberSlot, ReaderTable, RoomSlot};
use ngx::ffi::{
    ngx_conf_t, ngx_int_t, ngx_shared_memory_add, ngx_shm_zone_t, ngx_shmtx_lock, ngx_shmtx_unlock,
    ngx_slab_calloc, ngx_slab_pool_t, ngx_str_t,
};

use crate::ffi::{ERROR, OK};
use crate::Module;

/// Where the table's parts are, at the start of its allocation, and the
/// module's counters (atomics: updated without the lock).
#[repr(C)]
struct Layout {
    /// [`LAYOUT_MAGIC`]: a zone kept across a reload was laid out by this
    /// build's code.
    magic: u64,
    rooms: u64,
    members: u64,
    counters: Counters,
}

/// Changes with the layout (its size, and a version for changes of the
/// same size). A reload that keeps the zone but loads a module that lays
/// it out otherwise is refused: nginx must be restarted for that.
const LAYOUT_MAGIC: u64 = 0xC4A7_0000_0000_0000
    | (3 << 32)
    | std::mem::size_of::<Layout>() as u64
    | (std::mem::size_of::<Header>() as u64) << 16;

/// The module's `http`-level configuration: the readers zone, if any.
#[derive(Default)]
pub struct MainConf {
    pub zone: Option<NonNull<ngx_shm_zone_t>>,
}

/// Declares the zone (from `chatup_readers_zone <size>`).
///
/// # Safety
/// `cf` is the configuration being parsed.
pub unsafe fn declare(cf: *mut ngx_conf_t, size: usize) -> Result<NonNull<ngx_shm_zone_t>, String> {
    // SAFETY: registers a zone in the cycle being configured; nginx copies
    // the name into its own memory.
    unsafe {
        let mut name = ngx_str_t::from_str((*cf).pool, "chatup_readers");
        let zone = ngx_shared_memory_add(
            cf,
            &mut name,
            size,
            std::ptr::addr_of_mut!(crate::ngx_http_chatup_module).cast(),
        );
        let zone = NonNull::new(zone).ok_or("cannot add the shared memory zone")?;
        let z = zone.as_ptr();
        if !(*z).data.is_null() {
            return Err("is duplicate".into());
        }
        (*z).init = Some(init_zone);
        // Marks the zone as ours until init replaces it with the table.
        (*z).data = std::ptr::NonNull::<c_void>::dangling().as_ptr();
        Ok(zone)
    }
}

/// nginx's zone initializer: keeps the table of the previous configuration
/// (`data`) on reload, or allocates a fresh one.
unsafe extern "C" fn init_zone(zone: *mut ngx_shm_zone_t, data: *mut c_void) -> ngx_int_t {
    // SAFETY: nginx calls this once per cycle with the zone mapped; `data`
    // is the previous cycle's `zone->data` when the zone was kept.
    unsafe {
        let pool = (*zone).shm.addr as *mut ngx_slab_pool_t;
        let kept = if !data.is_null() {
            Some(data)
        } else if (*zone).shm.exists != 0 {
            Some((*pool).data)
        } else {
            None
        };
        if let Some(region) = kept {
            if region.is_null() || (*(region as *const Layout)).magic != LAYOUT_MAGIC {
                ngx::ngx_log_error!(
                    ngx::ffi::NGX_LOG_EMERG,
                    (*zone).shm.log,
                    "chatup: the readers zone was laid out by another build of the module: restart nginx (a reload keeps the zone)"
                );
                return ERROR;
            }
            (*zone).data = region;
            return OK;
        }
        // The slab allocator keeps a page descriptor per page and rounds
        // up: an eighth of the zone is plenty for it.
        let usable = (*zone).shm.size / 8 * 7 - std::mem::size_of::<Layout>();
        let (rooms, members) = readers::capacities(usable);
        let bytes = std::mem::size_of::<Layout>() + readers::bytes_for(rooms, members);
        let region = ngx_slab_calloc(pool, bytes) as *mut u8;
        if region.is_null() {
            return ERROR;
        }
        let layout = region as *mut Layout;
        (*layout).magic = LAYOUT_MAGIC;
        (*layout).rooms = rooms as u64;
        (*layout).members = members as u64;
        (*pool).data = region.cast();
        (*zone).data = region.cast();
        let boot = boot_id();
        let _ = with_region(zone, |table| table.init(boot, now_secs()));
    }
    OK
}

/// A number that differs between two starts of nginx.
fn boot_id() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    now ^ (u64::from(std::process::id()) << 32) | 1
}

/// Unlocks the zone when dropped, also on unwinding.
struct Locked(*mut ngx_slab_pool_t);

impl Drop for Locked {
    fn drop(&mut self) {
        // SAFETY: created right after locking this pool's mutex.
        unsafe { ngx_shmtx_unlock(&mut (*self.0).mutex) };
    }
}

/// Runs `f` on the table of `zone`, under its lock. `None` if the zone has
/// no table (its initialization failed).
///
/// # Safety
/// `zone` is a readers zone of the running cycle (or of one that is still
/// mapped by this process).
pub unsafe fn with_region<R>(
    zone: *mut ngx_shm_zone_t,
    f: impl FnOnce(&mut ReaderTable<'_>) -> R,
) -> Option<R> {
    // SAFETY: the zone's memory is mapped in every nginx process; the
    // region was laid out by `init_zone` (Layout, Header, room slots,
    // member slots) and is only touched under the pool's mutex, so the
    // exclusive borrows below are not aliased while they live.
    unsafe {
        let pool = (*zone).shm.addr as *mut ngx_slab_pool_t;
        let region = (*zone).data as *mut u8;
        if pool.is_null() || region.is_null() || (*pool).data != region.cast() {
            return None;
        }
        ngx_shmtx_lock(&mut (*pool).mutex);
        let _locked = Locked(pool);
        let layout = &*(region as *const Layout);
        let header_at = region.add(std::mem::size_of::<Layout>());
        let rooms_at = header_at.add(std::mem::size_of::<Header>());
        let members_at = rooms_at.add(layout.rooms as usize * std::mem::size_of::<RoomSlot>());
        let header = &mut *(header_at as *mut Header);
        let rooms =
            std::slice::from_raw_parts_mut(rooms_at as *mut RoomSlot, layout.rooms as usize);
        let members =
            std::slice::from_raw_parts_mut(members_at as *mut MemberSlot, layout.members as usize);
        let mut table = ReaderTable::new(header, rooms, members);
        Some(f(&mut table))
    }
}

/// Runs `f` on the module's counters in the running cycle's readers zone;
/// nothing is counted without one.
pub fn with_counters(f: impl FnOnce(&Counters)) {
    let Some(zone) = current() else {
        return;
    };
    // SAFETY: the zone of the running cycle is mapped in this process; its
    // region starts with the `Layout` that `init_zone` laid out in zeroed
    // memory (zero is a valid count). The counters are atomics, only ever
    // borrowed shared, so no lock is needed.
    unsafe {
        let zone = zone.as_ptr();
        let pool = (*zone).shm.addr as *mut ngx_slab_pool_t;
        let region = (*zone).data as *mut u8;
        if pool.is_null() || region.is_null() || (*pool).data != region.cast() {
            return;
        }
        f(&(*(region as *const Layout)).counters);
    }
}

/// The readers zone of the running cycle, if one is configured.
pub fn current() -> Option<NonNull<ngx_shm_zone_t>> {
    use ngx::http::HttpModuleMainConf;
    // SAFETY: `ngx_cycle` is the running cycle of this process; nginx sets
    // it before any module hook or handler runs.
    let cycle = unsafe { ngx::ffi::ngx_cycle.as_ref()? };
    Module::main_conf(cycle)?.zone
}

/// This process's nginx slot number (kept by a respawned worker).
pub fn process_slot() -> usize {
    // SAFETY: written by nginx's master before forking this process.
    usize::try_from(unsafe { ngx::ffi::ngx_process_slot }).unwrap_or(usize::MAX)
}

/// A worker process starts: what its slot counted before is stale, and a
/// slot used before means its previous process died (see
/// `ReaderTable::process_started`).
pub fn this_process_started() {
    if let Some(zone) = current() {
        let slot = process_slot();
        // SAFETY: the zone of the running cycle.
        unsafe {
            with_region(zone.as_ptr(), |table| {
                table.process_started(slot, now_secs())
            })
        };
    }
}

/// A worker process exits: readers whose requests it did not close are
/// no longer read by anyone.
pub fn this_process_exits() {
    if let Some(zone) = current() {
        let slot = process_slot();
        // SAFETY: the zone of the running cycle.
        unsafe { with_region(zone.as_ptr(), |table| table.clear_process(slot)) };
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
