//! The chat worker end to end: real redis-server, nginx with nchan and the
//! ChatUp module, and `chatup worker` processes.

use std::time::Duration;

use chatup_testkit::clients::items;
use chatup_testkit::process::WorkerOptions;
use chatup_testkit::token::now_secs;
use chatup_testkit::{
    post_message, rs256_token, rs256_token_exactly, token_for, ChatWorker, Redis, Subscriber,
    Transport,
};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(5);

fn msg(text: &str) -> String {
    json!({ "msg": text }).to_string()
}

#[tokio::test]
async fn post_reaches_websocket_eventsource_and_longpoll_subscribers_of_its_room_only() {
    let redis = Redis::start().unwrap();
    let worker = ChatWorker::start(&redis).unwrap();
    let mut ws = Subscriber::connect(Transport::WebSocket, &worker, "lobby", None)
        .await
        .unwrap();
    let mut es = Subscriber::connect(Transport::EventSource, &worker, "lobby", None)
        .await
        .unwrap();
    let mut lp = Subscriber::connect(Transport::LongPoll, &worker, "lobby", None)
        .await
        .unwrap();
    let mut other = Subscriber::connect(Transport::WebSocket, &worker, "other-room", None)
        .await
        .unwrap();

    let token = token_for("alice", "Alice");
    let (status, ack) = post_message(&worker, "lobby", Some(&token), &msg("  hello world ")).await;
    assert_eq!(status, 202, "{ack}");
    let id = ack["id"].as_str().unwrap().to_string();

    for (name, sub) in [
        ("websocket", &mut ws),
        ("eventsource", &mut es),
        ("longpoll", &mut lp),
    ] {
        let frame = sub
            .next_frame(WAIT)
            .await
            .unwrap_or_else(|| panic!("{name} got nothing"));
        assert_eq!(frame.items.len(), 1, "{name}");
        let envelope = &frame.items[0];
        assert_eq!(envelope["id"], id.as_str(), "{name}");
        assert_eq!(envelope["room"], "lobby");
        assert_eq!(envelope["msg"], "hello world");
        assert_eq!(envelope["ts"], ack["ts"]);
        assert_eq!(
            envelope["user"],
            json!({"id": "alice", "public": {"name": "Alice"}})
        );
    }
    assert!(
        other.drain_for(Duration::from_millis(500)).await.is_empty(),
        "another room got the message"
    );
}

#[tokio::test]
async fn two_workers_deliver_each_others_messages() {
    let redis = Redis::start().unwrap();
    let a = ChatWorker::start(&redis).unwrap();
    let b = ChatWorker::start(&redis).unwrap();
    let mut on_a = Subscriber::connect(Transport::WebSocket, &a, "shared", None)
        .await
        .unwrap();
    let mut on_b = Subscriber::connect(Transport::EventSource, &b, "shared", None)
        .await
        .unwrap();

    let (status, from_a) =
        post_message(&a, "shared", Some(&token_for("ann", "Ann")), &msg("from a")).await;
    assert_eq!(status, 202);
    let (status, from_b) =
        post_message(&b, "shared", Some(&token_for("bob", "Bob")), &msg("from b")).await;
    assert_eq!(status, 202);

    for sub in [&mut on_a, &mut on_b] {
        let got = items(&sub.frames_until(2, WAIT).await);
        let ids: Vec<&str> = got.iter().map(|e| e["id"].as_str().unwrap()).collect();
        assert_eq!(
            ids,
            [
                from_a["id"].as_str().unwrap(),
                from_b["id"].as_str().unwrap()
            ]
        );
    }
}

