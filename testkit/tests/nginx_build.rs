//! nginx-build/build.sh refuses to build the module against the source of
//! another nginx version than the binary that will load it (nginx would
//! refuse the module, or worse, load one built for other structures).

use std::process::Command;

use chatup_testkit::process::workspace_root;

#[test]
fn build_script_refuses_a_source_tree_of_another_nginx_version() {
    let tree = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tree.path().join("src/core")).unwrap();
    std::fs::create_dir_all(tree.path().join("objs")).unwrap();
    std::fs::write(
        tree.path().join("src/core/nginx.h"),
        "#define NGINX_VERSION      \"1.99.7\"\n",
    )
    .unwrap();
    std::fs::write(tree.path().join("objs/ngx_auto_config.h"), "").unwrap();

    let out = Command::new("bash")
        .arg(workspace_root().join("nginx-build/build.sh"))
        .env("NGINX_SOURCE_DIR", tree.path())
        .env_remove("NGINX_BUILD_DIR")
        .output()
        .unwrap();

    assert!(!out.status.success(), "the build must not go ahead");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("version mismatch") && stderr.contains("1.99.7"),
        "{stderr}"
    );
}

#[test]
fn build_script_refuses_a_tree_that_was_not_configured() {
    let tree = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg(workspace_root().join("nginx-build/build.sh"))
        .env("NGINX_SOURCE_DIR", tree.path())
        .env_remove("NGINX_BUILD_DIR")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a configured nginx"), "{stderr}");
}
