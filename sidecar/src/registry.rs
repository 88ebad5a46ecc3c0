//! The worker registry in Redis: which chat workers are alive, where
//! clients reach them, and how loaded they are.
//!
//! Each worker heartbeats its record every second or so; an entry whose
//! heartbeat is older than its TTL is dead, ignored by every reader and
//! removed by the next one. Liveness is judged with Redis's own clock
//! (`TIME` inside the scripts), so clock skew between machines does not
//! matter. All three hashes share one hash tag: each script below touches
//! one Redis Cluster slot.
//!
//! Load: a worker reports its readers at each heartbeat; a dispatcher that
//! sends a client to a worker adds one at once, in the same script that
//! chose it, so a burst of joins spreads over the workers instead of all
//! landing on the one that looked emptiest at the last heartbeat. A
//! heartbeat keeps counting the clients sent since the previous one that
//! have not connected yet (sent minus connections the worker saw open),
//! halving that number at each beat so that clients who never come stop
//! counting within seconds.
//!
//! Clients sent but not connected yet count for at most as many as the
//! readers the worker reported (and at least [`PENDING_FLOOR`]): a join is
//! anonymous and may never be followed by a connection, so a flood of
//! joins (with `exclude` naming the other worker) must not be able to make
//! a worker look empty or full. It can make one look at most twice as busy
//! as it is (or [`PENDING_FLOOR`] busier), for about a second.

use redis::Script;
use serde::{Deserialize, Serialize};

use crate::db::{Db, DbError};
use crate::keys::{
    REGISTRY_BASELINE, REGISTRY_EXPIRY, REGISTRY_LOAD, REGISTRY_PENDING, REGISTRY_RECORDS,
};

/// Clients sent to a worker with fewer readers than this weigh up to this
/// many on its load before they connect.
pub const PENDING_FLOOR: u64 = 32;

/// What a worker announces about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRecord {
    pub id: String,
    /// Where clients reach this worker's nginx, e.g. `https://chat3.example.com`.
    pub url: String,
    /// Readers connected to this worker's nchan at the last heartbeat.
    pub subscribers: u64,
    /// Rooms with readers on this worker.
    pub rooms: u64,
    /// Moving its readers away before a deploy: sent no client while
    /// another worker is live.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
}

/// Where a join is sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Pick {
    Worker(WorkerRecord),
    /// No worker is live.
    NoneLive,
    /// Every worker that could take the client is at capacity.
    AllAtCapacity,
}

/// A live worker as a reader of the registry sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveWorker {
    #[serde(flatten)]
    pub record: WorkerRecord,
    /// Readers at the last heartbeat plus clients sent to it since.
    pub load: u64,
    /// Milliseconds until the entry expires without a new heartbeat.
    pub expires_in_ms: u64,
}

