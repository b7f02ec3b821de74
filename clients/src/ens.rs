//! ENS ownership, read over an Ethereum RPC: the wallet is the registry's owner of the name's
//! node (EIP-137 namehash), or, when the registry's owner is the NameWrapper, the wrapper's
//! `ownerOf(uint256(node))`. Names are taken in their ASCII form (ENSIP-15 normalisation of
//! other scripts is not applied here).

use alloy::{
    primitives::{Address, B256, U256, keccak256},
    providers::{DynProvider, Provider, ProviderBuilder},
};

alloy::sol! {
    /// The ENS registry's owner lookup.
    #[sol(rpc)]
    interface EnsRegistry {
        function owner(bytes32 node) external view returns (address);
    }

    /// The NameWrapper's owner of a wrapped name (ERC-1155, the token id is the node).
    #[sol(rpc)]
    interface EnsNameWrapper {
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
}

#[cfg(test)]
mod tests {
    use super::namehash;

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
