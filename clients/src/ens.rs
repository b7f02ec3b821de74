//! ENS ownership, read over an Ethereum RPC: the wallet is the registry's owner of the name's
//! node (EIP-137 namehash), or, when the registry's owner is the NameWrapper, the wrapper's
//! `ownerOf(uint256(node))`. Names are taken normalised (the API applies ENSIP-15). Also the
//! name's resolver and content hash (ENSIP-7), and the content hash of an IPNS name.

use alloy::{
    primitives::{Address, B256, U256, keccak256},
    providers::{DynProvider, Provider, ProviderBuilder},
};

alloy::sol! {
    /// The ENS registry's owner and resolver lookups.
    #[sol(rpc)]
    interface EnsRegistry {
        function owner(bytes32 node) external view returns (address);
        function resolver(bytes32 node) external view returns (address);
    }

    /// A resolver's content hash (ENSIP-7).
    #[sol(rpc)]
    interface ContentHashResolver {
        function contenthash(bytes32 node) external view returns (bytes);
        function setContenthash(bytes32 node, bytes hash) external;
    }

    /// The NameWrapper's owner of a wrapped name (ERC-1155, the token id is the node).
    #[sol(rpc)]
    interface EnsNameWrapper {
        function ownerOf(uint256 id) external view returns (address);
    }

    /// ENS's `.eth` registrar controller (`ETHRegistrarController`, commit and reveal), as
    /// `@ensdomains/ethregistrar` 2.0.5 ships it: names are labels under `.eth`, durations in
    /// seconds, prices in wei.
    #[sol(rpc)]
    interface EthRegistrarController {
        function rentPrice(string name, uint256 duration) external view returns (uint256);
        function available(string name) external view returns (bool);
        function minCommitmentAge() external view returns (uint256);
        function maxCommitmentAge() external view returns (uint256);
        function commitments(bytes32 commitment) external view returns (uint256);
        function makeCommitmentWithConfig(string name, address owner, bytes32 secret, address resolver, address addr) external pure returns (bytes32);
        function commit(bytes32 commitment) external;
        function registerWithConfig(string name, address owner, uint256 duration, bytes32 secret, address resolver, address addr) external payable;
        function renew(string name, uint256 duration) external payable;
    }

    /// The `.eth` base registrar (an ERC-721 whose token id is the label's hash): who holds a
    /// name, and until when.
    #[sol(rpc)]
    interface EthBaseRegistrar {
        function nameExpires(uint256 id) external view returns (uint256);
        function ownerOf(uint256 id) external view returns (address);
    }
}

/// EIP-137: the node of `name`, folding each label's hash from the right.
pub fn namehash(name: &str) -> B256 {
    let mut node = B256::ZERO;
    if name.is_empty() {
        return node;
    }
    for label in name.rsplit('.') {
        let mut both = [0u8; 64];
        both[..32].copy_from_slice(node.as_slice());
        both[32..].copy_from_slice(keccak256(label.as_bytes()).as_slice());
        node = keccak256(both);
    }
    node
}

/// The ENS registry and NameWrapper on one chain.
#[derive(Debug, Clone)]
pub struct Ens {
    provider: DynProvider,
    registry: Address,
    wrapper: Address,
}

impl Ens {
    /// A reader of the registry at `registry` (and the wrapper at `wrapper`) over `rpc_url`.
    pub fn new(rpc_url: &str, registry: Address, wrapper: Address) -> anyhow::Result<Self> {
        let provider = ProviderBuilder::new().connect_http(rpc_url.parse()?).erased();
        Ok(Self { provider, registry, wrapper })
    }

    /// Who owns `name`: `None` when nobody does.
    pub async fn owner(&self, name: &str) -> Result<Option<Address>, alloy::contract::Error> {
        let node = namehash(name);
        let owner = EnsRegistry::new(self.registry, &self.provider).owner(node).call().await?;
        let owner = if owner == self.wrapper && !self.wrapper.is_zero() {
            EnsNameWrapper::new(self.wrapper, &self.provider)
                .ownerOf(U256::from_be_bytes(node.0))
                .call()
                .await?
        } else {
            owner
        };
        Ok((!owner.is_zero()).then_some(owner))
    }

    /// The resolver `name` names in the registry (`None`: none set).
    pub async fn resolver(&self, name: &str) -> Result<Option<Address>, alloy::contract::Error> {
        let resolver =
            EnsRegistry::new(self.registry, &self.provider).resolver(namehash(name)).call().await?;
        Ok((!resolver.is_zero()).then_some(resolver))
    }

    /// The content hash `resolver` holds for `name` (empty when none is set).
    pub async fn contenthash(
        &self,
        resolver: Address,
        name: &str,
    ) -> Result<Vec<u8>, alloy::contract::Error> {
        let hash = ContentHashResolver::new(resolver, &self.provider)
            .contenthash(namehash(name))
            .call()
            .await?;
        Ok(hash.to_vec())
    }
}

/// The calldata of `setContenthash(namehash(name), hash)`, for the name's owner to send to its
/// resolver.
pub fn set_contenthash_call(name: &str, hash: &[u8]) -> Vec<u8> {
    use alloy::sol_types::SolCall;
    ContentHashResolver::setContenthashCall { node: namehash(name), hash: hash.to_vec().into() }
        .abi_encode()
}

