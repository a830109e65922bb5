//! Interface names and indexes in the calling thread's network namespace.

use std::fmt;

/// An interface that exists: its index and its name, as the kernel knew them when resolved.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Interface {
    pub index: u32,
    pub name: String,
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// An interface that is not there.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoSuchInterface {
    #[error("no interface named {0:?}")]
    Name(String),
    #[error("no interface with index {0}")]
    Index(u32),
}

/// Resolve an interface given by name or by index (all digits).
pub fn resolve(spec: &str) -> Result<Interface, NoSuchInterface> {
    if let Ok(index) = spec.parse::<u32>() {
        let name = name_of(index).ok_or(NoSuchInterface::Index(index))?;
        return Ok(Interface { index, name });
    }
    let c = std::ffi::CString::new(spec).map_err(|_| NoSuchInterface::Name(spec.to_string()))?;
    // SAFETY: valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(NoSuchInterface::Name(spec.to_string()));
    }
    Ok(Interface {
        index,
        name: spec.to_string(),
    })
}

/// The interface with index `index`, if it exists.
pub fn by_index(index: u32) -> Result<Interface, NoSuchInterface> {
    let name = name_of(index).ok_or(NoSuchInterface::Index(index))?;
    Ok(Interface { index, name })
}

/// The name of interface `index`, if it exists.
pub fn name_of(index: u32) -> Option<String> {
    let mut buf = [0u8; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr().cast()) };
    if p.is_null() {
        return None;
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..len]).into_owned())
}

/// The name of interface `index`, or `#index` when it is gone.
pub fn label(index: u32) -> String {
    name_of(index).unwrap_or_else(|| format!("#{index}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_interfaces_are_named_in_the_error() {
        assert_eq!(
            resolve("nosuch-if0").unwrap_err().to_string(),
            "no interface named \"nosuch-if0\""
        );
        assert_eq!(
            resolve("4000000000").unwrap_err(),
            NoSuchInterface::Index(4_000_000_000)
        );
        assert_eq!(label(4_000_000_000), "#4000000000");
    }
}
