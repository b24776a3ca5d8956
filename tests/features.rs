//! Truth in WELCOME: every announced feature has a test that shows it, WELCOME announces
//! exactly the table, and the README's feature table lists the same features and tests.
mod common;

use std::{collections::BTreeSet, path::Path};

use common::{v2::*, *};
use tower_wamp::{WampRouter, core::codec::v2::Serializer};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_announced_feature_names_a_test_that_exists() {
    let features = tower_wamp::__announced_features();
    assert!(!features.is_empty());
    for (role, name, _, test) in features {
        let (file, function) = test.split_once("::").expect("file::test");
        let source = std::fs::read_to_string(root().join(file))
            .unwrap_or_else(|e| panic!("{role}.{name}: {file}: {e}"));
        // A test: the attribute on the line before its `fn`, and not ignored.
        let lines: Vec<&str> = source.lines().collect();
        let found = lines.windows(2).any(|w| {
            let (attr, def) = (w[0].trim(), w[1].trim());
            (attr.starts_with("#[test]") || attr.starts_with("#[tokio::test"))
                && (def == format!("async fn {function}() {{")
                    || def == format!("fn {function}() {{"))
        });
        assert!(found, "{role}.{name}: no test {function} in {file}");
    }
}

/// (role, feature) announced by a real WELCOME.
async fn announced(router: WampRouter) -> BTreeSet<(String, String)> {
    let addr = serve_router(router).await;
    let c = V2::join(addr, Serializer::Json).await;
    let mut got = BTreeSet::new();
    for (role, details) in c.welcome["roles"].as_object().unwrap() {
        for (feature, on) in details["features"].as_object().unwrap() {
            assert_eq!(on, true, "{role}.{feature}");
            got.insert((role.clone(), feature.clone()));
        }
    }
    got
}

#[tokio::test]
async fn welcome_announces_exactly_the_table() {
    let table = tower_wamp::__announced_features();
    for meta_api in [false, true] {
        let want: BTreeSet<(String, String)> = table
            .iter()
            .filter(|(_, _, meta, _)| meta_api || !meta)
            .map(|(role, name, _, _)| ((*role).to_owned(), (*name).to_owned()))
            .collect();
        // Event history is announced only where some topic keeps it.
        let router = WampRouter::new()
            .realm("realm1")
            .meta_api(meta_api)
            .event_history("com.example.*", 10);
        assert_eq!(announced(router).await, want, "meta API {meta_api}");
        let mut without: BTreeSet<(String, String)> = want.clone();
        without.remove(&("broker".to_owned(), "event_history".to_owned()));
        let router = WampRouter::new().realm("realm1").meta_api(meta_api);
        assert_eq!(announced(router).await, without, "no history kept");
    }
}

#[test]
fn the_readme_lists_every_announced_feature_with_its_test() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let rows: BTreeSet<(String, String, String)> = readme
        .lines()
        .filter(|l| l.starts_with("| `") && l.matches('|').count() == 5)
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = cells[1].trim_matches('`');
            let test = cells[4].trim_matches('`');
            // The status says whether it needs the meta API.
            let meta = cells[3].contains("meta_api");
            test.contains("::").then(|| {
                (
                    cells[2].to_owned(),
                    format!("{name}{}", if meta { " (meta)" } else { "" }),
                    test.to_owned(),
                )
            })
        })
        .collect();
    let table: BTreeSet<(String, String, String)> = tower_wamp::__announced_features()
        .into_iter()
        .map(|(role, name, meta, test)| {
            let name = format!("{name}{}", if meta { " (meta)" } else { "" });
            (role.to_owned(), name, test.to_owned())
        })
        .collect();
    assert_eq!(rows, table, "README's feature table against the router's");
}
