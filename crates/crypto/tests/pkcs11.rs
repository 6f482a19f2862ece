//! The `pkcs11` master key provider against SoftHSM2 (docs/hsm.md).
//!
//! Skips, with a note on stderr, when `/usr/lib/softhsm/libsofthsm2.so` or `softhsm2-util` is
//! absent (install: `apt-get install -y softhsm2`); fails instead under
//! `KEYWARD_REQUIRE_SERVICES=1`, as in CI.
//!
//! SoftHSM reads `SOFTHSM2_CONF` once, when the module is initialised, and a module is
//! initialised once per process: so this test binary points `SOFTHSM2_CONF` at one temporary
//! token directory for the whole process, and every test initialises its own fresh token in it
//! (`softhsm2-util --init-token --free`), all made before the module is first loaded because
//! SoftHSM does not see tokens initialised by another process after that.
//!
//! Run: `cargo test -p keyward-crypto --test pkcs11`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../testsupport/src/services.rs"]
mod services;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use keyward_crypto::master::{MasterKeyProvider, SealContext};
use keyward_crypto::pkcs11::{
    module_context, Pkcs11Config, Pkcs11Error, Pkcs11MasterKey, Pkcs11Pin,
};
use keyward_crypto::{random_bytes, CryptoError, SecretBytes};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "4711-user-pin";
const SO_PIN: &str = "0815-so-pin";

/// The process-wide SoftHSM configuration, or None (skip) when SoftHSM is not installed.
fn softhsm() -> Option<&'static PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        let util = Command::new("softhsm2-util").arg("--version").output();
        if !Path::new(MODULE).exists() || util.is_err() {
            services::missing(
                "the pkcs11 tests",
                &format!("SoftHSM2 ({MODULE} or softhsm2-util)"),
                "apt-get install -y softhsm2",
            );
            return None;
        }
        let tmp = std::env::temp_dir();
        // Remove what earlier runs left behind (their process is gone).
        if let Ok(rd) = std::fs::read_dir(&tmp) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if let Some(pid) = name.strip_prefix("keyward-softhsm-") {
                    if !Path::new(&format!("/proc/{pid}")).exists() {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
        }
        let dir = tmp.join(format!("keyward-softhsm-{}", std::process::id()));
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )
        .unwrap();
        // Set once, before any thread loads the module (this closure runs before any test
        // can use SoftHSM).
        std::env::set_var("SOFTHSM2_CONF", &conf);
        for t in TOKENS {
            init_token(&fresh_token(t));
        }
        Some(dir)
    })
    .as_ref()
}

/// Every test's token: SoftHSM sees only the tokens that exist when the module is initialised,
/// so all are made up front, fresh for each run, one per test.
const TOKENS: &[&str] = &[
    "rt", "fmt", "sens", "pin", "nocreate", "unsuit", "pinfile", "conc", "relogin",
];

/// The label of this run's fresh token for the test `tag`.
fn fresh_token(tag: &str) -> String {
    assert!(TOKENS.contains(&tag), "add {tag} to TOKENS");
    format!("{tag}-{}", std::process::id())
}

fn init_token(label: &str) {
    let out = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            label,
            "--so-pin",
            SO_PIN,
            "--pin",
            PIN,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "softhsm2-util --init-token: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn cfg(token: &str, key: &str, pin: &str) -> Pkcs11Config {
    Pkcs11Config {
        module: PathBuf::from(MODULE),
        token_label: token.to_string(),
        pin: Pkcs11Pin::from_string(pin.to_string()).unwrap(),
        key_label: key.to_string(),
    }
}

/// A session of the test's own on the token (the module is shared with the provider).
fn own_session(token: &str) -> Session {
    let ctx = module_context(Path::new(MODULE)).unwrap();
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| {
            ctx.get_token_info(*s)
                .map(|t| t.label() == token)
                .unwrap_or(false)
        })
        .expect("token");
    let s = ctx.open_rw_session(slot).unwrap();
    match s.login(UserType::User, Some(&AuthPin::new(PIN.into()))) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("C_Login: {e}"),
    }
    s
}

fn ctx<'a>(kind: &'a str, instance: &'a str, object: &'a str, version: &'a str) -> SealContext<'a> {
    SealContext {
        kind,
        instance,
        object,
        version,
    }
}

/// The file provider's AAD, built by hand from its definition.
fn file_provider_aad(c: &SealContext<'_>, key_id: &str) -> Vec<u8> {
    let mut out = b"keyward-seal-v1".to_vec();
    for p in [c.kind, c.instance, c.object, c.version, key_id] {
        out.extend_from_slice(&(p.len() as u32).to_be_bytes());
        out.extend_from_slice(p.as_bytes());
    }
    out
}

