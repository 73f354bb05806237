//! The real Python ProxyStore 1.1.0, for the interop tests.
//!
//! The interpreter is `PROXYSTORE_PYTHON` if set, else a virtual
//! environment under the target directory, created once (`python3 -m venv`,
//! then `pip install proxystore==1.1.0 numpy redis`) and reused by every
//! later run. Without `python3` the calling test is skipped with a message
//! saying how to get it, unless `PROXYSTORE_REQUIRE_PYTHON` is set (CI sets
//! it), in which case it fails.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// What pip installs into the environment.
const PACKAGES: &[&str] = &["proxystore==1.1.0", "numpy", "redis"];

fn required() -> bool {
    std::env::var_os("PROXYSTORE_REQUIRE_PYTHON").is_some_and(|v| !v.is_empty() && v != "0")
}

fn importable(python: &Path) -> bool {
    Command::new(python)
        .args([
            "-c",
            "import proxystore, numpy, redis; assert proxystore.__version__ == '1.1.0'",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn venv_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("python-proxystore-1.1.0")
}

/// Creates the environment in a directory of its own and renames it into
/// place, so that test processes racing to create it never share a
/// half-made one.
fn create_venv() -> Result<PathBuf, String> {
    let dir = venv_dir();
    let python = dir.join("bin").join("python");
    if importable(&python) {
        return Ok(python);
    }
    let staging = dir.with_extension(format!("tmp-{}", std::process::id()));
    let run = |cmd: &mut Command| -> Result<(), String> {
        let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{cmd:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    eprintln!(
        "creating a python environment with {PACKAGES:?} in {}",
        dir.display()
    );
    // The venv's scripts record its path: it is made where it will live
    // when no other process has made it yet.
    let _ = std::fs::remove_dir_all(&staging);
    run(Command::new("python3").arg("-m").arg("venv").arg(&staging))?;
    let pip = staging.join("bin").join("pip");
    run(Command::new(&pip).args(["install", "-q"]).args(PACKAGES))?;
    match std::fs::rename(&staging, &dir) {
        Ok(()) => {}
        Err(_) if importable(&python) => {
            let _ = std::fs::remove_dir_all(&staging);
        }
        Err(_) => {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::rename(&staging, &dir).map_err(|e| e.to_string())?;
        }
    }
    // The scripts moved: the interpreter itself still works by path.
    if importable(&python) {
        Ok(python)
    } else {
        Err(format!(
            "{} cannot import proxystore 1.1.0",
            python.display()
        ))
    }
}

fn find() -> Result<PathBuf, String> {
    if let Some(python) = std::env::var_os("PROXYSTORE_PYTHON") {
        let python = PathBuf::from(python);
        return if importable(&python) {
            Ok(python)
        } else {
            Err(format!(
                "PROXYSTORE_PYTHON={} cannot import proxystore 1.1.0, numpy and redis",
                python.display()
            ))
        };
    }
    let has_python = Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_python {
        return Err(
            "needs `python3` (with venv and pip), which is not installed. Install it \
                    with `apt-get install python3 python3-venv` (Debian/Ubuntu) or `brew install \
                    python` (macOS), or point PROXYSTORE_PYTHON at an interpreter that has \
                    proxystore==1.1.0, numpy and redis"
                .into(),
        );
    }
    create_venv()
}

/// The interpreter, or `None` after saying why the test is skipped.
pub fn python_or_skip(test: &str) -> Option<PathBuf> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match FOUND.get_or_init(find) {
        Ok(p) => Some(p.clone()),
        Err(message) => {
            let message = format!("{test}: {message}");
            if required() {
                panic!("{message} (PROXYSTORE_REQUIRE_PYTHON is set, so this is a failure)");
            }
            eprintln!("SKIPPED {message}");
            None
        }
    }
}

/// Runs `script` with `args`; panics with its stderr if it fails.
pub fn run(python: &Path, script: &str, args: &[&str]) -> String {
    let out = output(python, script, args);
    assert!(
        out.status.success(),
        "python failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Runs `script` with `args` and returns what it did.
pub fn output(python: &Path, script: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(python);
    cmd.arg("-c").arg(script).args(args);
    super::redis_server::die_with_parent(&mut cmd);
    cmd.output().expect("python runs")
}
