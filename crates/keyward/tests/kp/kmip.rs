//! `keyward kp kmip`: adapters, client certificates and objects from the command line
//! (docs/kmip.md), against a real server.

use crate::Server;

#[test]
fn kmip_adapters_from_the_command_line() {
    let s = Server::start(0);
    let crk = s.create("kmip-crk");
    let a = s.kp(&[
        "kmip",
        "adapter",
        "create",
        "--crk-id",
        &crk,
        "--name",
        "kp-adapter",
        "--description",
        "from kp",
    ]);
    assert_eq!(a["name"], "kp-adapter", "{a}");
    assert_eq!(a["profile"], "native_1.0", "{a}");
    assert_eq!(a["profile_data"]["crk_id"], crk.as_str(), "{a}");
    let id = a["id"].as_str().unwrap().to_owned();
    let list = s.kp(&["kmip", "adapter", "list"]);
    assert_eq!(list["resources"][0]["id"], id.as_str(), "{list}");
    assert_eq!(
        s.kp(&["kmip", "adapter", "show", "kp-adapter"])["id"],
        id.as_str()
    );
    assert!(s.human(&["kmip", "adapter", "list"]).contains("kp-adapter"));

    let pem = rcgen::generate_simple_self_signed(vec!["esxi".to_string()])
        .unwrap()
        .cert
        .pem();
    let file = s.write("client.pem", pem.as_bytes());
    let c = s.kp(&[
        "kmip",
        "cert",
        "add",
        &id,
        "--certificate",
        &file,
        "--name",
        "esxi-1",
    ]);
    assert_eq!(c["name"], "esxi-1", "{c}");
    assert_eq!(c["certificate"].as_str().unwrap(), pem.trim());
    let certs = s.kp(&["kmip", "cert", "list", "kp-adapter"]);
    assert_eq!(certs["resources"][0]["name"], "esxi-1", "{certs}");
    assert_eq!(
        s.kp(&["kmip", "cert", "show", &id, "esxi-1"])["name"],
        "esxi-1"
    );
    // the same certificate again: 409
    s.fail(&["kmip", "cert", "add", &id, "--certificate", &file])
        .expect(409, "CONFLICT_ERR");
    let objects = s.kp(&["kmip", "object", "list", &id]);
    assert_eq!(objects["resources"], serde_json::json!([]), "{objects}");
    s.fail(&["kmip", "object", "show", &id, "nope"])
        .expect(404, "NOT_FOUND_ERR");

    assert_eq!(
        s.kp(&["kmip", "cert", "delete", &id, "esxi-1"])["deleted"],
        true
    );
    assert_eq!(s.kp(&["kmip", "adapter", "delete", &id])["deleted"], true);
    s.fail(&["kmip", "adapter", "show", &id])
        .expect(404, "NOT_FOUND_ERR");
}