// Shared by the scripts: Redis's clock in milliseconds, and removal of
// entries whose heartbeat is older than their TTL.
const PRELUDE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function live_ids()
  local ids = {}
  local expiry = redis.call('HGETALL', KEYS[2])
  for i = 1, #expiry, 2 do
    local id, at = expiry[i], tonumber(expiry[i + 1])
    if at and at >= now then
      ids[#ids + 1] = id
    else
      for k = 1, #KEYS do redis.call('HDEL', KEYS[k], id) end
    end
  end
  return ids
end
"#;

// KEYS: records, expiry, load, baseline, pending. ARGV: id, record JSON,
// readers, ttl ms, connections opened since the last heartbeat. Returns
// the ids of the live workers (this one included).
const HEARTBEAT: &str = r#"
local id = ARGV[1]
local function number(key) return tonumber(redis.call('HGET', key, id) or '0') or 0 end
local sent = math.max(0, number(KEYS[3]) - number(KEYS[4]))
local pending = math.floor(math.max(0, number(KEYS[5]) + sent - tonumber(ARGV[5])) / 2)
local load = tonumber(ARGV[3]) + pending
redis.call('HSET', KEYS[1], id, ARGV[2])
redis.call('HSET', KEYS[2], id, now + tonumber(ARGV[4]))
redis.call('HSET', KEYS[3], id, load)
redis.call('HSET', KEYS[4], id, load)
redis.call('HSET', KEYS[5], id, pending)
return live_ids()
"#;

// KEYS: records, expiry, load. ARGV: excluded id ('' for none), random
// seed, pending floor, capacity. Returns {id, record} of the least-loaded
// live worker, avoiding the excluded one and draining ones while another
// is live, and counts the client in its load, up to its readers plus
// max(readers, floor): a worker at that cap ("full" of clients that have
// not connected yet) is chosen only when every worker is, so that a burst
// does not all go, uncounted, to the one that reached its cap first. Nil
// when no worker is live; {'', ''} when every candidate is at capacity.
const PICK: &str = r#"
local function record(id)
  local ok, fields = pcall(cjson.decode, redis.call('HGET', KEYS[1], id) or '')
  if ok and type(fields) == 'table' then return fields end
  return {}
end
local function full(id, load)
  local readers = tonumber(record(id).subscribers) or 0
  return load >= readers + math.max(readers, tonumber(ARGV[3]))
end
local preferred, avoided = {}, {}
for _, id in ipairs(live_ids()) do
  if id == ARGV[1] or record(id).draining == true then
    avoided[#avoided + 1] = id
  else
    preferred[#preferred + 1] = id
  end
end
local candidates = preferred
if #candidates == 0 then candidates = avoided end
if #candidates == 0 then return false end
local best, best_load, best_full, lowest = {}, nil, nil, nil
for _, id in ipairs(candidates) do
  local load = tonumber(redis.call('HGET', KEYS[3], id) or '0') or 0
  if lowest == nil or load < lowest then lowest = load end
  local is_full = full(id, load)
  if best_load == nil or (best_full and not is_full)
      or (is_full == best_full and load < best_load) then
    best, best_load, best_full = {id}, load, is_full
  elseif is_full == best_full and load == best_load then
    best[#best + 1] = id
  end
end
-- Every candidate at capacity: nobody is sent anywhere (nor counted).
local capacity = tonumber(ARGV[4]) or 0
if capacity > 0 and lowest >= capacity then
  return {'', ''}
end
math.randomseed(tonumber(ARGV[2]))
local chosen = best[math.random(#best)]
if not best_full then
  redis.call('HINCRBY', KEYS[3], chosen, 1)
end
return {chosen, redis.call('HGET', KEYS[1], chosen)}
"#;

// KEYS: records, expiry, load. Returns a flat list: record, load,
// expires-in ms, for each live worker.
const LIST: &str = r#"
local out = {}
for _, id in ipairs(live_ids()) do
  local record = redis.call('HGET', KEYS[1], id)
  if record then
    out[#out + 1] = record
    out[#out + 1] = redis.call('HGET', KEYS[3], id) or '0'
    out[#out + 1] = tostring(tonumber(redis.call('HGET', KEYS[2], id)) - now)
  end
end
return out
"#;

// KEYS: all of the registry's hashes. ARGV: id.
const REMOVE: &str = r#"
for k = 1, #KEYS do redis.call('HDEL', KEYS[k], ARGV[1]) end
return 1
"#;

#[derive(Clone)]
pub struct Registry {
    db: Db,
    heartbeat: Script,
    pick: Script,
    list: Script,
    remove: Script,
}

impl Registry {
    pub fn new(db: Db) -> Self {
        let script = |body: &str| Script::new(&format!("{PRELUDE}{body}"));
        Self {
            db,
            heartbeat: script(HEARTBEAT),
            pick: script(PICK),
            list: script(LIST),
            remove: Script::new(REMOVE),
        }
    }

    fn keyed(script: &Script) -> redis::ScriptInvocation<'_> {
        let mut invocation = script.prepare_invoke();
        invocation
            .key(REGISTRY_RECORDS)
            .key(REGISTRY_EXPIRY)
            .key(REGISTRY_LOAD)
            .key(REGISTRY_BASELINE)
            .key(REGISTRY_PENDING);
        invocation
    }

    /// Announces `record` as alive for `ttl_ms`, with the connections it
    /// saw open since its last heartbeat; returns the ids of all live
    /// workers.
    pub async fn heartbeat(
        &self,
        record: &WorkerRecord,
        ttl_ms: u64,
        opened: u64,
    ) -> Result<Vec<String>, DbError> {
        let json = serde_json::to_string(record).map_err(|e| DbError::Corrupt(e.to_string()))?;
        let mut invocation = Self::keyed(&self.heartbeat);
        invocation
            .arg(&record.id)
            .arg(json)
            .arg(record.subscribers)
            .arg(ttl_ms)
            .arg(opened);
        let mut conn = self.db.conn();
        self.db.bounded(invocation.invoke_async(&mut conn)).await
    }

    /// Removes a worker at once (it is shutting down).
    pub async fn remove(&self, id: &str) -> Result<(), DbError> {
        let mut invocation = Self::keyed(&self.remove);
        invocation.arg(id);
        let mut conn = self.db.conn();
        self.db
            .bounded(invocation.invoke_async::<i64>(&mut conn))
            .await
            .map(drop)
    }

    /// Chooses the least-loaded live worker (ties at random), avoiding
    /// `exclude` unless it is the only one, and counts one more client on
    /// it; none when no worker is live, or when every candidate's load is
    /// at `capacity` or above (0: no capacity).
    pub async fn pick(&self, exclude: Option<&str>, capacity: u64) -> Result<Pick, DbError> {
        let mut invocation = Self::keyed(&self.pick);
        invocation
            .arg(exclude.unwrap_or(""))
            .arg(rand::random::<u32>())
            .arg(PENDING_FLOOR)
            .arg(capacity);
        let mut conn = self.db.conn();
        let chosen: Option<(String, String)> =
            self.db.bounded(invocation.invoke_async(&mut conn)).await?;
        match chosen {
            None => Ok(Pick::NoneLive),
            Some((id, _)) if id.is_empty() => Ok(Pick::AllAtCapacity),
            Some((_, json)) => parse_record(&json).map(Pick::Worker),
        }
    }

    /// Every live worker, sorted by id.
    pub async fn live(&self) -> Result<Vec<LiveWorker>, DbError> {
        let invocation = Self::keyed(&self.list);
        let mut conn = self.db.conn();
        let flat: Vec<String> = self.db.bounded(invocation.invoke_async(&mut conn)).await?;
        let mut workers = flat
            .chunks_exact(3)
            .map(|entry| {
                Ok(LiveWorker {
                    record: parse_record(&entry[0])?,
                    load: entry[1].parse().unwrap_or(0),
                    expires_in_ms: entry[2].parse().unwrap_or(0),
                })
            })
            .collect::<Result<Vec<_>, DbError>>()?;
        workers.sort_by(|a, b| a.record.id.cmp(&b.record.id));
        Ok(workers)
    }
}

fn parse_record(json: &str) -> Result<WorkerRecord, DbError> {
    serde_json::from_str(json).map_err(|e| DbError::Corrupt(format!("worker record: {e}")))
}
