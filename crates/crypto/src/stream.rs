//! Streaming authenticated encryption of files (used by backups): AES-256-GCM over fixed-size
//! chunks in the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár, "Online
//! authenticated-encryption and its nonce-reuse misuse-resistance", CRYPTO 2015).
//!
//! - A random 256-bit *file key* ([`new_file_key`]) is made per file. The chunk key is derived
//!   from it with HKDF-SHA-256 and a caller-chosen `info` label, so the same file key can never
//!   be used as an AES key for two purposes.
//! - The plaintext is cut into chunks of [`CHUNK_LEN`] bytes; only the last may be shorter (or
//!   empty: a stream always has exactly one last chunk, even for an empty plaintext). Chunk `i`
//!   is sealed with the nonce `0^7 || i (u32, big-endian) || last (1 byte: 1 for the last chunk,
//!   else 0)` and the caller's AAD (for a file, a digest of its header). Each sealed chunk is its
//!   ciphertext followed by a 16-byte tag.
//! - So an opener that is told the chunk's position and whether it is the last one refuses any
//!   chunk that was edited, moved, duplicated, dropped, or taken from another stream, and a
//!   stream cut short (its last chunk is missing, so the chunk that is read as last carries the
//!   wrong flag). The AAD binds every chunk to the header it was written with.
//! - Nonces never repeat under one key: the counter is unique per chunk, and the key is fresh
//!   per file. **A file key seals exactly one stream**: sealing a second stream under the same
//!   file key and `info` would reuse nonces. At most 2^32 chunks (256 TiB) per stream.
//!
//! Errors say nothing about why a chunk failed to open ([`CryptoError::Open`]).

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::digest;
use aws_lc_rs::hkdf::{Salt, HKDF_SHA256};

use crate::{random_secret, CryptoError, SecretBytes};

/// Plaintext bytes per chunk (64 KiB). Every chunk but the last holds exactly this many.
pub const CHUNK_LEN: usize = 64 * 1024;
/// Bytes a chunk grows by when sealed (the AES-GCM tag).
pub const TAG_LEN: usize = 16;
/// Length of a file key.
pub const FILE_KEY_LEN: usize = 32;
/// The most chunks one stream may have (the counter is 32 bits).
pub const MAX_CHUNKS: u64 = 1 << 32;

/// A fresh random file key.
pub fn new_file_key() -> Result<SecretBytes, CryptoError> {
    random_secret(FILE_KEY_LEN)
}

/// How many chunks a plaintext of `plaintext_len` bytes is cut into (at least one).
pub fn chunk_count(plaintext_len: u64) -> u64 {
    plaintext_len.div_ceil(CHUNK_LEN as u64).max(1)
}

/// The plaintext length of chunk `index` of a stream of `plaintext_len` bytes (`None` past the
/// last chunk).
pub fn chunk_plaintext_len(plaintext_len: u64, index: u64) -> Option<usize> {
    let n = chunk_count(plaintext_len);
    if index >= n {
        return None;
    }
    let before = index.checked_mul(CHUNK_LEN as u64)?;
    let left = plaintext_len.checked_sub(before)?;
    usize::try_from(left.min(CHUNK_LEN as u64)).ok()
}

/// The sealed length of a stream of `plaintext_len` bytes (`None` if it cannot be a stream:
/// more than [`MAX_CHUNKS`] chunks, or an overflow).
pub fn sealed_len(plaintext_len: u64) -> Option<u64> {
    let n = chunk_count(plaintext_len);
    if n > MAX_CHUNKS {
        return None;
    }
    plaintext_len.checked_add(n.checked_mul(TAG_LEN as u64)?)
}

fn chunk_key(file_key: &SecretBytes, info: &[u8]) -> Result<LessSafeKey, CryptoError> {
    if file_key.len() != FILE_KEY_LEN {
        return Err(CryptoError::Invalid);
    }
    let prk = Salt::new(HKDF_SHA256, b"keyward-stream-v1").extract(file_key.expose());
    let info = [info];
    let okm = prk
        .expand(&info, &AES_256_GCM)
        .map_err(|_| CryptoError::Primitive)?;
    Ok(LessSafeKey::new(UnboundKey::from(okm)))
}

fn nonce(index: u32, last: bool) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    if let Some(c) = n.get_mut(7..11) {
        c.copy_from_slice(&index.to_be_bytes());
    }
    if let Some(f) = n.get_mut(11) {
        *f = u8::from(last);
    }
    Nonce::assume_unique_for_key(n)
}

