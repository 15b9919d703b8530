//! A TCP proxy between the gateway and a broker, on an ephemeral port: it passes traffic, cuts
//! every connection (and refuses new ones, as a broker that went away), or swallows everything
//! while keeping connections open (a stalled broker: publishes vanish and no acknowledgement
//! comes back).

use std::sync::atomic::{AtomicU8, Ordering};

use super::*;

const PASS: u8 = 0;
const CUT: u8 = 1;
const SWALLOW: u8 = 2;

/// The proxy; it stops, closing everything, when dropped.
pub struct Proxy {
    pub port: u16,
    mode: Arc<AtomicU8>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
    accepted: Arc<std::sync::atomic::AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Proxy {
    /// A proxy to `127.0.0.1:target`, passing traffic.
    pub fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("address").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let mode = Arc::new(AtomicU8::new(PASS));
        let connections: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let accepted = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        {
            let (mode, connections, accepted, stop) = (
                Arc::clone(&mode),
                Arc::clone(&connections),
                Arc::clone(&accepted),
                Arc::clone(&stop),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let client = match listener.accept() {
                        Ok((client, _)) => client,
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        }
                    };
                    let _ = client.set_nonblocking(false);
                    if mode.load(Ordering::Relaxed) == CUT {
                        drop(client);
                        continue;
                    }
                    let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                        continue;
                    };
                    accepted.fetch_add(1, Ordering::Relaxed);
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    if let Ok(mut held) = connections.lock() {
                        for stream in [&client, &server] {
                            if let Ok(clone) = stream.try_clone() {
                                held.push(clone);
                            }
                        }
                    }
                    for (from, to) in [(&client, &server), (&server, &client)] {
                        let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else {
                            continue;
                        };
                        let mode = Arc::clone(&mode);
                        std::thread::spawn(move || pump(from, to, &mode));
                    }
                }
            });
        }
        Self {
            port,
            mode,
            connections,
            accepted,
            stop,
        }
    }

    /// Passes traffic again (new connections reach the broker).
    pub fn pass(&self) {
        self.mode.store(PASS, Ordering::Relaxed);
    }

    /// Closes every connection, and refuses new ones until [`Proxy::pass`].
    pub fn cut(&self) {
        self.mode.store(CUT, Ordering::Relaxed);
        self.close_all();
    }

    /// Keeps connections open but forwards nothing, either way, until [`Proxy::pass`] (which
    /// does not revive what was swallowed: those connections stay mute; new ones work).
    pub fn swallow(&self) {
        self.mode.store(SWALLOW, Ordering::Relaxed);
    }

    /// Connections accepted and forwarded so far.
    pub fn connections(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    fn close_all(&self) {
        if let Ok(mut held) = self.connections.lock() {
            for stream in held.drain(..) {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.close_all();
    }
}

/// Copies `from` to `to` while passing; once a connection has swallowed, it stays mute.
fn pump(mut from: TcpStream, mut to: TcpStream, mode: &AtomicU8) {
    let mut buffer = [0u8; 16 * 1024];
    let mut mute = false;
    loop {
        let read = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        match mode.load(Ordering::Relaxed) {
            SWALLOW => mute = true,
            CUT => break,
            _ => {}
        }
        if !mute && to.write_all(&buffer[..read]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
    let _ = from.shutdown(std::net::Shutdown::Both);
}
