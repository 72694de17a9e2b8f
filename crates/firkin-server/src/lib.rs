//! firkin HTTP edge.
