//! The peer protocol: what a reader and the process holding an object say
//! to each other over one TCP connection.
//!
//! A connection opens with [`MAGIC`] from the reader; then, any number of
//! times, one request and its response:
//!
//! ```text
//! request:  op (1 byte: 1 get, 2 exists, 3 delete) | key (16 bytes) | instance (u64 LE)
//! response: status (1 byte: 0 found/done, 1 missing, 2 another instance)
//!           and, for a found get only: length (u64 LE) | the object's bytes
//! ```
//!
//! `instance` names the process that stored the object (a random number
//! it drew when it started serving): a process that now serves the same
//! address but is not that one answers status 2, so a reader never takes
//! another process's object, nor its silence, for the one it asked for.
//!
//! Requests have a fixed size, so nothing a client sends makes the server
//! allocate. A response's length is checked against the reader's limit
//! before anything is allocated, the buffer is reserved without aborting
//! on failure, and a frame cut short is an error that says how much came.

use std::io::{self, Read, Write};

use crate::key::Key;

/// The first bytes of every connection, from the reader.
pub(super) const MAGIC: [u8; 8] = *b"PSPEER\x00\x01";

/// The size of a request on the wire.
pub(super) const REQUEST_LEN: usize = 1 + 16 + 8;

/// What a reader asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    Get = 1,
    Exists = 2,
    Delete = 3,
}

/// One request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Request {
    pub(super) op: Op,
    pub(super) key: Key,
    pub(super) instance: u64,
}

/// What a response says.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Response {
    /// A get's object, or a yes to exists, or a delete done.
    Found(Option<Vec<u8>>),
    /// No such object in the process that answered.
    Missing,
    /// The process that answered is not the one that stored the object.
    OtherInstance,
}

const FOUND: u8 = 0;
const MISSING: u8 = 1;
const OTHER_INSTANCE: u8 = 2;

/// What went wrong reading a frame.
#[derive(Debug)]
pub(super) enum WireError {
    /// The connection failed (closed, reset, timed out) before the frame
    /// began, or the socket reported an error.
    Io(io::Error),
    /// The connection ended inside a frame.
    Truncated { expected: u64, got: u64 },
    /// The frame announces more bytes than the reader accepts.
    TooLarge { len: u64, max: u64 },
    /// Memory for the announced length could not be reserved.
    NoMemory { len: u64 },
    /// A byte that the protocol does not allow where it was.
    Malformed(String),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Io(e) => write!(f, "{e}"),
            WireError::Truncated { expected, got } => write!(
                f,
                "the connection ended after {got} of {expected} bytes of the frame"
            ),
            WireError::TooLarge { len, max } => write!(
                f,
                "the peer announced an object of {len} bytes, more than this reader's limit of \
                 {max} bytes"
            ),
            WireError::NoMemory { len } => {
                write!(f, "could not reserve {len} bytes for the object")
            }
            WireError::Malformed(what) => write!(f, "malformed frame: {what}"),
        }
    }
}

impl From<io::Error> for WireError {
    fn from(e: io::Error) -> Self {
        WireError::Io(e)
    }
}

/// Writes one request.
pub(super) fn write_request(w: &mut impl Write, request: &Request) -> io::Result<()> {
    w.write_all(&encode_request(request))
}

fn encode_request(request: &Request) -> [u8; REQUEST_LEN] {
    let mut buf = [0u8; REQUEST_LEN];
    buf[0] = request.op as u8;
    buf[1..17].copy_from_slice(request.key.as_uuid().as_bytes());
    buf[17..].copy_from_slice(&request.instance.to_le_bytes());
    buf
}

/// Reads one request; `Ok(None)` when the connection ends between
/// requests (the reader closed it).
pub(super) fn read_request(r: &mut impl Read) -> Result<Option<Request>, WireError> {
    let mut buf = [0u8; REQUEST_LEN];
    let got = read_full(r, &mut buf)?;
    if got == 0 {
        return Ok(None);
    }
    if got < REQUEST_LEN {
        return Err(WireError::Truncated {
            expected: REQUEST_LEN as u64,
            got: got as u64,
        });
    }
    let op = match buf[0] {
        1 => Op::Get,
        2 => Op::Exists,
        3 => Op::Delete,
        other => return Err(WireError::Malformed(format!("unknown operation {other}"))),
    };
    let key = Key::from_bytes(buf[1..17].try_into().expect("16 bytes"));
    let instance = u64::from_le_bytes(buf[17..].try_into().expect("8 bytes"));
    Ok(Some(Request { op, key, instance }))
}