#[tokio::test]
async fn burst_of_200_messages_arrives_complete_in_order_in_fewer_frames() {
    let redis = Redis::start().unwrap();
    let worker = ChatWorker::start_with(
        &redis,
        WorkerOptions {
            batch_window_ms: 40,
            ..Default::default()
        },
    )
    .unwrap();
    let mut sub = Subscriber::connect(Transport::WebSocket, &worker, "busy", None)
        .await
        .unwrap();
    let token = token_for("alice", "Alice");

    // Posted one after the other, so the order of acknowledgement is the
    // order the room must show.
    let mut sent = Vec::new();
    for n in 0..200 {
        let (status, ack) =
            post_message(&worker, "busy", Some(&token), &msg(&format!("m{n}"))).await;
        assert_eq!(status, 202, "{ack}");
        sent.push(ack["id"].as_str().unwrap().to_string());
    }
    let frames = sub.frames_until(200, Duration::from_secs(10)).await;
    let got: Vec<String> = items(&frames)
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, sent, "every message, in order, once");
    let texts: Vec<String> = items(&frames)
        .iter()
        .map(|e| e["msg"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(texts, (0..200).map(|n| format!("m{n}")).collect::<Vec<_>>());
    assert!(
        frames.len() < 200,
        "batching must send fewer frames than messages, got {}",
        frames.len()
    );
    assert!(
        frames.iter().any(|f| f.items.len() > 1),
        "some frame must hold several messages"
    );
}

#[tokio::test]
async fn reconnecting_subscriber_with_its_last_id_gets_exactly_what_it_missed() {
    let redis = Redis::start().unwrap();
    let worker = ChatWorker::start(&redis).unwrap();
    worker.wait_past_start_second();
    let token = token_for("alice", "Alice");
    for transport in [Transport::EventSource, Transport::WebSocket] {
        let room = format!("resume-{transport:?}").to_lowercase();
        let mut sub = Subscriber::connect(transport, &worker, &room, None)
            .await
            .unwrap();
        let (_, first) = post_message(&worker, &room, Some(&token), &msg("before")).await;
        let seen = sub.next_frame(WAIT).await.expect("first message");
        assert_eq!(seen.items[0]["id"], first["id"]);
        drop(sub);

        let mut missed = Vec::new();
        for n in 0..3 {
            let (status, ack) =
                post_message(&worker, &room, Some(&token), &msg(&format!("missed {n}"))).await;
            assert_eq!(status, 202);
            missed.push(ack["id"].clone());
            // Separate frames, as a reconnecting client usually finds them.
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        let mut back = Subscriber::connect(transport, &worker, &room, Some(&seen.nchan_id))
            .await
            .unwrap();
        let (_, live) = post_message(&worker, &room, Some(&token), &msg("after")).await;
        missed.push(live["id"].clone());
        let got: Vec<Value> = items(&back.frames_until(4, WAIT).await)
            .iter()
            .map(|e| e["id"].clone())
            .collect();
        assert_eq!(
            got, missed,
            "{transport:?}: exactly the missed messages, then the live one"
        );
        assert!(
            back.drain_for(Duration::from_millis(300)).await.is_empty(),
            "{transport:?}: duplicates"
        );
    }
}

/// Every bad request gets its status and a JSON error, and nothing reaches
/// the room or its history.
#[tokio::test]
async fn bad_inputs_get_their_status_and_json_error_and_publish_nothing() {
    let redis = Redis::start().unwrap();
    let worker = ChatWorker::start(&redis).unwrap();
    let mut sub = Subscriber::connect(Transport::WebSocket, &worker, "guarded", None)
        .await
        .unwrap();
    let good = token_for("alice", "Alice");
    let now = now_secs();
    let public_key = std::fs::read(
        chatup_testkit::process::workspace_root().join("conf/dev-keys/jwt-rs256.pub"),
    )
    .unwrap();
    let b64 = |v: Value| {
        use base64_url as b;
        b::encode(&v.to_string())
    };
    let alg_none = format!(
        "{}.{}.",
        b64(json!({"alg": "none"})),
        b64(json!({"sub": "x", "exp": now + 60}))
    );
    let hs_with_public_key = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "mallory", "exp": now + 60}),
        &jsonwebtoken::EncodingKey::from_secret(&public_key),
    )
    .unwrap();
    let forged = {
        let t = token_for("alice", "Alice");
        let mut parts: Vec<String> = t.split('.').map(String::from).collect();
        parts[1] = b64(json!({"sub": "admin", "exp": now + 600}));
        parts.join(".")
    };
    let cases: Vec<(&str, Option<String>, String, u16)> = vec![
        ("missing token", None, msg("x"), 401),
        ("malformed token", Some("not.a.jwt".into()), msg("x"), 401),
        (
            "expired token",
            Some(rs256_token(&json!({"sub": "a", "exp": now - 120}))),
            msg("x"),
            401,
        ),
        (
            "not yet valid",
            Some(rs256_token(
                &json!({"sub": "a", "exp": now + 600, "nbf": now + 300}),
            )),
            msg("x"),
            401,
        ),
        ("forged token", Some(forged), msg("x"), 401),
        ("alg none", Some(alg_none), msg("x"), 401),
        (
            "HS256 with the RSA public key",
            Some(hs_with_public_key),
            msg("x"),
            401,
        ),
        (
            "no sub",
            Some(rs256_token(&json!({"exp": now + 600}))),
            msg("x"),
            401,
        ),
        // The shipped configuration takes only tokens the site issued for
        // the chat: chatup_jwt_issuer and chatup_jwt_audience.
        (
            "no iss",
            Some(rs256_token_exactly(
                &json!({"sub": "a", "exp": now + 600, "aud": "chatup"}),
            )),
            msg("x"),
            401,
        ),
        (
            "another issuer",
            Some(rs256_token(
                &json!({"sub": "a", "exp": now + 600, "iss": "https://elsewhere.example"}),
            )),
            msg("x"),
            401,
        ),
        (
            "no aud",
            Some(rs256_token_exactly(
                &json!({"sub": "a", "exp": now + 600, "iss": chatup_testkit::token::DEV_ISSUER}),
            )),
            msg("x"),
            401,
        ),
        (
            "a token for another service",
            Some(rs256_token(
                &json!({"sub": "a", "exp": now + 600, "aud": "billing"}),
            )),
            msg("x"),
            401,
        ),
        ("not JSON", Some(good.clone()), "hello".into(), 400),
        (
            "no msg field",
            Some(good.clone()),
            json!({"text": "x"}).to_string(),
            400,
        ),
        ("empty message", Some(good.clone()), msg("   "), 400),
        (
            "too long message",
            Some(good.clone()),
            msg(&"x".repeat(501)),
            413,
        ),
        (
            "huge body",
            Some(good.clone()),
            msg(&"x".repeat(200_000)),
            413,
        ),
    ];
    for (name, token, body, status) in cases {
        let (got, json) = post_message(&worker, "guarded", token.as_deref(), &body).await;
        assert_eq!(got, status, "{name}: {json}");
        assert!(
            json["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{name}: {json}"
        );
    }

    let client = reqwest::Client::new();
    let url = format!("{}/rooms/guarded/messages", worker.base_url());
    let auth = format!("Bearer {good}");
    let raw = [
        (
            "wrong method",
            client.get(&url).header("Authorization", &auth),
            405,
        ),
        (
            "not JSON content type",
            client
                .post(&url)
                .header("Authorization", &auth)
                .header("Content-Type", "text/plain")
                .body(msg("x")),
            415,
        ),
        (
            "invalid UTF-8",
            client
                .post(&url)
                .header("Authorization", &auth)
                .header("Content-Type", "application/json")
                .body(b"{\"msg\":\"\xff\xfe\"}".to_vec()),
            400,
        ),
        (
            "bad room name",
            client
                .post(format!("{}/rooms/bad%20room/messages", worker.base_url()))
                .header("Authorization", &auth)
                .header("Content-Type", "application/json")
                .body(msg("x")),
            400,
        ),
        (
            "unknown path",
            client
                .post(format!("{}/rooms/guarded/other", worker.base_url()))
                .header("Authorization", &auth)
                .body(msg("x")),
            404,
        ),
    ];
    for (name, request, status) in raw {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{name}");
        let json: Value = response.json().await.unwrap_or(Value::Null);
        assert!(json["error"].as_str().is_some(), "{name}: {json}");
    }

    assert!(
        sub.drain_for(Duration::from_millis(500)).await.is_empty(),
        "a refused message was published"
    );
    assert_eq!(
        redis
            .client()
            .unwrap()
            .cmd(&["LLEN", "chatup:{guarded}:history"]),
        "0"
    );
    let (status, _) = post_message(&worker, "guarded", Some(&good), &msg("finally")).await;
    assert_eq!(status, 202, "a good request still works after all that");
}