/// The multicodec of IPNS names in a content hash (`ipns-ns`, 0xe5, as a uvarint).
const IPNS_NS: [u8; 2] = [0xe5, 0x01];
/// A CIDv1 of a libp2p public key: version 1, codec `libp2p-key` (0x72).
const LIBP2P_KEY_CID: [u8; 2] = [0x01, 0x72];
const BASE36: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// An IPNS name that is not one.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not an IPNS name (a peer id or a libp2p-key CID in base36)")]
pub struct NotIpnsName(pub String);

/// The CID bytes of an IPNS name, written as a peer id (`12D3Koo…`, `Qm…`: base58btc multihash)
/// or as a CIDv1 in base36 (`k51…`).
fn ipns_cid(name: &str) -> Result<Vec<u8>, NotIpnsName> {
    let bad = || NotIpnsName(name.to_owned());
    let cid = if let Some(base36) = name.strip_prefix('k') {
        base36_decode(base36).ok_or_else(bad)?
    } else {
        let multihash = bs58::decode(name).into_vec().map_err(|_| bad())?;
        [LIBP2P_KEY_CID.as_slice(), &multihash].concat()
    };
    // A multihash after the prefix: its code (identity 0x00 or sha2-256 0x12) and length.
    match cid.as_slice() {
        [0x01, 0x72, 0x00 | 0x12, length, rest @ ..] if usize::from(*length) == rest.len() => {
            Ok(cid)
        }
        _ => Err(bad()),
    }
}

/// An IPNS name as a CIDv1 in base36, the form gateways and ENS tools show (`k51…`).
pub fn ipns_name(name: &str) -> Result<String, NotIpnsName> {
    Ok(format!("k{}", base36_encode(&ipns_cid(name)?)))
}

/// An IPNS name as a peer id (base58btc), the form some IPFS implementations resolve only.
pub fn ipns_peer_id(name: &str) -> Result<String, NotIpnsName> {
    let cid = ipns_cid(name)?;
    Ok(bs58::encode(&cid[LIBP2P_KEY_CID.len()..]).into_string())
}

/// The ENSIP-7 content hash that points a name at the IPNS name `name`.
pub fn ipns_contenthash(name: &str) -> Result<Vec<u8>, NotIpnsName> {
    Ok([IPNS_NS.as_slice(), &ipns_cid(name)?].concat())
}

fn base36_encode(bytes: &[u8]) -> String {
    let zeros = bytes.iter().take_while(|b| **b == 0).count();
    // Little-endian base-36 digits of the number the bytes write.
    let mut digits: Vec<u8> = Vec::new();
    for &byte in &bytes[zeros..] {
        let mut carry = u32::from(byte);
        for digit in &mut digits {
            carry += u32::from(*digit) << 8;
            *digit = (carry % 36) as u8;
            carry /= 36;
        }
        while carry > 0 {
            digits.push((carry % 36) as u8);
            carry /= 36;
        }
    }
    let mut out = "0".repeat(zeros);
    out.extend(digits.iter().rev().map(|d| char::from(BASE36[usize::from(*d)])));
    out
}

fn base36_decode(text: &str) -> Option<Vec<u8>> {
    let zeros = text.bytes().take_while(|c| *c == b'0').count();
    // Little-endian bytes of the number.
    let mut bytes: Vec<u8> = Vec::new();
    for c in text.bytes().skip(zeros) {
        let mut carry = BASE36.iter().position(|d| *d == c.to_ascii_lowercase())? as u32;
        for byte in &mut bytes {
            carry += u32::from(*byte) * 36;
            *byte = (carry & 0xff) as u8;
            carry >>= 8;
        }
        while carry > 0 {
            bytes.push((carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    let mut out = vec![0u8; zeros];
    out.extend(bytes.iter().rev());
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::{ipns_contenthash, ipns_name, ipns_peer_id, namehash};

    #[test]
    fn an_ipns_name_encodes_as_ensip_7_says() {
        // ENS's own encoder (@ensdomains/content-hash 3.0.0, `encode("ipns", …)`) gives this for
        // both forms of the same Ed25519 key.
        let expected =
            "e5010172002408011220e4680b2f8c8d21090e6aa327f1bb342ab8e7d9238f1e35831a54d6a8f5c91124";
        let peer_id = "12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK";
        let cid = "k51qzi5uqu5dlvj2baxnqndepeb86cbk3ng7n3i46uzyxzyqj2xjonzllnv0v8";
        assert_eq!(hex::encode(ipns_contenthash(peer_id).unwrap()), expected);
        assert_eq!(hex::encode(ipns_contenthash(cid).unwrap()), expected);
        assert_eq!(ipns_name(peer_id).unwrap(), cid);
        assert_eq!(ipns_name(cid).unwrap(), cid);
        assert_eq!(ipns_peer_id(cid).unwrap(), peer_id);
        for bad in [
            "",
            "k",
            "kzz!",
            "0xdeadbeef",
            "QmNotBase58lI0O",
            "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi",
        ] {
            assert!(ipns_contenthash(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn namehash_follows_eip_137() {
        // The EIP's own examples.
        assert_eq!(namehash(""), alloy::primitives::B256::ZERO);
        assert_eq!(
            namehash("eth").to_string(),
            "0x93cdeb708b7545dc668eb9280176169d1c33cfd8ed6f04690a0bcc88a93fc4ae"
        );
        assert_eq!(
            namehash("foo.eth").to_string(),
            "0xde9b09fd7c5f901e23a3f19fecc54828e9c848539801e86591bd9801b019f84f"
        );
    }
}