/// Writes a found object: the status, the length and the bytes.
pub(super) fn write_object(w: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    let mut head = [0u8; 9];
    head[0] = FOUND;
    head[1..].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
    w.write_all(&head)?;
    w.write_all(bytes)
}

/// Writes a response without a body.
pub(super) fn write_status(w: &mut impl Write, response: &Response) -> io::Result<()> {
    let status = match response {
        Response::Found(_) => FOUND,
        Response::Missing => MISSING,
        Response::OtherInstance => OTHER_INSTANCE,
    };
    w.write_all(&[status])
}

/// The head of a response: its status and, for a found get, the length
/// of the object that follows.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Head {
    /// A get's object of this many bytes follows.
    Object(u64),
    /// A yes to exists, or a delete done.
    Done,
    /// No such object.
    Missing,
    /// Another process than the one that stored the object.
    OtherInstance,
}

/// Reads the head of the response to a request of `op`; a get's object may
/// be at most `max` bytes long.
pub(super) fn read_head(r: &mut impl Read, op: Op, max: u64) -> Result<Head, WireError> {
    let mut status = [0u8; 1];
    if read_full(r, &mut status)? == 0 {
        return Err(WireError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the connection closed before the response",
        )));
    }
    match status[0] {
        FOUND if op == Op::Get => {}
        FOUND => return Ok(Head::Done),
        MISSING => return Ok(Head::Missing),
        OTHER_INSTANCE => return Ok(Head::OtherInstance),
        other => return Err(WireError::Malformed(format!("unknown status {other}"))),
    }
    let mut len = [0u8; 8];
    let got = read_full(r, &mut len)?;
    if got < len.len() {
        return Err(WireError::Truncated {
            expected: 9,
            got: 1 + got as u64,
        });
    }
    let len = u64::from_le_bytes(len);
    if len > max {
        return Err(WireError::TooLarge { len, max });
    }
    Ok(Head::Object(len))
}

/// An empty buffer with room for exactly `len` bytes, or why not.
pub(super) fn reserve(len: u64) -> Result<Vec<u8>, WireError> {
    let size = usize::try_from(len).map_err(|_| WireError::NoMemory { len })?;
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(size)
        .map_err(|_| WireError::NoMemory { len })?;
    Ok(bytes)
}

/// Reads the response to a request of `op`; a get's object may be at most
/// `max` bytes long.
pub(super) fn read_response(r: &mut impl Read, op: Op, max: u64) -> Result<Response, WireError> {
    let len = match read_head(r, op, max)? {
        Head::Object(len) => len,
        Head::Done => return Ok(Response::Found(None)),
        Head::Missing => return Ok(Response::Missing),
        Head::OtherInstance => return Ok(Response::OtherInstance),
    };
    let mut bytes = reserve(len)?;
    // Reads into the reserved memory, without zeroing it first; `take`
    // stops at the frame's end, so no read waits past it.
    r.take(len).read_to_end(&mut bytes)?;
    if bytes.len() as u64 != len {
        return Err(WireError::Truncated {
            expected: len,
            got: bytes.len() as u64,
        });
    }
    Ok(Response::Found(Some(bytes)))
}

