//! The messages between a pool and its worker processes.
//!
//! Every message starts with the same 19-byte header: the magic bytes `PX`,
//! a kind, a job id and the length of the body that follows. The pool sends
//! jobs and revocations; the worker answers with a result (or a failure)
//! per job, and with "revoked" or "too late" per revocation.
//!
//! The body of a job or a result starts with a table of its *sections*
//! (a count, then a format and a length each): large raw values that follow
//! the frames instead of sitting inside them (see `task::section`). A
//! sender writes them from the values' own memory, in one vectored write
//! with the rest; a receiver reads each straight into a buffer of its
//! element type, which becomes the value.
//!
//! Nothing read from a pipe is trusted to size memory: a body is read in
//! steps that grow only as its bytes actually arrive, so a worker that
//! announces an absurd length fails its own tasks and nothing else.

use std::io::{self, IoSlice, Read};

use crate::codec::{RawBuffer, RawError};

/// Marks the start of every message.
const MAGIC: [u8; 2] = *b"PX";

/// Length of a message header.
pub(crate) const HEADER: usize = 2 + 1 + 8 + 8;

/// The first step of a body read: larger bodies grow by doubling as their
/// bytes arrive. Fresh zeroed memory costs no page until it is written, so
/// a lie up to this size costs address space only. (Fuzzing builds, under
/// a sanitizer that touches what it allocates, take small steps.)
const FIRST_STEP: usize = if cfg!(fuzzing) { 64 << 10 } else { 256 << 20 };

/// What a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    /// Pool to worker: run this job (body: the job's bytes).
    Job = 1,
    /// Pool to worker: drop this job if it has not started (no body).
    Revoke = 2,
    /// Worker to pool: the job's encoded result.
    Done = 3,
    /// Worker to pool: the job failed (body: the message, UTF-8).
    Failed = 4,
    /// Worker to pool: the revoked job was dropped; it will not run.
    Revoked = 5,
    /// Worker to pool: the revoked job had already started or finished.
    TooLate = 6,
    /// Pool to worker: ask this job to stop if it runs or is queued (no
    /// body; the task sees it through `TaskContext::interrupted`).
    Interrupt = 7,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Job,
            2 => Kind::Revoke,
            3 => Kind::Done,
            4 => Kind::Failed,
            5 => Kind::Revoked,
            6 => Kind::TooLate,
            7 => Kind::Interrupt,
            _ => return None,
        })
    }

    fn has_body(self) -> bool {
        matches!(self, Kind::Job | Kind::Done | Kind::Failed)
    }

    /// Whether the body starts with a table of sections.
    fn has_sections(self) -> bool {
        matches!(self, Kind::Job | Kind::Done)
    }
}

/// Bytes of one entry of a section table: the format and the length.
const ENTRY: usize = 1 + 8;

/// A message's body: its bytes, and the sections that followed them.
#[derive(Default)]
pub(crate) struct Body {
    pub(crate) bytes: Vec<u8>,
    pub(crate) sections: Vec<RawBuffer>,
}

/// The start of a message: its header and, for a kind with sections, their
/// table, for a body of `inline` bytes followed by `sections` (format and
/// length each).
///
/// Kept inline (no allocation) up to one section: every answer, and every
/// job with at most one large by-value argument.
pub(crate) fn head(kind: Kind, id: u64, inline: usize, sections: &[(u8, usize)]) -> Head {
    if !kind.has_sections() {
        assert!(sections.is_empty(), "a {kind:?} message has no sections");
    }
    let table = head_len(kind, sections.len()) - HEADER;
    let len = table + inline + sections.iter().map(|s| s.1).sum::<usize>();
    let mut out = Head::new();
    out.extend_from_slice(&Header::new(kind, id, len).to_bytes());
    if kind.has_sections() {
        let count = u16::try_from(sections.len()).expect("at most 65535 sections");
        out.extend_from_slice(&count.to_le_bytes());
        for &(format, len) in sections {
            out.push(format);
            out.extend_from_slice(&(len as u64).to_le_bytes());
        }
    }
    out
}

/// A message's [`head`]: its header and section table.
pub(crate) type Head = smallvec::SmallVec<[u8; HEADER + 2 + ENTRY]>;

/// The length of the [`head`] of a message of `kind` with `sections`
/// sections.
pub(crate) fn head_len(kind: Kind, sections: usize) -> usize {
    if kind.has_sections() {
        HEADER + 2 + ENTRY * sections
    } else {
        HEADER
    }
}

