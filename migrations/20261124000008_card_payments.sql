-- Card payments through Paystack, from initialization to the on-chain credit.

-- Credit units per subunit of each currency (kobo, pesewas, cents), set by admins.
create table fiat_rates (
    currency text primary key,
    credits_per_subunit numeric(78, 0) not null check (credits_per_subunit > 0),
    updated_by bytea not null,
    updated_at timestamptz not null default now()
);
-- Every change of a rate, for audit.
create table fiat_rate_changes (
    id bigserial primary key,
    currency text not null,
    credits_per_subunit numeric(78, 0) not null,
    changed_by bytea not null,
    changed_at timestamptz not null default now()
);

create table card_payments (
    reference text primary key,
    chain_id bigint not null,
    account bytea not null,
    currency text not null,
    -- in the currency's subunit
    amount bigint not null,
    -- credit units the payment buys, fixed at initialization
    credits numeric(78, 0) not null,
    -- initialized | paid (webhook received, to confirm) | crediting (creditFiat sent)
    -- | credited (indexed) | failed | flagged (paid, but not as initialized: needs a person)
    status text not null,
    reason text,
    authorization_url text not null,
    tx_hash bytea,
    attempts integer not null default 0,
    next_attempt_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create index card_payments_by_account on card_payments (account, created_at desc);
create index card_payments_due on card_payments (next_attempt_at) where status in ('paid', 'crediting');

-- Webhook deliveries, once each (by the body's hash).
create table paystack_deliveries (
    body_hash bytea primary key,
    event text not null,
    reference text,
    received_at timestamptz not null default now()
);
