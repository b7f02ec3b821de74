-- Each static site's IPNS name (a key of the platform's IPFS node, one per site), and the
-- deployment content it was last pointed at: ENS names set their content hash to the name once,
-- and every deploy or rollback moves what it resolves to.
create table site_names (
    site_id bigint primary key references sites (id) on delete cascade,
    ipns_name text not null,
    published_cid text not null,
    published_at timestamptz not null default now()
);