#[test]
fn seal_open_round_trip_and_aad_binding() {
    let Some(_) = softhsm() else { return };
    let token = fresh_token("rt");
    let mk = Pkcs11MasterKey::open_or_create(cfg(&token, "keyward-master", PIN), true).unwrap();
    let id = mk.key_id().to_string();
    let prefix = format!("pkcs11:{token}:keyward-master:");
    assert!(id.starts_with(&prefix), "{id}");
    let suffix = &id[prefix.len()..];
    assert_eq!(suffix.len(), 32, "{id}");
    assert!(suffix.bytes().all(|b| b.is_ascii_hexdigit()));

    let c = ctx("key-version", "inst-1", "key-1", "ver-1");
    for pt in [&b""[..], b"x", &[7u8; 32], &[9u8; 4000]] {
        let sealed = mk.seal(&c, pt).unwrap();
        assert_eq!(sealed.len(), 1 + 12 + pt.len() + 16);
        assert_eq!(sealed[0], 1, "version byte");
        assert_eq!(mk.open(&c, &sealed).unwrap().expose(), pt);
    }
    let sealed = mk.seal(&c, b"material").unwrap();
    assert_ne!(
        sealed,
        mk.seal(&c, b"material").unwrap(),
        "fresh IV per seal"
    );
    // Every part of the row's identity is bound.
    for other in [
        ctx("import-token", "inst-1", "key-1", "ver-1"),
        ctx("key-version", "inst-2", "key-1", "ver-1"),
        ctx("key-version", "inst-1", "key-2", "ver-1"),
        ctx("key-version", "inst-1", "key-1", "ver-2"),
    ] {
        assert_eq!(mk.open(&other, &sealed).err(), Some(CryptoError::Open));
    }
    // Tampering anywhere fails; so do a wrong version byte and a short value.
    for i in 0..sealed.len() {
        let mut t = sealed.clone();
        t[i] ^= 0x01;
        assert_eq!(mk.open(&c, &t).err(), Some(CryptoError::Open), "byte {i}");
    }
    assert_eq!(mk.open(&c, &sealed[..20]).err(), Some(CryptoError::Open));
    assert_eq!(mk.open(&c, &[]).err(), Some(CryptoError::Open));
    // After failures the provider still works (sessions are reused or replaced).
    assert_eq!(mk.open(&c, &sealed).unwrap().expose(), b"material");

    // A second provider (a restart) finds the same key, the same id, and opens old rows.
    let again = Pkcs11MasterKey::open_or_create(cfg(&token, "keyward-master", PIN), false).unwrap();
    assert_eq!(again.key_id(), id);
    assert_eq!(again.open(&c, &sealed).unwrap().expose(), b"material");
    // A different master key (another label on the same token) does not open it.
    let other = Pkcs11MasterKey::open_or_create(cfg(&token, "other-master", PIN), true).unwrap();
    assert_ne!(other.key_id(), id);
    assert_eq!(other.open(&c, &sealed).err(), Some(CryptoError::Open));

    let dbg = format!("{mk:?}");
    assert!(dbg.contains(&id) && !dbg.contains(PIN), "{dbg}");
    assert!(!format!("{:?}", cfg(&token, "k", PIN)).contains(PIN));
}

/// The format and AAD are the file provider's: a value sealed in the HSM under a key whose
/// bytes the test knows opens with plain AES-256-GCM and the file provider's AAD.
#[test]
fn format_and_aad_match_the_file_provider() {
    let Some(_) = softhsm() else { return };
    let token = fresh_token("fmt");
    let known = random_bytes(32).unwrap();
    let s = own_session(&token);
    s.create_object(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Value(known.clone()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Label(b"imported".to_vec()),
        Attribute::Id(vec![0xab, 0xcd, 0x01]),
    ])
    .unwrap();
    let mk = Pkcs11MasterKey::open_or_create(cfg(&token, "imported", PIN), false).unwrap();
    assert_eq!(mk.key_id(), format!("pkcs11:{token}:imported:abcd01"));
    let c = ctx("signing-key", "inst", "obj", "v");
    let sealed = mk.seal(&c, b"row secret").unwrap();
    let (iv, ct) = sealed[1..].split_at(12);
    let aad = file_provider_aad(&c, mk.key_id());
    let pt =
        keyward_crypto::dek::open(&SecretBytes::from_vec(known.clone()), iv, &aad, ct).unwrap();
    assert_eq!(pt.expose(), b"row secret");
    // And the other way: sealed outside, opened inside the HSM.
    let (iv, ct) =
        keyward_crypto::dek::seal(&SecretBytes::from_vec(known), &aad, b"outside").unwrap();
    let mut v = vec![1u8];
    v.extend_from_slice(&iv);
    v.extend_from_slice(&ct);
    assert_eq!(mk.open(&c, &v).unwrap().expose(), b"outside");
}

