use edge_test::edge_test;

#[edge_test(service = "todo")]
async fn nothing_to_inject() {}

fn main() {}
