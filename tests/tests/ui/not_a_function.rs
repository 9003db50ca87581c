use edge_test::edge_test;

#[edge_test(service = "todo")]
struct NotAFunction;

fn main() {}
