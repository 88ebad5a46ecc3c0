//! A live stream's hardest minutes, scaled down to a few hundred readers
//! on 3 chat workers (`chatup-bench storms` runs them big): a stream start,
//! the death of a worker with readers on it, and a rolling deploy that
//! drains every worker in turn. Readers behave as the JS client does
//! (`chatup_testkit::follower`); every message acknowledged during the
//! storm must reach every reader of its room, in order.

use std::process::Command;
use std::time::Duration;

use chatup_testkit::clients::{get_json, join_room};
use chatup_testkit::process::{chatup_bin, WorkerOptions};
use chatup_testkit::storms::{self, StormCluster};
use chatup_testkit::{ChatWorker, Dispatcher, Redis, SubscribeOptions, Subscriber, Transport};

const TIMEOUT: Duration = Duration::from_secs(60);
/// The dispatcher's `worker_capacity` in these tests.
const CAPACITY: u64 = 150;

#[tokio::test]
async fn a_stream_start_spreads_evenly_over_the_workers_and_nobody_misses_a_message() {
    let cluster = StormCluster::start(3, Some(CAPACITY)).await.unwrap();
    let start = storms::stream_start(&cluster, 240, TIMEOUT).await;
    println!("stream start: {start:?}");
    assert!(start.all_reading.is_some(), "not every reader got in");
    for &on in &start.spread {
        // 80 each when even; the dispatcher's pick counts clients it just
        // sent, so a burst cannot pile onto one worker.
        assert!(
            (50..=110).contains(&on),
            "uneven spread: {:?}",
            start.spread
        );
        assert!(on as u64 <= CAPACITY);
    }
    assert_eq!(
        start.delivery.total_missed(),
        0,
        "{}",
        start.delivery.line()
    );
    assert_eq!(start.delivery.out_of_order, 0, "{}", start.delivery.line());
    assert_eq!(start.delivery.given_up, 0);
    assert!(start.delivery.acked > 0);
}

#[tokio::test]
async fn a_dead_workers_readers_read_again_on_the_others_without_missing_a_message() {
    let mut cluster = StormCluster::start(3, Some(CAPACITY)).await.unwrap();
    let death = storms::worker_death(&mut cluster, 180, 6, TIMEOUT).await;
    println!("worker death: {death:?}");
    assert!(
        death.orphaned > 20,
        "too few readers on the victim: {death:?}"
    );
    assert!(death.all_back.is_some(), "readers left behind: {death:?}");
    for &on in &death.spread {
        assert!(on > 0 && on as u64 <= CAPACITY, "spread {:?}", death.spread);
    }
    assert_eq!(
        death.delivery.total_missed(),
        0,
        "{}",
        death.delivery.line()
    );
    assert_eq!(death.delivery.out_of_order, 0, "{}", death.delivery.line());
    assert_eq!(death.delivery.given_up, 0);
}

#[tokio::test]
async fn a_rolling_deploy_drains_every_worker_at_the_set_rate_without_losing_a_message() {
    let mut cluster = StormCluster::start(3, Some(CAPACITY)).await.unwrap();
    let rate = 20;
    let rolling = storms::rolling_drain(&mut cluster, 180, 6, rate, TIMEOUT).await;
    println!("rolling drain: {rolling:#?}");
    for step in &rolling.steps {
        assert!(step.drained, "{step:?}");
        if step.readers > 0 {
            // Every reader moved on the event, none was cut off.
            assert_eq!(step.migrated, step.readers, "{step:?}");
            assert_eq!(step.switched, 0, "{step:?}");
        }
        // Spread over readers / rate seconds, not all at once (a spike
        // would be every reader within the same second).
        if step.readers as u64 >= 3 * rate {
            assert!(
                step.peak_departures_per_sec as u64 <= 2 * rate,
                "a reconnect spike: {step:?}"
            );
        }
    }
    assert!(rolling.steps.iter().map(|s| s.readers).sum::<usize>() >= 180);
    assert_eq!(
        rolling.delivery.total_missed(),
        0,
        "{}",
        rolling.delivery.line()
    );
    assert_eq!(
        rolling.delivery.out_of_order,
        0,
        "{}",
        rolling.delivery.line()
    );
    assert_eq!(rolling.delivery.given_up, 0);
}

