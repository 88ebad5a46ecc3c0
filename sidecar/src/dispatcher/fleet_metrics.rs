//! The workers as this dispatcher sees them in the registry, as gauges:
//! how many are live, and for each one whether it is (`chatup_worker_up`,
//! 0 once it left: an alert's signal), its load and its readers. Read
//! every few seconds, only while metrics are served.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::registry::Registry;
use crate::telemetry::names;

/// How often the registry is read for the gauges (Prometheus scrapes every
/// 15 s or so).
const EVERY: Duration = Duration::from_secs(5);

pub async fn run(registry: Registry, shutdown: CancellationToken) {
    let mut seen = BTreeSet::new();
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let live = match registry.live().await {
            Ok(live) => live,
            // Redis errors are counted and logged where they happen.
            Err(_) => continue,
        };
        metrics::gauge!(names::WORKERS_LIVE).set(live.len() as f64);
        let mut now_live = BTreeSet::new();
        for worker in live {
            let id = worker.record.id.clone();
            metrics::gauge!(names::WORKER_UP, "worker" => id.clone()).set(1.0);
            metrics::gauge!(names::WORKER_LOAD, "worker" => id.clone()).set(worker.load as f64);
            metrics::gauge!(names::WORKER_READERS, "worker" => id.clone())
                .set(worker.record.subscribers as f64);
            now_live.insert(id);
        }
        for gone in seen.difference(&now_live) {
            metrics::gauge!(names::WORKER_UP, "worker" => gone.clone()).set(0.0);
            metrics::gauge!(names::WORKER_LOAD, "worker" => gone.clone()).set(0.0);
            metrics::gauge!(names::WORKER_READERS, "worker" => gone.clone()).set(0.0);
        }
        seen.extend(now_live);
    }
}
