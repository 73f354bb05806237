//! The guardian: a small process that removes a shared-memory store's
//! directory when the process that created it dies, however it dies.
//!
//! Memory in `/dev/shm` is not freed when a process exits: a store whose
//! creator was killed (`SIGKILL`, the OOM killer, a crash) would hold its
//! objects in RAM until reboot. No signal handler or `atexit` hook runs on
//! `SIGKILL`, so the cleanup has to live in another process. The guardian
//! is `/bin/sh` running [`SCRIPT`]:
//!
//! - its standard input is a pipe whose write end only the creating process
//!   holds (the standard library opens it close-on-exec, so children that
//!   process starts later, such as pool workers, never inherit it). The
//!   kernel closes that end when the creator exits in any way, and the
//!   guardian reads end of file;
//! - the creator tells it, one line each, which directories to watch
//!   (`+<dir>`) and which it has removed itself (`-<dir>`);
//! - at end of file it removes, in each directory still watched, only the
//!   names a store makes (objects named by a key, temporary files
//!   `.<key>.<uuid>.tmp`, pooled segments `<size>.<uuid>.seg`), then removes the directory with `rmdir`, which
//!   fails, and keeps the directory, if anything else is in it. It retries
//!   for a few seconds, for writers (pool workers) that were still
//!   finishing a write when the creator died;
//! - it runs in a process group of its own and ignores `SIGINT`, `SIGTERM`
//!   and `SIGHUP`, so the Ctrl-C or hang-up that kills the creator's group
//!   does not kill it first; it keeps no terminal, output or working
//!   directory busy.
//!
//! There is one guardian per process, shared by all the stores it creates,
//! rather than one per store: a program (or a test suite) that makes many
//! short-lived stores would otherwise start a process for each, and a
//! guardian costs a process table entry and about a millisecond to start.
//! It is started with the first store and ended (its pipe closed, its exit
//! awaited) when the last store it watches is closed. Starting it is a
//! `fork`+`exec` by `std::process::Command`, never a bare `fork` (which is
//! unsound in a multithreaded library).

use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;

/// The guardian's program (POSIX `sh`).
///
/// `$U` is a glob of a key's canonical form; in `"$d"/$U` only the
/// unquoted part is a pattern, so whatever the directory's name holds is
/// taken literally.
const SCRIPT: &str = r#"
trap '' INT TERM HUP
cd / || exit 1
nl='
'
H='[0-9a-f]'
U="$H$H$H$H$H$H$H$H-$H$H$H$H-$H$H$H$H-$H$H$H$H-$H$H$H$H$H$H$H$H$H$H$H$H"
dirs=''
while IFS= read -r line; do
  d=${line#?}
  case $line in
    +*) dirs="$dirs$d$nl" ;;
    -*)
      rest=$dirs
      dirs=''
      while [ -n "$rest" ]; do
        e=${rest%%"$nl"*}
        rest=${rest#*"$nl"}
        [ "$e" = "$d" ] || dirs="$dirs$e$nl"
      done
      ;;
  esac
done
round=0
while [ -n "$dirs" ] && [ $round -lt 50 ]; do
  rest=$dirs
  dirs=''
  while [ -n "$rest" ]; do
    d=${rest%%"$nl"*}
    rest=${rest#*"$nl"}
    rm -f -- "$d"/$U "$d"/.$U.$U.tmp "$d"/[0-9]*.$U.seg 2>/dev/null
    rmdir -- "$d" 2>/dev/null || { [ -d "$d" ] && dirs="$dirs$d$nl"; }
  done
  [ -z "$dirs" ] || sleep 0.1
  round=$((round + 1))
done
"#;

struct Running {
    child: Child,
    stdin: ChildStdin,
    /// The directories it watches.
    watched: Vec<PathBuf>,
}

static GUARDIAN: Mutex<Option<Running>> = Mutex::new(None);

fn lock() -> std::sync::MutexGuard<'static, Option<Running>> {
    // A panic while holding the lock leaves the state consistent enough:
    // at worst a directory is watched that was already removed.
    GUARDIAN.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether `dir` can be told to the guardian: its protocol is one line
/// per directory.
pub(super) fn representable(dir: &Path) -> bool {
    !dir.as_os_str().as_bytes().contains(&b'\n')
}

fn line(sign: u8, dir: &Path) -> Vec<u8> {
    let mut line = vec![sign];
    line.extend_from_slice(dir.as_os_str().as_bytes());
    line.push(b'\n');
    line
}

fn spawn() -> io::Result<Running> {
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(SCRIPT)
        .arg("proxystore-shm-guardian")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()?;
    let stdin = child.stdin.take().expect("stdin was piped");
    Ok(Running {
        child,
        stdin,
        watched: Vec::new(),
    })
}

/// Has the guardian watch `dir` (started if needed); call before creating
/// the directory, so no moment exists when it is there and unwatched.
pub(super) fn watch(dir: &Path) -> io::Result<()> {
    let mut guardian = lock();
    let message = line(b'+', dir);
    if let Some(running) = guardian.as_mut() {
        if running.stdin.write_all(&message).is_ok() {
            running.watched.push(dir.to_path_buf());
            return Ok(());
        }
        // It was killed from outside: what it watched is unguarded. Start
        // another and tell it everything.
        tracing::warn!("shm: the guardian process died; starting another");
        let old = guardian.take().expect("checked above");
        let mut old_child = old.child;
        let _ = old_child.wait();
        let mut running = spawn()?;
        for dir in &old.watched {
            running.stdin.write_all(&line(b'+', dir))?;
        }
        running.watched = old.watched;
        *guardian = Some(running);
    }
    let running = match guardian.as_mut() {
        Some(running) => running,
        None => guardian.insert(spawn()?),
    };
    running.stdin.write_all(&message)?;
    running.watched.push(dir.to_path_buf());
    Ok(())
}

/// Tells the guardian that `dir` is gone (removed by its store); the
/// guardian ends when it watches nothing more.
pub(super) fn forget(dir: &Path) {
    let mut guardian = lock();
    let Some(running) = guardian.as_mut() else {
        return;
    };
    if let Some(at) = running.watched.iter().position(|d| d == dir) {
        running.watched.swap_remove(at);
        let _ = running.stdin.write_all(&line(b'-', dir));
    }
    if running.watched.is_empty() {
        let Running {
            mut child, stdin, ..
        } = guardian.take().expect("checked above");
        // End of file: it has nothing left to remove, and exits at once.
        drop(stdin);
        let _ = child.wait();
    }
}

/// The guardian's process id, if one runs (for tests and diagnostics).
pub(super) fn pid() -> Option<u32> {
    lock().as_ref().map(|running| running.child.id())
}
