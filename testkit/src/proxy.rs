//! A TCP proxy on 127.0.0.1 that tests control, to make links fail the
//! way networks do: go half-open (kept open, nothing forwarded either way,
//! as after a NAT or load-balancer idle timeout or a lost host).
//!
//! It runs on a thread with a runtime of its own, so it keeps forwarding
//! whatever the test's runtime is doing, and stops when dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    pub port: u16,
    /// Connections accepted from now on belong to this generation; a
    /// blackhole applies to the older ones.
    generation: Arc<AtomicU64>,
    /// Generations below this one are blackholed.
    blackholed_below: watch::Sender<u64>,
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
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let gen = generation.clone();
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
                        let blackhole = blackhole.clone();
                        tokio::spawn(async move {
                            let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                                return;
                            };
                            relay(client, server, mine, blackhole).await;
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
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let blackholed = |blackhole: &watch::Receiver<u64>| generation < *blackhole.borrow();
    let mut up = [0u8; 16 * 1024];
    let mut down = [0u8; 16 * 1024];
    loop {
        if blackholed(&blackhole) {
            // Hold everything open and say nothing, forever.
            std::future::pending::<()>().await;
        }
        let forwarded = tokio::select! {
            changed = blackhole.changed() => changed.is_ok(),
            read = client_read.read(&mut up) => {
                forward(read, &up, &mut server_write, blackholed(&blackhole)).await
            }
            read = server_read.read(&mut down) => {
                forward(read, &down, &mut client_write, blackholed(&blackhole)).await
            }
        };
        if !forwarded {
            return;
        }
    }
}

/// Writes what was read on to the other side (unless blackholed); false
/// once either side is closed.
async fn forward(
    read: std::io::Result<usize>,
    buf: &[u8],
    to: &mut OwnedWriteHalf,
    blackholed: bool,
) -> bool {
    match read {
        Ok(0) | Err(_) => false,
        Ok(_) if blackholed => true,
        Ok(n) => to.write_all(&buf[..n]).await.is_ok(),
    }
}
