//! The fjall-backed `Store` of Keyward (being written).
