//! The §2 endpoints that exist for IBM Cloud's integrated services (registration writes,
//! event acknowledgements) and `GET /instance/allowed_ip_port`.

use keyward_domain::Role;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn service_to_service_endpoints_refuse_users_and_change_nothing() {
    let s = TestServer::start();
    let c = s.tenant().await;
    let id = id_of(&c.create_root("registered").await);
    let crn =
        "crn%3Av1%3Abluemix%3Apublic%3Acloud-object-storage%3Aglobal%3Aa%2Fx%3Ay%3Abucket%3Ab";
    let path = format!("/api/v2/keys/{id}/registrations/{crn}");
    let body = json!({"metadata": {"collectionType": "application/vnd.ibm.kms.registration_input+json", "collectionTotal": 1},
                      "resources": [{"preventKeyDeletion": true}]});
    assert_error(&c.post(&path, &body).await, 403, "SERVICE_ONLY_ERR");
    assert_error(&c.put(&path, &body).await, 403, "SERVICE_ONLY_ERR");
    assert_error(&c.patch(&path, &body, &[]).await, 403, "SERVICE_ONLY_ERR");
    assert_error(&c.delete(&path).await, 403, "SERVICE_ONLY_ERR");
    assert_error(
        &c.post("/api/v2/event_ack", &json!({"metadata": {"collectionType": "application/vnd.ibm.kms.event_acknowledge+json", "collectionTotal": 1}, "resources": [{}]})).await,
        403,
        "SERVICE_ONLY_ERR",
    );
    // nothing was registered: the key still deletes without force
    let regs = c
        .get(&format!("/api/v2/keys/{id}/registrations"))
        .await
        .expect(200);
    assert_eq!(regs["resources"].as_array().map(Vec::len), Some(0));
    c.delete(&format!("/api/v2/keys/{id}")).await.expect(204);
}

#[tokio::test]
async fn allowed_ip_port_needs_manager_and_answers_the_port() {
    let s = TestServer::start();
    let c = s.tenant().await;
    let r = c.get("/api/v2/instance/allowed_ip_port").await.expect(200);
    assert_eq!(
        r["metadata"]["collectionType"],
        "application/vnd.ibm.kms.allowed_ip_metadata+json"
    );
    assert_eq!(r["resources"][0]["private_endpoint_port"], s.addr.port());
    let reader = s
        .client(
            keyward_domain::InstanceId::parse(&c.instance).unwrap(),
            Role::Reader,
        )
        .await;
    assert_error(
        &reader.get("/api/v2/instance/allowed_ip_port").await,
        403,
        "UNAUTHORIZED_ERR",
    );
}
