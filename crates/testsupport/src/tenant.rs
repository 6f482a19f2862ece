//! Tenants: an instance with an API key, made in a store (in-process) or in a data dir (through
//! `keyward admin`), and logged in as an [`Api`].

use std::path::Path;

use keyward_domain::Role;
use keyward_service::admin;
use keyward_store::Store;

use crate::{admin_json, Api};

/// An instance and one API key in it.
#[derive(Clone, Debug)]
pub struct Tenant {
    pub instance: String,
    pub apikey: String,
}

impl Tenant {
    /// A new instance named `name` with a Manager API key, written straight into `store`.
    pub async fn in_store(store: &dyn Store, name: &str) -> Tenant {
        let inst = admin::create_instance(store, name, 1).await.unwrap();
        let k = admin::create_api_key(store, inst.id, Role::Manager, name, None, 1)
            .await
            .unwrap();
        Tenant {
            instance: inst.id.to_string(),
            apikey: k.apikey,
        }
    }

    /// A new instance named `name` with a Manager API key, made by `keyward admin` in the
    /// deployment whose data dir is `data_dir`.
    pub fn in_data_dir(data_dir: &Path, name: &str) -> Tenant {
        let inst = admin_json(data_dir, &["instance", "create", "--name", name]);
        let instance = inst["id"].as_str().unwrap().to_owned();
        let apikey = apikey_in_data_dir(data_dir, &instance, "Manager", name);
        Tenant { instance, apikey }
    }

    /// Logs in (API-key grant) at `base`.
    pub async fn login(&self, base: &str) -> Api {
        Api::login(base, &self.apikey, &self.instance).await
    }
}

/// A new API key with `role` in `instance`, made by `keyward admin` in `data_dir`.
pub fn apikey_in_data_dir(data_dir: &Path, instance: &str, role: &str, name: &str) -> String {
    let key = admin_json(
        data_dir,
        &[
            "apikey",
            "create",
            "--instance",
            instance,
            "--role",
            role,
            "--name",
            name,
        ],
    );
    key["apikey"].as_str().unwrap().to_owned()
}
