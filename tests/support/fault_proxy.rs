//! A fault-injecting TCP proxy for tests: sits between a client and a real
//! server on a free loopback port and, on command, cuts every open
//! connection, refuses new ones, or holds them silent (blackhole) — what a
//! server restart, a refused port or a dead network look like to the
//! client, without touching the server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const PASS: u8 = 0;
const REFUSE: u8 = 1;
const BLACKHOLE: u8 = 2;

#[derive(Clone)]
pub struct FaultProxy {
    pub port: u16,
    mode: Arc<AtomicU8>,
    /// Bumped to cut every connection open at that moment.
    cut: Arc<watch::Sender<u64>>,
}

impl FaultProxy {
    /// Starts forwarding `127.0.0.1:<port>` to `target` (`host:port`).
    pub async fn start(target: String) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let mode = Arc::new(AtomicU8::new(PASS));
        let (cut, _) = watch::channel(0u64);
        let proxy = FaultProxy {
            port,
            mode: mode.clone(),
            cut: Arc::new(cut),
        };
        let cut = proxy.cut.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                match mode.load(Ordering::SeqCst) {
                    REFUSE => {
                        // Closed at once: the client sees a reset/EOF.
                        let _ = inbound.shutdown().await;
                        continue;
                    }
                    BLACKHOLE => {
                        // Held open, never answered, until the next cut.
                        let mut rx = cut.subscribe();
                        tokio::spawn(async move {
                            let _ = rx.changed().await;
                            drop(inbound);
                        });
                        continue;
                    }
                    _ => {}
                }
                let target = target.clone();
                let mut rx = cut.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = rx.changed() => {}
                    }
                });
            }
        });
        proxy
    }

    /// Cuts every open connection and refuses new ones.
    pub fn refuse(&self) {
        self.mode.store(REFUSE, Ordering::SeqCst);
        self.cut_all();
    }

    /// New connections are accepted and never answered.
    pub fn blackhole(&self) {
        self.mode.store(BLACKHOLE, Ordering::SeqCst);
        self.cut_all();
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.mode.store(PASS, Ordering::SeqCst);
        self.cut_all();
    }

    /// Cuts every open connection (a server restart, as clients see it).
    pub fn cut_all(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}
