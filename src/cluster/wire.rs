//! The bytes of a Raft message between controllers: raft-rs's `Message` in an encoding of our
//! own, bounded by the bytes that carry it.
//!
//! Owner: shard 0's quorum driver encodes what raft-rs asks it to send and decodes what peers
//! send; pure functions, nothing awaited. raft-rs ships protobuf-2 types and expects the
//! application to serialise them; decoding peer bytes with that protobuf runtime would put a
//! general-purpose parser (with a history of crashes on hostile input) on the controller
//! listener. This codec reads exactly the fields raft-rs uses, checks every length and count
//! against the bytes remaining before it allocates, and refuses what a peer must never send:
//! the message types raft-rs only uses locally (`MsgHup`, `MsgBeat`, `MsgUnreachable`,
//! `MsgSnapStatus`, `MsgCheckQuorum`), configuration-change entries (the quorum is static) and
//! unknown types.
//!
//! All integers are big-endian. A message is:
//! `type u8, to u64, from u64, term u64, log_term u64, index u64, commit u64, commit_term u64,
//! request_snapshot u64, reject_hint u64, priority i64, reject u8, context bytes,
//! entries (u32 count, then index u64, term u64, data bytes, context bytes each),
//! snapshot (u8 present, then index u64, term u64, u32 voter count and u64 voters, data bytes)`,
//! where `bytes` is a u32 length and that many bytes.

use bytes::Bytes;
use raft::eraftpb::{Entry, EntryType, Message, MessageType, Snapshot};

use crate::limits;

/// A peer message that cannot be accepted. `Display` is one line for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The bytes end before the fields do, or a length is past them.
    #[error("truncated Raft message: {0}")]
    Truncated(String),
    /// Bytes left after the last field.
    #[error("{0} bytes after the Raft message")]
    Trailing(usize),
    /// A message type a peer must not send, or an unknown one.
    #[error("Raft message type {0} is not accepted from a peer")]
    Type(u8),
    /// An entry kind the static quorum never logs.
    #[error("Raft entry type {0} is not accepted (the quorum is static)")]
    EntryType(u8),
    /// More voters than any quorum has.
    #[error("snapshot lists {0} voters, at most {max}", max = limits::QUORUM_VOTERS_MAX)]
    Voters(usize),
}

/// The smallest encoded entry: index, term and two empty byte fields.
const ENTRY_BYTES_MIN: usize = 8 + 8 + 4 + 4;

fn accepted_from_peer(msg_type: MessageType) -> bool {
    !matches!(
        msg_type,
        MessageType::MsgHup
            | MessageType::MsgBeat
            | MessageType::MsgUnreachable
            | MessageType::MsgSnapStatus
            | MessageType::MsgCheckQuorum
    )
}

fn message_type(code: u8) -> Option<MessageType> {
    use MessageType::*;
    Some(match code {
        0 => MsgHup,
        1 => MsgBeat,
        2 => MsgPropose,
        3 => MsgAppend,
        4 => MsgAppendResponse,
        5 => MsgRequestVote,
        6 => MsgRequestVoteResponse,
        7 => MsgSnapshot,
        8 => MsgHeartbeat,
        9 => MsgHeartbeatResponse,
        10 => MsgUnreachable,
        11 => MsgSnapStatus,
        12 => MsgCheckQuorum,
        13 => MsgTransferLeader,
        14 => MsgTimeoutNow,
        15 => MsgReadIndex,
        16 => MsgReadIndexResp,
        17 => MsgRequestPreVote,
        18 => MsgRequestPreVoteResponse,
        _ => return None,
    })
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Appends the encoding of `message` to `out`.
pub fn encode(message: &Message, out: &mut Vec<u8>) {
    out.push(message.msg_type as u8);
    for value in [
        message.to,
        message.from,
        message.term,
        message.log_term,
        message.index,
        message.commit,
        message.commit_term,
        message.request_snapshot,
        message.reject_hint,
    ] {
        out.extend_from_slice(&value.to_be_bytes());
    }
    out.extend_from_slice(&message.priority.to_be_bytes());
    out.push(u8::from(message.reject));
    put_bytes(out, &message.context);
    out.extend_from_slice(&(message.entries.len() as u32).to_be_bytes());
    for entry in message.entries.iter() {
        out.extend_from_slice(&entry.index.to_be_bytes());
        out.extend_from_slice(&entry.term.to_be_bytes());
        put_bytes(out, &entry.data);
        put_bytes(out, &entry.context);
    }
    match message.snapshot.as_ref() {
        None => out.push(0),
        Some(snapshot) => {
            out.push(1);
            let metadata = snapshot.get_metadata();
            out.extend_from_slice(&metadata.index.to_be_bytes());
            out.extend_from_slice(&metadata.term.to_be_bytes());
            let voters = &metadata.get_conf_state().voters;
            out.extend_from_slice(&(voters.len() as u32).to_be_bytes());
            for voter in voters {
                out.extend_from_slice(&voter.to_be_bytes());
            }
            put_bytes(out, &snapshot.data);
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], WireError> {
        if self.bytes.len() < n {
            return Err(WireError::Truncated(format!(
                "{what} needs {n} bytes, {} left",
                self.bytes.len()
            )));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn u8(&mut self, what: &str) -> Result<u8, WireError> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self, what: &str) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(
            self.take(8, what)?.try_into().expect("8 bytes"),
        ))
    }

    fn bytes(&mut self, what: &str) -> Result<Bytes, WireError> {
        let len = self.u32(what)? as usize;
        Ok(Bytes::copy_from_slice(self.take(len, what)?))
    }
}

/// Decodes one message that fills `bytes` exactly.
pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
    let mut r = Reader { bytes };
    let code = r.u8("type")?;
    let msg_type = message_type(code)
        .filter(|t| accepted_from_peer(*t))
        .ok_or(WireError::Type(code))?;
    let mut message = Message {
        msg_type,
        to: r.u64("to")?,
        from: r.u64("from")?,
        term: r.u64("term")?,
        log_term: r.u64("log_term")?,
        index: r.u64("index")?,
        commit: r.u64("commit")?,
        commit_term: r.u64("commit_term")?,
        request_snapshot: r.u64("request_snapshot")?,
        reject_hint: r.u64("reject_hint")?,
        priority: r.u64("priority")? as i64,
        ..Default::default()
    };
    message.reject = match r.u8("reject")? {
        0 => false,
        1 => true,
        other => return Err(WireError::Truncated(format!("reject flag {other}"))),
    };
    message.context = r.bytes("context")?;
    let count = r.u32("entry count")? as usize;
    if count > r.bytes.len() / ENTRY_BYTES_MIN {
        return Err(WireError::Truncated(format!(
            "{count} entries in {} bytes",
            r.bytes.len()
        )));
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        entries.push(Entry {
            entry_type: EntryType::EntryNormal,
            index: r.u64("entry index")?,
            term: r.u64("entry term")?,
            data: r.bytes("entry data")?,
            context: r.bytes("entry context")?,
            ..Default::default()
        });
    }
    message.set_entries(entries.into());
    match r.u8("snapshot flag")? {
        0 => {}
        1 => {
            let mut snapshot = Snapshot::default();
            snapshot.mut_metadata().index = r.u64("snapshot index")?;
            snapshot.mut_metadata().term = r.u64("snapshot term")?;
            let voters = r.u32("voter count")? as usize;
            if voters > limits::QUORUM_VOTERS_MAX {
                return Err(WireError::Voters(voters));
            }
            let mut ids = Vec::with_capacity(voters);
            for _ in 0..voters {
                ids.push(r.u64("voter")?);
            }
            snapshot.mut_metadata().mut_conf_state().voters = ids;
            snapshot.data = r.bytes("snapshot data")?;
            message.set_snapshot(snapshot);
        }
        other => return Err(WireError::Truncated(format!("snapshot flag {other}"))),
    }
    if !r.bytes.is_empty() {
        return Err(WireError::Trailing(r.bytes.len()));
    }
    Ok(message)
}