#[tokio::test]
async fn stopped_sidecar_gives_503_quickly_and_posting_works_again_when_it_returns() {
    let redis = Redis::start().unwrap();
    let mut worker = ChatWorker::start(&redis).unwrap();
    let mut sub = Subscriber::connect(Transport::WebSocket, &worker, "flaky", None)
        .await
        .unwrap();
    let token = token_for("alice", "Alice");
    worker.stop_sidecar();

    let started = std::time::Instant::now();
    let (status, json) = post_message(&worker, "flaky", Some(&token), &msg("lost?")).await;
    assert_eq!(status, 503, "{json}");
    assert!(json["error"].is_string());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "503 took {:?}",
        started.elapsed()
    );

    worker.start_sidecar().unwrap();
    let (status, ack) = post_message(&worker, "flaky", Some(&token), &msg("back")).await;
    assert_eq!(status, 202, "{ack}");
    // The subscriber that stayed connected is fed again: the restarted
    // sidecar takes over the rooms nginx's module still serves.
    let got = items(&sub.frames_until(1, WAIT).await);
    assert_eq!(got.len(), 1, "nothing for the subscriber that stayed");
    assert_eq!(
        got[0]["id"], ack["id"],
        "the refused message must not appear"
    );
}

#[tokio::test]
async fn redis_restart_is_survived_without_restarting_anything_else() {
    let mut redis = Redis::start().unwrap();
    let worker = ChatWorker::start(&redis).unwrap();
    let mut sub = Subscriber::connect(Transport::EventSource, &worker, "durable", None)
        .await
        .unwrap();
    let token = token_for("alice", "Alice");
    let (status, _) = post_message(&worker, "durable", Some(&token), &msg("one")).await;
    assert_eq!(status, 202);
    assert!(sub.next_frame(WAIT).await.is_some());

    redis.stop();
    let (status, json) = post_message(&worker, "durable", Some(&token), &msg("while down")).await;
    assert_eq!(status, 503, "refused rather than lost: {json}");
    redis.restart().unwrap();

    // The sidecar reconnects with backoff; then posting and delivery resume.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let ack = loop {
        let (status, ack) = post_message(&worker, "durable", Some(&token), &msg("two")).await;
        if status == 202 {
            break ack;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "posting did not resume: {status} {ack}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let got = items(&sub.frames_until(1, Duration::from_secs(10)).await);
    assert!(
        got.iter().any(|e| e["id"] == ack["id"]),
        "delivery did not resume: {got:?}"
    );
    assert!(got.iter().all(|e| e["msg"] != "while down"));
}

#[tokio::test]
async fn token_required_subscription_is_refused_without_a_valid_ticket_and_nginx_survives() {
    let redis = Redis::start().unwrap();
    let worker = ChatWorker::start(&redis).unwrap();
    let client = reqwest::Client::new();
    let token = token_for("alice", "Alice");
    // The site's token itself is not taken from a URL: only a read ticket.
    let site_token = format!("?token={token}");
    for query in ["", "?ticket=garbage", site_token.as_str()] {
        let response = client
            .get(format!("{}/sub-auth/members{query}", worker.base_url()))
            .header("Accept", "text/event-stream")
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "query {query:?}");
        let json: Value = response.json().await.unwrap();
        assert!(json["error"].is_string());
    }
    let ticket = chatup_testkit::token::ticket_for("alice", "Alice", "members");
    let response = client
        .get(format!(
            "{}/sub-auth/members?ticket={ticket}",
            worker.base_url()
        ))
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    drop(response);
    // No worker process died on the way (the nchan authorize pitfall).
    let log = worker.nginx_log();
    assert!(
        !log.contains("exited on signal") && !log.contains("assertion"),
        "{log}"
    );
    let (status, _) = post_message(&worker, "members", Some(&token), &msg("still alive")).await;
    assert_eq!(status, 202);
}