#[test]
fn master_key_value_cannot_be_read() {
    let Some(_) = softhsm() else { return };
    let token = fresh_token("sens");
    let _mk = Pkcs11MasterKey::open_or_create(cfg(&token, "keyward-master", PIN), true).unwrap();
    let s = own_session(&token);
    let found = s
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(b"keyward-master".to_vec()),
        ])
        .unwrap();
    assert_eq!(found.len(), 1);
    let key = found[0];
    // C_GetAttributeValue(CKA_VALUE) answers CKR_ATTRIBUTE_SENSITIVE.
    let info = s.get_attribute_info(key, &[AttributeType::Value]).unwrap();
    assert!(
        matches!(info.as_slice(), [AttributeInfo::Sensitive]),
        "{info:?}"
    );
    let got = s.get_attributes(key, &[AttributeType::Value]).unwrap();
    assert!(got.is_empty(), "CKA_VALUE was returned");
    let attrs = s
        .get_attributes(
            key,
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::NeverExtractable,
                AttributeType::AlwaysSensitive,
                AttributeType::Token,
                AttributeType::Private,
                AttributeType::Local,
                AttributeType::ValueLen,
                AttributeType::KeyType,
                AttributeType::Encrypt,
                AttributeType::Decrypt,
                AttributeType::Wrap,
                AttributeType::Unwrap,
                AttributeType::Sign,
                AttributeType::Verify,
                AttributeType::Derive,
            ],
        )
        .unwrap();
    let want = [
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::NeverExtractable(true),
        Attribute::AlwaysSensitive(true),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Local(true),
        Attribute::ValueLen(32.into()),
        Attribute::KeyType(KeyType::AES),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
    ];
    assert_eq!(attrs, want);
    // Nor can it be wrapped out under another key.
    let wrapping = s
        .generate_key(
            &cryptoki::mechanism::Mechanism::AesKeyGen,
            &[
                Attribute::ValueLen(32.into()),
                Attribute::Wrap(true),
                Attribute::Token(false),
            ],
        )
        .unwrap();
    let err = s
        .wrap_key(
            &cryptoki::mechanism::Mechanism::AesKeyWrapPad,
            wrapping,
            key,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            CkError::Pkcs11(RvError::KeyUnextractable | RvError::KeyNotWrappable, _)
        ),
        "{err}"
    );
}

#[test]
fn wrong_pin_missing_token_and_missing_module_are_errors() {
    let Some(_) = softhsm() else { return };
    let token = fresh_token("pin");
    let err = Pkcs11MasterKey::open_or_create(cfg(&token, "keyward-master", "not-the-pin"), true)
        .unwrap_err();
    assert!(matches!(err, Pkcs11Error::Login { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("PinIncorrect") && !msg.contains("not-the-pin"),
        "{msg}"
    );
    // Nothing was created by the failed attempt.
    let s = own_session(&token);
    assert!(s
        .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY)])
        .unwrap()
        .is_empty());
    drop(s);

    // With the token already logged in by this process, a wrong PIN is still refused.
    let good = Pkcs11MasterKey::open_or_create(cfg(&token, "keyward-master", PIN), true).unwrap();
    let err = Pkcs11MasterKey::open_or_create(cfg(&token, "keyward-master", "not-the-pin"), true)
        .unwrap_err();
    assert!(matches!(err, Pkcs11Error::Login { .. }), "{err}");
    drop(good);

    let err = Pkcs11MasterKey::open_or_create(cfg("no-such-token", "k", PIN), true).unwrap_err();
    assert!(matches!(err, Pkcs11Error::TokenNotFound { .. }), "{err}");
    let mut c = cfg(&token, "k", PIN);
    c.module = PathBuf::from("/nonexistent/libpkcs11.so");
    let err = Pkcs11MasterKey::open_or_create(c, true).unwrap_err();
    assert!(matches!(err, Pkcs11Error::Module { .. }), "{err}");
}

#[test]
fn never_creates_a_key_when_the_database_has_rows() {
    let Some(_) = softhsm() else { return };
    let token = fresh_token("nocreate");
    let err =
        Pkcs11MasterKey::open_or_create(cfg(&token, "keyward-master", PIN), false).unwrap_err();
    assert!(
        matches!(err, Pkcs11Error::KeyMissingWithData { .. }),
        "{err}"
    );
    let s = own_session(&token);
    assert!(s
        .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY)])
        .unwrap()
        .is_empty());
}

