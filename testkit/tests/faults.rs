//! The fault-injection suite: each ordinary fault under continuous posting
//! through two chat workers, with readers on both that resume by
//! themselves, on the shipped configuration. For every fault, every
//! message answered 202 reaches every reader exactly once (after
//! dropping the ids a resume brings again, as the client does) and in
//! order; every other answer is a 503 with a JSON error (or no answer at
//! all while a worker's nginx is down), and a post retried with its
//! idempotency key is finally acknowledged, so that no message is stored
//! without its poster knowing; nothing is restarted by hand but the part
//! the fault stopped.
//!
//! Each test prints a line of figures (run with `--nocapture`); they are
//! in docs/operations.md.

use std::time::{Duration, Instant};

use chatup_testkit::clients::eventually;
use chatup_testkit::load::{
    check_acknowledged_delivered, readers_on, Posted, Poster, ResumingReader,
};
use chatup_testkit::process::WorkerOptions;
use chatup_testkit::proxy::Proxy;
use chatup_testkit::{ChatWorker, Dispatcher, Redis};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const ROOM: &str = "load";
const POST_EVERY: Duration = Duration::from_millis(100);
/// Acknowledged posts to see after the fault is over before stopping.
const AFTER_RECOVERY: usize = 10;

struct Scene {
    redis: Redis,
    a: ChatWorker,
    b: ChatWorker,
    readers: Vec<ResumingReader>,
}

impl Scene {
    async fn start(redis: Redis, options_a: WorkerOptions) -> Self {
        let a = ChatWorker::start_with(&redis, options_a).unwrap();
        let b = ChatWorker::start(&redis).unwrap();
        let readers = readers_on(&[&a, &b], ROOM).await;
        Self {
            redis,
            a,
            b,
            readers,
        }
    }

    fn poster(&self) -> Poster {
        Poster::start(vec![self.a.base_url(), self.b.base_url()], ROOM, POST_EVERY)
    }
}

/// Waits until the poster has `count` acknowledged messages.
async fn until_acked(poster: &Poster, count: usize, what: &str) {
    eventually(what, Duration::from_secs(30), async || {
        (poster.acked_count() >= count).then_some(())
    })
    .await;
}

/// Runs `fault` under load and checks acknowledged against delivered.
async fn under_load(name: &str, scene: &mut Scene, fault: impl AsyncFnOnce(&mut Scene, &Poster)) {
    let poster = scene.poster();
    until_acked(&poster, 5, "posting under way").await;
    let started = Instant::now();
    fault(scene, &poster).await;
    let recovered = poster.acked_count();
    until_acked(
        &poster,
        recovered + AFTER_RECOVERY,
        "posting after the fault",
    )
    .await;
    let fault_took = started.elapsed();
    let posted = poster.stop().await;
    check(name, scene, &posted, fault_took).await;
}

async fn check(name: &str, scene: &Scene, posted: &Posted, fault_took: Duration) {
    let figures = check_acknowledged_delivered(name, &scene.readers, posted).await;
    println!(
        "FAULT {name}: {figures}, fault to recovery {:.1} s",
        fault_took.as_secs_f64(),
    );
}

/// Waits until the poster saw `count` posts refused or unanswered: the
/// fault is felt.
async fn until_failed(poster: &Poster, count: usize) {
    eventually("posts refused", Duration::from_secs(20), async || {
        (poster.failed_count() >= count).then_some(())
    })
    .await;
}

