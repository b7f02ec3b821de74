//! Arweave's chunk tree over a transaction's data: the chunk boundaries, the `data_root` a
//! transaction signs, and each chunk's proof (`data_path`), as the Arweave protocol defines them
//! (`arweave-js` `lib/merkle`). Everything here works from chunk hashes, so the data itself can
//! stay on disk.

use sha2::{Digest, Sha256};

/// The largest chunk.
pub const MAX_CHUNK: u64 = 256 * 1024;
/// The smallest last chunk: a remainder below it is balanced with the chunk before.
const MIN_CHUNK: u64 = 32 * 1024;

/// One chunk: its byte range in the data and the SHA-256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Its first byte's offset.
    pub start: u64,
    /// The offset past its last byte.
    pub end: u64,
    /// The SHA-256 of its bytes.
    pub data_hash: [u8; 32],
}

/// The byte ranges Arweave cuts `size` bytes into: chunks of 256 KiB, except that a remainder
/// under 32 KiB is shared with the chunk before it, and data ending on a chunk boundary (or
/// empty) ends with an empty chunk, which the root includes and nobody uploads.
pub fn chunk_ranges(size: u64) -> Vec<(u64, u64)> {
    let mut ranges = Vec::with_capacity((size / MAX_CHUNK + 1) as usize);
    let (mut cursor, mut rest) = (0, size);
    while rest >= MAX_CHUNK {
        let next = rest - MAX_CHUNK;
        let chunk = if next > 0 && next < MIN_CHUNK { rest.div_ceil(2) } else { MAX_CHUNK };
        ranges.push((cursor, cursor + chunk));
        cursor += chunk;
        rest -= chunk;
    }
    ranges.push((cursor, cursor + rest));
    ranges
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// An offset as the tree notes it: 32 bytes, big-endian.
fn note(value: u64) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[24..].copy_from_slice(&value.to_be_bytes());
    out
}

enum Node {
    Leaf { id: [u8; 32], data_hash: [u8; 32], end: u64 },
    Branch { id: [u8; 32], left: Box<Node>, right: Box<Node>, split: u64, end: u64 },
}

impl Node {
    fn id(&self) -> [u8; 32] {
        match self {
            Node::Leaf { id, .. } | Node::Branch { id, .. } => *id,
        }
    }

    fn end(&self) -> u64 {
        match self {
            Node::Leaf { end, .. } | Node::Branch { end, .. } => *end,
        }
    }
}

/// The tree over a transaction's chunks.
pub struct Tree {
    root: Node,
}

/// A chunk's proof: the path from the root to its leaf, and the offset it is posted with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// The chunk's last byte in the data.
    pub offset: u64,
    /// The branch nodes (both children's ids and the split) down to the leaf, then the leaf's
    /// data hash and end.
    pub data_path: Vec<u8>,
}

impl Tree {
    /// The tree over `chunks`, which must cover the data in order (at least one chunk).
    pub fn new(chunks: &[Chunk]) -> Self {
        let mut layer: Vec<Node> = chunks
            .iter()
            .map(|c| Node::Leaf {
                id: sha256(&[&sha256(&[&c.data_hash]), &sha256(&[&note(c.end)])]),
                data_hash: c.data_hash,
                end: c.end,
            })
            .collect();
        assert!(!layer.is_empty(), "a tree needs a chunk");
        while layer.len() > 1 {
            let mut next = Vec::with_capacity(layer.len().div_ceil(2));
            let mut nodes = layer.into_iter();
            while let Some(left) = nodes.next() {
                // An odd node out goes up as it is.
                let Some(right) = nodes.next() else {
                    next.push(left);
                    break;
                };
                let split = left.end();
                next.push(Node::Branch {
                    id: sha256(&[
                        &sha256(&[&left.id()]),
                        &sha256(&[&right.id()]),
                        &sha256(&[&note(split)]),
                    ]),
                    end: right.end(),
                    split,
                    left: Box::new(left),
                    right: Box::new(right),
                });
            }
            layer = next;
        }
        Self { root: layer.pop().expect("one node left") }
    }

    /// The `data_root` a transaction signs.
    pub fn root(&self) -> [u8; 32] {
        self.root.id()
    }