/// A message header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) kind: Kind,
    pub(crate) id: u64,
    pub(crate) len: u64,
}

impl Header {
    pub(crate) fn new(kind: Kind, id: u64, len: usize) -> Header {
        Header {
            kind,
            id,
            len: len as u64,
        }
    }

    pub(crate) fn to_bytes(self) -> [u8; HEADER] {
        let mut out = [0u8; HEADER];
        out[..2].copy_from_slice(&MAGIC);
        out[2] = self.kind as u8;
        out[3..11].copy_from_slice(&self.id.to_le_bytes());
        out[11..].copy_from_slice(&self.len.to_le_bytes());
        out
    }

    /// Checks a header read from a pipe.
    pub(crate) fn parse(bytes: &[u8; HEADER]) -> Result<Header, String> {
        if bytes[..2] != MAGIC {
            return Err(format!(
                "a message does not start with the protocol's magic bytes (got {:02x?})",
                &bytes[..2]
            ));
        }
        let kind =
            Kind::from_u8(bytes[2]).ok_or_else(|| format!("unknown message kind {}", bytes[2]))?;
        let id = u64::from_le_bytes(bytes[3..11].try_into().expect("8 bytes"));
        let len = u64::from_le_bytes(bytes[11..].try_into().expect("8 bytes"));
        if !kind.has_body() && len != 0 {
            return Err(format!(
                "a {kind:?} message announces a body of {len} bytes"
            ));
        }
        Ok(Header { kind, id, len })
    }
}

/// Why a message could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The pipe failed.
    Io(io::Error),
    /// The input ended in the middle of a message (its writer died).
    Truncated(String),
    /// The bytes are not a message of this protocol.
    Malformed(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::Truncated(m) | ReadError::Malformed(m) => f.write_str(m),
        }
    }
}

/// An input of messages; told when a body is being read, so that a pipe
/// reader can tell a silent worker in the middle of a message (a lie about
/// its length) from an idle one.
pub(crate) trait Input: Read {
    /// A body starts (`true`) or the message is whole (`false`).
    fn in_body(&mut self, _reading: bool) {}
}

impl Input for &[u8] {}

impl<R: Read + std::os::fd::AsFd> Input for io::BufReader<crate::runtime::spin::SpinReader<R>> {
    fn in_body(&mut self, reading: bool) {
        self.get_mut().in_body = reading;
    }
}

/// Reads one message into `body` (replacing its contents). `Ok(None)` at a
/// clean end of input, between messages.
pub(crate) fn read_message(
    input: &mut impl Input,
    body: &mut Body,
) -> Result<Option<Header>, ReadError> {
    let mut header = [0u8; HEADER];
    match read_full(input, &mut header) {
        Ok(0) => return Ok(None),
        Ok(n) if n == HEADER => {}
        Ok(n) => {
            return Err(ReadError::Truncated(format!(
                "the input ended {n} bytes into a message header"
            )))
        }
        Err(e) => return Err(ReadError::Io(e)),
    }
    let header = Header::parse(&header).map_err(ReadError::Malformed)?;
    body.sections.clear();
    input.in_body(true);
    let read = if header.kind.has_sections() {
        read_split(input, header.len, body)
    } else {
        read_body(input, header.len, &mut body.bytes)
    };
    input.in_body(false);
    read?;
    Ok(Some(header))
}

/// Reads a body that starts with a table of sections: the table, the
/// bytes, then each section into a buffer of its own.
fn read_split(input: &mut impl Read, len: u64, body: &mut Body) -> Result<(), ReadError> {
    let cut = |what: &str| {
        ReadError::Truncated(format!(
            "the input ended in the {what} of a body announced as {len} bytes"
        ))
    };
    let mut count = [0u8; 2];
    if read_full(input, &mut count).map_err(ReadError::Io)? < count.len() {
        return Err(cut("section table"));
    }
    let count = u16::from_le_bytes(count) as usize;
    let table = (2 + ENTRY * count) as u64;
    if table > len {
        return Err(ReadError::Malformed(format!(
            "a table of {count} sections does not fit in a body of {len} bytes"
        )));
    }
    let mut entries = vec![0u8; ENTRY * count];
    if read_full(input, &mut entries).map_err(ReadError::Io)? < entries.len() {
        return Err(cut("section table"));
    }
    let mut inline = len - table;
    let mut sections = Vec::with_capacity(count);
    for entry in entries.chunks_exact(ENTRY) {
        let section = u64::from_le_bytes(entry[1..].try_into().expect("8 bytes"));
        inline = inline.checked_sub(section).ok_or_else(|| {
            ReadError::Malformed(format!(
                "its sections are longer than its body of {len} bytes"
            ))
        })?;
        sections.push((entry[0], section));
    }
    read_body(input, inline, &mut body.bytes)?;
    for (format, section) in sections {
        match RawBuffer::read(format, section, FIRST_STEP, input) {
            Ok(buffer) => body.sections.push(buffer),
            Err(RawError::Invalid(why)) => return Err(ReadError::Malformed(why)),
            Err(RawError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(cut("sections"))
            }
            Err(RawError::Io(e)) => return Err(ReadError::Io(e)),
        }
    }
    Ok(())
}

