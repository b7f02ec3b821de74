//! The EIP-712 messages users sign for the platform: forward requests for gasless calls through the
//! [`Forwarder`](crate::Forwarder).

use alloy::{
    primitives::Address,
    sol,
    sol_types::{Eip712Domain, eip712_domain},
};

sol! {
    /// A call a user signs for the relayer to submit through the forwarder (OpenZeppelin
    /// `ERC2771Forwarder`'s typed struct; the `nonce` is the forwarder's `nonces(from)`).
    #[derive(Debug, PartialEq, Eq)]
    struct ForwardRequest {
        address from;
        address to;
        uint256 value;
        uint256 gas;
        uint256 nonce;
        uint48 deadline;
        bytes data;
    }
}

/// The EIP-712 domain name of the platform's forwarder (`Forwarder.NAME`).
pub const FORWARDER_NAME: &str = "DecentraSpace Forwarder";

/// The EIP-712 domain forward requests are signed under.
pub fn forwarder_domain(chain_id: u64, forwarder: Address) -> Eip712Domain {
    eip712_domain! {
        name: FORWARDER_NAME,
        version: "1",
        chain_id: chain_id,
        verifying_contract: forwarder,
    }
}
