//! Names for code that symbol tables do not cover directly: PLT stubs, and binaries whose
//! debug info lives elsewhere (a debuginfod server).

use sprofd_tests::*;

/// The fixture's flags: `-fno-builtin` keeps `labs` a call through the PLT.
fn plt_flags(base: &[&'static str]) -> Vec<&'static str> {
    let mut flags = base.to_vec();
    flags.push("-fno-builtin");
    flags
}

#[test]
fn samples_in_a_plt_stub_name_it() {
    if !live("samples_in_a_plt_stub_name_it") {
        return;
    }
    let exe = c_fixture("plt", &plt_flags(NO_FP));
    let p = record_profile("plt", &[], &[exe.to_str().unwrap(), "1.5"]);
    let stub = p.folded.count_leaf("labs@plt");
    assert!(
        stub > 0,
        "no sample named labs@plt\n{}\n{}",
        p.folded.excerpt(),
        p.context()
    );
    let unnamed = p
        .folded
        .count_where(|f| f.last().is_some_and(|l| l.starts_with("plt+0x")));
    assert_eq!(unnamed, 0, "unnamed frames in plt\n{}", p.folded.excerpt());
}
