//! `chatup dispatcher`: sends each client to the least-loaded live chat
//! worker and serves room stats and history. Stateless: everything it
//! knows it reads from Redis, so any number of dispatchers can run side by
//! side behind a load balancer.

mod api;
mod dev;
mod fleet_metrics;
mod join_cache;
mod moderator;
mod original_api;
mod params;
mod replay;
mod server_api;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::http::{HeaderValue, Method};
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};

use chatup_wire::MessageIdGenerator;

use crate::bans::BanStore;
use crate::config::DispatcherConfig;
use crate::db::Db;
use crate::devtoken::DevSigner;
use crate::presence::Presence;
use crate::registry::Registry;
use crate::store::Store;

/// The dispatcher's sockets: the public API, and the operator's.
pub struct Listeners {
    pub public: tokio::net::TcpListener,
    /// `None`: no operator API.
    pub operator: Option<tokio::net::TcpListener>,
}

/// Binds `listen` and `operator_listen`.
pub async fn bind(config: &DispatcherConfig) -> anyhow::Result<Listeners> {
    let public = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let operator = match config.operator_listen {
        Some(address) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("listening on {address} (operator_listen)"))?,
        ),
        None => None,
    };
    Ok(Listeners { public, operator })
}

/// Serves the dispatcher on `listeners` (bound by [`bind`], or by a test
/// on `127.0.0.1:0`) until `shutdown`.
pub async fn run(
    config: DispatcherConfig,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Listeners {
        public: listener,
        operator,
    } = listeners;
    crate::config::install_tls_provider();
    let topology = config.redis_topology()?;
    let db = Db::connect_lazy(topology.clone(), config.redis_timeout())?;
    let verifier = config.server_verifier()?;
    if verifier.is_none() {
        tracing::warn!("no server key configured: the server API (bans, server posts) is off");
    }
    let server = server_api::ServerApi {
        verifier: verifier.map(Arc::new),
        max_ttl_secs: config.server_token_max_ttl_secs,
        bans: BanStore::new(db.clone()),
        used_tokens: replay::UsedTokens::new(db.clone()),
        store: crate::store::durable(
            Store::new(db.clone(), config.history_length, config.history_ttl_secs),
            &topology,
            config.min_replicas(&topology),
            config.redis_timeout(),
        )?,
        ids: Arc::new(Mutex::new(MessageIdGenerator::new())),
    };
    let user_verifier = config.user_verifier()?;
    if user_verifier.is_none() && !config.token_rooms.is_empty() {
        tracing::warn!(rooms = ?config.token_rooms, "no user key configured: token rooms are closed on this dispatcher");
    }
    let tickets = config.ticket_signer()?;
    if tickets.is_none() {
        tracing::warn!("no ticket_secret_file configured: readers are anonymous on the workers, and token rooms cannot be read");
    }
    let state = api::AppState {
        registry: Registry::new(db.clone()),
        join_cache: Arc::new(join_cache::JoinCache::new(Duration::from_millis(
            config.join_cache_ms,
        ))),
        capacity: api::Capacity {
            readers: config.worker_capacity.unwrap_or(0),
            retry_after_secs: config.at_capacity_retry_after_secs,
        },
        presence: Presence::new(db.clone()),
        db,
        join_history: config.join_history,
        max_page: config.max_page,
        read: Arc::new(api::ReadRule {
            token_rooms: config.token_rooms.clone(),
            verifier: user_verifier,
            tickets,
        }),
    };
    if config.metrics_listen.is_some() {
        crate::telemetry::start(config.metrics_listen, &shutdown).await?;
        tokio::spawn(fleet_metrics::run(state.registry.clone(), shutdown.clone()));
    }
    let operator_api = operator.map(|listener| {
        let app = api::operator_router(state.clone());
        let stop = shutdown.clone();
        tokio::spawn(async move {
            if let Ok(address) = listener.local_addr() {
                tracing::info!(listen = %address, "operator API ready (/workers, /healthz)");
            }
            axum::serve(listener, app.into_make_service())
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        })
    });
    let original = config.original_api.then(|| {
        tracing::info!(
            tokens_without_exp = config.accept_tokens_without_exp,
            "the original ChatUp's endpoints are on (/ban, /post, /messages/{{channel}}, /stats/{{channel}})"
        );
        api::OriginalSettings {
            accept_tokens_without_exp: config.accept_tokens_without_exp,
        }
    });
    let mut app = api::router(state, server, original);
    if let Some(path) = &config.dev_token_key {
        let signer = DevSigner::from_file(path)?;
        tracing::warn!(key = %path.display(), "DEVELOPMENT ONLY: POST /dev/token mints user tokens for anyone");
        app = app.merge(
            axum::Router::new()
                .route("/dev/token", axum::routing::post(dev::token))
                .with_state(Arc::new(signer)),
        );
    }
    if let Some(dir) = &config.demo_dir {
        tracing::info!(dir = %dir.display(), "serving the demo under /demo/");
        app = app.nest_service("/demo", tower_http::services::ServeDir::new(dir));
    }
    let app = app.layer(cors(&config.cors_origins));
    tracing::info!(listen = %listener.local_addr()?, "chatup dispatcher ready");
    axum::serve(listener, app.into_make_service())
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("serving the dispatcher API")?;
    if let Some(task) = operator_api {
        task.await
            .context("the operator API task")?
            .context("serving the operator API")?;
    }
    tracing::info!("chatup dispatcher stopped");
    Ok(())
}

/// Browsers on the configured origins may call the API; it uses no
/// cookies, so credentials are never allowed.
fn cors(origins: &[String]) -> CorsLayer {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([
            axum::http::header::CONTENT_TYPE,
            axum::http::header::AUTHORIZATION,
        ])
        // Browsers hide it from scripts otherwise: a refused join says
        // when to ask again.
        .expose_headers([axum::http::header::RETRY_AFTER])
        .max_age(Duration::from_secs(600))
}
