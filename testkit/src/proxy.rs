//! A TCP proxy on 127.0.0.1 that tests control, to make links fail the
//! way networks do: go half-open (kept open, nothing forwarded either way,
//! as after a NAT or load-balancer idle timeout or a lost host), or slow.
//!
//! It runs on a thread with a runtime of its own, so it keeps forwarding
//! whatever the test's runtime is doing, and stops when dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with a connection's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Forward,
    /// Kept open, nothing forwarded.
    Blackholed,
}

pub struct Proxy {
    pub port: u16,
    /// Connections accepted from now on belong to this generation; a
    /// blackhole applies to the older ones.
    generation: Arc<AtomicU64>,
    /// Generations below this one are blackholed.
    blackholed_below: watch::Sender<u64>,
    /// Delay added to every chunk forwarded.
    delay_ms: Arc<AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    /// A proxy to `127.0.0.1:target`.
    pub fn start(target: u16) -> anyhow::Result<Self> {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let port = std_listener.local_addr()?.port();
        let generation = Arc::new(AtomicU64::new(0));
        let (blackholed_below, blackhole) = watch::channel(0u64);
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let (gen, delay) = (generation.clone(), delay_ms.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("proxy runtime");
            runtime.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("proxy listener");
                let accept = async {
                    while let Ok((client, _)) = listener.accept().await {
                        let mine = gen.load(Ordering::SeqCst);
                        let (blackhole, delay) = (blackhole.clone(), delay.clone());
                        tokio::spawn(async move {
                            let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                                return;
                            };
                            relay(client, server, mine, blackhole, delay).await;
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped => {}
                }
            });
        });
        Ok(Self {
            port,
            generation,
            blackholed_below,
            delay_ms,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Every connection open now goes half-open: kept open, nothing
    /// forwarded either way, no FIN, no RST. New connections work.
    pub fn blackhole_open_connections(&self) {
        let next = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let _ = self.blackholed_below.send(next);
    }

    /// Delays every chunk forwarded from now on by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Forwards both ways until either side closes or the connection is
/// blackholed (then it holds both sockets open, silent, until the proxy
/// stops).
async fn relay(
    client: TcpStream,
    server: TcpStream,
    generation: u64,
    mut blackhole: watch::Receiver<u64>,
    delay_ms: Arc<AtomicU64>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let link = |blackhole: &watch::Receiver<u64>| {
        if generation < *blackhole.borrow() {
            Link::Blackholed
        } else {
            Link::Forward
        }
    };
    let mut up = [0u8; 16 * 1024];
    let mut down = [0u8; 16 * 1024];
    loop {
        if link(&blackhole) == Link::Blackholed {
            // Hold everything open and say nothing, forever.
            std::future::pending::<()>().await;
        }
        tokio::select! {
            changed = blackhole.changed() => {
                if changed.is_err() { return; }
            }
            read = client_read.read(&mut up) => {
                let Ok(n) = read else { return };
                if n == 0 {
                    return;
                }
                if link(&blackhole) == Link::Blackholed {
                    continue;
                }
                pause(&delay_ms).await;
                if server_write.write_all(&up[..n]).await.is_err() {
                    return;
                }
            }
            read = server_read.read(&mut down) => {
                let Ok(n) = read else { return };
                if n == 0 {
                    return;
                }
                if link(&blackhole) == Link::Blackholed {
                    continue;
                }
                pause(&delay_ms).await;
                if client_write.write_all(&down[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn pause(delay_ms: &AtomicU64) {
    let ms = delay_ms.load(Ordering::SeqCst);
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}