    /// Every chunk's proof, in order.
    pub fn proofs(&self) -> Vec<Proof> {
        let mut proofs = Vec::new();
        let mut stack = vec![(&self.root, Vec::new())];
        while let Some((node, path)) = stack.pop() {
            match node {
                Node::Leaf { data_hash, end, .. } => {
                    let mut data_path = path;
                    data_path.extend_from_slice(data_hash);
                    data_path.extend_from_slice(&note(*end));
                    proofs.push(Proof { offset: end.saturating_sub(1), data_path });
                }
                Node::Branch { left, right, split, .. } => {
                    let mut path = path;
                    path.extend_from_slice(&left.id());
                    path.extend_from_slice(&right.id());
                    path.extend_from_slice(&note(*split));
                    // Right first on the stack, so the left leaf comes out first.
                    stack.push((right, path.clone()));
                    stack.push((left, path));
                }
            }
        }
        proofs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_follow_the_protocol_boundaries() {
        assert_eq!(chunk_ranges(0), vec![(0, 0)]);
        assert_eq!(chunk_ranges(10), vec![(0, 10)]);
        assert_eq!(chunk_ranges(MAX_CHUNK), vec![(0, MAX_CHUNK), (MAX_CHUNK, MAX_CHUNK)]);
        // 256 KiB + 1 byte: the remainder is under 32 KiB, so the two are balanced.
        let size = MAX_CHUNK + 1;
        assert_eq!(chunk_ranges(size), vec![(0, 131_073), (131_073, size)]);
        // A remainder of 32 KiB or more stands alone.
        let size = MAX_CHUNK + MIN_CHUNK;
        assert_eq!(chunk_ranges(size), vec![(0, MAX_CHUNK), (MAX_CHUNK, size)]);
        let size = 3 * MAX_CHUNK + 100;
        let ranges = chunk_ranges(size);
        assert_eq!(ranges.len(), 4);
        assert_eq!(ranges[2], (2 * MAX_CHUNK, 2 * MAX_CHUNK + (MAX_CHUNK + 100).div_ceil(2)));
        assert_eq!(ranges.last().unwrap().1, size);
    }

    fn chunks_of(data: &[u8]) -> Vec<Chunk> {
        chunk_ranges(data.len() as u64)
            .into_iter()
            .map(|(start, end)| Chunk {
                start,
                end,
                data_hash: sha256(&[&data[start as usize..end as usize]]),
            })
            .collect()
    }

    #[test]
    fn a_single_chunk_root_is_its_leaf() {
        let data = b"hello arweave";
        let tree = Tree::new(&chunks_of(data));
        let leaf = sha256(&[&sha256(&[&sha256(&[data])]), &sha256(&[&note(data.len() as u64)])]);
        assert_eq!(tree.root(), leaf);
        let proofs = tree.proofs();
        assert_eq!(proofs.len(), 1);
        assert_eq!(proofs[0].offset, data.len() as u64 - 1);
        assert_eq!(proofs[0].data_path.len(), 64);
    }

    #[test]
    fn proofs_walk_down_to_each_leaf_in_order() {
        let data: Vec<u8> = (0..(5 * MAX_CHUNK + 7)).map(|i| (i % 251) as u8).collect();
        let chunks = chunks_of(&data);
        let tree = Tree::new(&chunks);
        let proofs = tree.proofs();
        assert_eq!(proofs.len(), chunks.len());
        for (proof, chunk) in proofs.iter().zip(&chunks) {
            assert_eq!(proof.offset, chunk.end - 1);
            // Each branch level adds 96 bytes; the leaf adds 64.
            assert_eq!((proof.data_path.len() - 64) % 96, 0);
            assert_eq!(&proof.data_path[proof.data_path.len() - 64..][..32], &chunk.data_hash);
            // The path starts with the root's children, whose hash with the split is the root.
            let (l, r, split) =
                (&proof.data_path[..32], &proof.data_path[32..64], &proof.data_path[64..96]);
            assert_eq!(sha256(&[&sha256(&[l]), &sha256(&[r]), &sha256(&[split])]), tree.root());
        }
    }
}
