//! msfilter's integration tests, one binary with a module per subject (one link of the test
//! bed and the library instead of one per file). Run one subject with its module path:
//! `cargo test -p msfilter-testbed --test integration map_memory::`.
//!
//! Most need root (namespaces, BPF, XDP); without it they fail loudly.

mod bad_input;
mod cli_json;
mod clients;
mod config_file;
mod controller;
mod differential;
mod doctor;
mod drop_unjoined;
mod end_to_end;
mod explain;
mod follow;
mod follow_daemon;
mod follow_differential;
mod follow_latency;
mod follow_traffic;
mod kernel_equivalence;
mod kernel_sequences;
mod kernel_views;
mod layout_upgrade;
mod listing;
mod map_memory;
mod metrics;
mod netlink;
mod netns;
mod ownership;
mod package;
mod reports;
mod restart;
mod restart_bulk;
mod sockopt;
mod systemd_unit;
mod top;
mod trace;
mod unrestored;
mod verdict;
