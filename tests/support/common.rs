//! Helpers shared by the integration tests and the peer process.
#![allow(dead_code)]

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes from lowercase hex.
pub fn unhex(text: &str) -> Vec<u8> {
    let text = text.trim();
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

/// CBOR then hex.
pub fn to_hex<T: serde::Serialize>(value: &T) -> String {
    let mut buf = Vec::new();
    ciborium::into_writer(value, &mut buf).expect("serializable");
    hex(&buf)
}

/// Hex then CBOR.
pub fn from_hex<T: serde::de::DeserializeOwned>(text: &str) -> T {
    ciborium::from_reader(&unhex(text)[..]).expect("valid cbor")
}

/// A store name no other test in this process uses.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls a future on this thread until it is ready (no runtime needed).
pub fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

/// The first line a child process prints on its piped stdout, trimmed.
pub fn first_line(child: &mut std::process::Child) -> String {
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().expect("a piped stdout")),
        &mut line,
    )
    .unwrap();
    line.trim().to_string()
}
