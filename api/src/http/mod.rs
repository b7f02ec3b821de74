//! The HTTP pieces every feature shares. Features use these; nothing here uses a feature.

pub(crate) mod input;
