use tower_wamp::rpc;

#[rpc("")]
async fn nothing() {}

fn main() {}
