//! msfilter userspace library.
//!
//! * [`datapath`]: the XDP program, its attachments and where its maps are written.
//! * [`policy`]: where the policy model lives (per-client filters, RFC 3376 merge).
//! * [`sockopt`]: where socket options are set (the kernel judges every membership request).
pub mod datapath;
pub mod policy;
pub mod sockopt;
