//! msfilter userspace library.
pub mod datapath;
