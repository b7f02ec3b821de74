//! Which calls users may relay: the platform functions a wallet calls for itself. Everything
//! else (role-gated functions, foreign contracts, value transfers) is refused before it reaches
//! the chain.

use alloy::{
    primitives::{Address, Bytes, U256},
    sol_types::SolCall,
};
use decentraspace_abi::{
    AccountRegistry, CreditLedger, DomainRegistry, PlatformContracts, PlatformRevert, ServiceKind,
    ServiceRegistry::{self, ServiceRegistryErrors},
};

use crate::{
    billing::{available, charges::credits_of},
    http::error::ApiError,
    platform::Platform,
};

alloy::sol! {
    /// ERC-20 `approve`, for paying credits with a token (raw transactions only).
    function approve(address spender, uint256 value) external returns (bool);
}

/// A call that passed the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowedCall {
    /// The contract called.
    pub target: Address,
    /// The function's selector.
    pub selector: [u8; 4],
    /// The function's name, for answers and logs.
    pub function: &'static str,
}

/// The functions of each platform contract a wallet may call through the relay.
fn platform_function(
    contracts: &PlatformContracts,
    target: Address,
    selector: [u8; 4],
) -> Option<&'static str> {
    let allowed: &[([u8; 4], &'static str)] = if target == contracts.credit_ledger {
        &[
            (CreditLedger::rechargeCall::SELECTOR, "recharge"),
            (CreditLedger::rechargeWithPermitCall::SELECTOR, "rechargeWithPermit"),
        ]
    } else if target == contracts.account_registry {
        &[
            (AccountRegistry::registerCall::SELECTOR, "register"),
            (AccountRegistry::upgradeCall::SELECTOR, "upgrade"),
        ]
    } else if target == contracts.service_registry {
        &[
            (ServiceRegistry::createServiceCall::SELECTOR, "createService"),
            (ServiceRegistry::pauseCall::SELECTOR, "pause"),
            (ServiceRegistry::resumeCall::SELECTOR, "resume"),
            (ServiceRegistry::cancelCall::SELECTOR, "cancel"),
        ]
    } else if target == contracts.domain_registry {
        &[
            (DomainRegistry::linkCall::SELECTOR, "link"),
            (DomainRegistry::unlinkCall::SELECTOR, "unlink"),
            (DomainRegistry::releaseCall::SELECTOR, "release"),
            (DomainRegistry::transferCall::SELECTOR, "transfer"),
        ]
    } else {
        &[]
    };
    allowed.iter().find(|(s, _)| *s == selector).map(|(_, name)| *name)
}

/// For a call that opens or resumes a service: 402 with the shortfall when `account`'s available
/// balance cannot pay an hour of it (the registry checks only the ledger's balance against this
/// one service's price; the available balance also counts what is used and not charged yet).
pub async fn check_credit(
    platform: &Platform,
    account: Address,
    call: &AllowedCall,
    input: &Bytes,
) -> Result<(), ApiError> {
    if call.target != platform.deployment.contracts.service_registry {
        return Ok(());
    }
    let (hourly, what) = if call.selector == ServiceRegistry::createServiceCall::SELECTOR {
        let open = ServiceRegistry::createServiceCall::abi_decode(input)
            .map_err(|_| not_allowed("the createService call does not decode".into()))?;
        let kind = ServiceKind::try_from(open.kind)
            .map_err(|_| not_allowed(format!("service kind {} does not exist", open.kind)))?;
        if kind == ServiceKind::Database && platform.config.database_hosts.is_none() {
            // Nothing would make the database: the service would be charged for nothing.
            return Err(ApiError::NotConfigured("managed databases (DATABASE_HOSTS)"));
        }
        (available::hourly_price(platform, account, kind).await?, "opening the service".to_owned())
    } else if call.selector == ServiceRegistry::resumeCall::SELECTOR {
        let resume = ServiceRegistry::resumeCall::abi_decode(input)
            .map_err(|_| not_allowed("the resume call does not decode".into()))?;
        let id = i64::try_from(resume.serviceId).unwrap_or(i64::MAX);
        let kind = sqlx::query_scalar!(
            "select kind from services where chain_id = $1 and service_id = $2",
            platform.chain_id() as i64,
            id
        )
        .fetch_optional(&platform.db)
        .await?;
        // An unknown service: the simulation answers for it.
        let Some(kind) = kind else { return Ok(()) };
        (
            available::hourly_price_of(platform, account, &kind).await?,
            format!("resuming service {id}"),
        )
    } else {
        return Ok(());
    };
    available::require(platform, account, U256::ZERO, hourly, &what).await
}

fn not_allowed(detail: String) -> ApiError {
    ApiError::Unprocessable { slug: "relay-call-not-allowed", detail }
}

/// Checks a call to a platform contract (both relay modes).
pub fn check_platform_call(
    contracts: &PlatformContracts,
    target: Address,
    input: &Bytes,
) -> Result<AllowedCall, ApiError> {
    let selector = selector(input)?;
    let function = platform_function(contracts, target, selector).ok_or_else(|| {
        not_allowed(format!(
            "calling 0x{} on {target} is not relayed: only the platform contracts' user functions are",
            alloy::hex::encode(selector)
        ))
    })?;
    Ok(AllowedCall { target, selector, function })
}