#[test]
fn nginx_refuses_a_configuration_with_a_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
    let bad_key = dir.path().join("bad.pem");
    std::fs::write(&bad_key, "not a key").unwrap();
    let conf = ChatWorker::render_nginx_conf(dir.path(), 1, &bad_key).unwrap();
    std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
    let out = std::process::Command::new("nginx")
        .arg("-t")
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(dir.path().join("nginx.conf"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("chatup_jwt_public_key") && stderr.contains("not a PEM"),
        "{stderr}"
    );
}

/// `nginx -t` on the shipped configuration, changed by `edit`: its stderr
/// if it fails.
fn nginx_test_fails(edit: impl FnOnce(String, &std::path::Path) -> String) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
    let key = chatup_testkit::process::workspace_root().join("conf/dev-keys/jwt-rs256.pub");
    let conf = ChatWorker::render_nginx_conf(dir.path(), 1, &key).unwrap();
    std::fs::write(dir.path().join("nginx.conf"), edit(conf, dir.path())).unwrap();
    let out = std::process::Command::new("nginx")
        .arg("-t")
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(dir.path().join("nginx.conf"))
        .output()
        .unwrap();
    (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn readers_need_a_ticket_secret_of_their_own() {
    assert_eq!(
        nginx_test_fails(|conf, _| conf),
        None,
        "the shipped configuration"
    );
    let ticket_line = |conf: &str| {
        conf.lines()
            .find(|l| l.trim_start().starts_with("chatup_ticket_secret_file"))
            .unwrap()
            .to_string()
    };
    let without = nginx_test_fails(|conf, _| conf.replace(&ticket_line(&conf), "")).unwrap();
    assert!(
        without.contains("chatup_readers: needs chatup_ticket_secret_file"),
        "{without}"
    );
    // The site's own HMAC secret as the ticket secret: users could sign
    // tickets.
    let shared = nginx_test_fails(|conf, dir| {
        let secret = dir.join("site.secret");
        std::fs::write(&secret, "a site secret of at least thirty-two bytes").unwrap();
        let secret = secret.display();
        conf.replace(
            &ticket_line(&conf),
            &format!("chatup_ticket_secret_file {secret};"),
        )
        .replace(
            "chatup_jwt_algorithms RS256;",
            "chatup_jwt_algorithms HS256;",
        )
        .replace(
            &conf
                .lines()
                .find(|l| l.trim_start().starts_with("chatup_jwt_public_key"))
                .unwrap()
                .to_string(),
            &format!("chatup_jwt_secret_file {secret};"),
        )
    })
    .unwrap();
    assert!(
        shared.contains("must not be the site's token secret"),
        "{shared}"
    );
    let short = nginx_test_fails(|conf, dir| {
        let secret = dir.join("short.secret");
        std::fs::write(&secret, "short").unwrap();
        conf.replace(
            &ticket_line(&conf),
            &format!("chatup_ticket_secret_file {};", secret.display()),
        )
    })
    .unwrap();
    assert!(short.contains("at least 32 are required"), "{short}");
}

/// Runs `curl` as the unprivileged user `nobody` against a unix socket: the
/// HTTP status it got, or `None` if it could not connect.
fn as_nobody(socket: &std::path::Path, method: &str, url: &str, body: &str) -> Option<u16> {
    use std::os::unix::process::CommandExt;
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", method])
        .arg("--unix-socket")
        .arg(socket)
        .args(["--data-binary", body, url])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).parse().unwrap())
}

