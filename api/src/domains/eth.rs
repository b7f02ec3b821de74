//! `.eth` names bought through ENS's `ETHRegistrarController`: the platform's ENS key commits,
//! waits the controller's minimum commitment age, then registers the name to the buyer's wallet
//! (with the configured resolver, so the owner can set the site's content hash at once), paying
//! the registration fee and gas; the buyer pays that in credits, with the same idempotent charge
//! as a DNS purchase (`purchase::pay_then`). Renewals go through the controller's `renew`, which
//! anyone may pay for.
//!
//! Every step can be taken again after a crash without paying twice. The commitment's secret is
//! derived from the purchase, so a retry (the request's own, or recovery's) rebuilds the same
//! commitment and reads from the controller whether it was made; a second registration of a name
//! reverts and spends nothing but gas; a renewal is sent under the purchase's outbox reference,
//! so a retry finds the first attempt's transaction instead of renewing again. Recovery settles
//! a cut-off purchase by taking the same steps again: the name ends with the buyer, or the
//! controller says why it cannot (and the charge is refunded). See ADR 0008 §17.

use std::time::Duration;

use alloy::{
    primitives::{Address, B256, U256, keccak256},
    providers::{DynProvider, Provider},
};
use decentraspace_clients::{
    ens::{EnsRegistry, EthBaseRegistrar, EthRegistrarController, namehash},
    registrar::{Quote, RegistrarError},
};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::chain::{ChainError, Operator};

/// The currency `.eth` prices are quoted in; the credit rate an admin sets for it is per
/// micro-ether (10^12 wei), its "smallest unit" here.
pub const CURRENCY: &str = "ETH";
/// Wei in one micro-ether.
const WEI_PER_SUBUNIT: u64 = 1_000_000_000_000;
/// A year, as the controller counts durations.
const YEAR_SECS: u64 = 365 * 24 * 3600;
/// Gas of a commitment, measured on the controller 2.0.5 (about 45,000), with room.
const COMMIT_GAS: u64 = 60_000;
/// Gas of a registration with a resolver and an address record (about 280,000), with room.
const REGISTER_GAS: u64 = 350_000;
/// Gas of a renewal (about 50,000), with room.
const RENEW_GAS: u64 = 80_000;
/// What is sent over the quoted rent, in percent, should the controller's USD oracle move
/// between the price and the transaction (the controller returns what it does not take).
const VALUE_HEADROOM_PERCENT: u64 = 10;
/// The longest a registration waits for its commitment to age by the chain's clock (mainnet's
/// minimum is 60 s).
const MAX_COMMIT_WAIT: Duration = Duration::from_secs(600);

/// The label of a name directly under `.eth` (`café.eth` → `café`); `None` for any other name.
pub fn label(name: &str) -> Option<&str> {
    name.strip_suffix(".eth").filter(|label| !label.is_empty() && !label.contains('.'))
}

/// The `.eth` registrar controller and the key that pays it.
#[derive(Clone)]
pub struct EthNames {
    key: Operator,
    controller: Address,
    registry: Address,
    resolver: Option<Address>,
    secrets: [u8; 32],
    /// Whether the ENS RPC's chain id is the one configured (read once).
    chain_checked: std::sync::Arc<tokio::sync::OnceCell<bool>>,
}

impl std::fmt::Debug for EthNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EthNames")
            .field("key", &self.key.address())
            .field("controller", &self.controller)
            .field("resolver", &self.resolver)
            .finish_non_exhaustive()
    }
}

/// Where a name stands at the controller for one buyer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holding {
    /// The buyer holds it, until the given time.
    Buyer(u64),
    /// Nobody does: it can be registered.
    Free,
    /// Someone else does, or it is in its grace period.
    Taken,
}

impl EthNames {
    /// The controller at `controller` on the ENS chain `key` sends to, reading the `.eth`
    /// registrar from `registry`; names get `resolver` (none: the owner sets one); commitment
    /// secrets are derived from `secret`.
    pub fn new(
        key: Operator,
        controller: Address,
        registry: Address,
        resolver: Option<Address>,
        secret: &[u8],
    ) -> Self {
        let secrets = crate::seal::derive("decentraspace ens commitment secrets", secret);
        Self { key, controller, registry, resolver, secrets, chain_checked: Default::default() }
    }

