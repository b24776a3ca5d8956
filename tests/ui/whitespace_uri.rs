use tower_wamp::rpc;

#[rpc("http://example.com/api#two words")]
async fn spaced() {}

fn main() {}
