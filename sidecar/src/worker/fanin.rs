//! The worker's Redis subscription: one Pub/Sub connection subscribed to
//! the channels of the rooms served here and to the ban announcements.
//! Reconnects with backoff, re-subscribes, asks every room to resync from
//! history and the ban list to reload, since Redis Pub/Sub does not replay
//! what was published while it was down.
//!
//! A subscription can die silently: a half-open link (NAT or load-balancer
//! idle timeout, a lost host) delivers nothing and reports no error. So the
//! connection is pinged every [`PING_INTERVAL`]; no answer within the Redis
//! timeout counts as lost, and a new connection catches up from history.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::keys;
use crate::moderation::bancache::BanCache;
use crate::telemetry::names;
use crate::topology::{ClusterUrl, Topology};
use crate::worker::rooms::Rooms;

pub enum FaninCommand {
    /// Subscribe to a room; the sender is told once Redis confirmed.
    Subscribe(String, oneshot::Sender<()>),
    Unsubscribe(String),
}

const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// How often an idle or busy subscription proves it is alive.
pub const PING_INTERVAL: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

struct Fanin {
    topology: Topology,
    timeout: Duration,
    rooms: Arc<Rooms>,
    bans: Arc<BanCache>,
    wanted: HashSet<String>,
    waiting: HashMap<String, Vec<oneshot::Sender<()>>>,
}

