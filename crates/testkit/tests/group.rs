//! The Sentinel test group forms, and a killed master is replaced by a replica.

use std::time::Duration;

use cinnabar_testkit::TestGroup;

#[test]
fn a_killed_master_is_replaced_by_the_quorum() {
    let mut group = TestGroup::start(2, 3);
    let old = group.master();
    assert_eq!(
        cinnabar_testkit::group::role(&old).as_deref(),
        Some("master")
    );
    group.node_mut(&old).expect("the master is ours").kill();
    let new = group.wait_new_master(&old, Duration::from_secs(20));
    assert_ne!(new, old);
}
