//! Capabilities: a [`Permit`] is the proof that a caller's roles allow one [`Action`] in one
//! instance. Only [`Caller::require`] makes one (the fields are private to this module), and
//! the service's calls that reach a key in the store (`KeyService::row_for`, `load_key`,
//! `mutate_key`, and the key operations built on them) take a permit and read the instance from
//! it: a code path that skipped the role check has no permit to hand over, so it does not
//! compile.

use keyward_domain::{Action, InstanceId};

use crate::{Caller, ServiceError, ServiceResult};

/// The caller's roles allow `action` in `instance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit {
    action: Action,
    instance: InstanceId,
}

impl Permit {
    /// The action the role check allowed (what the audit record names).
    pub fn action(&self) -> Action {
        self.action
    }

    /// The instance the permit holds in (the only one its store calls reach).
    pub fn instance(&self) -> InstanceId {
        self.instance
    }
}

/// The role check behind [`Caller::require`].
pub(crate) fn check(caller: &Caller, action: Action) -> ServiceResult<Permit> {
    if caller.can(action) {
        Ok(Permit {
            action,
            instance: caller.instance,
        })
    } else {
        Err(ServiceError::forbidden())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use keyward_domain::Role;

    use super::*;

    fn caller(roles: &[Role]) -> Caller {
        Caller {
            iam_id: "IBMid-test".into(),
            instance: InstanceId::parse("6b5e5b8e-3f4b-4a4e-9d8e-2b7c1d0e9f10").unwrap(),
            roles: Arc::from(roles),
            meta: Default::default(),
        }
    }

    #[test]
    fn a_permit_names_the_checked_action_and_the_callers_instance() {
        let c = caller(&[Role::Writer]);
        let p = c.require(Action::Wrap).unwrap();
        assert_eq!(p.action(), Action::Wrap);
        assert_eq!(p.instance(), c.instance);
        assert!(c.require(Action::Purge).is_err());
        assert!(caller(&[Role::Reader]).require(Action::CreateKey).is_err());
    }
}
