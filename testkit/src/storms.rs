//! The storm scenarios of a live stream's hardest minutes, on a local
//! cluster (Redis, chat workers, a dispatcher), with readers that behave
//! as the JS client does around workers ([`Follower`]) and posters whose
//! acknowledged messages every reader must get:
//!
//! - [`stream_start`]: readers join one room all at once;
//! - [`worker_death`]: a chat worker with readers on it dies;
//! - [`rolling_drain`]: every worker in turn is drained (`chatup drain`)
//!   and restarted, as a deploy does.
//!
//! Each returns its figures; `testkit/tests/storms.rs` runs small versions
//! and asserts on them, `chatup-bench storms` runs big ones and prints them.

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::bench::cpu_ms;
use crate::clients::get_json;
use crate::follower::Follower;
use crate::load::{Posted, Poster};
use crate::process::{chatup_bin, WorkerOptions};
use crate::{ChatWorker, Dispatcher, Redis};

/// Redis, `workers` chat workers and a dispatcher refusing joins beyond
/// `capacity` readers per worker (if given).
pub struct StormCluster {
    pub workers: Vec<ChatWorker>,
    pub dispatcher: Dispatcher,
    pub http: reqwest::Client,
    /// Joins and subscriptions in flight at once, over all followers (the
    /// load generator's sockets are bounded; `ulimit -n`).
    pub gate: Arc<Semaphore>,
    pub redis: Redis,
    /// A room every follower reads besides its own, over the same
    /// connection (site-wide announcements), if set.
    pub also: Option<String>,
}

/// Joins and handshakes the load generator has in flight at once (as the
/// `storm` benchmark's `--in-flight`).
const IN_FLIGHT: usize = 256;

impl StormCluster {
    /// Workers with the shipped heartbeat (`WorkerOptions::for_benchmarks`).
    pub async fn start(workers: usize, capacity: Option<u64>) -> anyhow::Result<Self> {
        Self::start_with(workers, capacity, WorkerOptions::for_benchmarks()).await
    }

    /// The same with other worker options.
    pub async fn start_with(
        workers: usize,
        capacity: Option<u64>,
        options: WorkerOptions,
    ) -> anyhow::Result<Self> {
        let redis = Redis::start()?;
        let workers = (0..workers)
            .map(|_| ChatWorker::start_with(&redis, options.clone()))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let capacity = capacity.map(|c| c.to_string());
        let mut flags = Vec::new();
        if let Some(capacity) = &capacity {
            flags.extend(["--worker-capacity", capacity.as_str()]);
        }
        let dispatcher = Dispatcher::start_with(&redis.url(), &flags)?;
        dispatcher.wait_for_workers(workers.len()).await;
        Ok(Self {
            workers,
            dispatcher,
            // Thousands of followers share one client (and its pool).
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(IN_FLIGHT)
                .build()?,
            gate: Arc::new(Semaphore::new(IN_FLIGHT)),
            redis,
            also: None,
        })
    }

    /// `count` followers spread over `rooms`, all starting at once.
    pub fn followers(&self, rooms: &[String], count: usize) -> Vec<Follower> {
        (0..count)
            .map(|n| {
                Follower::start(
                    self.http.clone(),
                    self.gate.clone(),
                    &self.dispatcher.base_url(),
                    &rooms[n % rooms.len()],
                    self.also.as_deref(),
                )
            })
            .collect()
    }

    /// A poster per room, posting every `interval` through the workers
    /// whose indexes are in `through`.
    pub fn posters(&self, rooms: &[String], through: &[usize], interval: Duration) -> Vec<Poster> {
        let bases: Vec<String> = through
            .iter()
            .map(|&i| self.workers[i].base_url())
            .collect();
        rooms
            .iter()
            .map(|room| Poster::start(bases.clone(), room, interval))
            .collect()
    }

    /// A poster in the additional room (`also`), if there is one.
    pub fn also_poster(&self, through: &[usize], interval: Duration) -> Option<Poster> {
        let room = self.also.as_ref()?;
        self.posters(std::slice::from_ref(room), through, interval)
            .pop()
    }

    /// The workers as the dispatcher's operator API lists them.
    pub async fn registry(&self) -> Vec<serde_json::Value> {
        let (_, body) = get_json(&format!("{}/workers", self.dispatcher.operator_url())).await;
        body["workers"].as_array().cloned().unwrap_or_default()
    }

    /// The pids of the servers of the workers at `indexes` (nginx's
    /// processes and the sidecar).
    pub fn pids_of(&self, indexes: &[usize]) -> Vec<u32> {
        indexes
            .iter()
            .flat_map(|&i| {
                let w = &self.workers[i];
                w.nginx_worker_pids()
                    .into_iter()
                    .chain(w.nginx_pid())
                    .chain(w.sidecar_pid())
            })
            .collect()
    }
}