/// Where a sealer or opener is in its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    At(u32),
    /// The last chunk has been handled, or the counter ran out.
    Finished,
}

impl Position {
    /// The index for the next chunk, and the position after it.
    fn take(self, last: bool) -> Result<(u32, Position), CryptoError> {
        match self {
            Position::Finished => Err(CryptoError::Invalid),
            Position::At(i) if last => Ok((i, Position::Finished)),
            Position::At(i) => Ok((i, i.checked_add(1).map_or(Position::Finished, Position::At))),
        }
    }
}

/// Seals a stream chunk by chunk, in order.
pub struct StreamSealer {
    key: LessSafeKey,
    aad: Vec<u8>,
    pos: Position,
}

impl std::fmt::Debug for StreamSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSealer")
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

impl StreamSealer {
    /// A sealer under the chunk key derived from `file_key` (32 bytes) and `info`, binding
    /// `aad` into every chunk.
    pub fn new(file_key: &SecretBytes, info: &[u8], aad: &[u8]) -> Result<Self, CryptoError> {
        Ok(Self {
            key: chunk_key(file_key, info)?,
            aad: aad.to_vec(),
            pos: Position::At(0),
        })
    }

    /// Seals the next chunk: `plaintext || tag`. A chunk that is not the last must hold
    /// exactly [`CHUNK_LEN`] bytes, the last at most that; nothing may follow the last.
    /// Otherwise [`CryptoError::Invalid`].
    pub fn seal_chunk(&mut self, plaintext: &[u8], last: bool) -> Result<Vec<u8>, CryptoError> {
        let fits = if last {
            plaintext.len() <= CHUNK_LEN
        } else {
            plaintext.len() == CHUNK_LEN
        };
        if !fits {
            return Err(CryptoError::Invalid);
        }
        let (index, next) = self.pos.take(last)?;
        if next == Position::Finished && !last {
            // The counter is exhausted: the chunk after this could not be sealed.
            return Err(CryptoError::Invalid);
        }
        let mut buf = Vec::with_capacity(plaintext.len() + TAG_LEN);
        buf.extend_from_slice(plaintext);
        self.key
            .seal_in_place_append_tag(nonce(index, last), Aad::from(&self.aad), &mut buf)
            .map_err(|_| CryptoError::Primitive)?;
        self.pos = next;
        Ok(buf)
    }

    /// Whether the last chunk has been sealed.
    pub fn is_finished(&self) -> bool {
        self.pos == Position::Finished
    }
}

/// Opens a stream chunk by chunk, in order.
pub struct StreamOpener {
    key: LessSafeKey,
    aad: Vec<u8>,
    pos: Position,
}

impl std::fmt::Debug for StreamOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamOpener")
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

impl StreamOpener {
    /// An opener for streams sealed by [`StreamSealer::new`] with the same arguments.
    pub fn new(file_key: &SecretBytes, info: &[u8], aad: &[u8]) -> Result<Self, CryptoError> {
        Ok(Self {
            key: chunk_key(file_key, info)?,
            aad: aad.to_vec(),
            pos: Position::At(0),
        })
    }

    /// Opens the next chunk in place: `buf` holds `ciphertext || tag` and, on success, only
    /// the plaintext. `last` says whether the caller expects this to be the stream's last
    /// chunk. Any failure is [`CryptoError::Open`], and `buf` is then cleared; after a failure
    /// the opener refuses every further chunk.
    pub fn open_chunk(&mut self, buf: &mut Vec<u8>, last: bool) -> Result<(), CryptoError> {
        let res = self.open_inner(buf, last);
        if res.is_err() {
            buf.clear();
            self.pos = Position::Finished;
        }
        res
    }

    fn open_inner(&mut self, buf: &mut Vec<u8>, last: bool) -> Result<(), CryptoError> {
        let plain_len = buf.len().checked_sub(TAG_LEN).ok_or(CryptoError::Open)?;
        let fits = if last {
            plain_len <= CHUNK_LEN
        } else {
            plain_len == CHUNK_LEN
        };
        if !fits {
            return Err(CryptoError::Open);
        }
        let (index, next) = self.pos.take(last).map_err(|_| CryptoError::Open)?;
        if next == Position::Finished && !last {
            return Err(CryptoError::Open);
        }
        let n = self
            .key
            .open_in_place(nonce(index, last), Aad::from(&self.aad), buf)
            .map_err(|_| CryptoError::Open)?
            .len();
        buf.truncate(n);
        self.pos = next;
        Ok(())
    }