/// Reads until `buf` is full or the input ends; returns how much was read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Reads a body of `len` bytes, growing `body` only as bytes arrive.
fn read_body(input: &mut impl Read, len: u64, body: &mut Vec<u8>) -> Result<(), ReadError> {
    let too_short = |got: usize| {
        ReadError::Truncated(format!(
            "the input ended after {got} bytes of a body announced as {len} bytes"
        ))
    };
    let Ok(len) = usize::try_from(len) else {
        return Err(ReadError::Malformed(format!(
            "a body of {len} bytes cannot exist on this host"
        )));
    };
    let first = len.min(FIRST_STEP);
    if first <= body.capacity() || first <= 4096 {
        body.clear();
        body.resize(first, 0);
    } else {
        // Fresh zeroed memory, read into as it is: no pass to clear it.
        *body = crate::codec::zeroed_buffer(first);
    }
    let mut filled = 0;
    loop {
        let got = read_full(input, &mut body[filled..]).map_err(ReadError::Io)?;
        filled += got;
        if filled < body.len() {
            return Err(too_short(filled));
        }
        if filled == len {
            break;
        }
        body.resize(len.min(filled.saturating_mul(2)), 0);
    }
    body.truncate(len);
    Ok(())
}

/// Reads every message in `bytes` as a worker's answers would be read;
/// returns how many were whole (a test and fuzzing entry point).
pub(crate) fn parse_messages(mut bytes: &[u8]) -> Result<usize, String> {
    let mut body = Body::default();
    let mut count = 0;
    loop {
        match read_message(&mut bytes, &mut body) {
            Ok(Some(_)) => count += 1,
            Ok(None) => return Ok(count),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// A message to write, in parts (its [`head`] first).
pub(crate) struct Outgoing<'a> {
    parts: Parts<'a>,
}

/// A message's parts: kept inline up to four (a head, a job's prefix and
/// payload, one section), the common case.
pub(crate) type Parts<'a> = smallvec::SmallVec<[&'a [u8]; 4]>;

/// At most this many slices go to one vectored write (the system's limit).
const MAX_SLICES: usize = 1024;

impl<'a> Outgoing<'a> {
    pub(crate) fn new(parts: Parts<'a>) -> Self {
        Outgoing { parts }
    }

    pub(crate) fn len(&self) -> usize {
        self.parts.iter().map(|p| p.len()).sum()
    }

    /// The bytes from `offset` on, as slices for a vectored write.
    pub(crate) fn slices(&self, offset: usize) -> smallvec::SmallVec<[IoSlice<'_>; 4]> {
        if offset == 0 && self.parts.len() <= MAX_SLICES {
            // The usual case: a whole message.
            return self.parts.iter().map(|p| IoSlice::new(p)).collect();
        }
        let mut out = smallvec::SmallVec::with_capacity(self.parts.len().min(MAX_SLICES));
        let mut skip = offset;
        for part in &self.parts {
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            if out.len() == MAX_SLICES {
                break;
            }
            out.push(IoSlice::new(&part[skip..]));
            skip = 0;
        }
        out
    }
}

/// Writes every part of `message` to `out`.
pub(crate) fn write_all(out: &mut impl io::Write, message: &Outgoing<'_>) -> io::Result<()> {
    let (total, mut written) = (message.len(), 0);
    while written < total {
        match out.write_vectored(&message.slices(written)) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: Kind, id: u64, body: &[u8]) -> Vec<u8> {
        let mut out = head(kind, id, body.len(), &[]).to_vec();
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn round_trips_and_ends_cleanly() {
        let mut wire = message(Kind::Done, 7, b"result");
        wire.extend(message(Kind::Revoked, 8, b""));
        let (mut input, mut body) = (&wire[..], Body::default());
        let h = read_message(&mut input, &mut body).unwrap().unwrap();
        assert_eq!(
            (h.kind, h.id, &body.bytes[..]),
            (Kind::Done, 7, &b"result"[..])
        );
        let h = read_message(&mut input, &mut body).unwrap().unwrap();
        assert_eq!((h.kind, h.id, body.bytes.len()), (Kind::Revoked, 8, 0));
        assert!(read_message(&mut input, &mut body).unwrap().is_none());
    }

    #[test]
    fn a_huge_announced_length_allocates_nothing_it_cannot_fill() {
        let mut wire = Header::new(Kind::Done, 1, 0).to_bytes().to_vec();
        wire[11..].copy_from_slice(&(1u64 << 62).to_le_bytes());
        wire.extend_from_slice(&[0, 0]);
        wire.extend_from_slice(b"only a few bytes");
        let mut body = Body::default();
        let err = read_message(&mut &wire[..], &mut body).unwrap_err();
        assert!(
            matches!(err, ReadError::Truncated(ref m) if m.contains("ended after 16 bytes")),
            "{err}"
        );
        assert!(body.bytes.capacity() <= FIRST_STEP);
    }

    #[test]
    fn garbage_is_refused() {
        let mut body = Body::default();
        for wire in [
            &b"garbage that is long enough for a header"[..],
            &message(Kind::Revoked, 1, b"x")[..],
        ] {
            assert!(matches!(
                read_message(&mut &wire[..], &mut body),
                Err(ReadError::Malformed(_))
            ));
        }
        let cut = &message(Kind::Done, 1, b"body")[..HEADER - 3];
        assert!(matches!(
            read_message(&mut &cut[..], &mut body),
            Err(ReadError::Truncated(_))
        ));
        let mut unknown = message(Kind::Done, 1, b"");
        unknown[2] = 99;
        assert!(read_message(&mut &unknown[..], &mut body).is_err());
    }

    #[test]
    fn sections_arrive_in_buffers_of_their_own() {
        let floats: Vec<f64> = (0..1000).map(|i| i as f64).collect();
        let raw: &[u8] = bytemuck::cast_slice(&floats);
        let f64_format = crate::codec::raw_format_of::<Vec<f64>>().unwrap();
        let head = head(Kind::Done, 9, 5, &[(f64_format, raw.len()), (1, 3)]);
        let mut wire = Vec::new();
        write_all(
            &mut wire,
            &Outgoing::new(smallvec::smallvec![
                &head[..],
                &b"frame"[..],
                raw,
                &b"xyz"[..]
            ]),
        )
        .unwrap();
        let mut body = Body::default();
        let h = read_message(&mut &wire[..], &mut body).unwrap().unwrap();
        assert_eq!(
            (h.kind, h.id, &body.bytes[..]),
            (Kind::Done, 9, &b"frame"[..])
        );
        assert_eq!(body.sections.len(), 2);
        assert_eq!(body.sections[0].bytes(), raw);
        assert_eq!(body.sections[1].bytes(), b"xyz");
        // A table that claims more than the body holds, a cut section, a
        // section that is no whole number of its elements.
        let mut lying = head.clone();
        lying[HEADER + 3..HEADER + 11].copy_from_slice(&u64::MAX.to_le_bytes());
        lying.extend_from_slice(b"frame");
        assert!(matches!(
            read_message(&mut &lying[..], &mut body),
            Err(ReadError::Malformed(_))
        ));
        let cut = &wire[..wire.len() - 10];
        assert!(matches!(
            read_message(&mut &cut[..], &mut body),
            Err(ReadError::Truncated(_))
        ));
        let odd = super::head(Kind::Done, 9, 0, &[(f64_format, 7)]);
        let odd = [&odd[..], b"1234567"].concat();
        assert!(matches!(
            read_message(&mut &odd[..], &mut body),
            Err(ReadError::Malformed(_))
        ));
    }

    #[test]
    fn slices_resume_at_any_offset() {
        let head = head(Kind::Job, 3, 5, &[]);
        let out = Outgoing::new(smallvec::smallvec![&head[..], &b"ab"[..], &b"cde"[..]]);
        let whole: Vec<u8> = out.slices(0).iter().flat_map(|s| s.to_vec()).collect();
        assert_eq!(whole.len(), out.len());
        for offset in 0..=out.len() {
            let rest: Vec<u8> = out.slices(offset).iter().flat_map(|s| s.to_vec()).collect();
            assert_eq!(rest, whole[offset..]);
        }
    }
}