/// Followers reading, per worker id.
pub fn census(followers: &[Follower]) -> HashMap<String, usize> {
    let mut census = HashMap::new();
    for f in followers {
        if let Some(worker) = f.reading_on() {
            *census.entry(worker).or_insert(0) += 1;
        }
    }
    census
}

/// Followers reading on each of the workers at `indexes`.
fn spread(cluster: &StormCluster, followers: &[Follower], indexes: &[usize]) -> Vec<usize> {
    let census = census(followers);
    indexes
        .iter()
        .map(|&i| census.get(&cluster.workers[i].id).copied().unwrap_or(0))
        .collect()
}

/// Waits until every follower reads (on a worker for which `allowed`
/// holds), `timeout` at most; returns how long it took, or `None`.
pub async fn until_all_read(
    followers: &[Follower],
    allowed: impl Fn(&str) -> bool,
    timeout: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if followers
            .iter()
            .all(|f| f.reading_on().is_some_and(|w| allowed(&w)))
        {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Stops the posters (`also`: the additional room's, read by every
/// follower); waits (`timeout` at most) until every follower has every
/// acknowledged message of its rooms; returns the messages acknowledged
/// and, per follower, how many of its rooms' it missed and whether it got
/// each room's in the order they were acknowledged.
pub async fn settle(
    posters: Vec<Poster>,
    also: Option<Poster>,
    rooms: &[String],
    followers: &[Follower],
    timeout: Duration,
) -> Delivery {
    let mut acked: Vec<Posted> = Vec::new();
    for poster in posters {
        acked.push(poster.stop().await);
    }
    let also = match also {
        Some(poster) => Some(poster.stop().await),
        None => None,
    };
    // Each follower's rooms' acknowledged messages, a list per room.
    let of = |n: usize| {
        std::iter::once(&acked[n % rooms.len()].acked)
            .chain(also.as_ref().map(|p| &p.acked))
            .collect::<Vec<_>>()
    };
    let started = Instant::now();
    while started.elapsed() < timeout
        && !followers
            .iter()
            .enumerate()
            .all(|(n, f)| of(n).iter().all(|ids| f.has_all(ids)))
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let missed: Vec<usize> = followers
        .iter()
        .enumerate()
        .map(|(n, f)| {
            let ids = f.ids();
            let missing: Vec<Vec<&String>> = of(n)
                .iter()
                .map(|acked| acked.iter().filter(|id| !ids.contains(id)).collect())
                .collect();
            let count = missing.iter().map(Vec::len).sum();
            if count > 0 {
                // For the test's failure message: which room, which ids.
                eprintln!(
                    "reader {n} (room {}) missed, per room (its own, then the additional one): {missing:?}; it has {} ids",
                    rooms[n % rooms.len()],
                    ids.len()
                );
            }
            count
        })
        .collect();
    let out_of_order = followers
        .iter()
        .enumerate()
        .filter(|(n, f)| {
            let ids = f.ids();
            of(*n).iter().any(|acked| {
                let got: Vec<&String> = ids.iter().filter(|id| acked.contains(id)).collect();
                !got.iter().copied().eq(acked.iter())
            })
        })
        .count();
    Delivery {
        acked: acked.iter().chain(&also).map(|p| p.acked.len()).sum(),
        given_up: acked.iter().chain(&also).map(|p| p.given_up).sum(),
        missed,
        out_of_order,
    }
}

#[derive(Debug)]
pub struct Delivery {
    /// Messages acknowledged, all rooms.
    pub acked: usize,
    /// Posts never acknowledged (retries exhausted).
    pub given_up: usize,
    /// Per follower: acknowledged messages of its room it never got.
    pub missed: Vec<usize>,
    /// Followers whose messages came in another order than acknowledged.
    pub out_of_order: usize,
}

impl Delivery {
    pub fn total_missed(&self) -> usize {
        self.missed.iter().sum()
    }

    pub fn line(&self) -> String {
        format!(
            "{} messages acknowledged, {} missed by any reader ({} readers missed some), {} readers out of order, {} posts given up",
            self.acked,
            self.total_missed(),
            self.missed.iter().filter(|&&m| m > 0).count(),
            self.out_of_order,
            self.given_up
        )
    }
}

/// `p`-th percentile of `durations` (sorted here).
pub fn percentile(mut durations: Vec<Duration>, p: f64) -> Duration {
    if durations.is_empty() {
        return Duration::ZERO;
    }
    durations.sort();
    let rank = ((p / 100.0) * (durations.len() - 1) as f64).ceil() as usize;
    durations[rank.min(durations.len() - 1)]
}

/// Samples the CPU use of `pids` every 500 ms until `stop` is set, on a
/// thread of its own (the load generator's runtime may be too busy to be
/// on time); returns the highest share of one core seen over any interval
/// (1.0 = one core).
pub fn sample_peak_cpu(pids: Vec<u32>) -> (Arc<AtomicBool>, std::thread::JoinHandle<f64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let thread = std::thread::spawn(move || {
        let sample = |pids: &[u32]| (pids.iter().map(|&p| cpu_ms(p)).sum::<u64>(), Instant::now());
        let mut last = sample(&pids);
        let mut peak: f64 = 0.0;
        while !stopped.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(500));
            let now = sample(&pids);
            let wall_ms = now.1.duration_since(last.1).as_secs_f64() * 1000.0;
            peak = peak.max(now.0.saturating_sub(last.0) as f64 / wall_ms);
            last = now;
        }
        peak
    });
    (stop, thread)
}

// --- stream start ---------------------------------------------------------

#[derive(Debug)]
pub struct StreamStart {
    pub readers: usize,
    /// Until every reader reads.
    pub all_reading: Option<Duration>,
    /// Readers per worker once all read.
    pub spread: Vec<usize>,
    pub refused_joins: usize,
    pub delivery: Delivery,
}

/// `readers` readers join one room at once while it is posted to.
pub async fn stream_start(
    cluster: &StormCluster,
    readers: usize,
    timeout: Duration,
) -> StreamStart {
    let rooms = vec!["stream-start".to_owned()];
    let all: Vec<usize> = (0..cluster.workers.len()).collect();
    let posters = cluster.posters(&rooms, &all, Duration::from_millis(100));
    let also = cluster.also_poster(&all, Duration::from_millis(100));
    let followers = cluster.followers(&rooms, readers);
    let all_reading = until_all_read(&followers, |_| true, timeout).await;
    let spread = spread(cluster, &followers, &all);
    let delivery = settle(posters, also, &rooms, &followers, timeout).await;
    StreamStart {
        readers,
        all_reading,
        spread,
        refused_joins: followers.iter().map(Follower::refused_joins).sum(),
        delivery,
    }
}

// --- worker death ---------------------------------------------------------

#[derive(Debug)]
pub struct WorkerDeath {
    /// Readers on the worker that died.
    pub orphaned: usize,
    /// From the death until 99% and 100% of them read again.
    pub p99_back: Duration,
    pub all_back: Option<Duration>,
    /// Readers per surviving worker afterwards.
    pub spread: Vec<usize>,
    /// The survivors' highest CPU use meanwhile (1.0 = one core).
    pub peak_cpu: f64,
    pub delivery: Delivery,
}

/// `readers` readers over `rooms` rooms on every worker; worker 0 dies.
pub async fn worker_death(
    cluster: &mut StormCluster,
    readers: usize,
    rooms: usize,
    timeout: Duration,
) -> WorkerDeath {
    let rooms: Vec<String> = (0..rooms).map(|n| format!("death-{n}")).collect();
    let followers = cluster.followers(&rooms, readers);
    assert!(
        until_all_read(&followers, |_| true, timeout)
            .await
            .is_some(),
        "not every reader got in"
    );
    let victim = cluster.workers[0].id.clone();
    let orphans: Vec<usize> = followers
        .iter()
        .enumerate()
        .filter(|(_, f)| f.reading_on().as_deref() == Some(victim.as_str()))
        .map(|(n, _)| n)
        .collect();
    let survivors: Vec<usize> = (1..cluster.workers.len()).collect();
    let posters = cluster.posters(&rooms, &survivors, Duration::from_millis(100));
    let also = cluster.also_poster(&survivors, Duration::from_millis(100));
    let (stop_sampling, peak) = sample_peak_cpu(cluster.pids_of(&survivors));
    cluster.workers[0].kill();
    let died = Instant::now();
    let all_back = until_all_read(&followers, |w| w != victim, timeout)
        .await
        .map(|_| died.elapsed());
    let back: Vec<Duration> = orphans
        .iter()
        .filter_map(|&n| followers[n].outages().last().copied())
        .collect();
    stop_sampling.store(true, Ordering::Relaxed);
    let peak_cpu = tokio::task::spawn_blocking(move || peak.join().unwrap_or(0.0))
        .await
        .unwrap_or(0.0);
    let spread = spread(cluster, &followers, &survivors);
    let delivery = settle(posters, also, &rooms, &followers, timeout).await;
    WorkerDeath {
        orphaned: orphans.len(),
        p99_back: percentile(back, 99.0),
        all_back,
        spread,
        peak_cpu,
        delivery,
    }
}

// --- rolling drain --------------------------------------------------------

/// One worker's drain in a rolling deploy.
#[derive(Debug)]
pub struct DrainStep {
    pub worker: String,
    /// Readers on it when the drain started.
    pub readers: usize,
    /// `chatup drain`'s run, start to exit (it exits once none is left).
    pub took: Duration,
    pub drained: bool,
    /// Most readers leaving within one second.
    pub peak_departures_per_sec: usize,
    /// Readers that left by the `migrate` event, and that lost their
    /// connection instead (disconnected as stragglers).
    pub migrated: usize,
    pub switched: usize,
    /// What `chatup drain` printed.
    pub output: String,
}

#[derive(Debug)]
pub struct RollingDrain {
    pub rate: u64,
    pub steps: Vec<DrainStep>,
    pub delivery: Delivery,
}

/// Runs `chatup drain` against the worker listening on `socket` at `rate`
/// readers a second.
fn drain(socket: std::path::PathBuf, rate: u64, timeout: Duration) -> (bool, String) {
    let output = Command::new(chatup_bin())
        .arg("drain")
        .arg("--listen")
        .arg(socket)
        .args(["--rate", &rate.to_string()])
        .args(["--timeout-secs", &timeout.as_secs().to_string()])
        .output();
    match output {
        Ok(output) => (
            output.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        ),
        Err(e) => (false, e.to_string()),
    }
}

/// `readers` readers over `rooms` rooms; every worker in turn is drained at
/// `rate` readers a second, then restarted (nginx and sidecar) and
/// announced again, while every room is posted to.
pub async fn rolling_drain(
    cluster: &mut StormCluster,
    readers: usize,
    rooms: usize,
    rate: u64,
    timeout: Duration,
) -> RollingDrain {
    let rooms: Vec<String> = (0..rooms).map(|n| format!("deploy-{n}")).collect();
    let followers = cluster.followers(&rooms, readers);
    assert!(
        until_all_read(&followers, |_| true, timeout)
            .await
            .is_some(),
        "not every reader got in"
    );
    let all: Vec<usize> = (0..cluster.workers.len()).collect();
    let posters = cluster.posters(&rooms, &all, Duration::from_millis(100));
    let also = cluster.also_poster(&all, Duration::from_millis(100));
    let mut steps = Vec::new();
    for i in 0..cluster.workers.len() {
        let id = cluster.workers[i].id.clone();
        let on_it: Vec<usize> = followers
            .iter()
            .enumerate()
            .filter(|(_, f)| f.reading_on().as_deref() == Some(id.as_str()))
            .map(|(n, _)| n)
            .collect();
        let before: Vec<(usize, usize)> = on_it
            .iter()
            .map(|&n| (followers[n].migrations(), followers[n].switches()))
            .collect();
        let started = Instant::now();
        let socket = cluster.workers[i].dir().join("sidecar.sock");
        let (drained, output) = tokio::task::spawn_blocking(move || drain(socket, rate, timeout))
            .await
            .unwrap_or_else(|e| (false, e.to_string()));
        let took = started.elapsed();
        assert!(drained, "chatup drain of {id} failed: {output}");
        let mut departures: Vec<Instant> = on_it
            .iter()
            .filter_map(|&n| followers[n].departures().last().copied())
            .filter(|&at| at >= started)
            .collect();
        departures.sort();
        let peak_departures_per_sec = departures
            .iter()
            .enumerate()
            .map(|(k, &at)| {
                departures[k..]
                    .iter()
                    .take_while(|&&later| later.duration_since(at) < Duration::from_secs(1))
                    .count()
            })
            .max()
            .unwrap_or(0);
        let (mut migrated, mut switched) = (0, 0);
        for (&n, &(m, s)) in on_it.iter().zip(&before) {
            migrated += followers[n].migrations() - m;
            switched += followers[n].switches() - s;
        }
        // The deploy: a new nginx and sidecar, announced again.
        let worker = &mut cluster.workers[i];
        worker.stop_sidecar();
        worker.restart_nginx().expect("nginx restarts");
        worker.start_sidecar().expect("the sidecar restarts");
        let announced = async || {
            let registry = cluster.registry().await;
            (registry.len() == cluster.workers.len()
                && registry
                    .iter()
                    .all(|w| w["draining"].as_bool() != Some(true)))
            .then_some(())
        };
        crate::clients::eventually("the restarted worker announced", timeout, announced).await;
        steps.push(DrainStep {
            worker: id,
            readers: on_it.len(),
            took,
            drained,
            peak_departures_per_sec,
            migrated,
            switched,
            output,
        });
    }
    let delivery = settle(posters, also, &rooms, &followers, timeout).await;
    RollingDrain {
        rate,
        steps,
        delivery,
    }
}
