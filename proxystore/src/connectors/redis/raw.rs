//! A plain connection that speaks RESP2 itself, over TCP or a Unix socket.
//!
//! What it buys over the client's own connection: a request is written
//! with one `writev` straight from the caller's parts (a large value is
//! never copied into a request buffer), and a bulk reply is read straight
//! into a buffer of its exact size, or streamed into the decoder, which
//! reads it into the typed buffer of the value (one copy from the kernel,
//! no zeroing, no intermediate `Vec`). TLS connections keep the client's.

use std::io::{self, IoSlice, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, RedisError, RedisResult, Value};

/// Bytes read from the socket at a time for replies (a bulk reply's body
/// larger than this goes straight into its own buffer).
const READ_BUFFER: usize = 64 * 1024;

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn set_timeouts(&self, timeout: Duration) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => {
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))
            }
            Stream::Unix(s) => {
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))
            }
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write_vectored(bufs),
            Stream::Unix(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One connection to the server, with the part of a reply read ahead.
pub(super) struct RawConnection {
    stream: Stream,
    buf: Box<[u8]>,
    /// The unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
}

impl RawConnection {
    /// Connects to the server of `info` (authenticating and selecting its
    /// database), or `None` for a server this connection cannot reach
    /// (TLS): the client's own connection serves it.
    pub(super) fn connect(
        info: &ConnectionInfo,
        connect_timeout: Duration,
        io_timeout: Duration,
    ) -> Option<RedisResult<RawConnection>> {
        let stream = match info.addr() {
            ConnectionAddr::Tcp(host, port) => connect_tcp(host, *port, connect_timeout),
            ConnectionAddr::Unix(path) => UnixStream::connect(path).map(Stream::Unix),
            _ => return None,
        };
        Some((|| {
            let stream = stream?;
            stream.set_timeouts(connect_timeout)?;
            let mut connection = RawConnection {
                stream,
                buf: vec![0u8; READ_BUFFER].into_boxed_slice(),
                start: 0,
                end: 0,
            };
            connection.handshake(info)?;
            connection.stream.set_timeouts(io_timeout)?;
            Ok(connection)
        })())
    }

    /// `AUTH` and `SELECT` where the URL asks for them, and a `PING`, in
    /// one round trip: a server that does not answer, or refuses the
    /// credentials, fails the connection here.
    fn handshake(&mut self, info: &ConnectionInfo) -> RedisResult<()> {
        use super::resp::{expect_ok, pack_args, unexpected};
        let settings = info.redis_settings();
        let mut packed = Vec::new();
        if let Some(password) = settings.password() {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = settings.username() {
                args.push(user.as_bytes());
            }
            args.push(password.as_bytes());
            packed.push(pack_args(&args));
        }
        let db = settings.db().to_string();
        if settings.db() != 0 {
            packed.push(pack_args(&[b"SELECT", db.as_bytes()]));
        }
        packed.push(pack_args(&[b"PING"]));
        let pieces: Vec<&[u8]> = packed.iter().map(Vec::as_slice).collect();
        let mut replies = self.requests(&pieces, pieces.len())?.into_iter();
        if settings.password().is_some() {
            match replies.next().unwrap_or(Value::Nil) {
                Value::Okay => {}
                Value::ServerError(e) => {
                    let e: RedisError = e.into();
                    return Err(RedisError::from((
                        redis::ErrorKind::AuthenticationFailed,
                        "authentication failed",
                        e.to_string(),
                    )));
                }
                other => return Err(unexpected("AUTH", &other)),
            }
        }
        if settings.db() != 0 {
            expect_ok("SELECT", replies.next().unwrap_or(Value::Nil))?;
        }
        match replies.next().unwrap_or(Value::Nil) {
            Value::SimpleString(s) if s == "PONG" => Ok(()),
            Value::ServerError(e) => Err(e.into()),
            other => Err(unexpected("PING", &other)),
        }
    }

    /// Writes a request made of `pieces`, in as few `writev`s as the
    /// socket takes.
    pub(super) fn send(&mut self, pieces: &[&[u8]]) -> io::Result<()> {
        // Up to 64 slices per call (well under IOV_MAX).
        let mut slices: Vec<IoSlice<'_>> = pieces
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| IoSlice::new(p))
            .collect();
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            let upto = rest.len().min(64);
            let n = match self.stream.write_vectored(&rest[..upto]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            IoSlice::advance_slices(&mut rest, n);
        }
        Ok(())
    }

    /// Sends a request and reads its reply.
    pub(super) fn request(&mut self, pieces: &[&[u8]]) -> RedisResult<Value> {
        self.send(pieces)?;
        self.read_value()
    }

    /// Sends requests (`count` of them, in `pieces`) at once and reads
    /// their replies.
    pub(super) fn requests(&mut self, pieces: &[&[u8]], count: usize) -> RedisResult<Vec<Value>> {
        self.send(pieces)?;
        (0..count).map(|_| self.read_value()).collect()
    }

    /// More bytes into the read-ahead buffer (which holds none unread).
    fn fill(&mut self) -> io::Result<()> {
        debug_assert!(self.start == self.end);
        self.start = 0;
        self.end = 0;
        loop {
            match self.stream.read(&mut self.buf) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    self.end = n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// One line of a reply, without its `\r\n` (a line longer than the
    /// buffer is refused: replies read here have short lines).
    fn line(&mut self) -> RedisResult<Vec<u8>> {
        let mut line = Vec::new();
        loop {
            if self.start == self.end {
                self.fill()?;
            }
            let unread = &self.buf[self.start..self.end];
            if let Some(at) = unread.iter().position(|&b| b == b'\n') {
                line.extend_from_slice(&unread[..at]);
                self.start += at + 1;
                if line.pop() != Some(b'\r') {
                    return Err(parse_error("a reply line without \\r\\n"));
                }
                return Ok(line);
            }
            line.extend_from_slice(unread);
            self.start = self.end;
            if line.len() > 1 << 20 {
                return Err(parse_error("a reply line of more than 1 MiB"));
            }
        }
    }

    /// Reads exactly `out.len()` bytes of a reply: what was read ahead
    /// first, the rest straight from the socket when it is large.
    fn read_exact_into(&mut self, mut out: &mut [u8]) -> io::Result<()> {
        while !out.is_empty() {
            let n = self.read_some(out)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            out = &mut out[n..];
        }
        Ok(())
    }

    /// Reads some bytes of a reply into `out` (0 only at the end of the
    /// stream).
    fn read_some(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.start < self.end {
            let n = out.len().min(self.end - self.start);
            out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
            self.start += n;
            return Ok(n);
        }
        if out.len() >= self.buf.len() {
            loop {
                match self.stream.read(out) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    other => return other,
                }
            }
        }
        match self.fill() {
            Ok(()) => self.read_some(out),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// The `\r\n` that ends a bulk string.
    fn end_of_bulk(&mut self) -> RedisResult<()> {
        let mut crlf = [0u8; 2];
        self.read_exact_into(&mut crlf)?;
        if crlf != *b"\r\n" {
            return Err(parse_error("a bulk string not ended by \\r\\n"));
        }
        Ok(())
    }

    /// Reads one reply (RESP2).
    pub(super) fn read_value(&mut self) -> RedisResult<Value> {
        let line = self.line()?;
        let (&kind, rest) = line
            .split_first()
            .ok_or_else(|| parse_error("an empty reply line"))?;
        match kind {
            b'+' if rest == b"OK" => Ok(Value::Okay),
            b'+' => Ok(Value::SimpleString(
                String::from_utf8_lossy(rest).into_owned(),
            )),
            b'-' => {
                // The client's parser makes the server's error of it.
                let mut text = line.clone();
                text.extend_from_slice(b"\r\n");
                redis::parse_redis_value(&text)
            }
            b':' => Ok(Value::Int(number(rest)?)),
            b'$' => match number(rest)? {
                -1 => Ok(Value::Nil),
                len => {
                    let bytes = self.bulk_body(len)?;
                    Ok(Value::BulkString(bytes))
                }
            },
            b'*' => match number(rest)? {
                -1 => Ok(Value::Nil),
                n => {
                    let n = usize::try_from(n).map_err(|_| parse_error("a negative count"))?;
                    let mut items = Vec::with_capacity(n.min(4096));
                    for _ in 0..n {
                        items.push(self.read_value()?);
                    }
                    Ok(Value::Array(items))
                }
            },
            _ => Err(parse_error("a reply of an unknown type")),
        }
    }

    /// The body of a bulk string of `len` bytes, in a buffer of exactly
    /// that size, read without zeroing it first.
    fn bulk_body(&mut self, len: i64) -> RedisResult<Vec<u8>> {
        let len = usize::try_from(len).map_err(|_| parse_error("a negative length"))?;
        let mut out = Vec::with_capacity(len);
        let buffered = len.min(self.end - self.start);
        out.extend_from_slice(&self.buf[self.start..self.start + buffered]);
        self.start += buffered;
        let rest = (len - buffered) as u64;
        if rest > 0 {
            let read = (&mut self.stream).take(rest).read_to_end(&mut out)?;
            if read as u64 != rest {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
        }
        self.end_of_bulk()?;
        Ok(out)
    }

    /// Reads the head of a reply that should be a bulk string: its length,
    /// `None` for nil; the body is left to read.
    pub(super) fn bulk_head(&mut self, command: &str) -> RedisResult<Option<u64>> {
        if self.start == self.end {
            self.fill()?;
        }
        if self.buf[self.start] != b'$' {
            let other = self.read_value()?;
            return match other {
                Value::ServerError(e) => Err(e.into()),
                other => Err(super::resp::unexpected(command, &other)),
            };
        }
        let line = self.line()?;
        match number(&line[1..])? {
            -1 => Ok(None),
            len => u64::try_from(len)
                .map(Some)
                .map_err(|_| parse_error("a negative length")),
        }
    }
}

fn connect_tcp(host: &str, port: u16, timeout: Duration) -> io::Result<Stream> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address for the host");
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(Stream::Tcp(stream));
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn number(text: &[u8]) -> RedisResult<i64> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| parse_error("a malformed number"))
}

fn parse_error(what: &'static str) -> RedisError {
    RedisError::from((redis::ErrorKind::Parse, "malformed reply", what.to_string()))
}

/// The body of a bulk reply, read by the decoder straight from the
/// connection; the connection goes back to its pool once the body and its
/// `\r\n` are read (a reader dropped before the end closes it).
pub(super) struct BulkReader {
    connection: Option<RawConnection>,
    left: u64,
    pool: std::sync::Arc<super::pool::Pool>,
}

impl BulkReader {
    pub(super) fn new(
        connection: RawConnection,
        len: u64,
        pool: std::sync::Arc<super::pool::Pool>,
    ) -> BulkReader {
        BulkReader {
            connection: Some(connection),
            left: len,
            pool,
        }
    }
}

impl Read for BulkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || out.is_empty() {
            return Ok(0);
        }
        let Some(connection) = self.connection.as_mut() else {
            return Err(io::Error::other("the connection failed earlier"));
        };
        let want = out
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        match connection.read_some(&mut out[..want]) {
            Ok(0) => {
                self.connection = None;
                Err(io::ErrorKind::UnexpectedEof.into())
            }
            Ok(n) => {
                self.left -= n as u64;
                Ok(n)
            }
            Err(e) => {
                self.connection = None;
                Err(e)
            }
        }
    }
}

