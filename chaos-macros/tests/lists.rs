//! The macro's copy of the closed lists (`src/lists.rs`) equals the runtime's (`spec.rs`).
#![allow(dead_code)]

#[path = "../src/lists.rs"]
mod lists;

use chaos_runtime::spec;

#[test]
fn fault_kinds_match_the_runtime() {
    assert_eq!(lists::FAULT_KINDS, spec::FAULT_KINDS);
}

#[test]
fn targets_match_the_runtime() {
    assert_eq!(lists::TARGETS, spec::TARGETS);
}

#[test]
fn fault_params_match_the_runtime() {
    let ours: Vec<(&str, Vec<(&str, String)>)> = lists::FAULT_PARAMS
        .iter()
        .map(|(kind, params)| {
            let params = params
                .iter()
                .map(|(p, ty)| (*p, format!("{ty:?}")))
                .collect();
            (*kind, params)
        })
        .collect();
    let theirs: Vec<(&str, Vec<(&str, String)>)> = spec::FAULT_PARAMS
        .iter()
        .map(|(kind, params)| {
            let params = params
                .iter()
                .map(|(p, ty)| (*p, format!("{ty:?}")))
                .collect();
            (*kind, params)
        })
        .collect();
    assert_eq!(ours, theirs);
}
