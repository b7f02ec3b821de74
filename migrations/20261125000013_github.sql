-- GitHub accounts linked to platform accounts, and the sites they deploy.

create table github_accounts (
    id bigserial primary key,
    chain_id bigint not null,
    account bytea not null,
    -- GitHub's user id (stable across renames) and login at link time
    github_id bigint not null,
    login text not null,
    -- the user token, sealed with AES-256-GCM (nonce || ciphertext || tag); never stored in clear
    token_sealed bytea not null,
    linked_at timestamptz not null default now(),
    unlinked_at timestamptz
);
-- A GitHub identity is linked to one platform account at a time.
create unique index github_accounts_linked on github_accounts (chain_id, github_id)
    where unlinked_at is null;
create index github_accounts_by_account on github_accounts (chain_id, account)
    where unlinked_at is null;

-- A site deployed from GitHub: its repository, production branch and the link it fetches with.
alter table sites add column repository text;
alter table sites add column branch text;
alter table sites add column github_account_id bigint references github_accounts (id);
create index sites_by_repository on sites (repository, branch) where repository is not null;

alter table deployments add column github_account_id bigint references github_accounts (id);

-- Webhook deliveries seen, by GitHub's delivery id: a redelivery is answered, not acted on.
create table github_deliveries (
    chain_id bigint not null,
    delivery_id text not null,
    event text not null,
    received_at timestamptz not null default now(),
    deployments integer not null default 0,
    primary key (chain_id, delivery_id)
);