impl Drop for BulkReader {
    fn drop(&mut self) {
        if self.left != 0 {
            return; // closed: the rest of the reply is still on its way
        }
        if let Some(mut connection) = self.connection.take() {
            if connection.end_of_bulk().is_ok() {
                self.pool.give_back(super::pool::Conn::Raw(connection));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (RawConnection, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let connection = RawConnection {
            stream: Stream::Unix(ours),
            buf: vec![0u8; READ_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
        };
        (connection, theirs)
    }

    #[test]
    fn replies_of_every_kind_are_read() {
        let (mut c, mut server) = pair();
        server
            .write_all(b"+OK\r\n+PONG\r\n:-5\r\n$3\r\nabc\r\n$-1\r\n*2\r\n$1\r\na\r\n:1\r\n*0\r\n-ERR bad thing\r\n")
            .unwrap();
        assert_eq!(c.read_value().unwrap(), Value::Okay);
        assert_eq!(c.read_value().unwrap(), Value::SimpleString("PONG".into()));
        assert_eq!(c.read_value().unwrap(), Value::Int(-5));
        assert_eq!(c.read_value().unwrap(), Value::BulkString(b"abc".to_vec()));
        assert_eq!(c.read_value().unwrap(), Value::Nil);
        assert_eq!(
            c.read_value().unwrap(),
            Value::Array(vec![Value::BulkString(b"a".to_vec()), Value::Int(1)])
        );
        assert_eq!(c.read_value().unwrap(), Value::Array(vec![]));
        match c.read_value().unwrap() {
            Value::ServerError(e) => assert!(RedisError::from(e).to_string().contains("bad thing")),
            other => panic!("{other:?}"),
        }
        drop(server);
        assert!(c.read_value().is_err(), "the end of the stream");
    }

    #[test]
    fn a_large_bulk_reply_is_read_whole_and_the_next_follows() {
        let body: Vec<u8> = (0..3 * READ_BUFFER + 17).map(|i| (i % 251) as u8).collect();
        let (mut c, mut server) = pair();
        let writer = std::thread::spawn({
            let body = body.clone();
            move || {
                for _ in 0..2 {
                    server
                        .write_all(format!("${}\r\n", body.len()).as_bytes())
                        .unwrap();
                    server.write_all(&body).unwrap();
                    server.write_all(b"\r\n").unwrap();
                }
                server.write_all(b":7\r\n").unwrap();
                server
            }
        });
        assert_eq!(c.read_value().unwrap(), Value::BulkString(body.clone()));
        // Streamed: the head, then the body straight into the caller's buffer.
        assert_eq!(c.bulk_head("GET").unwrap(), Some(body.len() as u64));
        let mut back = vec![0u8; body.len()];
        c.read_exact_into(&mut back).unwrap();
        assert_eq!(back, body);
        c.end_of_bulk().unwrap();
        assert_eq!(c.read_value().unwrap(), Value::Int(7));
        drop(writer.join().unwrap());
    }

    #[test]
    fn a_request_s_pieces_are_written_in_order() {
        let (mut c, mut server) = pair();
        let big = vec![9u8; 300_000];
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; 3 + 300_000 + 2];
            server.read_exact(&mut got).unwrap();
            got
        });
        c.send(&[b"abc", b"", &big, b"\r\n"]).unwrap();
        let got = reader.join().unwrap();
        assert_eq!(&got[..3], b"abc");
        assert!(got[3..300_003].iter().all(|&b| b == 9));
        assert_eq!(&got[300_003..], b"\r\n");
    }

    #[test]
    fn a_server_error_in_place_of_a_bulk_is_an_error() {
        let (mut c, mut server) = pair();
        server.write_all(b"-ERR not a string\r\n:1\r\n").unwrap();
        let e = c.bulk_head("GET").unwrap_err();
        assert!(e.to_string().contains("not a string"), "{e}");
        assert!(c.bulk_head("GET").is_err(), "an integer is no bulk");
    }
}
