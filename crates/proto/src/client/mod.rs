//! Client-side framing used by the load generator (placeholder: being written).
