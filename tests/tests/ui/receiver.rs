use edge_test::edge_test;

struct Suite;

impl Suite {
    #[edge_test(service = "todo")]
    fn method(&self) {}
}

fn main() {}