pub async fn run(
    topology: Topology,
    timeout: Duration,
    rooms: Arc<Rooms>,
    bans: Arc<BanCache>,
    mut commands: mpsc::UnboundedReceiver<FaninCommand>,
    shutdown: CancellationToken,
) {
    let mut fanin = Fanin {
        topology,
        timeout,
        rooms,
        bans,
        wanted: HashSet::new(),
        waiting: HashMap::new(),
    };
    let mut backoff = MIN_BACKOFF;
    let mut connected_before = false;
    loop {
        match fanin
            .session(&mut commands, &shutdown, connected_before)
            .await
        {
            Session::Shutdown => return,
            Session::Lost { was_up } => {
                connected_before |= was_up;
                if was_up {
                    backoff = MIN_BACKOFF;
                }
            }
        }
        // Wait before reconnecting, still recording (un)subscriptions.
        let deadline = tokio::time::sleep(backoff);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = &mut deadline => break,
                command = commands.recv() => match command {
                    Some(command) => fanin.record(command),
                    None => return,
                },
            }
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

enum Session {
    Shutdown,
    Lost { was_up: bool },
}

impl Fanin {
    fn record(&mut self, command: FaninCommand) {
        match command {
            FaninCommand::Subscribe(room, ack) => {
                self.wanted.insert(room.clone());
                self.waiting.entry(room).or_default().push(ack);
            }
            FaninCommand::Unsubscribe(room) => {
                self.wanted.remove(&room);
                self.waiting.remove(&room);
            }
        }
    }

    /// Deliver one Pub/Sub message to the bans or its room.
    fn dispatch(&self, channel: &str, payload: Vec<u8>) {
        let Ok(payload) = String::from_utf8(payload) else {
            tracing::warn!(channel, "dropping a non-UTF-8 message from redis");
            return;
        };
        if channel == keys::BANS_CHANNEL {
            self.bans.announcement(&payload);
        } else if let Some(room) = keys::room_of_channel(channel) {
            self.rooms.deliver(room, payload);
        }
    }

    /// A session on a Redis Cluster: each room's channel is a shard channel
    /// (`SSUBSCRIBE`), held by the shard that owns the room. Any dropped node
    /// connection, and any channel the cluster unsubscribes by itself (its
    /// slot moved), ends the session: the next one subscribes everything
    /// again where it now lives and catches up from history, as after any
    /// lost subscription. (The redis crate would resubscribe by itself, but
    /// without catching up what was published in between.)
    async fn cluster_session(
        &mut self,
        url: &ClusterUrl,
        commands: &mut mpsc::UnboundedReceiver<FaninCommand>,
        shutdown: &CancellationToken,
        reconnecting: bool,
    ) -> Session {
        let (push, mut pushes) = mpsc::unbounded_channel();
        let connect = async {
            url.client(self.timeout, Some(push))?
                .get_async_connection()
                .await
        };
        let mut conn = match tokio::time::timeout(self.timeout * 5, connect).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "redis cluster subscription: cannot connect");
                return Session::Lost { was_up: false };
            }
            Err(_) => {
                tracing::warn!("redis cluster subscription: connect timed out");
                return Session::Lost { was_up: false };
            }
        };
        let mut channels: Vec<String> = self
            .wanted
            .iter()
            .map(|room| keys::room_channel(room))
            .collect();
        channels.push(keys::BANS_CHANNEL.to_owned());
        // One call per channel: each goes to its own shard.
        for channel in &channels {
            if let Err(e) = bounded(self.timeout, conn.ssubscribe(channel)).await {
                tracing::warn!(error = %e, channel, "redis cluster subscription: cannot subscribe");
                return Session::Lost { was_up: false };
            }
        }
        self.subscribed(reconnecting, channels.len());
        let mut ping = tokio::time::interval(PING_INTERVAL);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Session::Shutdown,
                _ = ping.tick() => {
                    let answer = tokio::time::timeout(
                        self.timeout,
                        redis::cmd("PING").query_async::<redis::Value>(&mut conn),
                    )
                    .await;
                    if !matches!(answer, Ok(Ok(_))) {
                        tracing::warn!("redis cluster subscription did not answer a ping: reconnecting");
                        return Session::Lost { was_up: true };
                    }
                }
                command = commands.recv() => {
                    let Some(command) = command else { return Session::Shutdown };
                    let result = match &command {
                        FaninCommand::Subscribe(room, _) => bounded(self.timeout, conn.ssubscribe(keys::room_channel(room))).await,
                        FaninCommand::Unsubscribe(room) => bounded(self.timeout, conn.sunsubscribe(keys::room_channel(room))).await,
                    };
                    let unsubscribing = matches!(command, FaninCommand::Unsubscribe(_));
                    self.record(command);
                    if let Err(e) = result {
                        // A failed unsubscribe leaves a channel we ignore.
                        if !unsubscribing {
                            tracing::warn!(error = %e, "redis cluster subscription lost");
                            return Session::Lost { was_up: true };
                        }
                    }
                    self.confirm_all();
                }
                push = pushes.recv() => {
                    let Some(push) = push else {
                        return Session::Lost { was_up: true };
                    };
                    match push.kind {
                        redis::PushKind::SMessage | redis::PushKind::Message => {
                            let mut data = push.data.into_iter();
                            let (Some(channel), Some(payload)) = (data.next(), data.next()) else {
                                continue;
                            };
                            let (Ok(channel), Ok(payload)) = (
                                redis::from_redis_value::<String>(channel),
                                redis::from_redis_value::<Vec<u8>>(payload),
                            ) else {
                                continue;
                            };
                            self.dispatch(&channel, payload);
                        }
                        redis::PushKind::Disconnection => {
                            tracing::warn!("a redis cluster node connection dropped: subscribing again");
                            return Session::Lost { was_up: true };
                        }
                        redis::PushKind::SUnsubscribe => {
                            let channel = push
                                .data
                                .into_iter()
                                .next()
                                .and_then(|c| redis::from_redis_value::<String>(c).ok());
                            let still_wanted = channel.as_deref().is_some_and(|c| {
                                c == keys::BANS_CHANNEL
                                    || keys::room_of_channel(c).is_some_and(|r| self.wanted.contains(r))
                            });
                            if still_wanted {
                                tracing::warn!(channel, "the redis cluster moved a subscribed channel: subscribing again");
                                return Session::Lost { was_up: true };
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// Every wanted channel is subscribed (again): what was published
    /// meanwhile is lost, so bans reload and, after a drop, every room
    /// catches up from history.
    fn subscribed(&mut self, reconnecting: bool, channels: usize) {
        self.confirm_all();
        self.bans.reload_soon();
        if reconnecting {
            metrics::counter!(names::SUBSCRIPTION_RECONNECTS).increment(1);
            tracing::info!(
                channels,
                "redis subscription restored, resyncing rooms from history"
            );
            self.rooms.resync_all();
        }
    }

    fn confirm_all(&mut self) {
        for (_, acks) in self.waiting.drain() {
            for ack in acks {
                let _ = ack.send(());
            }
        }
    }

    /// One connection's life: connect, subscribe to every wanted room, then
    /// relay messages and (un)subscriptions until the connection drops.
    async fn session(
        &mut self,
        commands: &mut mpsc::UnboundedReceiver<FaninCommand>,
        shutdown: &CancellationToken,
        reconnecting: bool,
    ) -> Session {
        if let Topology::Cluster(url) = &self.topology {
            let url = url.clone();
            return self
                .cluster_session(&url, commands, shutdown, reconnecting)
                .await;
        }
        // A Sentinel group's master of the moment: after a failover the
        // next session subscribes on the new one.
        let connect = async {
            let master = self.topology.master().await?;
            let address = master.get_connection_info().addr().clone();
            Ok::<_, redis::RedisError>((master.get_async_pubsub().await?, address))
        };
        let budget = self.topology.resolve_budget(self.timeout);
        let (pubsub, master) = match tokio::time::timeout(budget, connect).await {
            Ok(Ok(connected)) => connected,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "redis subscription: cannot connect");
                return Session::Lost { was_up: false };
            }
            Err(_) => {
                tracing::warn!("redis subscription: connect timed out");
                return Session::Lost { was_up: false };
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        let mut channels: Vec<String> = self
            .wanted
            .iter()
            .map(|room| keys::room_channel(room))
            .collect();
        channels.push(keys::BANS_CHANNEL.to_owned());
        if let Err(e) = bounded(self.timeout, sink.subscribe(&channels)).await {
            tracing::warn!(error = %e, "redis subscription: cannot subscribe");
            return Session::Lost { was_up: false };
        }
        self.subscribed(reconnecting, channels.len());
        let mut ping = tokio::time::interval(PING_INTERVAL);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Session::Shutdown,
                _ = ping.tick() => {
                    // Any answer will do; in subscribed mode it is a push.
                    let answer = tokio::time::timeout(self.timeout, sink.ping::<redis::Value>()).await;
                    if !matches!(answer, Ok(Ok(_))) {
                        tracing::warn!("redis subscription did not answer a ping: reconnecting");
                        return Session::Lost { was_up: true };
                    }
                    // A Sentinel group may have a new master that this
                    // subscription does not hear from (the old one cut off
                    // but still reachable from here): follow it.
                    if self.topology.follows_failovers() {
                        if let Ok(Ok(now)) = tokio::time::timeout(budget, self.topology.master()).await {
                            if now.get_connection_info().addr() != &master {
                                tracing::warn!(master = %now.get_connection_info().addr(), "the redis master moved: subscribing there");
                                return Session::Lost { was_up: true };
                            }
                        }
                    }
                }
                command = commands.recv() => {
                    let Some(command) = command else { return Session::Shutdown };
                    let result = match &command {
                        FaninCommand::Subscribe(room, _) => bounded(self.timeout, sink.subscribe(keys::room_channel(room))).await,
                        FaninCommand::Unsubscribe(room) => bounded(self.timeout, sink.unsubscribe(keys::room_channel(room))).await,
                    };
                    self.record(command);
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "redis subscription lost");
                        return Session::Lost { was_up: true };
                    }
                    self.confirm_all();
                }
                message = stream.next() => {
                    let Some(message) = message else {
                        tracing::warn!("redis subscription lost");
                        return Session::Lost { was_up: true };
                    };
                    self.dispatch(message.get_channel_name(), message.get_payload_bytes().to_vec());
                }
            }
        }
    }
}

/// `op`, failing past `timeout` (a half-open link never answers).
async fn bounded(
    timeout: Duration,
    op: impl std::future::Future<Output = redis::RedisResult<()>>,
) -> redis::RedisResult<()> {
    tokio::time::timeout(timeout, op).await.unwrap_or_else(|_| {
        Err(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "redis did not answer",
        )))
    })
}
