//! `chatup worker`: runs beside one nginx (nchan + the ChatUp module).
//!
//! - `ingest`: the unix-socket API nginx hands accepted messages to;
//! - `store` (crate): Redis history + publish, one transaction per message;
//! - `fanin`: the Redis subscription for the rooms with local subscribers;
//! - `rooms` / `room`: per-room tasks batching messages into nchan,
//!   catching up by message id;
//! - `batch`: the batching policy itself, free of I/O;
//! - `readers`: the reader counts and members the nginx module keeps;
//! - `membership`: members in Redis, join/leave events;
//! - `sweep`: letting go of rooms nobody reads here;
//! - `heartbeat`: presence refresh, registry announcement, count events;
//! - `posters`: which users' rooms are recorded for bans everywhere;
//! - `module_metrics`: the nginx module's counters as metrics.

pub mod active;
mod batch;
pub mod drain;
pub mod drain_command;
mod fanin;
mod heartbeat;
mod inbox;
mod ingest;
mod membership;
mod module_metrics;
mod posters;
mod readers;
mod room;
mod rooms;
mod sampler;
mod sweep;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::bans::BanStore;
use crate::config::WorkerConfig;
use crate::db::Db;
use crate::moderation::bancache::BanCache;
use crate::moderation::filters::{FilterPipeline, MessageFilter};
use crate::moderation::publish_hook::PublishHook;
use crate::moderation::ratelimit::RateLimiter;
use crate::nchan::Nchan;
use crate::presence::Presence;
use crate::registry::Registry;
use crate::store::Store;
use batch::FrameLimits;
use heartbeat::{Heartbeat, HeartbeatParts};
use membership::Membership;
use room::RoomSettings;
use rooms::Rooms;

/// Serves the worker API on `listener` (bound by [`bind`], or by a test on
/// a temp unix socket) until `shutdown`, then drains.
pub async fn run(
    config: WorkerConfig,
    listener: UnixListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_with_filters(config, listener, Vec::new(), shutdown).await
}

