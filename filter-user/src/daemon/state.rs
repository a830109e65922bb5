//! The persisted desired state: the interfaces msfilter owns or released, and the
//! memberships of persistent clients (the CLI's among them), so a restarted daemon restores
//! them before it reconciles the maps.
//!
//! The file is written atomically (write a temporary file, fsync, rename, fsync the
//! directory). A file that is not JSON, or not an msfilter state file of a version this
//! build reads, is refused with a clear error and moved aside — never overwritten.

use std::{
    fs::{self, File},
    io::{self, Write as _},
    net::IpAddr,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use crate::policy::Mode;

const FORMAT: &str = "msfilter-state";
const VERSION: u32 = 1;
const FILE: &str = "state.json";

/// An interface msfilter owns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnedInterface {
    pub name: String,
    /// "driver" or "skb" when attached explicitly in that mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// One membership of a persistent client, as the kernel held it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Membership {
    pub iface: String,
    pub group: IpAddr,
    pub mode: Mode,
    pub sources: Vec<IpAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistentClient {
    pub name: String,
    pub memberships: Vec<Membership>,
}

/// Everything msfilter persists.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredState {
    pub owned: Vec<OwnedInterface>,
    /// Interfaces released by `detach`: memberships there do not attach the program again.
    pub released: Vec<String>,
    /// Interfaces released with `--keep`: their program enforces the last policy, frozen.
    pub kept: Vec<String>,
    /// Interfaces followed (`attach --follow`): XDP enforces the merge of every socket
    /// there; a restarted daemon follows them again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub followed: Vec<String>,
    /// Followed interfaces that drop unjoined groups (`attach --drop-unjoined`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop_unjoined: Vec<String>,
    pub clients: Vec<PersistentClient>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    format: String,
    version: u32,
    state: DesiredState,
}

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "state file {path} {why}; it was moved aside to {aside} and nothing was restored: \
         check it, then restore it or start again to begin from an empty state"
    )]
    Rejected {
        path: PathBuf,
        why: String,
        aside: PathBuf,
    },
    #[error("state file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The state file in a state directory.
#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
}

impl StateStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// Read the state; an absent file is the empty state.
    pub fn load(&self) -> Result<DesiredState, StateError> {
        let path = self.path();
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(DesiredState::default()),
            Err(source) => return Err(StateError::Io { path, source }),
        };
        let why = match serde_json::from_slice::<serde_json::Value>(&text) {
            Err(e) => format!("is not valid JSON ({e})"),
            Ok(value) => {
                let format = value.get("format").and_then(serde_json::Value::as_str);
                let version = value.get("version").and_then(serde_json::Value::as_u64);
                match (format, version) {
                    (Some(FORMAT), Some(v)) if v == u64::from(VERSION) => {
                        match serde_json::from_value::<StateFile>(value) {
                            Ok(file) => return Ok(file.state),
                            Err(e) => format!("is damaged ({e})"),
                        }
                    }
                    (Some(FORMAT), v) => format!(
                        "is of state format version {} which this msfilter does not read \
                         (it reads version {VERSION})",
                        v.map_or_else(|| "?".to_string(), |v| v.to_string())
                    ),
                    _ => "is not an msfilter state file".to_string(),
                }
            }
        };
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let aside = self.dir.join(format!("{FILE}.rejected-{stamp}"));
        fs::rename(&path, &aside).map_err(|source| StateError::Io {
            path: path.clone(),
            source,
        })?;
        Err(StateError::Rejected { path, why, aside })
    }

    /// Write the state atomically.
    pub fn save(&self, state: &DesiredState) -> Result<(), StateError> {
        let path = self.path();
        let io_error = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(&self.dir).map_err(io_error)?;
        let body = serde_json::to_vec_pretty(&StateFile {
            format: FORMAT.to_string(),
            version: VERSION,
            state: state.clone(),
        })
        .map_err(|e| io_error(io::Error::other(e)))?;
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        let mut file = File::create(&tmp).map_err(io_error)?;
        file.write_all(&body).map_err(io_error)?;
        file.write_all(b"\n").map_err(io_error)?;
        file.sync_all().map_err(io_error)?;
        drop(file);
        fs::rename(&tmp, &path).map_err(io_error)?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error)?;
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("msf-state-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn sample() -> DesiredState {
        DesiredState {
            owned: vec![OwnedInterface {
                name: "eth1".into(),
                mode: Some("skb".into()),
            }],
            released: vec!["eth2".into()],
            kept: vec![],
            followed: vec!["eth1".into()],
            drop_unjoined: vec!["eth1".into()],
            clients: vec![PersistentClient {
                name: "cli".into(),
                memberships: vec![Membership {
                    iface: "eth1".into(),
                    group: "232.1.1.1".parse().unwrap(),
                    mode: Mode::Exclude,
                    sources: vec!["10.0.0.5".parse().unwrap()],
                }],
            }],
        }
    }

    #[test]
    fn round_trips_and_absent_is_empty() {
        let dir = temp_dir("rt");
        let store = StateStore::new(&dir);
        assert_eq!(store.load().unwrap(), DesiredState::default());
        store.save(&sample()).unwrap();
        assert_eq!(store.load().unwrap(), sample());
        assert!(!dir.join("state.json.tmp").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_and_foreign_files_are_refused_and_kept_aside() {
        for (tag, body, why) in [
            ("garbage", "{ this is not json", "is not valid JSON"),
            (
                "foreign",
                r#"{"hello": "world"}"#,
                "is not an msfilter state file",
            ),
            (
                "future",
                r#"{"format":"msfilter-state","version":9}"#,
                "is of state format version 9",
            ),
            (
                "damaged",
                r#"{"format":"msfilter-state","version":1,"state":{"owned":3}}"#,
                "is damaged",
            ),
        ] {
            let dir = temp_dir(tag);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("state.json"), body).unwrap();
            let store = StateStore::new(&dir);
            let err = store.load().unwrap_err();
            let StateError::Rejected {
                why: got, aside, ..
            } = &err
            else {
                panic!("{tag}: {err}");
            };
            assert!(got.starts_with(why), "{tag}: {got}");
            assert_eq!(
                fs::read_to_string(aside).unwrap(),
                body,
                "{tag}: kept as it was"
            );
            assert!(!dir.join("state.json").exists());
            assert!(err.to_string().contains("moved aside"), "{err}");
            fs::remove_dir_all(&dir).unwrap();
        }
    }
}
