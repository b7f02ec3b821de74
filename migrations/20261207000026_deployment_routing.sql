-- A deployment's `_redirects` and `_headers`, parsed when it was made (hosting/routing.rs), for
-- the gateway; null when its output has neither.
alter table deployments add column routing jsonb;
