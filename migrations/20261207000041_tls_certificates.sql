-- HTTPS for linked domains: certificates ordered from an ACME server (RFC 8555), kept here so
-- every gateway replica serves them. A domain name is global (DNS), so rows are keyed by name.

-- The certificate each linked domain is served with: its chain as the CA issued it (PEM) and its
-- private key sealed at rest for this name (AES-256-GCM, the name as associated data).
create table tls_certificates (
    domain text primary key,
    chain_pem text not null,
    key_sealed bytea not null,
    not_before timestamptz not null,
    not_after timestamptz not null,
    issued_at timestamptz not null default now()
);

-- Orders that failed, and when the next may be tried (the wait doubles with each failure); a
-- domain without a row is tried on the next pass. Deleted once a certificate is issued.
create table tls_orders (
    domain text primary key,
    attempts integer not null check (attempts > 0),
    last_error text not null,
    last_attempt_at timestamptz not null,
    next_attempt_at timestamptz not null
);

-- HTTP-01 answers in flight: whichever replica the ACME server reaches answers
-- `/.well-known/acme-challenge/{token}` for the domain it ordered.
create table acme_challenges (
    token text primary key,
    domain text not null,
    key_authorization text not null,
    created_at timestamptz not null default now()
);

-- The platform's ACME account per directory, its credentials (key and account URL) sealed.
create table acme_accounts (
    directory_url text primary key,
    credentials_sealed bytea not null,
    created_at timestamptz not null default now()
);
