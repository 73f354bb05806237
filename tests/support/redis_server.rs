//! A real `redis-server` for one test: a free port, a temporary directory,
//! persistence off; stopped (killed) when dropped.
//!
//! When `redis-server` is not installed, [`RedisServer::start`] returns
//! `None` after saying how to install it, so that `cargo test` still runs on
//! a machine with only the Rust toolchain; with `PROXYSTORE_REQUIRE_REDIS`
//! set (CI sets it) a missing server fails the test instead.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The program to run: `PROXYSTORE_REDIS_SERVER`, or `redis-server` on PATH.
pub fn program() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PROXYSTORE_REDIS_SERVER") {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("redis-server"))
            .find(|p| p.is_file())
    })
}

/// Whether a missing server must fail the test rather than skip it.
fn required() -> bool {
    std::env::var_os("PROXYSTORE_REQUIRE_REDIS").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Returns the server program, or explains how to get one: `None` means
/// the calling test should return now.
pub fn program_or_skip(test: &str) -> Option<PathBuf> {
    match program() {
        Some(p) => Some(p),
        None => {
            let message = format!(
                "{test}: needs `redis-server`, which is not installed. Install it with \
                 `apt-get install redis-server` (Debian/Ubuntu) or `brew install redis` \
                 (macOS), or point PROXYSTORE_REDIS_SERVER at one."
            );
            if required() {
                panic!("{message} (PROXYSTORE_REQUIRE_REDIS is set, so this is a failure)");
            }
            eprintln!("SKIPPED {message}");
            None
        }
    }
}

/// Makes the process `command` starts die with this one (Linux's
/// parent-death signal), so that a test or benchmark killed from outside
/// leaves no server or worker running.
pub fn die_with_parent(command: &mut Command) -> &mut Command {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; nothing else runs between
        // fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    command
}

/// A running server.
pub struct RedisServer {
    child: Option<Child>,
    program: PathBuf,
    /// Commands that prefix the server's command line (`ip netns exec ns`).
    prefix: Vec<String>,
    bind: String,
    port: u16,
    dir: tempfile::TempDir,
    /// Extra arguments (TLS settings).
    extra: Vec<String>,
    /// The TLS port, if any.
    tls_port: Option<u16>,
}

impl RedisServer {
    /// Starts a server on 127.0.0.1 and a free port, or returns `None`
    /// (see the module docs).
    pub fn start(test: &str) -> Option<RedisServer> {
        let program = program_or_skip(test)?;
        for _ in 0..5 {
            let port = free_port();
            match RedisServer::start_on(&program, &[], "127.0.0.1", port) {
                Ok(server) => return Some(server),
                Err(e) => eprintln!("redis-server on port {port} did not start: {e}; retrying"),
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// Starts a server on 127.0.0.1 and a free port, with `args` added to
    /// its command line, or returns `None` (see the module docs).
    pub fn start_with(test: &str, args: &[&str]) -> Option<RedisServer> {
        let program = program_or_skip(test)?;
        for _ in 0..5 {
            let port = free_port();
            let mut server = RedisServer {
                child: None,
                program: program.clone(),
                prefix: Vec::new(),
                bind: "127.0.0.1".into(),
                port,
                dir: tempfile::tempdir().unwrap(),
                extra: args.iter().map(|s| s.to_string()).collect(),
                tls_port: None,
            };
            match server.spawn() {
                Ok(()) => return Some(server),
                Err(e) => eprintln!("redis-server on port {port} did not start: {e}; retrying"),
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// The server's temporary directory (for a Unix socket, say).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Starts `program` with `prefix` before it, listening on `bind:port`.
    pub fn start_on(
        program: &std::path::Path,
        prefix: &[&str],
        bind: &str,
        port: u16,
    ) -> Result<RedisServer, String> {
        let mut server = RedisServer {
            child: None,
            program: program.to_path_buf(),
            prefix: prefix.iter().map(|s| s.to_string()).collect(),
            bind: bind.to_string(),
            port,
            dir: tempfile::tempdir().map_err(|e| e.to_string())?,
            extra: Vec::new(),
            tls_port: None,
        };
        server.spawn()?;
        Ok(server)
    }

    /// Starts a server that also serves TLS, with a certificate for
    /// `localhost` and 127.0.0.1 signed by a fresh test CA; returns it and
    /// the CA's certificate file. `None` (after saying why) without
    /// `redis-server` or `openssl`.
    pub fn start_tls(test: &str) -> Option<(RedisServer, PathBuf)> {
        let program = program_or_skip(test)?;
        let dir = tempfile::tempdir().unwrap();
        let openssl = |args: &[&str]| {
            Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        std::fs::write(
            dir.path().join("ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .unwrap();
        let made = openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=proxystore-test-ca",
        ]) && openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]) && openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext",
        ]);
        if !made {
            let message = format!("{test}: needs the `openssl` command to make test certificates");
            if required() {
                panic!("{message} (PROXYSTORE_REQUIRE_REDIS is set, so this is a failure)");
            }
            eprintln!("SKIPPED {message}");
            return None;
        }
        let file = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
        for _ in 0..5 {
            let (port, tls_port) = (free_port(), free_port());
            let mut server = RedisServer {
                child: None,
                program: program.clone(),
                prefix: Vec::new(),
                bind: "127.0.0.1".into(),
                port,
                dir: tempfile::tempdir().unwrap(),
                extra: vec![
                    "--tls-port".into(),
                    tls_port.to_string(),
                    "--tls-cert-file".into(),
                    file("server.crt"),
                    "--tls-key-file".into(),
                    file("server.key"),
                    "--tls-ca-cert-file".into(),
                    file("ca.crt"),
                    "--tls-auth-clients".into(),
                    "no".into(),
                ],
                tls_port: Some(tls_port),
            };
            match server.spawn() {
                Ok(()) => {
                    let ca = server.dir.path().join("ca.crt");
                    std::fs::copy(dir.path().join("ca.crt"), &ca).unwrap();
                    return Some((server, ca));
                }
                Err(e) => eprintln!("redis-server with TLS did not start: {e}; retrying"),
            }
        }
        panic!("redis-server with TLS did not start");
    }

    /// `rediss://localhost:<tls port>` of a server from
    /// [`start_tls`](RedisServer::start_tls).
    pub fn tls_url(&self) -> String {
        format!(
            "rediss://localhost:{}",
            self.tls_port.expect("a TLS server")
        )
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut command = match self.prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&self.program);
                c
            }
            None => Command::new(&self.program),
        };
        command
            .args(["--port", &self.port.to_string()])
            .args(["--bind", &self.bind])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "no", "--daemonize", "no"])
            .args(["--loglevel", "warning"])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let mut child = die_with_parent(&mut command)
            .spawn()
            .map_err(|e| format!("spawn: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr: SocketAddr = format!("{}:{}", self.connect_host(), self.port)
            .parse()
            .map_err(|e| format!("{e}"))?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("exited with {status}"));
            }
            if ping(&addr) {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err("no PONG within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn connect_host(&self) -> &str {
        if self.bind == "0.0.0.0" {
            "127.0.0.1"
        } else {
            &self.bind
        }
    }

    /// `redis://host:port` for the address the server listens on.
    pub fn url(&self) -> String {
        format!("redis://{}:{}", self.connect_host(), self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (all its data is lost, as with a crash).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts a fresh one on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => panic!("restart failed: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Sends one command over a fresh connection and returns the raw
    /// reply (RESP), for checks that must not go through the code under
    /// test.
    pub fn raw(&self, args: &[&str]) -> String {
        let addr: SocketAddr = format!("{}:{}", self.connect_host(), self.port)
            .parse()
            .unwrap();
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut request = format!("*{}\r\n", args.len());
        for a in args {
            request.push_str(&format!("${}\r\n{}\r\n", a.len(), a));
        }
        stream.write_all(request.as_bytes()).unwrap();
        // Read until one whole reply arrived (closing our side first would
        // let the server drop a large reply half way).
        let mut reply = Vec::new();
        let mut buf = [0u8; 64 * 1024];
        while resp_end(&reply, 0).is_none() {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => reply.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&reply).into_owned()
    }

    /// Every key on the server matching `pattern` (KEYS: fine for tests).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let reply = self.raw(&["KEYS", pattern]);
        let mut lines = reply.split("\r\n");
        let mut keys = Vec::new();
        let head = lines.next().unwrap_or_default();
        assert!(head.starts_with('*'), "KEYS answered {reply:?}");
        while let Some(line) = lines.next() {
            if line.starts_with('$') {
                keys.push(lines.next().unwrap_or_default().to_string());
            }
        }
        keys.sort();
        keys
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Where the RESP value starting at `at` ends, if it is complete.
fn resp_end(bytes: &[u8], at: usize) -> Option<usize> {
    let line_end = at + bytes.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&bytes[at + 1..line_end]).ok()?;
    let next = line_end + 2;
    match bytes[at] {
        b'$' | b'=' | b'!' => {
            let len: i64 = line.parse().ok()?;
            if len < 0 {
                return Some(next);
            }
            let end = next + len as usize + 2;
            (bytes.len() >= end).then_some(end)
        }
        b'*' | b'~' | b'>' | b'%' => {
            let count: i64 = line.parse().ok()?;
            let count = if bytes[at] == b'%' { count * 2 } else { count };
            let mut pos = next;
            for _ in 0..count.max(0) {
                pos = resp_end(bytes, pos)?;
            }
            Some(pos)
        }
        _ => Some(next),
    }
}

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn ping(addr: &SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}
