//! The `chatup` processes themselves: signals and broken log pipes.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chatup_testkit::process::{chatup_bin, free_port};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A process whose stderr reader went away (a log collector restarted,
/// say) must still drain and exit on SIGTERM.
#[test]
fn sigterm_stops_the_worker_and_the_dispatcher_even_when_stderr_is_broken() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there: logs of failing connections are written at once.
    let dead_redis = format!("redis://127.0.0.1:{}", free_port());
    let roles: [Vec<String>; 2] = [
        vec![
            "worker".into(),
            "--listen".into(),
            dir.path().join("w.sock").display().to_string(),
            "--nchan-socket".into(),
            dir.path().join("nginx.sock").display().to_string(),
            "--redis-url".into(),
            dead_redis.clone(),
        ],
        vec![
            "dispatcher".into(),
            "--listen".into(),
            format!("127.0.0.1:{}", free_port()),
            "--redis-url".into(),
            dead_redis,
        ],
    ];
    for args in roles {
        let mut child = Command::new(chatup_bin())
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stderr.take());
        std::thread::sleep(Duration::from_millis(800));
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if started.elapsed() > Duration::from_secs(8) {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let Some(status) = status else {
            let _ = child.kill();
            panic!("chatup {} ignored SIGTERM with a broken stderr", args[0]);
        };
        assert!(status.success(), "chatup {}: {status}", args[0]);
    }
}
