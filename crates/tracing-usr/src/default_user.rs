//! The identity [`identify`](crate::identify) sets outside any span: the process-wide default.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

use tracing_usr_core::{IdentityBucket, User};

/// The SDK identity set outside any span.
#[derive(Debug)]
pub(crate) struct DefaultUser {
    pub(crate) user: User,
    pub(crate) bucket: IdentityBucket,
}

/// Where the default identity lives; a flag keeps the common case (none) free of the lock.
#[derive(Debug, Default)]
pub(crate) struct DefaultUserSlot {
    user: RwLock<Option<DefaultUser>>,
    set: AtomicBool,
}

impl DefaultUserSlot {
    /// The default identity's tags, if one is set.
    pub(crate) fn bucket(&self) -> Option<IdentityBucket> {
        if !self.set.load(Ordering::Acquire) {
            return None;
        }
        self.user.read().ok()?.as_ref().map(|d| d.bucket.clone())
    }

    /// The default user, if one is set.
    pub(crate) fn user(&self) -> Option<User> {
        if !self.set.load(Ordering::Acquire) {
            return None;
        }
        self.user.read().ok()?.as_ref().map(|d| d.user.clone())
    }

    /// Sets (or with `None` clears) the default identity.
    pub(crate) fn set(&self, user: Option<DefaultUser>) {
        if let Ok(mut slot) = self.user.write() {
            self.set.store(user.is_some(), Ordering::Release);
            *slot = user;
        }
    }
}