#[test]
fn unsuitable_keys_are_refused() {
    let Some(_) = softhsm() else { return };
    let token = fresh_token("unsuit");
    let s = own_session(&token);
    let base = |label: &str, extractable: bool, sensitive: bool| {
        s.generate_key(
            &cryptoki::mechanism::Mechanism::AesKeyGen,
            &[
                Attribute::ValueLen(32.into()),
                Attribute::Token(true),
                Attribute::Sensitive(sensitive),
                Attribute::Extractable(extractable),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::Label(label.as_bytes().to_vec()),
            ],
        )
        .unwrap()
    };
    base("extractable", true, true);
    base("plain", false, false);
    base("twice", false, true);
    base("twice", false, true);
    for (label, want) in [
        ("extractable", "extractable"),
        ("plain", "sensitive"),
        ("twice", "unique"),
    ] {
        let err = Pkcs11MasterKey::open_or_create(cfg(&token, label, PIN), true).unwrap_err();
        assert!(err.to_string().contains(want), "{label}: {err}");
    }
}

#[test]
fn pin_file_must_be_private() {
    let Some(dir) = softhsm() else { return };
    let token = fresh_token("pinfile");
    let p = dir.join(format!("pin-{token}"));
    std::fs::write(&p, format!("{PIN}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = Pkcs11Pin::from_file(&p).unwrap_err();
    assert!(
        matches!(err, Pkcs11Error::PinFilePermissions { mode: 0o640, .. }),
        "{err}"
    );
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    let pin = Pkcs11Pin::from_file(&p).unwrap();
    assert_eq!(format!("{pin:?}"), "Pkcs11Pin([REDACTED])");
    let c = Pkcs11Config {
        pin,
        ..cfg(&token, "keyward-master", PIN)
    };
    Pkcs11MasterKey::open_or_create(c, true).unwrap();
    std::fs::write(&p, "").unwrap();
    assert!(matches!(Pkcs11Pin::from_file(&p), Err(Pkcs11Error::BadPin)));
    assert!(matches!(
        Pkcs11Pin::from_file(&dir.join("absent")),
        Err(Pkcs11Error::PinFile { .. })
    ));
}

/// T12, smaller: 16 workers × 500 seal+open pairs, zero errors. The full T12 size (10,000
/// per worker) runs with `KEYWARD_T12_OPS=10000`.
#[test]
fn sixteen_concurrent_workers() {
    let Some(_) = softhsm() else { return };
    let per_worker: usize = std::env::var("KEYWARD_T12_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let token = fresh_token("conc");
    let mk = Arc::new(
        Pkcs11MasterKey::open_or_create(cfg(&token, "keyward-master", PIN), true).unwrap(),
    );
    let started = std::time::Instant::now();
    let workers: Vec<_> = (0..16)
        .map(|w| {
            let mk = mk.clone();
            std::thread::spawn(move || {
                let mut errors = 0usize;
                for i in 0..per_worker {
                    let obj = format!("w{w}-{i}");
                    let c = ctx("key-version", "inst", &obj, "v");
                    let pt = [w as u8; 32];
                    match mk.seal(&c, &pt).and_then(|s| mk.open(&c, &s)) {
                        Ok(back) if back.expose() == pt => {}
                        _ => errors += 1,
                    }
                }
                errors
            })
        })
        .collect();
    let errors: usize = workers.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(errors, 0);
    assert_eq!(
        mk.retried_operations(),
        0,
        "no CKR error, not even a retried one"
    );
    eprintln!(
        "16 workers x {per_worker} seal+open: {:?}",
        started.elapsed()
    );
}

/// The token logged out under the provider's feet (another user of the module in this
/// process, an HSM hiccup): the next operation logs in again on a fresh session and succeeds.
#[test]
fn recovers_from_a_lost_login() {
    let Some(_) = softhsm() else { return };
    let token = fresh_token("relogin");
    let mk = Pkcs11MasterKey::open_or_create(cfg(&token, "keyward-master", PIN), true).unwrap();
    let c = ctx("key-version", "i", "o", "v");
    let sealed = mk.seal(&c, b"before").unwrap();
    assert_eq!(mk.retried_operations(), 0);
    let s = own_session(&token);
    s.logout().unwrap();
    assert_eq!(mk.open(&c, &sealed).unwrap().expose(), b"before");
    assert!(mk.retried_operations() >= 1);
    let again = mk.seal(&c, b"after").unwrap();
    assert_eq!(mk.open(&c, &again).unwrap().expose(), b"after");
}
