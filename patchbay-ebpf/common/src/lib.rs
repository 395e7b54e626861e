//! Types shared between patchbay eBPF programs and its userspace loader.
#![no_std]