/// Fills `buf` unless the stream ends first; returns how many bytes came.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(op: Op) -> Request {
        Request {
            op,
            key: Key::new(),
            instance: 0x0102_0304_0506_0708,
        }
    }

    #[test]
    fn requests_round_trip() {
        for op in [Op::Get, Op::Exists, Op::Delete] {
            let sent = request(op);
            let mut buf = Vec::new();
            write_request(&mut buf, &sent).unwrap();
            assert_eq!(buf.len(), REQUEST_LEN);
            let got = read_request(&mut &buf[..]).unwrap();
            assert_eq!(got, Some(sent));
        }
        assert_eq!(
            read_request(&mut &[][..]).unwrap(),
            None,
            "end between requests"
        );
    }

    #[test]
    fn a_truncated_or_unknown_request_is_refused() {
        let mut buf = Vec::new();
        write_request(&mut buf, &request(Op::Get)).unwrap();
        let cut = read_request(&mut &buf[..10]).unwrap_err();
        assert!(
            matches!(
                cut,
                WireError::Truncated {
                    expected: 25,
                    got: 10
                }
            ),
            "{cut:?}"
        );
        buf[0] = 9;
        let unknown = read_request(&mut &buf[..]).unwrap_err();
        assert!(
            unknown.to_string().contains("unknown operation 9"),
            "{unknown}"
        );
    }

    #[test]
    fn objects_and_statuses_round_trip() {
        let mut buf = Vec::new();
        write_object(&mut buf, b"hello").unwrap();
        assert_eq!(
            read_response(&mut &buf[..], Op::Get, 5).unwrap(),
            Response::Found(Some(b"hello".to_vec()))
        );
        let mut empty = Vec::new();
        write_object(&mut empty, b"").unwrap();
        assert_eq!(
            read_response(&mut &empty[..], Op::Get, 0).unwrap(),
            Response::Found(Some(Vec::new()))
        );
        for (response, op) in [
            (Response::Missing, Op::Get),
            (Response::OtherInstance, Op::Get),
            (Response::Found(None), Op::Exists),
            (Response::Missing, Op::Exists),
            (Response::Found(None), Op::Delete),
        ] {
            let mut buf = Vec::new();
            write_status(&mut buf, &response).unwrap();
            assert_eq!(read_response(&mut &buf[..], op, 0).unwrap(), response);
        }
    }

    #[test]
    fn a_length_past_the_limit_is_refused_before_allocating() {
        // u64::MAX bytes announced, none sent: refused by the limit, not
        // by an allocation failure or a wait.
        let mut buf = vec![FOUND];
        buf.extend_from_slice(&u64::MAX.to_le_bytes());
        let err = read_response(&mut &buf[..], Op::Get, 1 << 30).unwrap_err();
        assert!(
            matches!(err, WireError::TooLarge { len: u64::MAX, max } if max == 1 << 30),
            "{err:?}"
        );
        // One byte over the limit.
        let mut buf = Vec::new();
        write_object(&mut buf, b"abcdef").unwrap();
        let err = read_response(&mut &buf[..], Op::Get, 5).unwrap_err();
        assert!(
            matches!(err, WireError::TooLarge { len: 6, max: 5 }),
            "{err:?}"
        );
    }

    #[test]
    fn an_unreservable_length_is_an_error_not_an_abort() {
        let mut buf = vec![FOUND];
        buf.extend_from_slice(&(u64::MAX / 2).to_le_bytes());
        let err = read_response(&mut &buf[..], Op::Get, u64::MAX).unwrap_err();
        assert!(
            matches!(err, WireError::NoMemory { .. } | WireError::TooLarge { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn truncated_responses_say_how_much_came() {
        let mut buf = Vec::new();
        write_object(&mut buf, &[7u8; 100]).unwrap();
        // Cut inside the body.
        let err = read_response(&mut &buf[..50], Op::Get, 1000).unwrap_err();
        assert!(
            matches!(
                err,
                WireError::Truncated {
                    expected: 100,
                    got: 41
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("41 of 100"), "{err}");
        // Cut inside the length.
        let err = read_response(&mut &buf[..4], Op::Get, 1000).unwrap_err();
        assert!(
            matches!(
                err,
                WireError::Truncated {
                    expected: 9,
                    got: 4
                }
            ),
            "{err:?}"
        );
        // Nothing at all.
        let err = read_response(&mut &[][..], Op::Get, 1000).unwrap_err();
        assert!(matches!(err, WireError::Io(_)), "{err:?}");
        // A status that does not exist.
        let err = read_response(&mut &[9u8][..], Op::Get, 1000).unwrap_err();
        assert!(err.to_string().contains("unknown status 9"), "{err}");
    }

    #[test]
    fn a_response_leaves_the_next_one_on_the_stream() {
        let mut buf = Vec::new();
        write_object(&mut buf, b"first").unwrap();
        write_status(&mut buf, &Response::Missing).unwrap();
        let mut reader = &buf[..];
        assert_eq!(
            read_response(&mut reader, Op::Get, 100).unwrap(),
            Response::Found(Some(b"first".to_vec()))
        );
        assert_eq!(
            read_response(&mut reader, Op::Get, 100).unwrap(),
            Response::Missing
        );
    }
}