/// Checks a raw transaction's call: a platform call, or approving the ledger to spend an
/// accepted token.
pub fn check_raw_call(
    contracts: &PlatformContracts,
    accepted_tokens: &[Address],
    target: Address,
    input: &Bytes,
) -> Result<AllowedCall, ApiError> {
    if accepted_tokens.contains(&target) {
        let call = approveCall::abi_decode(input).map_err(|_| {
            not_allowed(format!("only approve(ledger, amount) is relayed to the token {target}"))
        })?;
        if call.spender != contracts.credit_ledger {
            return Err(not_allowed(format!(
                "a token approval is relayed only for the credit ledger {}, not {}",
                contracts.credit_ledger, call.spender
            )));
        }
        return Ok(AllowedCall { target, selector: approveCall::SELECTOR, function: "approve" });
    }
    check_platform_call(contracts, target, input)
}

fn selector(input: &Bytes) -> Result<[u8; 4], ApiError> {
    input
        .get(..4)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .ok_or_else(|| not_allowed("the call has no function selector".into()))
}

/// The refusal of a call whose simulation reverted with `data`, the same for both relay modes:
/// acting on what another wallet owns is a permission refusal (403); any other revert means the
/// call cannot be carried out (422), and nothing is sent.
pub fn refusal(data: &[u8]) -> ApiError {
    match PlatformRevert::decode(data) {
        // Too little credit to open or resume a priced service: 402 with the shortfall, as the
        // API's own endpoints answer.
        Some(PlatformRevert::ServiceRegistry(
            ServiceRegistryErrors::ServiceRegistryInsufficientCreditToOpen(e),
        )) => ApiError::CreditShort {
            detail: format!(
                "opening this service needs a balance of one hour of its price, {}; the balance is {}: recharge first",
                credits_of(e.required),
                credits_of(e.balance)
            ),
            shortfall: e.required.saturating_sub(e.balance),
        },
        Some(PlatformRevert::ServiceRegistry(
            ServiceRegistryErrors::ServiceRegistryInsufficientCredit(e),
        )) => ApiError::CreditShort {
            detail: format!(
                "resuming service {} needs a balance of one hour of its price, {}; the balance is {}: recharge first",
                e.serviceId,
                credits_of(e.required),
                credits_of(e.balance)
            ),
            shortfall: e.required.saturating_sub(e.balance),
        },
        Some(revert) if revert.is_not_owner() => {
            ApiError::Forbidden(format!("the call acts on what another wallet owns: {revert}"))
        }
        Some(revert) => ApiError::Unprocessable {
            slug: "relay-would-revert",
            detail: format!("the call would revert: {revert}"),
        },
        None => ApiError::Unprocessable {
            slug: "relay-would-revert",
            detail: format!("the call would revert: 0x{}", alloy::hex::encode(data)),
        },
    }
}

#[cfg(test)]
mod tests {
    use alloy::primitives::U256;

    use super::*;

    fn contracts() -> PlatformContracts {
        PlatformContracts {
            account_registry: Address::repeat_byte(1),
            credit_ledger: Address::repeat_byte(2),
            service_registry: Address::repeat_byte(3),
            domain_registry: Address::repeat_byte(4),
            forwarder: Address::repeat_byte(5),
            test_token: Address::repeat_byte(6),
        }
    }

    #[test]
    fn user_functions_pass_and_role_functions_do_not() {
        let c = contracts();
        let recharge =
            CreditLedger::rechargeCall { token: c.test_token, amount: U256::from(1) }.abi_encode();
        assert_eq!(
            check_platform_call(&c, c.credit_ledger, &recharge.into()).expect("allowed").function,
            "recharge"
        );
        let fiat = CreditLedger::creditFiatCall {
            account: Address::ZERO,
            credits: U256::from(1),
            paymentRef: Default::default(),
        }
        .abi_encode();
        assert!(check_platform_call(&c, c.credit_ledger, &fiat.into()).is_err(), "role-gated");
        let register = AccountRegistry::registerCall {}.abi_encode();
        assert!(
            check_platform_call(&c, Address::repeat_byte(9), &register.into()).is_err(),
            "foreign contract"
        );
        assert!(
            check_platform_call(&c, c.credit_ledger, &Bytes::from(vec![1, 2])).is_err(),
            "no selector"
        );
    }

    #[test]
    fn token_approvals_only_for_the_ledger() {
        let c = contracts();
        let tokens = [c.test_token];
        let good = approveCall { spender: c.credit_ledger, value: U256::MAX }.abi_encode();
        assert!(check_raw_call(&c, &tokens, c.test_token, &good.into()).is_ok());
        let bad = approveCall { spender: Address::repeat_byte(7), value: U256::MAX }.abi_encode();
        assert!(check_raw_call(&c, &tokens, c.test_token, &bad.into()).is_err());
    }
}
