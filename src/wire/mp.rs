//! The few MessagePack forms a digest is made of, written and read by hand.
//!
//! Digests are most of what gossip sends and receives (every Syn and SynAck carries one, of up
//! to about a hundred entries), and going through serde cost a visitor call, a dynamic type
//! dispatch and a bounds check per integer. The bytes are exactly those rmp-serde writes for
//! the same values (`wire::tests::hand_codec_matches_rmp_serde` pins it), so nodes running
//! either codec read each other. Deltas, rarer and shaped by strings and options, stay with
//! rmp-serde.

/// Appends `v` in the shortest MessagePack form, as rmp-serde does.
pub(super) fn put_uint(out: &mut Vec<u8>, v: u64) {
    match v {
        0..=0x7f => out.push(v as u8),
        0x80..=0xff => out.extend_from_slice(&[0xcc, v as u8]),
        0x100..=0xffff => {
            out.push(0xcd);
            out.extend_from_slice(&(v as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xce);
            out.extend_from_slice(&(v as u32).to_be_bytes());
        }
        _ => {
            out.push(0xcf);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
}

/// Appends an array header for `n` elements (`n` fits a u32: messages are far smaller).
pub(super) fn put_array_len(out: &mut Vec<u8>, n: usize) {
    match n {
        0..=15 => out.push(0x90 | n as u8),
        16..=0xffff => {
            out.push(0xdc);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            out.push(0xdd);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }
}

/// Appends `b` as a bin (`b` shorter than 4 GiB).
pub(super) fn put_bin(out: &mut Vec<u8>, b: &[u8]) {
    match b.len() {
        0..=0xff => out.extend_from_slice(&[0xc4, b.len() as u8]),
        0x100..=0xffff => {
            out.push(0xc5);
            out.extend_from_slice(&(b.len() as u16).to_be_bytes());
        }
        n => {
            out.push(0xc6);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }
    out.extend_from_slice(b);
}

/// Appends a boolean.
pub(super) fn put_bool(out: &mut Vec<u8>, b: bool) {
    out.push(if b { 0xc3 } else { 0xc2 });
}

/// MessagePack's nil: a digest with no cover claim.
pub(super) const NIL: u8 = 0xc0;

/// Reads values off the front of a byte slice. Every method returns `None` on a malformed or
/// truncated value; what was consumed then does not matter, as the message is dropped.
pub(super) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// What has not been read yet.
    pub(super) fn rest(&self) -> &'a [u8] {
        self.rest
    }

    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(b)
    }

    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.rest.split_first_chunk::<N>()?;
        self.rest = rest;
        Some(*head)
    }

    /// An unsigned integer in any MessagePack integer form, as rmp-serde accepts for a `u64`
    /// (signed forms too, when not negative).
    pub(super) fn uint(&mut self) -> Option<u64> {
        let b = self.byte()?;
        match b {
            0x00..=0x7f => Some(u64::from(b)),
            0xcc => self.take::<1>().map(|[v]| u64::from(v)),
            0xcd => self.take().map(|v| u64::from(u16::from_be_bytes(v))),
            0xce => self.take().map(|v| u64::from(u32::from_be_bytes(v))),
            0xcf => self.take().map(u64::from_be_bytes),
            0xd0 => self
                .take()
                .and_then(|v| u64::try_from(i8::from_be_bytes(v)).ok()),
            0xd1 => self
                .take()
                .and_then(|v| u64::try_from(i16::from_be_bytes(v)).ok()),
            0xd2 => self
                .take()
                .and_then(|v| u64::try_from(i32::from_be_bytes(v)).ok()),
            0xd3 => self
                .take()
                .and_then(|v| u64::try_from(i64::from_be_bytes(v)).ok()),
            _ => None,
        }
    }

    /// An array header: its element count.
    pub(super) fn array_len(&mut self) -> Option<usize> {
        let b = self.byte()?;
        match b {
            0x90..=0x9f => Some(usize::from(b & 0x0f)),
            0xdc => self.take().map(|v| usize::from(u16::from_be_bytes(v))),
            0xdd => self
                .take()
                .and_then(|v| usize::try_from(u32::from_be_bytes(v)).ok()),
            _ => None,
        }
    }

    pub(super) fn bool(&mut self) -> Option<bool> {
        match self.byte()? {
            0xc2 => Some(false),
            0xc3 => Some(true),
            _ => None,
        }
    }

    /// Consumes a nil if one is next.
    pub(super) fn nil(&mut self) -> bool {
        if self.rest.first() == Some(&NIL) {
            self.rest = &self.rest[1..];
            true
        } else {
            false
        }
    }

    /// A bin's bytes (borrowed; its length is checked against what is left).
    pub(super) fn bin(&mut self) -> Option<&'a [u8]> {
        let n = match self.byte()? {
            0xc4 => usize::from(self.take::<1>()?[0]),
            0xc5 => usize::from(u16::from_be_bytes(self.take()?)),
            0xc6 => usize::try_from(u32::from_be_bytes(self.take()?)).ok()?,
            _ => return None,
        };
        let (head, rest) = self.rest.split_at_checked(n)?;
        self.rest = rest;
        Some(head)
    }
}
