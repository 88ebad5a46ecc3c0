//! Every metric's name, unit and meaning, in one place (docs/operations.md
//! lists them too, with the dashboard and alerts built on them).

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

pub const BUILD_INFO: &str = "chatup_build_info";

// Chat worker sidecar.
pub const MESSAGES_ACCEPTED: &str = "chatup_messages_accepted_total";
pub const MESSAGES_REFUSED: &str = "chatup_messages_refused_total";
pub const MESSAGE_STORE_SECONDS: &str = "chatup_message_store_seconds";
pub const MESSAGE_PUBLISH_DELAY_SECONDS: &str = "chatup_message_publish_delay_seconds";
pub const NCHAN_PUBLISH_SECONDS: &str = "chatup_nchan_publish_seconds";
pub const NCHAN_ERRORS: &str = "chatup_nchan_errors_total";
pub const NCHAN_REQUESTS_IN_FLIGHT: &str = "chatup_nchan_requests_in_flight";
pub const FRAMES_PUBLISHED: &str = "chatup_frames_published_total";
pub const FRAME_MESSAGES: &str = "chatup_frame_messages";
pub const FRAMES_UNDELIVERED: &str = "chatup_frames_undelivered_total";
pub const MESSAGES_SAMPLED_OUT: &str = "chatup_messages_sampled_out_total";
pub const PUBLISH_HOOK_SECONDS: &str = "chatup_publish_hook_seconds";
pub const PUBLISH_HOOK_FAILURES: &str = "chatup_publish_hook_failures_total";
pub const ROOMS_SERVED: &str = "chatup_rooms_served";
pub const READERS: &str = "chatup_readers";
pub const SUBSCRIPTION_RECONNECTS: &str = "chatup_redis_subscription_reconnects_total";
pub const ROOM_RESYNCS: &str = "chatup_room_resyncs_total";
pub const ROOM_TASK_RESTARTS: &str = "chatup_room_task_restarts_total";
pub const HEARTBEATS: &str = "chatup_heartbeats_total";
pub const NGINX_POSTS: &str = "chatup_nginx_posts_total";
pub const NGINX_TOKEN_FAILURES: &str = "chatup_nginx_token_failures_total";

// Both roles.
pub const REDIS_COMMAND_SECONDS: &str = "chatup_redis_command_seconds";
pub const REDIS_ERRORS: &str = "chatup_redis_errors_total";

// Dispatcher.
pub const JOINS: &str = "chatup_dispatcher_joins_total";
pub const WORKERS_LIVE: &str = "chatup_workers_live";
pub const WORKER_UP: &str = "chatup_worker_up";
pub const WORKER_LOAD: &str = "chatup_worker_load";
pub const WORKER_READERS: &str = "chatup_worker_readers";

/// Every metric above, for the checks that the docs, the dashboard and
/// the alert rules use only these.
pub const ALL: &[&str] = &[
    BUILD_INFO,
    MESSAGES_ACCEPTED,
    MESSAGES_REFUSED,
    MESSAGE_STORE_SECONDS,
    MESSAGE_PUBLISH_DELAY_SECONDS,
    NCHAN_PUBLISH_SECONDS,
    NCHAN_ERRORS,
    NCHAN_REQUESTS_IN_FLIGHT,
    FRAMES_PUBLISHED,
    FRAME_MESSAGES,
    FRAMES_UNDELIVERED,
    MESSAGES_SAMPLED_OUT,
    PUBLISH_HOOK_SECONDS,
    PUBLISH_HOOK_FAILURES,
    ROOMS_SERVED,
    READERS,
    SUBSCRIPTION_RECONNECTS,
    ROOM_RESYNCS,
    ROOM_TASK_RESTARTS,
    HEARTBEATS,
    NGINX_POSTS,
    NGINX_TOKEN_FAILURES,
    REDIS_COMMAND_SECONDS,
    REDIS_ERRORS,
    JOINS,
    WORKERS_LIVE,
    WORKER_UP,
    WORKER_LOAD,
    WORKER_READERS,
];

/// Why the worker refused a message (`reason` of [`MESSAGES_REFUSED`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Banned,
    /// The room's rule (tier, account age).
    Restricted,
    RateLimited,
    Filtered,
    Invalid,
    Unavailable,
}

impl Refused {
    pub fn label(self) -> &'static str {
        match self {
            Refused::Banned => "banned",
            Refused::Restricted => "restricted",
            Refused::RateLimited => "rate_limited",
            Refused::Filtered => "filtered",
            Refused::Invalid => "invalid",
            Refused::Unavailable => "unavailable",
        }
    }

    pub fn count(self) {
        metrics::counter!(MESSAGES_REFUSED, "reason" => self.label()).increment(1);
    }
}

/// How a join ended (`outcome` of [`JOINS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinOutcome {
    Assigned,
    NoWorker,
    AtCapacity,
    Unauthorized,
    Invalid,
    Unavailable,
}

impl JoinOutcome {
    pub fn label(self) -> &'static str {
        match self {
            JoinOutcome::Assigned => "assigned",
            JoinOutcome::NoWorker => "no_worker",
            JoinOutcome::AtCapacity => "at_capacity",
            JoinOutcome::Unauthorized => "unauthorized",
            JoinOutcome::Invalid => "invalid",
            JoinOutcome::Unavailable => "unavailable",
        }
    }

    pub fn count(self) {
        metrics::counter!(JOINS, "outcome" => self.label()).increment(1);
    }
}

