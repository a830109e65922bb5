//! msfilter userspace library.
//!
//! * [`client`]: the library client applications link instead of shelling out.
//! * [`daemon`]: the controller daemon and its wire protocol.
//! * [`datapath`]: the XDP program, its attachments and where its maps are written.
//! * [`doctor`]: what on this host keeps msfilter from filtering as asked.
//! * [`follow`]: follow mode: every socket's filter learnt from the kernel, merged per group.
//! * [`policy`]: where the policy model lives (per-client filters, RFC 3376 merge).
//! * [`sockopt`]: where socket options are set (the kernel judges every membership request).
pub mod client;
pub mod daemon;
pub mod datapath;
pub mod doctor;
pub mod follow;
pub mod iface;
pub mod policy;
pub mod sockopt;
