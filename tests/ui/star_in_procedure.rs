use tower_wamp::rpc;

#[rpc("http://example.com/api#*")]
async fn everything() {}

fn main() {}