/// Refuses entries `encode` cannot carry: the quorum logs only normal entries.
pub fn check_entries(message: &Message) -> Result<(), WireError> {
    match message
        .entries
        .iter()
        .find(|e| e.entry_type != EntryType::EntryNormal)
    {
        Some(entry) => Err(WireError::EntryType(entry.entry_type as u8)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Message {
        let mut message = Message {
            msg_type: MessageType::MsgAppend,
            to: 2,
            from: 1,
            term: 7,
            log_term: 6,
            index: 41,
            commit: 40,
            commit_term: 6,
            reject_hint: 3,
            priority: -5,
            reject: true,
            context: Bytes::from("ctx"),
            ..Default::default()
        };
        message.set_entries(
            vec![
                Entry {
                    index: 42,
                    term: 7,
                    data: Bytes::from("topic created"),
                    ..Default::default()
                },
                Entry {
                    index: 43,
                    term: 7,
                    ..Default::default()
                },
            ]
            .into(),
        );
        let mut snapshot = Snapshot {
            data: Bytes::from("image"),
            ..Default::default()
        };
        snapshot.mut_metadata().index = 30;
        snapshot.mut_metadata().term = 5;
        snapshot.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        message.set_snapshot(snapshot);
        message
    }

    #[test]
    fn messages_round_trip() {
        let message = sample();
        let mut bytes = Vec::new();
        encode(&message, &mut bytes);
        assert_eq!(decode(&bytes).unwrap(), message);
        let plain = Message {
            msg_type: MessageType::MsgRequestPreVote,
            term: 3,
            ..Default::default()
        };
        let mut bytes = Vec::new();
        encode(&plain, &mut bytes);
        assert_eq!(decode(&bytes).unwrap(), plain);
    }

    #[test]
    fn every_truncation_and_extension_is_an_error() {
        let mut bytes = Vec::new();
        encode(&sample(), &mut bytes);
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "cut at {len}");
        }
        bytes.push(0);
        assert_eq!(decode(&bytes), Err(WireError::Trailing(1)));
    }

    #[test]
    fn local_types_and_huge_counts_are_refused() {
        for local in [0u8, 1, 10, 11, 12, 19, 255] {
            let mut bytes = Vec::new();
            encode(&Message::default(), &mut bytes);
            bytes[0] = local;
            assert_eq!(decode(&bytes), Err(WireError::Type(local)));
        }
        let append = Message {
            msg_type: MessageType::MsgAppend,
            ..Default::default()
        };
        let mut bytes = Vec::new();
        encode(&append, &mut bytes);
        // The entry count sits after type, 10 u64 fields, reject and the empty context.
        let count_at = 1 + 80 + 1 + 4;
        bytes[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(decode(&bytes), Err(WireError::Truncated(_))));
        let mut change = sample();
        change.mut_entries()[0].entry_type = EntryType::EntryConfChange;
        assert_eq!(check_entries(&change), Err(WireError::EntryType(1)));
        assert_eq!(check_entries(&sample()), Ok(()));
    }
}
