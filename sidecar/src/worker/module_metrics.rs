//! The nginx module's counters (posts by status, token refusals by reason)
//! as this sidecar's metrics, `chatup_nginx_posts_total{status}` and
//! `chatup_nginx_token_failures_total{reason}`. The module counts in its
//! shared memory from nginx's start; this task reads the counts every few
//! seconds and adds what grew since its first read, so that the exported
//! counters stay monotonic when nginx restarts (a new boot counts from zero
//! again) and count nothing twice when the sidecar restarts.
//! Runs only while metrics are served.

use std::collections::BTreeMap;
use std::time::Duration;

use chatup_wire::readers::ModuleCounters;
use tokio_util::sync::CancellationToken;

use crate::nchan::Nchan;
use crate::telemetry::names;

const EVERY: Duration = Duration::from_secs(5);

pub async fn run(nchan: Nchan, shutdown: CancellationToken) {
    // The first read is the baseline: what nginx counted before this
    // sidecar started was exported by the one before it (if any), and
    // exporting it again would look like a burst to `rate()`.
    let mut last: Option<ModuleCounters> = None;
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        // nginx down: its counts are read again once it is back.
        let Ok(now) = nchan.module_counters().await else {
            continue;
        };
        if let Some(last) = &last {
            let (posts, failures) = growth(last, &now);
            for (status, n) in posts {
                metrics::counter!(names::NGINX_POSTS, "status" => status).increment(n);
            }
            for (reason, n) in failures {
                metrics::counter!(names::NGINX_TOKEN_FAILURES, "reason" => reason).increment(n);
            }
        }
        last = Some(now);
    }
}

type Growth = Vec<(String, u64)>;

/// What each count grew by from `last` to `now`: all of `now` if nginx
/// restarted in between (another boot).
fn growth(last: &ModuleCounters, now: &ModuleCounters) -> (Growth, Growth) {
    let same_boot = last.boot == now.boot;
    let grown = |before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>| -> Growth {
        after
            .iter()
            .map(|(key, n)| {
                let was = if same_boot {
                    before.get(key).copied().unwrap_or(0)
                } else {
                    0
                };
                (key.clone(), n.saturating_sub(was))
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    };
    (
        grown(&last.posts, &now.posts),
        grown(&last.token_failures, &now.token_failures),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(boot: &str, accepted: u64, expired: u64) -> ModuleCounters {
        ModuleCounters {
            boot: boot.into(),
            posts: [("202".to_owned(), accepted)].into(),
            token_failures: [("expired".to_owned(), expired)].into(),
        }
    }

    #[test]
    fn counts_grow_by_the_difference_within_one_boot() {
        let (posts, failures) = growth(&counters("b1", 5, 1), &counters("b1", 8, 1));
        assert_eq!(posts, vec![("202".to_owned(), 3)]);
        assert!(failures.is_empty());
    }

    #[test]
    fn after_an_nginx_restart_everything_counted_since_is_new() {
        let (posts, failures) = growth(&counters("b1", 500, 9), &counters("b2", 4, 2));
        assert_eq!(posts, vec![("202".to_owned(), 4)]);
        assert_eq!(failures, vec![("expired".to_owned(), 2)]);
    }
}
