-- GitHub both ways: a site linked to a repository has a webhook of its own on it, created through
-- GitHub's API with a secret of its own (sealed, with the site's id as associated data). Every
-- delivery names its webhook (X-GitHub-Hook-ID): that picks the secret it is checked against.
alter table sites
  add column hook_id bigint,
  add column hook_repository text,
  add column hook_secret_sealed bytea,
  add column hook_error text,
  -- Whether pushes to branches other than the production branch build previews (null: no).
  add column branch_previews boolean;
create unique index sites_hook on sites (chain_id, hook_id) where hook_id is not null;

-- GitHub sends one event to every webhook on a repository under one X-GitHub-Delivery: each
-- webhook's delivery is acted on once (0: the platform-wide secret's webhook).
alter table github_deliveries add column hook_id bigint not null default 0;
alter table github_deliveries drop constraint github_deliveries_pkey;
alter table github_deliveries add primary key (chain_id, delivery_id, hook_id);

-- Previews: a pull request's head (`pr-<n>`) or a branch (its slug) built apart from
-- production and served at `<label>--<site>.<sites domain>`. A deployment of a preview names
-- it; the preview serves the newest live build of its head commit.
alter table deployments
  add column preview text,
  add column from_fork boolean not null default false;
create table site_previews (
  site_id bigint not null references sites (id) on delete cascade,
  label text not null,
  pull_request integer,
  branch text,
  -- The commit the preview is of: only a build of it is served.
  head_sha text not null,
  from_fork boolean not null default false,
  deployment_id bigint references deployments (id),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (site_id, label)
);
