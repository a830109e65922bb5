//! Empty library target: lets `filter-user` name this crate as a build-dependency, so
//! cargo rebuilds the userspace (and re-embeds the XDP object) when this crate changes.
#![no_std]
