use edge_test::edge_test;

#[edge_test(service = "todo")]
async fn wrong_type(edge: String) {
    let _ = edge;
}

fn main() {}