#[tokio::test]
async fn local_users_cannot_reach_the_internal_sockets() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: switching to the user nobody needs root");
        return;
    }
    let redis = Redis::start().unwrap();
    let worker = ChatWorker::start(&redis).unwrap();
    let nchan = worker.dir().join("nginx-internal.sock");
    let sidecar = worker.dir().join("sidecar.sock");
    let forged =
        json!([{"id": "1-1", "room": "lobby", "user": {"id": "system"}, "msg": "forged", "ts": 1}])
            .to_string();
    // A channel of a serving of the room (see `chatup_wire::readers::channel`).
    let publish = "http://localhost/pub/lobby~00000001.1";
    let handoff = "http://localhost/v1/messages";
    // The attack: forge a frame straight into nchan's publisher, or an
    // envelope into the sidecar. The run directory (0700) keeps both out.
    assert_eq!(as_nobody(&nchan, "POST", publish, &forged), None);
    assert_eq!(as_nobody(&sidecar, "POST", handoff, &forged), None);
    // It is the directory that protects nginx's socket (nginx makes its
    // unix sockets 0666): opened up, the forged frame gets through. The
    // sidecar's socket (socket_mode 660) still refuses.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(worker.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let status = as_nobody(&nchan, "POST", publish, &forged);
    std::fs::set_permissions(worker.dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
    assert!(
        status.is_some_and(|s| (200..300).contains(&s)),
        "the open directory should have let the publish through: {status:?}"
    );
    std::fs::set_permissions(worker.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let status = as_nobody(&sidecar, "POST", handoff, &forged);
    std::fs::set_permissions(worker.dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(status, None, "the sidecar's socket is not 660");
}

#[tokio::test]
async fn chunked_and_empty_bodies_are_read_safely_also_by_the_debug_build_of_the_module() {
    let redis = Redis::start().unwrap();
    for module in [None, Some(chatup_testkit::process::chatup_debug_module())] {
        let options = chatup_testkit::process::WorkerOptions {
            module,
            ..Default::default()
        };
        let worker = ChatWorker::start_with(&redis, options).unwrap();
        // A signed-in reader: the module's admission, counting and serve
        // request run too (the room is new to this worker).
        let token = token_for("alice", "Alice");
        let ticket = chatup_testkit::token::ticket_for("alice", "Alice", "bodies");
        let options = chatup_testkit::SubscribeOptions {
            ticket: Some(&ticket),
            ..Default::default()
        };
        let mut reader = Subscriber::open(Transport::WebSocket, &worker, "bodies", options)
            .await
            .unwrap();
        let url = format!("{}/rooms/bodies/messages", worker.base_url());
        let client = reqwest::Client::new();
        // Chunked: a streamed body has no Content-Length.
        let chunks: Vec<Result<&'static str, std::io::Error>> =
            vec![Ok("{\"msg\":"), Ok("\"in chunks\"}")];
        let response = client
            .post(&url)
            .bearer_auth(&token)
            .header("Content-Type", "application/json")
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let got = items(&reader.frames_until(1, WAIT).await);
        assert!(got.iter().any(|m| m["msg"] == "in chunks"), "{got:?}");
        drop(reader);
        let response = client
            .post(&url)
            .bearer_auth(&token)
            .header("Content-Type", "application/json")
            .header("Content-Length", "0")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(body["error"].is_string(), "{body}");
        assert!(
            !worker.nginx_log().contains("exited on signal"),
            "{}",
            worker.nginx_log()
        );
    }
}

#[tokio::test]
async fn a_post_retried_with_its_idempotency_key_gets_the_first_answer_and_is_stored_once() {
    let redis = Redis::start().unwrap();
    let worker = ChatWorker::start(&redis).unwrap();
    let mut sub = Subscriber::connect(Transport::WebSocket, &worker, "retry", None)
        .await
        .unwrap();
    let token = token_for("alice", "Alice");
    let client = reqwest::Client::new();
    let post = |key: &'static str, text: &'static str| {
        client
            .post(format!("{}/rooms/retry/messages", worker.base_url()))
            .bearer_auth(&token)
            .header("Content-Type", "application/json")
            .header("Idempotency-Key", key)
            .body(msg(text))
            .send()
    };
    let first = post("k-1", "once").await.unwrap();
    assert_eq!(first.status(), 202);
    let first: serde_json::Value = first.json().await.unwrap();
    // The retry (same key, even with another text) is answered as the
    // first post was and stores nothing.
    let again = post("k-1", "once").await.unwrap();
    assert_eq!(again.status(), 202);
    assert_eq!(again.json::<serde_json::Value>().await.unwrap(), first);
    let other = post("k-2", "twice").await.unwrap();
    assert_eq!(other.status(), 202);

    let got = items(&sub.frames_until(2, WAIT).await);
    let texts: Vec<&str> = got.iter().map(|m| m["msg"].as_str().unwrap()).collect();
    assert_eq!(texts, ["once", "twice"]);
    assert!(sub.drain_for(Duration::from_millis(300)).await.is_empty());
    let history = redis
        .client()
        .unwrap()
        .cmd(&["LLEN", "chatup:{retry}:history"]);
    assert_eq!(history, "2");

    let bad = post("not a key", "x").await.unwrap();
    assert_eq!(bad.status(), 400);
    let body: serde_json::Value = bad.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("Idempotency-Key"),
        "{body}"
    );
}

#[tokio::test]
async fn outsiders_get_json_errors_no_internal_location_and_no_credentialed_cors() {
    let redis = Redis::start().unwrap();
    let worker = ChatWorker::start(&redis).unwrap();
    let client = reqwest::Client::new();
    // Internal locations do not exist from outside.
    for path in [
        "/_chatup/serve/lobby",
        "/_chatup/handoff",
        "/readers",
        "/pub/lobby",
        "/pub/lobby~00000001.1",
    ] {
        let response = client
            .get(format!("{}{path}", worker.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(body["error"].is_string(), "{path}: {body}");
    }
    // nginx's own errors are JSON too.
    let long = "a".repeat(10_000);
    let response = client
        .get(format!("{}/sub/lobby?x={long}", worker.base_url()))
        .header("X-Long", "b".repeat(20_000))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    assert!((400..500).contains(&status), "{status}");
    let text = response.text().await.unwrap();
    let body: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    assert!(body["error"].is_string(), "{body}");
    // Readers' CORS never allows credentials.
    let response = client
        .get(format!("{}/sub/lobby", worker.base_url()))
        .header("Origin", "https://evil.example")
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_ne!(
        response
            .headers()
            .get("access-control-allow-credentials")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
}

#[tokio::test]
async fn invisible_and_direction_changing_characters_never_reach_readers() {
    let redis = Redis::start().unwrap();
    let worker = ChatWorker::start(&redis).unwrap();
    let mut sub = Subscriber::connect(Transport::WebSocket, &worker, "clean", None)
        .await
        .unwrap();
    let token = token_for("alice", "Alice");
    for (text, status) in [
        ("\u{200b}\u{202e}\u{2066}", 400),
        (&*format!("h{}i", "\u{300}".repeat(20)), 400),
        ("pay \u{202e}gnp.exe\u{202c} now", 202),
    ] {
        let (got, body) = post_message(&worker, "clean", Some(&token), &msg(text)).await;
        assert_eq!(got, status, "{text:?}: {body}");
        if status == 400 {
            assert!(body["error"].is_string(), "{body}");
        }
    }
    let got = items(&sub.frames_until(1, WAIT).await);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["msg"], "pay gnp.exe now");
}

#[tokio::test]
async fn a_message_id_can_be_followed_from_nginx_access_log_to_the_sidecar_log() {
    let redis = Redis::start().unwrap();
    let worker = ChatWorker::start(&redis).unwrap();
    let mut reader = Subscriber::connect(Transport::WebSocket, &worker, "lobby", None)
        .await
        .unwrap();
    let token = token_for("alice", "Alice");
    let (status, ack) = post_message(&worker, "lobby", Some(&token), &msg("trace me")).await;
    assert_eq!(status, 202, "{ack}");
    let id = ack["id"].as_str().unwrap().to_string();
    reader.next_frame(WAIT).await.expect("the message arrives");
    // nginx writes its access log line when the request ends: after the
    // answer the client already has, so wait for it.
    let access_log = worker.dir().join("nginx-access.log");
    let deadline = std::time::Instant::now() + WAIT;
    let line = loop {
        let log = std::fs::read_to_string(&access_log).unwrap_or_default();
        if let Some(line) = log.lines().find(|l| l.contains("/rooms/lobby/messages")) {
            break line.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no access log line:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(line.ends_with(&format!(" {id}")), "{line}");
    let sidecar_log = worker.sidecar_log();
    assert!(
        sidecar_log
            .lines()
            .any(|l| l.contains("message stored") && l.contains(&id)),
        "{sidecar_log}"
    );
    // Other requests log no id.
    let log = std::fs::read_to_string(&access_log).unwrap();
    let sub = log.lines().find(|l| l.contains("/sub/lobby"));
    assert!(sub.is_none_or(|l| l.ends_with(" -")), "{log}");
}

/// `chatup_readers` holds in the blocks nested in its location: an `if`
/// block is one, and nchan serves it like the location itself, so a
/// reader whose request matches the block must be admitted there too (it
/// once got to nchan unchecked).
#[tokio::test]
async fn readers_are_admitted_in_an_if_block_of_a_subscribe_location() {
    let redis = Redis::start().unwrap();
    let shipped = "nchan_subscriber_first_message oldest;";
    let options = chatup_testkit::process::WorkerOptions {
        nginx_conf_edits: vec![(
            shipped.to_owned(),
            format!("{shipped}\n            if ($arg_newest) {{ nchan_subscriber_first_message newest; }}"),
        )],
        ..Default::default()
    };
    let worker = ChatWorker::start_with(&redis, options).unwrap();
    let client = reqwest::Client::new();
    let get = |path: &str| {
        client
            .get(format!("{}{path}", worker.base_url()))
            .header("Accept", "text/event-stream")
            .send()
    };
    // A room that needs a token, without a ticket.
    let refused = get("/sub/private-alice?newest=1").await.unwrap();
    assert_eq!(refused.status(), 401);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(body["error"].is_string(), "{body}");
    // An admitted reader is counted, and its room served.
    let reading = get("/sub/lobby?newest=1").await.unwrap();
    assert_eq!(reading.status(), 200);
    assert!(
        worker.channel_of("lobby").await.is_some(),
        "lobby is served"
    );
    drop(reading);
}
