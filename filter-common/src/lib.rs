//! Types and logic shared by the XDP program (`filter-ebpf`) and userspace (`filter-user`).
//!
//! * [`maps`]: map keys and values, exactly as the kernel stores them.
//! * [`limits`]: map names, capacities, parser bounds and the map memory budget.
//! * [`headers`]: pure header arithmetic used by both the XDP program and the model.
//! * [`verdict`]: verdicts, reasons and the **reference model** of the XDP program.
//! * [`trace`]: the packet trace's switch and events (`msfilter trace`).
//! * [`follow`]: what the follow-mode hooks and the follower share (events, maps, decoding).
//! * [`unjoined`]: dropping groups nobody joined (the interface flags and the gate).
#![cfg_attr(not(test), no_std)]

pub mod follow;
pub mod headers;
pub mod limits;
pub mod maps;
pub mod trace;
pub mod unjoined;
pub mod verdict;

pub use maps::{
    Addr, Counter, GroupKey, GroupKey4, GroupState, GroupValue, Mode, SourceKey, SourceKey4,
    VlanKey,
};
pub use verdict::{Policy, Reason, Verdict};
