// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccountRegistry} from "../../../src/AccountRegistry.sol";
import {CreditLedger} from "../../../src/CreditLedger.sol";
import {DomainRegistry} from "../../../src/DomainRegistry.sol";
import {ServiceRegistry} from "../../../src/ServiceRegistry.sol";
import {IAccountRegistry} from "../../../src/interfaces/IAccountRegistry.sol";
import {ICreditLedger} from "../../../src/interfaces/ICreditLedger.sol";
import {IDomainRegistry} from "../../../src/interfaces/IDomainRegistry.sol";
import {IServiceRegistry} from "../../../src/interfaces/IServiceRegistry.sol";
import {TestToken} from "../../../src/testing/TestToken.sol";
import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {CommonBase} from "forge-std/Base.sol";
import {StdCheats} from "forge-std/StdCheats.sol";
import {StdUtils} from "forge-std/StdUtils.sol";
import {Vm} from "forge-std/Vm.sol";

/// @notice Drives five users, the platform's roles and two strangers through the whole platform for the
/// invariant tests. It keeps a model of the platform (accounts, balances, services, domains, used
/// references) built only from the calls it made, predicts the outcome of every call (success, or the exact
/// revert), and counts in ghost variables every call whose outcome differed from the model, every charge of
/// a service that was not chargeable, every reused reference that moved credit, every change made by
/// someone who is neither the owner nor an operator role, and every service created past its tier's limit.
contract PlatformHandler is CommonBase, StdCheats, StdUtils {
    using {_eq} for bytes;

    /// @notice The addresses holding the platform's roles, and one outsider.
    struct Roles {
        address operator;
        address oracle;
        address billing;
        address registrar;
        address verifier;
        address stranger;
    }

    /// @notice The model of one account.
    struct GhostAccount {
        bool registered;
        IAccountRegistry.Tier tier;
        uint64 tierExpiresAt;
        uint256 balance;
    }

    /// @notice The model of one service.
    struct GhostService {
        address owner;
        IServiceRegistry.ServiceKind kind;
        IServiceRegistry.ServiceState state;
        uint64 expiresAt;
    }

    /// @notice One usage to charge.
    struct Item {
        address account;
        uint256 serviceId;
        uint256 credits;
        bytes32 usageRef;
    }

    uint256 public constant ACTORS = 5;
    uint256 public constant NAMES = 4;
    uint256 internal constant KINDS = 5;
    uint256 internal constant MAX_BATCH = 8;
    uint256 internal constant ACTIVE = uint256(2) ** uint8(IServiceRegistry.ServiceState.Active);
    uint256 internal constant PAUSED = uint256(2) ** uint8(IServiceRegistry.ServiceState.Paused);
    uint256 internal constant SUSPENDED = uint256(2) ** uint8(IServiceRegistry.ServiceState.Suspended);
    uint64 internal constant MONTH = 30 days;
    /// @dev Not normalised (upper case, space): every record of it must revert.
    string internal constant INVALID_NAME = "Bad Name.example";

    AccountRegistry public immutable accounts;
    CreditLedger public immutable ledger;
    ServiceRegistry public immutable services;
    DomainRegistry public immutable domains;
    TestToken public immutable token;

    address internal immutable operator;
    address internal immutable oracle;
    address internal immutable billing;
    address internal immutable registrar;
    address internal immutable verifier;
    uint64 internal immutable freeTierDuration;
    uint256 internal immutable paidTierPrice;

    address[ACTORS] internal _actors;
    address[2] internal _strangers;
    string[NAMES] internal _names;

    // The model.
    uint256 public currentTime;
    mapping(address account => GhostAccount) internal _accounts;
    mapping(uint256 serviceId => GhostService) internal _services;
    uint256 public ghostServiceCount;
    mapping(address owner => mapping(IServiceRegistry.ServiceKind kind => uint32)) public ghostOpenServices;
    mapping(bytes32 node => IDomainRegistry.Domain) internal _domains;
    mapping(uint256 serviceId => bool) public ghostCancelled;
    bytes32[] internal _paymentRefs;
    bytes32[] internal _usageRefs;
    mapping(bytes32 usageRef => bool) internal _usageRefUsed;
    uint256 internal _refNonce;

    // The ghost sums and counters the invariants check.
    uint256 public ghostCredited;
    uint256 public ghostDebited;
    /// @notice CreditsDeducted events of a service that was not chargeable when the call was made.
    uint256 public ghostUnchargeableCharges;
    /// @notice Credits or charges made with a reference that was used before (or twice in one batch).
    uint256 public ghostReusedRefEffects;
    /// @notice Services created while their owner held its tier's limit of that kind.
    uint256 public ghostLimitViolations;
    /// @notice Services opened while their owner's balance was below one hour of their price.
    uint256 public ghostUnfundedOpens;
    /// @notice Changes to a service or a domain made by neither its owner nor an operator role.
    uint256 public ghostUnauthorizedChanges;
    /// @notice Calls whose outcome (success, or the exact revert) differed from the model's prediction.
    uint256 public ghostMismatches;
    /// @notice The action of the last mismatch, to say which one failed.
    string public lastMismatch;

    // What a campaign exercised (diagnostics, not checked): calls and successes per action, attempts with a
    // reused reference, attempts by callers without the right, charges of a service (not of id 0) and batch
    // items skipped, as the ledger's events tell.
    mapping(string action => uint256) public calls;
    mapping(string action => uint256) public successes;
    uint256 public reusedRefAttempts;
    uint256 public unauthorizedAttempts;
    uint256 public serviceCharges;
    uint256 public skippedItems;

    modifier useTime() {
        // The model's clock is authoritative: every call starts at it, whatever block time the fuzzer set.
        vm.warp(currentTime);
        _;
    }

    constructor(
        AccountRegistry accounts_,
        CreditLedger ledger_,
        ServiceRegistry services_,
        DomainRegistry domains_,
        TestToken token_,
        Roles memory roles
    ) {
        accounts = accounts_;
        ledger = ledger_;
        services = services_;
        domains = domains_;
        token = token_;
        operator = roles.operator;
        oracle = roles.oracle;
        billing = roles.billing;
        registrar = roles.registrar;
        verifier = roles.verifier;
        freeTierDuration = accounts_.freeTierDuration();
        paidTierPrice = accounts_.paidTierPrice();
        currentTime = block.timestamp;
        for (uint256 i; i < ACTORS; ++i) {
            _actors[i] = makeAddr(string.concat("actor", vm.toString(i)));
        }
        _strangers[0] = roles.stranger;
        _strangers[1] = makeAddr("stranger1");
        for (uint256 i; i < NAMES; ++i) {
            _names[i] = string.concat("site", vm.toString(i), ".example");
        }
    }

    // ---------------------------------------------------------------------------------------------------
    // Accounts and credit
    // ---------------------------------------------------------------------------------------------------

    /// @notice An actor registers itself.
    function register(uint256 actorSeed) external useTime {
        address a = _actor(actorSeed);
        bytes memory expected;
        if (_accounts[a].registered) {
            expected = abi.encodeWithSelector(IAccountRegistry.AccountRegistryAlreadyRegistered.selector, a);
        }
        bool ok;
        bytes memory reason;
        vm.prank(a);
        try accounts.register() {
            ok = true;
        } catch (bytes memory r) {
            reason = r;
        }
        if (_settle("register", ok, reason, expected)) _accounts[a].registered = true;
    }

    /// @notice An actor mints test tokens, approves them and recharges (a zero amount must revert).
    function recharge(uint256 actorSeed, uint256 amount) external useTime {
        address a = _actor(actorSeed);
        amount = _bound(amount, 0, 100e6);
        token.mint(a, amount);
        vm.prank(a);
        token.approve(address(ledger), amount);
        bytes memory expected;
        if (amount == 0) expected = abi.encodeWithSelector(ICreditLedger.CreditLedgerZeroAmount.selector);
        // The test token's rate is 1e18: one base unit buys one credit unit.
        uint256 credits = ledger.creditsFor(address(token), amount);
        bool ok;
        bytes memory reason;
        vm.prank(a);
        try ledger.recharge(address(token), amount) returns (uint256 got) {
            ok = true;
            if (got != credits) _mismatch("recharge credits");
        } catch (bytes memory r) {
            reason = r;
        }
        if (_settle("recharge", ok, reason, expected)) _credit(a, credits);
    }

    /// @notice The payment oracle credits a card payment, with a fresh reference or one credited before.
    function creditFiat(uint256 actorSeed, uint256 credits, uint256 refSeed) external useTime {
        address a = _actor(actorSeed);
        credits = _bound(credits, 1, 100e6);
        // One call in four reuses a credited reference.
        bool reused = refSeed % 4 == 0 && _paymentRefs.length > 0;
        bytes32 ref = reused ? _paymentRefs[(refSeed >> 2) % _paymentRefs.length] : _freshRef("payment");
        bytes memory expected;
        if (reused) {
            ++reusedRefAttempts;
            expected = abi.encodeWithSelector(ICreditLedger.CreditLedgerPaymentRefUsed.selector, ref);
        }
        bool ok;
        bytes memory reason;
        vm.prank(oracle);
        try ledger.creditFiat(a, credits, ref) {
            ok = true;
        } catch (bytes memory r) {
            reason = r;
        }
        if (ok && reused) ++ghostReusedRefEffects;
        if (_settle("creditFiat", ok, reason, expected)) {
            _paymentRefs.push(ref);
            _credit(a, credits);
        }
    }

    /// @notice An actor buys 0 to 12 months of the Paid tier with its credits (0 must revert).
    function upgrade(uint256 actorSeed, uint256 months) external useTime {
        address a = _actor(actorSeed);
        months = _bound(months, 0, 12);
        GhostAccount storage g = _accounts[a];
        bool paidNow = _isPaid(a);
        uint256 cost = paidTierPrice * months;
        bytes memory expected;
        if (months == 0) {
            expected =
                abi.encodeWithSelector(IAccountRegistry.AccountRegistryInvalidMonths.selector, uint32(0));
        } else if (!g.registered) {
            expected = abi.encodeWithSelector(IAccountRegistry.AccountRegistryNotRegistered.selector, a);
        } else if (paidNow && g.tierExpiresAt == 0) {
            expected = abi.encodeWithSelector(IAccountRegistry.AccountRegistryPermanentlyPaid.selector, a);
        } else if (g.balance < cost) {
            expected = abi.encodeWithSelector(
                ICreditLedger.CreditLedgerInsufficientBalance.selector, a, g.balance, cost
            );
        }
        bool ok;
        bytes memory reason;
        vm.prank(a);
        // forge-lint: disable-next-line(unsafe-typecast)
        try accounts.upgrade(uint32(months)) {
            ok = true;
        } catch (bytes memory r) {
            reason = r;
        }
        if (_settle("upgrade", ok, reason, expected)) {
            g.tier = IAccountRegistry.Tier.Paid;
            // forge-lint: disable-next-line(unsafe-typecast)
            g.tierExpiresAt = (paidNow ? g.tierExpiresAt : uint64(block.timestamp)) + MONTH * uint64(months);
            g.balance -= cost;
            ghostDebited += cost;
        }
    }

    /// @notice The operator sets an actor's tier: Free, Paid for good, Paid until a future time, or Paid
    /// with an expiry that is not in the future (must revert).
    function setTier(uint256 actorSeed, bool paid, uint256 expirySeed) external useTime {
        address a = _actor(actorSeed);
        uint64 expiresAt;
        if (paid) {
            uint256 mode = expirySeed % 4;
            if (mode == 1) {
                expiresAt = uint64(block.timestamp);
            } else if (mode > 1) {
                expiresAt = uint64(block.timestamp + _bound(expirySeed >> 2, 1 hours, 400 days));
            }
        }
        IAccountRegistry.Tier tier = paid ? IAccountRegistry.Tier.Paid : IAccountRegistry.Tier.Free;
        bytes memory expected;
        if (!_accounts[a].registered) {
            expected = abi.encodeWithSelector(IAccountRegistry.AccountRegistryNotRegistered.selector, a);
        } else if (paid && expiresAt != 0 && expiresAt <= block.timestamp) {
            expected =
                abi.encodeWithSelector(IAccountRegistry.AccountRegistryInvalidExpiry.selector, expiresAt);
        }
        bool ok;
        bytes memory reason;
        vm.prank(operator);
        try accounts.setTier(a, tier, expiresAt) {
            ok = true;
        } catch (bytes memory r) {
            reason = r;
        }
        if (_settle("setTier", ok, reason, expected)) {
            _accounts[a].tier = tier;
            _accounts[a].tierExpiresAt = expiresAt;
        }
    }

    /// @notice Time passes: an hour to 200 days, so Free services (180 days) and Paid terms run out.
    function warp(uint256 secs) external {
        currentTime += _bound(secs, 1 hours, 200 days);
        vm.warp(currentTime);
        ++calls["warp"];
    }

    // ---------------------------------------------------------------------------------------------------
    // Services
    // ---------------------------------------------------------------------------------------------------

    /// @notice An actor (or the operator for it) creates a service of a random kind; tier limits apply.
    function createService(uint256 actorSeed, uint256 kindSeed, bool byOperator) external useTime {
        address owner = _actor(actorSeed);
        IServiceRegistry.ServiceKind kind = IServiceRegistry.ServiceKind(kindSeed % KINDS);
        IAccountRegistry.Tier tier = _tierOf(owner);
        uint32 limit = services.tierLimit(kind, tier);
        bytes memory expected;
        if (!_accounts[owner].registered) {
            expected =
                abi.encodeWithSelector(IServiceRegistry.ServiceRegistryAccountNotActive.selector, owner);
        } else if (ghostOpenServices[owner][kind] >= limit) {
            expected = abi.encodeWithSelector(
                IServiceRegistry.ServiceRegistryTierLimitExceeded.selector, owner, kind, limit
            );
        } else if (_accounts[owner].balance < services.priceFor(kind, tier)) {
            expected = abi.encodeWithSelector(
                IServiceRegistry.ServiceRegistryInsufficientCreditToOpen.selector,
                owner,
                kind,
                _accounts[owner].balance,
                services.priceFor(kind, tier)
            );
        }
        // The balance and price as the contracts themselves see them right before the call.
        bool unfunded = ledger.balanceOf(owner) < services.priceFor(kind, accounts.effectiveTier(owner));
        // The limit as the contract itself sees it right before the call.
        bool atLimit =
            services.openServices(owner, kind) >= services.tierLimit(kind, accounts.effectiveTier(owner));
        bytes32 ref = keccak256(abi.encode("service", ghostServiceCount + 1));
        bool ok;
        bytes memory reason;
        uint256 id;
        if (byOperator) {
            vm.prank(operator);
            try services.createServiceFor(owner, kind, ref) returns (uint256 newId) {
                (ok, id) = (true, newId);
            } catch (bytes memory r) {
                reason = r;
            }
        } else {
            vm.prank(owner);
            try services.createService(kind, ref) returns (uint256 newId) {
                (ok, id) = (true, newId);
            } catch (bytes memory r) {
                reason = r;
            }
        }
        if (ok && atLimit) ++ghostLimitViolations;
        if (ok && unfunded) ++ghostUnfundedOpens;
        if (_settle("createService", ok, reason, expected)) {
            if (id != ghostServiceCount + 1) _mismatch("createService id");
            ghostServiceCount = id;
            uint64 expiresAt =
                tier == IAccountRegistry.Tier.Free ? uint64(block.timestamp) + freeTierDuration : 0;
            _services[id] = GhostService(owner, kind, IServiceRegistry.ServiceState.Active, expiresAt);
            ++ghostOpenServices[owner][kind];
        }
    }

    /// @notice The owner, the operator or another actor pauses a service.
    function pause(uint256 idSeed, uint256 who) external useTime {
        uint256 id = _pickService(idSeed, ACTIVE);
        address caller = _serviceCaller(id, who);
        bytes memory expected = _ownedOrOperatedError(id, caller);
        IServiceRegistry.ServiceState state = _services[id].state;
        if (expected.length == 0 && state != IServiceRegistry.ServiceState.Active) {
            expected =
                abi.encodeWithSelector(IServiceRegistry.ServiceRegistryInvalidState.selector, id, state);
        }
        bool ok;
        bytes memory reason;
        vm.prank(caller);
        try services.pause(id) {
            ok = true;
        } catch (bytes memory r) {
            reason = r;
        }
        _checkServiceAuth(ok, id, caller, true);
        if (_settle("pause", ok, reason, expected)) {
            _services[id].state = IServiceRegistry.ServiceState.Paused;
        }
    }

    /// @notice The owner, the operator or another actor resumes a service.
    function resume(uint256 idSeed, uint256 who) external useTime {
        uint256 id = _pickService(idSeed, PAUSED | SUSPENDED);
        address caller = _serviceCaller(id, who);
        bytes memory expected = _ownedOrOperatedError(id, caller);
        if (expected.length == 0) expected = _resumeError(id);
        bool ok;
        bytes memory reason;
        vm.prank(caller);
        try services.resume(id) {
            ok = true;
        } catch (bytes memory r) {
            reason = r;
        }
        _checkServiceAuth(ok, id, caller, true);
        if (_settle("resume", ok, reason, expected)) {
            _services[id].state = IServiceRegistry.ServiceState.Active;
        }
    }

    /// @notice The operator (or, in vain, an actor) suspends a service.
    function suspend(uint256 idSeed, uint256 who) external useTime {
        uint256 id = _pickService(idSeed, ACTIVE | PAUSED);
        address owner = _services[id].owner;
        address caller =
            who % 3 == 1 ? operator : (who % 3 == 0 && owner != address(0) ? owner : _actor(who >> 2));
        bytes memory expected;
        IServiceRegistry.ServiceState state = _services[id].state;
        if (caller != operator) {
            expected = abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, caller, services.OPERATOR_ROLE()
            );
        } else if (id == 0 || id > ghostServiceCount) {
            expected = abi.encodeWithSelector(IServiceRegistry.ServiceRegistryUnknownService.selector, id);
        } else if (
            state != IServiceRegistry.ServiceState.Active && state != IServiceRegistry.ServiceState.Paused
        ) {
            expected =
                abi.encodeWithSelector(IServiceRegistry.ServiceRegistryInvalidState.selector, id, state);
        }
        bool ok;
        bytes memory reason;
        vm.prank(caller);
        try services.suspend(id) {
            ok = true;
        } catch (bytes memory r) {
            reason = r;
        }
        // Only the operator may suspend, even the owner may not.
        _checkServiceAuth(ok, id, caller, false);
        if (_settle("suspend", ok, reason, expected)) {
            _services[id].state = IServiceRegistry.ServiceState.Suspended;
        }
    }

    /// @notice The owner, the operator or another actor cancels a service.
    function cancel(uint256 idSeed, uint256 who) external useTime {
        uint256 id = _pickService(idSeed, ACTIVE | PAUSED | SUSPENDED);
        address caller = _serviceCaller(id, who);
        bytes memory expected = _ownedOrOperatedError(id, caller);
        IServiceRegistry.ServiceState state = _services[id].state;
        if (expected.length == 0 && state == IServiceRegistry.ServiceState.Cancelled) {
            expected =
                abi.encodeWithSelector(IServiceRegistry.ServiceRegistryInvalidState.selector, id, state);
        }
        bool ok;
        bytes memory reason;
        vm.prank(caller);
        try services.cancel(id) {
            ok = true;
        } catch (bytes memory r) {
            reason = r;
        }
        _checkServiceAuth(ok, id, caller, true);
        if (_settle("cancel", ok, reason, expected)) {
            GhostService storage s = _services[id];
            s.state = IServiceRegistry.ServiceState.Cancelled;
            ghostCancelled[id] = true;
            --ghostOpenServices[s.owner][s.kind];
        }
    }

    // ---------------------------------------------------------------------------------------------------
    // Billing
    // ---------------------------------------------------------------------------------------------------

    /// @notice Billing charges one usage: of a service (its owner's, or someone else's) or of no service,
    /// with a fresh usage reference or one charged before.
    function deduct(uint256 idSeed, uint256 accountSeed, uint256 credits, uint256 refSeed) external useTime {
        Item[] memory items = new Item[](1);
        items[0] = _item(idSeed, accountSeed, _bound(credits, 1, 20e6));
        // One call in four reuses a charged reference.
        if (refSeed % 4 == 0 && _usageRefs.length > 0) {
            ++reusedRefAttempts;
            items[0].usageRef = _usageRefs[(refSeed >> 2) % _usageRefs.length];
        }
        Item memory it = items[0];
        uint256 balance = _accounts[it.account].balance;
        bytes memory expected;
        if (_usageRefUsed[it.usageRef]) {
            expected = abi.encodeWithSelector(ICreditLedger.CreditLedgerUsageRefUsed.selector, it.usageRef);
        } else if (!_isChargeable(it.account, it.serviceId)) {
            expected = abi.encodeWithSelector(
                ICreditLedger.CreditLedgerServiceNotChargeable.selector, it.serviceId, it.account
            );
        } else if (balance < it.credits) {
            expected = abi.encodeWithSelector(
                ICreditLedger.CreditLedgerInsufficientBalance.selector, it.account, balance, it.credits
            );
        }
        bool[] memory chargeable = _chargeableNow(items);
        bool ok;
        bytes memory reason;
        vm.recordLogs();
        vm.prank(billing);
        try ledger.deduct(it.account, it.serviceId, it.credits, it.usageRef) {
            ok = true;
        } catch (bytes memory r) {
            reason = r;
        }
        Vm.Log[] memory logs = vm.getRecordedLogs();
        if (ok) _auditCharges(logs, items, chargeable);
        if (_settle("deduct", ok, reason, expected)) {
            _accounts[it.account].balance = balance - it.credits;
            ghostDebited += it.credits;
            _useUsageRef(it.usageRef);
        }
    }

    /// @notice Billing charges a batch of 1 to 8 usages across actors and services; some batches reuse a
    /// usage reference charged before, or repeat one inside the batch.
    function deductBatch(uint256 seed, uint256 n) external useTime {
        Item[] memory items = _batchItems(seed, _bound(n, 1, MAX_BATCH));
        (bytes memory expected, uint256[ACTORS] memory balances, uint256 debited) = _modelBatch(items);
        bool[] memory chargeable = _chargeableNow(items);
        (address[] memory accts, uint256[] memory ids, uint256[] memory credits, bytes32[] memory refs) =
            _columns(items);
        bool ok;
        bytes memory reason;
        vm.recordLogs();
        vm.prank(billing);
        try ledger.deductBatch(accts, ids, credits, refs) {
            ok = true;
        } catch (bytes memory r) {
            reason = r;
        }
        Vm.Log[] memory logs = vm.getRecordedLogs();
        if (ok) _auditCharges(logs, items, chargeable);
        if (_settle("deductBatch", ok, reason, expected)) {
            for (uint256 i; i < ACTORS; ++i) {
                _accounts[_actors[i]].balance = balances[i];
            }
            ghostDebited += debited;
            for (uint256 i; i < items.length; ++i) {
                if (_isChargeable(items[i].account, items[i].serviceId)) _useUsageRef(items[i].usageRef);
            }
        }
    }

    // ---------------------------------------------------------------------------------------------------
    // Domains
    // ---------------------------------------------------------------------------------------------------

    /// @notice The registrar records a purchase for an actor (sometimes of an invalid name, or with an
    /// expiry that is not in the future).
    function purchaseDomain(uint256 nameSeed, uint256 ownerSeed, uint256 expirySeed) external useTime {
        (string memory name, bool valid) = _name(nameSeed);
        bytes32 node = keccak256(bytes(name));
        address owner = _actor(ownerSeed);
        uint64 expiresAt = expirySeed % 8 == 0
            ? uint64(block.timestamp)
            : uint64(block.timestamp + _bound(expirySeed >> 3, 1 hours, 400 days));
        IDomainRegistry.Domain storage d = _domains[node];
        bytes memory expected;
        if (expiresAt <= block.timestamp) {
            expected = abi.encodeWithSelector(IDomainRegistry.DomainRegistryInvalidExpiry.selector, expiresAt);
        } else if (!valid) {
            expected = abi.encodeWithSelector(IDomainRegistry.DomainRegistryInvalidName.selector, name);
        } else if (d.method == IDomainRegistry.OwnershipMethod.Purchase && _isHeld(node)) {
            expected = abi.encodeWithSelector(IDomainRegistry.DomainRegistryUnavailable.selector, node);
        }
        bool ok;
        bytes memory reason;
        vm.prank(registrar);
        try domains.recordPurchase(name, owner, expiresAt) returns (bytes32 got) {
            ok = true;
            if (got != node) _mismatch("purchaseDomain node");
        } catch (bytes memory r) {
            reason = r;
        }
        if (_settle("purchaseDomain", ok, reason, expected)) {
            _domains[node] =
                IDomainRegistry.Domain(owner, IDomainRegistry.OwnershipMethod.Purchase, expiresAt, 0);
        }
    }

    /// @notice The verifier records an ownership proof for an actor (sometimes with a method that cannot
    /// be recorded this way, or of an invalid name).
    function verifyDomain(uint256 nameSeed, uint256 ownerSeed, uint256 methodSeed) external useTime {
        (string memory name, bool valid) = _name(nameSeed);
        bytes32 node = keccak256(bytes(name));
        address owner = _actor(ownerSeed);
        IDomainRegistry.OwnershipMethod method = methodSeed % 8 < 6
            ? IDomainRegistry.OwnershipMethod(2 + methodSeed % 3)
            : IDomainRegistry.OwnershipMethod(methodSeed % 2);
        IDomainRegistry.Domain storage d = _domains[node];
        bytes memory expected;
        if (
            method == IDomainRegistry.OwnershipMethod.None
                || method == IDomainRegistry.OwnershipMethod.Purchase
        ) {
            expected = abi.encodeWithSelector(IDomainRegistry.DomainRegistryInvalidMethod.selector, method);
        } else if (!valid) {
            expected = abi.encodeWithSelector(IDomainRegistry.DomainRegistryInvalidName.selector, name);
        } else if (d.method == IDomainRegistry.OwnershipMethod.Purchase && _isHeld(node)) {
            expected = abi.encodeWithSelector(IDomainRegistry.DomainRegistryUnavailable.selector, node);
        }
        bool ok;
        bytes memory reason;
        vm.prank(verifier);
        try domains.recordVerification(name, owner, method) returns (bytes32 got) {
            ok = true;
            if (got != node) _mismatch("verifyDomain node");
        } catch (bytes memory r) {
            reason = r;
        }
        if (_settle("verifyDomain", ok, reason, expected)) {
            // The same owner proving again keeps its link; a new owner, or a stale purchase, starts unlinked.
            if (d.owner != owner || d.method == IDomainRegistry.OwnershipMethod.Purchase) d.serviceId = 0;
            d.owner = owner;
            d.method = method;
            d.expiresAt = 0;
        }
    }

    /// @notice The owner (or, in vain, the verifier or another actor) links a domain to a service, mostly
    /// one of the owner's.
    function link(uint256 nameSeed, uint256 who, uint256 idSeed) external useTime {
        bytes32 node = _pickNode(nameSeed, false);
        IDomainRegistry.Domain storage d = _domains[node];
        address caller = _domainCaller(d.owner, who);
        uint256 id = idSeed % 4 == 0 ? _serviceId(idSeed >> 2) : _serviceOf(d.owner, idSeed >> 2);
        bytes memory expected = _heldByError(node, caller, false);
        if (expected.length == 0 && !_isLinkable(d.owner, id)) {
            expected = abi.encodeWithSelector(IDomainRegistry.DomainRegistryInvalidService.selector, id);
        }
        bool ok;
        bytes memory reason;
        vm.prank(caller);
        try domains.link(node, id) {
            ok = true;
        } catch (bytes memory r) {
            reason = r;
        }
        _checkDomainAuth(ok, d.owner, caller, false);
        if (_settle("link", ok, reason, expected)) d.serviceId = id;
    }

    /// @notice The owner, the verifier or another actor unlinks a domain.
    function unlink(uint256 nameSeed, uint256 who) external useTime {
        bytes32 node = _pickNode(nameSeed, true);
        IDomainRegistry.Domain storage d = _domains[node];
        address caller = _domainCaller(d.owner, who);
        bytes memory expected = _heldByError(node, caller, true);
        if (expected.length == 0 && d.serviceId == 0) {
            expected = abi.encodeWithSelector(IDomainRegistry.DomainRegistryNotLinked.selector, node);
        }
        bool ok;
        bytes memory reason;
        vm.prank(caller);
        try domains.unlink(node) {
            ok = true;
        } catch (bytes memory r) {
            reason = r;
        }
        _checkDomainAuth(ok, d.owner, caller, d.method != IDomainRegistry.OwnershipMethod.Purchase);
        if (_settle("unlink", ok, reason, expected)) d.serviceId = 0;
    }

    /// @notice The owner, the verifier or another actor releases a domain.
    function release(uint256 nameSeed, uint256 who) external useTime {
        bytes32 node = _pickNode(nameSeed, false);
        address owner = _domains[node].owner;
        bool isExternal = _domains[node].method != IDomainRegistry.OwnershipMethod.Purchase;
        address caller = _domainCaller(owner, who);
        bytes memory expected = _heldByError(node, caller, true);
        bool ok;
        bytes memory reason;
        vm.prank(caller);
        try domains.release(node) {
            ok = true;
        } catch (bytes memory r) {
            reason = r;
        }
        _checkDomainAuth(ok, owner, caller, isExternal);
        if (_settle("release", ok, reason, expected)) delete _domains[node];
    }

    /// @notice The owner (or, in vain, the verifier or another actor) transfers a domain to an actor.
    function transferDomain(uint256 nameSeed, uint256 who, uint256 toSeed) external useTime {
        bytes32 node = _pickNode(nameSeed, false);
        IDomainRegistry.Domain storage d = _domains[node];
        address caller = _domainCaller(d.owner, who);
        address to = _actor(toSeed);
        bytes memory expected = _heldByError(node, caller, false);
        if (expected.length == 0 && d.method != IDomainRegistry.OwnershipMethod.Purchase) {
            expected = abi.encodeWithSelector(IDomainRegistry.DomainRegistryNotPurchased.selector, node);
        }
        bool ok;
        bytes memory reason;
        vm.prank(caller);
        try domains.transfer(node, to) {
            ok = true;
        } catch (bytes memory r) {
            reason = r;
        }
        _checkDomainAuth(ok, d.owner, caller, false);
        if (_settle("transferDomain", ok, reason, expected)) {
            d.owner = to;
            d.serviceId = 0;
        }
    }

    // ---------------------------------------------------------------------------------------------------
    // Strangers
    // ---------------------------------------------------------------------------------------------------

    /// @notice A stranger (registered nowhere, holding no role) tries to change a service, a domain, a
    /// balance or a tier. Every attempt must revert.
    function strangerAct(uint256 action, uint256 seed) external useTime {
        address s = _strangers[seed % 2];
        uint256 id = _serviceId(seed >> 1);
        bytes32 node = _validNode(seed >> 9);
        address victim = _actor(seed >> 17);
        bytes32 ref = _freshRef("stranger");
        action %= 17;
        bool ok;
        vm.prank(s);
        if (action == 0) {
            try services.pause(id) {
                ok = true;
            } catch {}
        } else if (action == 1) {
            try services.resume(id) {
                ok = true;
            } catch {}
        } else if (action == 2) {
            try services.cancel(id) {
                ok = true;
            } catch {}
        } else if (action == 3) {
            try services.suspend(id) {
                ok = true;
            } catch {}
        } else if (action == 4) {
            try services.setExpiry(id, 0) {
                ok = true;
            } catch {}
        } else if (action == 5) {
            try services.createServiceFor(victim, IServiceRegistry.ServiceKind.StaticHosting, ref) {
                ok = true;
            } catch {}
        } else if (action == 6) {
            try services.createService(IServiceRegistry.ServiceKind.StaticHosting, ref) {
                ok = true;
            } catch {}
        } else if (action == 7) {
            try ledger.deduct(victim, 0, 1, ref) {
                ok = true;
            } catch {}
        } else if (action == 8) {
            try ledger.creditFiat(s, 1e6, ref) {
                ok = true;
            } catch {}
        } else if (action == 9) {
            try accounts.setTier(victim, IAccountRegistry.Tier.Paid, 0) {
                ok = true;
            } catch {}
        } else if (action == 10) {
            try accounts.upgrade(1) {
                ok = true;
            } catch {}
        } else if (action == 11) {
            try domains.link(node, id) {
                ok = true;
            } catch {}
        } else if (action == 12) {
            try domains.unlink(node) {
                ok = true;
            } catch {}
        } else if (action == 13) {
            try domains.release(node) {
                ok = true;
            } catch {}
        } else if (action == 14) {
            try domains.transfer(node, s) {
                ok = true;
            } catch {}
        } else if (action == 15) {
            try domains.recordPurchase(_names[seed % NAMES], s, uint64(block.timestamp + 365 days)) {
                ok = true;
            } catch {}
        } else {
            try domains.recordVerification(_names[seed % NAMES], s, IDomainRegistry.OwnershipMethod.Dns) {
                ok = true;
            } catch {}
        }
        ++unauthorizedAttempts;
        ++calls["strangerAct"];
        if (ok) {
            ++successes["strangerAct"];
            ++ghostUnauthorizedChanges;
        }
    }

    // ---------------------------------------------------------------------------------------------------
    // Views for the invariants
    // ---------------------------------------------------------------------------------------------------

    /// @notice The actor at `i`.
    function actor(uint256 i) external view returns (address) {
        return _actors[i];
    }

    /// @notice The model's balance of an account.
    function ghostBalance(address account) external view returns (uint256) {
        return _accounts[account].balance;
    }

    /// @notice The model's state of a service.
    function ghostState(uint256 serviceId) external view returns (IServiceRegistry.ServiceState) {
        return _services[serviceId].state;
    }

    /// @notice The model's record of a domain.
    function ghostDomain(bytes32 node) external view returns (IDomainRegistry.Domain memory) {
        return _domains[node];
    }

    /// @notice The node of the name at `i`.
    function nodeAt(uint256 i) external view returns (bytes32) {
        return keccak256(bytes(_names[i]));
    }

    /// @notice Every payment and usage reference credited or charged so far.
    function usedRefs() external view returns (bytes32[] memory payments, bytes32[] memory usages) {
        return (_paymentRefs, _usageRefs);
    }

    // ---------------------------------------------------------------------------------------------------
    // The model
    // ---------------------------------------------------------------------------------------------------

    function _isPaid(address a) internal view returns (bool) {
        GhostAccount storage g = _accounts[a];
        return
            g.tier == IAccountRegistry.Tier.Paid
                && (g.tierExpiresAt == 0 || g.tierExpiresAt > block.timestamp);
    }

    function _tierOf(address a) internal view returns (IAccountRegistry.Tier) {
        return _isPaid(a) ? IAccountRegistry.Tier.Paid : IAccountRegistry.Tier.Free;
    }

    function _isExpired(uint256 id) internal view returns (bool) {
        GhostService storage s = _services[id];
        return s.expiresAt != 0 && block.timestamp >= s.expiresAt && !_isPaid(s.owner);
    }

    /// @dev The model's view of whether `account` may be charged for `id` now.
    function _isChargeable(address account, uint256 id) internal view returns (bool) {
        if (id == 0) return true;
        GhostService storage s = _services[id];
        return s.owner == account && s.state == IServiceRegistry.ServiceState.Active && !_isExpired(id);
    }

    function _isHeld(bytes32 node) internal view returns (bool) {
        IDomainRegistry.Domain storage d = _domains[node];
        return d.method != IDomainRegistry.OwnershipMethod.None
            && (d.method != IDomainRegistry.OwnershipMethod.Purchase || d.expiresAt > block.timestamp);
    }

    function _isLinkable(address domainOwner, uint256 id) internal view returns (bool) {
        GhostService storage s = _services[id];
        bool hosting = s.kind == IServiceRegistry.ServiceKind.StaticHosting
            || s.kind == IServiceRegistry.ServiceKind.DynamicHosting;
        return id != 0 && id <= ghostServiceCount && s.owner == domainOwner && hosting
            && s.state != IServiceRegistry.ServiceState.Cancelled;
    }

    function _ownedOrOperatedError(uint256 id, address caller) internal view returns (bytes memory) {
        if (id == 0 || id > ghostServiceCount) {
            return abi.encodeWithSelector(IServiceRegistry.ServiceRegistryUnknownService.selector, id);
        }
        if (caller != _services[id].owner && caller != operator) {
            return abi.encodeWithSelector(IServiceRegistry.ServiceRegistryNotOwner.selector, id, caller);
        }
        return "";
    }

    function _resumeError(uint256 id) internal view returns (bytes memory) {
        GhostService storage s = _services[id];
        if (
            s.state != IServiceRegistry.ServiceState.Paused
                && s.state != IServiceRegistry.ServiceState.Suspended
        ) {
            return abi.encodeWithSelector(IServiceRegistry.ServiceRegistryInvalidState.selector, id, s.state);
        }
        if (_isExpired(id)) {
            return
                abi.encodeWithSelector(
                    IServiceRegistry.ServiceRegistryServiceExpired.selector, id, s.expiresAt
                );
        }
        uint256 hourly = services.priceFor(s.kind, _tierOf(s.owner));
        uint256 balance = _accounts[s.owner].balance;
        if (balance < hourly) {
            return abi.encodeWithSelector(
                IServiceRegistry.ServiceRegistryInsufficientCredit.selector, id, balance, hourly
            );
        }
        return "";
    }

    function _heldByError(bytes32 node, address caller, bool verifierMayAct)
        internal
        view
        returns (bytes memory)
    {
        if (!_isHeld(node)) {
            return abi.encodeWithSelector(IDomainRegistry.DomainRegistryNotHeld.selector, node);
        }
        // The verifier acts only on external names: a running purchase is the registrar's record.
        bool verifierActs = verifierMayAct && caller == verifier
            && _domains[node].method != IDomainRegistry.OwnershipMethod.Purchase;
        if (caller != _domains[node].owner && !verifierActs) {
            return abi.encodeWithSelector(IDomainRegistry.DomainRegistryNotOwner.selector, node, caller);
        }
        return "";
    }

    /// @dev The model's outcome of a batch: the revert it must end in (none if it succeeds), the balances
    /// after it and the credits it charges. A skipped item does not claim its reference.
    function _modelBatch(Item[] memory items)
        internal
        view
        returns (bytes memory expected, uint256[ACTORS] memory balances, uint256 debited)
    {
        for (uint256 i; i < ACTORS; ++i) {
            balances[i] = _accounts[_actors[i]].balance;
        }
        bytes32[] memory claimed = new bytes32[](items.length);
        for (uint256 i; i < items.length; ++i) {
            Item memory it = items[i];
            if (!_isChargeable(it.account, it.serviceId)) continue;
            if (_usageRefUsed[it.usageRef] || _contains(claimed, i, it.usageRef)) {
                return (
                    abi.encodeWithSelector(ICreditLedger.CreditLedgerUsageRefUsed.selector, it.usageRef),
                    balances,
                    0
                );
            }
            claimed[i] = it.usageRef;
            uint256 k = _indexOf(it.account);
            uint256 charged = it.credits < balances[k] ? it.credits : balances[k];
            balances[k] -= charged;
            debited += charged;
        }
    }

    // ---------------------------------------------------------------------------------------------------
    // Checks against the contracts
    // ---------------------------------------------------------------------------------------------------

    /// @dev Compares a call's outcome with the model's prediction; true when the model must apply it.
    function _settle(string memory action, bool ok, bytes memory reason, bytes memory expected)
        internal
        returns (bool)
    {
        ++calls[action];
        if (ok) ++successes[action];
        bool expectOk = expected.length == 0;
        if (ok != expectOk || (!ok && !reason._eq(expected))) _mismatch(action);
        return ok && expectOk;
    }

    function _mismatch(string memory action) internal {
        ++ghostMismatches;
        lastMismatch = action;
    }

    /// @dev Whether each item's service is chargeable right before the call, read from the registries' raw
    /// records (state, expiry, owner) rather than from the ledger's own check.
    function _chargeableNow(Item[] memory items) internal view returns (bool[] memory chargeable) {
        chargeable = new bool[](items.length);
        for (uint256 i; i < items.length; ++i) {
            uint256 id = items[i].serviceId;
            if (id == 0) {
                chargeable[i] = true;
                continue;
            }
            IServiceRegistry.Service memory svc = services.serviceOf(id);
            chargeable[i] = svc.owner == items[i].account && svc.state == IServiceRegistry.ServiceState.Active
                && !services.isExpired(id);
        }
    }

    /// @dev Walks the ledger's events of a successful charge, item by item (each emits CreditsDeducted or
    /// DeductionSkipped), and counts every charge of a service that was not chargeable or under a reference
    /// charged before.
    function _auditCharges(Vm.Log[] memory logs, Item[] memory items, bool[] memory chargeable) internal {
        bytes32[] memory charged = new bytes32[](items.length);
        uint256 i;
        for (uint256 j; j < logs.length; ++j) {
            Vm.Log memory log = logs[j];
            if (log.emitter != address(ledger)) continue;
            bytes32 topic = log.topics[0];
            if (topic == ICreditLedger.DeductionSkipped.selector) {
                ++skippedItems;
                ++i;
            } else if (topic == ICreditLedger.CreditsDeducted.selector) {
                if (i >= items.length) {
                    _mismatch("charge event without item");
                    return;
                }
                (,, bytes32 usageRef) = abi.decode(log.data, (uint256, uint256, bytes32));
                if (uint256(log.topics[2]) != 0) {
                    ++serviceCharges;
                    if (!chargeable[i]) ++ghostUnchargeableCharges;
                }
                if (_usageRefUsed[usageRef] || _contains(charged, i, usageRef)) ++ghostReusedRefEffects;
                charged[i] = usageRef;
                ++i;
            }
        }
        if (i != items.length) _mismatch("items without event");
    }

    function _checkServiceAuth(bool ok, uint256 id, address caller, bool ownerMayAct) internal {
        bool authorized = caller == operator || (ownerMayAct && caller == _services[id].owner);
        if (!authorized) ++unauthorizedAttempts;
        if (ok && !authorized) ++ghostUnauthorizedChanges;
    }

    function _checkDomainAuth(bool ok, address owner, address caller, bool verifierMayAct) internal {
        bool authorized = caller == owner || (verifierMayAct && caller == verifier);
        if (!authorized) ++unauthorizedAttempts;
        if (ok && !authorized) ++ghostUnauthorizedChanges;
    }

    // ---------------------------------------------------------------------------------------------------
    // Inputs
    // ---------------------------------------------------------------------------------------------------

    function _actor(uint256 seed) internal view returns (address) {
        return _actors[seed % ACTORS];
    }

    function _indexOf(address a) internal view returns (uint256) {
        for (uint256 i; i < ACTORS; ++i) {
            if (_actors[i] == a) return i;
        }
        revert("not an actor");
    }

    /// @dev A service id: mostly an existing one, sometimes the next one, which does not exist yet.
    function _serviceId(uint256 seed) internal view returns (uint256) {
        return 1 + seed % (ghostServiceCount + 1);
    }

    /// @dev Half the time any id (see `_serviceId`), else one whose model state is in `states` (a bit mask
    /// of ServiceState values), so that actions mostly meet services they can act on.
    function _pickService(uint256 seed, uint256 states) internal view returns (uint256) {
        if (seed % 2 == 0) return _serviceId(seed >> 1);
        uint256 count;
        for (uint256 id = 1; id <= ghostServiceCount; ++id) {
            if (states & (uint256(2) ** uint8(_services[id].state)) != 0) ++count;
        }
        if (count == 0) return _serviceId(seed >> 1);
        uint256 pick = (seed >> 1) % count;
        for (uint256 id = 1; id <= ghostServiceCount; ++id) {
            if (states & (uint256(2) ** uint8(_services[id].state)) == 0) continue;
            if (pick == 0) return id;
            --pick;
        }
        return 0; // unreachable
    }

    /// @dev Half the time any name's node, else the node of a held name (a linked one if `linked`).
    function _pickNode(uint256 seed, bool linked) internal view returns (bytes32) {
        bytes32 any = _validNode(seed >> 1);
        if (seed % 2 == 0) return any;
        for (uint256 i; i < NAMES; ++i) {
            bytes32 node = _validNode((seed >> 1) + i);
            if (_isHeld(node) && (!linked || _domains[node].serviceId != 0)) return node;
        }
        return any;
    }

    /// @dev One of `owner`'s services, a linkable one (hosting, not cancelled) when it has some, else any of
    /// its services, else any id.
    function _serviceOf(address owner, uint256 seed) internal view returns (uint256) {
        (uint256 linkable, uint256 owned) = (0, 0);
        for (uint256 id = 1; id <= ghostServiceCount; ++id) {
            if (_services[id].owner != owner) continue;
            ++owned;
            if (_isLinkable(owner, id)) ++linkable;
        }
        if (owned == 0) return _serviceId(seed);
        bool onlyLinkable = linkable > 0;
        uint256 pick = seed % (onlyLinkable ? linkable : owned);
        for (uint256 id = 1; id <= ghostServiceCount; ++id) {
            if (_services[id].owner != owner || (onlyLinkable && !_isLinkable(owner, id))) continue;
            if (pick == 0) return id;
            --pick;
        }
        return 0; // unreachable
    }

    /// @dev Who acts on a service: its owner (half the time), the operator, or another actor.
    function _serviceCaller(uint256 id, uint256 who) internal view returns (address) {
        address owner = _services[id].owner;
        uint256 w = who % 4;
        if (w == 2) return operator;
        if (owner == address(0)) return _actor(who >> 2);
        if (w == 3) return _actors[(_indexOf(owner) + 1 + (who >> 2) % (ACTORS - 1)) % ACTORS];
        return owner;
    }

    /// @dev Who acts on a domain: its owner (half the time), the verifier, or another actor.
    function _domainCaller(address owner, uint256 who) internal view returns (address) {
        uint256 w = who % 4;
        if (w == 2) return verifier;
        if (owner == address(0)) return _actor(who >> 2);
        if (w == 3) return _actors[(_indexOf(owner) + 1 + (who >> 2) % (ACTORS - 1)) % ACTORS];
        return owner;
    }

    function _name(uint256 seed) internal view returns (string memory name, bool valid) {
        uint256 k = seed % (NAMES + 1);
        return k == NAMES ? (INVALID_NAME, false) : (_names[k], true);
    }

    function _validNode(uint256 seed) internal view returns (bytes32) {
        return keccak256(bytes(_names[seed % NAMES]));
    }

    function _freshRef(string memory kind) internal returns (bytes32) {
        return keccak256(abi.encode(kind, ++_refNonce));
    }

    /// @dev A usage: of no service (1 in 5), else of a service, charged to its owner (3 in 4) or to another
    /// actor; always under a fresh reference.
    function _item(uint256 idSeed, uint256 accountSeed, uint256 credits) internal returns (Item memory it) {
        it.serviceId = idSeed % 5 == 0 ? 0 : _pickService(idSeed / 5, ACTIVE);
        address owner = _services[it.serviceId].owner;
        it.account = accountSeed % 4 != 0 && owner != address(0) ? owner : _actor(accountSeed >> 2);
        it.credits = credits;
        it.usageRef = _freshRef("usage");
    }

    /// @dev The items of a batch; in a quarter of batches one item reuses a charged reference, in another
    /// quarter one item repeats another item's reference.
    function _batchItems(uint256 seed, uint256 n) internal returns (Item[] memory items) {
        items = new Item[](n);
        for (uint256 i; i < n; ++i) {
            uint256 r = uint256(keccak256(abi.encode(seed, i)));
            items[i] = _item(r, r >> 64, 1 + (r >> 128) % 20e6);
        }
        uint256 mode = seed % 4;
        uint256 k = (seed >> 2) % n;
        if (mode == 2 && _usageRefs.length > 0) {
            ++reusedRefAttempts;
            items[k].usageRef = _usageRefs[(seed >> 8) % _usageRefs.length];
        } else if (mode == 3 && n > 1) {
            ++reusedRefAttempts;
            items[k].usageRef = items[(k + 1) % n].usageRef;
        }
    }

    function _columns(Item[] memory items)
        internal
        pure
        returns (
            address[] memory accts,
            uint256[] memory ids,
            uint256[] memory credits,
            bytes32[] memory refs
        )
    {
        uint256 n = items.length;
        (accts, ids, credits, refs) = (new address[](n), new uint256[](n), new uint256[](n), new bytes32[](n));
        for (uint256 i; i < n; ++i) {
            (accts[i], ids[i], credits[i], refs[i]) =
            (items[i].account, items[i].serviceId, items[i].credits, items[i].usageRef);
        }
    }

    function _credit(address a, uint256 credits) internal {
        _accounts[a].balance += credits;
        ghostCredited += credits;
    }

    function _useUsageRef(bytes32 ref) internal {
        _usageRefUsed[ref] = true;
        _usageRefs.push(ref);
    }

    function _contains(bytes32[] memory refs, uint256 upTo, bytes32 ref) internal pure returns (bool) {
        for (uint256 i; i < upTo; ++i) {
            if (refs[i] == ref) return true;
        }
        return false;
    }
}

function _eq(bytes memory a, bytes memory b) pure returns (bool) {
    return keccak256(a) == keccak256(b);
}
