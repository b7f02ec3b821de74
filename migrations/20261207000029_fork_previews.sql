-- Whether pull requests from forks get previews (null: no). A fork's code is not the owner's: it
-- builds in the sandbox without variables, secrets or the build cache, on the owner's minutes.
alter table sites add column fork_previews boolean;
