//! Optional error reporting to Sentry (or a compatible service): panics,
//! and every `error`-level log as an event with the `warn`/`info` logs
//! before it as breadcrumbs. Off unless a DSN is configured
//! (`sentry_dsn`, `CHATUP_SENTRY_DSN`). Events go out from a background
//! thread, never from the request path; at exit the queue is flushed for
//! up to two seconds.

use sentry::integrations::tracing::{BreadcrumbLayer, ErrorLayer};
use tracing_subscriber::filter::{filter_fn, LevelFilter};
use tracing_subscriber::Layer;

/// Starts the client if `dsn` is set. Keep the guard for the process's
/// life: dropping it flushes what is queued.
pub fn init(
    dsn: Option<&str>,
    environment: Option<&str>,
    role: &'static str,
) -> Option<sentry::ClientInitGuard> {
    let dsn = dsn?;
    // TLS to the service uses the process's rustls provider (ring).
    crate::config::install_tls_provider();
    let mut options = sentry::ClientOptions::default();
    options.release = Some(concat!("chatup@", env!("CARGO_PKG_VERSION")).into());
    options.environment = environment.map(|e| e.to_owned().into());
    // Logs carry room names and user ids; nothing else personal (no IP
    // addresses, no request bodies) is attached.
    options.send_default_pii = false;
    let guard = sentry::init((dsn, options));
    sentry::configure_scope(|scope| scope.set_tag("role", role));
    Some(guard)
}

/// The tracing layer that turns `error` logs into events and lower ones
/// into breadcrumbs (debug and trace are ignored).
pub fn layer<S>() -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let errors = ErrorLayer::new().with_filter(LevelFilter::ERROR);
    let breadcrumbs = BreadcrumbLayer::new().with_filter(filter_fn(|metadata| {
        matches!(
            *metadata.level(),
            tracing::Level::WARN | tracing::Level::INFO
        )
    }));
    errors.and_then(breadcrumbs)
}
