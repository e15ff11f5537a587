//! A TCP proxy that stands in for a DNS name in front of Redis: each new
//! connection goes to the current target, and switching the target leaves
//! the connections already made where they are, as a name that changes its
//! address leaves open sockets on the old one.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::thread;

/// The proxy, listening on a port of 127.0.0.1 until dropped.
#[derive(Debug)]
pub struct Proxy {
    port: u16,
    target: Arc<AtomicU16>,
    stopped: Arc<AtomicBool>,
}

impl Proxy {
    /// Starts one that sends new connections to 127.0.0.1:`target`.
    pub fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().unwrap().port();
        let proxy = Proxy {
            port,
            target: Arc::new(AtomicU16::new(target)),
            stopped: Arc::new(AtomicBool::new(false)),
        };
        let target = Arc::clone(&proxy.target);
        let stopped = Arc::clone(&proxy.stopped);
        thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let upstream =
                    match TcpStream::connect(("127.0.0.1", target.load(Ordering::SeqCst))) {
                        Ok(upstream) => upstream,
                        // Like a name pointing at a dead host: the client sees
                        // the connection close.
                        Err(_) => continue,
                    };
                pipe(&client, &upstream);
                pipe(&upstream, &client);
            }
        });
        proxy
    }

    /// Its port: the worker's URL names it.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// New connections go to 127.0.0.1:`target` from now on.
    pub fn switch(&self, target: u16) {
        self.target.store(target, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copies `from` to `to` on a thread of its own until `from` ends, then
/// ends `to` too.
fn pipe(from: &TcpStream, to: &TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    thread::spawn(move || {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(read) => {
                    if to.write_all(&buffer[..read]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}
