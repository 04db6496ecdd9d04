//! TLS end to end (placeholder, filled below).
