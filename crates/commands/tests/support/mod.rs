//! Shared by the integration tests: reading live servers, and viewing the table the same way.

pub(crate) mod introspect;
pub(crate) mod model;