/// Runs `chatup drain` with `args` against `worker`; its exit status and
/// output.
fn chatup_drain(worker: &ChatWorker, args: &[&str]) -> (bool, String) {
    let output = Command::new(chatup_bin())
        .arg("drain")
        .arg("--listen")
        .arg(worker.dir().join("sidecar.sock"))
        .args(args)
        .output()
        .expect("chatup drain runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

async fn draining_flag(dispatcher: &Dispatcher, worker: &ChatWorker) -> Option<bool> {
    let (_, body) = get_json(&format!("{}/workers", dispatcher.operator_url())).await;
    body["workers"]
        .as_array()?
        .iter()
        .find(|w| w["id"] == worker.id.as_str())
        .map(|w| w["draining"].as_bool().unwrap_or(false))
}

#[tokio::test]
async fn a_draining_worker_takes_no_new_reader_is_sent_no_client_and_can_be_cancelled() {
    let redis = Redis::start().unwrap();
    let a = ChatWorker::start_with(&redis, WorkerOptions::default()).unwrap();
    let b = ChatWorker::start_with(&redis, WorkerOptions::default()).unwrap();
    let dispatcher = Dispatcher::start(&redis).unwrap();
    dispatcher.wait_for_workers(2).await;

    let (ok, output) = chatup_drain(&a, &["--rate", "0"]);
    assert!(!ok && output.contains("rate must be"), "{output}");
    let (ok, output) = chatup_drain(&a, &["--no-wait"]);
    assert!(ok, "{output}");
    assert!(output.contains("draining 0 readers"), "{output}");

    // nginx refuses new readers with a JSON 503 the client understands.
    let refused =
        Subscriber::open(Transport::WebSocket, &a, "r", SubscribeOptions::default()).await;
    assert!(refused.is_err(), "a draining worker let a reader in");
    let (status, body) = get_json(&format!("{}/sub/r", a.base_url())).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("draining"),
        "{body}"
    );

    // Dispatchers learn of it at once and send clients elsewhere.
    chatup_testkit::clients::eventually(
        "the drain announced",
        Duration::from_secs(5),
        async || (draining_flag(&dispatcher, &a).await == Some(true)).then_some(()),
    )
    .await;
    for _ in 0..10 {
        let (status, body) = join_room(&dispatcher, "r", None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["worker"]["id"],
            b.id.as_str(),
            "sent to the draining worker"
        );
    }

    // Cancelled: readers are let in again, and the worker offered again.
    let (ok, output) = chatup_drain(&a, &["--cancel"]);
    assert!(ok, "{output}");
    Subscriber::open(Transport::WebSocket, &a, "r", SubscribeOptions::default())
        .await
        .expect("readers are let in after the drain is cancelled");
    chatup_testkit::clients::eventually(
        "the cancel announced",
        Duration::from_secs(5),
        async || (draining_flag(&dispatcher, &a).await == Some(false)).then_some(()),
    )
    .await;
}

/// A drain disconnects the readers that did not move by deleting their
/// rooms' nchan channels. Cancelled afterwards, the worker serves those
/// rooms afresh in new channels: nchan 1.3.6 can stall a reader catching
/// up on a channel deleted and made again (docs/operations.md,
/// "Channels"). The next reader reads a new channel, with every message.
#[tokio::test]
async fn a_cancelled_drain_serves_the_rooms_it_emptied_in_new_channels() {
    let redis = Redis::start().unwrap();
    let worker = ChatWorker::start_with(&redis, WorkerOptions::default()).unwrap();
    let token = chatup_testkit::token_for("poster", "Poster");
    let mut acked = Vec::new();
    let mut post = async |text: &str| {
        let body = serde_json::json!({ "msg": text }).to_string();
        let (status, ack) = chatup_testkit::post_message(&worker, "r", Some(&token), &body).await;
        assert_eq!(status, 202, "{ack}");
        acked.push(ack["id"].as_str().unwrap().to_owned());
    };
    let open_reader = || {
        Subscriber::open(
            Transport::WebSocket,
            &worker,
            "r",
            SubscribeOptions::default(),
        )
    };
    let mut straggler = open_reader().await.unwrap();
    let drained = worker.channel_of("r").await.expect("served");
    post("before").await;
    assert_eq!(
        straggler
            .frames_until(1, Duration::from_secs(5))
            .await
            .len(),
        1
    );

    let (ok, output) = chatup_drain(&worker, &["--rate", "100", "--no-wait"]);
    assert!(ok, "{output}");
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while straggler.next().await.is_some() {}
    })
    .await;
    assert!(closed.is_ok(), "the straggler was not disconnected");
    let (ok, output) = chatup_drain(&worker, &["--cancel"]);
    assert!(ok, "{output}");
    for n in 0..3 {
        post(&format!("after {n}")).await;
    }

    let mut next = open_reader().await.unwrap();
    let channel = worker.channel_of("r").await.expect("served");
    assert_ne!(channel, drained, "the deleted channel is read again");
    let got: Vec<String> = chatup_testkit::clients::items(
        &next.frames_until(acked.len(), Duration::from_secs(5)).await,
    )
    .iter()
    .map(|m| m["id"].as_str().unwrap().to_owned())
    .collect();
    assert_eq!(got, acked, "every message, once, in order");
}
