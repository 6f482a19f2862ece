//! The command shapes of IBM's `ibmcloud kp` plugin that `keyward kp` also accepts (`kp keys`,
//! `kp key-rings`, the key name as a positional argument of `kp key create`, `-s`, `-D`,
//! `-i` / `--instance-ID`, `-o json`), and `keyward completions bash|zsh|fish`.

use std::process::{Command, Stdio};

use keyward_testsupport::bin;

use crate::Server;

#[test]
fn ibmcloud_kp_shapes() {
    let s = Server::start(0);
    let wrong = uuid::Uuid::new_v4().to_string();
    // -i beats KP_INSTANCE_ID (set here to an instance the key has no role in)
    let run = |args: &[&str]| {
        let out = s.run_as(&s.apikey, args, &[("KP_INSTANCE_ID", &wrong)]);
        assert!(
            out.status.success(),
            "kp {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let inst = s.instance.clone();
    let json = |args: &[&str]| -> serde_json::Value { serde_json::from_str(&run(args)).unwrap() };

    // kp key create NAME -i ID --output json
    let k = json(&["key", "create", "tf-style", "-i", &inst, "--output", "json"]);
    assert_eq!(k["name"], "tf-style");
    assert_eq!(k["extractable"], false);
    // -s / --standard-key, -D, --instance-ID, -o
    let k2 = json(&[
        "key",
        "create",
        "std-style",
        "-s",
        "-D",
        "a description",
        "--instance-ID",
        &inst,
        "-o",
        "json",
    ]);
    assert_eq!(k2["extractable"], true);
    assert_eq!(k2["description"], "a description");
    // the --name form still works
    let k3 = json(&[
        "key",
        "create",
        "--name",
        "flag-style",
        "-i",
        &inst,
        "-o",
        "json",
    ]);
    assert_eq!(k3["name"], "flag-style");

    // kp keys: the key list, as JSON and as a table
    let list = json(&["keys", "-i", &inst, "--output", "json"]);
    assert_eq!(list["metadata"]["collectionTotal"], 3, "{list}");
    let table = run(&["keys", "-i", &inst]);
    for name in ["tf-style", "std-style", "flag-style"] {
        assert!(table.contains(name), "{table}");
    }
    assert!(
        serde_json::from_str::<serde_json::Value>(&table).is_err(),
        "a table, not JSON"
    );
    // the same as `key list`
    assert_eq!(json(&["key", "list", "-i", &inst, "-o", "json"]), list);

    // kp key-rings
    run(&["key-ring", "create", "shape-ring", "-i", &inst]);
    let rings = json(&["key-rings", "-i", &inst, "-o", "json"]);
    let ids: Vec<&str> = rings["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"shape-ring") && ids.contains(&"default"),
        "{rings}"
    );

    // without -i the wrong instance from the environment is used, and refused
    let out = s.run_as(&s.apikey, &["keys"], &[("KP_INSTANCE_ID", &wrong)]);
    assert!(!out.status.success());
    // a name given twice, or not at all, is a usage error
    for args in [
        &["key", "create", "a", "--name", "b"][..],
        &["key", "create"],
    ] {
        let out = s.run_as(&s.apikey, args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn shell_completions() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(bin())
            .args(["completions", shell])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{shell}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let script = String::from_utf8(out.stdout).unwrap();
        for word in [
            "keyward",
            "kp",
            "keys",
            "key-rings",
            "instance-ID",
            "completions",
            "admin",
        ] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
        // the script is valid for its shell, when that shell is installed
        let (sh, flags) = match shell {
            "bash" => ("bash", vec!["-n"]),
            "zsh" => ("zsh", vec!["-n"]),
            _ => ("fish", vec!["--no-execute"]),
        };
        {
            let path = std::env::temp_dir().join(format!(
                "keyward-completions-{}.{shell}",
                std::process::id()
            ));
            std::fs::write(&path, &script).unwrap();
            match Command::new(sh).args(&flags).arg(&path).output() {
                Ok(o) => assert!(
                    o.status.success(),
                    "{sh} rejects the script: {}",
                    String::from_utf8_lossy(&o.stderr)
                ),
                Err(_) => eprintln!("{sh} not installed: syntax of the {shell} script not checked"),
            }
            let _ = std::fs::remove_file(&path);
        }
    }
    let out = Command::new(bin())
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
