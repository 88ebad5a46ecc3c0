//! Prometheus metrics of `chatup worker` and `chatup dispatcher`.
//!
//! Call sites record through the `metrics` facade under the names in
//! [`names`]; one process-wide recorder from `metrics-exporter-prometheus`
//! keeps them, and [`serve`] renders them at `GET /metrics` on the
//! operator's `metrics_listen` address, apart from the public port and
//! from nginx's unix socket. Without `metrics_listen` nothing is served,
//! and recording costs a few atomic operations (no recorder installed).

pub mod names;

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Latency buckets, in seconds: from a fast local hop (0.5 ms) to a
/// timeout (5 s).
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Messages per frame: one (quiet rooms) to the batch limit (500 by default).
const FRAME_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0];

/// How often histogram samples are folded into their buckets (the
/// exporter's upkeep).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder, once (a test process may run a
/// worker and a dispatcher), and returns its handle; `None` if another
/// recorder was installed first (nothing is recorded for us then).
pub fn recorder() -> Option<PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let installed = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(names::FRAME_MESSAGES.into()),
                        FRAME_BUCKETS,
                    )
                })
                .map_err(|e| e.to_string())
                .and_then(|b| b.install_recorder().map_err(|e| e.to_string()));
            match installed {
                Ok(handle) => {
                    names::describe();
                    metrics::gauge!(names::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"))
                        .set(1.0);
                    Some(handle)
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot install the metrics recorder: /metrics stays empty");
                    None
                }
            }
        })
        .clone()
}

/// Serves `GET /metrics` on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
    let handle = recorder();
    if let Some(handle) = handle.clone() {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(UPKEEP_EVERY);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => handle.run_upkeep(),
                }
            }
        });
    }
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let handle = handle.clone();
                async move {
                    let body = handle.map(|h| h.render()).unwrap_or_default();
                    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
                }
            }),
        )
        .fallback(|| async { crate::api_error::ApiError::not_found() });
    axum::serve(listener, app.into_make_service())
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// Binds `metrics_listen` (if set) and serves the metrics there in the
/// background until `shutdown`.
pub async fn start(
    address: Option<std::net::SocketAddr>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let Some(address) = address else {
        return Ok(());
    };
    let listener = TcpListener::bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("listening on {address} (metrics_listen): {e}"))?;
    tracing::info!(%address, "serving Prometheus metrics at /metrics");
    // Installed now, not in the serving task: whatever the caller records
    // before that task first runs would be lost (a gauge raised before and
    // lowered after would read -1).
    recorder();
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        if let Err(e) = serve(listener, shutdown).await {
            tracing::error!(error = %e, "the metrics endpoint stopped");
        }
    });
    Ok(())
}
