//! What the benchmarks share: the server under load (ChatUp, or raw nchan
//! as the reference), the CPU time and memory of its processes from
//! `/proc`, and latency percentiles.
//!
//! Only the server's processes are counted (nginx's master and workers,
//! the sidecars, Redis), never the load generator, which shares the
//! machine.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::clients::Frame;
use crate::process::{children_of, WorkerOptions};
use crate::{token_for, ChatWorker, RawNchan, Redis};

/// User + system CPU time of `pid` so far, in milliseconds (0 once gone).
pub fn cpu_ms(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name (which may hold spaces): utime and
    // stime are the 14th and 15th fields overall.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // Linux's USER_HZ is 100 on every architecture it runs chat servers on.
    ticks * 10
}

/// Proportional set size of a process in KiB, whole and by kind: its
/// private memory plus its share of what it shares (nchan's shared memory
/// zone is counted once over the nginx workers, not once per worker).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pss {
    pub total: i64,
    /// Heap and stacks.
    pub anon: i64,
    /// Pages of files: the program's and libraries' code, first touched.
    pub file: i64,
    /// Shared memory: nginx's zones.
    pub shmem: i64,
}

impl Pss {
    pub fn of(pid: u32) -> Self {
        let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        let field = |name: &str| -> i64 {
            text.lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        Self {
            total: field("Pss:"),
            anon: field("Pss_Anon:"),
            file: field("Pss_File:"),
            shmem: field("Pss_Shmem:"),
        }
    }

    pub fn minus(self, earlier: Pss) -> Pss {
        Pss {
            total: self.total - earlier.total,
            anon: self.anon - earlier.anon,
            file: self.file - earlier.file,
            shmem: self.shmem - earlier.shmem,
        }
    }
}

impl std::fmt::Display for Pss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (anon {}, file {}, shmem {})",
            self.total, self.anon, self.file, self.shmem
        )
    }
}

/// The `p`-th percentile of sorted `values`.
pub fn percentile(values: &[u64], p: f64) -> u64 {
    if values.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (values.len() - 1) as f64).round() as usize;
    values[rank.min(values.len() - 1)]
}

/// Prints `micros`' percentiles on one line; returns the p99.
pub fn summary(name: &str, mut micros: Vec<u64>) -> u64 {
    micros.sort_unstable();
    let ms = |v: u64| v as f64 / 1000.0;
    println!(
        "  {name:<26} n={:<8} p50={:>7.2} ms  p90={:>7.2} ms  p99={:>7.2} ms  max={:>7.2} ms",
        micros.len(),
        ms(percentile(&micros, 50.0)),
        ms(percentile(&micros, 90.0)),
        ms(percentile(&micros, 99.0)),
        ms(*micros.last().unwrap_or(&0)),
    );
    percentile(&micros, 99.0)
}

/// How long each message of `frame` took to arrive at `arrived`: its
/// `msg` carries the time (µs since the epoch) it was posted.
pub fn latencies(frame: &Frame, arrived: u64) -> impl Iterator<Item = u64> + '_ {
    frame
        .items
        .iter()
        .filter_map(|m| m["msg"].as_str()?.parse::<u64>().ok())
        .map(move |sent| arrived.saturating_sub(sent))
}

pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The server under load: ChatUp (Redis, chat workers with the shipped
/// configuration), or raw nchan (nginx with nchan alone, messages
/// published over HTTP one per request), the reference.
pub enum Target {
    Chatup {
        redis: Redis,
        workers: Vec<ChatWorker>,
    },
    RawNchan(RawNchan),
}

impl Target {
    pub fn chatup(workers: usize, options: WorkerOptions) -> anyhow::Result<Self> {
        let redis = Redis::start()?;
        let workers = (0..workers.max(1))
            .map(|_| ChatWorker::start_with(&redis, options.clone()))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self::Chatup { redis, workers })
    }

    pub fn raw_nchan() -> anyhow::Result<Self> {
        Ok(Self::RawNchan(RawNchan::start()?))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Target::Chatup { .. } => "chatup",
            Target::RawNchan(_) => "raw nchan",
        }
    }

    /// Where readers subscribe and posters post: one base URL per nginx.
    pub fn bases(&self) -> Vec<String> {
        match self {
            Target::Chatup { workers, .. } => workers.iter().map(ChatWorker::base_url).collect(),
            Target::RawNchan(raw) => vec![raw.base_url()],
        }
    }

    /// Every server process, named: nginx masters and workers, sidecars,
    /// Redis.
    pub fn processes(&self) -> Vec<(&'static str, u32)> {
        let nginx = |master: Option<u32>| {
            master
                .into_iter()
                .map(|pid| ("nginx master", pid))
                .chain(
                    master
                        .map(children_of)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|pid| ("nginx worker", pid)),
                )
                .collect::<Vec<_>>()
        };
        match self {
            Target::Chatup { redis, workers } => workers
                .iter()
                .flat_map(|w| {
                    nginx(w.nginx_pid())
                        .into_iter()
                        .chain(w.sidecar_pid().map(|pid| ("sidecar", pid)))
                })
                .chain(redis.pid().map(|pid| ("redis", pid)))
                .collect(),
            Target::RawNchan(raw) => nginx(raw.nginx_pid()),
        }
    }

    /// Every server process's pid.
    pub fn pids(&self) -> Vec<u32> {
        self.processes().into_iter().map(|(_, pid)| pid).collect()
    }

    /// The server's CPU time so far, in ms.
    pub fn cpu_ms(&self) -> u64 {
        self.pids().into_iter().map(cpu_ms).sum()
    }

    /// A poster as user `n`: posts `text` into `room` through `base`.
    pub fn poster(&self, n: usize) -> Poster {
        Poster {
            raw: matches!(self, Target::RawNchan(_)),
            client: reqwest::Client::new(),
            user: format!("poster{n}"),
            token: token_for(&format!("poster{n}"), "Poster"),
            ids: chatup_wire::MessageIdGenerator::new(),
        }
    }
}

/// Posts messages as one user: to ChatUp with the user's token, or to raw
/// nchan as the same frame ChatUp would deliver (one message in a frame,
/// the same envelope), so that readers get the same bytes from both.
pub struct Poster {
    raw: bool,
    client: reqwest::Client,
    user: String,
    token: String,
    ids: chatup_wire::MessageIdGenerator,
}

/// A user who posts in one room, with a token of their own: a chat's
/// usual shape, as against one account posting everywhere.
pub struct Chatter {
    user: String,
    token: String,
}

impl Chatter {
    pub fn new(user: &str) -> Self {
        Self {
            user: user.to_owned(),
            token: token_for(user, "Poster"),
        }
    }
}

impl Poster {
    /// Posts `text` as the poster's own user; Ok once accepted (202 from
    /// ChatUp, 201/202 from nchan).
    pub async fn post(&mut self, base: &str, room: &str, text: &str) -> anyhow::Result<()> {
        let (user, token) = (self.user.clone(), self.token.clone());
        self.post_as(base, room, text, &user, &token).await
    }

    /// Posts `text` as `chatter`.
    pub async fn post_as_chatter(
        &mut self,
        base: &str,
        room: &str,
        text: &str,
        chatter: &Chatter,
    ) -> anyhow::Result<()> {
        self.post_as(base, room, text, &chatter.user, &chatter.token)
            .await
    }

    async fn post_as(
        &mut self,
        base: &str,
        room: &str,
        text: &str,
        user: &str,
        token: &str,
    ) -> anyhow::Result<()> {
        let response = if self.raw {
            let envelope = chatup_wire::Envelope {
                id: self.ids.next_id(SystemTime::now()),
                room: room.to_string(),
                user: chatup_wire::User {
                    id: user.to_owned(),
                    public: serde_json::json!({ "name": "Poster" }).as_object().cloned(),
                    role: None,
                },
                msg: text.to_string(),
                ts: now_micros() / 1000,
                standing: Default::default(),
                claims: None,
            };
            let frame = chatup_wire::frame::encode_frame([serde_json::to_string(&envelope)?]);
            self.client
                .post(format!("{base}/pub/{room}"))
                .body(frame)
                .send()
                .await?
        } else {
            self.client
                .post(format!("{base}/rooms/{room}/messages"))
                .bearer_auth(token)
                .header("Content-Type", "application/json")
                .body(serde_json::json!({ "msg": text }).to_string())
                .send()
                .await?
        };
        let status = response.status().as_u16();
        anyhow::ensure!(
            matches!(status, 201 | 202),
            "POST answered {status}: {}",
            response.text().await.unwrap_or_default()
        );
        Ok(())
    }
}