    /// Whether the last chunk has been opened.
    pub fn is_finished(&self) -> bool {
        self.pos == Position::Finished
    }
}

/// Seals all of `plaintext` as one stream (for data that is already in memory).
pub fn seal_all(
    file_key: &SecretBytes,
    info: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let len = plaintext.len() as u64;
    let total = sealed_len(len).ok_or(CryptoError::Invalid)?;
    let mut sealer = StreamSealer::new(file_key, info, aad)?;
    let mut out = Vec::with_capacity(usize::try_from(total).map_err(|_| CryptoError::Invalid)?);
    let n = chunk_count(len);
    let mut rest = plaintext;
    for i in 0..n {
        let take = chunk_plaintext_len(len, i).ok_or(CryptoError::Invalid)?;
        let (chunk, tail) = rest.split_at_checked(take).ok_or(CryptoError::Invalid)?;
        out.extend_from_slice(&sealer.seal_chunk(chunk, i + 1 == n)?);
        rest = tail;
    }
    Ok(out)
}

/// Opens a whole stream of `plaintext_len` bytes held in memory. `sealed` must be exactly
/// [`sealed_len`]`(plaintext_len)` bytes: anything shorter, longer or altered is
/// [`CryptoError::Open`]. Allocates no more than `sealed.len()`.
pub fn open_all(
    file_key: &SecretBytes,
    info: &[u8],
    aad: &[u8],
    plaintext_len: u64,
    sealed: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    if sealed_len(plaintext_len) != Some(sealed.len() as u64) {
        return Err(CryptoError::Open);
    }
    let mut opener = StreamOpener::new(file_key, info, aad)?;
    let n = chunk_count(plaintext_len);
    let mut out = Vec::with_capacity(sealed.len());
    let mut rest = sealed;
    let mut buf = Vec::with_capacity(CHUNK_LEN + TAG_LEN);
    for i in 0..n {
        let take = chunk_plaintext_len(plaintext_len, i).ok_or(CryptoError::Open)? + TAG_LEN;
        let (chunk, tail) = rest.split_at_checked(take).ok_or(CryptoError::Open)?;
        buf.clear();
        buf.extend_from_slice(chunk);
        opener.open_chunk(&mut buf, i + 1 == n)?;
        out.extend_from_slice(&buf);
        rest = tail;
    }
    if !rest.is_empty() || !opener.is_finished() {
        return Err(CryptoError::Open);
    }
    Ok(out)
}

/// SHA-256 over data given in pieces (for checksums of files read or written in chunks).
#[derive(Clone)]
pub struct Sha256Stream(digest::Context);

impl std::fmt::Debug for Sha256Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sha256Stream")
    }
}

