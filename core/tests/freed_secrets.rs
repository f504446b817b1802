//! Plaintext buffers are wiped before their memory goes back to the allocator: a dropped
//! [`SecretBuffer`], the smaller block a growing one leaves behind, and the strings of a dropped
//! [`WipedJson`]. The test notes a block's address, lets the buffer go, and reads the freed block
//! back through `/proc/self/mem` (no `unsafe`): none of the secret may be left in it.
//!
//! The allocator may reuse or hand back a freed block, which can only erase the secret, never
//! plant it: a wipe that is missing fails here, a wipe that works never does. The reading buffers
//! are allocated before anything is freed, so the test's own allocations do not take the block.
#![cfg(target_os = "linux")]

use std::io::{Read, Seek, SeekFrom};

use keyward_core::crypto::{SecretBuffer, WipedJson};

/// Well above glibc's tcache sizes and well below its mmap threshold: a freed block stays mapped.
const LEN: usize = 4096;
/// The allocator writes its own list pointers into the first bytes of a freed block.
const ALLOCATOR_HEADER: usize = 32;

/// Reads `into.len()` bytes of this process's memory at `address`.
fn read_memory(mem: &mut std::fs::File, address: usize, into: &mut [u8]) {
    mem.seek(SeekFrom::Start(u64::try_from(address).expect("64-bit"))).expect("seek");
    mem.read_exact(into).expect("the freed block is still mapped");
}

/// How many bytes of `block` past the allocator's header still hold `secret`'s byte.
fn left_behind(block: &[u8], secret: u8) -> usize {
    block[ALLOCATOR_HEADER..].iter().filter(|&&b| b == secret).count()
}

#[test]
fn freed_plaintext_holds_no_secret() {
    let mut mem = std::fs::File::open("/proc/self/mem").expect("open /proc/self/mem");
    let mut read = vec![0u8; LEN];

    // A dropped buffer.
    let mut buffer = SecretBuffer::with_capacity(LEN);
    buffer.extend_from_slice(&[0x5c; LEN]);
    let address = buffer.expose().as_ptr() as usize;
    drop(buffer);
    read_memory(&mut mem, address, &mut read);
    assert_eq!(left_behind(&read, 0x5c), 0, "a dropped SecretBuffer left its bytes in freed memory");

    // The block a growing buffer moves out of.
    let mut buffer = SecretBuffer::with_capacity(LEN);
    buffer.extend_from_slice(&[0x6d; LEN]);
    let address = buffer.expose().as_ptr() as usize;
    buffer.push(b'!');
    assert_ne!(buffer.expose().as_ptr() as usize, address, "it moved to a larger block");
    read_memory(&mut mem, address, &mut read);
    assert_eq!(left_behind(&read, 0x6d), 0, "a growing SecretBuffer left its old block unwiped");
    assert_eq!(buffer.expose().len(), LEN + 1);
    assert!(buffer.expose()[..LEN].iter().all(|&b| b == 0x6d));
    drop(buffer);

    // A dropped JSON value's strings.
    let text = "~".repeat(LEN);
    let json = WipedJson(serde_json::json!({ "password": text }));
    let address = json.0["password"].as_str().expect("a string").as_ptr() as usize;
    drop(json);
    read_memory(&mut mem, address, &mut read);
    assert_eq!(left_behind(&read, b'~'), 0, "a dropped WipedJson left a string in freed memory");
    drop(text);
}
