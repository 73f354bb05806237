//! Worker mode: this executable serving a [`ProcessPool`](crate::executor::ProcessPool).
//!
//! A process pool starts its workers by running the current executable
//! again with an environment variable set. [`init`] must be the first thing
//! in `main`: in a worker it serves tasks and exits; in the normal program
//! it returns at once.
//!
//! ```no_run
//! fn main() {
//!     proxystore::worker::init();     // a pool worker never returns from here
//!     // ... the program ...
//! }
//! ```
//!
//! The worker loop is entered explicitly rather than from a constructor that
//! runs before `main`, because such a constructor can run before the task
//! registry is complete. Tasks may print: the protocol uses its own file
//! descriptors (3 and 4), never stdout.
//!
//! # Integration tests
//!
//! A test binary under the default harness has no `main` of yours. Put
//! [`test_worker!`](crate::test_worker) at the top level of the test file
//! and build pools with
//! [`ProcessPool::builder(n).test_harness()`](crate::executor::ProcessPoolBuilder::test_harness):
//! workers then run the test binary with only that entry test selected.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::fd::FromRawFd;

/// The environment variable that puts an executable in worker mode.
pub const WORKER_ENV: &str = "PROXYSTORE_WORKER";
pub(crate) const REQUEST_FD: i32 = 3;
pub(crate) const RESPONSE_FD: i32 = 4;

/// The name of the test that [`test_worker!`](crate::test_worker) defines.
pub const TEST_ENTRY: &str = "proxystore_worker_entry";

static SERVING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this process was started by a pool but has not entered the
/// worker loop: `main` created a pool before calling [`init`]. Starting a
/// pool then would start workers that do the same, without end.
pub(crate) fn started_as_worker_without_init() -> bool {
    std::env::var_os(WORKER_ENV).is_some() && !SERVING.load(std::sync::atomic::Ordering::Acquire)
}

/// Serves tasks and exits if this process was started as a pool worker;
/// returns at once otherwise. Call it first thing in `main`.
pub fn init() {
    if std::env::var_os(WORKER_ENV).is_none() {
        return;
    }
    SERVING.store(true, std::sync::atomic::Ordering::Release);
    let code = match serve() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("proxystore worker {}: {e}", std::process::id());
            1
        }
    };
    std::process::exit(code);
}

fn fd_is_open(fd: i32) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

fn serve() -> io::Result<()> {
    if !fd_is_open(REQUEST_FD) || !fd_is_open(RESPONSE_FD) {
        return Err(io::Error::other(format!(
            "{WORKER_ENV} is set but descriptors {REQUEST_FD} and {RESPONSE_FD} are not open; \
             worker mode is only for processes started by a ProcessPool"
        )));
    }
    // SAFETY: the pool passed these two pipe ends to us, and nothing else in
    // this process owns them.
    let (input, output) = unsafe {
        (
            File::from_raw_fd(REQUEST_FD),
            File::from_raw_fd(RESPONSE_FD),
        )
    };
    let mut input = BufReader::with_capacity(64 * 1024, crate::spin::SpinReader::new(input)?);
    let mut output = BufWriter::with_capacity(64 * 1024, output);
    let mut buf = Vec::new();
    loop {
        let mut header = [0u8; 16];
        match input.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let id = u64::from_le_bytes(header[..8].try_into().expect("8 bytes"));
        let len = u64::from_le_bytes(header[8..].try_into().expect("8 bytes"));
        let len = usize::try_from(len).map_err(io::Error::other)?;
        if len > buf.capacity() {
            buf = crate::codec::zeroed_buffer(len);
        } else {
            buf.clear();
            buf.resize(len, 0);
        }
        input.read_exact(&mut buf)?;
        let result = crate::task::run_job_bytes(&buf);
        let (status, body) = match &result {
            Ok(bytes) => (0u8, bytes.as_slice()),
            Err(failure) => (1u8, failure.message().as_bytes()),
        };
        output.write_all(&id.to_le_bytes())?;
        output.write_all(&[status])?;
        output.write_all(&(body.len() as u64).to_le_bytes())?;
        output.write_all(body)?;
        // Answer at once unless more requests are already waiting: then the
        // answers go out together.
        if input.buffer().is_empty() {
            output.flush()?;
        }
    }
}

/// Defines the entry test that lets an integration-test binary serve as
/// pool workers (see the [module docs](self)).
///
/// ```no_run
/// // tests/my_tasks.rs
/// proxystore::test_worker!();
///
/// #[test]
/// fn runs_on_workers() {
///     let pool = proxystore::executor::ProcessPool::builder(2).test_harness().build().unwrap();
///     // ...
/// }
/// ```
#[macro_export]
macro_rules! test_worker {
    () => {
        /// Entry point of pool workers started from this test binary; does
        /// nothing in a normal test run.
        #[test]
        fn proxystore_worker_entry() {
            $crate::worker::init();
        }
    };
}