/// Runs the worker with message filters of the deployer's own, after the
/// configured ones in every room (see `sidecar/examples/custom_filter.rs`).
pub async fn run_with_filters(
    config: WorkerConfig,
    listener: UnixListener,
    extra_filters: Vec<Arc<dyn MessageFilter>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    crate::config::install_tls_provider();
    crate::telemetry::start(config.metrics_listen, &shutdown).await?;
    let topology = config.redis_topology()?;
    let db = Db::connect_lazy(topology.clone(), config.redis_timeout())?;
    let store = crate::store::durable(
        Store::new(db.clone(), config.history_length, config.history_ttl_secs),
        &topology,
        config.min_replicas(&topology),
        config.redis_timeout(),
    )?;
    let presence = Presence::new(db.clone());
    let nchan = Nchan::new(config.nchan_socket.clone());
    let settings = RoomSettings {
        window: config.batch_window(),
        limits: FrameLimits {
            max_items: config.batch_max_messages,
            max_bytes: config.batch_max_bytes,
        },
        history_length: config.history_length,
        active_every: config.count_interval(),
        hot_room_rate: config.hot_room_rate,
    };
    let (fanin_tx, fanin_rx) = mpsc::unbounded_channel();
    let rooms = Arc::new(Rooms::new(fanin_tx, nchan.clone(), store.clone(), settings));
    if config.metrics_listen.is_some() {
        tokio::spawn(module_metrics::run(nchan.clone(), shutdown.clone()));
    }

    let bans = Arc::new(BanCache::new(BanStore::new(db.clone())));
    let ban_reloads = {
        let bans = bans.clone();
        let period = Duration::from_secs(config.bans_refresh_secs);
        let stop = shutdown.clone();
        tokio::spawn(async move { bans.run(period, stop).await })
    };
    let master_moves = {
        let rooms = rooms.clone();
        let moves = db.master_moves();
        let stop = shutdown.clone();
        tokio::spawn(async move { rooms.resync_after_master_moves(moves, stop).await })
    };
    let fanin_stop = CancellationToken::new();
    let fanin = tokio::spawn(fanin::run(
        topology,
        config.redis_timeout(),
        rooms.clone(),
        bans.clone(),
        fanin_rx,
        fanin_stop.clone(),
    ));
    let checks = Arc::new(ingest::Checks {
        bans,
        slow_mode: Default::default(),
        rate_limiter: RateLimiter::new(config.rate_limit.clone()),
        filters: FilterPipeline::new(&config.filters, extra_filters),
        publish_hook: config
            .publish_hook
            .clone()
            .map(|hook| {
                let on_failure = hook.on_failure;
                let hook = PublishHook::new(hook).map_err(anyhow::Error::msg)?;
                tracing::info!(hook = %hook.origin(), ?on_failure, "messages go through the site's publish hook");
                Ok::<_, anyhow::Error>(hook)
            })
            .transpose()?,
    });

    let membership = Arc::new(Membership::new(
        config.worker_id.clone(),
        presence.clone(),
        store.clone(),
        rooms.clone(),
        config.heartbeat_ttl_ms,
        config.presence_threshold,
    ));
    let beat_now = Arc::new(tokio::sync::Notify::new());
    let drain = Arc::new(drain::Drain::new(
        nchan.clone(),
        rooms.clone(),
        membership.clone(),
        config.worker_id.clone(),
        config.drain_rate,
        beat_now.clone(),
    ));
    // A drain lasts until the sidecar stops: one left by a sidecar that
    // stopped without cancelling it must not keep nginx refusing readers
    // (if nginx cannot be told now, the heartbeat corrects it).
    if let Err(e) = nchan.set_draining(false).await {
        tracing::debug!(error = %e, "cannot tell nginx it is not draining (it may not run yet)");
    }
    let heartbeat = tokio::spawn(
        Heartbeat::new(HeartbeatParts {
            registry: Registry::new(db.clone()),
            nchan: nchan.clone(),
            presence: presence.clone(),
            rooms: rooms.clone(),
            membership: membership.clone(),
            worker_id: config.worker_id.clone(),
            public_url: config.public_url.clone(),
            interval: config.heartbeat_interval(),
            ttl_ms: config.heartbeat_ttl_ms,
            count_interval: config.count_interval(),
            drain: drain.clone(),
            beat_now,
        })
        .run(shutdown.clone()),
    );

    let feed = tokio::spawn(
        readers::ReaderFeed::new(
            nchan.clone(),
            rooms.clone(),
            membership.clone(),
            presence.clone(),
            config.worker_id.clone(),
            config.heartbeat_ttl_ms,
        )
        .run(shutdown.clone()),
    );

    tracing::info!(id = %config.worker_id, listen = %config.listen.display(), nchan = %config.nchan_socket.display(), "chatup worker ready");

    let sweeper = tokio::spawn(
        sweep::Sweeper {
            rooms: rooms.clone(),
            checks: checks.clone(),
            presence: presence.clone(),
            worker_id: config.worker_id.clone(),
            every: Duration::from_secs(config.room_sweep_secs),
        }
        .run(shutdown.clone()),
    );

    let state = ingest::IngestState {
        db,
        store,
        rooms: rooms.clone(),
        checks,
        posters: Arc::new(posters::RecentPosters::new(Duration::from_secs(
            config.history_ttl_secs,
        ))),
        draining: shutdown.clone(),
        drain,
    };
    // `into_make_service`: a clone of the router per connection (an `Arc`);
    // serving the `Router` itself rebuilds it for each connection (axum
    // 0.8: `with_state` on a copy of every route), 4.7 KB a connection by a
    // heap profile, and nginx opens one per concurrent serve request.
    let server = axum::serve(listener, ingest::router(state).into_make_service())
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    server.await.context("serving the worker API")?;

    // Drain: requests in flight were answered; now deliver what the room
    // tasks still hold, then drop the Redis subscription.
    let _ = sweeper.await;
    let _ = feed.await;
    let _ = ban_reloads.await;
    let _ = master_moves.await;
    let _ = heartbeat.await;
    let _ = tokio::time::timeout(Duration::from_secs(5), rooms.close_all()).await;
    fanin_stop.cancel();
    let _ = fanin.await;
    let _ = std::fs::remove_file(&config.listen);
    tracing::info!("chatup worker stopped");
    Ok(())
}

/// Binds the worker's unix socket (`listen`, with `socket_mode`),
/// replacing a stale socket file.
pub fn bind(config: &WorkerConfig) -> anyhow::Result<UnixListener> {
    if let Some(dir) = config.listen.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // A socket file left by a previous run would make bind fail.
    match std::fs::remove_file(&config.listen) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("removing stale {}", config.listen.display()))
        }
    }
    let listener = UnixListener::bind(&config.listen)
        .with_context(|| format!("listening on {}", config.listen.display()))?;
    std::fs::set_permissions(
        &config.listen,
        std::fs::Permissions::from_mode(config.socket_mode),
    )
    .with_context(|| format!("setting permissions of {}", config.listen.display()))?;
    Ok(listener)
}