impl Default for Sha256Stream {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256Stream {
    pub fn new() -> Self {
        Self(digest::Context::new(&digest::SHA256))
    }

    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The digest of everything given so far.
    pub fn finish(self) -> [u8; 32] {
        let d = self.0.finish();
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::{random_bytes, sha256};

    const INFO: &[u8] = b"test stream";

    fn key() -> SecretBytes {
        new_file_key().unwrap()
    }

    /// Sealed chunks of `pt`, one `Vec` per chunk.
    fn chunks(k: &SecretBytes, aad: &[u8], pt: &[u8]) -> Vec<Vec<u8>> {
        let len = pt.len() as u64;
        let n = chunk_count(len);
        let mut s = StreamSealer::new(k, INFO, aad).unwrap();
        let mut rest = pt;
        let mut out = Vec::new();
        for i in 0..n {
            let (c, t) = rest.split_at(chunk_plaintext_len(len, i).unwrap());
            out.push(s.seal_chunk(c, i + 1 == n).unwrap());
            rest = t;
        }
        assert!(s.is_finished());
        out
    }

    #[test]
    fn lengths() {
        let c = CHUNK_LEN as u64;
        assert_eq!(chunk_count(0), 1);
        assert_eq!(chunk_count(1), 1);
        assert_eq!(chunk_count(c), 1);
        assert_eq!(chunk_count(c + 1), 2);
        assert_eq!(chunk_plaintext_len(0, 0), Some(0));
        assert_eq!(chunk_plaintext_len(0, 1), None);
        assert_eq!(chunk_plaintext_len(c + 1, 0), Some(CHUNK_LEN));
        assert_eq!(chunk_plaintext_len(c + 1, 1), Some(1));
        assert_eq!(chunk_plaintext_len(2 * c, 1), Some(CHUNK_LEN));
        assert_eq!(sealed_len(0), Some(16));
        assert_eq!(sealed_len(c + 1), Some(c + 1 + 32));
        assert_eq!(sealed_len(MAX_CHUNKS * c), Some(MAX_CHUNKS * (c + 16)));
        assert_eq!(sealed_len(MAX_CHUNKS * c + 1), None);
        assert_eq!(sealed_len(u64::MAX), None);
        assert_eq!(chunk_plaintext_len(u64::MAX, u64::MAX - 1), None);
    }

    #[test]
    fn round_trips_at_every_boundary() {
        let k = key();
        for len in [
            0,
            1,
            CHUNK_LEN - 1,
            CHUNK_LEN,
            CHUNK_LEN + 1,
            3 * CHUNK_LEN + 17,
        ] {
            let pt = random_bytes(len).unwrap();
            let sealed = seal_all(&k, INFO, b"hdr", &pt).unwrap();
            assert_eq!(sealed.len() as u64, sealed_len(len as u64).unwrap());
            assert_eq!(open_all(&k, INFO, b"hdr", len as u64, &sealed).unwrap(), pt);
            if len > 0 {
                assert_ne!(&sealed[..len.min(64)], &pt[..len.min(64)]);
            }
        }
    }

    #[test]
    fn wrong_key_info_or_aad_fails() {
        let k = key();
        let pt = random_bytes(1000).unwrap();
        let sealed = seal_all(&k, INFO, b"hdr", &pt).unwrap();
        let e = Err(CryptoError::Open);
        assert_eq!(open_all(&key(), INFO, b"hdr", 1000, &sealed), e);
        assert_eq!(open_all(&k, b"other", b"hdr", 1000, &sealed), e);
        assert_eq!(open_all(&k, INFO, b"hdR", 1000, &sealed), e);
        assert_eq!(open_all(&k, INFO, b"hdr", 999, &sealed), e);
        let short = SecretBytes::from_vec(vec![0; 16]);
        assert_eq!(
            StreamSealer::new(&short, INFO, b"").err(),
            Some(CryptoError::Invalid)
        );
    }

    #[test]
    fn every_bit_flip_truncation_and_extension_fails() {
        let k = key();
        let pt = random_bytes(2 * CHUNK_LEN + 5).unwrap();
        let len = pt.len() as u64;
        let sealed = seal_all(&k, INFO, b"h", &pt).unwrap();
        // A flip in every 97th byte (and the first and last) of each chunk.
        let mut positions: Vec<usize> = (0..sealed.len()).step_by(97).collect();
        positions.extend([
            0,
            sealed.len() - 1,
            CHUNK_LEN + TAG_LEN,
            CHUNK_LEN + TAG_LEN - 1,
        ]);
        for i in positions {
            let mut c = sealed.clone();
            c[i] ^= 0x10;
            assert!(open_all(&k, INFO, b"h", len, &c).is_err(), "flip at {i}");
        }
        for cut in [0, 1, TAG_LEN, CHUNK_LEN + TAG_LEN, sealed.len() - 1] {
            assert!(open_all(&k, INFO, b"h", len, &sealed[..cut]).is_err());
        }
        let mut longer = sealed.clone();
        longer.push(0);
        assert!(open_all(&k, INFO, b"h", len, &longer).is_err());
    }

    #[test]
    fn chunks_cannot_be_reordered_dropped_duplicated_or_cut_at_a_boundary() {
        let k = key();
        let pt = random_bytes(3 * CHUNK_LEN + 100).unwrap();
        let c = chunks(&k, b"h", &pt);
        assert_eq!(c.len(), 4);
        let open_seq = |seq: &[&Vec<u8>]| -> Result<Vec<u8>, CryptoError> {
            let mut o = StreamOpener::new(&k, INFO, b"h").unwrap();
            let mut out = Vec::new();
            for (i, ch) in seq.iter().enumerate() {
                let mut b = (*ch).clone();
                o.open_chunk(&mut b, i + 1 == seq.len())?;
                out.extend_from_slice(&b);
            }
            Ok(out)
        };
        assert_eq!(open_seq(&[&c[0], &c[1], &c[2], &c[3]]).unwrap(), pt);
        // swapped
        assert!(open_seq(&[&c[1], &c[0], &c[2], &c[3]]).is_err());
        // dropped in the middle
        assert!(open_seq(&[&c[0], &c[2], &c[3]]).is_err());
        // duplicated
        assert!(open_seq(&[&c[0], &c[0], &c[1], &c[2], &c[3]]).is_err());
        // cut at a chunk boundary: the chunk read as last was sealed as not last
        assert!(open_seq(&[&c[0], &c[1]]).is_err());
        assert!(open_seq(&[&c[0]]).is_err());
        // the last chunk read as not last
        let mut o = StreamOpener::new(&k, INFO, b"h").unwrap();
        for ch in &c[..3] {
            let mut b = ch.clone();
            o.open_chunk(&mut b, false).unwrap();
        }
        let mut b = c[3].clone();
        assert_eq!(o.open_chunk(&mut b, false), Err(CryptoError::Open));
        assert!(b.is_empty());
        // a chunk from another stream (another file key) at the same position
        let other = chunks(&key(), b"h", &random_bytes(3 * CHUNK_LEN + 100).unwrap());
        assert!(open_seq(&[&c[0], &other[1], &c[2], &c[3]]).is_err());
        // a chunk of the same stream bound to another header
        let other = chunks(&k, b"H", &pt);
        assert!(open_seq(&[&c[0], &other[1], &c[2], &c[3]]).is_err());
    }

    #[test]
    fn nothing_after_the_last_chunk_and_no_use_after_a_failure() {
        let k = key();
        let mut s = StreamSealer::new(&k, INFO, b"").unwrap();
        assert_eq!(
            s.seal_chunk(&[0; 10], false).err(),
            Some(CryptoError::Invalid),
            "a short chunk that is not last"
        );
        assert_eq!(
            s.seal_chunk(&vec![0; CHUNK_LEN + 1], true).err(),
            Some(CryptoError::Invalid)
        );
        let last = s.seal_chunk(b"end", true).unwrap();
        assert!(s.is_finished());
        assert_eq!(
            s.seal_chunk(b"more", true).err(),
            Some(CryptoError::Invalid)
        );

        let mut o = StreamOpener::new(&k, INFO, b"").unwrap();
        let mut bad = last.clone();
        bad[0] ^= 1;
        assert!(o.open_chunk(&mut bad, true).is_err());
        let mut good = last.clone();
        assert!(
            o.open_chunk(&mut good, true).is_err(),
            "refused after a failure"
        );
        let mut o = StreamOpener::new(&k, INFO, b"").unwrap();
        let mut good = last.clone();
        o.open_chunk(&mut good, true).unwrap();
        assert_eq!(good, b"end");
        let mut again = last.clone();
        assert!(
            o.open_chunk(&mut again, true).is_err(),
            "nothing after the last"
        );
        let mut tiny = vec![0u8; TAG_LEN - 1];
        let mut o = StreamOpener::new(&k, INFO, b"").unwrap();
        assert!(o.open_chunk(&mut tiny, true).is_err());
    }

    /// Known-answer test: the construction is exactly HKDF-SHA-256 (salt `keyward-stream-v1`,
    /// info) → AES-256-GCM with the documented nonces. Recomputed here with the plain AEAD.
    #[test]
    fn matches_the_documented_construction() {
        let k = SecretBytes::from_vec((0u8..32).collect());
        let pt: Vec<u8> = (0..CHUNK_LEN + 3).map(|i| (i % 251) as u8).collect();
        let sealed = seal_all(&k, INFO, b"aad", &pt).unwrap();
        let prk = Salt::new(HKDF_SHA256, b"keyward-stream-v1").extract(k.expose());
        let mut okm = [0u8; 32];
        prk.expand(&[INFO], HKDF_SHA256)
            .unwrap()
            .fill(&mut okm)
            .unwrap();
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &okm).unwrap());
        let mut first = pt[..CHUNK_LEN].to_vec();
        let mut n0 = [0u8; 12];
        n0[10] = 0;
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(n0),
            Aad::from(b"aad"),
            &mut first,
        )
        .unwrap();
        let mut second = pt[CHUNK_LEN..].to_vec();
        let mut n1 = [0u8; 12];
        n1[10] = 1;
        n1[11] = 1;
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(n1),
            Aad::from(b"aad"),
            &mut second,
        )
        .unwrap();
        assert_eq!(sealed, [first, second].concat());
    }

    #[test]
    fn sha256_stream_matches_one_shot() {
        let data = random_bytes(100_000).unwrap();
        let mut h = Sha256Stream::new();
        for part in data.chunks(777) {
            h.update(part);
        }
        assert_eq!(h.finish(), sha256(&data));
    }

    #[test]
    fn debug_shows_no_key() {
        let s = StreamSealer::new(&key(), INFO, b"").unwrap();
        assert!(!format!("{s:?}").contains("key"));
    }
}
