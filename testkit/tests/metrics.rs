//! Prometheus metrics of `chatup worker` and `chatup dispatcher`, scraped
//! from their `metrics_listen` while real posts, refusals, readers and
//! joins go through real processes.

use std::time::{Duration, Instant};

use chatup_testkit::process::{free_port, Dispatcher, WorkerOptions};
use chatup_testkit::token::now_secs;
use chatup_testkit::{
    post_message, rs256_token, token_for, ChatWorker, Redis, Subscriber, Transport,
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

async fn scrape(port: u16) -> String {
    let response = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("the metrics endpoint answers");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    response.text().await.unwrap()
}

/// The value of one series (`name` or `name{label="value"}`), if shown.
fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// Scrapes until `check` holds for the metrics, or fails after [`WAIT`]
/// with the last scrape.
async fn scrape_until(port: u16, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let metrics = scrape(port).await;
        if check(&metrics) {
            return metrics;
        }
        assert!(
            Instant::now() < deadline,
            "{what}, never seen in:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn worker_metrics_count_acceptances_refusals_frames_and_readers() {
    let redis = Redis::start().unwrap();
    let metrics_port = free_port();
    let worker = ChatWorker::start_with(
        &redis,
        WorkerOptions {
            // Top-level keys first; five posts per user, then 429.
            config_toml: format!(
                "metrics_listen = \"127.0.0.1:{metrics_port}\"\n\
                 [rate_limit]\nrate_per_sec = 0\nuser_rate_per_sec = 0.01\nuser_burst = 5\n"
            ),
            ..WorkerOptions::default()
        },
    )
    .unwrap();
    let before = scrape(metrics_port).await;
    assert_eq!(
        value(&before, "chatup_messages_accepted_total"),
        None,
        "nothing accepted yet:\n{before}"
    );
    assert!(before.contains("chatup_build_info{version=\""), "{before}");

    let mut reader = Subscriber::connect(Transport::WebSocket, &worker, "lobby", None)
        .await
        .unwrap();
    let token = token_for("anna", "Anna");
    for n in 0..5 {
        let body = json!({ "msg": format!("hello {n}") }).to_string();
        let (status, answer) = post_message(&worker, "lobby", Some(&token), &body).await;
        assert_eq!(status, 202, "{answer}");
    }
    let body = json!({ "msg": "one too many" }).to_string();
    let (status, answer) = post_message(&worker, "lobby", Some(&token), &body).await;
    assert_eq!(status, 429, "{answer}");
    let (status, answer) = post_message(&worker, "lobby", None, &body).await;
    assert_eq!(status, 401, "{answer}");
    let expired = rs256_token(&json!({"sub": "bob", "exp": now_secs() - 3600}));
    let (status, answer) = post_message(&worker, "lobby", Some(&expired), &body).await;
    assert_eq!(status, 401, "{answer}");
    let mut delivered = 0;
    while delivered < 5 {
        let frame = reader.next_frame(WAIT).await.expect("the posts arrive");
        delivered += frame
            .items
            .iter()
            .filter(|m| m.get("msg").is_some())
            .count();
    }

    // Nothing in flight to nginx at the scrape: the gauge came back to 0
    // (it does not leak). Not asserted of any one scrape: the sidecar
    // polls nginx's reader changes four times a second, and a scrape can
    // land during one of those polls.
    let metrics = scrape_until(
        metrics_port,
        "a reader in one served room, nothing in flight to nginx",
        |m| {
            value(m, "chatup_rooms_served") == Some(1.0)
                && value(m, "chatup_readers") == Some(1.0)
                && value(m, "chatup_nchan_requests_in_flight") == Some(0.0)
        },
    )
    .await;
    assert_eq!(value(&metrics, "chatup_messages_accepted_total"), Some(5.0));
    assert_eq!(
        value(
            &metrics,
            "chatup_messages_refused_total{reason=\"rate_limited\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&metrics, "chatup_message_store_seconds_count"),
        Some(5.0)
    );
    assert_eq!(
        value(&metrics, "chatup_message_publish_delay_seconds_count"),
        Some(5.0),
        "every message reached nchan once"
    );
    let frames = value(&metrics, "chatup_frames_published_total").unwrap();
    assert!(
        (1.0..=5.0).contains(&frames),
        "{frames} frames for 5 messages"
    );
    assert_eq!(value(&metrics, "chatup_frame_messages_sum"), Some(5.0));
    assert!(value(&metrics, "chatup_nchan_publish_seconds_count").unwrap() >= frames);
    assert!(value(&metrics, "chatup_redis_command_seconds_count").unwrap() >= 5.0);
    assert!(value(&metrics, "chatup_heartbeats_total{result=\"ok\"}").unwrap() >= 1.0);
    assert_eq!(
        value(&metrics, "chatup_nchan_errors_total"),
        None,
        "{metrics}"
    );

    // A post whose body never fully comes: the client sends half of it
    // and goes away. nginx ends it, not the module; it is counted too.
    {
        use tokio::io::AsyncWriteExt;
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", worker.port))
            .await
            .unwrap();
        let head = format!(
            "POST /rooms/lobby/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: 40\r\n\r\n{{\"msg\":"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.shutdown().await.unwrap();
        drop(stream);
    }

    // The module's own counts, read from nginx's shared memory: every
    // chat POST once, by the status it ended with.
    let posts_counted = |m: &str| {
        m.lines()
            .filter(|l| l.starts_with("chatup_nginx_posts_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let metrics = scrape_until(metrics_port, "the module's counters", |m| {
        value(m, "chatup_nginx_posts_total{status=\"401\"}") == Some(2.0) && posts_counted(m) == 9.0
    })
    .await;
    assert_eq!(
        value(&metrics, "chatup_nginx_posts_total{status=\"202\"}"),
        Some(5.0)
    );
    assert_eq!(
        value(&metrics, "chatup_nginx_posts_total{status=\"429\"}"),
        Some(1.0)
    );
    assert_eq!(
        value(
            &metrics,
            "chatup_nginx_token_failures_total{reason=\"missing\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &metrics,
            "chatup_nginx_token_failures_total{reason=\"expired\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn dispatcher_metrics_count_joins_by_outcome_and_see_workers_come_and_go() {
    let redis = Redis::start().unwrap();
    let metrics_port = free_port();
    let listen = format!("127.0.0.1:{metrics_port}");
    let dispatcher = Dispatcher::start_with(&redis.url(), &["--metrics-listen", &listen]).unwrap();
    let join = |room: &str| {
        let url = format!("http://127.0.0.1:{}/join/{room}", dispatcher.port);
        async move {
            reqwest::Client::new()
                .post(url)
                .send()
                .await
                .unwrap()
                .status()
        }
    };

    assert_eq!(join("lobby").await, 503, "no worker yet");
    let worker = ChatWorker::start(&redis).unwrap();
    let metrics = scrape_until(metrics_port, "the worker in the registry", |m| {
        value(m, &format!("chatup_worker_up{{worker=\"{}\"}}", worker.id)) == Some(1.0)
    })
    .await;
    assert_eq!(value(&metrics, "chatup_workers_live"), Some(1.0));
    assert_eq!(join("lobby").await, 200);
    assert_eq!(join("lobby").await, 200);
    assert_eq!(join("not%20a%20room").await, 400);

    let metrics = scrape(metrics_port).await;
    let joins = |outcome: &str| {
        value(
            &metrics,
            &format!("chatup_dispatcher_joins_total{{outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(joins("no_worker"), Some(1.0), "{metrics}");
    assert_eq!(joins("assigned"), Some(2.0), "{metrics}");

    let id = worker.id.clone();
    drop(worker);
    scrape_until(metrics_port, "the stopped worker counted as gone", |m| {
        value(m, &format!("chatup_worker_up{{worker=\"{id}\"}}")) == Some(0.0)
            && value(m, "chatup_workers_live") == Some(0.0)
    })
    .await;
}
