use edge_test::{Edge, edge_test};

#[edge_test(service = "todo", e2e = "sometimes")]
async fn runs_somewhere(edge: Edge) {
    let _ = edge;
}

fn main() {}
