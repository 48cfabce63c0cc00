//! The messages between a worker and its supervisor, over the Unix stream
//! socket that is the supervisor's standard input. Each message is a frame:
//! its length (u32, little-endian), then its kind (one byte) and fields.
//! Integers are little-endian; a string is its length (u32) and its bytes.
//!
//! Worker to supervisor:
//! - `Start { id, command, env }`, with three descriptors sent alongside
//!   (`SCM_RIGHTS`): the command's standard input, its standard error,
//!   then its report descriptor (its descriptor 3, see `crate::exec`).
//!   The command runs as `sh -c COMMAND` in a new process group.
//! - `Signal { id, signal }`: to the job's process group, if it runs.
//!
//! Supervisor to worker, one event per job:
//! - `Failed { id, message }` when the command could not start;
//! - `Exited { id, code }` once the command ended and its group was
//!   killed: the code a shell reports (128 + N for signal N).
//!
//! A start is not acknowledged: the worker does not wait for one (one
//! message and one wake-up fewer per job), and the requests of one job
//! are served in the order they were sent.
//!
//! Descriptors travel in order with the bytes they were sent with, so the
//! reader queues them as they arrive and each Start takes the next three.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};

/// A job's number, chosen by the worker, unique within one supervisor.
pub type JobId = u64;

/// The largest frame either side accepts: a command and its environment
/// (the job's headers, at most 64 of 4 KiB each) fit many times over.
pub const MAX_FRAME: usize = 4 << 20;

/// What the worker asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Runs `sh -c command` with `env` added to the supervisor's own.
    Start {
        id: JobId,
        command: OsString,
        env: Vec<(OsString, OsString)>,
    },
    /// Sends `signal` to the job's process group.
    Signal { id: JobId, signal: i32 },
}

/// What the supervisor answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Failed { id: JobId, message: String },
    Exited { id: JobId, code: i32 },
}

/// Appends `request` to `out` as one frame.
pub fn encode_request(request: &Request, out: &mut Vec<u8>) {
    frame(out, |body| match request {
        Request::Start { id, command, env } => {
            body.push(1);
            body.extend_from_slice(&id.to_le_bytes());
            put_bytes(body, command.as_bytes());
            put_u32(body, env.len());
            for (name, value) in env {
                put_bytes(body, name.as_bytes());
                put_bytes(body, value.as_bytes());
            }
        }
        Request::Signal { id, signal } => {
            body.push(2);
            body.extend_from_slice(&id.to_le_bytes());
            body.extend_from_slice(&signal.to_le_bytes());
        }
    });
}

/// Appends `event` to `out` as one frame.
pub fn encode_event(event: &Event, out: &mut Vec<u8>) {
    frame(out, |body| match event {
        Event::Failed { id, message } => {
            body.push(2);
            body.extend_from_slice(&id.to_le_bytes());
            put_bytes(body, message.as_bytes());
        }
        Event::Exited { id, code } => {
            body.push(3);
            body.extend_from_slice(&id.to_le_bytes());
            body.extend_from_slice(&code.to_le_bytes());
        }
    });
}

/// Takes the first whole request off `buffer`, if one is there.
///
/// # Errors
/// A frame that is too large or does not parse: the stream is corrupt.
pub fn decode_request(buffer: &mut Vec<u8>) -> Result<Option<Request>, String> {
    take_frame(buffer, |r| {
        Ok(match r.u8()? {
            1 => {
                let id = r.u64()?;
                let command = OsString::from_vec(r.bytes()?);
                let count = r.u32()?;
                let mut env = Vec::new();
                for _ in 0..count {
                    env.push((
                        OsString::from_vec(r.bytes()?),
                        OsString::from_vec(r.bytes()?),
                    ));
                }
                Request::Start { id, command, env }
            }
            2 => Request::Signal {
                id: r.u64()?,
                signal: r.i32()?,
            },
            kind => return Err(format!("unknown request kind {kind}")),
        })
    })
}

/// Takes the first whole event off `buffer`, if one is there.
///
/// # Errors
/// A frame that is too large or does not parse: the stream is corrupt.
pub fn decode_event(buffer: &mut Vec<u8>) -> Result<Option<Event>, String> {
    take_frame(buffer, |r| {
        Ok(match r.u8()? {
            2 => Event::Failed {
                id: r.u64()?,
                message: String::from_utf8_lossy(&r.bytes()?).into_owned(),
            },
            3 => Event::Exited {
                id: r.u64()?,
                code: r.i32()?,
            },
            kind => return Err(format!("unknown event kind {kind}")),
        })
    })
}

fn frame(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    body(out);
    let len = u32::try_from(out.len() - start - 4).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, bytes.len());
    out.extend_from_slice(bytes);
}

fn take_frame<T>(
    buffer: &mut Vec<u8>,
    parse: impl FnOnce(&mut Reader<'_>) -> Result<T, String>,
) -> Result<Option<T>, String> {
    let Some(len) = buffer.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if len > MAX_FRAME {
        return Err(format!("a frame of {len} bytes is over {MAX_FRAME}"));
    }
    let Some(body) = buffer.get(4..4 + len) else {
        return Ok(None);
    };
    let mut reader = Reader { rest: body };
    let parsed = parse(&mut reader)?;
    if !reader.rest.is_empty() {
        return Err("a frame has bytes past its fields".to_owned());
    }
    buffer.drain(..4 + len);
    Ok(Some(parsed))
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let (head, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or("a frame ends inside a field")?;
        self.rest = rest;
        Ok(*head)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take()?))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take()?))
    }

    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_le_bytes(self.take()?))
    }

    fn bytes(&mut self) -> Result<Vec<u8>, String> {
        let len = self.u32()? as usize;
        if len > self.rest.len() {
            return Err("a frame ends inside a string".to_owned());
        }
        let (bytes, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(bytes.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_events_go_through_frames_whole_and_in_order() {
        let start = Request::Start {
            id: 7,
            command: "echo hi".into(),
            env: vec![("SLUICE_JOB_ID".into(), "x".into())],
        };
        let signal = Request::Signal { id: 7, signal: 15 };
        let mut wire = Vec::new();
        encode_request(&start, &mut wire);
        encode_request(&signal, &mut wire);
        // Half a frame is not a request yet.
        let mut partial = wire[..wire.len() - 3].to_vec();
        assert_eq!(decode_request(&mut partial).unwrap(), Some(start.clone()));
        assert_eq!(decode_request(&mut partial).unwrap(), None);
        assert_eq!(decode_request(&mut wire).unwrap(), Some(start));
        assert_eq!(decode_request(&mut wire).unwrap(), Some(signal));
        assert!(wire.is_empty());

        let events = [
            Event::Failed {
                id: 2,
                message: "no sh".into(),
            },
            Event::Exited { id: 1, code: 137 },
        ];
        let mut wire = Vec::new();
        for event in &events {
            encode_event(event, &mut wire);
        }
        for event in events {
            assert_eq!(decode_event(&mut wire).unwrap(), Some(event));
        }
    }

    #[test]
    fn a_corrupt_frame_is_an_error() {
        let mut huge = (u32::MAX).to_le_bytes().to_vec();
        assert!(decode_request(&mut huge).is_err());
        let mut unknown = vec![1, 0, 0, 0, 9];
        assert!(decode_event(&mut unknown).is_err());
        let mut short = vec![2, 0, 0, 0, 2, 1];
        assert!(decode_request(&mut short).is_err());
    }
}
