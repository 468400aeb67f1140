//! Pushes configs to one Kengine, only when they changed.

use crate::kengine::config::{Admin, AdminConfig, Config};
use crate::kengine::{AdminClient, AdminError, check};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Loaded,
    /// Byte-identical to the last config Kengine accepted: nothing sent.
    Unchanged,
}

pub struct Pusher {
    client: AdminClient,
    /// Bytes of the last config Kengine accepted.
    last: Option<Vec<u8>>,
}

impl Pusher {
    pub fn new(client: AdminClient) -> Self {
        Pusher { client, last: None }
    }

    /// Loads `config`, keeping the admin API where it is (a config without an
    /// `admin` section would move it to Kengine's default address). On
    /// rejection Kengine keeps serving the previous config, and so do we.
    pub async fn push(&mut self, config: &Config) -> Result<Pushed, AdminError> {
        let mut config = config.clone();
        config.admin = Some(Admin {
            listen: Some(self.client.addr().to_string()),
            config: Some(AdminConfig { persist: false }),
        });
        let bytes = config.to_json();
        if self.last.as_ref() == Some(&bytes) {
            return Ok(Pushed::Unchanged);
        }
        // A backstop behind translate's per-route checks: Kengine would
        // refuse the whole config, so say where instead of sending it.
        check::config(&config)?;
        self.client.load(bytes.clone()).await?;
        self.last = Some(bytes);
        Ok(Pushed::Loaded)
    }

    /// Forget what was pushed, e.g. after Kengine restarted.
    pub fn reset(&mut self) {
        self.last = None;
    }
}
