use edge_test::{Edge, edge_test};

#[edge_test(service = "todo")]
async fn returns_a_number(_edge: Edge) -> u32 {
    7
}

fn main() {}