    fn chain(&self) -> &DynProvider {
        self.key.provider()
    }

    fn controller(&self) -> EthRegistrarController::EthRegistrarControllerInstance<DynProvider> {
        EthRegistrarController::new(self.controller, self.chain().clone())
    }

    /// The secret of purchase `id`'s commitment: the same on every replica and every retry,
    /// unknown outside the platform until the registration reveals it.
    fn secret(&self, chain: i64, id: i64) -> B256 {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secrets).expect("any key length");
        mac.update(format!("{chain}:{id}").as_bytes());
        B256::from_slice(&mac.finalize().into_bytes())
    }

    /// The `.eth` base registrar: the registry's owner of `eth`.
    async fn base(
        &self,
    ) -> Result<EthBaseRegistrar::EthBaseRegistrarInstance<&DynProvider>, RegistrarError> {
        let base = EnsRegistry::new(self.registry, self.chain())
            .owner(namehash("eth"))
            .call()
            .await
            .map_err(unavailable)?;
        if base.is_zero() {
            return Err(RegistrarError::Unavailable("ENS has no .eth registrar".into()));
        }
        Ok(EthBaseRegistrar::new(base, self.chain()))
    }

    /// Where `label` stands for `buyer`, and when `commitment` was made (0: not, or used), with
    /// the chain's time: every read at one block (a load-balanced RPC may answer each call from
    /// another node, and a registration mined between two reads would look like neither).
    async fn standing(
        &self,
        label: &str,
        buyer: Address,
        commitment: Option<B256>,
    ) -> Result<(Holding, u64, u64), RegistrarError> {
        let (block, now) = self.head().await?;
        let at = alloy::eips::BlockId::number(block);
        let committed: u64 = match commitment {
            Some(commitment) => self
                .controller()
                .commitments(commitment)
                .block(at)
                .call()
                .await
                .map_err(unavailable)?
                .saturating_to(),
            None => 0,
        };
        let base = self.base().await?;
        let id = U256::from_be_bytes(keccak256(label.as_bytes()).0);
        let expires: u64 =
            base.nameExpires(id).block(at).call().await.map_err(unavailable)?.saturating_to();
        let holding = if expires <= now {
            let free = self.controller().available(label.to_owned()).block(at).call().await;
            if free.map_err(unavailable)? { Holding::Free } else { Holding::Taken }
        } else {
            let owner = base.ownerOf(id).block(at).call().await.map_err(unavailable)?;
            if owner == buyer { Holding::Buyer(expires) } else { Holding::Taken }
        };
        Ok((holding, committed, now))
    }

    async fn holding(&self, label: &str, buyer: Address) -> Result<Holding, RegistrarError> {
        Ok(self.standing(label, buyer, None).await?.0)
    }

    /// The chain's latest block: its number and time.
    async fn head(&self) -> Result<(u64, u64), RegistrarError> {
        let block = self
            .chain()
            .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
            .await
            .map_err(|err| RegistrarError::Unavailable(format!("the ENS chain: {err}")))?
            .ok_or_else(|| RegistrarError::Unavailable("the ENS chain has no block".into()))?;
        Ok((block.header.number, block.header.timestamp))
    }

    /// The chain's time (its latest block's).
    async fn now(&self) -> Result<u64, RegistrarError> {
        Ok(self.head().await?.1)
    }

    /// Checks once that `ENS_RPC_URL` is the chain `ENS_CHAIN_ID` says (else every transaction
    /// would be signed for another chain and refused).
    async fn check_chain(&self) -> Result<(), RegistrarError> {
        let expected = self.key.chain_id();
        let checked =
            self.chain_checked
                .get_or_try_init(|| async {
                    let actual = self.chain().get_chain_id().await.map_err(|err| {
                        RegistrarError::Unavailable(format!("the ENS chain: {err}"))
                    })?;
                    Ok::<_, RegistrarError>(actual == expected)
                })
                .await?;
        if !checked {
            tracing::error!(target: "api::domains", expected, "ENS_RPC_URL is not the chain ENS_CHAIN_ID names");
            return Err(RegistrarError::Unavailable(
                "the ENS chain is misconfigured: ENS_RPC_URL is not the chain ENS_CHAIN_ID names"
                    .into(),
            ));
        }
        Ok(())
    }

    /// What registering (or renewing) `label` for `years` costs: the controller's rent and the
    /// gas of the transactions, at today's gas price, in micro-ether (rounded up).
    pub async fn quote(
        &self,
        label: &str,
        years: u32,
        renewal: bool,
    ) -> Result<Quote, RegistrarError> {
        let controller = self.controller();
        let available =
            renewal || controller.available(label.to_owned()).call().await.map_err(unavailable)?;
        if !available {
            return Ok(Quote { available: false, price_subunits: 0, currency: CURRENCY.into() });
        }
        let rent = controller
            .rentPrice(label.to_owned(), U256::from(duration(years)))
            .call()
            .await
            .map_err(unavailable)?;
        let gas_price = self
            .chain()
            .get_gas_price()
            .await
            .map_err(|err| RegistrarError::Unavailable(format!("the ENS chain: {err}")))?;
        let gas = if renewal { RENEW_GAS } else { COMMIT_GAS + REGISTER_GAS };
        let wei = rent + U256::from(gas) * U256::from(gas_price);
        let subunits = wei.div_ceil(U256::from(WEI_PER_SUBUNIT));
        let price_subunits = u64::try_from(subunits)
            .map_err(|_| RegistrarError::Refused(format!("{label}.eth costs too much to quote")))?;
        Ok(Quote { available: true, price_subunits, currency: CURRENCY.into() })
    }

    /// What a registration or renewal of `label` for `years` is sent with: the controller's rent
    /// now and some headroom, which the controller returns unless its oracle moved.
    async fn value(&self, label: &str, years: u32) -> Result<U256, RegistrarError> {
        let rent = self
            .controller()
            .rentPrice(label.to_owned(), U256::from(duration(years)))
            .call()
            .await
            .map_err(unavailable)?;
        Ok(rent * U256::from(100 + VALUE_HEADROOM_PERCENT) / U256::from(100))
    }

    /// Registers `label` to `owner` for `years` as purchase `id`: commits (unless that
    /// commitment is live already), waits for it to age, and registers. Taking it again after any
    /// interruption finishes the same registration; answers `Ok` once the owner holds the name.
    pub async fn register(
        &self,
        chain: i64,
        id: i64,
        label: &str,
        owner: Address,
        years: u32,
    ) -> Result<(), RegistrarError> {
        self.check_chain().await?;
        let controller = self.controller();
        let secret = self.secret(chain, id);
        let resolver = self.resolver.unwrap_or_default();
        // The owner's wallet as the name's address record, when a resolver is set.
        let addr = if self.resolver.is_some() { owner } else { Address::ZERO };
        let commitment = controller
            .makeCommitmentWithConfig(label.to_owned(), owner, secret, resolver, addr)
            .call()
            .await
            .map_err(unavailable)?;
        let min_age: u64 =
            controller.minCommitmentAge().call().await.map_err(unavailable)?.saturating_to();
        let max_age: u64 =
            controller.maxCommitmentAge().call().await.map_err(unavailable)?.saturating_to();
        // Registered (and so the commitment used), taken, or free with the commitment live or
        // not: read together.
        let live = |committed: u64, now: u64| committed != 0 && committed + max_age > now;
        let (holding, mut committed, now) = self.standing(label, owner, Some(commitment)).await?;
        match holding {
            Holding::Buyer(_) => return Ok(()),
            Holding::Taken => {
                return Err(RegistrarError::Refused(format!("{label}.eth is registered already")));
            }
            Holding::Free => {}
        }
        if !live(committed, now) {
            let reference = self
                .key
                .attempt_reference(&format!("ens-commit:{chain}:{id}"))
                .await
                .map_err(chain_unavailable)?;
            if self.key.mined_under(&reference).await.map_err(chain_unavailable)? {
                // Made once, and mined before this read: read again after it, since a
                // registration may have used it meanwhile. Not live then, it lapsed unused:
                // never made again.
                let (holding, again, now) = self.standing(label, owner, Some(commitment)).await?;
                match holding {
                    Holding::Buyer(_) => return Ok(()),
                    Holding::Taken => {
                        return Err(RegistrarError::Refused(format!(
                            "{label}.eth is registered already"
                        )));
                    }
                    Holding::Free if !live(again, now) => {
                        return Err(RegistrarError::Refused(format!(
                            "ENS did not register {label}.eth before its commitment lapsed"
                        )));
                    }
                    Holding::Free => committed = again,
                }
            } else {
                self.key
                    .send_once_for_receipt(reference, controller.commit(commitment))
                    .await
                    .map_err(chain_unavailable)?;
                committed = controller
                    .commitments(commitment)
                    .call()
                    .await
                    .map_err(unavailable)?
                    .saturating_to();
                if committed == 0 {
                    return Err(RegistrarError::Unavailable(format!(
                        "the commitment for {label}.eth is not read back yet"
                    )));
                }
            }
        }
        // The controller takes the registration in a block at least `min_age` after the
        // commitment's: sent once the chain's latest block is, it is also estimated there.
        let ready_at = committed + min_age;
        let deadline = tokio::time::Instant::now() + MAX_COMMIT_WAIT;
        loop {
            let now = self.now().await?;
            if now >= ready_at {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(RegistrarError::Unavailable(format!(
                    "the commitment for {label}.eth is not old enough yet"
                )));
            }
            tokio::time::sleep(Duration::from_secs((ready_at - now).clamp(1, 5))).await;
        }
        let value = self.value(label, years).await?;
        let call = controller
            .registerWithConfig(
                label.to_owned(),
                owner,
                U256::from(duration(years)),
                secret,
                resolver,
                addr,
            )
            .value(value);
        // A registration that reverted (its commitment too young by the chain's clock) makes
        // way for another; one in flight is waited for, never sent twice.
        let reference = self
            .key
            .attempt_reference(&format!("ens-register:{chain}:{id}"))
            .await
            .map_err(chain_unavailable)?;
        let sent = self.key.send_once_for_receipt(reference, call).await;
        match self.holding(label, owner).await? {
            Holding::Buyer(_) => Ok(()),
            Holding::Taken => Err(RegistrarError::Refused(format!(
                "{label}.eth was registered by another wallet"
            ))),
            Holding::Free => match sent {
                Err(err) if err.is_retryable() => Err(chain_unavailable(err)),
                Err(err) if committed + max_age <= self.now().await? => {
                    Err(RegistrarError::Refused(format!(
                        "ENS did not register {label}.eth before its commitment lapsed: {err}"
                    )))
                }
                // Refused while the commitment is live: the next pass registers.
                Err(err) => Err(chain_unavailable(err)),
                Ok(_) => {
                    Err(RegistrarError::Unavailable(format!("{label}.eth is not registered yet")))
                }
            },
        }
    }

    /// Renews `label` for `years` as purchase `id`: sent once under the purchase's reference, so
    /// a retry waits for (or reads) the first attempt instead of paying again.
    pub async fn renew(
        &self,
        chain: i64,
        id: i64,
        label: &str,
        years: u32,
    ) -> Result<(), RegistrarError> {
        self.check_chain().await?;
        let controller = self.controller();
        let value = self.value(label, years).await?;
        let call = controller.renew(label.to_owned(), U256::from(duration(years))).value(value);
        match self.key.send_once_for_receipt(format!("ens-renew:{chain}:{id}"), call).await {
            Ok(_) => Ok(()),
            // Refused by the controller before anything was sent, or reverted: nothing was
            // renewed.
            Err(
                err @ (ChainError::Refused(_)
                | ChainError::RefusedUnknown(_)
                | ChainError::Reverted(_)),
            ) => Err(RegistrarError::Refused(format!("ENS did not renew {label}.eth: {err}"))),
            // Anything else (the node refused or did not answer, not mined yet): asked again.
            Err(err) => Err(chain_unavailable(err)),
        }
    }
}

/// A term of `years`, in the controller's seconds.
fn duration(years: u32) -> u64 {
    YEAR_SECS * u64::from(years)
}

fn unavailable(err: alloy::contract::Error) -> RegistrarError {
    RegistrarError::Unavailable(format!("the ENS controller: {err}"))
}

fn chain_unavailable(err: ChainError) -> RegistrarError {
    RegistrarError::Unavailable(format!("the ENS chain: {err}"))
}

#[cfg(test)]
mod tests {
    use super::label;

    #[test]
    fn only_names_directly_under_eth_are_bought() {
        assert_eq!(label("café.eth"), Some("café"));
        for refused in ["a.b.eth", ".eth", "eth", "name.com"] {
            assert!(label(refused).is_none(), "{refused}");
        }
    }
}
