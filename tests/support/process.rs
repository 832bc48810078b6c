//! Helpers for tests that run the programs as processes.

use std::io::Read;
use std::sync::{Arc, Mutex};

/// Everything `stream` produces, gathered by a thread.
#[allow(
    dead_code,
    reason = "not every test that includes this module needs it"
)]
pub fn collect(mut stream: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    std::thread::spawn(move || {
        let mut buffer = [0; 4096];
        while let Ok(n) = stream.read(&mut buffer) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buffer[..n]);
        }
    });
    seen
}

/// A free loopback port (bound and released).
#[allow(
    dead_code,
    reason = "not every test that includes this module needs one"
)]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
