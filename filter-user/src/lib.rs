//! msfilter userspace library.
//!
//! * [`datapath`]: the XDP program, its attachments and where its maps are written.
//! * [`sockopt`]: where socket options are set (the kernel judges every membership request).
pub mod datapath;
pub mod sockopt;
