//! firkin core.