/// Waits until the readers on worker a (the first two) reconnected.
async fn readers_of_a_reconnected(scene: &Scene) {
    eventually(
        "worker a's readers reconnected",
        Duration::from_secs(10),
        async || {
            scene.readers[..2]
                .iter()
                .all(|r| r.reconnects() > 0)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn sidecar_killed_and_restarted() {
    let mut scene = Scene::start(Redis::start().unwrap(), WorkerOptions::default()).await;
    under_load(
        "sidecar kill -9 + restart",
        &mut scene,
        async |scene, poster| {
            scene.a.kill_sidecar();
            // Posts through worker a are refused while its sidecar is down.
            until_failed(poster, 5).await;
            scene.a.start_sidecar().unwrap();
        },
    )
    .await;
}

/// Redis is killed under load and started again on the same port.
async fn redis_killed_and_restarted(name: &str, redis: Redis) {
    let mut scene = Scene::start(redis, WorkerOptions::default()).await;
    under_load(name, &mut scene, async |scene, poster| {
        scene.redis.stop();
        until_failed(poster, 5).await;
        scene.redis.restart().unwrap();
    })
    .await;
}

#[tokio::test]
async fn redis_killed_and_restarted_empty() {
    let redis = Redis::start().unwrap();
    redis_killed_and_restarted("redis kill -9 + restart, no persistence", redis).await;
}

#[tokio::test]
async fn redis_killed_and_restarted_with_its_data() {
    let redis = Redis::start_persistent().unwrap();
    redis_killed_and_restarted("redis kill -9 + restart, appendfsync always", redis).await;
}

#[tokio::test]
async fn redis_link_goes_half_open() {
    let redis = Redis::start().unwrap();
    let proxy = Proxy::start(redis.port).unwrap();
    let options = WorkerOptions {
        redis_url: Some(format!("redis://127.0.0.1:{}", proxy.port)),
        ..Default::default()
    };
    let mut scene = Scene::start(redis, options).await;
    under_load(
        "redis link half-open (blackholed)",
        &mut scene,
        async |scene, poster| {
            proxy.blackhole_open_connections();
            // Worker b keeps acknowledging; worker a must notice and reconnect.
            let acked = poster.acked_count();
            until_acked(poster, acked + 20, "posting through the healthy worker").await;
            eventually(
                "worker a reconnected to redis",
                Duration::from_secs(20),
                async || {
                    let log = scene.a.sidecar_log();
                    (log.contains("replacing the connection")
                        && log.contains("redis subscription restored"))
                    .then_some(())
                },
            )
            .await;
        },
    )
    .await;
}

#[tokio::test]
async fn nginx_worker_processes_killed() {
    let mut scene = Scene::start(Redis::start().unwrap(), WorkerOptions::default()).await;
    under_load(
        "nginx worker processes kill -9",
        &mut scene,
        async |scene, _poster| {
            for pid in scene.a.nginx_worker_pids() {
                kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
            }
            readers_of_a_reconnected(scene).await;
        },
    )
    .await;
}

#[tokio::test]
async fn nginx_restarted() {
    let mut scene = Scene::start(Redis::start().unwrap(), WorkerOptions::default()).await;
    under_load("nginx full restart", &mut scene, async |scene, _poster| {
        scene.a.restart_nginx().unwrap();
        readers_of_a_reconnected(scene).await;
    })
    .await;
}

#[tokio::test]
async fn nginx_stuck_for_seconds() {
    let mut scene = Scene::start(Redis::start().unwrap(), WorkerOptions::default()).await;
    under_load(
        "nginx workers stopped (SIGSTOP) 4 s",
        &mut scene,
        async |scene, poster| {
            let pids = scene.a.nginx_worker_pids();
            for pid in &pids {
                kill(Pid::from_raw(*pid as i32), Signal::SIGSTOP).unwrap();
            }
            // Posts through worker a get no answer meanwhile.
            until_failed(poster, 2).await;
            for pid in &pids {
                kill(Pid::from_raw(*pid as i32), Signal::SIGCONT).unwrap();
            }
        },
    )
    .await;
}

#[tokio::test]
async fn dispatcher_killed() {
    let mut scene = Scene::start(Redis::start().unwrap(), WorkerOptions::default()).await;
    let dispatcher = Dispatcher::start(&scene.redis).unwrap();
    under_load(
        "dispatcher killed and restarted",
        &mut scene,
        async |scene, _poster| {
            drop(dispatcher);
            let again = Dispatcher::start(&scene.redis).unwrap();
            let (status, body) = chatup_testkit::clients::join_room(&again, ROOM, None).await;
            assert_eq!(status, 200, "{body}");
        },
    )
    .await;
}
