//! SHA-256 of an archive's stored bytes, computed while they stream out and resumable: its
//! state rides in the export's checkpoint, so an attempt that continues an upload continues
//! the digest too (the `sha2` hasher cannot be saved, its compression function can).

use serde::{Deserialize, Serialize};
use sha2::digest::generic_array::GenericArray;

const BLOCK: usize = 64;
const INITIAL: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// A SHA-256 in progress (FIPS 180-4), serializable between attempts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumableSha256 {
    state: [u32; 8],
    /// Bytes not yet making a whole block.
    pending: Vec<u8>,
    /// Bytes hashed in all.
    length: u64,
}

impl Default for ResumableSha256 {
    fn default() -> Self {
        Self {
            state: INITIAL,
            pending: Vec::with_capacity(BLOCK),
            length: 0,
        }
    }
}

impl ResumableSha256 {
    /// Hashes `data`.
    pub fn update(&mut self, mut data: &[u8]) {
        self.length += data.len() as u64;
        if !self.pending.is_empty() {
            let take = (BLOCK - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() < BLOCK {
                return;
            }
            let block = *GenericArray::from_slice(&self.pending);
            sha2::compress256(&mut self.state, &[block]);
            self.pending.clear();
        }
        let whole = data.len() / BLOCK * BLOCK;
        let blocks: Vec<GenericArray<u8, _>> = data[..whole]
            .chunks_exact(BLOCK)
            .map(|b| *GenericArray::from_slice(b))
            .collect();
        sha2::compress256(&mut self.state, &blocks);
        self.pending.extend_from_slice(&data[whole..]);
    }

    /// Bytes hashed so far.
    pub fn length(&self) -> u64 {
        self.length
    }

    /// The digest, lowercase hex, of everything hashed.
    pub fn finish_hex(&self) -> String {
        let mut state = self.state;
        let mut tail = self.pending.clone();
        tail.push(0x80);
        while tail.len() % BLOCK != BLOCK - 8 {
            tail.push(0);
        }
        tail.extend_from_slice(&(self.length * 8).to_be_bytes());
        let blocks: Vec<GenericArray<u8, _>> = tail
            .chunks_exact(BLOCK)
            .map(|b| *GenericArray::from_slice(b))
            .collect();
        sha2::compress256(&mut state, &blocks);
        state.iter().map(|w| format!("{w:08x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn known_answers() {
        assert_eq!(
            ResumableSha256::default().finish_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut h = ResumableSha256::default();
        h.update(b"abc");
        assert_eq!(
            h.finish_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    proptest! {
        /// Any split into pieces, saved and restored between them, gives sha2's digest.
        #[test]
        fn equals_sha2_across_pieces_and_restores(
            data in proptest::collection::vec(any::<u8>(), 0..700),
            cuts in proptest::collection::vec(0usize..700, 0..6),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort();
            let mut h = ResumableSha256::default();
            let mut from = 0;
            for cut in cuts.into_iter().chain([data.len()]) {
                h.update(&data[from..cut]);
                from = cut;
                h = serde_json::from_str(&serde_json::to_string(&h).unwrap()).unwrap();
            }
            prop_assert_eq!(h.length(), data.len() as u64);
            prop_assert_eq!(h.finish_hex(), hex::encode(Sha256::digest(&data)));
        }
    }
}
