//! Terraform's IBM provider (`terraform-provider-ibm`) against a real `keyward serve`.
//!
//! Terraform cannot be downloaded here, so [`provider`] reproduces what the provider does over
//! the wire: the login of its session (`ibm/conns/config.go`: IBM's IAM API-key grant with
//! `response_type=cloud_iam` and `Basic bx:bx`, then the `id`, `account.bss` and `iss` claims
//! read from the access token), the Resource Controller lookup every KMS resource starts with
//! (`populateKPClient` in `ibm/service/kms/resource_ibm_kms_key.go`), and the Key Protect calls
//! of `keyprotect-go-client` that the resources make, with the headers, query strings and
//! bodies that client builds. Each response is parsed the way the Go client and the provider
//! parse it: typed JSON (a wrong type fails, like Go's `json.Unmarshal`), RFC 3339 dates, and
//! the fields the provider dereferences or splits (a policy's `creationDate`, `lastUpdateDate`
//! and `crn`; a key's `crn` split on `:`).
//!
//! - `resources`: create, read (refresh), update and destroy of `ibm_kms_key` (generated,
//!   plainly imported and securely imported), `ibm_kms_key_rings`, `ibm_kms_key_policies`,
//!   `ibm_kms_instance_policies`, `ibm_kms_key_with_policy_overrides` and the data source
//!   `ibm_kms_keys`, each as the exact request sequence of the provider file it names;
//! - `identity`: the token claims, the `refresh_token` grant, `/oidc/token`, IAM error shapes;
//! - `resource_controller`: `GET /v2/resource_instances/{id}`;
//! - `headers`: `Prefer` on every operation that honours it, `Correlation-Id`,
//!   `X-Kms-Key-Ring` on every key route.
//!
//! Run: `cargo test -p keyward --test terraform`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod headers;
mod identity;
mod provider;
mod resource_controller;
mod resources;

use keyward_testsupport::{Node, NodeOpts, Tenant};

/// A `keyward serve` with one instance and a Manager API key in it.
pub struct Server {
    pub node: Node,
    pub _dir: tempfile::TempDir,
    pub data: std::path::PathBuf,
    pub tenant: Tenant,
}

impl Server {
    pub async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut node =
            Node::spawn_with("terraform", &NodeOpts::sqlite(&data), &["--insecure-http"]);
        node.wait_health(200).await;
        let tenant = Tenant::in_data_dir(&data, "terraform");
        Server {
            node,
            _dir: dir,
            data,
            tenant,
        }
    }

    pub fn base(&self) -> &str {
        &self.node.base
    }
}
