//! Bad `#[edge_test]` input is a compile error at the offending span; the expected
//! messages are committed next to each case in `ui/`. Every accepted form compiles
//! (`ui/pass/`).

#[test]
fn bad_attribute_input_is_a_compile_error() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
    cases.pass("tests/ui/pass/*.rs");
}