/// Registers help texts and units with the recorder.
pub fn describe() {
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the version label says which chatup runs"
    );
    describe_counter!(
        MESSAGES_ACCEPTED,
        "Messages stored in Redis and acknowledged (202)"
    );
    describe_counter!(
        MESSAGES_REFUSED,
        "Messages refused by the worker, by reason: banned (and muted), restricted (room rules), rate_limited (and slow mode), filtered (and the publish hook's rejections), invalid, unavailable (Redis down, draining, the publish hook failed)"
    );
    describe_histogram!(
        MESSAGE_STORE_SECONDS,
        Unit::Seconds,
        "From the module's hand-off to the message being stored in Redis (the acknowledgement's latency in the sidecar)"
    );
    describe_histogram!(
        MESSAGE_PUBLISH_DELAY_SECONDS,
        Unit::Seconds,
        "From a message's acceptance by a module (its id's time, any worker's clock) to nchan taking the frame carrying it on this worker"
    );
    describe_histogram!(
        NCHAN_PUBLISH_SECONDS,
        Unit::Seconds,
        "One publish request to the local nchan, answered"
    );
    describe_counter!(
        NCHAN_ERRORS,
        "Publish requests to the local nchan that failed (retried, then caught up from history)"
    );
    describe_gauge!(
        NCHAN_REQUESTS_IN_FLIGHT,
        "Requests to the local nginx waiting or in flight (at most 64 are sent at once)"
    );
    describe_counter!(FRAMES_PUBLISHED, "Frames nchan accepted");
    describe_histogram!(FRAME_MESSAGES, "Messages per frame published");
    describe_counter!(
        FRAMES_UNDELIVERED,
        "Frames nchan refused after every retry: the room catches up from history"
    );
    describe_histogram!(
        PUBLISH_HOOK_SECONDS,
        Unit::Seconds,
        "One call to the site's publish hook, answered or failed"
    );
    describe_counter!(
        PUBLISH_HOOK_FAILURES,
        "Calls to the publish hook that failed (no answer in time, an error, an answer that does not fit): on_failure decided"
    );
    describe_counter!(
        MESSAGES_SAMPLED_OUT,
        "Messages of hot rooms kept in history but not shown to this worker's readers (hot_room_rate)"
    );
    describe_gauge!(
        ROOMS_SERVED,
        "Rooms this worker serves (subscribed in Redis)"
    );
    describe_gauge!(READERS, "Readers connected to this worker's nginx");
    describe_counter!(
        SUBSCRIPTION_RECONNECTS,
        "Redis subscription connections re-established (each followed by a resync)"
    );
    describe_counter!(
        ROOM_RESYNCS,
        "Times every room caught up from history (after a subscription loss or a master change)"
    );
    describe_counter!(
        ROOM_TASK_RESTARTS,
        "Room tasks that ended on their own (a bug: a panic) and were started again from the whole history"
    );
    describe_counter!(
        HEARTBEATS,
        "Heartbeats, by result (ok, failed): failures take the worker out of the registry"
    );
    describe_counter!(
        NGINX_POSTS,
        "Chat POSTs the nginx module answered, by status (read from its shared memory)"
    );
    describe_counter!(
        NGINX_TOKEN_FAILURES,
        "Posts and readers the nginx module refused for their token, by reason"
    );
    describe_histogram!(
        REDIS_COMMAND_SECONDS,
        Unit::Seconds,
        "Redis round trips (a command or a pipeline), answered or failed"
    );
    describe_counter!(
        REDIS_ERRORS,
        "Redis round trips that failed, by kind (timeout, error)"
    );
    describe_counter!(
        JOINS,
        "Joins, by outcome: assigned, no_worker, at_capacity, unauthorized, invalid, unavailable"
    );
    describe_gauge!(WORKERS_LIVE, "Live chat workers in the registry");
    describe_gauge!(
        WORKER_UP,
        "1 while a chat worker is in the registry, 0 once it left it"
    );
    describe_gauge!(
        WORKER_LOAD,
        "A chat worker's load as the dispatchers rank it"
    );
    describe_gauge!(
        WORKER_READERS,
        "Readers on a chat worker, at its last heartbeat"
    );
}

#[cfg(test)]
mod tests {
    use super::ALL;

    const ALERTS: &str = include_str!("../../../conf/monitoring/chatup-alerts.yml");
    const DASHBOARD: &str = include_str!("../../../conf/monitoring/chatup-dashboard.json");
    const OPERATIONS: &str = include_str!("../../../docs/operations.md");

    /// The metric names `text` mentions (histogram series as their metric).
    fn mentioned(text: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find("chatup_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            let name = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            names.push(name.to_owned());
            rest = &tail[end..];
        }
        names
    }

    #[test]
    fn the_alert_rules_and_the_dashboard_use_only_metrics_that_exist() {
        for (file, text) in [("alerts", ALERTS), ("dashboard", DASHBOARD)] {
            let names = mentioned(text);
            assert!(!names.is_empty(), "{file} mentions no metric");
            for name in names {
                assert!(
                    ALL.contains(&name.as_str()),
                    "{file} uses {name}, which no process records"
                );
            }
        }
    }

    #[test]
    fn every_metric_is_documented_in_operations_md() {
        let documented = mentioned(OPERATIONS);
        for name in ALL {
            assert!(
                documented.iter().any(|d| d == name),
                "{name} is not in docs/operations.md"
            );
        }
    }
}
