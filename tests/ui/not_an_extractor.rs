use tower_wamp::{Args, rpc};

#[rpc("http://example.com/api#add")]
async fn add(Args(a): Args<(i64,)>, b: i64) -> i64 {
    a.0 + b
}

fn main() {}
